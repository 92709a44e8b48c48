"""The search-evidence benchmark's statistics (benchmarks/evidence_figures.py), on made-up
accuracies whose answer is known: its percentile, bootstrap interval and seed reliability."""
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from evidence_figures import bootstrap_interval, percentile_of, seed_reliability  # noqa: E402


def test_percentile_counts_ties_half():
    assert percentile_of(0.5, [0.1, 0.5, 0.9, 0.95]) == pytest.approx(37.5)
    assert percentile_of(1.0, [0.1, 0.2]) == 100.0


def test_bootstrap_interval_excludes_0_only_for_a_real_gap():
    rng = np.random.default_rng(0)
    random_means = list(0.80 + 0.005 * rng.standard_normal(20))
    lo, hi = bootstrap_interval(list(0.82 + 0.002 * rng.standard_normal(6)), random_means)
    assert 0 < lo < 0.02 < hi
    lo, hi = bootstrap_interval(list(0.80 + 0.002 * rng.standard_normal(6)), random_means)
    assert lo < 0 < hi


def test_seed_reliability_tells_networks_that_differ_from_seed_noise():
    rng = np.random.default_rng(1)
    true = 0.8 + 0.01 * rng.standard_normal(30)
    differ = seed_reliability([list(t + 0.002 * rng.standard_normal(2)) for t in true])
    noise = seed_reliability([list(0.8 + 0.01 * rng.standard_normal(2)) for _ in range(200)])
    assert differ["r"] > 0.8 and differ["mean_reliability"] > differ["r"]
    assert abs(noise["r"]) < 0.25
    assert differ["networks"] == 30 and differ["seeds"] == 2 and len(differ["pairs"]) == 1
    three = seed_reliability([list(t + 0.002 * rng.standard_normal(3)) for t in true])
    assert len(three["pairs"]) == 3 and three["mean_reliability"] > three["r"]


def test_seed_reliability_needs_two_seeds_three_networks_and_a_spread():
    assert seed_reliability([[0.8], [0.7], [0.9]]) is None
    assert seed_reliability([[0.8, 0.81], [0.7, 0.71]]) is None
    assert seed_reliability([[0.1, 0.2], [0.1, 0.3], [0.1, 0.25]]) is None     # every network at chance in seed 0
