"""The registry of published checkpoints checked against its sources, so that a wrong entry fails here and
not on a user's machine: timm's pretrained configurations and torchvision's weight enums (the data), their
model constructors (the architecture: every tensor's shape on the meta device, the padding, BatchNorm eps),
and, for one checkpoint of each kind, random weights of the source architecture loaded by name through
the caches, converted and compared logit by logit."""

import fnmatch
from collections import defaultdict

import pytest
import timm
import torch
import torchvision
from test_pretrained_hub import caches, put_in_hub_cache, put_in_torch_cache, tensors_of  # noqa: F401
from test_weights_oracles import logits_diff, randomise

import effnet
from effnet.factory import load_model
from effnet.weights import PRETRAINED
from effnet.weights.formats import get_format
from effnet.weights.layout import convert_state_dict
from effnet.weights.pretrained import LABELS

TIMM = [e for e in PRETRAINED.values() if e.format == "timm"]
TORCHVISION = [e for e in PRETRAINED.values() if e.format == "torchvision"]

#: timm's EfficientNet checkpoints effnet does not list, and why (the registry's docstring says the same).
NOT_LISTED = {
    "*efficientnetv2_rw_*": "an expansion-1 EdgeResidual with two convolutions (and gc: global context)",
    "efficientnet_b?_pruned.*": "pruned, irregular channel counts",
    "*efficientnet_e[slm]*": "EdgeTPU: ReLU, edge residual blocks with a forced input width",
    "tf_efficientnet_cc_*": "CondConv experts",
    "efficientnet_[hx]_b5.*": "B5 variants with other blocks",
    "test_efficientnet*": "timm's toy test models",
}


def test_every_timm_efficientnet_checkpoint_is_listed_or_explained():
    listed = {entry.name for entry in TIMM}
    for name in timm.list_pretrained("*efficientnet*"):
        skipped = [pattern for pattern in NOT_LISTED if fnmatch.fnmatch(name, pattern)]
        assert (name in listed) != bool(skipped), name
    assert listed <= set(timm.list_pretrained("*efficientnet*"))


def test_every_torchvision_efficientnet_weight_is_listed():
    aliases = {alias for entry in TORCHVISION for alias in entry.aliases}
    for builder in torchvision.models.list_models(include="efficientnet*"):
        enum = torchvision.models.get_model_weights(builder)
        assert {f"{enum.__name__}.{w.name}" for w in enum} | {f"{enum.__name__}.DEFAULT"} <= aliases, builder


@pytest.mark.parametrize("entry", TIMM, ids=lambda e: e.name)
def test_timm_entry_matches_its_pretrained_cfg(entry):
    cfg = timm.models.get_pretrained_cfg(entry.name)
    pre = entry.preprocessing
    # the evaluation its reported top-1 was measured with: the test size and crop where timm gives them
    assert pre.resolution == (cfg.test_input_size or cfg.input_size)[-1]
    assert pre.crop_pct == (cfg.test_crop_pct or cfg.crop_pct)
    assert (pre.interpolation, pre.crop_mode) == (cfg.interpolation, cfg.crop_mode)
    assert (pre.mean, pre.std) == (tuple(cfg.mean), tuple(cfg.std))
    assert entry.source.repo_id == cfg.hf_hub_id == f"timm/{entry.name}"
    assert entry.num_classes == cfg.num_classes and entry.labels in LABELS.values()
    assert entry.license.lower() == cfg.license
    assert entry.default == (timm.models.get_pretrained_cfg(entry.arch).hf_hub_id == cfg.hf_hub_id)
    assert entry.padding == ("same" if entry.arch.startswith("tf_") else "symmetric")
    assert (entry.top1 is None) == (entry.num_classes != 1000)


@pytest.mark.parametrize("entry", TORCHVISION, ids=lambda e: e.name)
def test_torchvision_entry_matches_its_weights(entry):
    weights = torchvision.models.get_weight(entry.aliases[0])
    transforms, pre = weights.transforms(), entry.preprocessing
    assert entry.source.url == weights.url and entry.source.sha256_prefix in weights.url
    assert (pre.resolution, pre.resize_size) == (transforms.crop_size[0], transforms.resize_size[0])
    assert pre.interpolation == transforms.interpolation.value and pre.crop_mode == "center"
    assert (list(pre.mean), list(pre.std)) == (transforms.mean, transforms.std)
    assert entry.top1 == weights.meta["_metrics"]["ImageNet-1K"]["acc@1"]
    assert entry.num_classes == len(weights.meta["categories"]) and entry.license == "BSD-3-Clause"
    enum = type(weights)
    assert (f"{enum.__name__}.DEFAULT" in entry.aliases) == (enum.DEFAULT == weights)
    assert torchvision.models.get_model_builder(entry.arch) is not None


