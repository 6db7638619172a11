"""Statistics over training seeds: the cells of a multi-seed table (``vireid reproduce --seeds``).

Every value is in percent. A seed's value of a metric is its evaluation's mean over the
gallery trials; the table gives the mean over seeds ± the sample standard deviation over
seeds (n − 1 in the denominator; 0 for a single seed), the per-seed values, and the mean of
the seeds' trial standard deviations. A row compared with a reference row gets the paired
difference seed by seed (same seed, same scoring mode), which removes the share of the
seed-to-seed variation the two rows have in common.

Pure functions of numbers: the sums are written out (``sum / n``) so that the same seeds
give the same table to the last digit.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

#: Metrics read from an evaluation result, in table order.
METRICS = ("rank1", "rank5", "rank10", "rank20", "mAP", "mINP")
#: Metrics whose trial std is kept, and those a row's per-seed difference covers.
STD_METRICS = ("rank1", "mAP")
DELTA_METRICS = ("rank1", "mAP")


def result_metrics(result: Mapping[str, Any]) -> dict[str, float]:
    """A table's metrics of one evaluation result: ``{metric: mean}`` for the metrics of
    :data:`METRICS` it holds and ``{metric_std: std over trials}`` for :data:`STD_METRICS`.
    ``result`` is an ``evaluate()`` result (``mean``, ``std``) or a bare ``{metric: value}``."""
    mean = result.get("mean", result)
    std = result.get("std", {})
    out = {k: float(mean[k]) for k in METRICS if k in mean}
    out.update({f"{k}_std": float(std[k]) for k in STD_METRICS if k in std})
    return out


def sample_std(xs: Sequence[float]) -> float:
    """Sample standard deviation (n − 1 in the denominator); 0.0 for fewer than two values."""
    if len(xs) < 2:
        return 0.0
    m = sum(xs) / len(xs)
    return (sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) ** 0.5


def over_seeds(per_seed: Sequence[Mapping[str, float]]) -> dict[str, Any]:
    """One row's cells from its per-seed metrics (each as :func:`result_metrics` gives them).

    For every metric ``k`` of the first seed: ``k`` (mean over seeds), ``k_std`` (sample std
    over seeds), ``k_seeds`` (the values, in seed order); for every trial std ``k_std`` of a
    seed: ``k_trial_std`` (its mean over seeds). Keys follow the first seed's order.
    """
    out: dict[str, Any] = {}
    for k in per_seed[0]:
        if k.endswith("_std"):
            out[f"{k[:-4]}_trial_std"] = sum(p[k] for p in per_seed) / len(per_seed)
            continue
        vals = [p[k] for p in per_seed]
        out[k] = sum(vals) / len(vals)
        out[f"{k}_std"] = sample_std(vals)
        out[f"{k}_seeds"] = vals
    return out


def per_seed_delta(per_seed: Sequence[Mapping[str, float]], reference: Sequence[Mapping[str, float]],
                   metrics: Sequence[str] = DELTA_METRICS) -> dict[str, list[float]]:
    """Seed-by-seed difference of a row to its reference row: {metric: [row − reference for
    each seed]}, for the ``metrics`` both hold (seed lists in the same order)."""
    return {k: [p[k] - q[k] for p, q in zip(per_seed, reference)]
            for k in metrics if k in per_seed[0] and k in reference[0]}
