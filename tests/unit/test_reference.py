"""Reference predictors: exact completions on hand-made items, and
old_labels on the real ChaosNLI files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_DATA, needs_shared_data

from shala.errors import ConfigError, InputError
from shala.evaluation.evaluate import run_evaluate
from shala.evaluation.reference import REFERENCE_PREDICTORS, run_reference
from shala.parsing import parse_distribution

CHAOSNLI = SHARED_DATA / "chaosnli"  # ../shared/data
NLI = ["entailment", "neutral", "contradiction"]


def write_split(d: Path, split: str, items):
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{split}.jsonl").write_text("".join(json.dumps(i) + "\n" for i in items), encoding="utf-8")


@pytest.fixture
def data_dir(tmp_path, item_factory):
    d = tmp_path / "data"
    write_split(d, "train", [item_factory(counts, id=id, split="train")
                             for id, counts in (("t1", [4, 0, 0]), ("t2", [1, 1, 0]), ("t3", [0, 1, 3]))])
    write_split(d, "test", [item_factory(counts, id=id, split="test")
                            for id, counts in (("x1", [1, 2, 1]), ("x2", [2, 2, 0]))])
    return d


def completions(path: Path) -> list[str]:
    return [json.loads(line)["completion"] for line in path.read_text().splitlines()]


def test_registry_names():
    assert list(REFERENCE_PREDICTORS) == ["uniform", "prior", "constant", "shala_constant", "majority", "old_labels"]


def test_uniform_exact(data_dir, tmp_path):
    out = tmp_path / "u.jsonl"
    assert run_reference("uniform", data_dir, "test", out) == 2
    # 6 digits, the rounding remainder goes to the first (argmax) class
    assert completions(out) == ['{"a": 0.333334, "b": 0.333333, "c": 0.333333}'] * 2


def test_prior_is_mean_of_train_dists(data_dir, tmp_path):
    out = tmp_path / "p.jsonl"
    run_reference("prior", data_dir, "test", out)
    # mean of [1,0,0], [.5,.5,0], [0,.25,.75]; pooled counts would give [5,2,3]/10
    assert completions(out) == ['{"a": 0.5, "b": 0.25, "c": 0.25}'] * 2


def test_majority_one_hot_ties_first(data_dir, tmp_path):
    out = tmp_path / "m.jsonl"
    run_reference("majority", data_dir, "test", out)
    # x2 has a tie a/b: the first class wins, as for the item's "majority"
    assert completions(out) == ['{"a": 0.0, "b": 1.0, "c": 0.0}', '{"a": 1.0, "b": 0.0, "c": 0.0}']


def test_rows_keep_the_item_and_evaluate(data_dir, tmp_path):
    out = tmp_path / "m.jsonl"
    run_reference("majority", data_dir, "test", out)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    src = [json.loads(line) for line in (data_dir / "test.jsonl").read_text().splitlines()]
    assert [{k: v for k, v in r.items() if k != "completion"} for r in rows] == src
    res = run_evaluate(out, tmp_path / "metrics.json")
    assert res["overall"]["accuracy"] == 1.0 and res["parse_failure_rate"] == 0.0


def test_unknown_reference_predictor(data_dir, tmp_path):
    with pytest.raises(ConfigError, match="unknown reference predictor"):
        run_reference("oracle", data_dir, "test", tmp_path / "o.jsonl")


def test_missing_split_file(data_dir, tmp_path):
    with pytest.raises(InputError, match="validation.jsonl"):
        run_reference("uniform", data_dir, "validation", tmp_path / "o.jsonl")


def test_old_labels_rejects_other_datasets(data_dir, tmp_path):
    out = tmp_path / "o.jsonl"
    with pytest.raises(InputError, match="only for ChaosNLI"):
        run_reference("old_labels", data_dir, "test", out, source=CHAOSNLI)
    assert not out.exists()


# ----- old_labels on the real ChaosNLI -------------------------------------------

needs_chaosnli = needs_shared_data("chaosnli", "chaosNLI_snli.jsonl")


@pytest.fixture
def chaos_item(item_factory):
    """A ChaosNLI item (NLI labels) with these counts."""
    return lambda counts, **fields: item_factory(counts, NLI, dataset="chaosnli", **fields)


@needs_chaosnli
def test_old_labels_real_chaosnli(tmp_path, chaos_item):
    d = tmp_path / "chaos"
    # real uids; the 100-vote counts are from the files, the old votes are
    # [n, n, n, e, e] for the SNLI item
    test_items = [chaos_item([30, 70, 0], id="2407214681.jpg#0r1n", split="test"),
                  chaos_item([12, 68, 20], id="50830c", split="test")]
    write_split(d, "train", [chaos_item([1, 0, 0], id="t", split="train")])
    write_split(d, "test", test_items)
    out = tmp_path / "old.jsonl"
    assert run_reference("old_labels", d, "test", out, source=CHAOSNLI) == 2
    got = completions(out)
    assert got[0] == '{"entailment": 0.4, "neutral": 0.6, "contradiction": 0.0}'
    assert parse_distribution(got[0], NLI).dist.tolist() == pytest.approx([0.4, 0.6, 0.0])
    lines = (CHAOSNLI / "chaosNLI_mnli_m.jsonl").read_text(encoding="utf-8").splitlines()
    expected = json.loads(next(ln for ln in lines if '"uid": "50830c"' in ln))["old_labels"]
    want = [expected.count(lab) / len(expected) for lab in NLI]
    assert parse_distribution(got[1], NLI).dist.tolist() == pytest.approx(want)


@needs_chaosnli
def test_old_labels_unknown_id_and_missing_source(tmp_path, chaos_item):
    d = tmp_path / "chaos"
    write_split(d, "train", [chaos_item([1, 0, 0], id="t", split="train")])
    write_split(d, "test", [chaos_item([1, 0, 0], id="no-such-uid", split="test")])
    with pytest.raises(InputError, match="no-such-uid"):
        run_reference("old_labels", d, "test", tmp_path / "o.jsonl", source=CHAOSNLI)
    with pytest.raises(ConfigError, match="source"):
        run_reference("old_labels", d, "test", tmp_path / "o.jsonl")
    assert not (tmp_path / "o.jsonl").exists()


def _mean_jsd(P, q):
    """Mean base-2 JS distance, from scipy's relative entropy (not shala's code)."""
    from scipy.special import rel_entr

    P, q = np.asarray(P, float), np.asarray(q, float)
    M = (P + q) / 2
    js = (rel_entr(P, M).sum(1) + rel_entr(q, M).sum(1)) / 2 / np.log(2)
    return float(np.mean(np.sqrt(np.maximum(js, 0))))


@pytest.mark.parametrize("C,seed", [(2, 0), (3, 1), (4, 2), (5, 3)])
def test_best_constant_beats_every_other_constant(C, seed):
    """The constant answer is at least as close (mean JSD, scipy's) as the prior, uniform and
    1,000 random candidates, on train sets drawn from a Dirichlet."""
    from shala.evaluation.reference import best_constant

    rng = np.random.default_rng(seed)
    P = rng.dirichlet(np.full(C, 0.3), size=200)
    q = best_constant(P)
    assert q.shape == (C,) and abs(q.sum() - 1) < 1e-9 and (q >= 0).all()
    best = _mean_jsd(P, q)
    for other in [P.mean(0), np.full(C, 1 / C), *rng.dirichlet(np.ones(C), size=1000)]:
        assert best <= _mean_jsd(P, other) + 1e-6


def test_best_constant_two_classes_matches_a_grid():
    from shala.evaluation.reference import best_constant

    rng = np.random.default_rng(7)
    P = rng.dirichlet([0.5, 2.0], size=150)
    grid = np.linspace(0, 1, 2001)
    scores = [_mean_jsd(P, [g, 1 - g]) for g in grid]
    assert _mean_jsd(P, best_constant(P)) <= min(scores) + 1e-6
    assert abs(best_constant(P)[0] - grid[int(np.argmin(scores))]) < 2e-3


def test_on_skewed_labels_the_best_constant_is_not_the_prior():
    """77 % unanimous: the prior (0.86, 0.14) is far from the best single answer, nearly all class 0."""
    from shala.evaluation.reference import best_constant

    P = np.array([[1.0, 0.0]] * 77 + [[0.4, 0.6]] * 23)
    q = best_constant(P)
    assert q[0] > 0.99
    assert _mean_jsd(P, q) < _mean_jsd(P, P.mean(0)) - 0.1


def _mean_reward(P, h, q):
    """The shala reward's train mean, H~(p)·(1 − JSD), the JSD from scipy's relative entropy."""
    return float(np.mean([w * (1 - _mean_jsd(p[None, :], q)) for p, w in zip(P, h)]))


def _norm_entropy(P):
    from scipy.stats import entropy

    return np.array([entropy(p, base=2) / np.log2(len(p)) for p in P])


@pytest.mark.parametrize("C,seed", [(2, 4), (3, 5)])
def test_shala_constant_has_the_highest_mean_reward(C, seed):
    """The weighted optimum scores at least the reward of the unweighted one, the prior, uniform and
    1,000 random candidates, on Dirichlet train sets with a third of the items unanimous."""
    from shala.evaluation.reference import best_constant

    rng = np.random.default_rng(seed)
    P = np.vstack([rng.dirichlet(np.full(C, 0.5), size=120), np.eye(C)[rng.integers(0, C, size=60)]])
    h = _norm_entropy(P)
    q = best_constant(P, h)
    best = _mean_reward(P, h, q)
    for other in [best_constant(P), P.mean(0), np.full(C, 1 / C), *rng.dirichlet(np.ones(C), size=1000)]:
        assert best >= _mean_reward(P, h, other) - 1e-6


def test_shala_constant_ignores_unanimous_items(tmp_path, item_factory):
    """Three unanimous 'a' items pay no reward for any answer, so the one 50/50 item decides: the
    reward's best answer is 50/50, while the JSD-optimal constant is nearly all 'a'."""
    d = tmp_path / "data"
    write_split(d, "train", [item_factory(c, ("a", "b"), id=f"t{i}", split="train")
                             for i, c in enumerate([[4, 0], [4, 0], [4, 0], [2, 2]])])
    write_split(d, "test", [item_factory([3, 1], ("a", "b"), id="x1", split="test")])
    run_reference("shala_constant", d, "test", tmp_path / "s.jsonl")
    run_reference("constant", d, "test", tmp_path / "c.jsonl")
    assert completions(tmp_path / "s.jsonl") == ['{"a": 0.5, "b": 0.5}']
    assert parse_distribution(completions(tmp_path / "c.jsonl")[0], ["a", "b"]).dist[0] > 0.85
