"""The one top-k (vireid.scoring.topk) against a literal reference: a full sort of each row by
(score, gallery index), best score first, equal scores by lower gallery index, NaN last.
Many ties on purpose (scores drawn from a handful of values). Then every top-k user: merged
shards, the running top-k over gallery blocks, the cosine search, rerank's candidates, and
each built-in scoring mode's ``topk`` against its own distance."""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from vireid.errors import ConfigError, DataError
from vireid.scoring import topk as T
from vireid.scoring.inputs import Features
from vireid.scoring.scorers import SCORING_MODES, score_rerank
from vireid.scoring.sharded import topk_sharded


def reference(values, k, index=None, largest=False):
    """Literal: sort each row's (score, gallery index) pairs by the stated rule, keep k."""
    values = np.asarray(values, dtype=np.float64)
    nq, m = values.shape
    index = np.broadcast_to(np.arange(m) if index is None else np.asarray(index), (nq, m))
    out_v, out_i = [], []
    for r in range(nq):
        entries = list(zip(values[r].tolist(), index[r].tolist()))

        def key(e):
            v = e[0]
            if math.isnan(v):
                return (1, 0.0, e[1])           # NaN behind every number
            return (0, -v if largest else v, e[1])

        entries.sort(key=key)
        kept = entries[:min(k, m)]
        out_v.append([v for v, _ in kept])
        out_i.append([i for _, i in kept])
    return np.array(out_v).reshape(nq, -1), np.array(out_i, dtype=np.int64).reshape(nq, -1)


def _tied(shape, seed, levels=4):
    g = np.random.default_rng(seed)
    return torch.from_numpy(g.integers(0, levels, shape).astype(np.float32))


def _same(got, want):
    np.testing.assert_array_equal(got[1].numpy(), want[1])
    np.testing.assert_array_equal(got[0].double().numpy(), want[0])


@pytest.mark.parametrize("largest", [False, True])
@pytest.mark.parametrize("k", [1, 3, 8, 23, 40])
def test_topk_equals_the_literal_sort_with_ties(k, largest):
    scores = _tied((9, 23), seed=k)
    _same(T.topk(scores, k, largest=largest), reference(scores, k, largest=largest))


def test_topk_ties_follow_the_given_gallery_index_not_the_column():
    scores = _tied((6, 15), seed=1, levels=3)
    g = np.random.default_rng(2)
    index = torch.from_numpy(np.stack([g.permutation(100)[:15] for _ in range(6)]))
    for k in (1, 4, 15):
        _same(T.topk(scores, k, index=index), reference(scores, k, index=index.numpy()))
    # A hand-worked row: distances 2, 1, 1, 0, 1 with gallery indices 9, 7, 3, 8, 5.
    d, i = T.topk(torch.tensor([[2.0, 1.0, 1.0, 0.0, 1.0]]), 3,
                  index=torch.tensor([9, 7, 3, 8, 5]))
    assert i.tolist() == [[8, 3, 5]] and d.tolist() == [[0.0, 1.0, 1.0]]


def test_nan_ranks_last_and_bad_input_is_refused():
    scores = torch.tensor([[0.5, float("nan"), 0.1, float("nan"), 0.5]])
    for largest in (False, True):
        d, i = T.topk(scores, 5, largest=largest)
        want = reference(scores.numpy(), 5, largest=largest)
        assert i.tolist() == want[1].tolist()
    assert T.topk(scores, 2)[1].tolist() == [[2, 0]]
    with pytest.raises(ConfigError, match="matrix"):
        T.topk(torch.zeros(3), 1)
    with pytest.raises(ConfigError, match="index"):
        T.topk(torch.zeros(2, 3), 1, index=torch.arange(4))
    assert T.topk(torch.zeros(0, 3), 2)[1].shape == (0, 2)


@pytest.mark.parametrize("largest", [False, True])
def test_merged_shards_and_running_blocks_equal_one_sort(largest):
    scores = _tied((7, 40), seed=5, levels=5)
    k = 6
    want = reference(scores, k, largest=largest)
    # Disjoint gallery blocks of uneven sizes, merged in a shuffled order.
    cuts = [0, 3, 4, 17, 29, 40]
    parts = [T.topk(scores[:, a:b], k, index=torch.arange(a, b), largest=largest)
             for a, b in zip(cuts, cuts[1:])]
    order = np.random.default_rng(0).permutation(len(parts))
    _same(T.merge_topk([parts[j] for j in order], k, largest=largest), want)
    running = T.RunningTopK(k, largest=largest)
    for a, b in zip(cuts, cuts[1:]):
        running.add(scores[:, a:b], a)
    _same(running.result(), want)
    with pytest.raises(DataError, match="empty"):
        T.RunningTopK(3).result()


