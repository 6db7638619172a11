"""Benchmarks of the models on a device: feature extraction and training images/s (fp32
and mixed precision), a whole RegDB-sized evaluation end to end, full mode on a device with
each backend, and the density of trained features. ``vireid bench`` and
``benchmarks/gpu_check.py`` call them; the JSON keys are documented in docs/performance.md.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn.functional as nnf

from vireid.apps.bench_scoring import (GEOMETRY, PAPER_REGDB_EXTRACT_S, PAPER_REGDB_FULL_S,
                                       PAPER_REGDB_SIMPLIFIED_S, REGDB_N, bench_full, sync,
                                       timeit)
from vireid.apps.index import discover_images, embed_images, load_checkpoint_model
from vireid.config import Config
from vireid.engine.trainer import AMP_DTYPES
from vireid.evaluation.metrics import eval_regdb
from vireid.models.build import build_model
from vireid.models.ccn import CCN
from vireid.models.resnet import resnet
from vireid.scoring import fastccn
from vireid.scoring.scorers import full_pair_fn, score_rerank, score_simplified

log = logging.getLogger(__name__)


def bench_models(batch: int, steps: int = 2) -> dict[str, Any]:
    """Feature extraction images/s (DSCSN, eval mode) and training images/s (one SGD step on
    ``batch`` RGB + ``batch`` IR images, PBCE + 0.1·ID) of DSCSN+CCN, against a plain
    ResNet-50 with an ID head (one path, ID loss only) on the same 2·batch images.
    Random weights; 256×128 inputs."""

    cfg = Config()
    h, w = cfg.data.height, cfg.data.width
    classes = 395
    model = build_model(cfg, classes, load_pretrained=False)
    plain = resnet(50, last_stride=cfg.model.last_stride, num_classes=classes)
    x_rgb, x_ir = torch.randn(batch, 3, h, w), torch.randn(batch, 3, h, w)
    labels = torch.arange(batch) % classes
    out: dict[str, Any] = {"batch_per_modality": batch, "input_hw": [h, w]}

    model.eval()
    with torch.no_grad():
        model.forward_features(x_rgb, "rgb")
        per, _ = timeit(lambda: model.forward_features(x_rgb, "rgb"))
    out["extract_images_per_s"] = batch / per
    out["regdb_extract_extrapolated_s"] = 2 * REGDB_N / out["extract_images_per_s"]

    def step_dscsn(opt: torch.optim.Optimizer) -> None:
        f_r, g_r, f_i, g_i = model.forward_pair(x_rgb, x_ir)
        ia = torch.arange(batch).repeat(4)                           # N positives + 3N negatives
        ib = torch.cat([torch.arange(batch)] + [torch.roll(torch.arange(batch), s) for s in (1, 2, 3)])
        d = model.ccn(f_r, f_i, ia, ib).clamp(1e-6, 1 - 1e-6)
        lab = (ia != ib).float()
        loss = nnf.binary_cross_entropy(d, lab) + 0.1 * nnf.cross_entropy(
            model.classify(torch.cat([g_r, g_i])), torch.cat([labels, labels]))
        opt.zero_grad()
        loss.backward()
        opt.step()

    def step_plain(opt: torch.optim.Optimizer) -> None:
        loss = nnf.cross_entropy(plain(torch.cat([x_rgb, x_ir])), torch.cat([labels, labels]))
        opt.zero_grad()
        loss.backward()
        opt.step()

    for name, net, step in (("dscsn_ccn", model, step_dscsn), ("resnet50_id", plain, step_plain)):
        net.train()
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
        step(opt)  # warm-up
        t0 = time.perf_counter()
        for _ in range(steps):
            step(opt)
        out[f"train_images_per_s_{name}"] = steps * 2 * batch / (time.perf_counter() - t0)
    out["train_speed_ratio_dscsn_ccn_vs_resnet50"] = (out["train_images_per_s_dscsn_ccn"]
                                                      / out["train_images_per_s_resnet50_id"])
    return out


def feature_density(checkpoint: str, image_root: str, max_images: int = 200) -> dict[str, Any]:
    """Fraction of non-zero values of F (the last ReLU's output) of a trained checkpoint on
    up to ``max_images`` images per modality under ``image_root`` (SYSU layout: cam1/2/4/5
    RGB, cam3/6 IR; other folders count as RGB). Without and with flip averaging."""


    model, cfg, ident = load_checkpoint_model(checkpoint)
    paths = discover_images(image_root)
    ir = [p for p in paths if any(part in ("cam3", "cam6") for part in Path(p).parts)]
    rgb = [p for p in paths if p not in set(ir)]
    out: dict[str, Any] = {"checkpoint": ident.checkpoint, "epoch": ident.epoch,
                           "arch": cfg.model.arch, "width": cfg.model.width}
    for name, ps in (("rgb", rgb[:max_images]), ("ir", ir[:max_images])):
        if not ps:
            continue
        for flip in (False, True):
            F, _ = embed_images(model, cfg, ps, name, flip=flip)
            out[f"{name}{'_flip' if flip else ''}"] = {"images": len(ps),
                                                         "density": float((F != 0).mean()),
                                                         "negative_values": int((F < 0).sum())}
    return out


def bench_end_to_end(n_images: int = 2 * REGDB_N, batch: int = 32, topk: int = 20,
                     device: str = "cpu", backend: str = "auto", seed: int = 0) -> dict[str, Any]:
    """A whole RegDB-sized evaluation with the paper model (random weights, random images):
    extraction of ``n_images`` 256×128 images (half IR queries, half RGB gallery), then
    simplified, full and rerank (top-``topk``) scoring, each followed by the RegDB metric.
    Images are random tensors (no decoding), 10 per identity as in RegDB."""

    cfg = Config()
    h, w = cfg.data.height, cfg.data.width
    nq = n_images // 2
    ng = n_images - nq
    dev = torch.device(device)
    torch.manual_seed(seed)
    model = build_model(cfg, 206, load_pretrained=False).to(dev).eval()
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, Any] = {"images": n_images, "queries": nq, "gallery": ng, "batch": batch,
                           "input_hw": [h, w], "device": str(dev), "topk": topk,
                           "paper_s": {"extract": PAPER_REGDB_EXTRACT_S,
                                       "simplified": PAPER_REGDB_SIMPLIFIED_S,
                                       "full": PAPER_REGDB_FULL_S}}

    def extract(n: int, modality: str) -> tuple[torch.Tensor, torch.Tensor]:
        fs, gs = [], []
        with torch.no_grad():
            for s in range(0, n, batch):
                x = torch.rand(min(batch, n - s), 3, h, w, generator=gen).to(dev)
                f, g = model.forward_features(x, modality)
                fs.append(f)
                gs.append(g)
        return torch.cat(fs), torch.cat(gs)

    sync(dev)
    t0 = time.perf_counter()
    qF, qG = extract(nq, "ir")
    gF, gG = extract(ng, "rgb")
    sync(dev)
    out["extract_s"] = time.perf_counter() - t0
    out["extract_images_per_s"] = n_images / out["extract_s"]
    out["feature_density_random_weights"] = fastccn.density(qF, gF)
    q_pids = (torch.arange(nq) // 10).numpy()
    g_pids = (torch.arange(ng) // 10).numpy()

    def timed(name: str, fn: Callable[[], torch.Tensor]) -> None:
        sync(dev)
        t = time.perf_counter()
        dist = fn()
        sync(dev)
        out[f"{name}_s"] = time.perf_counter() - t
        t = time.perf_counter()
        cmc, mAP, _ = eval_regdb(dist.cpu().numpy(), q_pids, g_pids)
        out[f"{name}_metric_s"] = time.perf_counter() - t
        out[f"{name}_rank1"] = float(cmc[0])

    timed("simplified", lambda: -score_simplified(qG, gG))
    timed("full", lambda: fastccn.score_full(model.ccn, qF, gF, backend=backend))  # type: ignore[arg-type]
    timed("rerank", lambda: score_rerank(score_simplified(qG, gG),
                                         full_pair_fn(model.ccn, qF, gF, "b", backend), topk))
    out["full_backend"] = fastccn.resolve_backend(backend, qF)
    out["total_s"] = sum(out[k] for k in ("extract_s", "simplified_s", "simplified_metric_s",
                                            "full_s", "full_metric_s", "rerank_s", "rerank_metric_s"))
    if dev.type == "cuda":
        out["peak_gpu_memory_bytes"] = torch.cuda.max_memory_allocated(dev)
    return out


def bench_train_step(batch: int = 32, steps: int = 5, device: str = "cpu", amp: str = "off",
                     warmup: int = 2) -> dict[str, Any]:
    """Training images/s of the paper model (DSCSN + CCN, ResNet-50, 256×128, random weights):
    forward + backward + SGD step on ``batch`` RGB + ``batch`` IR images with N positive and
    3N negative pairs, PBCE + 0.1·ID. ``amp``: off | bf16 | fp16 (torch.autocast; fp16 with a
    GradScaler), applied here directly, independent of the trainer."""
    if amp not in AMP_DTYPES:
        raise ValueError(f"amp: expected one of {', '.join(AMP_DTYPES)}, got {amp!r}")

    dev = torch.device(device)
    cfg = Config()
    h, w = cfg.data.height, cfg.data.width
    classes = 395
    model = build_model(cfg, classes, load_pretrained=False).to(dev).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x_rgb, x_ir = torch.randn(batch, 3, h, w, device=dev), torch.randn(batch, 3, h, w, device=dev)
    labels = torch.arange(batch, device=dev) % classes
    ia = torch.arange(batch, device=dev).repeat(4)
    ib = torch.cat([torch.arange(batch, device=dev)]
                   + [torch.roll(torch.arange(batch, device=dev), s) for s in (1, 2, 3)])
    lab = (ia != ib).float()
    dtype = AMP_DTYPES[amp]
    scaler = torch.amp.GradScaler(dev.type, enabled=(amp == "fp16"))

    def step() -> float:
        with torch.autocast(dev.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            f_r, g_r, f_i, g_i = model.forward_pair(x_rgb, x_ir)
            d = model.ccn(f_r, f_i, ia, ib)
            logits = model.classify(torch.cat([g_r, g_i]))
        # The losses in float32 (BCE on probabilities is unsafe under autocast).
        loss = nnf.binary_cross_entropy(d.float().clamp(1e-6, 1 - 1e-6), lab) + 0.1 * nnf.cross_entropy(
            logits.float(), torch.cat([labels, labels]))
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        return float(loss.detach())

    for _ in range(warmup):
        step()
    sync(dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    t0 = time.perf_counter()
    losses = [step() for _ in range(steps)]
    sync(dev)
    dt = time.perf_counter() - t0
    out = {"device": str(dev), "amp": amp, "batch_per_modality": batch, "steps": steps,
           "seconds": dt, "train_images_per_s": steps * 2 * batch / dt,
           "losses_finite": all(map(lambda v: v == v and abs(v) != float("inf"), losses))}
    if dev.type == "cuda":
        out["peak_gpu_memory_bytes"] = torch.cuda.max_memory_allocated(dev)
    return out


def bench_extract(batch: int = 128, steps: int = 5, device: str = "cpu") -> dict[str, Any]:
    """Feature extraction images/s of the paper model (eval mode, random weights, 256×128)."""

    dev = torch.device(device)
    cfg = Config()
    model = build_model(cfg, 395, load_pretrained=False).to(dev).eval()
    x = torch.randn(batch, 3, cfg.data.height, cfg.data.width, device=dev)
    with torch.no_grad():
        model.forward_features(x, "rgb")
        sync(dev)
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        t0 = time.perf_counter()
        for _ in range(steps):
            model.forward_features(x, "rgb")
        sync(dev)
        dt = time.perf_counter() - t0
    out = {"device": str(dev), "batch": batch, "steps": steps, "seconds": dt,
           "extract_images_per_s": steps * batch / dt,
           "regdb_extract_extrapolated_s": 2 * REGDB_N * dt / (steps * batch)}
    if dev.type == "cuda":
        out["peak_gpu_memory_bytes"] = torch.cuda.max_memory_allocated(dev)
    return out


def bench_full_device(n: int = REGDB_N, device: str = "cpu", backend: str = "auto",
                      chunk_size: int = 256, density: Optional[float] = None,
                      seed: int = 0) -> dict[str, Any]:
    """Full mode on n × n random non-negative maps at the paper geometry on ``device`` with
    ``backend``, checked against the direct form on sampled pairs. ``density``: fraction of
    non-zeros (None: uniform maps, no zeros)."""

    dev = torch.device(device)
    torch.manual_seed(seed)
    ccn = CCN(**GEOMETRY).eval()
    c, (h, w) = GEOMETRY["channels"], GEOMETRY["feat_hw"]
    feats = torch.rand(2 * n, c, h, w)
    if density is not None:
        feats = torch.where(torch.rand(feats.shape) < density, feats, 0.0)
    feats = feats.to(dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    res = bench_full(ccn, feats[:n], feats[n:], chunk_size, backend=backend)
    res["feature_density"] = fastccn.density(feats)
    if dev.type == "cuda":
        res["peak_gpu_memory_bytes"] = torch.cuda.max_memory_allocated(dev)
    return res
