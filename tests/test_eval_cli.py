"""`vireid eval` through the real CLI: JSON shape, an independent rank-1/mAP reference,
scoring modes from one extraction, saved features, and the refusals."""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import run_cli
from vireid.config import apply_overrides, validate

KEYS = {"rank1", "rank5", "rank10", "rank20", "mAP", "mINP"}


def _check_shape(res, dataset, protocol, scoring, trials):
    assert {"dataset", "protocol", "scoring", "trials", "mean", "std", "per_trial",
            "seconds"} <= set(res)
    assert (res["dataset"], res["protocol"], res["scoring"]) == (dataset, protocol, scoring)
    assert res["trials"] == trials
    assert set(res["mean"]) == KEYS and set(res["std"]) == KEYS
    assert [t["trial"] for t in res["per_trial"]] == trials
    for t in res["per_trial"]:
        assert KEYS <= set(t) and all(0.0 <= t[k] <= 100.0 for k in KEYS)
        assert t["rank1"] <= t["rank5"] <= t["rank10"] <= t["rank20"]
    for k in KEYS:
        vals = [t[k] for t in res["per_trial"]]
        assert res["mean"][k] == pytest.approx(np.mean(vals))
        assert res["std"][k] == pytest.approx(np.std(vals))
    assert set(res["seconds"]) >= {"features", "scoring"}


# --------------------------------------------------------------------- independent reference
def _reference_sysu_trial(ckpt_path: Path, root: Path, trial: int) -> tuple[float, float]:
    """Rank-1 and mAP (percent) of SYSU all-search single-shot trial ``trial``, written out
    literally from docs/protocols.md: one image at a time, one query at a time."""
    from vireid.data.images import decode_image
    from vireid.models.build import build_model

    from vireid.config import from_dict

    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    cfg = from_dict(ckpt["config"])
    model = build_model(cfg, ckpt["num_classes"], load_pretrained=False)
    model.load_state_dict(ckpt["model"])
    model.eval()
    test_ids = [int(x) for x in (root / "exp" / "test_id.txt").read_text().split("\n")[0].split(",")]

    def files(cam, pid):
        d = root / f"cam{cam}" / f"{pid:04d}"
        return sorted(p.name for p in d.iterdir()) if d.is_dir() else []

    query = [(f"cam{c}/{p:04d}/{f}", p, c) for p in sorted(test_ids) for c in (3, 6) for f in files(c, p)]
    rng = random.Random(trial)
    gallery = [(f"cam{c}/{p:04d}/{rng.choice(files(c, p))}", p, c)
               for p in sorted(test_ids) for c in (1, 2, 4, 5) if files(c, p)]
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)

    def feature(rel, cam):
        img = decode_image(root / rel, (cfg.data.height, cfg.data.width))
        x = (torch.from_numpy(img).permute(2, 0, 1).float() / 255 - mean) / std
        with torch.no_grad():
            _, g = model.forward_features(x[None], "ir" if cam in (3, 6) else "rgb")
        return g[0] / g[0].norm()

    gq = [feature(r, c) for r, _, c in query]
    gg = [feature(r, c) for r, _, c in gallery]
    hits, aps = [], []
    for (_, qp, qc), q in zip(query, gq):
        kept = [(float(q @ g), gp) for (_, gp, gc), g in zip(gallery, gg) if not (qc == 3 and gc == 2)]
        kept.sort(key=lambda t: -t[0])
        match = [gp == qp for _, gp in kept]
        if not any(match):
            continue
        hits.append(match[0])
        found, precisions = 0, []
        for pos, m in enumerate(match, 1):
            if m:
                found += 1
                precisions.append(found / pos)
        aps.append(np.mean(precisions))
    return 100.0 * np.mean(hits), 100.0 * np.mean(aps)


def test_eval_json_matches_a_literal_reference(trained_run, sysu_root, tmp_path):
    out = tmp_path / "res.json"
    proc = run_cli("eval", "--checkpoint", trained_run / "checkpoints" / "last.pt",
                   "--data-root", sysu_root, "--trials", "0,1", "--json", out, check=True)
    assert "R1" in proc.stdout and "mINP" in proc.stdout  # the printed table
    res = json.loads(out.read_text())
    _check_shape(res, "sysu", "sysu-all", "simplified", [0, 1])
    for trial in (0, 1):
        r1, m_ap = _reference_sysu_trial(trained_run / "checkpoints" / "last.pt", sysu_root, trial)
        assert res["per_trial"][trial]["rank1"] == pytest.approx(r1, abs=1e-3)
        assert res["per_trial"][trial]["mAP"] == pytest.approx(m_ap, abs=1e-3)


