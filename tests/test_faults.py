"""Faults during training: non-finite loss, SIGKILL and resume, full disk / read-only output,
two processes on one run folder. Disk faults are simulated in-process (the tests run as
root, so permissions cannot make a folder read-only)."""
from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import torch

from conftest import run_cli

THREADS = ("--threads", "1", "--no-progress")


def _cli(*args: str) -> int:
    from vireid.cli import main

    return main([str(a) for a in args])


def _no_temp_files(run: Path) -> bool:
    return not [p for p in run.rglob("*") if ".tmp" in p.name]


def _model(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def test_nan_loss_stops_naming_the_iteration_and_keeps_the_checkpoint(
        tmp_path, tiny_config, sysu_root, monkeypatch, capsys):
    import dataclasses

    from vireid.losses.registry import LOSSES

    run = tmp_path / "nan"
    real = LOSSES["ccn"].fn
    calls = {"n": 0, "snapshot": None}

    def loss_going_nan(model, b, cfg):  # iteration 2 of epoch 2 (global 5) goes NaN
        loss, parts = real(model, b, cfg)
        calls["n"] += 1
        if calls["n"] == 5:
            calls["snapshot"] = (run / "checkpoints" / "last.pt").read_bytes()
            return loss * float("nan"), parts
        return loss, parts

    monkeypatch.setitem(LOSSES, "ccn", dataclasses.replace(LOSSES["ccn"], fn=loss_going_nan))
    rc = _cli("train", "--config", tiny_config, "--data-root", sysu_root, "-o", run, *THREADS)
    err = capsys.readouterr().err
    assert rc == 2
    assert "non-finite loss at epoch 2, iteration 2" in err and "global iteration 5" in err
    assert str(run / "checkpoints" / "last.pt") in err
    assert (run / "checkpoints" / "last.pt").read_bytes() == calls["snapshot"]  # untouched
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 1
    assert _no_temp_files(run)


#: A training that SIGKILLs itself right after logging global iteration ``KILL_AT``: the
#: kill lands at the same point on every run (a hook, not a watcher polling the log).
KILLER = """\
import os, signal, sys
from vireid.config import load_config
from vireid.engine.hooks import Hook, default_hooks
from vireid.engine.trainer import train


class KillAfter(Hook):
    def after_step(self, s, rec):
        if rec["iteration"] == int(sys.argv[3]):  # the metrics hook has logged this step
            os.kill(os.getpid(), signal.SIGKILL)


cfg = load_config(sys.argv[1], sys.argv[4:])
train(cfg, sys.argv[2], progress=False, hooks=default_hooks(cfg, False) + [KillAfter()])
"""


def test_sigkill_mid_epoch_then_resume_equals_an_uninterrupted_run(tmp_path, tiny_config,
                                                                   sysu_root):
    over = ["train.epochs=3", "train.iters_per_epoch=12", "train.log_every=1"]
    # The uninterrupted reference, in this process (same code, threads and seeds).
    from vireid.config import load_config
    from vireid.engine.trainer import train

    ref = tmp_path / "ref"
    train(load_config(tiny_config, [f"data.root={sysu_root}", "train.threads=1", *over]), ref,
          progress=False)

    run = tmp_path / "killed"
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(script), str(tiny_config), str(run), "18",
                           f"data.root={sysu_root}", "train.threads=1", *over],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    killed_at = recs[-1]
    assert killed_at["epoch"] == 2 and killed_at["type"] == "step"  # mid-epoch 2
    assert killed_at["iteration"] == 18
    # At most one checkpoint interval is lost: epoch 1's checkpoint is there.
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 1

    run_cli("train", "--resume", run, *THREADS, check=True)
    got = _model(run / "checkpoints" / "last.pt")
    want = _model(ref / "checkpoints" / "last.pt")
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    steps = [json.loads(x)["iteration"] for x in metrics_lines(run)
             if json.loads(x)["type"] == "step"]
    assert steps == list(range(1, 37))  # the lines logged after the checkpoint were redone once
    assert json.loads((run / "summary.json").read_text())["finished"] is True
    assert _no_temp_files(run)


