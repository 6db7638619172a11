"""LLCM end to end through the CLI: ``vireid synth --layout llcm`` -> ``vireid train`` (tiny)
-> ``vireid eval`` in both directions (llcm-v2i, the default, and llcm-i2v)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli

KEYS = {"rank1", "rank5", "rank10", "rank20", "mAP", "mINP"}


def test_llcm_synth_train_eval_both_directions(tmp_path: Path, tiny_config: Path) -> None:
    root = tmp_path / "llcm"
    proc = run_cli("synth", "--layout", "llcm", "--out", root, "--ids", "9", "--seed", "1",
                   "--json", check=True, timeout=300)
    summary = json.loads(proc.stdout)
    assert summary["layout"] == "llcm" and summary["train_ids"] + summary["test_ids"] == 9
    for name in ("train_vis", "train_nir", "test_vis", "test_nir", "test_id"):
        assert (root / "idx" / f"{name}.txt").is_file()
    run = tmp_path / "run"
    run_cli("train", "--config", tiny_config, "--data-root", root, "-o", run, "--threads", "1",
            "data.dataset=llcm", "train.epochs=1", check=True, timeout=300)
    results = {}
    for proto in (None, "llcm-v2i", "llcm-i2v", "i2v"):
        out = tmp_path / f"{proto}.json"
        args = ["eval", "--checkpoint", run, "--data-root", root, "--trials", "0,1",
                "--json", out]
        if proto:
            args += ["--protocol", proto]
        run_cli(*args, check=True, timeout=300)
        results[proto] = json.loads(out.read_text())
    for proto, want in ((None, "llcm-v2i"), ("llcm-v2i", "llcm-v2i"), ("llcm-i2v", "llcm-i2v"),
                        ("i2v", "llcm-i2v")):
        r = results[proto]
        assert (r["dataset"], r["protocol"], r["trials"]) == ("llcm", want, [0, 1])
        assert [t["trial"] for t in r["per_trial"]] == [0, 1]
        for t in r["per_trial"]:
            assert KEYS <= set(t) and all(0 <= t[k] <= 100 for k in KEYS)
            assert t["rank1"] <= t["rank5"] <= t["rank10"] <= t["rank20"]
        for k in KEYS:
            assert r["mean"][k] == pytest.approx(np.mean([t[k] for t in r["per_trial"]]))
    # the default protocol is the registry's (llcm-v2i): the same numbers
    assert results[None]["per_trial"] == results["llcm-v2i"]["per_trial"]
    assert results["i2v"]["per_trial"] == results["llcm-i2v"]["per_trial"]
    # a SYSU protocol on an LLCM checkpoint is refused with one error line
    bad = run_cli("eval", "--checkpoint", run, "--data-root", root, "--protocol", "sysu-all")
    assert bad.returncode == 2 and "error:" in bad.stderr and "llcm" in bad.stderr
