"""Search: FAISS and torch agree with a brute-force cosine reference; full and rerank agree
with the CCN's direct form; an easy query finds its identity first; the CLI prints it."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from _index_helpers import make_checkpoint, make_images, single_thread
from vireid.cli import main
from vireid.engine.checkpoint import load_model_from_checkpoint
from vireid.errors import CheckpointError, ConfigError
from vireid.apps.index import build_index, embed_images, folder_labels
from vireid.models.ccn import CCN
from vireid.apps.search import ArrayGallery, search, search_images
from vireid.scoring.topk import cosine_topk, resolve_backend

_threads = pytest.fixture(scope="module", autouse=True)(single_thread)


def _cosine_reference(q, g):
    """Literal cosine similarity, row by row, in float64."""
    out = np.empty((len(q), len(g)))
    for i, a in enumerate(q.astype(np.float64)):
        for j, b in enumerate(g.astype(np.float64)):
            out[i, j] = a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
    return out


def test_faiss_and_torch_give_the_reference_topk():
    rng = np.random.default_rng(0)
    gG = rng.normal(size=(300, 32)).astype(np.float32)
    qG = rng.normal(size=(15, 32)).astype(np.float32)
    ref = _cosine_reference(qG, gG)
    ref_rows = np.argsort(-ref, axis=1)[:, :10]
    s_t, r_t, used_t = cosine_topk(qG, gG, 10, backend="torch", block_elems=15 * 64)
    s_f, r_f, used_f = cosine_topk(qG, gG, 10, backend="faiss")
    assert (used_t, used_f) == ("torch", "faiss")
    np.testing.assert_array_equal(r_t, ref_rows)
    np.testing.assert_array_equal(r_f, ref_rows)
    np.testing.assert_allclose(s_t, np.take_along_axis(ref, ref_rows, 1), atol=1e-5)
    np.testing.assert_allclose(s_f, s_t, atol=1e-5)
    # k beyond the gallery size returns the whole gallery, ranked.
    assert cosine_topk(qG[:2], gG[:7], 50, backend="torch")[1].shape == (2, 7)


def test_faiss_stays_optional(monkeypatch):
    import vireid.scoring.topk as vt

    monkeypatch.setattr(vt, "FAISS_MIN_GALLERY", 1000)
    assert resolve_backend("auto", 10**4) == "faiss" and resolve_backend("auto", 999) == "torch"
    monkeypatch.setitem(sys.modules, "faiss", None)  # makes `import faiss` fail
    assert resolve_backend("auto", 10**7) == "torch"
    with pytest.raises(ConfigError, match="faiss"):
        resolve_backend("faiss", 10)


def _direct_D(ccn, qF, gF, query_is_b):
    """D of every pair by the CCN's direct form (Algorithm 1 crops + grouped correlation)."""
    nq, ng = len(qF), len(gF)
    qi = torch.arange(nq).repeat_interleave(ng)
    gi = torch.arange(ng).repeat(nq)
    with torch.no_grad():
        if query_is_b:
            d = ccn(gF, qF, gi, qi)
        else:
            d = ccn(qF, gF, qi, gi)
    return d.reshape(nq, ng).double().numpy()


