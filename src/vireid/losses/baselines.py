"""Baseline losses of the paper's Table I, trained on the same DSCSN as the method.

The paper (Sec. IV-C) compares its PBCE + ID objective with four losses that use no
contrastive features, and with its own objective without the ID term:

* **VL** — verification loss on pairs of global features (the paper's ref. [35], the
  "square layer" verification of Zheng et al.): one FC on the element-wise squared
  difference (G_R − G_I)² of a pair → sigmoid → binary cross-entropy.
* **RKL** — the bi-directional dual-constrained top-ranking loss of BDTR (ref. [16]) on the
  global features: for every anchor of either modality, its hardest cross-modality positive
  against its hardest cross-modality negative and (dual constraint) its hardest
  same-modality negative, with a margin.
* **KVL** — the verification loss moved onto the contrastive kernels K_RI = |K_R − K_I|:
  kernels pooled over their hK×wK window → one FC → sigmoid → BCE.
* **IDL** — the ID loss (Eqs. 9–11) alone: :func:`vireid.losses.paper.id_loss`.
* **Ours w/o ID** (``ccn-noid``) — the PBCE loss (Eq. 8) alone: :func:`vireid.losses.paper.pbce_loss`.

Label convention everywhere: target 0 = same person, 1 = different people, as in Eq. (8); a
verification head's sigmoid output is therefore a *difference* probability, like D_RI.

The trainer reaches these losses through the one loss registry,
:mod:`vireid.losses.registry` (``loss.kind`` = ``vl``, ``rkl``, ``kvl``), which also builds the
learnable heads and puts them on the model as ``model.baseline_head``.

Choices the paper leaves open (named, with their defaults):

* VL / KVL heads are ``nn.Linear`` with bias; VL uses the squared difference (``"square"``,
  ref. [35]); ``VerificationHead(diff="abs")`` gives |G_R − G_I| instead.
* RKL distances are Euclidean between L2-normalised global features (``normalize=True``,
  as BDTR normalises its embedding); margin ρ = ``cfg.loss.rank_margin`` (0.5) for both the
  cross- and intra-modality constraints; anchors are averaged, the two directions summed.
* Baselines carry no ID term (pure losses, as in Table I where IDL is its own row).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import torch
import torch.nn.functional as nnf
from torch import Tensor, nn

from vireid.errors import ConfigError
from vireid.models.ccn import num_kernels, sample_kernels


# --------------------------------------------------------------------------------------------
# Heads
# --------------------------------------------------------------------------------------------

class VerificationHead(nn.Module):
    """VL head: logit s = w · φ(G_a − G_b) + β, φ(x) = x² (``diff="square"``) or |x|.

    forward(ga (M, C), gb (M, C)) -> s (M,), pre-sigmoid "different people" score.
    """

    def __init__(self, channels: int, diff: str = "square") -> None:
        super().__init__()
        if diff not in ("square", "abs"):
            raise ConfigError(f"VerificationHead diff: expected 'square' or 'abs', found {diff!r}")
        self.diff = diff
        self.fc = nn.Linear(int(channels), 1)

    def forward(self, ga: Tensor, gb: Tensor) -> Tensor:
        d = ga - gb
        d = d * d if self.diff == "square" else d.abs()
        return self.fc(d).squeeze(1)


class KernelVerificationHead(nn.Module):
    """KVL head on contrastive kernels.

    For a pair with maps Fa, Fb (C×h×w): kernels K^a, K^b (n×C×hK×wK, Algorithm 1),
    P[k, c] = mean_{p,q} |K^a_k − K^b_k|[c, p, q], logit s = w · vec(P) + β (vec over (k, c)).

    forward(fa (Ba, C, h, w), fb (Bb, C, h, w), ia (M,), ib (M,)) -> s (M,).
    """

    def __init__(self, channels: int, feat_hw: Sequence[int], kernel_size: Sequence[int] = (3, 3),
                 stride: Sequence[int] = (1, 1)) -> None:
        super().__init__()
        self.channels = int(channels)
        self.kernel_size = (int(kernel_size[0]), int(kernel_size[1]))
        self.stride = (int(stride[0]), int(stride[1]))
        h, w = int(feat_hw[0]), int(feat_hw[1])
        self.num_kernels = num_kernels(h, w, self.kernel_size, self.stride)
        if self.num_kernels == 0:
            raise ConfigError(f"ccn.kernel_size {self.kernel_size} does not fit the {h}x{w} map")
        self.fc = nn.Linear(self.num_kernels * self.channels, 1)

    def pooled(self, fa: Tensor, fb: Tensor, ia: Tensor, ib: Tensor) -> Tensor:
        """P: (M, n, C), the window-mean of |K^a − K^b| for each pair."""
        ka = sample_kernels(fa, self.kernel_size, self.stride)  # (Ba, n, C, hK, wK)
        kb = sample_kernels(fb, self.kernel_size, self.stride)
        return (ka[ia] - kb[ib]).abs().mean(dim=(3, 4))

    def forward(self, fa: Tensor, fb: Tensor, ia: Tensor, ib: Tensor) -> Tensor:
        return self.fc(self.pooled(fa, fb, ia, ib).flatten(1)).squeeze(1)


# --------------------------------------------------------------------------------------------
# Losses on tensors
# --------------------------------------------------------------------------------------------

def verification_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Binary cross-entropy of pair logits (VL and KVL).

    logits: (M,) pre-sigmoid "different" scores; target: (M,) 0 = same, 1 = different.
    L = −(1/M) Σ_m [t_m log σ(s_m) + (1 − t_m) log(1 − σ(s_m))].
    """
    return nnf.binary_cross_entropy_with_logits(logits, target.to(logits.dtype))


