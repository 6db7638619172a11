"""DSCSN: the dual-path, spatial-structure-preserving common space network (paper Sec. III-A).

Each modality ("rgb", "ir") has its own copy of the first stages of a backbone; the remaining
stages are shared and embed both into one common space. The backbone is a registered entry
(:mod:`vireid.models.backbones`, ``model.arch``) that names its stages in order; the split is
one config value, ``model.shared_stages``, the number of stages shared counted from the end
(paper Table III; the table of values is in :mod:`vireid.models.backbones`). For the ResNets
the stages are ``stem`` (conv1/bn1/relu/maxpool), ``layer1`` … ``layer4``, and ``3-4`` (the
paper's choice) shares layer3 and layer4.

Options of the DSCSN itself, for every backbone (AGW, not in the paper): ``pool="gem"``
makes G the generalised mean (p = 3) of F instead of its average; ``shared_bn`` chooses the
batch-norm statistics of the shared stages (:meth:`DSCSN.forward_pair`). ``non_local=True``
asks the backbone entry to insert AGW's non-local blocks (for the ResNets: after the last 2
blocks of layer2 and the last 3 of layer3, keys ``<path>.layerK.nl.<i>.*``, the residual
blocks keeping their keys) before the stages are split, so a modality-specific stage gets
its own copy. Both paths start from the same weights: the specific stages of the IR path are
deep copies of the RGB path's after pretrained weights are loaded.

Parameter names: ``rgb.<stage>.…``, ``ir.<stage>.…`` for specific stages and
``shared.<stage>.…`` for shared ones, with the module names the backbone gives each stage
(ResNet: ``stem.0`` = conv1, ``stem.1`` = bn1, ``layerK`` with torchvision's inner names).
"""
from __future__ import annotations

import copy
import os

import torch
from torch import Tensor, nn

from vireid.errors import ConfigError
from vireid.models.agw import GeM
from vireid.models.backbones import BackboneOptions, BackboneSpec, get_backbone

MODALITIES = ("rgb", "ir")

#: model.pool values.
POOLS = ("avg", "gem")


class DSCSN(nn.Module):
    """Dual-path backbone with a configurable shared tail.

    Args:
        arch: a registered backbone name (``model.arch``, e.g. ``"resnet50"``) or its
            :class:`~vireid.models.backbones.BackboneSpec`.
        shared_stages: ``none, 4, 3-4, 2-4, 1-4, all`` (those the backbone supports).
        last_stride: stride of the backbone's last stage (1 or 2).
        width: width multiplier (1.0 for ImageNet weights).
        pretrained: ``None`` (random init), ``"imagenet"`` or a local weights file, loaded
            by the backbone entry.
        pool: ``"avg"`` (G = GAP(F), the paper) or ``"gem"`` (G = GeM(F), p = 3, AGW).
        non_local: insert AGW's non-local blocks (module docstring).
        shared_bn: ``"joint"`` or ``"per_modality"`` (:meth:`forward_pair`).

    forward(x, modality): x (B, 3, H, W) -> F (B, C, h, w), G (B, C) = pool(F).
    """

    def __init__(self, arch: str | BackboneSpec = "resnet50", shared_stages: str = "3-4",
                 last_stride: int = 2, width: float = 1.0,
                 pretrained: str | os.PathLike | None = None, pool: str = "avg",
                 non_local: bool = False, shared_bn: str = "joint") -> None:
        super().__init__()
        spec = arch if isinstance(arch, BackboneSpec) else get_backbone(arch)
        key = str(shared_stages)
        spec.check(key, pretrained, non_local)
        if pool not in POOLS:
            raise ConfigError(f"model.pool: expected one of {', '.join(POOLS)}, got {pool!r}")
        if shared_bn not in ("joint", "per_modality"):
            raise ConfigError(f"model.shared_bn: expected joint or per_modality, got {shared_bn!r}")
        self.shared_stages = key
        self.shared_bn = shared_bn
        self.spec = spec
        self.options = BackboneOptions(width=float(width), last_stride=int(last_stride))
        parts = spec.make_stages(self.options, pretrained, non_local)
        # GeM keeps p as a buffer (key ``pool.p``): a GeM checkpoint never loads into an
        # average-pooling model unnoticed.
        self.pool = GeM() if pool == "gem" else None
        self.arch = spec.name
        self.out_channels = int(spec.out_channels(self.options))
        specific, shared = spec.split(key)
        self.specific_parts: tuple[str, ...] = specific
        self.shared_parts: tuple[str, ...] = shared
        self.rgb = nn.ModuleDict({p: parts[p] for p in specific})
        # deepcopy so both paths start from identical (possibly pretrained) weights.
        self.ir = nn.ModuleDict({p: copy.deepcopy(parts[p]) for p in specific})
        self.shared = nn.ModuleDict({p: parts[p] for p in shared})

    def feature_hw(self, height: int, width: int) -> tuple[int, int]:
        """(h, w) of F for a height×width input, as the backbone entry computes it."""
        return self.spec.feature_size(height, width, self.options)

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
