"""Sharing an effnet weight file on the Hugging Face Hub (``effnet push``): the file as it is, as the
repository's ``model.safetensors``, with its model card (:mod:`effnet.weights.card`) as ``README.md``
and an evaluation's figures, in one commit through huggingface_hub's public API. The file describes its
network, so ``hf-hub:OWNER/NAME`` loads any effnet model back, scaled variants included.

The token is huggingface_hub's (``HF_TOKEN`` or ``hf auth login``), the Hub ``HF_ENDPOINT``'s (read
when pushing); a failure is one :class:`~effnet.errors.UserError` line."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from effnet.atomic import atomic_write, make_folder
from effnet.errors import UserError, check_regular_file
from effnet.models.efficientnet import EfficientNet
from effnet.results import Result
from effnet.weights.card import model_card
from effnet.weights.files import file_kind, read_safetensors
from effnet.weights.hub import HUB_PREFIX, OFFLINE_VARIABLES, _first_line, _quiet, check_repo_id, offline
from effnet.weights.layout import convert_state_dict
from effnet.weights.native import WeightsInfo, info_from_metadata, is_native

#: The weight file's name in the repository (what ``hf-hub:`` names read first).
MODEL_FILE = "model.safetensors"


@dataclass(frozen=True)
class PushReport(Result):
    """What was pushed: where (``url`` the commit's page, or the folder of a dry run), the files, and how
    to load it back (``load``)."""

    repo: str
    revision: str
    model: str
    num_classes: int
    params: int
    files: list[str]
    bytes: int
    license: str | None
    private: bool
    load: str
    commit: str | None
    url: str


def read_native(weights: str | os.PathLike[str]) -> tuple[Path, WeightsInfo]:
    """An effnet weight file, whole, and what its header says; any other file is refused in one line
    that names the conversion (``effnet convert``)."""
    path = check_regular_file(weights, "weight file", field="weights")
    try:
        kind = file_kind(path)
    except UserError as err:
        raise UserError(str(err), field="weights") from None
    tensors: dict[str, torch.Tensor] = {}
    metadata: dict[str, str] = {}
    if kind == "safetensors":
        tensors, metadata = read_safetensors(path)
    if not is_native(metadata):
        raise UserError(
            f"{path} is not an effnet weight file ({kind}): convert it first: "
            f"effnet convert {path} --to model.safetensors [--model NAME]",
            field="weights",
        )
    info = info_from_metadata(metadata, str(path))
    with torch.device("meta"):
        model = EfficientNet(info.spec, num_classes=info.num_classes, in_chans=info.in_chans)
    _, problems = convert_state_dict(model, tensors, None)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise UserError(f"{path}: its tensors do not fit the network its header describes: {problems[0]}{more}",
                        field="weights")  # fmt: skip
    return path, info


def push_weights(
    weights: str | os.PathLike[str],
    repo: str,
    *,
    private: bool = False,
    revision: str = "main",
    message: str | None = None,
    evaluation: str | os.PathLike[str] | None = None,
    license: str | None = None,
    dry_run: str | os.PathLike[str] | None = None,
) -> PushReport:
    """Push the effnet weight file ``weights`` to the Hub repository ``repo`` (OWNER/NAME, created if
    missing; ``private`` applies to a new one) on branch ``revision`` (created from main if missing), with
    its model card and, from ``evaluation`` (an ``effnet evaluate`` report folder), its figures.
    ``license``: the weights' licence where the file and its run do not record it. ``dry_run``: write
    the repository's files into that folder instead (atomically), nothing sent."""
    check_repo_id(repo, "repo")
    if not isinstance(revision, str) or not revision.strip() or revision != revision.strip():
        raise UserError(f"revision must name a branch, got {revision!r}", field="revision")
    path, info = read_native(weights)
    card = model_card(info, path, repo, evaluation=evaluation, license=license)
    uploads: dict[str, Path | bytes] = {MODEL_FILE: path, "README.md": card.text.encode("utf-8"), **card.attachments}
    size = sum(len(item) if isinstance(item, bytes) else item.stat().st_size for item in uploads.values())
    load = f"{HUB_PREFIX}{repo}" + (f"@{revision}" if revision != "main" else "")
    from effnet.models.profile import profile

    report = dict(
        repo=repo, revision=revision, model=info.spec.name, num_classes=info.num_classes,
        params=profile(info.spec, num_classes=info.num_classes, in_chans=info.in_chans).params,
        files=list(uploads), bytes=size, license=card.license, private=private, load=load,
    )  # fmt: skip
    if dry_run is not None:
        folder = make_folder(dry_run)
        for name, item in uploads.items():
            target = folder / name
            if isinstance(item, bytes):
                atomic_write(target, lambda handle, data=item: handle.write(data), mkdir=True)
            else:
                atomic_write(target, write_path=lambda tmp, src=item: shutil.copyfile(src, tmp), mkdir=True)
        return PushReport(**report, commit=None, url=str(folder))
    commit, url = _commit(repo, revision, private, uploads, message or f"effnet push: {info.spec.name}")
    return PushReport(**report, commit=commit, url=url)


def _commit(repo: str, revision: str, private: bool, uploads: dict[str, Path | bytes], message: str) -> tuple[str, str]:
    """One commit of ``uploads`` to ``repo`` on ``revision`` (repository and branch made if missing)."""
    from huggingface_hub import CommitOperationAdd, HfApi, get_token
    from huggingface_hub.errors import HfHubHTTPError

    if offline():
        raise UserError(f"pushing needs the network, and {' / '.join(OFFLINE_VARIABLES)} turns it off: unset it")
    if get_token() is None:
        raise UserError("no Hugging Face token: set HF_TOKEN, or run `hf auth login`", field="token")
    endpoint = os.environ.get("HF_ENDPOINT") or None
    hub = endpoint or "the Hugging Face Hub"
    api = HfApi(endpoint=endpoint, library_name="effnet")
    operations = [
        CommitOperationAdd(path_in_repo=name, path_or_fileobj=item if isinstance(item, bytes) else str(item))
        for name, item in uploads.items()
    ]
    try:
        with _quiet("huggingface_hub"):
            api.create_repo(repo, private=True if private else None, exist_ok=True)
            if revision != "main":
                api.create_branch(repo, branch=revision, exist_ok=True)
            done = api.create_commit(repo, operations, commit_message=message, revision=revision)
    except HfHubHTTPError as err:
        status = err.response.status_code if err.response is not None else None
        if status in (401, 403):
            raise UserError(
                f"{hub} refused to let this token write to {repo} (HTTP {status}): set HF_TOKEN to a token with "
                "write access, or run `hf auth login`"
            ) from None
        raise UserError(f"cannot push to {repo} on {hub}: {_first_line(err)}") from None
    except ValueError as err:  # the card's metadata refused by the Hub's check
        raise UserError(f"{hub} refused the model card of {repo}: {_first_line(err)}") from None
    except Exception as err:  # the HTTP client's own errors (connection, TLS) after its retries
        raise UserError(f"cannot reach {hub} to push {repo} ({_first_line(err)}): check the network") from None
    return str(done.oid), str(done.commit_url)
