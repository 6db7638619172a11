"""k-reciprocal re-ranking as a post-process of every scoring mode of ``evaluate()``: equal to
calling the field-signature ``re_ranking`` on each trial's distances directly; the CLI
options and the results JSON."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import run_cli
from vireid.scoring.kreciprocal import KReciprocal, re_ranking


def _cos(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    a = a.double() / a.double().norm(dim=1, keepdim=True)
    b = b.double() / b.double().norm(dim=1, keepdim=True)
    return (a @ b.T).numpy()


def test_evaluate_with_kreciprocal_equals_re_ranking_directly(trained_run: Path, sysu_root: Path,
                                                              tmp_path: Path) -> None:
    from vireid.engine.checkpoint import load_model_from_checkpoint
    from vireid.engine.evaluate import _stored_splits, evaluate
    from vireid.engine.features import load_features
    from vireid.evaluation.protocols import evaluate_split, get_protocol
    from vireid.scoring.scorers import full_pair_fn, score_full, score_rerank

    k1, k2, lam = 5, 3, 0.25
    feats_path = tmp_path / "f.pt"
    res = evaluate([trained_run], data_root=sysu_root, scoring="all", trials=[0, 1],
                   kreciprocal=KReciprocal(k1, k2, lam), save_features_path=feats_path)
    plain = evaluate([trained_run], data_root=sysu_root, scoring="simplified", trials=[0, 1])
    assert plain["kreciprocal"] is None
    model, cfg, _ = load_model_from_checkpoint(trained_run)
    topk = cfg.eval.topk
    feats, meta = load_features(feats_path)
    proto = get_protocol("sysu-all")
    splits = _stored_splits(meta, feats, proto.name, [0, 1])
    for ti, sp in enumerate(splits):
        q = feats.subset(feats.rows_of(sp.query))
        g = feats.subset(feats.rows_of(sp.gallery))
        with torch.no_grad():
            # simplified: 1 - cosine for all three blocks
            blocks = {"simplified": (1 - _cos(q.G, g.G), 1 - _cos(q.G, q.G), 1 - _cos(g.G, g.G))}
            # full: D_RI; IR query vs RGB gallery is side b, same-modality pairs side a
            blocks["full"] = tuple(score_full(model.ccn, a.F, b.F, query_side=s).double().numpy()
                                   for a, b, s in ((q, g, "b"), (q, q, "a"), (g, g, "a")))
            blocks["rerank"] = tuple(
                score_rerank(torch.from_numpy(_cos(a.G, b.G)).float(),
                             full_pair_fn(model.ccn, a.F, b.F, s), topk).double().numpy()
                for a, b, s in ((q, g, "b"), (q, q, "a"), (g, g, "a")))
        for mode, (qg, qq, gg) in blocks.items():
            qq, gg = qq.copy(), gg.copy()
            np.fill_diagonal(qq, 0.0)
            np.fill_diagonal(gg, 0.0)
            dist = re_ranking(qg, qq, gg, k1=k1, k2=k2, lambda_value=lam)
            want = evaluate_split(dist, sp, proto)
            got = res[mode]["per_trial"][ti]
            assert got["trial"] == sp.trial
            for key in ("rank1", "rank5", "mAP", "mINP"):
                assert got[key] == pytest.approx(want[key], abs=1e-4), (mode, key)
            assert res[mode]["kreciprocal"] == {"k1": k1, "k2": k2, "lambda": lam}


def test_eval_cli_kreciprocal_options(trained_run: Path, sysu_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    proc = run_cli("eval", "--checkpoint", trained_run, "--data-root", sysu_root, "--trials", "0",
                   "--rerank-k1", "4", "--json", out, check=True)
    res = json.loads(out.read_text())
    assert res["kreciprocal"] == {"k1": 4, "k2": 6, "lambda": 0.3}
    assert "k-reciprocal (4/6/0.3)" in proc.stdout
    out2 = tmp_path / "r2.json"
    run_cli("eval", "--checkpoint", trained_run, "--data-root", sysu_root, "--trials", "0",
            "--kreciprocal", "--json", out2, check=True)
    assert json.loads(out2.read_text())["kreciprocal"] == {"k1": 20, "k2": 6, "lambda": 0.3}
    bad = run_cli("eval", "--checkpoint", trained_run, "--data-root", sysu_root,
                  "--rerank-lambda", "1.5")
    assert bad.returncode == 2
    assert "error:" in bad.stderr and "--rerank-lambda" in bad.stderr and "[0, 1]" in bad.stderr
    bad = run_cli("eval", "--checkpoint", trained_run, "--data-root", sysu_root,
                  "--rerank-k2", "0")
    assert bad.returncode == 2 and "--rerank-k2" in bad.stderr
