"""LLCM: synthetic layout, test-set loading, DEEN's query/gallery construction and eval_llcm."""
from __future__ import annotations

import os
import random

import numpy as np
import pytest

from vireid.data.llcm import load_llcm
from vireid.data.records import IR, RGB
from vireid.data.synthetic import generate
from vireid.errors import ConfigError
from vireid.evaluation.metrics import NoValidQueryError, eval_llcm
from vireid.evaluation.protocols import (
    build_split,
    evaluate_split,
    get_protocol,
    protocols_for,
)


@pytest.fixture(scope="module")
def llcm_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("llcm")
    generate("llcm", root, ids=9, seed=3, images_per_camera=(1, 3),
             rgb_size=(32, 16), ir_size=(32, 16))
    return root


# --- literal re-implementation of the DEEN reference (data_manager.py) on the folders ---------
def _ref_ids(root):
    with open(os.path.join(root, "idx/test_id.txt")) as f:
        ids = [int(y) for y in f.read().splitlines()[0].split(",")]
    return ["%04d" % x for x in ids]


def _ref_query(root, mode):
    cams = (["test_vis/cam%d" % c for c in range(1, 10)] if mode == 1 else
            ["test_nir/cam%d" % c for c in (1, 2, 4, 5, 6, 7, 8, 9)])
    files = []
    for pid in sorted(_ref_ids(root)):
        for cam in cams:
            d = os.path.join(root, cam, pid)
            if os.path.isdir(d):
                files.extend(sorted([d + "/" + i for i in os.listdir(d)]))
    return files


def _ref_gallery(root, mode, trial):
    random.seed(trial)
    cams = (["test_vis/cam%d" % c for c in range(1, 10)] if mode == 1 else
            ["test_nir/cam%d" % c for c in (1, 2, 4, 5, 6, 7, 8, 9)])
    files = []
    for pid in sorted(_ref_ids(root)):
        for cam in cams:
            d = os.path.join(root, cam, pid)
            if os.path.isdir(d):
                files.append(random.choice(sorted([d + "/" + i for i in os.listdir(d)])))
    return files


def _rel(root, paths):
    return [os.path.relpath(p, root) for p in paths]


def test_synthetic_layout_and_loader(llcm_root):
    for f in ("train_vis.txt", "train_nir.txt", "test_vis.txt", "test_nir.txt", "test_id.txt"):
        assert (llcm_root / "idx" / f).is_file()
    assert not (llcm_root / "test_nir" / "cam3").exists()
    ds = load_llcm(llcm_root)
    assert ds.train.rgb and ds.train.ir
    assert all(r.modality == RGB for r in ds.train.rgb)
    assert sorted(ds.train.labels.values()) == list(range(len(ds.train.labels)))
    train_pids = {int(r.path.split("/")[1]) for r in ds.train.rgb + ds.train.ir}
    assert train_pids and not train_pids & set(ds.test_ids)
    # Test lists match the folder tree.
    for mod, d in ((RGB, "test_vis"), (IR, "test_nir")):
        listed = sorted(r.path for r in ds.test_lists[mod])
        on_disk = sorted(os.path.relpath(os.path.join(dp, f), llcm_root)
                         for dp, _, fs in os.walk(llcm_root / d) for f in fs)
        assert listed == on_disk
        assert all(int(r.path.split("/")[1][3:]) == r.camid for r in ds.test_lists[mod])


def test_registry():
    names = [p.name for p in protocols_for("llcm")]
    assert names == ["llcm-v2i", "llcm-i2v"]
    assert get_protocol("llcm-i2v").trials == tuple(range(10))


@pytest.mark.parametrize("trial", range(10))
def test_i2v_and_v2i_match_reference(llcm_root, trial):
    ds = load_llcm(llcm_root)
    i2v = build_split("llcm-i2v", ds, trial)
    assert [r.path for r in i2v.query] == _rel(llcm_root, _ref_query(str(llcm_root), 2))
    assert [r.path for r in i2v.gallery] == _rel(llcm_root, _ref_gallery(str(llcm_root), 1, trial))
    v2i = build_split("llcm-v2i", ds, trial)
    # DEEN test_mode [2, 1]: rows = the sampled NIR "gallery", columns = all VIS "query".
    assert [r.path for r in v2i.query] == _rel(llcm_root, _ref_gallery(str(llcm_root), 2, trial))
    assert [r.path for r in v2i.gallery] == _rel(llcm_root, _ref_query(str(llcm_root), 1))
    named = build_split("llcm-v2i", ds, trial, roles="as_named")
    assert [r.path for r in named.query] == [r.path for r in v2i.gallery]
    assert [r.path for r in named.gallery] == [r.path for r in v2i.query]
    # Camera and id as DEEN reads them from the path.
    for r in i2v.query + i2v.gallery:
        assert r.camid == int(r.path.split("cam")[1][0]) and r.pid == int(r.path.split("/")[2])
    with pytest.raises(ConfigError):
        build_split("llcm-i2v", ds, 10)


