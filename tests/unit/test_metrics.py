"""Metrics: properties on random Dirichlet samples, agreement with
scipy/sklearn, and fixed reference values."""

from __future__ import annotations

import json
import math
from contextlib import contextmanager

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import jensenshannon
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

from shala.evaluation import metrics as M
from shala.evaluation.evaluate import evaluate_rows


def dirichlet(seed: int, n: int, c: int, alpha: float = 1.0) -> np.ndarray:
    return np.random.default_rng(seed).dirichlet(np.full(c, alpha), size=n)


# Hypothesis draws (seed, C, concentration) and we sample a batch of pairs:
# small alphas give sparse, near one-hot rows where 0·log 0 matters.
pairs = st.tuples(st.integers(0, 2**32 - 1), st.integers(2, 9),
                  st.sampled_from([0.05, 0.3, 1.0, 5.0]))


def _pq(seed, c, alpha, n=64):
    return dirichlet(seed, n, c, alpha), dirichlet(seed + 1, n, c, alpha)


# ----- fixed reference values -------------------------------------------------

def test_reference_values_two_classes():
    p, q = [0.2, 0.8], [0.6, 0.4]
    assert round(M.jsd(p, q), 6) == 0.352862
    assert round(M.bhattacharyya(p, q), 6) == 0.912096
    assert M.tvd(p, q) == pytest.approx(0.4)
    assert M.soft_accuracy(p, q) == pytest.approx(0.6)
    # KL(p || q) = .2 ln(.2/.6) + .8 ln(.8/.4)
    assert M.kl(p, q) == pytest.approx(0.2 * math.log(1 / 3) + 0.8 * math.log(2))
    # natural-log distance = base-2 distance * sqrt(ln 2)
    assert M.jsd(p, q, base=math.e) == pytest.approx(0.352862 * math.sqrt(math.log(2)), abs=1e-6)


def test_kl_clips_zero_prediction():
    # p̂ puts 0 on a class p supports: clipped at 1e-12 rather than infinite.
    assert M.kl([0.5, 0.5], [1.0, 0.0]) == pytest.approx(0.5 * math.log(0.5) + 0.5 * math.log(0.5 / 1e-12))


def test_disjoint_support_is_maximal():
    assert M.jsd([1, 0, 0], [0, 0, 1]) == pytest.approx(1.0)
    assert M.bhattacharyya([1, 0, 0], [0, 0, 1]) == 0.0
    assert M.tvd([1, 0, 0], [0, 0, 1]) == 1.0


def test_vectorised_rows_match_single_calls():
    P, Q = dirichlet(3, 5, 4), dirichlet(4, 5, 4)
    out = M.jsd(P, Q)
    assert out.shape == (5,)
    assert out[2] == pytest.approx(M.jsd(P[2], Q[2]))


# ----- properties of every registered metric ---------------------------------------
#
# Parametrised over the registry at collection, so an entry added to
# shala.evaluation.metrics.REGISTRY is checked against what it declares with no edit here.

def check_bounds(m: M.Metric, P, Q):
    v = np.asarray(m.fn(P, Q))
    assert v.shape == ((P.shape[0],) if m.per_item else ()), f"{m.name}: per_item={m.per_item}"
    lo, hi = m.bounds
    tol = 1e-12 + m.slack
    assert np.all(v >= lo - tol) and np.all(v <= hi + tol), m.name
    assert lo - tol <= m.score(P, Q) <= hi + tol, m.name


def check_identity(m: M.Metric, P, Q):
    assert np.allclose(m.fn(P, P), m.identity, rtol=0, atol=1e-12), m.name


def check_symmetric(m: M.Metric, P, Q):
    assert np.allclose(m.fn(P, Q), m.fn(Q, P), rtol=0, atol=1e-12), m.name


CHECKS = {"bounds": check_bounds, "identity": check_identity, "symmetric": check_symmetric}


def registered(prop: str) -> list:
    """Entries with a function that declare ``prop`` (every one has bounds)."""
    declares = {"bounds": lambda m: True, "identity": lambda m: m.identity is not None,
                "symmetric": lambda m: m.symmetric}[prop]
    return [pytest.param(m, id=m.name) for m in M.REGISTRY.values() if m.fn is not None and declares(m)]


