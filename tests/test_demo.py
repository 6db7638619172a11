"""`vireid demo --quick`: the whole pipeline end to end, and a report that agrees with itself."""
from __future__ import annotations

import json
import platform
from pathlib import Path

import numpy as np
import pytest
import yaml

from vireid.apps.demo import DEMO_TRIALS, run_demo
from vireid.config import preset_path
from vireid.engine.evaluate import format_results

# The row layout of the demo's table, written out: (run, label, scoring, role, k-reciprocal).
ROWS = [
    ("ccn", "DSCSN+CCN", "simplified", "paper", False),
    ("ccn", "DSCSN+CCN", "full", "paper", False),
    ("ccn", "DSCSN+CCN", "rerank", "paper", False),
    ("idl", "ID loss only", "simplified", "baseline", False),
    ("agw", "AGW", "simplified", "baseline", False),
    ("agw", "AGW", "simplified", "baseline", True),
    ("best", "CCN head on AGW", "<preset>", "reference", False),
    ("best", "CCN head on AGW", "<preset>", "best", True),
]
PRESETS = {"ccn": "cpu-pretrained", "idl": "cpu-pretrained-idl", "agw": "cpu-pretrained-agw",
           "best": "cpu-pretrained-agw-head"}


def _preset_eval(name: str) -> dict:
    """The eval section of a shipped preset, read from its YAML file (not through vireid)."""
    return yaml.safe_load(preset_path(name).read_text())["eval"]


def test_quick_demo_writes_a_consistent_report(tmp_path: Path) -> None:
    out = run_demo(tmp_path / "demo", quick=True, progress=False, workers=1)
    for name in ("results.md", "results.json", "cmc.png", "loss_curves.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    for run in PRESETS:
        assert (out / "runs" / run / "checkpoints" / "last.pt").is_file()
    data = json.loads((out / "results.json").read_text())
    best_eval = _preset_eval(PRESETS["best"])
    assert best_eval["scoring"] != "simplified"  # else the best row would not test the preset's mode
    expected = [(run, label, best_eval["scoring"] if scoring == "<preset>" else scoring, role, kr)
                for run, label, scoring, role, kr in ROWS]
    assert [(r["model"], r["label"], r["scoring"], r["role"], r["kreciprocal"] is not None)
            for r in data["results"]] == expected
    for r in data["results"]:
        assert r["preset"] == PRESETS[r["model"]]
        if r["kreciprocal"] is not None:  # the field's default setting
            assert r["kreciprocal"] == {"k1": 20, "k2": 6, "lambda": 0.3}
    # exactly one row is the best recipe; it is scored at its preset's fusion weight
    (best,) = [r for r in data["results"] if r["role"] == "best"]
    assert best["fusion_weight"] == pytest.approx(best_eval["fusion_weight"])
    assert best["topk"] == best_eval["topk"]
    # the head starts from the demo's AGW run and leaves its embedding frozen
    import torch
    agw = torch.load(out / "runs" / "agw" / "checkpoints" / "last.pt", weights_only=True)["model"]
    head = torch.load(out / "runs" / "best" / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(agw[k], head[k]) for k in agw if not k.startswith("ccn."))
    assert any(not torch.equal(agw[k], head[k]) for k in agw if k.startswith("ccn."))
    assert [m["key"] for m in data["models"]] == list(PRESETS)
    assert data["trials"] == list(DEMO_TRIALS)
    for r in data["results"]:
        assert [t["trial"] for t in r["per_trial"]] == list(DEMO_TRIALS)
        for k in ("rank1", "mAP"):  # the reported mean is the mean of the trials
            assert r["mean"][k] == pytest.approx(np.mean([t[k] for t in r["per_trial"]]))
    m = data["machine"]
    assert list(m) == ["platform", "python", "torch", "cpu_count", "torch_threads", "cuda"]
    assert m["platform"] == platform.platform() and m["cuda"] is None
    md = (out / "results.md").read_text()
    assert f"on {m['platform']} ({m['cpu_count']} CPUs, {m['torch_threads']} torch threads, no GPU)" in md
    assert "quick smoke run" in md and "NOT the SYSU-MM01 benchmark" in md
    # the table marks the roles, and the text under it says which row is which in words
    table = [line for line in md.splitlines() if line.startswith("| ") and " ± " in line]
    assert len(table) == len(ROWS)
    assert sum("**the paper's method**" in line for line in table) == 3
    assert sum("**the best the toolkit offers**" in line for line in table) == 1
    assert "**the best the toolkit offers**" in table[-1] and "k-reciprocal" in table[-1]
    assert "The rows marked **the paper's method** are DSCSN+CCN" in md
    assert (f"The row marked **the best the toolkit offers** is the toolkit's best recipe: "
            f"CCN head on AGW (`configs/{PRESETS['best']}.yaml`), scored `{best_eval['scoring']}`") in md


def test_results_table_shows_extra_columns() -> None:
    """format_results' extra columns sit after the model, a missing key is an empty cell."""
    r = {"label": "m", "scoring": "simplified", "per_trial": [{}],
         "mean": {k: 1.0 for k in ("rank1", "rank5", "rank10", "rank20", "mAP", "mINP")},
         "std": {k: 0.0 for k in ("rank1", "rank5", "rank10", "rank20", "mAP", "mINP")}}
    lines = format_results([dict(r, role="**x**"), r], columns=("role",)).splitlines()
    assert lines[0] == "| model | role | scoring | trials | R1 | R5 | R10 | R20 | mAP | mINP |"
    assert lines[1] == "|" + "---|" * 10
    assert lines[2] == "| m | **x** | simplified | 1 | 1.0 | 1.0 | 1.0 | 1.0 | 1.0 | 1.0 |"
    assert lines[3] == "| m |  | simplified | 1 | 1.0 | 1.0 | 1.0 | 1.0 | 1.0 | 1.0 |"
    assert format_results(r).splitlines()[2] == "| m | simplified | 1 | 1.0 | 1.0 | 1.0 | 1.0 | 1.0 | 1.0 |"
