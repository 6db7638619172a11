"""Building blocks of the AGW baseline (Ye et al., "Deep Learning for Person Re-identification:
A Survey and Outlook", TPAMI 2021): GeM pooling, BNNeck, non-local attention blocks.

Plain ``nn.Module`` s on ``(B, C, H, W)`` maps, independent of DSCSN. Facts of the reference
code (``model.py`` of mangye16/Cross-Modal-Re-ID-baseline), restated:

* GeM: ``(mean_hw(x ** p) + 1e-12) ** (1 / p)`` with a fixed ``p = 3`` (the reference has no
  learnable p and no clamp; its inputs are post-ReLU, hence non-negative). Here ``p`` may be
  learnable (``learn_p``, default off) and inputs are clamped at 0 so a fractional power of a
  negative value cannot give NaN (no effect on non-negative inputs).
* BNNeck: ``BatchNorm1d(C)`` with its bias frozen (``requires_grad=False``) and initialised to
  0, weight ~ N(1, 0.01) (the reference's kaiming init of BatchNorm1d); classifier
  ``Linear(C, classes, bias=False)`` with weight ~ N(0, 0.001). The triplet loss uses the
  feature before BN, the ID loss the logits of the feature after BN; at test time the
  reference returns both, L2-normalised.
* Non-local block (``Non_local``): theta, phi, g = 1x1 convs to ``inter_channels``;
  ``f = theta^T phi / N`` (N = H*W, the *dot-product* form: the softmax of the embedded
  Gaussian form is commented out in the reference); ``y = f g``; ``z = BN(W y) + x`` with the
  BN's weight and bias initialised to 0, so the block starts as the identity. The reference
  computes ``inter_channels = reduc_ratio // reduc_ratio``, i.e. **1**, whatever the channel
  count; that is the default here (``inter_channels=1``); ``inter_channels=None`` gives the
  evidently intended ``in_channels // reduc_ratio``. ``mode="gaussian"`` gives the embedded
  Gaussian form (softmax over the last axis instead of ``/ N``).
* Placement (``non_layers = [0, 2, 3, 0]`` for ResNet-50 stages of 3, 4, 6, 3 blocks): stage
  s gets ``non_layers[s]`` blocks, each inserted right after one of the *last*
  ``non_layers[s]`` residual blocks of the stage (layer2: after blocks 2 and 3; layer3: after
  blocks 3, 4 and 5, 0-based).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vireid.errors import ConfigError

__all__ = ["GeM", "BNNeck", "NonLocalBlock", "StageWithNonLocal", "insert_non_local", "AGW_NON_LAYERS", "AGW_GEM_P"]

#: AGW's non-local placement for ResNet-50 (layer1..layer4).
AGW_NON_LAYERS = (0, 2, 3, 0)
#: AGW's fixed GeM exponent.
AGW_GEM_P = 3.0


class GeM(nn.Module):
    """Generalised-mean pooling. ``(B, C, H, W) -> (B, C)``.

    ``y_c = (mean_{h,w} max(x, 0)^p + eps) ** (1/p)``: p = 1 is average pooling, p -> inf
    tends to max pooling. ``learn_p`` makes p a parameter (initial value ``p``).
    """

    def __init__(self, p: float = AGW_GEM_P, learn_p: bool = False, eps: float = 1e-12):
        super().__init__()
        if not p > 0:
            raise ConfigError(f"GeM exponent p must be > 0, got {p!r}")
        p_t = torch.tensor(float(p))
        if learn_p:
            self.p = nn.Parameter(p_t)
        else:
            self.register_buffer("p", p_t)
        self.eps = float(eps)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4:
            raise ValueError(f"GeM expects (B, C, H, W), got shape {tuple(x.shape)}")
        p = self.p.to(x.dtype)
        flat = x.clamp(min=0).flatten(2)
        return (flat.pow(p).mean(dim=-1) + self.eps).pow(1.0 / p)

    def extra_repr(self) -> str:
        return f"p={float(self.p):.3g}, learn_p={isinstance(self.p, nn.Parameter)}"


class BNNeck(nn.Module):
    """BatchNorm1d neck with a frozen zero bias, followed by an optional bias-free classifier.

    ``forward(f: (B, C)) -> (f, f_bn, logits)``; logits is None when ``num_classes`` is 0.
    """

    def __init__(self, channels: int, num_classes: int = 0):
        super().__init__()
        self.bn = nn.BatchNorm1d(channels)
        nn.init.normal_(self.bn.weight, 1.0, 0.01)
        nn.init.zeros_(self.bn.bias)
        self.bn.bias.requires_grad_(False)
        self.classifier = nn.Linear(channels, num_classes, bias=False) if num_classes > 0 else None
        if self.classifier is not None:
            nn.init.normal_(self.classifier.weight, 0.0, 0.001)

    def forward(self, f: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        f_bn = self.bn(f)
        logits = self.classifier(f_bn) if self.classifier is not None else None
        return f, f_bn, logits


class NonLocalBlock(nn.Module):
    """AGW's non-local block (module docstring). ``(B, C, H, W) -> (B, C, H, W)``."""

    def __init__(self, in_channels: int, reduc_ratio: int = 2, inter_channels: int | None = 1,
                 mode: Literal["dot", "gaussian"] = "dot"):
        super().__init__()
        if mode not in ("dot", "gaussian"):
            raise ConfigError(f"non-local mode must be 'dot' or 'gaussian', got {mode!r}")
        inter = in_channels // reduc_ratio if inter_channels is None else int(inter_channels)
        if inter < 1:
            raise ConfigError(f"non-local inter_channels must be >= 1, got {inter}")
        self.in_channels, self.inter_channels, self.mode = in_channels, inter, mode
        self.g = nn.Conv2d(in_channels, inter, 1)
        self.theta = nn.Conv2d(in_channels, inter, 1)
        self.phi = nn.Conv2d(in_channels, inter, 1)
        self.W = nn.Sequential(nn.Conv2d(inter, in_channels, 1), nn.BatchNorm2d(in_channels))
        # Zero-initialised BN: W y = 0 at the start, so the block is the identity.
        nn.init.zeros_(self.W[1].weight)
        nn.init.zeros_(self.W[1].bias)

    def forward(self, x: Tensor) -> Tensor:
        b, _, h, w = x.shape
        g_x = self.g(x).flatten(2).transpose(1, 2)          # (B, N, I)
        theta = self.theta(x).flatten(2).transpose(1, 2)    # (B, N, I)
        phi = self.phi(x).flatten(2)                        # (B, I, N)
        f = theta @ phi                                     # (B, N, N)
        f = f / f.shape[-1] if self.mode == "dot" else F.softmax(f, dim=-1)
        y = (f @ g_x).transpose(1, 2).reshape(b, self.inter_channels, h, w)
        return self.W(y) + x


