"""Which parameters a run trains, at which learning rate, and where they start.

* :func:`load_init_weights`: ``model.init_from`` (a run folder or checkpoint) gives every
  initial weight of the new model; the network fields and the class count must match the
  checkpoint's (:func:`vireid.engine.checkpoint.check_compatible`).
* :func:`apply_freeze`: ``train.freeze=embedding`` keeps only the CCN (W_D) trainable; the
  rest of the model is frozen and, through :func:`frozen_to_eval`, its BatchNorms use their
  running statistics, so the global feature G is exactly the starting model's (issue 24, 1b:
  a CCN head trained on a finished embedding).
* :func:`param_groups`: the optimizer's groups, each with an ``lr_mult`` read by the training
  loop: the backbone at ``train.backbone_lr_mult``, the CCN at ``train.ccn_lr_mult``, the
  other heads at 1; frozen parameters are left out.
"""
from __future__ import annotations

import logging
from typing import Any

from torch import nn

from vireid.engine.checkpoint import check_compatible, load_checkpoint, load_state_strict
from vireid.errors import CheckpointError, ConfigError

log = logging.getLogger(__name__)


def load_init_weights(model: nn.Module, cfg: Any, num_classes: int) -> None:
    """Copy the weights of ``cfg.model.init_from`` into ``model`` (every tensor).

    Raises:
        CheckpointError: no readable checkpoint there, a network field or the class count
            differs (each named), or the tensors do not fit.
    """
    ckpt = load_checkpoint(cfg.model.init_from, map_location="cpu")
    try:
        check_compatible(ckpt, cfg, num_classes)
    except CheckpointError as exc:  # the same check as a resumed or evaluated checkpoint's
        raise CheckpointError(f"model.init_from: {exc} (same data, data.val_ids and "
                              f"train.seed?)") from exc
    load_state_strict(model, ckpt["model"], source=f"model.init_from {ckpt['path']}")
    log.info("initial weights from %s (epoch %s)", ckpt["path"], ckpt.get("epoch"))


#: train.freeze -> the model's top-level parts that train (None = all).
TRAINABLE_PARTS: dict[str, tuple[str, ...] | None] = {"none": None, "embedding": ("ccn",)}


def apply_freeze(model: nn.Module, mode: str, trains_ccn: bool = True) -> None:
    """Set ``requires_grad`` by ``train.freeze``: "none" leaves every parameter trainable,
    "embedding" only the CCN's.

    Raises:
        ConfigError: "embedding" with a loss that does not train the CCN (nothing would
            learn).
    """
    keep = TRAINABLE_PARTS[mode]
    if keep is None:
        return
    if not trains_ccn:
        raise ConfigError(f"train.freeze={mode} trains only the CCN, but loss.kind gives it no "
                          f"training signal; use a loss that trains it (ccn, ccn-noid, "
                          f"agw+pbce)")
    for name, p in model.named_parameters():
        p.requires_grad_(name.split(".", 1)[0] in keep)


def frozen_to_eval(model: nn.Module) -> None:
    """Put every top-level part of ``model`` without a trainable parameter in eval mode
    (call after ``model.train()``): a frozen part's BatchNorm must not update its running
    statistics, or its features would drift although no weight changes."""
    for child in model.children():
        params = list(child.parameters())
        if params and not any(p.requires_grad for p in params):
            child.eval()


def param_groups(model: nn.Module, backbone_mult: float = 1.0,
                 ccn_mult: float = 1.0) -> list[dict[str, Any]]:
    """The optimizer's parameter groups: one group when both multipliers are 1 (every
    trainable parameter at train.lr), else backbone / CCN / the rest, each with its
    ``lr_mult``; frozen parameters (``requires_grad=False``) are in none.

    Raises:
        ConfigError: no parameter is trainable.
    """
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not trainable:
        raise ConfigError("no trainable parameter: every weight of the model is frozen")
    if backbone_mult == 1.0 and ccn_mult == 1.0:
        return [{"params": [p for _, p in trainable], "lr_mult": 1.0}]
    # With ccn_mult 1 the CCN stays in the heads' group: the two groups of runs (and
    # checkpoints) made before train.ccn_lr_mult existed.
    own = {"backbone"} | ({"ccn"} if ccn_mult != 1.0 else set())
    parts: dict[str, tuple[float, list[nn.Parameter]]] = {
        "backbone": (float(backbone_mult), []), "ccn": (float(ccn_mult), []), "rest": (1.0, [])}
    for name, p in trainable:
        top = name.split(".", 1)[0]
        parts[top if top in own else "rest"][1].append(p)
    return [{"params": ps, "lr_mult": mult} for mult, ps in parts.values() if ps]
