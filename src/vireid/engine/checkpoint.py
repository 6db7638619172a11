"""Checkpoints: atomic save, strict load.

A checkpoint is one ``torch.save`` file holding a plain dict:

==================  =============================================================
``format``          ``"vireid-checkpoint"``
``format_version``  :data:`FORMAT_VERSION`; another version is refused
``model``           the model's state dict
``optimizer``       optimizer state dict (or None)
``scheduler``       learning-rate schedule position (or None)
``sampler``         the identity sampler's ``state_dict()`` (or None)
``rng``             RNG states: torch (global), numpy (global), python, augmentation
``epoch``           epochs completed; ``iteration``: optimizer steps done
``config``          the resolved config (``Config.to_dict()``); ``config_digest``
``num_classes``     classes of the ID classifier
``dataset``         ``{"name", "trial", "root"}`` the model was trained on
``history``         per-epoch metrics so far
``extra``           free-form (selection, seconds, threads, …)
==================  =============================================================

Only tensors, plain containers and numbers are stored, so ``torch.load(weights_only=True)``
reads it (no pickled classes). Writing goes to a temporary file in the same folder, is
fsync'ed and then ``os.replace``'d over the target: a crash leaves the previous file intact,
never a half-written one.

Reading checks every field a reader uses (:data:`CHECKPOINT_SCHEMA`; resuming also
:data:`RESUME_SCHEMA`): a file with a field missing or of the wrong kind is refused naming
the file and the field, never a ``KeyError`` later.

Loading is strict: :func:`check_compatible` compares the fields that define the model
(:data:`vireid.utils.identity.MODEL_IDENTITY`, the one list the config digest also reads), the
class count and the format version, and :func:`load_state_strict` the state dict's keys
and shapes; any difference raises :class:`~vireid.errors.CheckpointError` naming it.
"""
from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any, Optional, Union

import torch
from torch import nn

from vireid.config import Config, from_dict
from vireid.utils.identity import identity_values
from vireid.errors import CheckpointError, ConfigError
from vireid.losses.registry import attach_loss_head
from vireid.models.build import build_model
from vireid.utils.atomic import atomic_save_torch
from vireid.utils.digest import state_digest
from vireid.utils.messages import short_load_reason
from vireid.utils.runtime import capture_rng_state
from vireid.utils.schema import (DICT, INT, NONNEG_INT, NUMBER, POS_INT, STR, Kind, check_fields,
                                 describe, is_exactly, kind_of, list_of, opt, optional)

log = logging.getLogger(__name__)

FORMAT = "vireid-checkpoint"
FORMAT_VERSION = 1

PathLike = Union[str, os.PathLike]


# --------------------------------------------------------------------------- writing
def save_checkpoint(path: PathLike, *, model: nn.Module, cfg: Config, num_classes: int,
                    epoch: int, iteration: int, optimizer: Optional[torch.optim.Optimizer] = None,
                    scheduler: Optional[dict[str, Any]] = None,
                    sampler: Optional[dict[str, Any]] = None,
                    rng: Optional[dict[str, Any]] = None,
                    dataset: Optional[dict[str, Any]] = None,
                    history: Optional[list[dict[str, Any]]] = None,
                    extra: Optional[dict[str, Any]] = None) -> Path:
    """Write a checkpoint atomically (see the module docstring for the fields)."""
    model_state = {k: v.detach().cpu() for k, v in _unwrap(model).state_dict().items()}
    ckpt = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": model_state,
        "model_digest": state_digest(model_state),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler,
        "sampler": sampler,
        "rng": rng if rng is not None else capture_rng_state(),
        "epoch": int(epoch),
        "iteration": int(iteration),
        "config": cfg.to_dict(),
        "config_digest": cfg.digest(),
        "num_classes": int(num_classes),
        "dataset": dataset or {"name": cfg.data.dataset, "trial": cfg.data.trial},
        "history": history or [],
        "extra": extra or {},
        "torch_version": str(torch.__version__),
    }
    return atomic_save_torch(ckpt, path)