@pytest.mark.parametrize("metric", registered("bounds"))
@settings(max_examples=60, deadline=None)
@given(pairs)
@example((687, 3, 0.05))  # KL -1.5e-12: below 0, within the clipping's slack
def test_bounds(metric, args):
    check_bounds(metric, *_pq(*args))


@pytest.mark.parametrize("metric", registered("identity"))
@settings(max_examples=60, deadline=None)
@given(pairs)
def test_identity(metric, args):
    check_identity(metric, *_pq(*args))


@pytest.mark.parametrize("metric", registered("symmetric"))
@settings(max_examples=60, deadline=None)
@given(pairs)
def test_symmetry(metric, args):
    check_symmetric(metric, *_pq(*args))


@settings(max_examples=60, deadline=None)
@given(pairs)
@example((687, 3, 0.05))  # KL -1.5e-12: below 0, above the clipped-q floor
def test_kl_above_gibbs_floor(args):
    # Gibbs' inequality for the KL of docs/design.md §6, whose q is clipped at
    # 1e-12 and not renormalised: KL >= -log(sum of clipped q), a few 1e-12
    # below 0 at worst (seen: -1.5e-12 for q = [2.5e-46, 9e-30, 1])
    P, Q = _pq(*args)
    floor = -np.log(np.clip(Q, M.EPS_KL, None).sum(-1))
    assert np.all(M.kl(P, Q) >= floor - 1e-13)


@settings(max_examples=60, deadline=None)
@given(pairs)
def test_jsd_of_identical_rows_is_exactly_zero(args):
    # exact, not within 1e-12: the sqrt turns a 1e-24 divergence into 1e-12
    P, _ = _pq(*args)
    assert np.all(M.jsd(P, P) == 0.0)


@contextmanager
def toy_metric(**declared):
    """Register a toy metric (half the TVD) for the duration of a block."""
    def half_tvd(p_true, p_pred):
        return 0.5 * M.tvd(p_true, p_pred)

    entry = M.register(M.Metric(**({"name": "toy_half_tvd", "fn": half_tvd, "per_item": True,
                                    "higher_is_better": False, "bounds": (0.0, 0.5), "identity": 0.0,
                                    "symmetric": True, "description": "half the TVD, for a test"} | declared)))
    try:
        yield entry
    finally:
        M.REGISTRY.remove(entry.name)


def test_registered_metric_is_checked_and_evaluated():
    rows = [{"labels": ["a", "b", "c"], "dist": [0.6, 0.3, 0.1], "completion": '{"a": 0.2, "b": 0.8}'},
            {"labels": ["a", "b", "c"], "dist": [0.0, 0.5, 0.5], "completion": '{"c": 1}'}]
    P = np.array([r["dist"] for r in rows])
    Q = np.array([[0.2, 0.8, 0.0], [0.0, 0.0, 1.0]])
    with toy_metric() as toy:
        for prop, check in CHECKS.items():
            (param,) = [p for p in registered(prop) if p.id == toy.name]
            check(param.values[0], *_pq(5, 4, 0.3))
        res = evaluate_rows([dict(r) for r in rows])
        for block in (res["overall"], *res["by_subset"].values(), *res["by_ambiguity"].values()):
            assert list(block) == list(M.REGISTRY) and list(block)[-1] == toy.name
        assert res["overall"][toy.name] == pytest.approx(0.5 * np.mean(M.tvd(P, Q)), abs=1e-12)
    assert toy.name not in M.REGISTRY
    assert all(p.id != toy.name for p in registered("bounds"))
    assert toy.name not in evaluate_rows([dict(r) for r in rows])["overall"]


@pytest.mark.parametrize("wrong, check", [({"bounds": (0.0, 0.01)}, check_bounds),
                                          ({"per_item": False}, check_bounds),
                                          ({"identity": 1.0}, check_identity)],
                         ids=["bounds", "per_item", "identity"])
def test_property_loop_catches_a_wrong_declaration(wrong, check):
    with toy_metric(**wrong) as toy:
        with pytest.raises(AssertionError, match=toy.name):
            check(toy, *_pq(5, 4, 0.3))


def test_symmetry_check_catches_an_asymmetric_metric():
    with toy_metric(name="toy_kl", fn=M.kl, bounds=(0.0, math.inf)) as toy:
        with pytest.raises(AssertionError, match="toy_kl"):
            check_symmetric(toy, *_pq(5, 4, 0.3))


def test_register_rejects_a_duplicate_name():
    with pytest.raises(ValueError, match="'jsd' is already registered"):
        M.register(M.REGISTRY["jsd"])


