"""Scoring plug-ins: simplified = cosine, rerank keeps the simplified order beyond top-K and
the full-mode order within it, distances are lower-is-closer."""
import math
from types import SimpleNamespace

import pytest
import torch

from vireid.errors import CheckpointError, ConfigError
from vireid.scoring import scorers as scoring


def test_simplified_is_cosine_by_hand():
    q = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    g = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-6.0, -8.0]])
    s = scoring.score_simplified(q, g, chunk_size=1)
    expected = torch.tensor([[0.6, 0.8, -1.0], [0.0, 0.0, 0.0]])
    torch.testing.assert_close(s, expected)
    d = scoring.get_scoring("simplified").distance(SimpleNamespace(G=q), SimpleNamespace(G=g))
    torch.testing.assert_close(d, -expected)


def test_simplified_matches_loop():
    g = torch.Generator().manual_seed(0)
    q, gal = torch.randn(7, 5, generator=g), torch.randn(4, 5, generator=g)
    s = scoring.score_simplified(q, gal, chunk_size=3)
    for i in range(7):
        for j in range(4):
            ref = float(q[i] @ gal[j]) / math.sqrt(float(q[i] @ q[i]) * float(gal[j] @ gal[j]))
            assert abs(float(s[i, j]) - ref) < 1e-5


def _pair_table(D):
    calls = []

    def fn(qi, gi):
        calls.append((qi.clone(), gi.clone()))
        return D[qi, gi]

    return fn, calls


@pytest.mark.parametrize("k", [1, 2, 4, 6, 50])
def test_rerank_orders(k):
    g = torch.Generator().manual_seed(k)
    S = torch.rand(5, 6, generator=g) * 2 - 1
    D = torch.rand(5, 6, generator=g)
    fn, calls = _pair_table(D)
    dist = scoring.score_rerank(S, fn, k)
    kk = min(k, 6)
    assert len(calls) == 1 and calls[0][0].numel() == 5 * kk  # only top-K pairs are scored
    for q in range(5):
        top = set(torch.argsort(-S[q])[:kk].tolist())
        order = torch.argsort(dist[q]).tolist()
        head, tail = order[:kk], order[kk:]
        assert set(head) == top
        assert head == sorted(top, key=lambda j: float(D[q, j]))       # full order inside
        assert tail == sorted(tail, key=lambda j: -float(S[q, j]))     # simplified order behind
    if kk == 6:
        torch.testing.assert_close(dist, D)


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_rerank_and_full_scorers_against_literal_loop(backend):
    from test_fastccn import make_params, reference  # the literal per-pair loop

    p = make_params(3, (6, 4), stride=(1, 2), shared=False)
    g = torch.Generator().manual_seed(7)
    q = SimpleNamespace(F=torch.randn(4, 3, 6, 4, generator=g), G=torch.randn(4, 3, generator=g))
    gal = SimpleNamespace(F=torch.randn(5, 3, 6, 4, generator=g), G=torch.randn(5, 3, generator=g))
    ref = reference(p, q.F, gal.F, "b")
    full = scoring.get_scoring("full").distance(q, gal, ccn=p, chunk_size=3, backend=backend)
    torch.testing.assert_close(full.double(), ref, rtol=1e-4, atol=0)
    S = scoring.score_simplified(q.G, gal.G)
    dist = scoring.get_scoring("rerank").distance(q, gal, ccn=p, topk=2, backend=backend)
    top = torch.topk(S, 2, dim=1).indices
    for i in range(4):
        for j in range(5):
            if j in top[i].tolist():
                assert abs(float(dist[i, j]) - float(ref[i, j])) <= 1e-4 * float(ref[i, j])
            else:
                assert abs(float(dist[i, j]) - (3.0 - float(S[i, j]))) < 1e-6


def test_columns_for_and_union():
    union = scoring.union_paths(["a", "b"], ["b", "c"], ["a"])
    assert union == ["a", "b", "c"]
    cols = scoring.columns_for(["c", "a"], union)
    assert cols.tolist() == [2, 0]
    full = torch.arange(6.0).reshape(2, 3)
    torch.testing.assert_close(full[:, cols], torch.tensor([[2.0, 0.0], [5.0, 3.0]]))
    with pytest.raises(CheckpointError, match="'z'"):
        scoring.columns_for(["z"], union)


def test_registry_and_errors():
    assert {"simplified", "full", "rerank"} <= set(scoring.SCORING_MODES)
    with pytest.raises(ConfigError, match="simplified"):
        scoring.get_scoring("nope")
    with pytest.raises(ConfigError, match="topk"):
        scoring.score_rerank(torch.zeros(2, 2), lambda a, b: a.float(), 0)
