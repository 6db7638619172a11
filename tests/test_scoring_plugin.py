"""A scoring mode registered by a plugin module outside the package (tests/plugins/toy_scoring.py,
through the public decorator only) is a mode like the built-in ones: ``evaluate`` scores it
(alone, under ``all`` and with k-reciprocal re-ranking), its distances reach the metric
unchanged (checked against a literal L1 loop), and ``vireid eval`` / ``vireid search`` accept
it when ``VIREID_PLUGINS`` names the module."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from _index_helpers import make_checkpoint, make_images
from vireid.scoring.scorers import SCORING_MODES
from vireid.utils.plugins import load_plugins

REPO = Path(__file__).resolve().parents[1]
PLUGIN = "tests.plugins.toy_scoring"
NAME = "toy-l1"


@pytest.fixture
def toy(monkeypatch):
    """The plugin imported the way vireid imports plugins; unregistered afterwards so that
    other tests see the built-in modes only."""
    monkeypatch.syspath_prepend(str(REPO))
    monkeypatch.setenv("VIREID_PLUGINS", PLUGIN)
    sys.modules.pop(PLUGIN, None)
    SCORING_MODES.unregister(NAME)
    assert PLUGIN in load_plugins(force=True)
    try:
        yield sys.modules[PLUGIN]
    finally:
        SCORING_MODES.unregister(NAME)
        sys.modules.pop(PLUGIN, None)


def _l1(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Literal L1 distance of every row pair, float64."""
    return np.array([[float(np.abs(x - y).sum()) for y in b] for x in a])


def _strip(r: dict) -> dict:
    return {k: v for k, v in r.items() if k != "seconds"}


def test_evaluate_scores_a_plugin_mode_and_its_distance_reaches_the_metric(
        toy, trained_run, sysu_root, tmp_path, monkeypatch):
    import vireid.engine.evaluate as ev
    from vireid.engine.features import load_features
    from vireid.evaluation.protocols import evaluate_split, get_protocol
    from vireid.scoring.kreciprocal import KReciprocal, re_ranking

    assert NAME in SCORING_MODES and SCORING_MODES[NAME].needs_ccn is False
    seen = []
    real = ev.rank_metrics

    def spy(dist, split, proto):
        seen.append((np.array(dist, copy=True), split))
        return real(dist, split, proto)

    monkeypatch.setattr(ev, "rank_metrics", spy)
    feats_path = tmp_path / "f.pt"
    res = ev.evaluate([trained_run], data_root=sysu_root, scoring=NAME, trials=[0, 1],
                      save_features_path=feats_path)
    assert res["scoring"] == NAME and res["topk"] is None
    feats, _ = load_features(feats_path)
    proto = get_protocol("sysu-all")
    assert [sp.trial for _, sp in seen] == [0, 1]
    for (dist, sp), got in zip(seen, res["per_trial"]):
        q = feats.subset(feats.rows_of(sp.query))
        g = feats.subset(feats.rows_of(sp.gallery))
        literal = _l1(q.G.double().numpy(), g.G.double().numpy())
        np.testing.assert_allclose(dist, literal, rtol=1e-6)
        # unchanged on its way: exactly what the plugin's function returns for the trial
        assert np.array_equal(dist, toy.toy_l1(q, g, None).numpy())
        want = evaluate_split(literal, sp, proto)
        for key in ("rank1", "rank5", "mAP", "mINP"):
            assert got[key] == pytest.approx(want[key], abs=1e-9), key

    # "all" is every registered mode, the plugin's included, from one extraction.
    seen.clear()
    both = ev.evaluate([trained_run], data_root=sysu_root, scoring="all", trials=[0, 1])
    assert set(both) == set(SCORING_MODES.names()) and NAME in both
    assert both[NAME]["per_trial"] == res["per_trial"]

    # k-reciprocal re-ranking of the plugin's distance: its q x q and g x g blocks are the
    # same function on the set itself, diagonal 0.
    k1, k2, lam = 5, 3, 0.25
    kr = ev.evaluate([trained_run], data_root=sysu_root, scoring=NAME, trials=[0],
                     kreciprocal=KReciprocal(k1, k2, lam))
    sp = seen[0][1]
    q = feats.subset(feats.rows_of(sp.query))
    g = feats.subset(feats.rows_of(sp.gallery))
    qq, gg = _l1(q.G.double().numpy(), q.G.double().numpy()), _l1(g.G.double().numpy(),
                                                                   g.G.double().numpy())
    np.fill_diagonal(qq, 0.0)
    np.fill_diagonal(gg, 0.0)
    want = evaluate_split(re_ranking(_l1(q.G.double().numpy(), g.G.double().numpy()), qq, gg,
                                     k1=k1, k2=k2, lambda_value=lam), sp, proto)
    for key in ("rank1", "rank5", "mAP", "mINP"):
        assert kr["per_trial"][0][key] == pytest.approx(want[key], abs=1e-4), key


def _cli(*args, cwd=None) -> subprocess.CompletedProcess:
    env = dict(os.environ, VIREID_PLUGINS=PLUGIN, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "src"),
                                           os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "vireid", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=180, cwd=cwd)


def test_vireid_eval_and_search_accept_a_plugin_mode(toy, trained_run, sysu_root, tmp_path):
    from vireid.apps.index import build_index, embed_images, folder_labels
    from vireid.engine.checkpoint import load_model_from_checkpoint
    from vireid.engine.evaluate import evaluate

    helped = _cli("eval", "--help")
    assert helped.returncode == 0 and NAME in helped.stdout
    out = tmp_path / "r.json"
    proc = _cli("eval", "--checkpoint", trained_run, "--data-root", sysu_root, "--trials", "0",
                "--scoring", NAME, "--json", out)
    assert proc.returncode == 0, proc.stderr
    assert f"| {NAME} |" in proc.stdout
    got = json.loads(out.read_text())
    want = evaluate([trained_run], data_root=sysu_root, scoring=NAME, trials=[0])
    assert _strip(got) == json.loads(json.dumps(_strip(want)))

    # Search an index with the plugin mode: its ranking is the literal L1 order of G (equal
    # distances by lower row), its score the distance itself.
    ckpt = make_checkpoint(tmp_path / "model.pt", seed=0)
    gallery = make_images(tmp_path / "gallery", range(4), 3, seed=1)
    ix = build_index(ckpt, gallery, tmp_path / "ix", "rgb", labels=folder_labels(gallery),
                     shard_size=5)
    query = make_images(tmp_path / "query", range(1, 2), 1, seed=7)[0]
    proc = _cli("search", "--index", ix.path, "--query", query, "--modality", "rgb",
                "--scoring", NAME, "--topk", "5", "--json")
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    assert res["scoring"] == NAME and res["higher_is_better"] is False
    assert res["score"] == SCORING_MODES[NAME].native
    model, cfg, _ = load_model_from_checkpoint(ckpt)
    _, qG = embed_images(model, cfg, [query], "rgb", flip=ix.flip)
    _, gG = ix.features()
    d = _l1(qG.astype(np.float64), gG.astype(np.float64))[0]
    order = sorted(range(len(d)), key=lambda j: (d[j], j))[:5]
    matches = res["results"][0]["matches"]
    assert [m["row"] for m in matches] == order
    np.testing.assert_allclose([m["score"] for m in matches], d[order], rtol=1e-5)

    bad = _cli("search", "--index", ix.path, "--query", query, "--scoring", "nope")
    assert bad.returncode == 2 and NAME in bad.stderr  # the choices list the plugin's mode
