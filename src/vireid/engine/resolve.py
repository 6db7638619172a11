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
from vireid.evaluation.metrics import metric_rule
from vireid.losses.registry import LossSpec, get_loss
from vireid.models.backbones import BackboneOptions, BackboneSpec, get_backbone
from vireid.scoring.scorers import ScoringMode, get_scoring


@dataclass(frozen=True)
class Resolved:
    """The registry entries a config names."""

    dataset: DatasetSpec
    arch: BackboneSpec
    loss: LossSpec
    scoring: ScoringMode


def resolve_names(cfg: Any) -> Resolved:
    """Look up every registered name of ``cfg``; ConfigError naming the first unknown one
    and the names there are, or an option the backbone cannot honour (a ``shared_stages``
    value it does not support, weights or non-local blocks it has none of, an input too
    small for it, or the data set's rule that ``data.trial`` breaks)."""
    dataset = get_dataset(cfg.data.dataset)
    dataset.check_trial(cfg.data.trial)
    for proto in dataset.protocols:
        metric_rule(proto.metric)
    arch = get_backbone(cfg.model.arch)
    # What the backbone can honour (its stage split, weights, non-local blocks), before
    # any data is read; DSCSN checks the same when it is built.
    m = cfg.model
    arch.check(m.shared_stages, m.pretrained, m.non_local)
    arch.feature_size(cfg.data.height, cfg.data.width, BackboneOptions(m.width, m.last_stride))
    return Resolved(dataset, arch, get_loss(cfg.loss.kind), get_scoring(cfg.eval.scoring))
