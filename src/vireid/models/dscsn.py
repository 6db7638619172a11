"""DSCSN: the dual-path, spatial-structure-preserving common space network (paper Sec. III-A).

Each modality ("rgb", "ir") has its own copy of the first parts of a ResNet; the remaining
parts are shared and embed both into one common space. The split is one config value
(paper Table III):

==============  ============================================  ==========================
shared_stages   modality-specific parts                       shared parts
==============  ============================================  ==========================
``none``        stem, layer1, layer2, layer3, layer4          (nothing: two networks)
``4``           stem, layer1, layer2, layer3                  layer4
``3-4``         stem, layer1, layer2                          layer3, layer4 (paper)
``2-4``         stem, layer1                                  layer2 … layer4
``1-4``         stem                                          layer1 … layer4
``all``         (nothing: one network)                        stem, layer1 … layer4
==============  ============================================  ==========================

"stem" is conv1/bn1/relu/maxpool. AGW options (not in the paper): ``pool="gem"`` makes G the
generalised mean (p = 3) of F instead of its average; ``non_local=True`` inserts AGW's
non-local blocks (:func:`vireid.models.agw.insert_non_local`) after the last 2 blocks of
layer2 and the last 3 of layer3, before the parts are split, so a modality-specific stage
gets its own copy (keys ``<path>.layerK.nl.<i>.*``; the residual blocks keep their keys). Both paths start from the same weights: the specific parts
of the IR path are deep copies of the RGB path's after ImageNet weights are loaded.

Parameter names: ``rgb.<part>.…``, ``ir.<part>.…`` for specific parts and ``shared.<part>.…``
for shared ones, where ``<part>`` is ``stem`` (a Sequential ``conv1, bn1, relu, maxpool``
→ ``stem.0``, ``stem.1``) or ``layerK`` with torchvision's inner names.
"""
from __future__ import annotations

import copy
import os

import torch
from torch import Tensor, nn

from vireid.errors import ConfigError
from vireid.models.agw import AGW_NON_LAYERS, GeM, insert_non_local
from vireid.models.resnet import ResNet, load_imagenet_weights

PARTS = ("stem", "layer1", "layer2", "layer3", "layer4")

#: shared_stages value -> index in PARTS of the first shared part.
SHARED_STAGES: dict[str, int] = {
    "none": len(PARTS), "4": 4, "3-4": 3, "2-4": 2, "1-4": 1, "all": 0,
}

MODALITIES = ("rgb", "ir")

#: model.pool values.
POOLS = ("avg", "gem")


def _parts_of(net: ResNet) -> dict[str, nn.Module]:
    stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
    return {"stem": stem, "layer1": net.layer1, "layer2": net.layer2,
            "layer3": net.layer3, "layer4": net.layer4}