def metrics_lines(run: Path) -> list[str]:
    return (run / "metrics.jsonl").read_text().splitlines()


def test_full_disk_while_writing_a_checkpoint(tmp_path, tiny_config, sysu_root, monkeypatch,
                                              capsys):
    run = tmp_path / "enospc"
    real_save = torch.save
    state = {"n": 0, "before": None}

    def save(obj, f, *a, **k):  # the 3rd save is epoch 2's last.pt: half written, then ENOSPC
        state["n"] += 1
        if state["n"] == 3:
            state["before"] = (run / "checkpoints" / "last.pt").read_bytes()
            f.write(b"PK\x03\x04 partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", save)
    rc = _cli("train", "--config", tiny_config, "--data-root", sysu_root, "-o", run, *THREADS)
    err = capsys.readouterr().err
    assert rc == 2
    assert "last.pt" in err and "no space left on device (ENOSPC)" in err
    assert (run / "checkpoints" / "last.pt").read_bytes() == state["before"]
    assert _no_temp_files(run)


def test_read_only_folder_while_appending_the_log(tmp_path, tiny_config, sysu_root, monkeypatch,
                                                  capsys):
    from vireid.engine import rundir as T

    run = tmp_path / "erofs"
    real = T._append
    state = {"before": None}

    def append(fd, data):  # the 4th step line: half of it lands, then EROFS
        if data.startswith(b'{"type": "step"') and b'"iteration": 4,' in data:
            state["before"] = (run / "metrics.jsonl").read_bytes()
            os.write(fd, data[: len(data) // 2])
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return real(fd, data)

    monkeypatch.setattr(T, "_append", append)
    rc = _cli("train", "--config", tiny_config, "--data-root", sysu_root, "-o", run, *THREADS,
              "train.log_every=1")
    err = capsys.readouterr().err
    assert rc == 2 and "metrics.jsonl" in err and "read-only file system (EROFS)" in err
    assert (run / "metrics.jsonl").read_bytes() == state["before"]  # no partial line
    assert state["before"].count(b"\n") == 4  # 3 steps and epoch 1
    assert _no_temp_files(run)


def test_failed_plot_is_reported_and_keeps_the_previous_picture(tmp_path, tiny_config, sysu_root,
                                                                monkeypatch, caplog):
    import matplotlib.figure

    run = tmp_path / "plot"
    assert _cli("train", "--config", tiny_config, "--data-root", sysu_root, "-o", run, *THREADS,
                "--stop-after", "1") == 0
    png = (run / "loss_curve.png").read_bytes()

    def savefig(self, fname, *a, **k):
        Path(fname).write_bytes(b"\x89PNG half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig)
    assert _cli("train", "--resume", run, *THREADS) == 0  # the training outcome stands
    assert "cannot write the loss curve" in caplog.text and "ENOSPC" in caplog.text
    assert (run / "loss_curve.png").read_bytes() == png
    assert [p for p in run.iterdir() if "loss_curve" in p.name] == [run / "loss_curve.png"]
    assert json.loads((run / "summary.json").read_text())["finished"] is True


def test_a_second_process_cannot_train_into_a_folder_in_use(tmp_path, tiny_config, sysu_root):
    from vireid.engine.rundir import run_lock

    run = tmp_path / "busy"
    run.mkdir()
    lock = run_lock(run).acquire()  # this process is "the first run"
    try:
        proc = run_cli("train", "--config", tiny_config, "--data-root", sysu_root, "-o", run,
                       *THREADS, "--overwrite")  # not even --overwrite gets in
        assert proc.returncode == 2
        assert f"in use by another training process (pid {os.getpid()}" in proc.stderr
        assert str(run / ".train.lock") in proc.stderr
        assert sorted(p.name for p in run.iterdir()) == [".train.lock"]  # nothing written
    finally:
        lock.release()
    # The kernel drops the lock with its holder (even on SIGKILL): the folder is free again.
    run_lock(run).acquire().release()