def _hard_ranking(anchor: Tensor, other: Tensor, la: Tensor, lo: Tensor, margin: float,
                  same: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
    """Top-ranking hinge of each anchor: hardest positive in ``other`` against the hardest
    negative in ``other`` (and, if ``same`` is given, also against the hardest negative among
    the anchors' own modality ``same`` = anchor set). Returns (sum of hinges, #valid anchors).

    anchor: (Na, C); other: (No, C); la: (Na,), lo: (No,) labels.
    """
    d_cross = torch.cdist(anchor, other)  # (Na, No)
    pos = la[:, None] == lo[None, :]
    inf = torch.finfo(d_cross.dtype).max
    hardest_pos = torch.where(pos, d_cross, torch.full_like(d_cross, -inf)).max(dim=1).values
    hardest_neg = torch.where(~pos, d_cross, torch.full_like(d_cross, inf)).min(dim=1).values
    valid = pos.any(dim=1) & (~pos).any(dim=1)
    total = nnf.relu(margin + hardest_pos - hardest_neg)[valid].sum()
    count = valid.sum()
    if same is not None:
        d_intra = torch.cdist(anchor, same)
        neg_i = la[:, None] != la[None, :]
        hardest_neg_i = torch.where(neg_i, d_intra, torch.full_like(d_intra, inf)).min(dim=1).values
        valid_i = pos.any(dim=1) & neg_i.any(dim=1)
        total = total + nnf.relu(margin + hardest_pos - hardest_neg_i)[valid_i].sum()
        count = count + valid_i.sum()
    return total, count


def ranking_loss(g_rgb: Tensor, g_ir: Tensor, labels_rgb: Tensor, labels_ir: Tensor,
                 margin: float = 0.5, intra: bool = True, normalize: bool = True) -> Tensor:
    """RKL: BDTR's bi-directional dual-constrained top-ranking loss (ref. [16]).

    g_rgb: (Nr, C), g_ir: (Ni, C) global features; labels_*: (Nr,), (Ni,).
    With d(x, y) = ‖x̂ − ŷ‖₂ (x̂ = x/‖x‖ when ``normalize``) and [z]₊ = max(z, 0):

        L = (1/V) [ Σ_{R_i} [ρ + max_{I_j: y_j = y_i} d(R_i, I_j) − min_{I_j: y_j ≠ y_i} d(R_i, I_j)]₊
                  + Σ_{I_i} [ρ + max_{R_j: y_j = y_i} d(I_i, R_j) − min_{R_j: y_j ≠ y_i} d(I_i, R_j)]₊
                  + (intra) Σ_{R_i} [ρ + max_{I_j: y_j = y_i} d(R_i, I_j) − min_{R_k: y_k ≠ y_i} d(R_i, R_k)]₊
                  + (intra) Σ_{I_i} [ρ + max_{R_j: y_j = y_i} d(I_i, R_j) − min_{I_k: y_k ≠ y_i} d(I_i, I_k)]₊ ]

    where V is the number of terms (anchors with at least one positive and one negative).
    Returns a scalar (0 when no anchor is valid).
    """
    if normalize:
        g_rgb = nnf.normalize(g_rgb, dim=1)
        g_ir = nnf.normalize(g_ir, dim=1)
    s1, c1 = _hard_ranking(g_rgb, g_ir, labels_rgb, labels_ir, margin, g_rgb if intra else None)
    s2, c2 = _hard_ranking(g_ir, g_rgb, labels_ir, labels_rgb, margin, g_ir if intra else None)
    count = (c1 + c2).clamp(min=1).to(g_rgb.dtype)
    return (s1 + s2) / count
