"""Triplet losses against hand-worked examples (1-D features, so every distance is |a - b|)."""
from __future__ import annotations

import math

import pytest
import torch

from vireid.losses.triplet import (
    BatchHardTripletLoss,
    WeightedRegularizedTripletLoss,
    batch_hard_triplet,
    pairwise_euclidean,
    weighted_regularized_triplet,
)

# Batch = visible [0 (id 0), 3 (id 1)] + infrared [1 (id 0), 5 (id 1)].
FEATS = torch.tensor([[0.0], [3.0], [1.0], [5.0]], dtype=torch.float64)
LABELS = torch.tensor([0, 1, 0, 1])
EPS_SELF = 1e-6  # sqrt(clamp(0, min=1e-12)): the anchor's distance to itself


def test_pairwise_euclidean_hand_values():
    d = pairwise_euclidean(FEATS, FEATS)
    want = torch.tensor([[EPS_SELF, 3, 1, 5], [3, EPS_SELF, 2, 2],
                         [1, 2, EPS_SELF, 4], [5, 2, 4, EPS_SELF]], dtype=torch.float64)
    torch.testing.assert_close(d, want)


def test_batch_hard_hand_example():
    # anchor 0: hardest positive 1 (the IR image), hardest negative 3 -> max(0, 1-3+.3) = 0
    # anchor 3: positive 5 at 2, negatives 0 at 3 and 1 at 2      -> max(0, 2-2+.3) = .3
    # anchor 1: positive 0 at 1, negatives at 2 and 4             -> 0
    # anchor 5: positive 3 at 2, negatives at 5 and 4             -> 0
    loss, correct = batch_hard_triplet(FEATS, LABELS, margin=0.3)
    assert loss.item() == pytest.approx(0.3 / 4)
    assert correct == 4  # d_an >= d_ap for all (anchor 3 ties at 2)
    loss, _ = BatchHardTripletLoss(margin=1.5)(FEATS, LABELS)
    # anchor0 1-3+1.5 < 0 -> 0, anchor3 2-2+1.5 = 1.5, anchor1 1-2+1.5 = .5, anchor5 2-4+1.5 < 0
    assert loss.item() == pytest.approx(2.0 / 4)


def _softmax_ref(values, masked_zero_count):
    """Reference softmax: shift by max over the row of d*mask (masked entries count as 0)."""
    max_v = max(values + [0.0] * masked_zero_count)
    e = [math.exp(v - max_v) for v in values]
    z = sum(e) + 1e-6
    return [x / z for x in e]


def test_wrt_hand_example():
    rows = {  # anchor: (positive distances incl. self, negative distances)
        0: ([EPS_SELF, 1.0], [3.0, 5.0]),
        1: ([EPS_SELF, 2.0], [3.0, 2.0]),
        2: ([1.0, EPS_SELF], [2.0, 4.0]),
        3: ([2.0, EPS_SELF], [5.0, 4.0]),
    }
    total = 0.0
    for pos, neg in rows.values():
        wp = _softmax_ref(pos, 2)
        wn = _softmax_ref([-d for d in neg], 2)
        dp = sum(w * d for w, d in zip(wp, pos))
        dn = sum(w * d for w, d in zip(wn, neg))
        total += math.log1p(math.exp(dp - dn))
    loss, correct = weighted_regularized_triplet(FEATS, LABELS)
    assert loss.item() == pytest.approx(total / 4, rel=1e-9)
    assert correct == 4


def test_wrt_weights_favour_far_positives_and_close_negatives():
    # One anchor, positives at 1 and 4, negatives at 2 and 10: weighted positive lies closer
    # to 4 than the mean, weighted negative closer to 2 than the mean.
    f = torch.tensor([[0.0], [1.0], [4.0], [2.0], [10.0]], dtype=torch.float64)
    y = torch.tensor([0, 0, 0, 1, 1])
    d = pairwise_euclidean(f, f)
    pos = (y[:, None] == y[None, :]).double()
    from vireid.losses.triplet import _softmax_weights
    wp = _softmax_weights(d * pos, pos)[0]
    assert wp[2] > wp[1] > wp[0]
    neg = 1 - pos
    wn = _softmax_weights(-(d * neg), neg)[0]
    assert wn[3] > wn[4]


def test_losses_backpropagate_and_modules_match_functions():
    torch.manual_seed(0)
    f = torch.randn(8, 5, requires_grad=True)
    y = torch.tensor([0, 0, 1, 1, 0, 0, 1, 1])
    loss, _ = WeightedRegularizedTripletLoss()(f, y)
    loss.backward()
    assert f.grad is not None and torch.isfinite(f.grad).all() and f.grad.abs().sum() > 0
    l2, _ = weighted_regularized_triplet(f, y)
    assert l2.item() == pytest.approx(loss.item())
    ln, _ = weighted_regularized_triplet(f, y, normalize_feature=True)
    ln2, _ = weighted_regularized_triplet(f / f.norm(dim=1, keepdim=True), y)
    assert ln.item() == pytest.approx(ln2.item(), rel=1e-5)


def test_bad_inputs():
    with pytest.raises(ValueError, match="two identities"):
        batch_hard_triplet(FEATS, torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="labels"):
        weighted_regularized_triplet(FEATS, torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(B, D\)"):
        batch_hard_triplet(FEATS[:, 0], LABELS)
