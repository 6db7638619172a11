"""The ``fused-rerank`` scoring mode (issue 24, 1a): the fused value (1 − w)(1 − S)/2 + w·D_RI
on each query's simplified top-K, 3 − S behind, against a literal loop (cosine by hand, top-K
by a literal sort with ties to the lower column, D_RI from CCN.forward one pair at a time);
its ends (K ≥ G is fused, w = 1 is rerank, w = 0 ranks as simplified); its top-k, search,
k-reciprocal self-distances and Python API; the choice of (w, K) on a run's held-out
validation ids against a literal re-computation of the grid; and ``vireid eval
--choose-topk``."""
import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from conftest import run_cli
from test_fusion import _ccn
from vireid.apps.fusion_weight import (DEFAULT_TOPKS, choose_fusion_weight, chooser_mode,
                                       format_choice, parse_topk_grid)
from vireid.errors import ConfigError
from vireid.scoring.scorers import ScoringContext, get_scoring
from vireid.scoring.sharded import topk_sharded

MODE = "fused-rerank"


def _sets(seed=11, nq=4, ng=8, c=5, hw=(4, 3)):
    """IR queries, RGB gallery. The gallery's G rows come in pairs of the same vector, ±e_m
    scaled (m = 0, 1, …), with different F: both rows of a pair have exactly the same cosine
    with every query whatever the kernel's summation order (one non-zero term), so an odd K
    splits a tie at every query's K-th place and the tie-break (lower column) decides."""
    assert ng % 2 == 0 and ng <= 4 * c
    g = torch.Generator().manual_seed(seed)
    q = SimpleNamespace(F=torch.randn(nq, c, *hw, generator=g), G=torch.randn(nq, c, generator=g),
                        modalities=["ir"] * nq)
    G = torch.zeros(ng // 2, c)
    for p in range(ng // 2):
        G[p, p // 2] = 3.0 if p % 2 == 0 else -2.0
    gal = SimpleNamespace(F=torch.randn(ng, c, *hw, generator=g),
                          G=G.repeat_interleave(2, dim=0), modalities=["rgb"] * ng)
    return q, gal


def _cos(a, b):
    a, b = a.double(), b.double()
    return float(a @ b) / math.sqrt(float(a @ a) * float(b @ b))


def _literal(q, gal, ccn, w, k, query_side="b"):
    """The mode's definition, query by query: the K largest cosines (equal ones by lower
    column) get (1 − w)(1 − s)/2 + w·D_RI, with D_RI by CCN.forward on the one pair (side "a"
    is the RGB gallery image for an IR query, the query itself for a same-modality pair),
    every other column 3 − s."""
    nq, ng = len(q.G), len(gal.G)
    out = torch.empty(nq, ng, dtype=torch.float64)
    for i in range(nq):
        s = [_cos(q.G[i], gal.G[j]) for j in range(ng)]
        top = sorted(range(ng), key=lambda j: (-s[j], j))[:k]
        for j in range(ng):
            if j in top:
                a, b = ((gal.F[j:j + 1], q.F[i:i + 1]) if query_side == "b"
                        else (q.F[i:i + 1], gal.F[j:j + 1]))
                with torch.no_grad():
                    d = float(ccn(a, b, torch.tensor([0]), torch.tensor([0])))
                out[i, j] = (1 - w) * (1 - s[j]) / 2 + w * d
            else:
                out[i, j] = 3 - s[j]
    return out


def _ranked(row):
    """Column order of one distance row: lower first, equal values by lower column."""
    return sorted(range(len(row)), key=lambda j: (float(row[j]), j))


@pytest.mark.parametrize("w,k", [(0.3, 1), (0.3, 3), (0.7, 5), (0.5, 8)])
def test_fused_rerank_against_literal_loop(w, k):
    q, gal = _sets()
    ccn = _ccn()
    dist = get_scoring(MODE).distance(q, gal, ccn=ccn, fusion_weight=w, topk=k, chunk_size=3)
    ref = _literal(q, gal, ccn, w, k)
    torch.testing.assert_close(dist.double(), ref, rtol=1e-5, atol=1e-6)
    # the listed pairs lie in [0, 1], the rest at ≥ 2: exactly K per query in front
    assert ((dist <= 1).sum(dim=1) == k).all() and (dist[dist > 1] >= 2).all()


def test_fused_rerank_ends_are_fused_rerank_and_simplified():
    q, gal = _sets(seed=12, ng=10)
    ccn = _ccn()
    mode = get_scoring(MODE)
    # K ≥ G: every pair is listed, which is the fused mode (same numbers up to the kernel's
    # rounding; exactly the same when both read one kept D_RI matrix)
    for k in (10, 25):
        torch.testing.assert_close(
            mode.distance(q, gal, ccn=ccn, fusion_weight=0.4, topk=k),
            get_scoring("fused").distance(q, gal, ccn=ccn, fusion_weight=0.4),
            rtol=1e-5, atol=1e-6)
    ctx = ScoringContext(ccn=ccn, fusion_weight=0.4, topk=10, memo=True)
    qq, gg = ctx.features(q), ctx.features(gal)
    assert torch.equal(mode.distance(qq, gg, ctx), get_scoring("fused").distance(qq, gg, ctx))
    # w = 1: the rerank mode exactly, at every K
    for k in (1, 3, 6):
        assert torch.equal(mode.distance(q, gal, ccn=ccn, fusion_weight=1.0, topk=k),
                           get_scoring("rerank").distance(q, gal, ccn=ccn, topk=k))
    # w = 0: the simplified ranking, query by query, at every K
    simp = get_scoring("simplified").distance(q, gal)
    for k in (1, 3, 6):
        d0 = mode.distance(q, gal, ccn=ccn, fusion_weight=0.0, topk=k)
        for i in range(len(q.G)):
            assert _ranked(d0[i]) == _ranked(simp[i])
    # in between it is none of them (else the checks above could not tell them apart)
    mid = mode.distance(q, gal, ccn=ccn, fusion_weight=0.5, topk=3)
    rer = get_scoring("rerank").distance(q, gal, ccn=ccn, topk=3)
    assert not torch.allclose(mid, rer)
    assert any(_ranked(mid[i]) != _ranked(simp[i]) for i in range(len(q.G)))


def test_entry_flags_and_refusals():
    mode = get_scoring(MODE)
    assert mode.needs_ccn and mode.uses_topk and mode.uses_fusion_weight
    assert not mode.higher_is_better and mode.label == "S+F@K"
    q, gal = _sets()
    with pytest.raises(ConfigError, match="CCN"):
        mode.distance(q, gal)
    with pytest.raises(ConfigError, match=r"fusion_weight: expected a number in \[0, 1\]"):
        mode.distance(q, gal, ccn=_ccn(), fusion_weight=-0.5)


def test_topk_search_and_sharded_topk_are_the_literal_ranking():
    from vireid.apps.search import ArrayGallery, search

    q, gal = _sets(seed=13, nq=3, ng=12)
    ccn = _ccn()
    w, depth = 0.6, 5
    ref = _literal(q, gal, ccn, w, depth)
    mode = get_scoring(MODE)
    opts = dict(ccn=ccn, topk=depth, fusion_weight=w, chunk_size=2)
    for k in (1, 5, 7):  # within the depth, and past it (3 − S behind)
        d, rows = mode.topk(q, gal, k, **opts)
        for i in range(len(q.G)):
            assert rows[i].tolist() == _ranked(ref[i])[:k]
            np.testing.assert_allclose(d[i].double().numpy(), ref[i, rows[i]].numpy(),
                                       rtol=1e-5, atol=1e-6)
    d, rows = topk_sharded(mode, q, gal, 4, mode.context(**opts))  # one process here
    assert [r.tolist() for r in rows] == [_ranked(ref[i])[:4] for i in range(len(q.G))]
    # search over a gallery in shards of 5 rows: matches and their scores
    arr = ArrayGallery(gal.F.numpy(), gal.G.numpy(), [f"g{i}" for i in range(12)], shard_rows=5)
    matches = search(arr, q.F.numpy(), q.G.numpy(), scoring=MODE, topk=4, rerank_depth=depth,
                     ccn=ccn, query_modality="ir", fusion_weight=w)
    for i, ms in enumerate(matches):
        assert [m.path for m in ms] == [f"g{j}" for j in _ranked(ref[i])[:4]]
        for m in ms:
            assert m.score == pytest.approx(float(ref[i, int(m.path[1:])]), abs=1e-5)


def test_kreciprocal_self_distance_is_the_same_set_literal():
    _, gal = _sets(seed=14, ng=8)
    ccn = _ccn()
    got = get_scoring(MODE).self_distance(gal, ccn=ccn, fusion_weight=0.3, topk=3)
    # an RGB set against itself: the query is side "a"; the diagonal is set to 0
    ref = _literal(gal, gal, ccn, 0.3, 3, query_side="a").numpy()
    np.fill_diagonal(ref, 0.0)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


def test_python_api_passes_weight_and_depth(trained_run, sysu_root):
    import vireid

    model = vireid.load(trained_run)
    ir = sorted(sysu_root.glob("cam3/*/*.jpg"))[:5]
    rgb = sorted(sysu_root.glob("cam1/*/*.jpg"))[:7]
    q, g = model.extract(ir, modality="ir"), model.extract(rgb, modality="rgb")
    S = -model.distance(q, g, scoring="simplified")
    D = model.distance(q, g, scoring="full")
    w, k = 0.25, 3
    ref = np.empty_like(S)
    for i in range(len(S)):
        top = sorted(range(S.shape[1]), key=lambda j: (-S[i, j], j))[:k]
        for j in range(S.shape[1]):
            ref[i, j] = (1 - w) * (1 - S[i, j]) / 2 + w * D[i, j] if j in top else 3 - S[i, j]
    got = model.distance(q, g, scoring=MODE, fusion_weight=w, topk=k)
    np.testing.assert_allclose(got, ref, atol=1e-5)
    rows, _ = model.search(q, g, k=4, scoring=MODE, fusion_weight=w, topk=k)
    for i in range(len(S)):
        assert rows[i].tolist() == _ranked(ref[i])[:4]


# --------------------------------------------------------------------------- the chooser
def test_parse_topk_grid_and_the_chooser_mode():
    assert parse_topk_grid("20,10,20") == [10, 20]
    for bad in ("", "a", "0,5", "2.5"):
        with pytest.raises(ConfigError, match="top-K grid"):
            parse_topk_grid(bad)
    assert DEFAULT_TOPKS == (10, 20, 50)
    assert chooser_mode(MODE) == MODE and chooser_mode("fused") == "fused"
    assert chooser_mode("all") == "fused" and chooser_mode("full") == "fused"


def test_chooser_refuses_modes_without_weight_or_depth(trained_run, sysu_root):
    last = trained_run / "checkpoints" / "last.pt"
    with pytest.raises(ConfigError, match="expected a scoring mode with a fusion weight"):
        choose_fusion_weight(last, sysu_root, [0.5], scoring="rerank")
    with pytest.raises(ConfigError, match="the fused mode has no top-K depth"):
        choose_fusion_weight(last, sysu_root, [0.5], scoring="fused", topks=[2])
    with pytest.raises(ConfigError, match="top-K grid"):
        choose_fusion_weight(last, sysu_root, [0.5], scoring=MODE, topks=[0])


def _val_features(checkpoint, root):
    """The held-out ids' IR queries and RGB gallery, extracted as the chooser reads them."""
    from vireid.engine.checkpoint import load_model_from_checkpoint
    from vireid.engine.features import extract_features, open_images
    from vireid.engine.train_data import plan_split

    model, cfg, _ = load_model_from_checkpoint(checkpoint, "cpu")
    plan = plan_split(cfg, root)
    vs = set(plan.val)
    out = []
    for records in ([r for r in plan.full.ir if r.pid in vs],
                    [r for r in plan.full.rgb if r.pid in vs]):
        images = open_images(root, records, (cfg.data.height, cfg.data.width))
        out.append(extract_features(model, records, images, 64, False, "cpu"))
    return model, out[0], out[1]


def test_chooser_picks_the_literal_grids_best_point(trained_run, sysu_root):
    from vireid.evaluation.metrics import eval_regdb

    last = trained_run / "checkpoints" / "last.pt"
    weights, topks = [0.0, 0.5, 1.0], [1, 2, 4]
    choice = choose_fusion_weight(last, sysu_root, weights, scoring=MODE, topks=topks)
    assert choice["scoring"] == MODE
    assert [(r["w"], r["topk"]) for r in choice["grid"]] == \
        [(w, k) for w in weights for k in topks]  # w ascending, then K ascending
    # the literal grid: cosine by hand, D_RI of every pair by CCN.forward (query side b)
    model, fq, fg = _val_features(last, sysu_root)
    nq, ng = len(fq.pids), len(fg.pids)
    S = np.array([[_cos(torch.as_tensor(fq.G[i]), torch.as_tensor(fg.G[j]))
                   for j in range(ng)] for i in range(nq)])
    ia, ib = np.meshgrid(np.arange(ng), np.arange(nq))  # pair (gallery j as a, query i as b)
    with torch.no_grad():
        D = model.ccn(torch.as_tensor(fg.F), torch.as_tensor(fq.F),
                      torch.as_tensor(ia.reshape(-1)), torch.as_tensor(ib.reshape(-1))
                      ).reshape(nq, ng).double().numpy()
    best, best_score = None, -1.0
    for row in choice["grid"]:
        w, k = row["w"], row["topk"]
        dist = 3 - S
        for i in range(nq):
            for j in sorted(range(ng), key=lambda j: (-S[i, j], j))[:k]:
                dist[i, j] = (1 - w) * (1 - S[i, j]) / 2 + w * D[i, j]
        cmc, m_ap, _ = eval_regdb(dist, fq.pids, fg.pids)
        r1, mp = float(cmc[0]) * 100, float(m_ap) * 100
        assert row["rank1"] == pytest.approx(r1, abs=1e-6)
        assert row["mAP"] == pytest.approx(mp, abs=1e-4)
        if (r1 + mp) / 2 > best_score + 1e-9:  # strictly better: ties keep the first point
            best, best_score = (w, k), (r1 + mp) / 2
    assert (choice["chosen"], choice["chosen_topk"]) == best
    # the table shows K and marks exactly one row
    table = format_choice(choice)
    assert "| w | K | val R1 |" in table
    assert sum(line.startswith("| **") for line in table.splitlines()) == 1


def test_eval_cli_chooses_weight_and_depth_then_evaluates_with_them(trained_run, sysu_root):
    proc = run_cli("eval", "--checkpoint", trained_run, "--data-root", sysu_root, "--no-save",
                   "--scoring", MODE, "--choose-fusion-weight", "0,1", "--choose-topk", "2,3",
                   "--json", "-", check=True)
    res = json.loads(proc.stdout)
    choice = res["fusion_weight_choice"]
    assert choice["scoring"] == MODE
    assert [(r["w"], r["topk"]) for r in choice["grid"]] == [(0, 2), (0, 3), (1, 2), (1, 3)]
    assert res["scoring"] == MODE
    assert (res["fusion_weight"], res["topk"]) == (choice["chosen"], choice["chosen_topk"])
    assert "| w | K |" in proc.stderr  # the grid is printed (to stderr beside --json -)
    # the chosen end is an existing mode: w = 1 is rerank at K, w = 0 ranks as simplified
    k = str(choice["chosen_topk"])
    other = "rerank" if choice["chosen"] == 1.0 else "simplified"
    ref = json.loads(run_cli("eval", "--checkpoint", trained_run, "--data-root", sysu_root,
                             "--no-save", "--scoring", other, "--topk", k, "--json", "-",
                             check=True).stdout)
    for key in ("rank1", "mAP", "mINP"):
        assert res["mean"][key] == pytest.approx(ref["mean"][key], abs=1e-9)


@pytest.mark.parametrize("args,message", [
    (["--choose-topk", "2,3"],
     "--choose-topk: expected it with --choose-fusion-weight"),
    (["--scoring", "fused", "--choose-fusion-weight", "0,1", "--choose-topk", "2"],
     "--choose-topk: expected --scoring to name a top-K mode"),
    (["--scoring", MODE, "--choose-fusion-weight", "0,1", "--choose-topk", "2", "--topk", "3"],
     "--topk and --choose-topk: expected one of them, found both"),
    (["--scoring", MODE, "--choose-fusion-weight", "0,1", "--choose-topk", "0"],
     "top-K grid: expected integers ≥ 1"),
])
def test_eval_cli_refuses_choose_topk_misuse(trained_run, sysu_root, args, message):
    proc = run_cli("eval", "--checkpoint", trained_run, "--data-root", sysu_root, "--no-save",
                   *args)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert message in proc.stderr
