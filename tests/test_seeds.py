"""Statistics over training seeds (evaluation/seeds.py) against the standard library."""
from __future__ import annotations

import statistics

import pytest

from vireid.evaluation.seeds import over_seeds, per_seed_delta, result_metrics, sample_std


def test_over_seeds_is_mean_and_sample_std_over_seeds() -> None:
    per_seed = [{"rank1": 31.2, "mAP": 33.0, "rank1_std": 1.5, "mAP_std": 0.5},
                {"rank1": 29.8, "mAP": 34.1, "rank1_std": 2.5, "mAP_std": 0.7},
                {"rank1": 33.5, "mAP": 35.6, "rank1_std": 2.0, "mAP_std": 0.3}]
    cells = over_seeds(per_seed)
    assert cells["rank1"] == pytest.approx(statistics.mean([31.2, 29.8, 33.5]))
    assert cells["rank1_std"] == pytest.approx(statistics.stdev([31.2, 29.8, 33.5]))
    assert cells["mAP"] == pytest.approx(statistics.mean([33.0, 34.1, 35.6]))
    assert cells["mAP_std"] == pytest.approx(statistics.stdev([33.0, 34.1, 35.6]))
    assert cells["rank1_seeds"] == [31.2, 29.8, 33.5] and cells["mAP_seeds"] == [33.0, 34.1, 35.6]
    # the trial std of each seed is averaged, not pooled into the seed std
    assert cells["rank1_trial_std"] == pytest.approx(2.0)
    assert cells["mAP_trial_std"] == pytest.approx(0.5)
    assert list(cells) == ["rank1", "rank1_std", "rank1_seeds", "mAP", "mAP_std", "mAP_seeds",
                           "rank1_trial_std", "mAP_trial_std"]


def test_sample_std_hand_worked() -> None:
    # mean 4, squared deviations 4 + 0 + 4 = 8, / (3 - 1) = 4, sqrt = 2
    assert sample_std([2.0, 4.0, 6.0]) == pytest.approx(2.0)
    assert sample_std([7.5, 7.5]) == 0.0
    assert sample_std([3.0]) == 0.0  # one seed: no spread
    assert sample_std([1.0, 2.0, 4.0, 8.0]) == pytest.approx(statistics.stdev([1.0, 2.0, 4.0, 8.0]))


def test_per_seed_delta_pairs_seeds() -> None:
    row = [{"rank1": 30.0, "mAP": 32.0, "rank10": 70.0}, {"rank1": 35.0, "mAP": 31.0, "rank10": 71.0}]
    ref = [{"rank1": 28.5, "mAP": 33.0}, {"rank1": 36.0, "mAP": 30.0}]
    delta = per_seed_delta(row, ref)
    assert delta == {"rank1": pytest.approx([1.5, -1.0]), "mAP": pytest.approx([-1.0, 1.0])}
    assert "rank10" not in per_seed_delta(row, ref, ("rank1", "rank10"))  # the reference lacks it


def test_result_metrics_reads_an_evaluation_result() -> None:
    res = {"mean": {"rank1": 40, "rank10": 80.5, "mAP": 35.25, "mINP": 10.0, "seconds": 3.0},
           "std": {"rank1": 1.0, "mAP": 2.0, "mINP": 9.0}}
    assert result_metrics(res) == {"rank1": 40.0, "rank10": 80.5, "mAP": 35.25, "mINP": 10.0,
                                   "rank1_std": 1.0, "mAP_std": 2.0}
    assert result_metrics({"rank1": 5, "mAP": 6}) == {"rank1": 5.0, "mAP": 6.0}  # a bare mapping
