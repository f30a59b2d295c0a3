"""A throwaway Hugging Face Hub (and download server) on 127.0.0.1 for tests: no network. It answers what
huggingface_hub's downloads ask (HEAD and GET of ``/<repo>/resolve/<revision>/<file>``) and what its upload
path asks (``/api/repos/create``, ``/api/validate-yaml``, ``/api/models/<repo>/preupload|branch|commit/<rev>``:
every file "regular", committed as NDJSON with base64 content). Every request is recorded."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import yaml
from safetensors.torch import save

#: The commit every file put in ``files`` by hand is served at.
REVISION = "0123456789abcdef0123456789abcdef01234567"


class Server:
    """``files`` maps URL paths to bytes (``commits`` a path to the commit it is served at, else
    REVISION); ``cut`` paths are sent half (the Hub's size headers still promise all of it);
    ``requests`` holds (method, path) of every request, ``bodies`` each POST's body by path. ``token``:
    what an upload's Authorization header must carry (None: anything)."""

    def __init__(self, token: str | None = None):
        self.files: dict[str, bytes] = {}
        self.commits: dict[str, str] = {}
        self.cut: set[str] = set()
        self.requests: list[tuple[str, str]] = []
        self.bodies: dict[str, list[bytes]] = {}
        self.repos: dict[str, dict] = {}  # repo → {"private": bool, "heads": {branch: commit}}
        self.token = token
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def reply(self, status, body=b"", headers=()):
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def answer(self, body):
                path = self.path.split("?", 1)[0]
                server.requests.append((self.command, path))
                data = server.files.get(path)
                if data is None:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                sent = data[: len(data) // 2] if path in server.cut else data
                self.send_response(200)
                self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
                self.send_header("X-Repo-Commit", server.commits.get(path, REVISION))
                self.send_header("X-Linked-Size", str(len(data)))
                self.send_header("Content-Length", str(len(data) if self.command == "HEAD" else len(sent)))
                self.end_headers()
                if body:
                    self.wfile.write(sent)

            def do_HEAD(self):
                self.answer(False)

            def do_GET(self):
                self.answer(True)

            def do_POST(self):
                path = self.path.split("?", 1)[0]
                server.requests.append(("POST", path))
                data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                server.bodies.setdefault(path, []).append(data)
                if server.token is not None and self.headers.get("Authorization") != f"Bearer {server.token}":
                    return self.reply(401, b'{"error": "Invalid credentials"}', [("X-Error-Message", "Unauthorized")])
                status, reply = server.post(path, data)
                self.reply(status, json.dumps(reply).encode(), [("Content-Type", "application/json")])

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def hub(self, repo_id, tensors, filename="model.safetensors"):
        """``tensors`` as a safetensors file at ``repo_id``'s main revision; its URL path."""
        path = f"/{repo_id}/resolve/main/{filename}"
        self.files[path] = save(tensors)
        return path

    def post(self, path: str, data: bytes) -> tuple[int, dict]:
        """The Hub API's answer to a POST (status, JSON)."""
        if path == "/api/repos/create":
            payload = json.loads(data)
            repo = f"{payload['organization']}/{payload['name']}"
            if repo in self.repos:
                return 409, {"error": "You already created this model repo", "url": f"{self.url}/{repo}"}
            self.repos[repo] = {"private": payload.get("visibility") == "private", "heads": {"main": REVISION}}
            return 200, {"url": f"{self.url}/{repo}"}
        if path == "/api/validate-yaml":
            text = json.loads(data)["content"]
            try:
                yaml.safe_load(text.split("---")[1]) if text.startswith("---") else None
            except yaml.YAMLError as err:
                return 400, {"errors": [{"message": str(err)}]}
            return 200, {"errors": [], "warnings": []}
        parts = path.split("/")  # "", "api", "models", owner, name, action, revision
        if len(parts) != 7 or parts[:3] != ["", "api", "models"]:
            return 404, {"error": "not found"}
        repo, action, revision = f"{parts[3]}/{parts[4]}", parts[5], parts[6]
        if repo not in self.repos:
            return 404, {"error": "Repository not found"}
        heads = self.repos[repo]["heads"]
        if action == "preupload":
            files = json.loads(data)["files"]
            return 200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]}
        if action == "branch":
            if revision in heads:
                return 409, {"error": "branch exists"}
            heads[revision] = heads["main"]
            for key in [k for k in self.files if k.startswith(f"/{repo}/resolve/main/")]:
                self.put(repo, revision, key.rsplit("/", 1)[-1], self.files[key], heads[revision])
            return 200, {}
        if action == "commit":
            if revision not in heads:
                return 404, {"error": "Revision not found"}
            lines = [json.loads(line) for line in data.splitlines() if line.strip()]
            commit = hashlib.sha1(data).hexdigest()
            heads[revision] = commit
            for line in lines:
                if line["key"] == "file":
                    assert line["value"]["encoding"] == "base64"
                    content = base64.b64decode(line["value"]["content"])
                    self.put(repo, revision, line["value"]["path"], content, commit)
            for key in [k for k in self.files if k.startswith(f"/{repo}/resolve/{revision}/")]:
                self.put(repo, revision, key.split(f"/resolve/{revision}/", 1)[1], self.files[key], commit)
            return 200, {"commitUrl": f"{self.url}/{repo}/commit/{commit}", "commitOid": commit}
        return 404, {"error": "not found"}

    def put(self, repo: str, revision: str, name: str, content: bytes, commit: str) -> None:
        """A file of ``repo`` served at its branch and at its commit."""
        for at in (revision, commit):
            self.files[f"/{repo}/resolve/{at}/{name}"] = content
            self.commits[f"/{repo}/resolve/{at}/{name}"] = commit

    def uploaded(self, repo: str, name: str, revision: str = "main") -> bytes:
        """A file as committed to ``repo``."""
        return self.files[f"/{repo}/resolve/{revision}/{name}"]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


def isolate_caches(tmp_path, monkeypatch):
    """Every cache in a temporary folder, the Hub offline unless a test serves it (:func:`online`): nothing
    reads the user's caches, token or the network."""
    for name, folder in (("HF_HOME", "hf"), ("TORCH_HOME", "torch"), ("EFFNET_CACHE", "effnet")):
        monkeypatch.setenv(name, str(tmp_path / folder))
    for name in ("HF_HUB_CACHE", "HF_ENDPOINT", "EFFNET_OFFLINE", "XDG_CACHE_HOME", "HF_TOKEN", "HF_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    return tmp_path


def online(monkeypatch, server=None):
    """Downloads allowed, from ``server`` (or a closed port: no network)."""
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", server.url if server else "http://127.0.0.1:9")
