"""Batch tensor transforms: uint8 images -> normalised float tensors, training augmentation.

The paper (Sec. IV-A) pads each 256x128 image with 10 zero pixels, crops 256x128 at random
and flips horizontally at random (the AGW-baseline pipeline). Here that happens on whole
batches of tensors; zero padding is applied before normalisation, exactly like padding the
PIL image with black, and all randomness comes from a ``torch.Generator`` so runs repeat.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

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
    """The paper's training augmentation on batches.

    uint8 ``(B, H, W, 3)`` -> zero pad ``pad`` (paper: 10) + random crop back to ``(H, W)``
    -> random horizontal flip (``flip``, paper: on, p = 0.5) -> ImageNet normalisation ->
    float ``(B, 3, H, W)``.
    """

    def __init__(self, pad: int = 10, flip: bool = True, flip_p: float = 0.5,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        self.pad, self.flip, self.flip_p = int(pad), bool(flip), float(flip_p)
        self.mean, self.std = tuple(mean), tuple(std)

    def __call__(self, images: np.ndarray | torch.Tensor, generator: torch.Generator | None = None
                 ) -> torch.Tensor:
        x = to_float(images)
        x = random_pad_crop(x, self.pad, generator)
        if self.flip:
            x = random_hflip(x, self.flip_p, generator)
        return normalize(x, self.mean, self.std)
