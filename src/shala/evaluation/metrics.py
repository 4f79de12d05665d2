"""Distribution metrics as small vectorised functions over numpy arrays, and
:data:`REGISTRY`, the one list of the metrics a metric block reports (a
:class:`shala.registry.Registry`; the distances shared with the rewards live
in :mod:`shala.distributions`).

Inputs are ``(n, C)`` arrays of row distributions (or single ``(C,)``
vectors); outputs are one value per row, or one number for a whole set.
They are pure so they can be property-tested against scipy/sklearn on
random Dirichlet samples.

Adding a metric: write a function ``f(p_true, p_pred)`` here and register a
:class:`Metric` for it at the end of the file. ``shala.evaluation.evaluate`` then
reports it in every block, the report reads it, the literature file may cite
it, and the property tests in ``tests/unit/test_metrics.py`` check its declared
bounds, identity value and symmetry. Conventions: docs/design.md §6.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np

from ..distributions import as_rows, jsd, squeeze_like, xlogy_ratio
from ..registry import Registry

EPS_KL = 1e-12


def bhattacharyya(p, q):
    """Bhattacharyya coefficient sum sqrt(p q), in [0, 1]; 1 iff p == q."""
    P, Q = as_rows(p), as_rows(q)
    return squeeze_like(np.sqrt(P * Q).sum(-1), p)


def kl(p, q, eps: float = EPS_KL):
    """KL(p || q) in nats, with q clipped at ``eps`` (docs/design.md §6)."""
    P, Q = as_rows(p), np.clip(as_rows(q), eps, None)
    return squeeze_like(xlogy_ratio(P, Q).sum(-1), p)


def tvd(p, q):
    """Total variation distance 0.5 * sum |p - q|, in [0, 1]."""
    P, Q = as_rows(p), as_rows(q)
    return squeeze_like(0.5 * np.abs(P - Q).sum(-1), p)


def soft_accuracy(p, q):
    """Sum over classes of min(p, q): the mass the two agree on, in [0, 1]."""
    P, Q = as_rows(p), as_rows(q)
    return squeeze_like(np.minimum(P, Q).sum(-1), p)


def argmax_labels(dist) -> np.ndarray:
    """Row argmax; ties go to the first class (numpy.argmax), docs/design.md §3."""
    return np.argmax(as_rows(dist), axis=-1)


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
    P, Q = as_rows(p), as_rows(q)
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
    P, Q = as_rows(p_true), as_rows(p_pred)
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
    return float(precision_recall_f1_support(t, p, as_rows(p_true).shape[-1])[2].mean())


def weighted_f1(p_true, p_pred) -> float:
    """Mean of per-class F1 weighted by the human-majority support."""
    t, p = argmax_labels(p_true), argmax_labels(p_pred)
    _, _, f1, support = precision_recall_f1_support(t, p, as_rows(p_true).shape[-1])
    total = support.sum()
    return float((f1 * support).sum() / total) if total else 0.0


def pred_spread(p_true, p_pred):
    """Base-2 JS distance of each prediction to the set's mean prediction
    (``p_true`` unused): its mean is 0 when every item gets the same answer,
    an item-independent answer that is at best a class prior."""
    Q = as_rows(p_pred)
    return squeeze_like(jsd(Q, np.broadcast_to(Q.mean(axis=0), Q.shape), base=2.0), p_pred)


def p_majority(p_true, p_pred):
    """Probability the prediction gives the annotators' majority class (ties:
    the first): the ``mls`` reward. It rises as a model moves toward the
    majority answer, and equals max(p) for an exact match, so it is a
    direction, not a score to maximise."""
    P, Q = as_rows(p_true), as_rows(p_pred)
    return squeeze_like(Q[np.arange(len(P)), argmax_labels(P)], p_pred)


# --- the registry --------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Metric:
    """One key of a metric block, declared once for every reader.

    ``per_item`` is also the aggregation: True, ``fn`` gives one value per
    row and the block reports their mean; False, ``fn`` gives one number for
    the whole set (accuracy, F1). ``fn`` None: a count ``shala.evaluation.evaluate``
    takes from the parse (``n``, parse failures), not a function of the two
    distributions. ``bounds``, ``identity`` (the value of ``fn(p, p)`` for
    any distributions, None when it depends on them) and ``symmetric`` are
    what the property tests check; ``slack`` is how far rounding or clipping
    may take a value past ``bounds``.
    """
    name: str
    fn: Callable[..., np.ndarray | float] | None
    per_item: bool
    higher_is_better: bool | None  # None: a diagnostic, never ranked
    bounds: tuple[float, float]
    description: str
    identity: float | None = None
    symmetric: bool = False
    slack: float = 0.0
    in_report: bool = True  # a column of the report's tables

    def score(self, p_true, p_pred) -> float:
        """The block's value on a non-empty set of rows."""
        v = self.fn(p_true, p_pred)
        return float(np.mean(v)) if self.per_item else float(v)


