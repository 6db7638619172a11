"""`vireid demo --quick`: the whole pipeline end to end, and a report that agrees with itself."""
from __future__ import annotations

import json
import platform
from pathlib import Path

import numpy as np
import pytest

from vireid.apps.demo import DEMO_TRIALS, run_demo


def test_quick_demo_writes_a_consistent_report(tmp_path: Path) -> None:
    out = run_demo(tmp_path / "demo", quick=True, progress=False, workers=1)
    for name in ("results.md", "results.json", "cmc.png", "loss_curves.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    for run in ("ccn", "idl"):
        assert (out / "runs" / run / "checkpoints" / "last.pt").is_file()
    data = json.loads((out / "results.json").read_text())
    assert [(r["label"], r["scoring"]) for r in data["results"]] == [
        ("DSCSN+CCN", "simplified"), ("DSCSN+CCN", "full"), ("DSCSN+CCN", "rerank"),
        ("ID loss only", "simplified")]
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