def _unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)  # DDP / DataParallel wrappers


# --------------------------------------------------------------------------- reading
TENSOR = kind_of(torch.Tensor, "a tensor")
STATE_DICT = Kind("a state dict (parameter name -> tensor)",
                  lambda v: isinstance(v, dict) and all(isinstance(k, str) and isinstance(x, torch.Tensor)
                                                        for k, x in v.items()))

#: What every reader of a checkpoint uses (evaluation, export, index, figures). ``opt``
#: fields are absent from older files of the same format version.
CHECKPOINT_SCHEMA = {
    "model": STATE_DICT,
    "config": DICT,
    "num_classes": POS_INT,
    "epoch": NONNEG_INT,
    "iteration": NONNEG_INT,
    opt("model_digest"): STR,
    opt("config_digest"): STR,
    opt("dataset"): optional(DICT),
    opt("history"): list_of(DICT),
    opt("extra"): DICT,
}

#: What ``vireid train --resume`` also reads: optimizer, sampler and RNG states.
RESUME_SCHEMA = {
    "optimizer": {"state": DICT, "param_groups": list_of(DICT)},
    "sampler": {"epoch": NONNEG_INT, "position": NONNEG_INT},
    "rng": {"torch": TENSOR,
            "numpy": {"name": STR, "keys": TENSOR, "pos": INT, "has_gauss": INT,
                      "cached_gaussian": NUMBER},
            "python": Kind("a list [version, state, gauss]",
                           lambda v: isinstance(v, list) and len(v) == 3
                           and isinstance(v[0], int) and isinstance(v[1], list)
                           and all(isinstance(x, int) for x in v[1])),
            opt("cuda"): list_of(TENSOR)},
    "history": list_of(DICT),
    "extra": DICT,
}


def load_checkpoint(path: PathLike, map_location: Union[str, torch.device] = "cpu") -> dict[str, Any]:
    """Read and sanity-check a checkpoint file; returns its dict.

    Raises:
        CheckpointError: missing/unreadable file, not a vireid checkpoint, another
            format version, or a field of :data:`CHECKPOINT_SCHEMA` missing or of the
            wrong kind (the message names the file and the field).
    """
    path = Path(path)
    if path.is_dir():
        # A run folder: take its last checkpoint (what `vireid eval --checkpoint RUN_DIR` means).
        for cand in (path / "checkpoints" / "best.pt", path / "checkpoints" / "last.pt"):
            if cand.is_file():
                path = cand
                break
        else:
            raise CheckpointError(f"no checkpoint in {path}: expected checkpoints/last.pt "
                                  f"(or best.pt) inside the run folder")
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with warnings.catch_warnings():
            # A foreign pickle makes torch warn about its protocol before failing: noise here.
            warnings.filterwarnings("ignore", message=".*pickle protocol", category=UserWarning)
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt/foreign files
        raise CheckpointError(f"cannot read checkpoint {path}: not a readable vireid checkpoint "
                              f"(expected a file written by vireid train; found "
                              f"{short_load_reason(exc)})") from exc
    if not isinstance(ckpt, dict) or not is_exactly(ckpt.get("format"), FORMAT):
        raise CheckpointError(f"{path} is not a vireid checkpoint (expected a dict with "
                              f"format={FORMAT!r})")
    version = ckpt.get("format_version")
    if not is_exactly(version, FORMAT_VERSION):
        raise CheckpointError(f"{path}: checkpoint format version {describe(version)}, this "
                              f"vireid reads version {FORMAT_VERSION}")
    check_fields(ckpt, CHECKPOINT_SCHEMA, f"checkpoint {path}", CheckpointError)
    ckpt["path"] = str(path)
    return ckpt


