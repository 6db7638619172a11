"""`vireid train` through the real CLI on the tiny config."""
from __future__ import annotations

import json

import torch
import yaml

from conftest import run_cli


def _weights(path):
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def test_train_writes_a_complete_run(trained_run):
    ck = trained_run / "checkpoints"
    assert (ck / "last.pt").is_file() and (ck / "best.pt").is_file()
    assert sorted(p.name for p in ck.glob("epoch_*.pt")) == ["epoch_001.pt", "epoch_002.pt"]
    assert not [p for p in trained_run.rglob("*") if ".tmp" in p.name]  # no temp leftovers
    cfg = yaml.safe_load((trained_run / "config.yaml").read_text())
    assert cfg["model"]["width"] == 0.125 and cfg["train"]["selection"] == "val"
    assert cfg["data"]["root"]  # the resolved config holds the data root
    recs = [json.loads(x) for x in (trained_run / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in recs if r["type"] == "epoch"]
    steps = [r for r in recs if r["type"] == "step"]
    assert [r["epoch"] for r in epochs] == [1, 2]
    assert [r["iteration"] for r in epochs] == [3, 6]  # 3 iterations per epoch
    assert all("val_rank1" in r for r in epochs)
    # lr_milestones [1]: epoch 1 at lr, epoch 2 at lr * 0.1
    assert {r["lr"] for r in steps if r["epoch"] == 1} == {0.01}
    assert all(abs(r["lr"] - 0.001) < 1e-12 for r in steps if r["epoch"] == 2)
    assert all(r["loss"] > 0 and "pbce" in r and "id" in r and r["img_s"] > 0 for r in steps)
    # total = PBCE + 0.1 * ID for every logged step
    assert all(abs(r["loss"] - (r["pbce"] + 0.1 * r["id"])) < 1e-5 for r in steps)
    assert (trained_run / "loss_curve.png").read_bytes()[:4] == b"\x89PNG"
    summary = json.loads((trained_run / "summary.json").read_text())
    assert summary["selection"] == "val" and summary["finished"] is True
    best_epoch = max(epochs, key=lambda r: (r["val_rank1"], -r["epoch"]))["epoch"]
    assert summary["best"]["epoch"] == best_epoch
    assert torch.load(ck / "best.pt", weights_only=True)["epoch"] == best_epoch


def test_resume_gives_bit_identical_weights(trained_run, tiny_config, sysu_root, tmp_path):
    run = tmp_path / "resumed"
    common = ("--config", tiny_config, "--data-root", sysu_root, "--threads", "1",
              "data.val_ids=3", "train.selection=val")
    first = run_cli("train", *common, "-o", run, "--stop-after", "1", check=True)
    assert "stopped after epoch 1/2" in first.stdout
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 1
    run_cli("train", "--resume", run, "--threads", "1", check=True)  # config from the run
    ref, got = _weights(trained_run / "checkpoints" / "last.pt"), _weights(run / "checkpoints" / "last.pt")
    assert ref.keys() == got.keys()
    assert all(torch.equal(ref[k], got[k]) for k in ref)
    ref_lines = (trained_run / "metrics.jsonl").read_text().splitlines()
    got_lines = (run / "metrics.jsonl").read_text().splitlines()
    strip = lambda ls: [{k: v for k, v in json.loads(x).items() if k not in ("img_s", "seconds")}
                        for x in ls]
    assert strip(ref_lines) == strip(got_lines)


def test_resume_refuses_a_changed_config(tmp_path, trained_run, tiny_config, sysu_root):
    proc = run_cli("train", "--resume", trained_run, "train.lr=0.5")
    assert proc.returncode == 2
    assert "train.lr" in proc.stderr and "cannot resume" in proc.stderr


def test_run_dir_reuse_is_refused(trained_run, tiny_config, sysu_root):
    before = (trained_run / "checkpoints" / "last.pt").read_bytes()
    proc = run_cli("train", "--config", tiny_config, "--data-root", sysu_root, "-o", trained_run)
    assert proc.returncode == 2
    assert "already holds a run" in proc.stderr and "--resume" in proc.stderr
    assert (trained_run / "checkpoints" / "last.pt").read_bytes() == before


def test_config_errors_name_the_key(tmp_path, tiny_config, sysu_root):
    out = tmp_path / "r"
    unknown = run_cli("train", "--config", tiny_config, "--data-root", sysu_root, "-o", out,
                      "train.epochz=3")
    assert unknown.returncode == 2
    assert "train.epochz" in unknown.stderr and "epochs" in unknown.stderr  # names allowed keys
    wrong = run_cli("train", "--config", tiny_config, "--data-root", sysu_root, "-o", out,
                    "train.epochs=many")
    assert wrong.returncode == 2 and "train.epochs" in wrong.stderr and "int" in wrong.stderr
    bad_choice = run_cli("train", "--config", tiny_config, "--data-root", sysu_root, "-o", out,
                         "loss.kind=magic")
    assert bad_choice.returncode == 2 and "loss.kind" in bad_choice.stderr and "ccn" in bad_choice.stderr
    assert not out.exists()  # nothing written for an invalid config


def test_non_finite_loss_stops_with_the_last_good_checkpoint(tmp_path, tiny_config, sysu_root):
    out = tmp_path / "nan"
    proc = run_cli("train", "--config", tiny_config, "--data-root", sysu_root, "-o", out,
                   "--threads", "1", "train.lr=1.0e+30", "train.lr_milestones=[2]")
    assert proc.returncode == 2
    assert "non-finite loss" in proc.stderr
    for p in (out / "checkpoints").glob("*.pt"):  # whatever was saved holds finite weights
        w = _weights(p)
        assert all(torch.isfinite(v).all() for v in w.values() if v.is_floating_point())


def test_a_run_that_failed_before_its_first_checkpoint_can_be_started_again(
        tmp_path, tiny_config, sysu_root):
    run = tmp_path / "failed"
    (run).mkdir()
    # what a run leaves when the disk fills at its first checkpoint
    from vireid.config import load_config, save_config

    save_config(load_config(tiny_config, [f"data.root={sysu_root}"]), run / "config.yaml")
    (run / "metrics.jsonl").write_text('{"type": "step", "iteration": 1, "loss": 1.0}\n')
    (run / "notes.txt").write_text("mine")
    resume = run_cli("train", "--resume", run)
    assert resume.returncode == 2
    assert "before its first checkpoint" in resume.stderr and "without --resume" in resume.stderr
    again = run_cli("train", "--config", tiny_config, "--data-root", sysu_root, "-o", run,
                    "--threads", "1", check=True)
    assert "starting over" in again.stderr
    assert (run / "checkpoints" / "last.pt").is_file()
    assert (run / "notes.txt").read_text() == "mine"  # only the run's own files were cleared
    first = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert first["loss"] != 1.0