@settings(max_examples=60, deadline=None)
@given(pairs)
@pytest.mark.filterwarnings("ignore:invalid value encountered in sqrt")
def test_jsd_agrees_with_scipy(args):
    # Compared as divergences (squared distances): near-identical sparse rows
    # have divergences ~1e-15 where fp noise is amplified by the sqrt, so the
    # distances themselves may differ by ~1e-9 between two correct codes.
    # scipy takes the sqrt of a divergence that rounding made slightly
    # negative (NaN, with a warning); ours clips it at 0, so NaN counts as 0.
    P, Q = _pq(*args)
    for base, kw in ((2.0, {"base": 2}), (math.e, {})):
        with np.errstate(invalid="ignore"):
            ref = np.nan_to_num(jensenshannon(P, Q, axis=1, **kw), nan=0.0)
        ours = M.jsd(P, Q, base=base)
        assert np.allclose(ours**2, ref**2, rtol=0, atol=1e-12)
        assert np.allclose(ours, ref, rtol=0, atol=1e-6)


@pytest.mark.parametrize("seed", range(10))
def test_jsd_distance_agrees_with_scipy_to_1e9(seed):
    c = 2 + seed % 6
    P, Q = dirichlet(seed, 200, c), dirichlet(seed + 50, 200, c)
    assert np.allclose(M.jsd(P, Q), jensenshannon(P, Q, base=2, axis=1), rtol=0, atol=1e-9)
    assert np.allclose(M.jsd(P, Q, base=math.e), jensenshannon(P, Q, axis=1), rtol=0, atol=1e-9)


