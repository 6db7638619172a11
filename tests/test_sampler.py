"""Cross-modality identity sampler and pair builder."""
from __future__ import annotations

from collections import Counter
from itertools import islice

import pytest
import torch

from vireid.data.sampler import CrossModalitySampler, build_pairs
from vireid.errors import DataError


def _labels():
    # 10 identities with both modalities (0..9), id 10 RGB-only, id 11 IR-only.
    rgb = [p for p in range(11) for _ in range(3 + p % 2)]
    ir = [p for p in list(range(10)) + [11] for _ in range(2 + p % 3)]
    return rgb, ir


def _sampler(**kw):
    rgb, ir = _labels()
    args = dict(num_ids=4, iters_per_epoch=7, seed=3)
    args.update(kw)
    return CrossModalitySampler(rgb, ir, **args)


def test_batches_are_valid():
    rgb, ir = _labels()
    s = _sampler()
    batches = list(s)
    assert len(batches) == len(s) == 7
    for batch in batches:
        assert len(batch) == 4
        ids = [rgb[r] for r, _ in batch]
        assert len(set(ids)) == 4  # N distinct identities
        assert ids == [ir[i] for _, i in batch]  # one RGB and one IR image of each
        assert not set(ids) & {10, 11}  # only identities with both modalities
    # Identities are drawn evenly: 28 draws over 10 ids → each 2 or 3 times.
    counts = Counter(rgb[r] for b in batches for r, _ in b)
    assert set(counts) == set(range(10)) and max(counts.values()) - min(counts.values()) <= 1


def test_reproducible_and_seed_dependent():
    a, b, c = _sampler(), _sampler(), _sampler(seed=4)
    first = [list(a), list(a)]  # two epochs
    assert first == [list(b), list(b)]
    assert first[0] != first[1]
    assert list(c) != first[0]


def test_resume_continues_the_same_stream():
    ref = _sampler()
    stream = list(ref) + list(ref)
    s = _sampler()
    head = list(islice(iter(s), 3))
    state = s.state_dict()
    assert state["epoch"] == 0 and state["position"] == 3
    resumed = _sampler()
    resumed.load_state_dict(state)
    rest = list(resumed) + list(resumed)
    assert head + rest[:4] == stream[:7]
    assert rest[4:] == stream[7:]
    # A trainer that consumed fewer batches than were prefetched saves its own position.
    t = _sampler()
    it = iter(t)
    next(it), next(it), next(it)
    r2 = _sampler()
    r2.load_state_dict(t.state_dict(position=1))
    assert list(r2) == stream[1:7]


def test_ddp_ranks_take_disjoint_slices_of_the_global_batch():
    full = list(_sampler())
    parts = [list(_sampler(rank=r, world_size=2)) for r in range(2)]
    for b, batch in enumerate(full):
        assert parts[0][b] + parts[1][b] == batch
        assert not set(parts[0][b]) & set(parts[1][b])


def test_too_few_identities():
    with pytest.raises(DataError, match="11"):
        _sampler(num_ids=11)


@pytest.mark.parametrize("n,r", [(6, 3), (4, 3), (5, 0), (3, 4)])
def test_build_pairs(n, r):
    labels = torch.arange(100, 100 + n)
    ia, ib, target = build_pairs(labels, labels, r, torch.Generator().manual_seed(0))
    assert len(ia) == len(ib) == len(target) == n + r * n
    assert torch.equal(ia[:n], torch.arange(n)) and torch.equal(ib[:n], torch.arange(n))
    assert (target[:n] == 0).all() and (target[n:] == 1).all()
    assert (ia[n:] != ib[n:]).all()  # negatives (R_k, I_j), j ≠ k
    assert Counter(ia[n:].tolist()) == ({k: r for k in range(n)} if r else Counter())
    if r <= n - 1:  # distinct partners per k
        for k in range(n):
            partners = ib[n:][ia[n:] == k].tolist()
            assert len(set(partners)) == r
    again = build_pairs(labels, labels, r, torch.Generator().manual_seed(0))
    assert all(torch.equal(x, y) for x, y in zip((ia, ib, target), again))


def test_build_pairs_labels_come_from_identities():
    # A repeated identity at positions 0 and 2: the (R_0, I_2) "negative" is a same-person pair.
    lab = torch.tensor([5, 6, 5])
    ia, ib, target = build_pairs(lab, lab, 2, torch.Generator().manual_seed(1))
    for a, b, t in zip(ia.tolist(), ib.tolist(), target.tolist()):
        assert t == float(lab[a] != lab[b])
    assert target.sum() == 4  # pairs (0,1), (1,0), (1,2), (2,1)
