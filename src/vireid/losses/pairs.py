"""Which RGB–IR pairs the PBCE loss sees (``loss.pbce_negatives``; not in the paper).

The paper's batch (Sec. III-D) pairs each RGB image R_k with its IR image I_k (positive) and
with r IR images of other identities drawn at random (negatives; ``data.neg_ratio`` = r,
:func:`vireid.data.sampler.build_pairs`). Random negatives are mostly easy: the CCN learns to
reject pairs that the global feature G already ranks far apart, while ranking is decided
among the few gallery images G ranks close to the query (issue 24, item 5 of
docs/reproduction.md). ``hard`` keeps the positives and replaces the negatives of R_k by the
r IR images of other identities in the batch whose G is most similar to R_k's (cosine, no
gradient through the choice), the pairs a re-ranking has to order.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as nnf
from torch import Tensor

#: (g_rgb (N, C), g_ir (N, C), y_rgb (N,), y_ir (N,), sampled (ia, ib, target), r)
#: -> (ia, ib, target) of the pairs the loss sees.
PairChoice = Callable[[Tensor, Tensor, Tensor, Tensor, tuple[Tensor, Tensor, Tensor], int],
                      tuple[Tensor, Tensor, Tensor]]


def sampled_pairs(g_rgb: Tensor, g_ir: Tensor, y_rgb: Tensor, y_ir: Tensor,
                  sampled: tuple[Tensor, Tensor, Tensor], neg_ratio: int
                  ) -> tuple[Tensor, Tensor, Tensor]:
    """The pairs the data pipeline drew (the paper's random negatives), unchanged."""
    return sampled


def hardest_negative_pairs(g_rgb: Tensor, g_ir: Tensor, y_rgb: Tensor, y_ir: Tensor,
                           sampled: tuple[Tensor, Tensor, Tensor], neg_ratio: int
                           ) -> tuple[Tensor, Tensor, Tensor]:
    """N positives (R_k, I_k) and, for each k, the ``neg_ratio`` IR images I_j with
    y_ir[j] ≠ y_rgb[k] of highest cosine(G_R_k, G_I_j); equal similarities by lower j.
    Fewer when the batch has fewer other identities. Returns ia, ib (M,) long and target
    (M,) float (0 = same, 1 = different), positives first, then negatives grouped by k."""
    n = g_rgb.shape[0]
    dev = g_rgb.device
    pos = torch.arange(n, device=dev)
    with torch.no_grad():
        sim = nnf.normalize(g_rgb.detach().float(), dim=1) @ nnf.normalize(
            g_ir.detach().float(), dim=1).t()                                   # (N, N)
        other = y_rgb.reshape(-1, 1) != y_ir.reshape(1, -1)
        sim = sim.masked_fill(~other, float("-inf"))
        k = min(int(neg_ratio), n - 1)
        if k <= 0:
            ia, ib = pos, pos
        else:
            # a stable descending sort: equal similarities keep the lower column first
            order = torch.sort(sim, dim=1, descending=True, stable=True).indices[:, :k]
            keep = torch.gather(other, 1, order)
            ia = torch.cat([pos, pos.repeat_interleave(k)[keep.reshape(-1)]])
            ib = torch.cat([pos, order.reshape(-1)[keep.reshape(-1)]])
    target = (y_rgb[ia] != y_ir[ib]).float()
    return ia, ib, target


#: ``loss.pbce_negatives`` -> how the RGB–IR pairs of PBCE are chosen.
PBCE_NEGATIVES: dict[str, PairChoice] = {"random": sampled_pairs, "hard": hardest_negative_pairs}
