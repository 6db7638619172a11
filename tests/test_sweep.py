"""vireid sweep: grid parsing, the selection rule, and a tiny sweep end to end."""
from __future__ import annotations

import argparse
import json
import os

import pytest

from vireid.apps.sweep import grid_points, parse_grid, run_sweep, summarize_history
from vireid.commands import sweep as sweep_cmd
from vireid.errors import ConfigError


def test_parse_grid_hand_worked():
    grid = parse_grid(["train.lr=0.01, 0.03,0.1", "train.lr_milestones=[6],[6,9]", "loss.kind=idl"])
    assert grid == [("train.lr", ["0.01", "0.03", "0.1"]),
                    ("train.lr_milestones", ["[6]", "[6,9]"]),
                    ("loss.kind", ["idl"])]


@pytest.mark.parametrize("items,match", [(["train.lr"], "KEY=V1"), (["=1,2"], "KEY=V1"),
                                         (["train.lr="], "no values"),
                                         (["a.b=1", "a.b=2"], "given twice")])
def test_parse_grid_errors(items, match):
    with pytest.raises(ConfigError, match=match):
        parse_grid(items)


def test_grid_points_is_the_cartesian_product_first_key_slowest():
    grid = [("a", ["1", "2"]), ("b", ["x", "y", "z"])]
    want = []
    for a in ["1", "2"]:
        for b in ["x", "y", "z"]:
            want.append([f"a={a}", f"b={b}"])
    assert grid_points(grid) == want
    assert grid_points([]) == [[]]  # no axis: the preset itself


def test_summarize_history_hand_worked():
    hist = [{"type": "step", "loss": 1.0},
            {"type": "epoch", "epoch": 1, "val_rank1": 10.0, "val_mAP": 20.0},
            {"type": "epoch", "epoch": 2, "val_rank1": 30.0, "val_mAP": 10.0},
            {"type": "epoch", "epoch": 3, "val_rank1": 30.0, "val_mAP": 40.0},  # tie: keep 2
            {"type": "epoch", "epoch": 4, "val_rank1": 20.0, "val_mAP": 25.0}]
    last, best, score = summarize_history(hist, "last")
    assert last == {"epoch": 4, "val_rank1": 20.0, "val_mAP": 25.0}
    assert best == {"epoch": 2, "val_rank1": 30.0, "val_mAP": 10.0}
    assert score == 22.5
    assert summarize_history(hist, "best")[2] == 20.0
    with pytest.raises(ConfigError, match="no validation figures"):
        summarize_history([{"type": "epoch", "epoch": 1, "loss": 2.0}])
    with pytest.raises(ConfigError, match="criterion"):
        summarize_history(hist, "mean")


def test_tiny_sweep_end_to_end(tmp_path, tiny_config, sysu_root):
    out = tmp_path / "sw"
    grid = [("train.lr", ["0.01", "0.05"])]
    res = run_sweep(str(tiny_config), grid, out, data_root=sysu_root, val_ids=3,
                    fixed=["loss.kind=idl"])
    assert [p.overrides for p in res.points] == [["train.lr=0.01"], ["train.lr=0.05"]]
    # Independent recomputation from each run's own files.
    scores = []
    for p in res.points:
        cfg_text = (tmp_path / "sw" / "runs" / os.path.basename(p.run_dir) / "config.yaml").read_text()
        assert "selection: val" in cfg_text and "val_ids: 3" in cfg_text and "kind: idl" in cfg_text
        lines = [json.loads(x) for x in open(os.path.join(p.run_dir, "metrics.jsonl")) if x.strip()]
        eps = [x for x in lines if x["type"] == "epoch"]
        scores.append((eps[-1]["val_rank1"] + eps[-1]["val_mAP"]) / 2)
        assert p.last["epoch"] == eps[-1]["epoch"] == 2
        assert p.score == pytest.approx(scores[-1])
    assert res.chosen == max(range(2), key=lambda i: (scores[i], -i))
    table = (out / "sweep.md").read_text()
    assert sum(line.startswith("| **") for line in table.splitlines()) == 1 and "Chosen: `train.lr=" in table
    saved = json.loads((out / "sweep.json").read_text())
    assert saved["chosen"] == res.chosen and len(saved["points"]) == 2

    # Rerun: finished points with the same config are reused, not trained again.
    ckpt = os.path.join(res.points[0].run_dir, "checkpoints", "last.pt")
    mtime = os.stat(ckpt).st_mtime_ns
    again = run_sweep(str(tiny_config), grid, out, data_root=sysu_root, val_ids=3,
                      fixed=["loss.kind=idl"])
    assert all(p.reused for p in again.points)
    assert os.stat(ckpt).st_mtime_ns == mtime
    assert [p.score for p in again.points] == [p.score for p in res.points]


def test_sweep_command_rejects_a_bad_grid(tmp_path, tiny_config, sysu_root):
    parser = argparse.ArgumentParser()
    sweep_cmd.register(parser.add_subparsers())
    args = parser.parse_args(["sweep", "--config", str(tiny_config), "--data-root", str(sysu_root),
                              "-o", str(tmp_path / "x"), "--grid", "train.lr"])
    with pytest.raises(ConfigError, match="expected KEY=V1"):
        args.func(args)
    args = parser.parse_args(["sweep", "--config", str(tiny_config), "--data-root", str(sysu_root),
                              "-o", str(tmp_path / "x"), "--val-ids", "1"])
    with pytest.raises(ConfigError, match="at least 2"):
        args.func(args)