def test_scoring_all_from_one_extraction_and_saved_features(trained_run, sysu_root, tmp_path):
    feats, a, b = tmp_path / "f.pt", tmp_path / "a.json", tmp_path / "b.json"
    # top-K >= gallery size: rerank must rank exactly like full mode.
    run_cli("eval", "--checkpoint", trained_run, "--data-root", sysu_root, "--trials", "0,1",
            "--scoring", "all", "--topk", "100", "--save-features", feats, "--json", a, check=True)
    res = json.loads(a.read_text())
    assert set(res) == {"simplified", "full", "rerank", "fused", "fused-rerank"}
    for mode, r in res.items():
        _check_shape(r, "sysu", "sysu-all", mode, [0, 1])
    assert res["rerank"]["per_trial"] == res["full"]["per_trial"]
    # Scoring the saved features again needs no images and no dataset folder.
    run_cli("eval", "--checkpoint", trained_run, "--features", feats, "--trials", "0,1",
            "--scoring", "all", "--topk", "1", "--json", b, check=True)
    again = json.loads(b.read_text())
    for mode in ("simplified", "full"):
        assert again[mode]["per_trial"] == res[mode]["per_trial"]
    # top-1 rerank keeps the simplified first item and order: the same metrics.
    assert again["rerank"]["per_trial"] == res["simplified"]["per_trial"]


def test_features_of_other_weights_are_refused(trained_run, tmp_path, sysu_root):
    from vireid.engine.checkpoint import save_checkpoint
    from vireid.models.build import build_model
    from vireid.config import from_dict

    ck = torch.load(trained_run / "checkpoints" / "last.pt", weights_only=True)
    cfg = from_dict(ck["config"])
    other = tmp_path / "other.pt"
    torch.manual_seed(123)
    save_checkpoint(other, model=build_model(cfg, ck["num_classes"], load_pretrained=False), cfg=cfg,
                    num_classes=ck["num_classes"], epoch=0, iteration=0)
    feats = tmp_path / "f.pt"
    run_cli("eval", "--checkpoint", trained_run, "--data-root", sysu_root, "--trials", "0",
            "--save-features", feats, check=True)
    proc = run_cli("eval", "--checkpoint", other, "--features", feats, "--trials", "0")
    assert proc.returncode == 2 and "extracted with model weights" in proc.stderr


def test_wrong_dataset_is_refused(trained_run, regdb_root, sysu_root):
    proc = run_cli("eval", "--checkpoint", trained_run, "--data-root", regdb_root)
    assert proc.returncode == 2
    assert "trained on sysu" in proc.stderr and "error:" in proc.stderr
    proc = run_cli("eval", "--checkpoint", trained_run, "--data-root", sysu_root,
                   "--protocol", "regdb-v2t")
    assert proc.returncode == 2 and "trained on sysu" in proc.stderr


# --------------------------------------------------------------------- RegDB: one model per trial
@pytest.fixture(scope="module")
def regdb_run(tmp_path_factory, tiny_config, regdb_root):
    run = tmp_path_factory.mktemp("regdb-runs") / "trial1"
    run_cli("train", "--config", tiny_config, "--data-root", regdb_root, "-o", run, "--threads",
            "1", "data.dataset=regdb", "data.trial=1", "train.epochs=1", "train.lr_milestones=[]",
            check=True)
    return run


def test_regdb_evaluates_each_model_on_its_own_trial(regdb_run, regdb_root, tmp_path):
    out = tmp_path / "r.json"
    run_cli("eval", "--checkpoint", regdb_run, "--data-root", regdb_root, "--json", out, check=True)
    _check_shape(json.loads(out.read_text()), "regdb", "regdb-v2t", "simplified", [1])
    proc = run_cli("eval", "--checkpoint", regdb_run, "--data-root", regdb_root, "--trials", "2")
    assert proc.returncode == 2
    assert "trial 2" in proc.stderr and "trained on trial 2" in proc.stderr


def test_regdb_refuses_checkpoints_of_another_model_size(regdb_run, regdb_root, tmp_path):
    from vireid.config import from_dict
    from vireid.engine.checkpoint import save_checkpoint
    from vireid.models.build import build_model

    ck = torch.load(regdb_run / "checkpoints" / "last.pt", weights_only=True)
    cfg = from_dict(ck["config"])
    wide = validate(apply_overrides(cfg, ["model.width=0.25", "data.trial=2"]))
    other = tmp_path / "trial2-wide.pt"
    save_checkpoint(other, model=build_model(wide, ck["num_classes"], load_pretrained=False),
                    cfg=wide, num_classes=ck["num_classes"], epoch=1, iteration=1,
                    dataset={"name": "regdb", "trial": 2})
    proc = run_cli("eval", "--checkpoint", regdb_run, other, "--data-root", regdb_root)
    assert proc.returncode == 2
    assert "different models" in proc.stderr and "model.width" in proc.stderr
