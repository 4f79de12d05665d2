"""Pure maths on discrete distributions, shared by the GRPO rewards
(:mod:`shala.train.rewards`) and the metrics (:mod:`shala.evaluation.metrics`).

It lives on the lowest floor, importing nothing from shala, so that training
reads the Jensen–Shannon distance without importing the evaluation stage.

Inputs are ``(n, C)`` arrays of row distributions or single ``(C,)``
vectors; outputs are one value per row, or a float for a single vector.
"""

from __future__ import annotations

import numpy as np


def as_rows(x) -> np.ndarray:
    """``x`` as a float64 ``(n, C)`` array; a single ``(C,)`` vector becomes one row."""
    a = np.asarray(x, dtype=np.float64)
    return a[None, :] if a.ndim == 1 else a


def squeeze_like(out: np.ndarray, like) -> np.ndarray | float:
    """Per-row values ``out`` as one float when ``like`` was a single vector."""
    return float(out[0]) if np.asarray(like).ndim == 1 else out


def xlogy_ratio(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """p * log(p / q) with 0 log 0 = 0 (q > 0 wherever p > 0 here)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0) / np.where(q > 0, q, 1.0)), 0.0)
    return r


def js_divergence(p, q, base: float = 2.0):
    """Jensen–Shannon divergence (not the distance), in [0, log_base 2]."""
    P, Q = as_rows(p), as_rows(q)
    M = 0.5 * (P + Q)
    d = 0.5 * (xlogy_ratio(P, M).sum(-1) + xlogy_ratio(Q, M).sum(-1)) / np.log(base)
    return squeeze_like(np.maximum(d, 0.0), p)


def jsd(p, q, base: float = 2.0):
    """Jensen–Shannon *distance* sqrt(JS divergence); base 2 lies in [0, 1]."""
    return np.sqrt(js_divergence(p, q, base=base))
