"""Robust image decoding: any PIL mode -> RGB uint8, optional bilinear resize.

Every reader of image files in vireid goes through :func:`decode_image`, so that the odd
files real datasets contain (1-channel IR JPEGs, 16-bit PNGs, palette or CMYK images) all
arrive as the same ``(H, W, 3) uint8`` array, and a broken file gives a :class:`DataError`
naming the file and what PIL reported instead of a stack trace deep inside a data loader.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
from PIL import Image

from vireid.errors import DataError

log = logging.getLogger(__name__)

#: The resize filter used everywhere; part of the image-cache key.
RESIZE_METHOD = "pil-bilinear"

_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")

#: Ends the message of an undecodable image. Commands without such an option (search, index)
#: remove it with :func:`without_skip_hint`.
SKIP_HINT = " (--skip-corrupt / data.skip_corrupt=true skips such files)"


def show_path(path: str | os.PathLike) -> str:
    """A path for a message: as is when it is valid UTF-8, else the repr of its bytes (a file
    name that is not UTF-8 reaches Python with lone surrogates, which cannot be printed)."""
    text = os.fspath(path)
    if isinstance(text, bytes):
        return repr(text)
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return repr(os.fsencode(text))


def without_skip_hint(message: str, instead: str = "") -> str:
    """``message`` with :data:`SKIP_HINT` replaced by ``instead``, for callers that offer no
    ``--skip-corrupt`` (unchanged when the hint is absent)."""
    return message.replace(SKIP_HINT, instead)


def _scale_to_uint8(arr: np.ndarray, mode: str) -> np.ndarray:
    """Map a high-bit-depth single-channel array to uint8.

    16-bit data ("I;16*") is divided by 257 (65535 -> 255, exact on 8-bit data stored in 16
    bits). Mode "I" (32-bit int; PIL opens some 16-bit PNGs this way) is treated as 8-bit when
    its values fit in 0..255, else as 16-bit (clipped to 0..65535). Mode "F" (float) is taken
    as [0, 1] when its maximum is at most 1, else as 0..255 (clipped).
    """
    a = arr.astype(np.float64)
    if mode in _SIXTEEN_BIT_MODES:
        a = a / 257.0
    elif mode == "I":
        if a.size and (a.min() < 0 or a.max() > 255):
            a = np.clip(a, 0, 65535) / 257.0
    elif mode == "F":
        if a.size and np.nanmax(a) <= 1.0:
            a = a * 255.0
        a = np.nan_to_num(a, nan=0.0)
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


def to_rgb_array(img: Image.Image) -> np.ndarray:
    """Convert a loaded PIL image of any mode to an RGB uint8 array ``(H, W, 3)``.

    Grayscale (including IR) is replicated to three channels; alpha is dropped (not
    composited); palette images go through RGBA so palette transparency is also dropped;
    CMYK/YCbCr/LAB/HSV use PIL's own conversion.
    """
    mode = img.mode
    if mode in _SIXTEEN_BIT_MODES or mode in ("I", "F"):
        gray = _scale_to_uint8(np.asarray(img), mode)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode == "RGB":
        return np.asarray(img, dtype=np.uint8).copy()
    if mode == "P":
        img = img.convert("RGBA")
    if mode in ("L", "1"):
        gray = np.asarray(img.convert("L"), dtype=np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def resize_rgb(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an RGB uint8 array ``(h, w, 3)`` to ``size = (H, W)`` with PIL bilinear.

    PIL's bilinear filter widens its support when shrinking, i.e. it antialiases.
    """
    height, width = int(size[0]), int(size[1])
    if height <= 0 or width <= 0:
        raise ValueError(f"size must be positive (H, W), got {size}")
    if arr.shape[0] == height and arr.shape[1] == width:
        return arr
    out = Image.fromarray(arr, mode="RGB").resize((width, height), Image.BILINEAR)
    return np.asarray(out, dtype=np.uint8).copy()


def _is_empty(p: Path) -> bool:
    try:
        return p.stat().st_size == 0
    except OSError:
        return False


def decode_image(path: str | os.PathLike, size: tuple[int, int] | None = None) -> np.ndarray:
    """Read one image file as RGB uint8.

    Args:
        path: image file.
        size: optional ``(H, W)``; when given the image is resized (bilinear).

    Returns:
        ``(H, W, 3) uint8``.

    Raises:
        DataError: the file is missing, unreadable, not an image, truncated or corrupt; the
            message names the file and what PIL said.
    """
    p = Path(path)
    try:
        with Image.open(p) as img:
            # load() forces the full decode so truncated data fails here, not later.
            img.load()
            arr = to_rgb_array(img)
    except FileNotFoundError:
        kind = "a dangling symbolic link" if p.is_symlink() else "nothing"
        raise DataError(f"image file not found: expected an image at {show_path(p)}, found "
                        f"{kind}") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        found = "an empty (0-byte) file" if _is_empty(p) else f"{type(exc).__name__}: {exc}"
        raise DataError(f"cannot decode image {show_path(p)}: expected a readable image file, "
                        f"found {found}{SKIP_HINT}") from exc
    if arr.ndim != 3 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise DataError(f"image {show_path(p)} decoded to an empty array of shape {arr.shape}")
    if size is not None:
        arr = resize_rgb(arr, size)
    return arr
