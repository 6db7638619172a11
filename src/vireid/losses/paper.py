"""Training losses: PBCE (Eq. 8), ID loss (Eqs. 9–11) and their sum.

Baseline losses of the paper's Table I (VL, RKL, KVL) belong in this module too; they are
added separately.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as nnf
from torch import Tensor

#: Default weight λ of the ID loss (paper Sec. IV, Table VII).
DEFAULT_ID_WEIGHT = 0.1

_LOG2 = math.log(2.0)


def log_difference_scores(la: Tensor, lb: Tensor) -> tuple[Tensor, Tensor]:
    """log D and log(1 − D) for D = (σ(la) + σ(lb)) / 2, without overflow.

    log D = logsumexp(log σ(la), log σ(lb)) − log 2 and
    1 − D = (σ(−la) + σ(−lb)) / 2, so log(1 − D) = logsumexp(log σ(−la), log σ(−lb)) − log 2.
    Both stay finite for any finite la, lb (even ±1e4), unlike log of a saturated sigmoid.
    la, lb: (M,) -> two (M,) tensors.
    """
    log_d = torch.logaddexp(nnf.logsigmoid(la), nnf.logsigmoid(lb)) - _LOG2
    log_1md = torch.logaddexp(nnf.logsigmoid(-la), nnf.logsigmoid(-lb)) - _LOG2
    return log_d, log_1md


def pbce_loss(la: Tensor, lb: Tensor, labels: Tensor) -> Tensor:
    """Pairwise binary cross-entropy, Eq. (8).

    la, lb: (M,) pre-sigmoid scores of the two directions (CCN.logits); labels: (M,) with
    0 = same person, 1 = different people (any float/int/bool dtype).
    L = −(1/M) Σ [l·log D + (1 − l)·log(1 − D)], D = (σ(la) + σ(lb)) / 2.
    """
    log_d, log_1md = log_difference_scores(la, lb)
    lab = labels.to(log_d.dtype)
    return -(lab * log_d + (1.0 - lab) * log_1md).mean()


def id_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Softmax cross-entropy of the shared ID classifier, Eqs. (9)–(11).

    logits: (2N, K) for the RGB and IR images of a batch; targets: (2N,) labels 0..K−1.
    Mean over the 2N images.
    """
    return nnf.cross_entropy(logits, targets)


def total_loss(la: Tensor, lb: Tensor, pair_labels: Tensor, id_logits: Tensor,
               id_targets: Tensor, id_weight: float = DEFAULT_ID_WEIGHT) -> dict[str, Tensor]:
    """L = L_PBCE + λ·L_ID (λ = ``id_weight``, default 0.1).

    Returns {"loss": total, "pbce": L_PBCE, "id": L_ID} (scalar tensors; "loss" carries grad).
    """
    pbce = pbce_loss(la, lb, pair_labels)
    idl = id_loss(id_logits, id_targets)
    return {"loss": pbce + id_weight * idl, "pbce": pbce, "id": idl}