def test_cosine_topk_breaks_ties_by_lower_row_in_every_block_layout():
    g = np.random.default_rng(3)
    base = g.normal(size=(6, 8)).astype(np.float32)
    # Gallery rows that are positive multiples of each other have exactly equal cosines.
    gallery = np.concatenate([base, 2.0 * base, 4.0 * base, base[::-1]])          # (24, 8)
    queries = base[:3] + 0.01 * g.normal(size=(3, 8)).astype(np.float32)
    s_ref = T.l2_normalize(queries).astype(np.float64) @ T.l2_normalize(gallery).astype(np.float64).T
    want_rows = reference(s_ref, 7, largest=True)[1]
    for block in (1 << 24, 3 * 5, 3 * 7):  # one block, blocks of 5 and of 7 gallery rows
        s, rows, used = T.cosine_topk(queries, gallery, 7, backend="torch", block_elems=block)
        assert used == "torch"
        np.testing.assert_array_equal(rows.numpy(), want_rows)
        np.testing.assert_allclose(s.numpy(), np.take_along_axis(s_ref, want_rows, 1), atol=1e-6)


def test_rerank_candidates_take_the_lower_column_among_equal_similarities():
    S = torch.tensor([[0.5, 0.9, 0.5, 0.5, 0.1],
                      [0.2, 0.2, 0.2, 0.2, 0.2]])
    D = torch.full((2, 5), 0.25)
    dist = score_rerank(S, lambda qi, gi: D[qi, gi], 2)
    # top-2 by S, ties by lower column: row 0 -> {1, 0}, row 1 -> {0, 1}
    want = 3.0 - S
    want[0, [0, 1]] = 0.25
    want[1, [0, 1]] = 0.25
    torch.testing.assert_close(dist, want)


def _ccn():
    from vireid.models.ccn import CCN

    torch.manual_seed(0)
    ccn = CCN(8, (4, 2), kernel_size=(2, 2), padding=1, share_fc=False).eval()
    with torch.no_grad():
        ccn.fc.weight.mul_(20.0)
        ccn.fc_b.weight.mul_(20.0)
    return ccn


@pytest.mark.parametrize("name", ["simplified", "full", "rerank"])
def test_each_modes_topk_is_the_topk_of_its_distance(name):
    g = torch.Generator().manual_seed(4)
    q = Features(torch.randn(5, 8, 4, 2, generator=g), torch.randn(5, 8, generator=g),
                 ["ir"] * 5)
    gal = Features(torch.randn(30, 8, 4, 2, generator=g), torch.randn(30, 8, generator=g),
                   ["rgb"] * 30)
    mode = SCORING_MODES[name]
    opts = dict(ccn=_ccn(), topk=9, chunk_size=2)
    dist = mode.distance(q, gal, **opts).double().numpy()
    for k in (1, 6, 9):
        d, rows = mode.topk(q, gal, k, **opts)
        want = reference(dist, k)[1]
        np.testing.assert_array_equal(rows.numpy(), want)
        np.testing.assert_allclose(d.double().numpy(), np.take_along_axis(dist, want, 1),
                                   atol=1e-5)
    # Gallery split across ranks (one process here): the same list.
    d, rows = topk_sharded(mode, q, gal, 6, mode.context(**opts))
    np.testing.assert_array_equal(rows.numpy(), reference(dist, 6)[1])


def test_a_numpy_gallery_reads_like_a_tensor_one():
    g = np.random.default_rng(6)
    q = SimpleNamespace(G=g.normal(size=(3, 5)))                       # float64 numpy
    gal = SimpleNamespace(G=g.normal(size=(11, 5)).astype(np.float32))
    mode = SCORING_MODES["simplified"]
    d_np = mode.distance(q, gal)
    d_t = mode.distance(SimpleNamespace(G=torch.from_numpy(q.G).float()),
                        SimpleNamespace(G=torch.from_numpy(gal.G)))
    assert torch.equal(d_np, d_t)
