"""The network module built from a description (:func:`effnet.factory.create_model` builds it by name)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from effnet.describe.blocks import MAX_CHANNELS
from effnet.describe.network import NetworkSpec
from effnet.errors import check_whole_number
from effnet.models.blocks import build_block
from effnet.models.layers import ConvNormAct, NormSettings

#: The most classes a classifier may have (ImageNet-21k has 21,843): a bound checked before anything is built.
MAX_CLASSES = 1_000_000


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
        check_whole_number("num_classes", num_classes, 0, high=MAX_CLASSES)
        check_whole_number("in_chans", in_chans, 1, high=MAX_CHANNELS)
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
