"""LLCM end to end through the CLI: ``vireid synth --layout llcm`` -> ``vireid train`` (tiny)
-> ``vireid eval`` in both directions (llcm-v2i, the default, and llcm-i2v); ``vireid data
summary`` and ``vireid data split`` on an LLCM folder."""
from __future__ import annotations

import json
import os
import random
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


# --- vireid data summary / split on an LLCM folder, against literal walks of the folder ----------
def _ref_test_ids(root: Path) -> list[int]:
    return sorted(int(x) for x in (root / "idx" / "test_id.txt").read_text().splitlines()[0].split(","))


def _ref_folders(root: Path, tree: str, cams) -> list[tuple[int, int, list[str]]]:
    """(pid, cam, sorted relative file paths) of every test id folder, in DEEN's loop order."""
    out = []
    for pid in _ref_test_ids(root):
        for cam in cams:
            d = root / tree / f"cam{cam}" / f"{pid:04d}"
            if d.is_dir():
                out.append((pid, cam, sorted(f"{tree}/cam{cam}/{pid:04d}/{n}" for n in os.listdir(d))))
    return out


VIS_CAMS, NIR_CAMS = range(1, 10), (1, 2, 4, 5, 6, 7, 8, 9)


def test_llcm_data_summary_and_split_through_the_cli(tmp_path: Path) -> None:
    root = tmp_path / "llcm"
    run_cli("synth", "--layout", "llcm", "--out", root, "--ids", "8", "--seed", "2", check=True)
    summary = json.loads(run_cli("data", "summary", "--dataset", "llcm", "--root", root, "--json",
                                 check=True).stdout)
    assert summary["dataset"] == "llcm"
    splits = summary["splits"]
    # training: the index files, line by line
    for mod, fname in (("rgb", "train_vis.txt"), ("ir", "train_nir.txt")):
        lines = [ln.split(" ") for ln in (root / "idx" / fname).read_text().splitlines() if ln]
        assert splits["train"][mod]["images"] == len(lines)
        assert splits["train"][mod]["ids"] == len({int(lab) for _, lab in lines})
    train_labels = {ln.split(" ")[1] for f in ("train_vis.txt", "train_nir.txt")
                    for ln in (root / "idx" / f).read_text().splitlines() if ln}
    assert splits["train"]["ids"] == len(train_labels)
    # test: the camK/PPPP folders of the test ids
    vis = _ref_folders(root, "test_vis", VIS_CAMS)
    nir = _ref_folders(root, "test_nir", NIR_CAMS)
    assert splits["test"]["ids"] == len({p for p, _, _ in vis} | {p for p, _, _ in nir})
    for mod, folders in (("rgb", vis), ("ir", nir)):
        assert splits["test"][mod]["images"] == sum(len(f) for _, _, f in folders)
        for cam in {c for _, c, _ in folders}:
            assert splits["test"][mod]["cameras"][str(cam)] == {
                "ids": sum(1 for _, c, _ in folders if c == cam),
                "images": sum(len(f) for _, c, f in folders if c == cam)}
    n_vis, n_nir = sum(len(f) for _, _, f in vis), sum(len(f) for _, _, f in nir)
    ids_vis, ids_nir = len({p for p, _, _ in vis}), len({p for p, _, _ in nir})
    want = {"llcm-i2v": ({"ids": ids_nir, "images": n_nir}, {"ids": ids_vis, "images": len(vis)}),
            "llcm-v2i": ({"ids": ids_nir, "images": len(nir)}, {"ids": ids_vis, "images": n_vis})}
    assert set(summary["protocols"]) == set(want)
    for name, (q, g) in want.items():
        p = summary["protocols"][name]
        assert p["metric"] == "llcm"
        assert p["trials"] == [{"trial": t, "query": q, "gallery": g} for t in range(10)]
    text = run_cli("data", "summary", "--dataset", "llcm", "--root", root, check=True).stdout
    assert "llcm-i2v" in text and "llcm-v2i" in text

    # split: DEEN's lists (random.seed(trial), one choice per id and camera folder)
    for proto in ("i2v", "llcm-i2v"):
        lists = json.loads(run_cli("data", "split", "--dataset", "llcm", "--root", root,
                                   "--protocol", proto, "--trial", "3", "--json", check=True).stdout)
        random.seed(3)
        gallery = [random.choice(files) for _, _, files in vis]
        assert [p for p, _, _ in lists["query"]] == [f for _, _, files in nir for f in files]
        assert [p for p, _, _ in lists["gallery"]] == gallery
        assert all(pid == int(p.split("/")[2]) and cam == int(p.split("/")[1][3:])
                   for p, pid, cam in lists["query"] + lists["gallery"])
    bad = run_cli("data", "split", "--dataset", "llcm", "--root", root, "--protocol", "i2v",
                  "--trial", "10")
    assert bad.returncode == 2 and "error:" in bad.stderr and "0..9" in bad.stderr