def _block_channels(block: nn.Module) -> int:
    """Output channels of a residual block (Bottleneck: bn3, BasicBlock: bn2)."""
    for name in ("bn3", "bn2"):
        bn = getattr(block, name, None)
        if isinstance(bn, nn.BatchNorm2d):
            return bn.num_features
    raise ConfigError(f"cannot tell the output channels of {type(block).__name__}: expected a "
                      "ResNet Bottleneck (bn3) or BasicBlock (bn2)")


class StageWithNonLocal(nn.Sequential):
    """A ResNet stage with non-local blocks after some of its residual blocks.

    The residual blocks keep their indices (state-dict keys ``layerK.<i>.*`` unchanged, so
    ImageNet weights still map); the non-local blocks live in ``nl`` keyed by the index of the
    block they follow (``layerK.nl.<i>.*``). x: (B, C, H, W) -> the stage's output.
    """

    def __init__(self, blocks: Sequence[nn.Module], nl: dict[int, nn.Module]):
        super().__init__(*blocks)
        self.n_blocks = len(blocks)
        self.nl = nn.ModuleDict({str(i): m for i, m in nl.items()})  # registered after blocks

    def forward(self, x: Tensor) -> Tensor:
        for i in range(self.n_blocks):
            x = self[i](x)
            if str(i) in self.nl:
                x = self.nl[str(i)](x)
        return x


def insert_non_local(model: nn.Module, non_layers: Sequence[int] = AGW_NON_LAYERS,
                     stages: Sequence[str] = ("layer1", "layer2", "layer3", "layer4"),
                     **block_kwargs) -> nn.Module:
    """Insert non-local blocks into the ResNet stages of ``model`` in place, the way AGW does.

    Stage ``stages[s]`` (an ``nn.Sequential`` of residual blocks) gets ``non_layers[s]``
    :class:`NonLocalBlock` s, one after each of its last ``non_layers[s]`` blocks; the stage is
    replaced by a :class:`StageWithNonLocal` (residual-block keys unchanged).
    ``block_kwargs`` go to NonLocalBlock. Every inserted block starts as the identity, so
    outputs are unchanged at insertion. Returns ``model``.
    """
    if len(non_layers) != len(stages):
        raise ConfigError(f"non_layers needs one count per stage ({len(stages)}), got "
                          f"{list(non_layers)}")
    for name, count in zip(stages, non_layers):
        if count == 0:
            continue
        stage = getattr(model, name, None)
        if not isinstance(stage, nn.Sequential) or isinstance(stage, StageWithNonLocal):
            raise ConfigError(f"model has no plain nn.Sequential stage {name!r} for non-local "
                              "blocks (or they were inserted already)")
        blocks = list(stage)
        if not 0 <= count <= len(blocks):
            raise ConfigError(f"{name} has {len(blocks)} blocks, cannot insert {count} "
                              "non-local blocks")
        after = range(len(blocks) - count, len(blocks))
        nl = {i: NonLocalBlock(_block_channels(blocks[i]), **block_kwargs) for i in after}
        setattr(model, name, StageWithNonLocal(blocks, nl))
    return model
