"""Batch tensor transforms: uint8 images -> normalised float tensors, training augmentation.

The paper (Sec. IV-A) pads each 256x128 image with 10 zero pixels, crops 256x128 at random
and flips horizontally at random (the AGW-baseline pipeline). Here that happens on whole
batches of tensors; zero padding is applied before normalisation, exactly like padding the
PIL image with black, and all randomness comes from a ``torch.Generator`` so runs repeat.

Channel augmentation (CAJ, ICCV 2021; not in the paper; ``data.channel_aug`` and friends,
see :mod:`vireid.data.channel_aug`) acts after normalisation and depends on the modality,
so :class:`TrainTransform` takes ``modality="rgb"`` / ``"ir"``. Its draws come after the
crop/flip draws of the same generator and happen only when it is on, so a run without it
draws exactly what it drew before the option existed.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from vireid.data.channel_aug import (CHANNEL_AUG_MODES, channel_adap_gray, channel_exchange,
                                     channel_random_erasing)
from vireid.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_float(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 ``(B, H, W, 3)`` -> float32 ``(B, 3, H, W)`` in [0, 1]."""
    x = torch.as_tensor(np.asarray(images)) if isinstance(images, np.ndarray) else images
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected images of shape (B, H, W, 3), got {tuple(x.shape)}")
    return x.permute(0, 3, 1, 2).to(torch.float32).div_(255.0).contiguous()


def normalize(x: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN,
              std: Sequence[float] = IMAGENET_STD) -> torch.Tensor:
    """``(x - mean) / std`` per channel. x: ``(B, 3, H, W)``."""
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s


def random_pad_crop(x: torch.Tensor, pad: int, generator: torch.Generator | None = None
                    ) -> torch.Tensor:
    """Zero-pad every side by ``pad`` and crop back to ``(H, W)`` at a random offset per image.

    x: ``(B, C, H, W)`` -> ``(B, C, H, W)``. Offsets are uniform in ``0..2*pad`` (both axes,
    independently), drawn on the CPU from ``generator``.
    """
    if pad <= 0:
        return x
    b, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=generator).to(x.device)
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=generator).to(x.device)
    rows = oy[:, None] + torch.arange(h, device=x.device)[None, :]  # (B, H)
    cols = ox[:, None] + torch.arange(w, device=x.device)[None, :]  # (B, W)
    bidx = torch.arange(b, device=x.device)[:, None, None]
    # Advanced indices around a slice put their broadcast dims first: (B, H, W, C).
    out = padded[bidx, :, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()


def random_hflip(x: torch.Tensor, p: float = 0.5, generator: torch.Generator | None = None
                 ) -> torch.Tensor:
    """Flip each image of ``x: (B, C, H, W)`` left-right with probability ``p``."""
    if p <= 0:
        return x
    flip = (torch.rand(x.shape[0], generator=generator) < p).to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


class EvalTransform:
    """uint8 ``(B, H, W, 3)`` -> normalised float ``(B, 3, H, W)``."""

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        self.mean, self.std = tuple(mean), tuple(std)

    def __call__(self, images: np.ndarray | torch.Tensor, generator: torch.Generator | None = None
                 ) -> torch.Tensor:
        return normalize(to_float(images), self.mean, self.std)


class TrainTransform:
    """The paper's training augmentation on batches, plus CAJ's optional channel augmentation.

    uint8 ``(B, H, W, 3)`` -> zero pad ``pad`` (paper: 10) + random crop back to ``(H, W)``
    -> random horizontal flip (``flip``, paper: on, p = 0.5) -> ImageNet normalisation ->
    float ``(B, 3, H, W)``; then, all off by default:

    * ``random_erasing`` (p): CAJ's ChannelRandomErasing on each image of either modality;
    * ``channel_aug`` ("exchange" | "adap_gray") on visible images (``modality="rgb"``):
      each image is replaced, with probability ``channel_aug_p``, by ChannelExchange(gray=2)
      or ChannelAdapGray(0.5) of itself;
    * ``channel_aug_ir``: ChannelAdapGray(0.5) on every infrared image (CAJ's IR pipeline).

    ``modality`` may be omitted only when none of the modality-dependent options is on.
    """

    def __init__(self, pad: int = 10, flip: bool = True, flip_p: float = 0.5,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 channel_aug: str = "none", channel_aug_p: float = 0.5,
                 channel_aug_ir: bool = False, random_erasing: float = 0.0):
        self.pad, self.flip, self.flip_p = int(pad), bool(flip), float(flip_p)
        self.mean, self.std = tuple(mean), tuple(std)
        if channel_aug not in ("none", *CHANNEL_AUG_MODES):
            raise ConfigError(f"data.channel_aug: expected one of none, "
                              f"{', '.join(CHANNEL_AUG_MODES)}, found {channel_aug!r}")
        for name, v in (("data.channel_aug_p", channel_aug_p),
                        ("data.random_erasing", random_erasing)):
            if not 0.0 <= float(v) <= 1.0:
                raise ConfigError(f"{name}: expected a number in [0, 1], found {v!r}")
        self.channel_aug, self.channel_aug_p = channel_aug, float(channel_aug_p)
        self.channel_aug_ir, self.random_erasing = bool(channel_aug_ir), float(random_erasing)

    @classmethod
    def from_config(cls, data_cfg) -> "TrainTransform":
        """The transform of a config's ``data`` section (vireid.config.DataConfig)."""
        return cls(pad=data_cfg.pad, flip=data_cfg.flip, channel_aug=data_cfg.channel_aug,
                   channel_aug_p=data_cfg.channel_aug_p, channel_aug_ir=data_cfg.channel_aug_ir,
                   random_erasing=data_cfg.random_erasing)

    @property
    def modality_dependent(self) -> bool:
        """True when the RGB and IR images of a batch are augmented differently."""
        return self.channel_aug != "none" or self.channel_aug_ir

    def __call__(self, images: np.ndarray | torch.Tensor, generator: torch.Generator | None = None,
                 modality: str | None = None) -> torch.Tensor:
        x = to_float(images)
        x = random_pad_crop(x, self.pad, generator)
        if self.flip:
            x = random_hflip(x, self.flip_p, generator)
        x = normalize(x, self.mean, self.std)
        return self.channel_augment(x, generator, modality)

    def channel_augment(self, x: torch.Tensor, generator: torch.Generator | None = None,
                        modality: str | None = None) -> torch.Tensor:
        """The CAJ part on a normalised batch x (B, 3, H, W); identity when all is off."""
        if modality not in (None, "rgb", "ir"):
            raise ValueError(f"modality: expected 'rgb' or 'ir', got {modality!r}")
        if modality is None and self.modality_dependent:
            raise ValueError("channel augmentation is on (data.channel_aug / channel_aug_ir): "
                             "the transform needs modality='rgb' or 'ir'")
        if self.random_erasing > 0:
            x = channel_random_erasing(x, generator, p=self.random_erasing)
        if modality == "rgb" and self.channel_aug != "none" and self.channel_aug_p > 0:
            # The augmented version of every image, then keep it where a coin says so: a
            # fixed number of draws per batch, whatever the coins show.
            aug = (channel_exchange(x, generator) if self.channel_aug == "exchange"
                   else channel_adap_gray(x, generator, p=0.5))
            take = torch.rand(x.shape[0], generator=generator) < self.channel_aug_p
            x = torch.where(take.to(x.device).view(-1, 1, 1, 1), aug, x)
        elif modality == "ir" and self.channel_aug_ir:
            x = channel_adap_gray(x, generator, p=0.5)
        return x
