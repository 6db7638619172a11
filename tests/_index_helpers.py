"""Shared fixtures of test_index.py and test_search.py: a tiny model checkpoint, a folder of
synthetic identity images, and an independent feature reference (PIL + hand normalisation)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vireid.config import Config, validate
from vireid.engine.checkpoint import save_checkpoint
from vireid.models.build import build_model

H, W = 64, 32
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def tiny_cfg() -> Config:
    """resnet18 at width 0.125 on 64x32 inputs: F is 64 x 4 x 2 (last stride 1)."""
    cfg = Config()
    cfg.model.arch, cfg.model.width, cfg.model.pretrained = "resnet18", 0.125, "none"
    cfg.model.last_stride = 1
    cfg.data.height, cfg.data.width = H, W
    cfg.ccn.kernel_size = [2, 2]  # a 3x3 kernel does not fit the 4 x 2 map
    return validate(cfg)


def make_checkpoint(path: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    cfg = tiny_cfg()
    model = build_model(cfg, 4)
    return save_checkpoint(path, model=model, cfg=cfg, num_classes=4, epoch=3, iteration=30)


def identity_image(pid: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """Each identity has its own coarse colour layout; images of one id differ by noise."""
    base = np.random.default_rng(1000 + pid).integers(0, 256, (8, 4, 3)).astype(np.float32)
    img = np.kron(base, np.ones((8, 8, 1), dtype=np.float32))  # 64 x 32 blocks
    img = img + rng.normal(0, 20, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def make_images(root: Path, pids: range, per_id: int, seed: int = 0, ext: str = ".png") -> list[Path]:
    rng = np.random.default_rng(seed)
    out = []
    for pid in pids:
        d = root / f"{pid:04d}"
        d.mkdir(parents=True, exist_ok=True)
        for k in range(per_id):
            p = d / f"{k:02d}{ext}"
            Image.fromarray(identity_image(pid, k, rng)).save(p)
            out.append(p)
    return sorted(out)


@torch.no_grad()
def reference_features(model: torch.nn.Module, paths: list[Path], modality: str
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Independent of vireid's data code: PIL decode + bilinear resize + ImageNet
    normalisation by hand, one image at a time; G = spatial mean of F."""
    model.eval()
    Fs = []
    for p in paths:
        with Image.open(p) as im:
            arr = np.asarray(im.convert("RGB").resize((W, H), Image.BILINEAR), dtype=np.float32)
        x = (arr / 255.0 - MEAN) / STD
        x = torch.from_numpy(x.transpose(2, 0, 1)[None].copy())
        F, _ = model.forward_features(x, modality)
        Fs.append(F[0].numpy())
    F = np.stack(Fs)
    return F, F.mean(axis=(2, 3))


def single_thread():
    """Generator for an autouse fixture: one intra-op thread while a test module runs.

    These models are tiny; on a 2-core machine shared with other processes, two spinning
    OpenMP threads make each conv ~10x slower than one thread.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
