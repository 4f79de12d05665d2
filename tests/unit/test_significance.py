"""shala.evaluation.significance against direct numpy/scipy computations."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from shala.evaluation.significance import bootstrap_ci, bootstrap_means, holm, mean_std, paired_test


def test_mean_std_ddof1_and_single_seed():
    x = [0.2, 0.4, 0.9]
    assert mean_std(x) == pytest.approx((np.mean(x), np.std(x, ddof=1)))
    assert mean_std([0.3]) == (0.3, 0.0)
    assert mean_std([0.3, np.nan]) == (0.3, 0.0)
    m, s = mean_std([])
    assert np.isnan(m) and np.isnan(s)


def test_bootstrap_ci_contains_mean_and_shrinks_with_n():
    rng = np.random.default_rng(1)
    widths = []
    for n in (20, 200, 2000):
        x = rng.normal(0.3, 0.1, size=n)
        lo, hi = bootstrap_ci(x, n_boot=2000, seed=0)
        assert lo < x.mean() < hi
        widths.append(hi - lo)
    assert widths[0] > widths[1] > widths[2]
    # roughly the normal-theory width 2 * 1.96 * sd / sqrt(n)
    assert widths[2] == pytest.approx(2 * 1.96 * 0.1 / np.sqrt(2000), rel=0.15)


def test_bootstrap_ci_known_case():
    # 50 zeros and 50 ones: resampled means are Binomial(100, 1/2) / 100,
    # whose 2.5% and 97.5% quantiles are 0.40 and 0.60.
    x = np.array([0.0] * 50 + [1.0] * 50)
    lo, hi = bootstrap_ci(x, n_boot=10000, seed=0)
    assert lo == pytest.approx(0.40, abs=0.011)
    assert hi == pytest.approx(0.60, abs=0.011)
    ref = stats.bootstrap((x,), np.mean, n_resamples=10000, method="percentile", random_state=0)
    assert lo == pytest.approx(ref.confidence_interval.low, abs=0.011)
    assert hi == pytest.approx(ref.confidence_interval.high, abs=0.011)


def test_bootstrap_ci_edge_cases_and_seeding():
    assert bootstrap_ci([0.25] * 7) == (0.25, 0.25)
    lo, hi = bootstrap_ci([])
    assert np.isnan(lo) and np.isnan(hi)
    x = np.random.default_rng(3).random(50)
    assert bootstrap_ci(x, seed=5) == bootstrap_ci(x, seed=5)
    assert bootstrap_ci(x, seed=5) != bootstrap_ci(x, seed=6)
    assert bootstrap_ci(np.append(x, np.nan), seed=5) == bootstrap_ci(x, seed=5)
    with pytest.raises(ValueError):
        bootstrap_ci(x, alpha=0)


def test_bootstrap_means_chunked_large_input():
    # n large enough that the draws are split into several chunks
    x = np.random.default_rng(4).random(30_000)
    means = bootstrap_means(x, n_boot=300, seed=0)
    assert means.shape == (300,)
    assert np.all(np.isfinite(means))
    assert abs(means.mean() - x.mean()) < 0.005


def test_paired_test_matches_scipy():
    rng = np.random.default_rng(0)
    b = rng.random(80)
    a = np.clip(b - 0.05 + rng.normal(0, 0.1, 80), 0, 1)
    res = paired_test(a, b, n_boot=2000)
    want = stats.wilcoxon(a, b)
    assert res.p_value == pytest.approx(want.pvalue, rel=1e-12)
    assert res.statistic == pytest.approx(want.statistic)
    assert res.n == 80
    assert res.mean_diff == pytest.approx(np.mean(a - b))
    assert (res.mean_a, res.mean_b) == pytest.approx((a.mean(), b.mean()))
    assert res.ci_lo < res.mean_diff < res.ci_hi
    assert (res.ci_lo, res.ci_hi) == bootstrap_ci(a - b, n_boot=2000, seed=0)
    assert res.ci_hi < 0  # a is lower by 0.05 on average


def test_paired_test_identical_inputs():
    x = np.random.default_rng(2).random(30)
    res = paired_test(x, x.copy())
    assert res.mean_diff == 0.0
    assert res.p_value == 1.0
    assert (res.ci_lo, res.ci_hi) == (0.0, 0.0)


def test_paired_test_drops_nan_pairs_and_checks_length():
    a = np.array([0.1, np.nan, 0.3, 0.5, 0.2, 0.7])
    b = np.array([0.2, 0.1, np.nan, 0.4, 0.6, 0.1])
    res = paired_test(a, b, n_boot=100)
    keep = ~(np.isnan(a) | np.isnan(b))
    assert res.n == 4
    assert res.p_value == pytest.approx(stats.wilcoxon(a[keep], b[keep]).pvalue)
    assert paired_test([], []).n == 0
    with pytest.raises(ValueError):
        paired_test([0.1, 0.2], [0.1])


def test_holm():
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])
    np.testing.assert_allclose(holm([0.5, 0.9]), [1.0, 1.0])
    out = holm([0.02, np.nan, 0.01])
    np.testing.assert_allclose(out[[0, 2]], [0.02, 0.02])
    assert np.isnan(out[1])
    assert holm([]).size == 0
