"""saat.retrieval.bootstrap: percentile-bootstrap intervals of a mean over queries, paired and over seeds."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from saat.retrieval import (
    ci_or_none,
    format_ci,
    grouped_ci,
    grouped_mean,
    grouped_paired_ci,
    mean_ci,
    paired_ci,
)
from saat.utils.rng import numpy_generator

FAST = 2000  # resamples in the property tests (the default 10,000 is for the figures)
aps = st.lists(st.floats(0.0, 1.0, allow_nan=False), min_size=2, max_size=60)  # per-query APs


@settings(max_examples=40, deadline=None)
@given(aps)
def test_the_interval_holds_the_mean_of_typical_data(values):
    lo, hi = mean_ci(values, resamples=FAST)
    mean, tiny = float(np.mean(values)), 1e-12
    # a mean of resampled values never leaves their range, and the resampled means straddle the sample's
    assert min(values) - tiny <= lo <= mean + tiny and mean - tiny <= hi <= max(values) + tiny


def test_the_interval_contains_the_mean_and_its_width_shrinks_with_more_queries():
    rng = numpy_generator(1, "test")
    widths = []
    for q in (25, 100, 400, 1600):
        values = rng.random(q)
        lo, hi = mean_ci(values)
        assert lo < values.mean() < hi
        widths.append(hi - lo)
    assert widths == sorted(widths, reverse=True)
    # the width of a mean's interval goes as 1/sqrt(Q): 64 times the queries, about an eighth of the width
    assert 0.08 < widths[-1] / widths[0] < 0.18


@settings(max_examples=25, deadline=None)
@given(aps)
def test_paired_interval_of_a_model_against_itself_is_zero(values):
    assert paired_ci(values, values, resamples=FAST) == (0.0, 0.0)


def test_the_paired_bootstrap_resamples_the_same_queries_on_both_sides():
    rng = numpy_generator(2, "test")
    hard = rng.random(200)  # how hard each query is, shared by both models
    a, b = hard + 0.02, hard  # a is better by 0.02 on every query
    lo, hi = paired_ci(a, b)
    assert lo == pytest.approx(0.02) and hi == pytest.approx(0.02)  # the shared difficulty cancels exactly
    unpaired = mean_ci(a)  # the interval of one side alone is wide: the queries' spread
    assert unpaired[1] - unpaired[0] > 0.05
    assert paired_ci(a, b, seed=3) == mean_ci(a - b, seed=3)


def test_the_same_seed_gives_the_same_interval_and_another_seed_another():
    values = numpy_generator(3, "test").random(300)
    assert mean_ci(values, seed=7) == mean_ci(values, seed=7)
    assert mean_ci(values, seed=7) != mean_ci(values, seed=8)
    groups = [values[:100], values[100:250], values[250:]]
    assert grouped_ci(groups, seed=1) == grouped_ci(groups, seed=1) != grouped_ci(groups, seed=2)


def test_a_95_percent_interval_covers_the_true_mean_about_95_percent_of_the_time():
    rng = numpy_generator(4, "coverage")
    covered = 0
    repeats = 200
    for r in range(repeats):
        sample = rng.normal(0.5, 0.2, size=60)
        lo, hi = mean_ci(sample, resamples=1000, seed=r)
        covered += lo <= 0.5 <= hi
    assert 0.88 <= covered / repeats <= 0.99


def test_degenerate_inputs():
    assert mean_ci([0.37]) == (0.37, 0.37)
    assert mean_ci([0.1] * 7) == (0.1, 0.1)  # exactly the value, not a rounded mean
    lo, hi = mean_ci([])
    assert np.isnan(lo) and np.isnan(hi)
    assert ci_or_none([]) is None and ci_or_none([0.25, 0.25]) == [0.25, 0.25]
    lo, hi = grouped_ci([[], []])
    assert np.isnan(lo) and np.isnan(hi)
    assert np.isnan(grouped_mean([]))
    with pytest.raises(ValueError, match="NaN or infinite") as err:
        mean_ci([0.1, float("nan"), 0.3])
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="same queries"):
        paired_ci([0.1, 0.2], [0.1])
    with pytest.raises(ValueError, match="one value per query"):
        mean_ci(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="resamples"):
        mean_ci([0.1, 0.2], resamples=0)
    with pytest.raises(ValueError, match="level"):
        mean_ci([0.1, 0.2], level=95)
    with pytest.raises(ValueError, match=r"groups\[1\] has no value"):
        grouped_ci([[0.1, 0.2], []])
    with pytest.raises(ValueError, match="same seeds"):
        grouped_paired_ci([[0.1]], [[0.1], [0.2]])


def test_one_seed_is_the_query_bootstrap():
    values = numpy_generator(5, "test").random(80)
    assert grouped_ci([values], seed=2) == mean_ci(values, seed=2)
    assert grouped_paired_ci([values], [values * 0.5], seed=2) == paired_ci(values, values * 0.5, seed=2)


def test_the_grouped_interval_adds_the_variation_between_seeds():
    rng = numpy_generator(6, "test")
    # three seeds whose models differ a lot (per-seed means 0.3, 0.5, 0.7), each with many tightly spread queries
    groups = [np.clip(m + 0.02 * rng.standard_normal(400), 0, 1) for m in (0.3, 0.5, 0.7)]
    lo, hi = grouped_ci(groups)
    assert grouped_mean(groups) == pytest.approx(np.mean([g.mean() for g in groups]))
    assert lo < grouped_mean(groups) < hi
    pooled = mean_ci(np.concatenate(groups))  # the queries alone, pooled: blind to the seeds' spread
    assert hi - lo > 5 * (pooled[1] - pooled[0])
    # the resampled seeds bound it: the statistic is a mean of seed means each within [0.25, 0.75]
    assert 0.25 < lo and hi < 0.75
    # paired over seeds: the difference a - b is +0.05 on every query of every seed, whatever the seed's level
    shifted = [g + 0.05 for g in groups]
    assert grouped_paired_ci(shifted, groups) == pytest.approx((0.05, 0.05))


def test_every_figure_prints_in_one_form():
    assert format_ci(0.3433, [0.29, 0.3951]) == "0.343 [0.290, 0.395]"
    assert format_ci(0.157, [0.121, 0.196], percent=True) == "15.70 [12.1, 19.6]"
    assert format_ci(0.157, None, percent=True) == "15.70"
    assert format_ci(0.34331, [0.29, 0.3951], digits=4) == "0.3433 [0.290, 0.395]"


def test_ten_thousand_resamples_of_two_thousand_queries_take_under_a_second():
    import time

    values = numpy_generator(7, "test").random(2000)
    mean_ci(values)  # warm-up
    t0 = time.perf_counter()
    mean_ci(values)
    assert time.perf_counter() - t0 < 1.0