REGISTRY: Registry[Metric] = Registry("metric")


def register(metric: Metric) -> Metric:
    """Add an entry under its own name; its place in :data:`REGISTRY` is its place in a block."""
    return REGISTRY.add(metric.name, metric)


_UNIT, _HALF_LINE = (0.0, 1.0), (0.0, math.inf)

register(Metric(name="n", fn=None, per_item=False, higher_is_better=None, bounds=_HALF_LINE, in_report=False,
                description="rows in the slice"))
register(Metric(name="n_scored", fn=None, per_item=False, higher_is_better=None, bounds=_HALF_LINE,
                in_report=False, description="rows the metrics are computed on (failed parses left out "
                                             "under on_parse_failure: exclude)"))
register(Metric(name="parse_failure_rate", fn=None, per_item=False, higher_is_better=None, bounds=_UNIT,
                description="fraction of the slice's rows whose completion did not parse"))
register(Metric(name="mean_sum_error", fn=None, per_item=False, higher_is_better=None, bounds=_HALF_LINE,
                in_report=False, description="mean |raw sum - 1| of the parsed predictions, before renormalising"))
register(Metric(name="jsd", fn=jsd, per_item=True, higher_is_better=False, bounds=_UNIT, identity=0.0,
                symmetric=True, description="Jensen-Shannon distance, base 2"))
register(Metric(name="jsd_e", fn=partial(jsd, base=math.e), per_item=True, higher_is_better=False,
                bounds=(0.0, math.sqrt(math.log(2))), identity=0.0, symmetric=True,
                description="Jensen-Shannon distance, natural log (the ChaosNLI evaluation code)"))
register(Metric(name="bc", fn=bhattacharyya, per_item=True, higher_is_better=True, bounds=_UNIT, identity=1.0,
                symmetric=True, description="Bhattacharyya coefficient"))
# q clipped at EPS_KL and not renormalised: KL >= -log(1 + C * EPS_KL), slack enough for C <= 100
register(Metric(name="kl", fn=kl, per_item=True, higher_is_better=False, bounds=_HALF_LINE, identity=0.0,
                slack=100 * EPS_KL, description="KL(human || predicted) in nats, predicted clipped at EPS_KL"))
register(Metric(name="tvd", fn=tvd, per_item=True, higher_is_better=False, bounds=_UNIT, identity=0.0,
                symmetric=True, in_report=False, description="total variation distance (1 - soft_accuracy)"))
register(Metric(name="accuracy", fn=accuracy, per_item=False, higher_is_better=True, bounds=_UNIT, identity=1.0,
                symmetric=True, description="argmax of the prediction = argmax of the human distribution"))
# not 1 on (p, p): a class no row's argmax picks scores 0 and still counts
register(Metric(name="macro_f1", fn=macro_f1, per_item=False, higher_is_better=True, bounds=_UNIT,
                symmetric=True, description="unweighted mean of per-class F1 on argmax labels, all C classes"))
register(Metric(name="weighted_f1", fn=weighted_f1, per_item=False, higher_is_better=True, bounds=_UNIT,
                identity=1.0, description="per-class F1 on argmax labels weighted by human-majority support"))
register(Metric(name="soft_accuracy", fn=soft_accuracy, per_item=True, higher_is_better=True, bounds=_UNIT,
                identity=1.0, symmetric=True, in_report=False,
                description="mass the two distributions agree on (Kurniawan et al.)"))
register(Metric(name="soft_micro_f1", fn=soft_micro_f1, per_item=False, higher_is_better=True, bounds=_UNIT,
                identity=1.0, symmetric=True, description="soft micro F1 pooled over the set (Kurniawan et al.)"))
register(Metric(name="pred_spread", fn=pred_spread, per_item=True, higher_is_better=None, bounds=_UNIT,
                description="mean base-2 JSD of each prediction to the slice's mean prediction (0: one "
                            "answer for every item)"))
register(Metric(name="p_majority", fn=p_majority, per_item=True, higher_is_better=None, bounds=_UNIT,
                description="mean probability the prediction gives the annotators' majority class (the mls "
                            "reward; an exact match scores max(p))"))
