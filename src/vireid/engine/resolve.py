"""Resolve every registered name of a config before any long work starts.

The config checks types and ranges only (:mod:`vireid.config`); the names it holds
(``data.dataset``, ``model.arch``, ``loss.kind``, ``eval.scoring``) are looked up in their
registries here, after the plugins are imported, so a typo or a missing plugin is one
``error:`` line before data is read or a run folder is made. The data set's own rules are
checked here too: ``data.trial`` against its trial rule, and that every metric rule its
protocols name exists.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vireid.data.registry import DatasetSpec, get_dataset
from vireid.errors import ConfigError
from vireid.evaluation.metrics import metric_rule
from vireid.losses.registry import LossSpec, get_loss
from vireid.models.resnet import ARCHS
from vireid.scoring.scorers import ScoringMode, get_scoring


@dataclass(frozen=True)
class Resolved:
    """The registry entries a config names."""

    dataset: DatasetSpec
    arch: Any
    loss: LossSpec
    scoring: ScoringMode


def resolve_names(cfg: Any) -> Resolved:
    """Look up every registered name of ``cfg``; ConfigError naming the first unknown one
    and the names there are (or the data set's rule that ``data.trial`` breaks)."""
    dataset = get_dataset(cfg.data.dataset)
    dataset.check_trial(cfg.data.trial)
    for proto in dataset.protocols:
        metric_rule(proto.metric)
    if cfg.model.arch not in ARCHS:
        raise ConfigError(f"model.arch: expected one of {', '.join(ARCHS)}, found "
                          f"{cfg.model.arch!r}")
    return Resolved(dataset, cfg.model.arch, get_loss(cfg.loss.kind), get_scoring(cfg.eval.scoring))
