"""k-reciprocal re-ranking against a literal, per-probe implementation of the paper's equations.

The literal version below loops over probes and builds the sets of Zhong et al. (CVPR 2017)
one by one with Python sets -- N(p, k), R(p, k), R*(p, k) (Eq. 4-6), the Gaussian kernel
V (Eq. 7), local query expansion (Eq. 11), the Jaccard distance (Eq. 10) and the final
mix (Eq. 12) -- with the conventions of the field's reference code: the input distance is
squared and each row divided by its max, neighbours are ranked with numpy's default argsort,
round(k1/2) is numpy's half-to-even rounding.
"""
from __future__ import annotations

import numpy as np
import pytest

from vireid.errors import ConfigError, DataError
from vireid.scoring.kreciprocal import (
    pairwise_distance,
    re_ranking,
    rerank_distance,
    rerank_features,
)


def literal_rerank(q_g, q_q, g_g, k1, k2, lam):
    nq = q_g.shape[0]
    d = np.block([[q_q, q_g], [q_g.T, g_g]]).astype(np.float64)
    n = d.shape[0]
    sq = (d ** 2).astype(np.float32)
    # M[i, j] = D[j, i]^2 / max_k D[k, i]^2 (the reference normalises columns, then transposes)
    m = np.empty((n, n), dtype=np.float32)
    for i in range(n):
        for j in range(n):
            m[i, j] = sq[j, i] / sq[:, i].max()
    ranking = [list(np.argsort(m[i])) for i in range(n)]

    def nn(p, k):  # N(p, k): the k + 1 first of the ranking (the probe itself included)
        return ranking[p][:k + 1]

    def recip(p, k):  # R(p, k) = {g in N(p, k) : p in N(g, k)}
        return [g for g in nn(p, k) if p in nn(g, k)]

    half = int(np.around(k1 / 2.0))
    v = np.zeros((n, n), dtype=np.float64)
    for p in range(n):
        r = recip(p, k1)
        r_star = set(r)
        for q in r:
            rq = recip(q, half)
            if len(set(rq) & set(r)) > 2.0 / 3.0 * len(rq):
                r_star |= set(rq)
        denom = sum(np.exp(-float(m[p, g])) for g in r_star)
        for g in r_star:
            v[p, g] = np.exp(-float(m[p, g])) / denom
    if k2 != 1:
        vq = np.zeros_like(v)
        for p in range(n):
            nb = ranking[p][:k2]
            for g in nb:
                vq[p] += v[g]
            vq[p] /= len(nb)
        v = vq
    out = np.zeros((nq, n - nq))
    for p in range(nq):
        for gi in range(nq, n):
            inter = sum(min(v[p, k], v[gi, k]) for k in range(n))
            jac = 1.0 - inter / (2.0 - inter)
            out[p, gi - nq] = jac * (1 - lam) + float(m[p, gi]) * lam
    return out


def _features(rng, nq, ng, dim=6, ids=None):
    ids = ids or max(2, (nq + ng) // 4)
    centres = rng.normal(size=(ids, dim))
    qf = centres[rng.integers(0, ids, nq)] + 0.6 * rng.normal(size=(nq, dim))
    gf = centres[rng.integers(0, ids, ng)] + 0.6 * rng.normal(size=(ng, dim))
    return qf, gf


def _blocks(qf, gf):
    return (pairwise_distance(qf, gf), pairwise_distance(qf, qf), pairwise_distance(gf, gf))


@pytest.mark.parametrize("nq,ng,k1,k2,lam", [
    (3, 9, 3, 2, 0.3),
    (5, 14, 4, 3, 0.5),
    (6, 20, 6, 1, 0.3),
    (4, 25, 5, 4, 0.0),
    (8, 24, 20, 6, 0.3),    # k1 + 1 > N: every image is a neighbour
    (2, 5, 3, 9, 1.0),      # k2 > N, lambda = 1 (original distance only)
])
def test_matches_literal_equations(nq, ng, k1, k2, lam):
    rng = np.random.default_rng(nq * 100 + ng + k1)
    qg, qq, gg = _blocks(*_features(rng, nq, ng))
    want = literal_rerank(qg, qq, gg, k1, k2, lam)
    got = re_ranking(qg, qq, gg, k1=k1, k2=k2, lambda_value=lam)
    assert got.shape == (nq, ng) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("max_elems", [1, 37, 10**6])
def test_chunking_does_not_change_the_result(max_elems):
    rng = np.random.default_rng(7)
    qg, qq, gg = _blocks(*_features(rng, 7, 30))
    full = rerank_distance(qg, qq, gg, 6, 3, 0.3, max_elems=10**8)
    got = rerank_distance(qg, qq, gg, 6, 3, 0.3, max_elems=max_elems)
    np.testing.assert_array_equal(got, full)


def test_ties_follow_the_reference_ordering():
    # Integer-valued features give many exactly tied distances.
    rng = np.random.default_rng(3)
    qf = rng.integers(0, 2, size=(5, 3)).astype(float)
    gf = rng.integers(0, 2, size=(15, 3)).astype(float)
    qg, qq, gg = _blocks(qf, gf)
    qq = qq + 0.5 * (1 - np.eye(5))  # keep every row's maximum positive
    gg = gg + 0.5 * (1 - np.eye(15))
    qg = qg + 0.5
    want = literal_rerank(qg, qq, gg, 4, 3, 0.3)
    got = re_ranking(qg, qq, gg, k1=4, k2=3, lambda_value=0.3)
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-6)


