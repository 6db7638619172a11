"""Running an evaluation protocol: build a trial's query/gallery lists, score a distance
matrix with the protocol's metric, aggregate over trials.

The protocols themselves are entries of the data sets (:class:`vireid.data.registry.Protocol`
in each :class:`~vireid.data.registry.DatasetSpec`): the SYSU-MM01 constructions live in
:mod:`vireid.data.sysu`, RegDB's in :mod:`vireid.data.regdb`, LLCM's in
:mod:`vireid.data.llcm` (docs/protocols.md). A protocol names its metric by a rule that
:func:`vireid.evaluation.metrics.metric_rule` resolves; :func:`rank_metrics` is the one
place that applies it.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from vireid.data.records import EvalSplit, ImageRecord
from vireid.data.registry import PROTOCOLS, Protocol, get_dataset, get_protocol
from vireid.evaluation.metrics import metric_rule

log = logging.getLogger(__name__)

__all__ = ["PROTOCOLS", "Protocol", "get_protocol", "protocols_for", "build_split",
           "evaluate_split", "rank_metrics", "metric_summary", "aggregate", "REPORT_RANKS"]

#: Ranks reported by :func:`evaluate_split`.
REPORT_RANKS = (1, 5, 10, 20)


def protocols_for(dataset: str) -> list[Protocol]:
    """Protocols of the registered data set ``dataset``, in its entry's order."""
    return list(get_dataset(dataset).protocols)


def build_split(protocol: str | Protocol, ds: Any, trial: int, **options: Any) -> EvalSplit:
    """Build one trial of ``protocol`` on loaded dataset ``ds`` (the protocol as that folder
    defines it, :meth:`Protocol.on`); checks the trial number and that the metric rule
    exists (a folder's own rule is known only once it is read)."""
    proto = get_protocol(protocol).on(ds)
    metric_rule(proto.metric)
    return proto.build(ds, trial=proto.check_trial(trial), **options)


def _arrays(records: Sequence[ImageRecord]) -> tuple[np.ndarray, np.ndarray]:
    return (np.array([r.pid for r in records], dtype=np.int64),
            np.array([r.camid for r in records], dtype=np.int64))


def evaluate_split(distmat: np.ndarray, split: EvalSplit, protocol: str | Protocol) -> dict[str, float]:
    """Score one trial. distmat: (len(split.query), len(split.gallery)), lower = closer.

    Returns rank1, rank5, rank10, rank20, mAP, mINP in percent (the metric functions return
    fractions). When the CMC is shorter than k (tiny galleries), rank-k is its last value.
    """
    proto = get_protocol(protocol)
    distmat = np.asarray(distmat)
    if distmat.shape != (len(split.query), len(split.gallery)):
        raise ValueError(
            f"distmat shape {distmat.shape} does not match the split "
            f"({len(split.query)} queries x {len(split.gallery)} gallery images)"
        )
    return metric_summary(*rank_metrics(distmat, split, proto))


def metric_summary(cmc: np.ndarray, m_ap: float, m_inp: float) -> dict[str, float]:
    """The reported numbers (percent) of one trial: rank-1/5/10/20 (the curve's last value
    where it is shorter), mAP and mINP."""
    out = {f"rank{k}": 100.0 * float(cmc[min(k, len(cmc)) - 1]) for k in REPORT_RANKS}
    out["mAP"] = 100.0 * m_ap
    out["mINP"] = 100.0 * m_inp
    return out


def rank_metrics(distmat: np.ndarray, split: EvalSplit, protocol: str | Protocol
                 ) -> tuple[np.ndarray, float, float]:
    """(CMC (fractions), mAP, mINP) of ``distmat`` (Q, G) on ``split`` with the metric rule
    of ``protocol`` (the one place that applies a protocol's metric)."""
    proto = get_protocol(protocol)
    q_pids, q_cams = _arrays(split.query)
    g_pids, g_cams = _arrays(split.gallery)
    return metric_rule(proto.metric)(distmat, q_pids, g_pids, q_cams, g_cams)


def aggregate(per_trial: Sequence[dict[str, float]]) -> tuple[dict[str, float], dict[str, float]]:
    """Mean and standard deviation over trials of each key present in every trial.

    The mean is the reference's plain average; std is the *population* std (numpy default,
    ddof=0), so one trial gives std 0.
    """
    if not per_trial:
        raise ValueError("aggregate needs at least one trial")
    keys = [k for k in per_trial[0] if all(k in t for t in per_trial)]
    mean = {k: float(np.mean([t[k] for t in per_trial])) for k in keys}
    std = {k: float(np.std([t[k] for t in per_trial])) for k in keys}
    return mean, std
