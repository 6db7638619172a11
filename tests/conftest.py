"""Shared fixtures: tiny synthetic datasets, a tiny config, a CLI runner and one trained run.

Everything here is session-scoped so the whole test session generates each dataset once and
trains the shared tiny model once.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

# Tiny models run faster and more repeatably on one thread (thread hand-offs dominate their
# cost, and badly so on a loaded 2-core machine); tests that need more threads set them.
torch.set_num_threads(1)

#: A model and schedule small enough to train in a few seconds on one CPU thread:
#: a 1/8-width ResNet-18 at 64x32 (F = 64x4x2 with last stride 1, so 2x2 CCN kernels),
#: 2 epochs of 3 iterations of N = 4 identities.
TINY_CONFIG = """\
name: tiny
model: {arch: resnet18, width: 0.125, last_stride: 1, shared_stages: "3-4", pretrained: none}
ccn: {kernel_size: [2, 2], stride: [1, 1], padding: 1}
loss: {kind: ccn, lambda_id: 0.1}
data: {dataset: sysu, height: 64, width: 32, pad: 2, ids_per_batch: 4, neg_ratio: 2}
train: {epochs: 2, iters_per_epoch: 3, lr: 0.01, lr_milestones: [1], log_every: 2, seed: 0}
eval: {batch_size: 64, chunk_size: 16, topk: 3}
"""


def run_cli(*args: str, check: bool = False, timeout: float = 120) -> subprocess.CompletedProcess:
    """``python -m vireid ARGS`` in a subprocess (one torch thread: fast and repeatable)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONHASHSEED="0")
    proc = subprocess.run([sys.executable, "-m", "vireid", *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"vireid {' '.join(map(str, args))} failed ({proc.returncode}):\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


def assert_handled(rc: int, err: str, what: str, context: str = "") -> list[str]:
    """The property every bad-input test asks of the CLI: exit 0 or 2, no traceback, and on
    exit 2 exactly one ``error:`` line. Returns the ``error:`` lines; ``context`` (e.g. the
    arguments) goes into each failure message before stderr."""
    assert rc in (0, 2), f"{what}: exit {rc}\n{context}{err}"
    assert "Traceback" not in err, f"{what}: traceback\n{context}{err}"
    errors = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    if rc == 2:
        assert len(errors) == 1, f"{what}: expected one error line\n{context}{err}"
    return errors


@pytest.fixture(scope="session")
def tiny_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("configs") / "tiny.yaml"
    path.write_text(TINY_CONFIG)
    return path


@pytest.fixture(scope="session")
def sysu_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic SYSU-MM01 folder: 14 ids (about 10 train+val, 3 test), 2-3 images per
    camera, 64x32 images."""
    from vireid.data.synthetic import generate

    root = tmp_path_factory.mktemp("sysu")
    generate("sysu", root, ids=14, seed=0, images_per_camera=(2, 3), rgb_size=(64, 32),
             ir_size=(64, 32))
    return root


@pytest.fixture(scope="session")
def regdb_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic RegDB folder: 10 ids (5 train / 5 test per trial), 10 images each."""
    from vireid.data.synthetic import generate

    root = tmp_path_factory.mktemp("regdb")
    generate("regdb", root, ids=10, seed=0, rgb_size=(64, 32), ir_size=(64, 32))
    return root


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory, tiny_config: Path, sysu_root: Path) -> Path:
    """One uninterrupted 2-epoch run of the tiny config on the synthetic SYSU data, with
    model selection on 3 held-out training ids."""
    run_dir = tmp_path_factory.mktemp("runs") / "full"
    run_cli("train", "--config", tiny_config, "--data-root", sysu_root, "-o", run_dir,
            "--threads", "1", "data.val_ids=3", "train.selection=val", check=True)
    return run_dir