@settings(max_examples=60, deadline=None)
@given(pairs)
def test_jsd_e_is_rescaled_base2(args):
    # JS divergence in nats = bits * ln 2, so the distances differ by sqrt(ln 2);
    # a mix-up between divergence and distance would break this.
    P, Q = _pq(*args)
    assert np.allclose(M.jsd(P, Q, base=math.e), M.jsd(P, Q) * math.sqrt(math.log(2)), atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(pairs)
def test_soft_micro_f1_equals_soft_accuracy_on_distributions(args):
    # Kurniawan et al.'s test: for rows summing to 1 the two coincide.
    P, Q = _pq(*args)
    assert M.soft_micro_f1(P, Q) == pytest.approx(float(np.mean(M.soft_accuracy(P, Q))), abs=1e-12)


def test_tvd_is_one_minus_soft_accuracy():
    P, Q = dirichlet(7, 50, 5), dirichlet(8, 50, 5)
    assert np.allclose(M.tvd(P, Q), 1 - M.soft_accuracy(P, Q), atol=1e-12)


# ----- Kurniawan et al. reference values -----------------------------------------

def test_soft_micro_f1_pooled_unnormalised_rows():
    # The value from kmkurn/train-eval-hlv tests/test_evaluation.py: rows are
    # not distributions, so a per-row mean would give a different number.
    ps = np.array([[0.2, 0.3], [0.1, 0.8], [0.9, 0.7]])
    qs = np.array([[0.8, 0.1], [0.3, 0.4], [0.7, 0.4]])
    expected = 2 * (0.2 + 0.1 + 0.1 + 0.4 + 0.7 + 0.4) / (1.0 + 0.4 + 0.4 + 1.2 + 1.6 + 1.1)
    assert M.soft_micro_f1(ps, qs) == pytest.approx(expected, abs=1e-12)


def test_soft_precision_recall_f1_reference():
    bindist = lambda x: np.stack([x, 1 - x], axis=1)  # noqa: E731
    p_true = bindist(np.array([0.2, 0.3, 0.3, 0.9]))
    p_pred = bindist(np.array([0.4, 0.1, 0.7, 0.8]))
    P, R, F, N = M.soft_precision_recall_f1(p_true, p_pred)
    assert P == pytest.approx([1.4 / 2.0, 1.7 / 2.0])
    assert R == pytest.approx([1.4 / 1.7, 1.7 / 2.3])
    assert F == pytest.approx([2 * 1.4 / 3.7, 2 * 1.7 / 4.3])
    assert N == pytest.approx([1.7, 2.3])


def test_soft_prf_zero_mass_class_is_zero():
    P, R, F, N = M.soft_precision_recall_f1([[0.5, 0.5, 0.0]], [[1.0, 0.0, 0.0]])
    assert P.tolist() == [0.5, 0.0, 0.0]
    assert R.tolist() == [1.0, 0.0, 0.0]
    assert F[2] == 0.0 and N[2] == 0.0


# ----- hard metrics vs sklearn ----------------------------------------------------

def test_argmax_ties_go_to_first_class():
    assert M.argmax_labels([[0.4, 0.4, 0.2], [0.2, 0.4, 0.4], [1 / 3] * 3]).tolist() == [0, 1, 0]


def test_hard_metrics_fixed_example():
    # true argmax: 0, 1, 1, 2 ; predicted argmax: 0, 1, 2, 2
    p_true = [[.6, .2, .2], [.1, .8, .1], [.2, .5, .3], [0, .3, .7]]
    p_pred = [[.5, .3, .2], [.3, .4, .3], [.1, .2, .7], [.2, .2, .6]]
    assert M.accuracy(p_true, p_pred) == 0.75
    # per-class F1: class0 1, class1 2/3, class2 2/3
    assert M.macro_f1(p_true, p_pred) == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    assert M.weighted_f1(p_true, p_pred) == pytest.approx((1 * 1 + 2 / 3 * 2 + 2 / 3 * 1) / 4)


def test_absent_class_counts_in_macro_with_zero():
    # Class 2 never occurs: macro averages over all 3 classes (1 + 1 + 0) / 3,
    # which is what sklearn gives with labels=range(C), zero_division=0.
    p_true = [[.9, .1, 0], [.1, .9, 0]]
    assert M.macro_f1(p_true, p_true) == pytest.approx(2 / 3)
    assert M.weighted_f1(p_true, p_true) == pytest.approx(1.0)
    assert f1_score([0, 1], [0, 1], labels=[0, 1, 2], average="macro", zero_division=0) == pytest.approx(2 / 3)


@pytest.mark.parametrize("seed", range(25))
def test_hard_metrics_agree_with_sklearn(seed):
    rng = np.random.default_rng(seed)
    c = int(rng.integers(2, 8))
    n = int(rng.integers(1, 40))
    alpha = float(rng.choice([0.1, 1.0]))
    P, Q = dirichlet(seed, n, c, alpha), dirichlet(seed + 1000, n, c, alpha)
    # coarse rounding creates argmax ties, exercising the first-class rule
    if seed % 3 == 0:
        Q = np.round(Q, 1)
    t, p = np.argmax(P, 1), np.argmax(Q, 1)
    labels = list(range(c))
    assert M.accuracy(P, Q) == pytest.approx(accuracy_score(t, p), abs=1e-9)
    assert M.macro_f1(P, Q) == pytest.approx(
        f1_score(t, p, labels=labels, average="macro", zero_division=0), abs=1e-9)
    assert M.weighted_f1(P, Q) == pytest.approx(
        f1_score(t, p, labels=labels, average="weighted", zero_division=0), abs=1e-9)
    prec, rec, f1, sup = M.precision_recall_f1_support(t, p, c)
    sk = precision_recall_fscore_support(t, p, labels=labels, zero_division=0)
    for mine, theirs in zip((prec, rec, f1, sup), sk):
        assert np.allclose(mine, theirs, rtol=0, atol=1e-9)


def test_confusion_layout():
    cm = M.confusion([0, 0, 1, 2], [0, 1, 1, 1], 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [0, 1, 0]]


def test_p_majority_is_the_mls_reward_on_fixed_values():
    from shala.evaluation.metrics import p_majority
    from shala.train.rewards import mls_reward

    p = np.array([[0.7, 0.2, 0.1], [0.2, 0.4, 0.4], [0.1, 0.1, 0.8]])
    q = np.array([[0.5, 0.25, 0.25], [0.0, 0.3, 0.7], [1.0, 0.0, 0.0]])
    # majority: class 0; class 1 (tie with 2: the first); class 2
    assert p_majority(p, q).tolist() == pytest.approx([0.5, 0.3, 0.0])
    assert p_majority(p, p).tolist() == pytest.approx([0.7, 0.4, 0.8])  # an exact match scores max(p)
    labels = [["a", "b", "c"]] * 3
    completions = [json.dumps(dict(zip("abc", row))) for row in q.tolist()]
    assert mls_reward(completions=completions, labels=labels, dist=p.tolist()) == pytest.approx([0.5, 0.3, 0.0])
