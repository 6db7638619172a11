"""Triplet losses of the AGW baseline (Ye et al., TPAMI 2021), on a batch holding both modalities.

Both take the features of the whole batch (visible and infrared images concatenated, as the
AGW trainer does: ``feat = cat(visible, infrared)``, ``labels = cat(l_vis, l_ir)``), so
positives and negatives are mined across and within modalities alike.

Facts of the reference code (``loss.py`` of mangye16/Cross-Modal-Re-ID-baseline), restated:

* pairwise distance: Euclidean, ``sqrt(clamp(|a|^2 + |b|^2 - 2 a.b, min=1e-12))``, so the
  anchor is its own positive at distance 1e-6;
* batch-hard triplet (``OriTripletLoss``, Hermans et al. 2017): per anchor the furthest
  positive and the closest negative, ``mean(max(0, d_ap - d_an + margin))``, margin 0.3;
* weighted regularised triplet (``TripletLoss_WRT``, AGW): per anchor a softmax-weighted
  positive distance (weights ``softmax(d)`` over positives: far positives weigh more) and a
  softmax-weighted negative distance (weights ``softmax(-d)`` over negatives: close negatives
  weigh more); loss ``mean(softplus(d_p - d_n))`` (``SoftMarginLoss`` with target 1), no
  margin. The softmax subtracts the row maximum of ``d * mask`` and adds 1e-6 to the
  normaliser (as the reference). No feature normalisation by default (reference default).

Both return ``(loss, correct)``: the scalar loss and the number of anchors whose weighted /
hardest negative is at least as far as the positive (the reference's accuracy count).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["pairwise_euclidean", "batch_hard_triplet", "weighted_regularized_triplet",
           "BatchHardTripletLoss", "WeightedRegularizedTripletLoss"]

#: The AGW baseline's margin of the batch-hard triplet loss.
DEFAULT_MARGIN = 0.3


def pairwise_euclidean(x: Tensor, y: Tensor) -> Tensor:
    """``(M, D), (N, D) -> (M, N)``: ``sqrt(clamp(|x|^2 + |y|^2 - 2 x.y, min=1e-12))``."""
    sq = x.pow(2).sum(1, keepdim=True) + y.pow(2).sum(1, keepdim=True).t() - 2.0 * x @ y.t()
    return sq.clamp(min=1e-12).sqrt()


def _check(feats: Tensor, labels: Tensor) -> None:
    if feats.ndim != 2:
        raise ValueError(f"triplet loss expects features (B, D), got shape {tuple(feats.shape)}")
    if labels.shape != (feats.shape[0],):
        raise ValueError(f"triplet loss expects labels ({feats.shape[0]},), got "
                         f"{tuple(labels.shape)}")


def batch_hard_triplet(feats: Tensor, labels: Tensor, margin: float = DEFAULT_MARGIN
                       ) -> tuple[Tensor, int]:
    """Batch-hard triplet loss. feats: (B, D); labels: (B,). Returns (loss, correct).

    Every anchor needs a negative in the batch (a batch of one identity raises ValueError).
    """
    _check(feats, labels)
    dist = pairwise_euclidean(feats, feats)
    same = labels[:, None] == labels[None, :]
    if bool(same.all(dim=1).any()):
        raise ValueError("batch-hard triplet loss: some anchor has no negative in the batch "
                         "(the batch needs at least two identities)")
    d_ap = dist.masked_fill(~same, float("-inf")).max(dim=1).values
    d_an = dist.masked_fill(same, float("inf")).min(dim=1).values
    loss = F.relu(d_ap - d_an + margin).mean()
    return loss, int((d_an >= d_ap).sum().item())


def _softmax_weights(d: Tensor, mask: Tensor) -> Tensor:
    """Reference softmax over the masked entries of each row (mask float 0/1)."""
    max_v = (d * mask).max(dim=1, keepdim=True).values
    e = torch.exp(d - max_v) * mask
    return e / (e.sum(dim=1, keepdim=True) + 1e-6)


def weighted_regularized_triplet(feats: Tensor, labels: Tensor, normalize_feature: bool = False
                                 ) -> tuple[Tensor, int]:
    """AGW's weighted regularised triplet loss. feats: (B, D); labels: (B,).

    Returns (loss, correct). ``normalize_feature`` L2-normalises the rows first (reference
    option, default off).
    """
    _check(feats, labels)
    if normalize_feature:
        feats = feats / (feats.norm(dim=1, keepdim=True) + 1e-12)
    dist = pairwise_euclidean(feats, feats)
    is_pos = (labels[:, None] == labels[None, :]).to(dist.dtype)
    is_neg = 1.0 - is_pos
    d_ap = dist * is_pos
    d_an = dist * is_neg
    w_ap = _softmax_weights(d_ap, is_pos)
    w_an = _softmax_weights(-d_an, is_neg)
    furthest_pos = (d_ap * w_ap).sum(dim=1)
    closest_neg = (d_an * w_an).sum(dim=1)
    loss = F.softplus(furthest_pos - closest_neg).mean()  # SoftMarginLoss(x, y=1)
    return loss, int((closest_neg >= furthest_pos).sum().item())


class BatchHardTripletLoss(nn.Module):
    """Module form of :func:`batch_hard_triplet` (margin default 0.3, AGW's)."""

    def __init__(self, margin: float = DEFAULT_MARGIN):
        super().__init__()
        self.margin = float(margin)

    def forward(self, feats: Tensor, labels: Tensor) -> tuple[Tensor, int]:
        return batch_hard_triplet(feats, labels, self.margin)


class WeightedRegularizedTripletLoss(nn.Module):
    """Module form of :func:`weighted_regularized_triplet`."""

    def __init__(self, normalize_feature: bool = False):
        super().__init__()
        self.normalize_feature = bool(normalize_feature)

    def forward(self, feats: Tensor, labels: Tensor) -> tuple[Tensor, int]:
        return weighted_regularized_triplet(feats, labels, self.normalize_feature)