@pytest.mark.parametrize("query_modality", ["ir", "rgb"])
def test_full_and_rerank_match_the_direct_form(query_modality):
    torch.manual_seed(0)
    ccn = CCN(16, (4, 2), kernel_size=(2, 2), padding=1, share_fc=False).eval()
    with torch.no_grad():  # spread D over (0, 1) so the ranking is not decided by rounding
        ccn.fc.weight.mul_(40.0)
        ccn.fc_b.weight.mul_(40.0)
    gF = torch.randn(40, 16, 4, 2)
    qF = torch.randn(5, 16, 4, 2)
    gal = ArrayGallery(gF.numpy(), gF.mean((2, 3)).numpy(), [f"g{i}" for i in range(40)],
                       modality="rgb", shard_rows=7)
    ref = _direct_D(ccn, qF, gF, query_is_b=query_modality == "ir")
    res = search(gal, qF.numpy(), qF.mean((2, 3)).numpy(), scoring="full", topk=6,
                 query_modality=query_modality, ccn=ccn)
    for q, matches in enumerate(res):
        want = np.argsort(ref[q], kind="stable")[:6]
        assert [m.row for m in matches] == list(want)
        np.testing.assert_allclose([m.score for m in matches], ref[q][want], atol=1e-5)
        assert [m.rank for m in matches] == [1, 2, 3, 4, 5, 6]
    cos = _cosine_reference(qF.mean((2, 3)).numpy(), gF.mean((2, 3)).numpy())
    res = search(gal, qF.numpy(), qF.mean((2, 3)).numpy(), scoring="rerank", topk=4,
                 rerank_depth=12, query_modality=query_modality, ccn=ccn, backend="torch")
    for q, matches in enumerate(res):
        cand = np.argsort(-cos[q])[:12]
        want = cand[np.argsort(ref[q][cand], kind="stable")][:4]
        assert [m.row for m in matches] == list(want)
        np.testing.assert_allclose([m.score for m in matches], ref[q][want], atol=1e-5)


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    root = tmp_path_factory.mktemp("search")
    ckpt = make_checkpoint(root / "model.pt", seed=0)
    gallery = make_images(root / "gallery", range(5), 3, seed=1)
    ix = build_index(ckpt, gallery, root / "ix", "rgb", labels=folder_labels(gallery), shard_size=4)
    # Easy queries: a lightly noised copy of one gallery image per identity.
    rng = np.random.default_rng(5)
    queries = []
    for pid in range(5):
        src = np.asarray(Image.open(gallery[3 * pid + 1]), dtype=np.float32)
        noisy = np.clip(src + rng.normal(0, 3, src.shape), 0, 255).astype(np.uint8)
        (root / "query" / f"{pid:04d}").mkdir(parents=True)
        queries.append(root / "query" / f"{pid:04d}" / "q.png")
        Image.fromarray(noisy).save(queries[-1])
    return root, ckpt, gallery, ix, queries


def test_easy_query_finds_its_identity_first(indexed):
    root, ckpt, gallery, ix, queries = indexed
    for backend in ("torch", "faiss"):
        res = search_images(ix, queries, query_modality="rgb", topk=3, backend=backend)
        assert res.backend == backend
        for pid, matches in enumerate(res.matches):
            assert matches[0].label == f"{pid:04d}"
            assert matches[0].path == gallery[3 * pid + 1].resolve().as_posix()
            assert matches[0].score > matches[1].score


def test_full_search_through_the_index_matches_the_direct_form(indexed):
    root, ckpt, gallery, ix, queries = indexed
    model, cfg, _ = load_model_from_checkpoint(ckpt)
    qF, _ = embed_images(model, cfg, queries[:2], "ir")
    gF, _ = ix.features()
    ref = _direct_D(model.ccn, torch.from_numpy(qF), torch.from_numpy(gF), query_is_b=True)
    res = search_images(ix, queries[:2], query_modality="ir", scoring="full", topk=15)
    for q, matches in enumerate(res.matches):
        scores = [m.score for m in matches]
        assert scores == sorted(scores)
        got = np.array([ref[q][m.row] for m in matches])
        np.testing.assert_allclose(scores, got, atol=1e-5)
        assert sorted(m.row for m in matches) == list(range(15))


def test_cli_table_json_plot_and_refusal(indexed, tmp_path, capsys):
    root, ckpt, gallery, ix, queries = indexed
    png = tmp_path / "matches.png"
    assert main(["search", "--index", str(ix.path), "--query", str(root / "query"), "--modality",
                 "rgb", "--topk", "3", "--json", "--plot", str(png)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["scoring"] == "simplified" and out["higher_is_better"] is True
    assert [r["matches"][0]["label"] for r in out["results"]] == [f"{p:04d}" for p in range(5)]
    with Image.open(png) as im:
        assert im.size[0] > 200 and im.size[1] > 200
    assert main(["search", "--index", str(ix.path), "--query", str(queries[0]), "--scoring",
                 "rerank", "--topk", "2", "--rerank-depth", "5"]) == 0
    table = capsys.readouterr().out
    assert "lower = more similar" in table and table.count("/gallery/") == 2
    other = make_checkpoint(tmp_path / "other.pt", seed=7)
    assert main(["search", "--index", str(ix.path), "--query", str(queries[0]),
                 "--checkpoint", str(other)]) == 2
    err = capsys.readouterr().err
    assert ix.model_digest in err and "rebuild" in err
    with pytest.raises(CheckpointError):
        search_images(ix, queries[:1], checkpoint=other)


def test_importing_search_changes_no_matplotlib_state():
    # A notebook's backend must survive `import vireid.apps.search` (no Agg switch, no pyplot).
    import subprocess

    code = ("import sys, matplotlib; matplotlib.use('pdf'); import vireid.apps.search; "
            "print(matplotlib.get_backend(), 'matplotlib.pyplot' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True).stdout.split()
    assert out == ["pdf", "False"]
