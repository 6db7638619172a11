"""Channel augmentation of CAJ (Ye et al., "Channel Augmented Joint Learning for Visible-Infrared
Recognition", ICCV 2021), on batches of normalised ``(B, 3, H, W)`` float tensors.

Facts of the reference code (``ICCV21_CAJ/ChannelAug.py`` and ``data_loader.py`` of
mangye16/Cross-Modal-Re-ID-baseline), restated. All three act *after* ImageNet
normalisation, per image:

* ``ChannelExchange(gray=2)`` (the visible images' extra, channel-augmented view):
  ``idx = randint(0, gray)`` inclusive; idx 0, 1, 2 -> all three channels become channel idx;
  idx 3 (only reachable with gray >= 3) -> greyscale. With the default gray=2 each channel
  is picked with probability 1/3 and no greyscale happens.
* ``ChannelAdapGray(probability=0.5)`` (CAJ's infrared images, and visible images with
  ``--augc 1``): ``idx = randint(0, 3)``; idx 0, 1, 2 (1/4 each) -> replicate that channel;
  idx 3 -> greyscale ``0.2989 R + 0.5870 G + 0.1140 B`` in all channels when
  ``uniform(0, 1) <= probability``, else unchanged. So 1/4, 1/4, 1/4, 1/8 grey, 1/8 kept.
* ``ChannelRandomErasing(probability=0.5, sl=0.02, sh=0.4, r1=0.3,
  mean=[0.4914, 0.4822, 0.4465])``: with probability ``probability``, up to 100 attempts of
  ``area = uniform(sl, sh) * H * W``, ``aspect = uniform(r1, 1/r1)``,
  ``h = round(sqrt(area * aspect))``, ``w = round(sqrt(area / aspect))``; the first attempt
  with ``h < H`` and ``w < W`` fills rows ``top..top+h-1``, cols ``left..left+w-1`` (``top``
  uniform in 0..H-h, ``left`` in 0..W-w) with the per-channel values ``mean``.
* CAJ's visible pipeline gives two views of each visible image: pad/crop/flip/normalise +
  erasing, and the same + erasing + ChannelExchange(gray=2); the infrared pipeline is
  pad/crop/flip/normalise + erasing + ChannelAdapGray(0.5).

Randomness comes from an explicit ``torch.Generator`` (CPU draws), like
:mod:`vireid.data.transforms`, so runs repeat; the draws are not the reference's Python
``random`` stream (same distributions, different numbers). Python's ``round`` (half to even)
is used for h and w as in the reference.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from vireid.errors import ConfigError

__all__ = ["channel_exchange", "channel_adap_gray", "channel_random_erasing", "ChannelAugment",
           "GRAY_WEIGHTS", "ERASE_MEAN", "CHANNEL_AUG_MODES"]

#: Greyscale weights of the reference (ITU-R 601 luma), applied to normalised channels.
GRAY_WEIGHTS = (0.2989, 0.5870, 0.1140)
#: Fill values of the reference's ChannelRandomErasing (CIFAR means), per channel.
ERASE_MEAN = (0.4914, 0.4822, 0.4465)
#: Modes of :class:`ChannelAugment`.
CHANNEL_AUG_MODES = ("exchange", "adap_gray")


def _check(x: Tensor) -> None:
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"channel augmentation expects (B, 3, H, W) tensors, got {tuple(x.shape)}")


def _gray(x: Tensor) -> Tensor:
    w = torch.tensor(GRAY_WEIGHTS, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True).expand_as(x)


def _apply_choice(x: Tensor, choice: Tensor) -> Tensor:
    """choice (B,) in {0, 1, 2: replicate channel, 3: grey, 4: keep} -> new (B, 3, H, W)."""
    choice = choice.to(x.device)
    rep = x.gather(1, choice.clamp(max=2).view(-1, 1, 1, 1).expand(-1, 1, *x.shape[2:]))
    out = torch.where((choice <= 2).view(-1, 1, 1, 1), rep.expand_as(x), x)
    return torch.where((choice == 3).view(-1, 1, 1, 1), _gray(x), out)


def channel_exchange(x: Tensor, generator: torch.Generator | None = None, gray: int = 2
                     ) -> Tensor:
    """CAJ ChannelExchange: x (B, 3, H, W) -> (B, 3, H, W) (module docstring)."""
    _check(x)
    if gray not in (2, 3):
        raise ConfigError(f"channel_exchange gray must be 2 (no greyscale) or 3, got {gray!r}")
    idx = torch.randint(0, gray + 1, (x.shape[0],), generator=generator)
    return _apply_choice(x, idx)


def channel_adap_gray(x: Tensor, generator: torch.Generator | None = None, p: float = 0.5
                      ) -> Tensor:
    """CAJ ChannelAdapGray: x (B, 3, H, W) -> (B, 3, H, W) (module docstring)."""
    _check(x)
    idx = torch.randint(0, 4, (x.shape[0],), generator=generator)
    u = torch.rand(x.shape[0], generator=generator)
    idx = torch.where((idx == 3) & (u > p), torch.full_like(idx, 4), idx)
    return _apply_choice(x, idx)


def channel_random_erasing(x: Tensor, generator: torch.Generator | None = None, p: float = 0.5,
                           sl: float = 0.02, sh: float = 0.4, r1: float = 0.3,
                           mean: Sequence[float] = ERASE_MEAN) -> Tensor:
    """CAJ ChannelRandomErasing on each image of x (B, C, H, W); returns a new tensor."""
    if x.ndim != 4:
        raise ValueError(f"random erasing expects (B, C, H, W) tensors, got {tuple(x.shape)}")
    out = x.clone()
    b, c, h_img, w_img = x.shape
    fill = torch.tensor(list(mean)[:c], dtype=x.dtype, device=x.device).view(c, 1, 1)
    area = h_img * w_img
    u = torch.rand(b, generator=generator)
    for i in range(b):
        if u[i].item() > p:
            continue
        for _ in range(100):
            ab = torch.rand(2, generator=generator, dtype=torch.float64).tolist()
            target = (sl + (sh - sl) * ab[0]) * area
            aspect = r1 + (1 / r1 - r1) * ab[1]
            h = int(round(math.sqrt(target * aspect)))
            w = int(round(math.sqrt(target / aspect)))
            if w < w_img and h < h_img:
                top = int(torch.randint(0, h_img - h + 1, (1,), generator=generator))
                left = int(torch.randint(0, w_img - w + 1, (1,), generator=generator))
                out[i, :, top:top + h, left:left + w] = fill
                break
    return out


class ChannelAugment:
    """CAJ's channel augmentation of a normalised batch (the ``data.channel_aug`` option).

    ``mode="exchange"``: random erasing (``erase_p``) then ChannelExchange(gray=2) -- CAJ's
    channel-augmented visible view. ``mode="adap_gray"``: random erasing then
    ChannelAdapGray(``gray_p``) -- CAJ's infrared pipeline. ``erase_p=0`` disables erasing.
    ``__call__(x (B, 3, H, W), generator) -> (B, 3, H, W)``.
    """

    def __init__(self, mode: str = "exchange", erase_p: float = 0.5, gray_p: float = 0.5):
        if mode not in CHANNEL_AUG_MODES:
            raise ConfigError(f"data.channel_aug must be one of {CHANNEL_AUG_MODES}, got {mode!r}")
        for name, v in (("erase_p", erase_p), ("gray_p", gray_p)):
            if not 0.0 <= float(v) <= 1.0:
                raise ConfigError(f"channel augmentation {name} must be in [0, 1], got {v!r}")
        self.mode, self.erase_p, self.gray_p = mode, float(erase_p), float(gray_p)

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if self.erase_p > 0:
            x = channel_random_erasing(x, generator, p=self.erase_p)
        if self.mode == "exchange":
            return channel_exchange(x, generator)
        return channel_adap_gray(x, generator, p=self.gray_p)