class DSCSN(nn.Module):
    """Dual-path ResNet with a configurable shared tail.

    Args:
        arch: 18/34/50 or "resnetXX".
        shared_stages: one of ``none, 4, 3-4, 2-4, 1-4, all`` (table in the module docstring).
        last_stride: stride of layer4 (1 or 2).
        width: ResNet base-width multiplier (1.0 for ImageNet weights).
        pretrained: ``None`` (random init), ``"imagenet"`` or a local torchvision-keyed file.
        pool: ``"avg"`` (G = GAP(F), the paper) or ``"gem"`` (G = GeM(F), p = 3, AGW).
        non_local: insert AGW's non-local blocks (module docstring).

    forward(x, modality): x (B, 3, H, W) -> F (B, C, h, w), G (B, C) = pool(F).
    """

    def __init__(self, arch: int | str = 50, shared_stages: str = "3-4", last_stride: int = 2,
                 width: float = 1.0, pretrained: str | os.PathLike | None = None,
                 pool: str = "avg", non_local: bool = False, shared_bn: str = "joint") -> None:
        super().__init__()
        key = str(shared_stages)
        if key not in SHARED_STAGES:
            raise ConfigError(
                f"model.shared_stages: expected one of {', '.join(SHARED_STAGES)}, got {shared_stages!r}"
            )
        if pool not in POOLS:
            raise ConfigError(f"model.pool: expected one of {', '.join(POOLS)}, got {pool!r}")
        self.shared_stages = key
        if shared_bn not in ("joint", "per_modality"):
            raise ConfigError(f"model.shared_bn: expected joint or per_modality, got {shared_bn!r}")
        self.shared_bn = shared_bn
        net = ResNet(arch, last_stride=last_stride, width=width, num_classes=None)
        if pretrained not in (None, "", "none", False):
            load_imagenet_weights(net, None, pretrained)
        if non_local:
            # AGW's counts are for ResNet-50's 3/4/6/3 blocks; ResNet-18 has 2 per stage.
            stages = ("layer1", "layer2", "layer3", "layer4")
            counts = [min(c, len(getattr(net, s))) for c, s in zip(AGW_NON_LAYERS, stages)]
            insert_non_local(net, counts, stages)
        # GeM keeps p as a buffer (key ``pool.p``): a GeM checkpoint never loads into an
        # average-pooling model unnoticed.
        self.pool = GeM() if pool == "gem" else None
        self.arch = net.arch
        self.out_channels = net.out_channels
        parts = _parts_of(net)
        first_shared = SHARED_STAGES[key]
        specific = PARTS[:first_shared]
        self.specific_parts: tuple[str, ...] = specific
        self.shared_parts: tuple[str, ...] = PARTS[first_shared:]
        self.rgb = nn.ModuleDict({p: parts[p] for p in specific})
        # deepcopy so both paths start from identical (possibly pretrained) weights.
        self.ir = nn.ModuleDict({p: copy.deepcopy(parts[p]) for p in specific})
        self.shared = nn.ModuleDict({p: parts[p] for p in self.shared_parts})

    def _path(self, modality: str) -> nn.ModuleDict:
        if modality == "rgb":
            return self.rgb
        if modality == "ir":
            return self.ir
        raise ValueError(f"modality: expected 'rgb' or 'ir', got {modality!r}")

    def forward(self, x: Tensor, modality: str) -> tuple[Tensor, Tensor]:
        """x: (B, 3, H, W) of one modality -> (F (B, C, h, w), G (B, C))."""
        path = self._path(modality)
        for p in self.specific_parts:
            x = path[p](x)
        for p in self.shared_parts:
            x = self.shared[p](x)
        return x, self.global_feature(x)

    def global_feature(self, f: Tensor) -> Tensor:
        """F (B, C, h, w) -> G (B, C): the average (model.pool=avg) or GeM of each channel."""
        return f.mean(dim=(2, 3)) if self.pool is None else self.pool(f)

    def forward_pair(self, x_rgb: Tensor, x_ir: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Both modalities at once; the shared parts run on one concatenated batch so that
        BatchNorm statistics in the shared stages see both modalities together (as in the
        paper's joint training batch).

        Returns F_rgb (Br, C, h, w), G_rgb (Br, C), F_ir (Bi, C, h, w), G_ir (Bi, C).
        """
        xr, xi = x_rgb, x_ir
        for p in self.specific_parts:
            xr = self.rgb[p](xr)
            xi = self.ir[p](xi)
        if self.shared_bn == "per_modality":  # model.shared_bn: statistics of each modality
            for p in self.shared_parts:
                xr, xi = self.shared[p](xr), self.shared[p](xi)
            return xr, self.global_feature(xr), xi, self.global_feature(xi)
        x = torch.cat([xr, xi], 0)
        for p in self.shared_parts:
            x = self.shared[p](x)
        fr, fi = x[: x_rgb.shape[0]], x[x_rgb.shape[0]:]
        return fr, self.global_feature(fr), fi, self.global_feature(fi)