def _ref_eval_llcm(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=20):
    """Literal loop of the reference eval_llcm."""
    num_q, num_g = distmat.shape
    max_rank = min(max_rank, num_g)
    indices = np.argsort(distmat, axis=1)
    pred_label = g_pids[indices]
    matches = (g_pids[indices] == q_pids[:, np.newaxis]).astype(np.int32)
    new_all_cmc, all_ap, all_inp, valid = [], [], [], 0.0
    for q in range(num_q):
        order = indices[q]
        keep = np.invert((g_pids[order] == q_pids[q]) & (g_camids[order] == q_camids[q]))
        new_cmc = pred_label[q][keep]
        new_index = np.unique(new_cmc, return_index=True)[1]
        new_cmc = [new_cmc[i] for i in sorted(new_index)]
        new_match = (np.asarray(new_cmc) == q_pids[q]).astype(np.int32)
        new_all_cmc.append(new_match.cumsum()[:max_rank])
        orig = matches[q][keep]
        if not np.any(orig):
            continue
        cmc = orig.cumsum()
        pos = np.max(np.where(orig == 1))
        all_inp.append(cmc[pos] / (pos + 1.0))
        valid += 1
        tmp = np.asarray([x / (i + 1.0) for i, x in enumerate(orig.cumsum())]) * orig
        all_ap.append(tmp.sum() / orig.sum())
    cmc = np.asarray(new_all_cmc).astype(np.float32).sum(0) / valid
    return cmc, np.mean(all_ap), np.mean(all_inp)


@pytest.mark.parametrize("seed", range(4))
def test_eval_llcm_matches_reference_loop(seed):
    rng = np.random.default_rng(seed)
    nq, ng = 30, 60
    g_pids = np.repeat(np.arange(12), 5)
    g_cams = rng.integers(1, 10, ng)
    q_pids = rng.integers(0, 14, nq)  # some ids absent from the gallery
    q_cams = rng.integers(1, 10, nq)
    dist = np.round(rng.random((nq, ng)), 1)  # ties
    want = _ref_eval_llcm(dist, q_pids, g_pids, q_cams, g_cams)
    got = eval_llcm(dist, q_pids, g_pids, q_cams, g_cams)
    np.testing.assert_array_equal(got[0], want[0])
    assert got[1] == want[1] and got[2] == want[2]


def test_eval_llcm_removes_same_id_same_camera_only():
    # One query (id 0, cam 4); gallery: id 0 cam 4 (removed), id 1 cam 4, id 0 cam 5.
    dist = np.array([[0.1, 0.2, 0.3]])
    cmc, m_ap, m_inp = eval_llcm(dist, np.array([0]), np.array([0, 1, 0]),
                                 np.array([4]), np.array([4, 4, 5]))
    assert cmc[0] == 0 and cmc[1] == 1 and m_ap == pytest.approx(0.5) and m_inp == 0.5
    with pytest.raises(NoValidQueryError):
        eval_llcm(dist, np.array([0]), np.array([0, 1, 1]), np.array([4]), np.array([4, 4, 5]))


def test_evaluate_split_uses_eval_llcm(llcm_root):
    ds = load_llcm(llcm_root)
    split = build_split("llcm-i2v", ds, 0)
    rng = np.random.default_rng(0)
    dist = rng.random((len(split.query), len(split.gallery)))
    got = evaluate_split(dist, split, "llcm-i2v")
    q = np.array([r.pid for r in split.query]), np.array([r.camid for r in split.query])
    g = np.array([r.pid for r in split.gallery]), np.array([r.camid for r in split.gallery])
    cmc, m_ap, _ = _ref_eval_llcm(dist, q[0], g[0], q[1], g[1])
    assert got["rank1"] == pytest.approx(100 * cmc[0]) and got["mAP"] == pytest.approx(100 * m_ap)


def _llcm_valid(q_pids, g_pids, q_cams, g_cams):
    """Independent of both implementations: which queries keep a gallery item of their id?"""
    return np.array([
        any(g_pids[j] == q_pids[i] and g_cams[j] != q_cams[i] for j in range(len(g_pids)))
        for i in range(len(q_pids))
    ], dtype=bool)