def test_one_default_per_architecture():
    defaults = defaultdict(list)
    for entry in PRETRAINED.values():
        defaults[entry.arch] += [entry.name] if entry.default else []
    assert all(len(names) == 1 for arch, names in defaults.items() if arch != "lite0-imagenet"), defaults


def _architectures():
    """One entry per distinct source architecture (the tags of an architecture share it)."""
    seen = {}
    for entry in TIMM + TORCHVISION:
        seen.setdefault((entry.format, entry.arch, entry.num_classes), entry)
    return list(seen.values())


def _reference(entry, **kwargs):
    if entry.format == "timm":
        return timm.create_model(entry.arch, pretrained=False, num_classes=entry.num_classes, **kwargs)
    return torchvision.models.get_model(entry.arch, **kwargs)


def _effnet(entry):
    """The model effnet builds for the entry (weights/load.py: its description, padding and classes)."""
    return effnet.create_model(entry.model, padding=entry.padding, num_classes=entry.num_classes)


@pytest.mark.parametrize("entry", _architectures(), ids=lambda e: f"{e.format}:{e.arch}:{e.num_classes}")
def test_architecture_matches_the_source_constructor(entry):
    """Every tensor of the source architecture has its place and shape in effnet's model (meta device, so
    B7, L2 and V2-XL cost no memory); the padding and BatchNorm eps are the source's."""
    with torch.device("meta"):
        ref, ours = _reference(entry), _effnet(entry)
    fmt = get_format(entry.format)
    _, problems = convert_state_dict(ours, ref.state_dict(), fmt.layout)
    assert problems == []
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters())
    stem = ref.conv_stem if entry.format == "timm" else ref.features[0][0]
    assert type(stem).__name__ == ("Conv2dSame" if entry.padding == "same" else "Conv2d")
    if entry.padding == "symmetric":
        assert stem.padding == (1, 1)
    eps = {m.eps for m in ref.modules() if isinstance(m, torch.nn.BatchNorm2d)}
    assert eps == {fmt.bn_eps_for(ours.spec)}


#: One checkpoint of each kind: timm 'same' and symmetric, Lite in both paddings, Fused-MBConv (V2) from
#: timm and torchvision; tf_efficientnet_b0.in1k and efficientnet_b0.tv_in1k load in test_pretrained_hub.
LOGITS = [
    "efficientnet_b0.ra_in1k",
    "efficientnet_lite0.ra_in1k",
    "tf_efficientnet_lite0.in1k",
    "tf_efficientnetv2_b0.in1k",
    "efficientnet_v2_s.tv_in1k",
]


@pytest.mark.parametrize("name", LOGITS)
def test_random_weights_load_by_name_and_give_the_reference_logits(name):
    entry = PRETRAINED[name]
    ref = randomise(_reference(entry))
    if entry.format == "timm":
        put_in_hub_cache(entry.source.repo_id, tensors_of(ref))
    else:
        put_in_torch_cache(entry.source.url, ref.state_dict())
    model, info = load_model(name)
    assert info.num_classes == entry.num_classes and info.preprocessing == entry.preprocessing
    assert model.spec.padding == entry.padding and model.spec.resolution == entry.preprocessing.resolution
    assert logits_diff(model, ref, 64) < 1e-4


@pytest.mark.parametrize(
    "name",
    [
        "tf_efficientnetv2_m.in1k",  # squash, 480 px, the whole image
        "tf_efficientnet_lite3.in1k",  # bilinear, crop 0.904, mean = std = 0.5
        "efficientnet_b3.ra2_in1k",  # timm's test size (320) and crop (1.0)
        "efficientnet_b1.tv2_in1k",  # torchvision: resize 255, crop 240, bilinear
    ],
)
def test_eval_transform_is_the_publishers(name):
    """effnet's evaluation transform of an entry gives what timm's or torchvision's own gives."""
    from PIL import Image
    from skimage.data import chelsea

    entry = PRETRAINED[name]
    image = Image.fromarray(chelsea())  # 451×300: the crop mode and the short side matter
    if entry.format == "timm":
        cfg = timm.models.get_pretrained_cfg(name).to_dict()
        theirs = timm.data.create_transform(**timm.data.resolve_data_config({}, pretrained_cfg=cfg, use_test_size=True))
    else:
        theirs = torchvision.models.get_weight(entry.aliases[0]).transforms()
    ours = entry.preprocessing.eval_transform()(image)
    assert ours.shape == (3, entry.preprocessing.resolution, entry.preprocessing.resolution)
    assert (ours - theirs(image)).abs().max() < 1e-5
