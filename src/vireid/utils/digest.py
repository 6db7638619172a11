"""Content digests: of a file's bytes and of a state dict's tensors."""
from __future__ import annotations

import hashlib
import os
from typing import Any, Union

PathLike = Union[str, os.PathLike]


def file_sha256(path: PathLike, block: int = 1 << 20) -> str:
    """sha256 of a file's bytes (hex), read in blocks of ``block`` bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            h.update(chunk)
    return h.hexdigest()


def state_digest(state: dict[str, Any]) -> str:
    """Short content hash of a state dict (names, dtypes, shapes and values of its tensors;
    other entries are ignored), the same for a model on any device."""
    import torch  # late: this module also serves torch-free code (file digests)

    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key]
        if not isinstance(t, torch.Tensor):
            continue
        t = t.detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]