def _assert_bit_identical(got, want):
    assert got[0].dtype == np.float32 and got[0].shape == want[0].shape
    np.testing.assert_array_equal(got[0], want[0])
    assert got[1] == want[1] and got[2] == want[2]


@pytest.mark.parametrize("seed", range(40))
def test_eval_llcm_matches_reference_loop_random_sizes_and_ties(seed):
    """Random cases with heavy ties (a few integer distance levels, four dtypes), 1 to 300
    gallery items, 1 to 9 shared camera numbers (so same-id same-camera pairs are frequent),
    ids absent from the gallery, max_rank below, at and above G: eval_llcm equals the literal
    loop bit for bit. Where the loop crashes (an invalid query sees one id fewer than the
    others, so its curve is shorter) or finds no valid query, eval_llcm must equal the loop on
    the valid queries only, resp. raise NoValidQueryError."""
    rng = np.random.default_rng(500 + seed)
    num_q = int(rng.integers(1, 60))
    num_g = int(rng.choice([1, 2, 5, 19, 20, 21, 64, 300]))
    num_ids = int(rng.integers(1, 15))
    num_cams = int(rng.choice([1, 2, 3, 9], p=[0.1, 0.3, 0.3, 0.3]))
    dtype = [np.float32, np.float64, np.int64, np.float16][seed % 4]
    dist = rng.integers(0, int(rng.choice([2, 4, 50, 1000])), (num_q, num_g)).astype(dtype)
    q_pids = rng.integers(0, num_ids + 2, num_q)
    g_pids = rng.integers(0, num_ids, num_g)
    q_cams = rng.integers(1, num_cams + 1, num_q)
    g_cams = rng.integers(1, num_cams + 1, num_g)
    max_rank = int(rng.choice([1, 5, 20, 500]))
    if num_cams > 1 and seed % 4:  # mostly at least one valid query (query 0: g0's id, other cam)
        q_pids[0], q_cams[0] = g_pids[0], g_cams[0] % num_cams + 1
    args = (q_pids, g_pids, q_cams, g_cams)
    valid = _llcm_valid(*args)
    if not valid.any():
        with pytest.raises(NoValidQueryError):
            eval_llcm(dist, *args, max_rank=max_rank)
        return
    got = eval_llcm(dist, *args, max_rank=max_rank)
    # Invalid queries count nowhere: the loop on the valid rows alone gives the same numbers.
    _assert_bit_identical(got, _ref_eval_llcm(dist[valid], q_pids[valid], g_pids, q_cams[valid],
                                              g_cams, max_rank=max_rank))
    try:
        want = _ref_eval_llcm(dist, *args, max_rank=max_rank)
    except ValueError:  # the reference's np.asarray on curves of unequal length
        return
    _assert_bit_identical(got, want)


def test_eval_llcm_shorter_invalid_curve_is_padded_where_the_reference_crashes():
    # Gallery: ids 0, 1, 2 (cams 4, 5, 5). q0 (id 1, cam 5) loses its only match -> invalid,
    # sees 2 distinct ids; q1 (id 0, cam 7) ranks g1 (id 1), g0 (id 0) -> distinct [1, 0, 2],
    # curve [0, 1, 1]. The loop crashes on lengths 2 and 3; eval_llcm reports q1's numbers.
    dist = np.array([[0.0, 1.0, 2.0], [1.0, 0.0, 2.0]])
    q_pids, g_pids = np.array([1, 0]), np.array([0, 1, 2])
    q_cams, g_cams = np.array([5, 7]), np.array([4, 5, 5])
    with pytest.raises(ValueError):
        _ref_eval_llcm(dist, q_pids, g_pids, q_cams, g_cams)
    cmc, m_ap, m_inp = eval_llcm(dist, q_pids, g_pids, q_cams, g_cams)
    np.testing.assert_array_equal(cmc, np.array([0, 1, 1], dtype=np.float32))
    assert m_ap == 0.5 and m_inp == 0.5


def test_eval_llcm_is_not_sysu_removal():
    # A cam3 query and a cam2 gallery image of another id: SYSU drops it, LLCM keeps it.
    dist = np.array([[0.0, 1.0]])
    args = (np.array([1]), np.array([2, 1]), np.array([3]), np.array([2, 1]))
    cmc, m_ap, _ = eval_llcm(dist, *args)
    np.testing.assert_array_equal(cmc, np.array([0, 1], dtype=np.float32))
    assert m_ap == 0.5
