"""What a weight format is: one declarative object per format, defined in that format's module.

A :class:`WeightFormat` says how a source's files name their tensors (its :class:`Layout`), how to
recognise them, and how the source computed: the padding its weights were trained with and the
BatchNorm epsilon. :mod:`effnet.weights.formats` lists them; the loader reads everything from there.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Set
from dataclasses import dataclass

from effnet.describe.network import NetworkSpec
from effnet.preprocess import Preprocessing, default_preprocessing
from effnet.weights.layout import Layout


@dataclass(frozen=True)
class WeightFormat:
    """One weight format effnet reads."""

    name: str
    about: str
    #: Whether a source is in this format, from its tensor names and its header metadata.
    detect: Callable[[Set[str], Mapping[str, str]], bool]
    #: How the source names and stores tensors; None: effnet's own names (any block kind).
    layout: Layout | None
    #: The BatchNorm epsilon the source computes with: a constant or a rule on the model's description.
    bn_eps: float | Callable[[NetworkSpec], float]
    #: The padding the source's weights were trained with ("same", "symmetric"); None: either.
    padding: str | None = None
    #: Where ``padding`` is None: the padding a model of this name is built with (timm: ``tf_`` → 'same').
    padding_for_model: Callable[[str], str] | None = None
    #: The source's own evaluation preprocessing for a model (description, name as given), where it
    #: differs from the official one (timm's V2-S/M/L: mean = std = 0.5, crop 1.0); None: official.
    preprocessing_for_model: Callable[[NetworkSpec, str], Preprocessing | None] | None = None

    def bn_eps_for(self, spec: NetworkSpec) -> float:
        """The BatchNorm epsilon for a model of this description."""
        return self.bn_eps(spec) if callable(self.bn_eps) else self.bn_eps

    def preprocessing(self, spec: NetworkSpec, model_name: str) -> Preprocessing:
        """How the source evaluates ``spec`` (built as ``model_name``)."""
        own = self.preprocessing_for_model(spec, model_name) if self.preprocessing_for_model else None
        return own if own is not None else default_preprocessing(spec)

    def model_padding(self, model_name: str) -> str | None:
        """The padding to build ``model_name`` with for these weights (None: its description's)."""
        return self.padding if self.padding_for_model is None else self.padding_for_model(model_name)
