"""Distributed (DDP, gloo, 2 CPU processes) training against one process, and the open-set
same-modality pairs.

Why the comparison can be tight: with ``--pair-groups 2`` one process splits each batch's N
ids into the same two halves that two DDP ranks hold, augments and pairs each half with the
same per-(iteration, group) generators, and averages the loss over equal halves; DDP
averages the two ranks' gradients, which is the gradient of that same mean. BatchNorm is
synchronised (train.sync_bn=true) so statistics are those of the whole batch. What is left
is float rounding (all-reduce order, float64 BN sums): measured ≤ 1e-6 on the weights.
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


#: Observed: ~4e-7 (weights) and ~2e-7 (logged losses) after 6 SGD steps.
WEIGHT_TOL = 1e-5
LOSS_TOL = 1e-5

COMMON = ("--threads", "1", "--no-progress", "data.ids_per_batch=6", "train.log_every=1",
          "train.sync_bn=true")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(*args: str, world: int = 2, timeout: float = 120) -> list[subprocess.CompletedProcess]:
    """What ``torchrun --nproc_per_node=WORLD -m vireid ARGS`` does on one node, without the
    launcher process: one ``python -m vireid`` per rank with torchrun's environment."""
    port = str(_free_port())
    procs = []
    for r in range(world):
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", RANK=str(r),
                   LOCAL_RANK=str(r), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world),
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=port, VIREID_DIST_BACKEND="gloo",
                   PYTHONFAULTHANDLER="1")
        procs.append(subprocess.Popen([sys.executable, "-m", "vireid", *map(str, args)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    out = []
    for p in procs:
        so, se = p.communicate(timeout=timeout)
        out.append(subprocess.CompletedProcess(p.args, p.returncode, so, se))
    for r, p in enumerate(out):
        assert p.returncode == 0, f"rank {r} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}"
    return out


def _steps(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()
            if json.loads(x)["type"] == "step"]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)["model"]


@pytest.fixture(scope="module")
def single_run(tmp_path_factory, tiny_config, sysu_root) -> Path:
    """The one-process reference, in this process (no torch import to pay), pairing within
    two halves of each batch like a 2-rank run."""
    from vireid.config import load_config
    from vireid.engine.trainer import train

    out = tmp_path_factory.mktemp("ddp") / "single"
    cfg = load_config(tiny_config, [f"data.root={sysu_root}", "train.threads=1",
                                    "data.ids_per_batch=6", "train.log_every=1",
                                    "train.sync_bn=true"])
    train(cfg, out, progress=False, pair_groups=2)
    return out


def test_two_rank_ddp_run_with_a_resume_matches_one_process(single_run, tiny_config, sysu_root,
                                                            tmp_path):
    run = tmp_path / "ddp"
    first = _torchrun("train", "--config", tiny_config, "--data-root", sysu_root, "-o", run,
                      "--stop-after", "1", *COMMON)
    assert "stopped after epoch 1/2" in first[0].stdout and first[1].stdout == ""  # rank 0 speaks
    ck = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert ck["epoch"] == 1 and ck["extra"]["world_size"] == 2 and ck["extra"]["pair_groups"] == 2
    _torchrun("train", "--resume", run, "--no-progress")  # config (threads too) from the run

    # Only rank 0 wrote: one line per iteration, no duplicates, no temp files.
    got, ref = _steps(run), _steps(single_run)
    assert [r["iteration"] for r in got] == [r["iteration"] for r in ref] == [1, 2, 3, 4, 5, 6]
    assert not [p for p in run.rglob("*") if ".tmp" in p.name]
    # The loss curve: the logged loss is the global-batch mean (averaged over the ranks).
    for a, b in zip(got, ref):
        for key in ("loss", "pbce", "id"):
            assert abs(a[key] - b[key]) <= LOSS_TOL * max(1.0, abs(b[key])), (key, a, b)
    # Final weights (BatchNorm running statistics included).
    wa, wb = _weights(run), _weights(single_run)
    assert wa.keys() == wb.keys()
    worst = max(float((wa[k].double() - wb[k].double()).abs().max()) for k in wa
                if wa[k].is_floating_point())
    assert worst <= WEIGHT_TOL, worst
    # ... and the training moved them: the agreement is not that of two untouched models.
    from vireid.config import load_config
    from vireid.models.build import build_model

    torch.manual_seed(0)
    init = build_model(load_config(tiny_config), 1, load_pretrained=False).state_dict()
    moved = max(float((init[k] - wb[k]).abs().max()) for k in wb
                if k in init and wb[k].is_floating_point() and init[k].shape == wb[k].shape
                and "running" not in k and "num_batches" not in k)
    assert moved > 100 * WEIGHT_TOL
    summary = json.loads((run / "summary.json").read_text())
    assert summary["finished"] and summary["world_size"] == 2


def test_dist_batchnorm_matches_plain_batchnorm_in_one_process():
    """Without a process group DistBatchNorm is BatchNorm; conversion keeps the state keys."""
    from vireid.utils.distributed import DistBatchNorm, convert_sync_batchnorm

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    keys = set(net.state_dict())
    x = torch.randn(5, 3, 8, 6)
    ref = net(x)
    conv = convert_sync_batchnorm(net, torch.device("cpu"))
    assert isinstance(conv[1], DistBatchNorm) and set(conv.state_dict()) == keys
    assert torch.allclose(conv(x), ref, atol=1e-6)


# --------------------------------------------------------------------------- open set
def test_same_modality_pair_sets_are_one_to_one_to_one():
    """Counts 1:1:1, positives first, and targets from the identities (a literal loop)."""
    from vireid.data.sampler import CrossModalitySampler
    from vireid.engine.train_data import build_local_step

    rgb = [p for p in range(8) for _ in range(3)]
    ir = [p for p in range(8) for _ in range(1 + p % 2)]  # even ids: a single IR image
    s = CrossModalitySampler(rgb, ir, num_ids=6, iters_per_epoch=2, seed=1, draws=2)
    idx = np.asarray(next(iter(s)), dtype=np.int64)  # (6, 4): rgb, ir, rgb2, ir2
    assert idx.shape == (6, 4)
    for r, i, r2, i2 in idx:
        assert rgb[r] == ir[i] == rgb[r2] == ir[i2]
        assert r != r2  # three RGB images each: the second draw is another image
        assert (i != i2) == (ir.count(ir[i]) > 1)

    class Images:  # uint8 (B, H, W, 3) of any rows
        def batch(self, rows):
            return np.zeros((len(rows), 8, 4, 3), np.uint8)

    from vireid.data.transforms import TrainTransform

    labels_r, labels_i = torch.tensor(rgb), torch.tensor(ir)
    neg = 2
    st = build_local_step(idx, Images(), len(rgb), labels_r, labels_i, TrainTransform(pad=1),
                          neg, seed=0, iteration=5, first_group=0, group_size=3)
    assert st.x_rgb.shape[0] == st.x_ir.shape[0] == 12  # first draws, then second draws
    assert set(st.pairs) == {"rgb-ir", "rgb-rgb", "ir-ir"}
    sizes = {k: len(v[0]) for k, v in st.pairs.items()}
    assert set(sizes.values()) == {6 * (1 + neg)}
    y = {"rgb-ir": (st.y_rgb, st.y_ir), "rgb-rgb": (st.y_rgb, st.y_rgb), "ir-ir": (st.y_ir, st.y_ir)}
    for name, (ia, ib, t) in st.pairs.items():
        ya, yb = y[name]
        for a, b, tt in zip(ia.tolist(), ib.tolist(), t.tolist()):
            assert a < 6  # side a: a first draw
            assert (b < 6) == (name == "rgb-ir")  # same-modality side b: a second draw
            assert a // 3 == (b % 6) // 3  # pairs never leave their group of 3 ids
            assert tt == float(ya[a] != yb[b])
        # Each first-draw image has one positive (its identity's other image) and `neg`
        # negatives, so each group holds 3 positives.
        assert int((t == 0).sum()) == 6


def test_open_set_training_runs(tmp_path, tiny_config, sysu_root):
    from vireid.config import load_config
    from vireid.engine.trainer import train

    cfg = load_config(tiny_config, [f"data.root={sysu_root}", "train.threads=1",
                                    "data.same_modality_pairs=true", "train.epochs=1"])
    res = train(cfg, tmp_path / "open", progress=False)
    steps = _steps(tmp_path / "open")
    assert res.finished and steps and all(np.isfinite(r["loss"]) and r["pbce"] > 0 for r in steps)
    # 2 RGB + 2 IR images per identity: 16 per iteration at N = 4.
    ck = torch.load(res.last_checkpoint, weights_only=True)
    assert ck["sampler"]["draws"] == 2
    from vireid.errors import ConfigError

    bad = load_config(tiny_config, [f"data.root={sysu_root}", "data.same_modality_pairs=true",
                                    "loss.kind=rkl"])
    with pytest.raises(ConfigError, match="same_modality_pairs"):
        train(bad, tmp_path / "bad", progress=False)
