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


# --- human-label-variation metrics over a whole set -------------------------
#
# Soft accuracy and soft micro F1 follow Kurniawan et al. (2025),
# "Training and Evaluating with Human Label Variation" (repository
# kmkurn/train-eval-hlv, ``evaluation.py``): with human distributions p and
# predicted distributions p̂, both ``(n, C)``,
#
#   soft_accuracy = mean_i Σ_c min(p_ic, p̂_ic)            (per item, then mean)
#   soft_micro_f1 = 2 Σ_ic min(p_ic, p̂_ic) / Σ_ic (p_ic + p̂_ic)   (pooled)
#   per class c:  P_c = Σ_i min / Σ_i p̂_ic,  R_c = Σ_i min / Σ_i p_ic,
#                 F_c = 2 Σ_i min / Σ_i (p_ic + p̂_ic)
#
# For rows that each sum to 1 the micro F1 equals the soft accuracy; they
# differ only for unnormalised (e.g. multilabel) rows.


def soft_micro_f1(p, q) -> float:
    """Soft micro F1 of Kurniawan et al.: 2 Σ min(p, q) / Σ (p + q), pooled
    over all items and classes (a single number for the set, not per row)."""
    P, Q = _as2d(p), _as2d(q)
    denom = float((P + Q).sum())
    return 2.0 * float(np.minimum(P, Q).sum()) / denom if denom > 0 else 0.0


def _divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den with 0 where den == 0 (sklearn's zero_division=0)."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros_like(num), where=den != 0)


def soft_precision_recall_f1(p_true, p_pred) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-class soft precision, recall, F1 and soft support Σ_i p_ic
    (Kurniawan et al.); a class with no mass on either side scores 0."""
    P, Q = _as2d(p_true), _as2d(p_pred)
    agree = np.minimum(P, Q).sum(0)
    true_sum, pred_sum = P.sum(0), Q.sum(0)
    return (_divide(agree, pred_sum), _divide(agree, true_sum),
            _divide(2.0 * agree, true_sum + pred_sum), true_sum)


# --- hard metrics on argmax labels -------------------------------------------
#
# Computed with our own numpy code (tested against sklearn) so the
# conventions are explicit: every class of the dataset counts
# (labels=range(C)), ties in a distribution go to the first class, and an
# undefined precision/recall/F1 is 0 (zero_division=0).


def confusion(y_true, y_pred, n_classes: int) -> np.ndarray:
    """``(C, C)`` counts, rows = true class, columns = predicted class."""
    t = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(y_pred, dtype=np.int64)
    return np.bincount(t * n_classes + p, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def precision_recall_f1_support(y_true, y_pred, n_classes: int
                                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-class precision, recall, F1 (zero_division=0) and support.

    F1 is 2tp / (2tp + fp + fn), as in sklearn, so a class absent from both
    labels and predictions scores 0 and still counts in the macro average.
    """
    cm = confusion(y_true, y_pred, n_classes)
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(1)
    predicted = cm.sum(0)
    return (_divide(tp, predicted), _divide(tp, support),
            _divide(2.0 * tp, support + predicted), support)


def accuracy(p_true, p_pred) -> float:
    """Fraction of items whose predicted argmax equals the human argmax."""
    t, p = argmax_labels(p_true), argmax_labels(p_pred)
    return float(np.mean(t == p)) if t.size else 0.0


def macro_f1(p_true, p_pred) -> float:
    """Unweighted mean of per-class F1 over all C classes of the dataset."""
    t, p = argmax_labels(p_true), argmax_labels(p_pred)
    return float(precision_recall_f1_support(t, p, _as2d(p_true).shape[-1])[2].mean())


def weighted_f1(p_true, p_pred) -> float:
    """Mean of per-class F1 weighted by the human-majority support."""
    t, p = argmax_labels(p_true), argmax_labels(p_pred)
    _, _, f1, support = precision_recall_f1_support(t, p, _as2d(p_true).shape[-1])
    total = support.sum()
    return float((f1 * support).sum() / total) if total else 0.0
