"""The one registry of training losses: ``loss.kind`` → how to compute it from one step.

Every kind takes the same inputs, a :class:`StepBatch` (the feature maps, global features,
labels and pairs of one iteration) and the model (for its CCN, ID classifier or baseline
head), and returns ``(loss with grad, {component name: scalar tensor})``. The components are
logged by the trainer (``metrics.jsonl``).

Kinds:

* ``ccn``       the paper: L_PBCE + λ·L_ID (Eqs. 8–11).
* ``ccn-noid``  PBCE only (the paper's "Ours w/o ID").
* ``idl``, ``vl``, ``rkl``, ``kvl``  the Table I baselines (:mod:`vireid.losses.baselines`).
* ``agw``       AGW's objective (not in the paper): L_ID + L_WRT, the weighted regularised
  triplet loss on the global features before the BNNeck, the ID loss on the classifier's
  logits of the BN'd feature (``model.bnneck``), weights 1 and 1 as AGW's ``train.py``.
* ``triplet``   L_ID + batch-hard triplet (margin ``loss.triplet_margin``, AGW's 0.3).
* ``agw+pbce``  L_ID + L_WRT + ``loss.pbce_weight``·L_PBCE: AGW trained jointly with the CCN
  head, so full / rerank scoring work on an AGW model.

Triplet kinds mine positives and negatives over all 2N (or, with
``data.same_modality_pairs``, 4N) images of the batch, both modalities together, as AGW does.

A kind may need a learnable head (VL, KVL); :func:`attach_loss_head` builds it from the
model's geometry and puts it on the model as ``model.baseline_head``, so that the optimizer
trains it and checkpoints hold it. Other code adds kinds with :func:`register_loss`.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from torch import Tensor, nn

from vireid.errors import ConfigError
from vireid.losses import paper as P
from vireid.losses.baselines import (KernelVerificationHead, VerificationHead, ranking_loss,
                                     verification_loss)
from vireid.losses.triplet import batch_hard_triplet, weighted_regularized_triplet
from vireid.utils.registry import Registry


@dataclass
class StepBatch:
    """Everything a loss needs from one iteration.

    F_rgb, F_ir: (N, C, h, w); G_rgb, G_ir: (N, C); y_rgb, y_ir: (N,) labels;
    ia, ib: (M,) pair indices into the RGB / IR batch; target: (M,) 0 = same, 1 = different.
    same_modality (open set, data.same_modality_pairs): {"rgb-rgb": (ia, ib, target) into
    F_rgb on both sides, "ir-ir": the same into F_ir}; F_rgb etc. then hold 2N rows (the N
    first draws, then the N second draws) and ia/ib above index the first N.
    """

    F_rgb: Tensor
    G_rgb: Tensor
    F_ir: Tensor
    G_ir: Tensor
    y_rgb: Tensor
    y_ir: Tensor
    ia: Tensor
    ib: Tensor
    target: Tensor
    same_modality: dict[str, tuple[Tensor, Tensor, Tensor]] = field(default_factory=dict)


#: loss(model, batch, cfg) -> (scalar loss with grad, {component name: scalar tensor}).
LossFn = Callable[[nn.Module, StepBatch, Any], tuple[Tensor, dict[str, Tensor]]]
#: head(cfg, model) -> the learnable module the loss needs.
HeadFn = Callable[[Any, nn.Module], nn.Module]


@dataclass(frozen=True)
class LossSpec:
    """One registered loss kind."""

    fn: LossFn
    head: Optional[HeadFn] = None  # builds model.baseline_head (VL, KVL)
    same_modality: bool = False  # handles the open set's same-modality pairs
    trains_ccn: bool = False  # the CCN's W_D gets a training signal (full scoring is meaningful)
    #: weight of each logged component in the total loss (for gradient diagnostics);
    #: components not listed weigh 1 (accuracies carry no gradient).
    part_weights: Optional[Callable[[Any], dict[str, float]]] = None


#: ``loss.kind`` → :class:`LossSpec`.
LOSSES: Registry[LossSpec] = Registry("loss", "loss.kind")


def register_loss(kind: str, head: Optional[HeadFn] = None, same_modality: bool = False,
                  trains_ccn: bool = False,
                  part_weights: Optional[Callable[[Any], dict[str, float]]] = None,
                  replace: bool = False) -> Callable[[LossFn], LossFn]:
    """Decorator registering ``fn(model, StepBatch, cfg) -> (loss, {part: scalar})`` as
    ``loss.kind == kind`` (public: ``vireid.register_loss``).

    ``head(cfg, model)`` builds the learnable module the loss needs (put on the model as
    ``model.baseline_head``); ``same_modality``: it handles the open set's same-modality
    pairs; ``trains_ccn``: the CCN's W_D gets a training signal, so full scoring means
    something; ``part_weights(cfg)``: each logged part's weight in the total (diagnostics).
    """
    def deco(fn: LossFn) -> LossFn:
        LOSSES.register(kind, LossSpec(fn, head, same_modality, trains_ccn, part_weights),
                        replace=replace)
        return fn
    return deco


def get_loss(kind: str) -> LossSpec:
    """The registered loss ``kind``; ConfigError naming the kinds there are otherwise."""
    return LOSSES.get(kind)


def attach_loss_head(model: nn.Module, cfg: Any) -> nn.Module:
    """Put the learnable head of ``cfg.loss.kind`` (if it has one) on the model as
    ``model.baseline_head``; :func:`vireid.engine.checkpoint.load_model_from_checkpoint`
    calls this too, since the head is part of the weights."""
    spec = get_loss(cfg.loss.kind)
    if spec.head is not None:
        model.baseline_head = spec.head(cfg, model)
    return model


def pair_logits(model: nn.Module, b: StepBatch) -> tuple[Tensor, Tensor, Tensor]:
    """CCN logits la, lb (M',) and targets (M',) of every pair of the batch: the RGB–IR pairs,
    then (open set) the RGB–RGB pairs on the RGB path's maps and the IR–IR pairs on the IR
    path's maps (paper appendix: the kernels come from the pair's own feature maps)."""
    la, lb = model.ccn.logits(b.F_rgb, b.F_ir, b.ia, b.ib)
    if not b.same_modality:
        return la, lb, b.target
    las, lbs, ts = [la], [lb], [b.target]
    for name, (ia, ib, t) in b.same_modality.items():
        f = b.F_rgb if name == "rgb-rgb" else b.F_ir
        a, c = model.ccn.logits(f, f, ia, ib)
        las.append(a)
        lbs.append(c)
        ts.append(t)
    return torch.cat(las), torch.cat(lbs), torch.cat(ts)


def _id_logits(model: nn.Module, b: StepBatch) -> tuple[Tensor, Tensor]:
    logits = model.classify(torch.cat([b.G_rgb, b.G_ir], 0))  # (2N, K)
    return logits, torch.cat([b.y_rgb, b.y_ir], 0)


def pair_accuracy(la: Tensor, lb: Tensor, target: Tensor) -> dict[str, Tensor]:
    """Share of positive pairs with D < 0.5 (``acc_pos``) and of negative pairs with
    D ≥ 0.5 (``acc_neg``), D = (σ(la) + σ(lb)) / 2: a diagnostic, no gradient."""
    with torch.no_grad():
        d = (torch.sigmoid(la.float()) + torch.sigmoid(lb.float())) / 2
        same = target < 0.5
        pos = ((d < 0.5) & same).sum() / same.sum().clamp(min=1)
        neg = ((d >= 0.5) & ~same).sum() / (~same).sum().clamp(min=1)
    return {"acc_pos": pos.float(), "acc_neg": neg.float()}


def _need_ccn(cfg: Any, model: nn.Module) -> Any:
    ccn = getattr(model, "ccn", None)
    if ccn is None:
        raise ConfigError(f"loss.kind={cfg.loss.kind} needs model.ccn to know the feature-map "
                          f"geometry")
    return ccn


@register_loss("ccn", same_modality=True, trains_ccn=True,
               part_weights=lambda cfg: {"id": cfg.loss.lambda_id})
def _loss_ccn(model: nn.Module, b: StepBatch, cfg: Any) -> tuple[Tensor, dict[str, Tensor]]:
    """The paper: L_PBCE + λ·L_ID (Eqs. 8–11)."""
    la, lb, target = pair_logits(model, b)
    logits, y = _id_logits(model, b)
    parts = P.total_loss(la, lb, target, logits, y, id_weight=cfg.loss.lambda_id)
    return parts["loss"], {"pbce": parts["pbce"], "id": parts["id"],
                           **pair_accuracy(la, lb, target)}


@register_loss("ccn-noid", same_modality=True, trains_ccn=True)
def _loss_ccn_noid(model: nn.Module, b: StepBatch, cfg: Any) -> tuple[Tensor, dict[str, Tensor]]:
    """PBCE only (the paper's ablation without the ID loss)."""
    la, lb, target = pair_logits(model, b)
    pbce = P.pbce_loss(la, lb, target)
    return pbce, {"pbce": pbce, **pair_accuracy(la, lb, target)}


@register_loss("idl", same_modality=True)
def _loss_idl(model: nn.Module, b: StepBatch, cfg: Any) -> tuple[Tensor, dict[str, Tensor]]:
    """ID loss only (Table I's IDL baseline)."""
    logits, y = _id_logits(model, b)
    idl = P.id_loss(logits, y)
    return idl, {"id": idl}


@register_loss("vl", head=lambda cfg, model: VerificationHead(_need_ccn(cfg, model).channels))
def _loss_vl(model: nn.Module, b: StepBatch, cfg: Any) -> tuple[Tensor, dict[str, Tensor]]:
    """VL: BCE(σ(w·(G_R[ia] − G_I[ib])² + β), target) over the M pairs of the batch."""
    s = model.baseline_head(b.G_rgb[b.ia], b.G_ir[b.ib])
    loss = verification_loss(s, b.target)
    return loss, {"vl": loss}


@register_loss("rkl")
def _loss_rkl(model: nn.Module, b: StepBatch, cfg: Any) -> tuple[Tensor, dict[str, Tensor]]:
    """RKL: BDTR's ranking loss on G_rgb, G_ir with margin ``cfg.loss.rank_margin``."""
    loss = ranking_loss(b.G_rgb, b.G_ir, b.y_rgb, b.y_ir, float(cfg.loss.rank_margin))
    return loss, {"rkl": loss}


def _kvl_head(cfg: Any, model: nn.Module) -> nn.Module:
    ccn = _need_ccn(cfg, model)
    return KernelVerificationHead(ccn.channels, ccn.feat_hw, tuple(cfg.ccn.kernel_size),
                                  tuple(cfg.ccn.stride))


@register_loss("kvl", head=_kvl_head)
def _loss_kvl(model: nn.Module, b: StepBatch, cfg: Any) -> tuple[Tensor, dict[str, Tensor]]:
    """KVL: BCE(σ(w·vec(mean_window |K_R − K_I|) + β), target) over the M pairs."""
    s = model.baseline_head(b.F_rgb, b.F_ir, b.ia, b.ib)
    loss = verification_loss(s, b.target)
    return loss, {"kvl": loss}


def _global_batch(b: StepBatch) -> tuple[Tensor, Tensor]:
    """G of every image of the batch (RGB rows then IR rows) before any BNNeck, and labels:
    AGW's ``feat = cat(visible, infrared)``, ``labels = cat(label1, label2)``."""
    return torch.cat([b.G_rgb, b.G_ir], 0), torch.cat([b.y_rgb, b.y_ir], 0)


def _agw_terms(model: nn.Module, b: StepBatch, triplet: str, margin: float
               ) -> tuple[Tensor, dict[str, Tensor]]:
    """L_ID + L_triplet of AGW: the triplet loss on G (before the neck), the ID loss on the
    logits of the BN'd G (:meth:`ReIDModel.classify`). Returns (sum, components)."""
    g, y = _global_batch(b)
    idl = P.id_loss(model.classify(g), y)
    if triplet == "wrt":
        tri, correct = weighted_regularized_triplet(g, y)
    else:
        tri, correct = batch_hard_triplet(g, y, margin)
    acc = torch.tensor(correct / max(1, g.shape[0]), dtype=torch.float32, device=g.device)
    return idl + tri, {"id": idl, triplet: tri, "acc_tri": acc}


@register_loss("agw", same_modality=True)
def _loss_agw(model: nn.Module, b: StepBatch, cfg: Any) -> tuple[Tensor, dict[str, Tensor]]:
    """AGW: L_ID + L_WRT (weights 1, 1)."""
    return _agw_terms(model, b, "wrt", 0.0)


@register_loss("triplet", same_modality=True)
def _loss_triplet(model: nn.Module, b: StepBatch, cfg: Any) -> tuple[Tensor, dict[str, Tensor]]:
    """L_ID + batch-hard triplet with margin ``cfg.loss.triplet_margin`` (AGW's "base")."""
    return _agw_terms(model, b, "triplet", float(cfg.loss.triplet_margin))


@register_loss("agw+pbce", same_modality=True, trains_ccn=True,
               part_weights=lambda cfg: {"pbce": cfg.loss.pbce_weight})
def _loss_agw_pbce(model: nn.Module, b: StepBatch, cfg: Any) -> tuple[Tensor, dict[str, Tensor]]:
    """AGW with the CCN head trained jointly: L_ID + L_WRT + w·L_PBCE (w = loss.pbce_weight);
    the PBCE term is Eq. (8) on the batch's pairs, as in ``ccn``."""
    agw, parts = _agw_terms(model, b, "wrt", 0.0)
    la, lb, target = pair_logits(model, b)
    pbce = P.pbce_loss(la, lb, target)
    return agw + float(cfg.loss.pbce_weight) * pbce, {**parts, "pbce": pbce,
                                                      **pair_accuracy(la, lb, target)}
