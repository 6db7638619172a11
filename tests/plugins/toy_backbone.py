"""A toy backbone, ``model.arch=toy``: three strided 3×3 conv stages, registered through the
public decorator alone (one module, one registration; docs/architecture.md, "How to add a
backbone").

Stages ``s1`` (3 → 8·width channels, stride 2), ``s2`` (→ 16·width, stride 2) and ``s3``
(→ 32·width, stride ``last_stride``), each conv + BN + ReLU. A 64×32 input gives a 8×4 map
with last stride 2. Pretrained weights: a file holding a state dict of this network.
"""
from __future__ import annotations

import torch
from torch import nn

from vireid import BackboneOptions, ConfigError, register_backbone


def _channels(width: float, base: int) -> int:
    return max(1, round(base * width))


def _down(n: int, stride: int) -> int:
    return (n - 1) // stride + 1  # a 3×3 conv with padding 1


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class ToyNet(nn.Module):
    """x (B, 3, H, W) -> s1 -> s2 -> s3 -> (B, 32·width, h, w)."""

    def __init__(self, width: float = 1.0, last_stride: int = 2) -> None:
        super().__init__()
        c1, c2, c3 = (_channels(width, b) for b in (8, 16, 32))
        self.s1, self.s2, self.s3 = _block(3, c1, 2), _block(c1, c2, 2), _block(c2, c3, last_stride)


def _feature_hw(height: int, width: int, o: BackboneOptions) -> tuple[int, int]:
    def size(n: int) -> int:
        return _down(_down(_down(n, 2), 2), o.last_stride)
    return size(height), size(width)


def _load(net: nn.Module, source: str) -> None:
    if source == "imagenet":
        raise ConfigError("model.pretrained: the toy backbone has no ImageNet weights; give a "
                          "file or none")
    net.load_state_dict(torch.load(source, map_location="cpu", weights_only=True))


@register_backbone("toy", stages=("s1", "s2", "s3"),
                   out_channels=lambda o: _channels(o.width, 32), feature_hw=_feature_hw,
                   load_pretrained=_load, description="three conv stages (tests)")
def build_toy(options: BackboneOptions) -> nn.Module:
    return ToyNet(options.width, options.last_stride)
