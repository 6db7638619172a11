"""`vireid eval` under torchrun: two gloo ranks give exactly the single-process results, and
rerank with K >= the gallery size equals full-mode scoring (the rerank pair function is exact).

The checkpoint is a seeded, untrained tiny model saved in-process (no training needed: the
property is equality of two ways of computing the same numbers).
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

TINY = {"name": "tiny-sharded",
        "model": {"arch": "resnet18", "width": 0.125, "last_stride": 1, "shared_stages": "3-4",
                  "pretrained": "none"},
        "ccn": {"kernel_size": [2, 2], "stride": [1, 1], "padding": 1, "share_fc": False},
        "data": {"dataset": "sysu", "height": 64, "width": 32},
        "eval": {"batch_size": 64, "chunk_size": 2, "topk": 2}}


def write_sysu(root: Path, train=(1, 2), test=(3, 4, 5, 6, 7), per_cam: int = 2) -> Path:
    """A tiny SYSU-MM01 layout: cams 1, 2 (RGB) and 3, 6 (IR), ``per_cam`` images each."""
    rng = np.random.default_rng(0)
    (root / "exp").mkdir(parents=True)
    (root / "exp" / "train_id.txt").write_text(",".join(map(str, train)) + "\n")
    (root / "exp" / "val_id.txt").write_text(f"{max(train) + 100}\n")
    (root / "exp" / "test_id.txt").write_text(",".join(map(str, test)) + "\n")
    for c in range(1, 7):
        (root / f"cam{c}").mkdir()
    for pid in [*train, *test, max(train) + 100]:
        for c in (1, 2, 3, 6):
            d = root / f"cam{c}" / f"{pid:04d}"
            d.mkdir()
            for k in range(per_cam):
                img = (rng.integers(0, 128, (64, 32, 3)) + (pid * 15) % 120).astype(np.uint8)
                Image.fromarray(img).save(d / f"{k + 1:04d}.png")
    return root


def write_checkpoint(path: Path, cfg_dict: dict = TINY, num_classes: int = 3, seed: int = 0) -> Path:
    from vireid.config import from_dict
    from vireid.engine.checkpoint import save_checkpoint
    from vireid.models.build import build_model

    torch.manual_seed(seed)
    cfg = from_dict(cfg_dict)
    model = build_model(cfg, num_classes, load_pretrained=False)
    with torch.no_grad():  # a non-trivial CCN head, so full and simplified rankings differ
        for p in model.ccn.parameters():
            p.normal_(0.0, 1.0)
    return save_checkpoint(path, model=model, cfg=cfg, num_classes=num_classes, epoch=1,
                           iteration=1)


def _env(**extra: str) -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONHASHSEED="0", **extra)


def _free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sharded_eval")
    root = write_sysu(tmp / "sysu")
    ckpt = write_checkpoint(tmp / "tiny.pt")
    return tmp, root, ckpt


def test_two_ranks_equal_single_process_and_rerank_all_equals_full(setup):
    tmp, root, ckpt = setup
    common = ["eval", "--checkpoint", str(ckpt), "--data-root", str(root), "--trials", "0,1"]
    # Single process: all three modes (rerank reads the full matrix), and rerank alone with
    # K >= gallery (the top-K pair function path, no full matrix).
    single = subprocess.Popen([sys.executable, "-m", "vireid", *common, "--scoring", "all",
                               "--json", str(tmp / "single.json")], env=_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rr = subprocess.Popen([sys.executable, "-m", "vireid", *common, "--scoring", "rerank",
                           "--topk", "1000", "--json", str(tmp / "rerank_all.json")], env=_env(),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    outs = [single.communicate(timeout=120), rr.communicate(timeout=120)]
    assert single.returncode == 0 and rr.returncode == 0, outs

    # Two ranks launched the way torchrun does: full mode sharded, then rerank alone sharded.
    port = _free_port()
    for scoring in ("all", "rerank"):
        name = f"dist_{scoring}.json"
        extra = ["--topk", "1000"] if scoring == "rerank" else []
        procs = [subprocess.Popen(
            [sys.executable, "-m", "vireid", *common, "--scoring", scoring, *extra,
             "--json", str(tmp / name)],
            env=_env(RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE="2", LOCAL_WORLD_SIZE="2",
                     MASTER_ADDR="127.0.0.1", MASTER_PORT=port, VIREID_DIST_BACKEND="gloo"),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in range(2)]
        res = [p.communicate(timeout=120) for p in procs]
        assert all(p.returncode == 0 for p in procs), res
        # Only rank 0 prints the table.
        assert "| simplified |" in res[0][0] or "| rerank" in res[0][0]
        assert res[1][0].strip() == "", res[1][0]
        assert "joined process group: rank 1 of 2" in res[1][1]
        port = _free_port()

    def load(name):
        out = json.loads((tmp / name).read_text())
        return out

    def strip(r):  # timings differ between runs; everything else must be identical
        return {k: v for k, v in r.items() if k != "seconds"}

    single_all, dist_all = load("single.json"), load("dist_all.json")
    assert set(single_all) == {"simplified", "full", "rerank", "fused", "fused-rerank"}
    for mode in single_all:
        assert strip(dist_all[mode]) == strip(single_all[mode]), mode
    rerank_all, dist_rerank = load("rerank_all.json"), load("dist_rerank.json")
    assert strip(dist_rerank) == strip(rerank_all)
    # Rerank with K >= gallery size scores every pair with D: exactly full mode.
    full = strip(single_all["full"])
    rer = strip(rerank_all)
    for k in ("mean", "std", "per_trial", "cmc"):
        assert rer[k] == full[k], k
    # And the CCN head is not trivial here: full differs from simplified on some metric.
    assert single_all["full"]["per_trial"] != single_all["simplified"]["per_trial"]