def test_hand_checkable_two_clusters():
    # 1 query, 3 gallery on a line: q=0, g0=0.1 (same cluster), g1=10, g2=10.1.
    # k1=1, k2=1: N(p,1) = {p, nearest}. R(q,1) = {q, g0}; R(g0,1) = {g0, q}.
    # round(1/2) = 0 -> R(c, 0) = {c}: every candidate passes (1 > 2/3), R* = R.
    x = np.array([[0.0], [0.1], [10.0], [10.1]])
    qg, qq, gg = _blocks(x[:1], x[1:])
    got = re_ranking(qg, qq, gg, k1=1, k2=1, lambda_value=0.0)
    # Query and g0 share R* = {q, g0} with the same weights up to their own normalised
    # distances: Jaccard(q, g0) < 1, while g1, g2 share nothing with q: Jaccard = 1 exactly.
    assert got[0, 1] == pytest.approx(1.0) and got[0, 2] == pytest.approx(1.0)
    # Hand value: M[q] = [0, 0.01, 100, 102.01] / 102.01; M[g0] = [0.01, 0, 98.01, 100] / 100.
    mq = np.array([0.0, 0.01]) / 102.01
    mg = np.array([0.01, 0.0]) / 100.0
    vq = np.exp(-mq) / np.exp(-mq).sum()
    vg = np.exp(-mg) / np.exp(-mg).sum()
    inter = np.minimum(vq, vg).sum()
    assert got[0, 0] == pytest.approx(1 - inter / (2 - inter), abs=1e-6)


def test_rerank_features_uses_euclidean_blocks():
    rng = np.random.default_rng(11)
    qf, gf = _features(rng, 4, 12)
    got = rerank_features(qf, gf, k1=4, k2=2, lam=0.3)
    want = literal_rerank(*_blocks(qf, gf), 4, 2, 0.3)
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-6)
    d = pairwise_distance(qf, gf)
    np.testing.assert_allclose(d, np.linalg.norm(qf[:, None] - gf[None], axis=2), atol=1e-5)


def test_reranking_improves_a_clustered_retrieval():
    # A property the method promises: with well-separated clusters it does not hurt rank-1.
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(20, 16)) * 3
    gl = np.repeat(np.arange(20), 5)
    ql = np.arange(20)
    gf = centres[gl] + rng.normal(size=(100, 16))
    qf = centres[ql] + rng.normal(size=(20, 16))
    base = pairwise_distance(qf, gf)
    rr = rerank_features(qf, gf, k1=6, k2=3, lam=0.3)
    r1_base = (gl[base.argmin(1)] == ql).mean()
    r1_rr = (gl[rr.argmin(1)] == ql).mean()
    assert r1_rr >= r1_base


def test_bad_inputs():
    qg = np.ones((2, 3))
    with pytest.raises(DataError, match="q_q_dist"):
        re_ranking(qg, np.ones((3, 3)), np.ones((3, 3)))
    with pytest.raises(DataError, match="g_g_dist"):
        re_ranking(qg, np.ones((2, 2)), np.ones((2, 2)))
    with pytest.raises(ConfigError, match="k1"):
        re_ranking(qg, np.ones((2, 2)), np.ones((3, 3)), k1=0)
    with pytest.raises(ConfigError, match="lambda"):
        re_ranking(qg, np.ones((2, 2)), np.ones((3, 3)), lambda_value=1.5)
    with pytest.raises(DataError, match="NaN"):
        re_ranking(np.full((2, 3), np.nan), np.ones((2, 2)), np.ones((3, 3)))
    with pytest.raises(DataError, match="every distance"):
        re_ranking(np.zeros((2, 3)), np.zeros((2, 2)), np.zeros((3, 3)))
