"""Distribution metrics as small vectorised functions over numpy arrays.

Inputs are ``(n, C)`` arrays of row distributions (or single ``(C,)``
vectors); outputs are one value per row. They are pure so they can be
property-tested against scipy/sklearn on random Dirichlet samples.
"""

from __future__ import annotations

import numpy as np

EPS_KL = 1e-12


def _as2d(x) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    return a[None, :] if a.ndim == 1 else a


def _squeeze(out: np.ndarray, like) -> np.ndarray | float:
    return float(out[0]) if np.asarray(like).ndim == 1 else out


def _xlogy_ratio(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """p * log(p / q) with 0 log 0 = 0 (q > 0 wherever p > 0 here)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0) / np.where(q > 0, q, 1.0)), 0.0)
    return r


def js_divergence(p, q, base: float = 2.0):
    """Jensen–Shannon divergence (not the distance), in [0, log_base 2]."""
    P, Q = _as2d(p), _as2d(q)
    M = 0.5 * (P + Q)
    d = 0.5 * (_xlogy_ratio(P, M).sum(-1) + _xlogy_ratio(Q, M).sum(-1)) / np.log(base)
    return _squeeze(np.maximum(d, 0.0), p)


def jsd(p, q, base: float = 2.0):
    """Jensen–Shannon *distance* sqrt(JS divergence); base 2 lies in [0, 1]."""
    return np.sqrt(js_divergence(p, q, base=base))


def bhattacharyya(p, q):
    """Bhattacharyya coefficient sum sqrt(p q), in [0, 1]; 1 iff p == q."""
    P, Q = _as2d(p), _as2d(q)
    return _squeeze(np.sqrt(P * Q).sum(-1), p)


def kl(p, q, eps: float = EPS_KL):
    """KL(p || q) in nats, with q clipped at ``eps`` (SPEC §6)."""
    P, Q = _as2d(p), np.clip(_as2d(q), eps, None)
    return _squeeze(_xlogy_ratio(P, Q).sum(-1), p)


def tvd(p, q):
    """Total variation distance 0.5 * sum |p - q|, in [0, 1]."""
    P, Q = _as2d(p), _as2d(q)
    return _squeeze(0.5 * np.abs(P - Q).sum(-1), p)


def soft_accuracy(p, q):
    """Sum over classes of min(p, q): the mass the two agree on, in [0, 1]."""
    P, Q = _as2d(p), _as2d(q)
    return _squeeze(np.minimum(P, Q).sum(-1), p)


def argmax_labels(dist) -> np.ndarray:
    """Row argmax; ties go to the first class (numpy.argmax), SPEC §3."""
    return np.argmax(_as2d(dist), axis=-1)
