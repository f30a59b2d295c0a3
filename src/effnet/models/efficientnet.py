"""The network module built from a description, and :func:`create_model`."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from effnet.describe.network import NetworkSpec
from effnet.errors import UserError, check_whole_number
from effnet.models.blocks import build_block
from effnet.models.layers import ConvNormAct, NormSettings
from effnet.zoo import resolve_description


class EfficientNet(nn.Module):
    """A ConvNet built from a :class:`NetworkSpec`: stem → stages of blocks → head → classifier.

    With ``features_only`` the forward pass returns the feature maps at strides 2, 4, 8, 16 and 32
    (the last one of each stride), for detection and segmentation backbones.
    """

    def __init__(
        self,
        spec: NetworkSpec,
        num_classes: int = 1000,
        in_chans: int = 3,
        features_only: bool = False,
        memory_efficient: bool = False,
    ) -> None:
        super().__init__()
        check_whole_number("num_classes", num_classes, 0)
        check_whole_number("in_chans", in_chans, 1)
        self.spec = spec
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.features_only = features_only
        norm = NormSettings(spec.activation, spec.bn_eps, spec.bn_momentum, spec.padding)

        size = spec.resolution
        self.stem = ConvNormAct(in_chans, spec.stem_channels, spec.stem_kernel, spec.stem_stride, norm, input_size=size)
        size = math.ceil(size / spec.stem_stride)
        reduction = spec.stem_stride
        feature_at: dict[int, tuple[int, int]] = {reduction: (-1, spec.stem_channels)}
        if spec.stem_pool:
            self.stem_pool: nn.Module = nn.MaxPool2d(3, 2, 1)
            size = math.ceil(size / 2)
            reduction *= 2
        else:
            self.stem_pool = nn.Identity()

        total = spec.num_blocks
        index = 0
        stages = []
        for stage_index, block in enumerate(spec.blocks):
            layers = []
            for repeat in range(block.repeats):
                layers.append(build_block(block, repeat, norm, spec.drop_path_rate * index / total, size))
                if repeat == 0:
                    size = math.ceil(size / block.stride)
                    reduction *= block.stride
                index += 1
            stages.append(nn.Sequential(*layers))
            feature_at[reduction] = (stage_index, block.out_channels)
        self.stages = nn.ModuleList(stages)
        #: (stage index or -1 for the stem, channels, reduction) of each feature map returned.
        self.feature_info = [
            {"stage": feature_at[r][0], "channels": feature_at[r][1], "reduction": r} for r in sorted(feature_at)
        ]
        self._feature_stages = [info["stage"] for info in self.feature_info]

        last = spec.blocks[-1].out_channels
        if features_only:
            self.head: nn.Module = nn.Identity()
            self.classifier: nn.Module = nn.Identity()
            self.num_features = last
        else:
            self.head = ConvNormAct(last, spec.head_channels, 1, 1, norm) if spec.head_channels else nn.Identity()
            self.num_features = spec.num_features
            self.classifier = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(spec.dropout)
        self.grad_checkpointing = False
        self.memory_efficient = False
        self.reset_parameters()
        if memory_efficient:
            self.set_memory_efficient(True)

    def reset_parameters(self) -> None:
        """The official initialisation: conv N(0, √(2/fan_out)), dense U(±1/√classes)."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels // module.groups
                nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                bound = 1.0 / math.sqrt(module.out_features)
                nn.init.uniform_(module.weight, -bound, bound)
                nn.init.zeros_(module.bias)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute activations in backward instead of keeping them: the stem, each block and the head
        run under activation checkpointing (only their inputs are kept)."""
        self.grad_checkpointing = enable

    def set_memory_efficient(self, enable: bool = True) -> None:
        """Training memory mode: keep each expanded activation once, recompute the rest in backward
        (see :mod:`effnet.models.memory`); switch it off before scripting or exporting."""
        from effnet.models.memory import set_memory_efficient

        set_memory_efficient(self, enable)

    def _checkpointing(self) -> bool:
        return self.grad_checkpointing and self.training and torch.is_grad_enabled()

    def _run(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self._checkpointing():
            from torch.utils.checkpoint import checkpoint

            return checkpoint(module, x, use_reentrant=False)
        return module(x)

    def _run_stage(self, stage: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self._checkpointing():
            for block in stage:
                x = self._run(block, x)
            return x
        return stage(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Stem, stages and head: the final feature map before pooling."""
        x = self.stem_pool(self._run(self.stem, x))
        for stage in self.stages:
            x = self._run_stage(stage, x)
        return self._run(self.head, x)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """Pool, dropout and classifier."""
        x = self.pool(x).flatten(1)
        return self.classifier(self.dropout(x))

    def forward_feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The feature maps at strides 2, 4, 8, 16 and 32."""
        x = self._run(self.stem, x)
        maps: list[torch.Tensor] = []
        if -1 in self._feature_stages:
            maps.append(x)
        x = self.stem_pool(x)
        for index, stage in enumerate(self.stages):
            x = self._run_stage(stage, x)
            if index in self._feature_stages:
                maps.append(x)
        return maps

    def forward(self, x: torch.Tensor) -> Any:
        if self.features_only:
            return self.forward_feature_maps(x)
        return self.forward_head(self.forward_features(x))


def create_model(
    name_or_description: str | NetworkSpec,
    *,
    pretrained: bool | str = False,
    num_classes: int | None = None,
    in_chans: int = 3,
    padding: str | None = None,
    features_only: bool = False,
    memory_efficient: bool = False,
    **overrides: Any,
) -> EfficientNet:
    """Build a model by name (``efficientnet_b0``…``b8``, ``l2``, ``lite0``…``lite4``, other
    baselines) or from a description. ``overrides`` change description fields, e.g.
    ``drop_path_rate=0.0``, ``dropout=0.5``, ``resolution=320``, ``bn_eps=1e-5``.
    ``memory_efficient`` turns on the training memory mode (same parameters and function).

    ``pretrained=True`` loads the published checkpoint the name asks for (``tf_efficientnet_b3``,
    ``efficientnet_b3.ra2_in1k``; a bare name its publisher's default), ``pretrained="TAG"`` the
    one with that tag (``create_model("efficientnet_b3", pretrained="ns_jft_in1k")``): downloaded and
    converted once (:mod:`effnet.weights`), with its padding and BatchNorm eps; its preprocessing
    and class names are in ``model.pretrained_info``. ``num_classes`` (default: the checkpoint's, else
    1000) other than the checkpoint's gives a fresh classifier for fine-tuning."""
    if pretrained is not False:
        return _pretrained_model(
            name_or_description, pretrained, num_classes, in_chans, padding, features_only, memory_efficient, overrides
        )
    spec = resolve_description(name_or_description)
    if padding is not None:
        overrides["padding"] = padding
    if overrides:
        spec = spec.with_(**overrides)
    return EfficientNet(
        spec,
        num_classes=1000 if num_classes is None else num_classes,
        in_chans=in_chans,
        features_only=features_only,
        memory_efficient=memory_efficient,
    )


def _pretrained_model(
    name: str | NetworkSpec,
    pretrained: bool | str,
    num_classes: int | None,
    in_chans: int,
    padding: str | None,
    features_only: bool,
    memory_efficient: bool,
    overrides: dict[str, Any],
) -> EfficientNet:
    """:func:`create_model` with a checkpoint. The one call from models/ into weights/ (imported here,
    when asked for): the checkpoints' registry and loaders build on this module."""
    from effnet.weights.load import load_model
    from effnet.weights.pretrained import get_pretrained

    if not isinstance(name, str) or not isinstance(pretrained, (bool, str)):
        raise UserError(
            "pretrained weights are asked for by a model name and pretrained=True or a tag", field="pretrained"
        )
    entry = get_pretrained(name, None if pretrained is True else pretrained)
    if in_chans != 3:
        raise UserError(f"in_chans must be 3 for pretrained weights ({entry.name} takes RGB), got {in_chans}")
    if padding is not None:
        overrides["padding"] = padding
    net, info = load_model(entry.name, num_classes=num_classes, **overrides)
    if features_only:
        backbone, state = EfficientNet(net.spec, num_classes=0, features_only=True), net.state_dict()
        backbone.load_state_dict({key: state[key] for key in backbone.state_dict()})
        net = backbone
    if memory_efficient:
        net.set_memory_efficient(True)
    net.pretrained_info = info
    return net
