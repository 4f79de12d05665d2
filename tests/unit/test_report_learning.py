"""shala.report.learning: the per-seed 'did training learn?' table, on fake runs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_report import build_tree, md_rows  # noqa: F401  (build_tree: a fixture)

from shala.report import run_report

DATASETS = {"control": (["red", "green", "blue"], (None,), "entropy", 40)}
SEEDS = (0, 1, 2)
PRIOR = np.array([0.4, 0.35, 0.25])


def _reader(dist, rng, i):
    return 0.9 * dist + 0.1 * rng.dirichlet(np.ones(dist.size))


RUNS = {
    "ref_prior": lambda dist, rng, i: PRIOR,
    "zs": lambda dist, rng, i: np.full(dist.size, 1 / dist.size),
    # seed-dependent (rng), so pairing with the same seed differs from the seed mean
    "mls": lambda dist, rng, i: np.eye(dist.size)[int(np.argmax(dist))] * 0.9 + 0.1 * rng.dirichlet(np.ones(dist.size)),
    "shala": _reader,
    "stuck": lambda dist, rng, i: PRIOR + 0.001 * i / 40,  # one answer: does not read the items
    "probe": _reader,  # the capacity probe reads them: "stuck" is a training failure
}
CONFIG = {"run_methods": ["zs", "mls", "shala", "stuck", "probe"],
          "methods": {"zs": {"trainer": "none"}, "mls": {"trainer": "grpo"}, "shala": {"trainer": "grpo"},
                      "stuck": {"trainer": "grpo"}, "probe": {"trainer": "probe"}}}
N_STEPS = 12


def _log(method, seed):
    log = [{"event": "start", "step": 0}]
    for s in range(1, N_STEPS + 1):
        collapsed = method == "stuck" and s > 6
        log.append({"event": "step", "step": s, "reward_mean": 0.5,
                    "zero_spread_frac": 1.0 if collapsed else 0.25})
        log.append({"event": "log", "step": s, "entropy": 1.0 - 0.05 * s,
                    "grad_norm": 0.0 if collapsed else 2.0})
    return log


@pytest.fixture(scope="module")
def learned(tmp_path_factory, build_tree, training_runs_factory):  # noqa: F811 (a fixture)
    root = tmp_path_factory.mktemp("results")
    metrics = build_tree(root, datasets=DATASETS, runs=RUNS, seeds=SEEDS, fail=lambda run, i: False)
    runs = training_runs_factory(root, DATASETS, ["mls", "shala", "stuck"], SEEDS,
                                 record=lambda method, seed: {"method": method, "seed": seed}, log=_log)
    out = root / "reports"
    run_report(metrics, out, runs=runs, config=CONFIG)
    return root, out, pd.read_csv(out / "learning.csv")


def test_one_row_per_trained_run_and_seed(learned):
    _, _, table = learned
    assert sorted(zip(table["method"], table["seed"])) == sorted(
        (m, s) for m in ("mls", "shala", "stuck") for s in SEEDS)


def test_health_from_the_log(learned):
    _, _, table = learned
    stuck = table[table["method"] == "stuck"]
    assert (stuck["zero_grad_steps"] == 6).all()
    # last quarter of 12 steps: steps 10..12
    assert stuck["zero_spread_last"].tolist() == pytest.approx([1.0] * 3)
    assert stuck["entropy_first"].tolist() == pytest.approx([0.95] * 3)
    assert stuck["entropy_last"].tolist() == pytest.approx([1.0 - 0.05 * 11] * 3)
    assert (table[table["method"] == "shala"]["zero_grad_steps"] == 0).all()


def test_paired_difference_matches_the_items_files(learned):
    root, _, table = learned
    prior = pd.read_csv(root / "metrics/control/ref_prior/seed0/test.items.csv", dtype={"id": str}).set_index("id")
    for seed in SEEDS:
        own = pd.read_csv(root / f"metrics/control/shala/seed{seed}/test.items.csv",
                          dtype={"id": str}).set_index("id")
        want = float(np.mean(own["jsd"] - prior.loc[own.index, "jsd"]))
        row = table[(table["method"] == "shala") & (table["seed"] == seed)].iloc[0]
        assert row["diff_ref_prior"] == pytest.approx(want, abs=1e-6)
        assert row["ci_lo_ref_prior"] - 1e-6 <= want <= row["ci_hi_ref_prior"] + 1e-6


def test_against_mls_pairs_the_same_seed(learned):
    root, _, table = learned
    read = lambda run, seed: pd.read_csv(root / f"metrics/control/{run}/seed{seed}/test.items.csv",  # noqa: E731
                                         dtype={"id": str}).set_index("id")["jsd"]
    for seed in SEEDS:
        own, mls = read("shala", seed), read("mls", seed)
        seed_mean = pd.concat([read("mls", s) for s in SEEDS], axis=1).mean(axis=1)
        row = table[(table["method"] == "shala") & (table["seed"] == seed)].iloc[0]
        assert row["diff_mls"] == pytest.approx(float(np.mean(own - mls.loc[own.index])), abs=1e-6)
        assert row["diff_mls"] != pytest.approx(float(np.mean(own - seed_mean.loc[own.index])), abs=1e-6)


def test_reads_the_items_verdict(learned):
    _, out, table = learned
    verdict = {(m, s): v for m, s, v in zip(table["method"], table["seed"], table["reads_items"])}
    assert all(verdict[("shala", s)] for s in SEEDS)
    assert not any(verdict[("stuck", s)] for s in SEEDS)    # constant answer: spread < 0.05
    md = (out / "learning.md").read_text()
    assert "- control / shala: reads the items on 3 of 3 seed(s); below mls (interval under 0) on 3 of 3." in md
    assert "- control / stuck: reads the items on 0 of 3 seed(s)" in md
    head, rows = md_rows(md)
    assert head[0] == "dataset" and len(rows) == 9
    page = (out / "report.md").read_text()
    assert page.index("## Did training learn?") < page.index("## Table 1")


def test_the_probe_names_the_cause(learned):
    """A run that does not read the items: training, where the capacity probe
    beats ref_prior; capacity, where it does not; unknown without a probe."""
    from shala.report.learning import learning_md

    _, out, table = learned
    assert "probe" not in set(table["method"])   # a read-out of the frozen model, not a trained run
    assert table["probe_reads"].eq(True).all()
    lines = {line.split(":")[0]: line for line in (out / "learning.md").read_text().splitlines()
             if line.startswith("- control / ")}
    assert "cause: training (the capacity probe reads the items" in lines["- control / stuck"]
    assert "cause" not in lines["- control / shala"]     # reads the items on every seed
    for probe, cause in ((False, "cause: capacity (the capacity probe does not beat ref_constant"),
                         (None, "capacity or training cannot be told apart: no capacity probe run")):
        md = learning_md(table.assign(probe_reads=probe))
        assert cause in next(line for line in md.splitlines() if line.startswith("- control / stuck"))


def test_the_probe_is_judged_against_the_best_constant_where_it_was_run():
    """On skewed labels a constant beats the prior: a probe that beats ref_prior
    but not ref_constant supports no more than one answer for all."""
    from shala.report.learning import probe_reads

    ids = [str(i) for i in range(60)]
    rows = [{"run": "probe", "id": i, "seed": 0, "jsd": 0.20} for i in ids]
    rows += [{"run": "ref_prior", "id": i, "seed": 0, "jsd": 0.35} for i in ids]
    rows += [{"run": "ref_constant", "id": i, "seed": 0, "jsd": 0.15 + 0.01 * (int(i) % 3)} for i in ids]
    per_item = pd.DataFrame(rows)
    config = {"methods": {"probe": {"trainer": "probe"}}}
    runs = ["probe", "ref_constant", "ref_prior"]
    assert probe_reads(per_item, runs, config, per_item[per_item.run == "ref_prior"]) is True
    assert probe_reads(per_item, runs, config, per_item[per_item.run == "ref_constant"]) is False


def test_reward_constant_line_states_both_single_answers():
    """One line per dataset with both references, their mean JSD over seeds; a dataset without
    ref_shala_constant and the per-subset rows ('toy/a') give none."""
    from shala.report.learning import reward_constant_md

    df = pd.DataFrame([
        {"dataset": "toy", "run": "ref_shala_constant", "seed": 0, "jsd": 0.499},
        {"dataset": "toy", "run": "ref_constant", "seed": 0, "jsd": 0.175},
        {"dataset": "toy", "run": "ref_prior", "seed": 0, "jsd": 0.346},
        {"dataset": "toy/a", "run": "ref_shala_constant", "seed": 0, "jsd": 0.9},
        {"dataset": "toy/a", "run": "ref_constant", "seed": 0, "jsd": 0.1},
        {"dataset": "other", "run": "ref_constant", "seed": 0, "jsd": 0.2},
    ])
    lines = [x for x in reward_constant_md(df).splitlines() if x]
    assert lines == ["- toy: the shala reward's best single answer (ref_shala_constant) scores JSD 0.499 "
                     "(ref_constant 0.175, ref_prior 0.346): a run that does not read the items and maximises "
                     "this reward is pushed toward that answer."]
    assert reward_constant_md(df[df["dataset"] == "other"]) == ""