def check_resumable(ckpt: dict[str, Any]) -> None:
    """Refuse a checkpoint without the optimizer, sampler and RNG states a resumed run
    reads (:data:`RESUME_SCHEMA`), naming the field.

    Raises:
        CheckpointError: e.g. ``checkpoint P: field 'optimizer': expected a mapping, found null``.
    """
    check_fields(ckpt, RESUME_SCHEMA, f"checkpoint {ckpt.get('path', '')}".rstrip(),
                 CheckpointError)


def checkpoint_config(ckpt: dict[str, Any]) -> Config:
    """The resolved config stored in a checkpoint."""
    try:
        return from_dict(ckpt["config"])
    except ConfigError as exc:
        raise CheckpointError(f"{ckpt.get('path', 'checkpoint')}: stored config is not valid "
                              f"for this vireid: {exc}") from exc


def arch_differences(saved: Config, current: Config) -> list[str]:
    """The fields that define the model (:data:`vireid.utils.identity.MODEL_IDENTITY`, the list the
    config digest reads) where ``saved`` and ``current`` differ, in that list's order:
    ``["model.shared_bn: checkpoint has 'per_modality', expected 'joint'", …]``.

    Empty exactly when the two configs' digests agree on the network (``model.pretrained``
    only sets initial weights and is not compared)."""
    # identity_values gives both sides' values; comparing them here (rather than formatting
    # identity_differences' "a vs b") keeps the message saying which side is the checkpoint.
    saved_values, current_values = identity_values(saved), identity_values(current)
    return [f"{key}: checkpoint has {value!r}, expected {current_values[key]!r}"
            for key, value in saved_values.items() if value != current_values[key]]


def check_compatible(ckpt: dict[str, Any], cfg: Config, num_classes: Optional[int] = None) -> None:
    """Refuse a checkpoint whose architecture or class count differs from ``cfg``.

    Raises:
        CheckpointError: naming every differing field.
    """
    saved = checkpoint_config(ckpt)
    diffs = arch_differences(saved, cfg)
    if num_classes is not None and int(ckpt["num_classes"]) != int(num_classes):
        diffs.append(f"num_classes: checkpoint has {ckpt['num_classes']}, expected {num_classes}")
    if diffs:
        raise CheckpointError(f"{ckpt.get('path', 'checkpoint')} does not match this model: "
                              + "; ".join(diffs))


def load_state_strict(model: nn.Module, state: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """``load_state_dict`` that names missing/unexpected keys and shape mismatches."""
    target = _unwrap(model)
    own = target.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)}, model {tuple(own[k].shape)}"
              for k in sorted(set(own) & set(state)) if tuple(state[k].shape) != tuple(own[k].shape)]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:3])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:3])})")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatches (e.g. {'; '.join(shapes[:3])})")
    if problems:
        raise CheckpointError(f"{source} weights do not fit the model: " + "; ".join(problems))
    target.load_state_dict(state, strict=True)


def load_model_from_checkpoint(path: PathLike, device: Union[str, torch.device] = "cpu"
                               ) -> tuple[nn.Module, Config, dict[str, Any]]:
    """Rebuild the model a checkpoint was trained with and load its weights.

    Returns ``(model, cfg, meta)``: the model in eval mode on ``device``, the stored config,
    and the checkpoint dict without the heavy optimizer state (``meta["model_digest"]``,
    ``meta["dataset"]``, ``meta["num_classes"]``, ``meta["epoch"]``, ``meta["path"]``, …).
    """
    ckpt = load_checkpoint(path, map_location="cpu")
    cfg = checkpoint_config(ckpt)
    # The stored weights replace any initial ones: never fetch ImageNet weights here.
    model = build_model(cfg, int(ckpt["num_classes"]), load_pretrained=False)
    attach_loss_head(model, cfg)  # a baseline's head is part of the weights
    load_state_strict(model, ckpt["model"], source=ckpt["path"])
    model.to(device).eval()
    meta = {k: v for k, v in ckpt.items() if k not in ("model", "optimizer", "rng")}
    meta.setdefault("model_digest", state_digest(ckpt["model"]))
    return model, cfg, meta
