"""Models by name: the published family (:mod:`effnet.describe.family`, scaled by the official
coefficients through :mod:`effnet.scale`) and the other baselines (:mod:`effnet.describe.baselines`),
and the one place where a name, a JSON file or block strings become a description."""

from __future__ import annotations

from effnet.describe.baselines import BASELINE_SPECS
from effnet.describe.blocks import parse_blocks
from effnet.describe.family import COEFFICIENTS, FAMILY_BASES
from effnet.describe.network import NetworkSpec
from effnet.errors import UserError
from effnet.scale.compound import scale_network

#: Baselines any scaled model starts from (``effnet info NAME``, ``--base NAME``); other packages
#: add theirs with :func:`register_baseline`.
BASELINES: dict[str, NetworkSpec] = {**FAMILY_BASES, **BASELINE_SPECS}


def register_baseline(key: str, spec: NetworkSpec) -> None:
    """Make a baseline description available by name (``effnet info NAME``, ``--base NAME``)."""
    BASELINES[key] = spec


def model_names() -> list[str]:
    """Every name :func:`get_description` accepts (the EfficientNets, then other baselines)."""
    others = [spec.name for key, spec in BASELINES.items() if key not in FAMILY_BASES]
    return list(COEFFICIENTS) + others


def _canonical(name: str) -> str:
    """The table's name for the spellings users bring: ``b3``, ``tf_efficientnet_b3``, ``lite0``,
    ``v2_s``, ``efficientnet_v2_s`` (torchvision), ``tf_efficientnetv2_s`` (timm)."""
    key = name.strip().lower().replace("-", "_")
    if key.startswith("tf_"):
        key = key[3:]
    key = key.replace("efficientnet_v2_", "efficientnetv2_")
    if key in COEFFICIENTS or any(spec.name == key for spec in BASELINES.values()):
        return key
    for prefix in ("efficientnet_", "efficientnet"):
        if f"{prefix}{key}" in COEFFICIENTS:
            return f"{prefix}{key}"
    return key


def get_description(name: str) -> NetworkSpec:
    """The description of a named model: ``efficientnet_b0``…``b8``, ``l2``, ``lite0``…``lite4``
    (short forms like ``b3`` and ``lite0`` work too) or a registered baseline."""
    if not isinstance(name, str):
        raise UserError(f"a model name must be a string, got {type(name).__name__}", field="model")
    key = _canonical(name)
    row = COEFFICIENTS.get(key)
    if row is not None:
        base = BASELINES[row.base]
        return scale_network(
            base, depth=row.depth, width=row.width, image_size=row.resolution, dropout=row.dropout, name=key
        ).with_(resolution_multiplier=row.resolution / base.resolution, train_resolution=row.train_resolution)
    for spec in BASELINES.values():
        if spec.name == key:
            return spec
    raise UserError(f"unknown model {name!r}; `effnet models` lists the known ones", field="model")


def description_from_blocks(
    blocks: str | list[str] | tuple[str, ...], *, name: str = "custom", resolution: int | None = None
) -> NetworkSpec:
    """A network from block strings alone (``--blocks`` of every command): EfficientNet's defaults
    for everything else, the stem feeding the first stage (its input channels), as EfficientNetV2's
    builder does."""
    parsed = parse_blocks(blocks)
    spec = NetworkSpec(name=name, blocks=parsed, stem_channels=parsed[0].in_channels)
    return spec.with_(resolution=resolution) if resolution is not None else spec


def resolve_description(name_or_description: str | NetworkSpec) -> NetworkSpec:
    """A description from a model name, a description, or a JSON description file."""
    if isinstance(name_or_description, NetworkSpec):
        return name_or_description
    if isinstance(name_or_description, str) and name_or_description.endswith(".json"):
        return NetworkSpec.load(name_or_description)
    if isinstance(name_or_description, str):
        return get_description(name_or_description)
    raise UserError(f"expected a model name or a NetworkSpec, got {type(name_or_description).__name__}", field="model")
