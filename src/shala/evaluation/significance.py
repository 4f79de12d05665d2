"""Across-seed summaries, bootstrap intervals and paired tests (docs/design.md §6).

Small, pure numpy/scipy functions used by :mod:`shala.report`:

- :func:`mean_std`: mean and sample std (ddof=1) over seeds; std is 0 for a
  single seed. NaNs (metrics a slice could not compute) are dropped.
- :func:`bootstrap_ci`: percentile bootstrap interval of the mean, seeded
  (``numpy.random.default_rng(seed)``) and vectorised in chunks so memory
  stays bounded for large test sets.
- :func:`paired_test`: per-item scores of two systems on the same items
  (already matched): mean difference ``a - b``, two-sided Wilcoxon
  signed-rank p-value (``scipy.stats.wilcoxon`` with its defaults; 1.0 when
  every difference is zero, where scipy's statistic is undefined) and the
  paired bootstrap interval of the mean difference (resampling items).
- :func:`holm`: Holm–Bonferroni adjusted p-values for a family of tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# indices drawn per chunk (n_boot_chunk * n); bounds memory to ~16 MB of int64
_CHUNK_ELEMENTS = 2_000_000


def _clean(values) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64).ravel()
    return x[~np.isnan(x)]


def mean_std(values) -> tuple[float, float]:
    """Mean and sample std (ddof=1) of the non-NaN values; std 0 for one
    value; ``(nan, nan)`` for none."""
    x = _clean(values)
    if x.size == 0:
        return float("nan"), float("nan")
    return float(x.mean()), float(x.std(ddof=1)) if x.size > 1 else 0.0


def bootstrap_means(values, n_boot: int = 10000, seed: int = 0) -> np.ndarray:
    """``n_boot`` means of resamples (with replacement, same size) of ``values``."""
    x = _clean(values)
    n = x.size
    if n == 0:
        return np.full(n_boot, np.nan)
    rng = np.random.default_rng(seed)
    chunk = max(1, _CHUNK_ELEMENTS // n)
    out = np.empty(n_boot, dtype=np.float64)
    for start in range(0, n_boot, chunk):
        k = min(chunk, n_boot - start)
        idx = rng.integers(0, n, size=(k, n))
        out[start:start + k] = x[idx].mean(axis=1)
    return out


def bootstrap_ci(values, n_boot: int = 10000, alpha: float = 0.05, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap ``(1 - alpha)`` interval of the mean of ``values``
    (NaNs dropped); ``(nan, nan)`` when there are none."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), not {alpha}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be positive, not {n_boot}")
    means = bootstrap_means(values, n_boot, seed)
    if np.isnan(means).all():
        return float("nan"), float("nan")
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


@dataclass(frozen=True)
class PairedResult:
    n: int              # paired items
    mean_a: float
    mean_b: float
    mean_diff: float    # mean(a - b)
    ci_lo: float        # paired bootstrap interval of mean(a - b)
    ci_hi: float
    statistic: float    # Wilcoxon signed-rank statistic (nan when undefined)
    p_value: float      # two-sided; 1.0 when all differences are zero


def paired_test(a, b, n_boot: int = 10000, alpha: float = 0.05, seed: int = 0) -> PairedResult:
    """Paired comparison of per-item scores ``a`` and ``b`` (same items, same
    order). Pairs where either value is NaN are dropped."""
    from scipy.stats import wilcoxon

    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired arrays differ in length: {a.size} vs {b.size}")
    keep = ~(np.isnan(a) | np.isnan(b))
    a, b = a[keep], b[keep]
    n = int(a.size)
    nan = float("nan")
    if n == 0:
        return PairedResult(0, nan, nan, nan, nan, nan, nan, nan)
    d = a - b
    lo, hi = bootstrap_ci(d, n_boot=n_boot, alpha=alpha, seed=seed)
    if np.all(d == 0):
        stat, p = nan, 1.0
    else:
        res = wilcoxon(a, b)
        stat, p = float(res.statistic), float(res.pvalue)
    return PairedResult(n, float(a.mean()), float(b.mean()), float(d.mean()), lo, hi, stat, p)


def holm(p_values) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values (same order; NaNs stay NaN and are
    not counted in the family)."""
    p = np.asarray(p_values, dtype=np.float64).ravel()
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    m = ok.size
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    adj = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * p[order]))
    out[order] = adj
    return out
