"""shala.report on fake metrics files built with shala.evaluation.evaluate, and fake training runs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from shala.errors import ConfigError, InputError
from shala.evaluation.evaluate import run_evaluate
from shala.evaluation.significance import bootstrap_ci
from shala.report import OUTPUTS, run_report
from shala.report.load import load_literature, load_paper, package_data
from shala.report.paired import pairs

NLI = ["entailment", "neutral", "contradiction"]
TOY = ["a", "b", "c", "d"]
CONFIG = {"run_methods": ["zs", "mls", "shala_no_ambi", "shala"]}
SEEDS = (0, 1)
DATASETS = {"chaosnli": (NLI, ("snli", "mnli"), "entropy", 40),
            "toy": (TOY, (None,), "active", 30)}


def _weighted(w):
    """w · human + (1 − w) · random: closer to the annotators as w grows."""
    return lambda dist, rng, i: w * dist + (1 - w) * rng.dirichlet(np.full(dist.size, 0.8))


def _collapse(dist, rng, i):
    """MLS-like: (almost) all mass on one class, the majority on 70% of items."""
    c = int(np.argmax(dist)) if i % 10 < 7 else (int(np.argmax(dist)) + 1) % dist.size
    return np.eye(dist.size)[c] * 0.98 + 0.02 / dist.size


RUNS = {"zs": _weighted(0.2), "mls": _weighted(0.5), "shala": _weighted(0.8),
        "ref_uniform": lambda dist, rng, i: np.full(dist.size, 1 / dist.size)}


@pytest.fixture(scope="session")
def build_tree(predictions_factory):
    """``build_tree(root, datasets=DATASETS, runs=RUNS, seeds=SEEDS, items=True, fail=...)``:
    metrics files results/metrics/{dataset}/{run}/seed{seed}/test.json, each
    from a predictions file of the same items (drawn once per dataset) with the
    run's answers ``spec(dist, rng, i)``, ``no idea`` where ``fail(run, i)``; returns their paths."""
    def predictions(dataset, run, seed, spec, datasets, fail):
        labels, subsets, scheme, n = datasets[dataset]
        return predictions_factory(n, seed=len(dataset), labels=labels, subsets=subsets, dataset=dataset,
                                   id_prefix=f"{dataset}-", ambiguity=scheme,
                                   pred_seed=1000 * seed + 7 * len(run) + len(dataset),
                                   predict=lambda dist, rng, i: _normalised(spec(dist, rng, i)),
                                   fail=lambda i: fail(run, i))

    def build(root, datasets=DATASETS, runs=RUNS, seeds=SEEDS, items=True,
              fail=lambda run, i: run == "zs" and i == 3):
        paths = []
        for dataset in datasets:
            for run, spec in runs.items():
                for seed in (seeds if not run.startswith("ref_") else seeds[:1]):
                    d = root / "metrics" / dataset / run / f"seed{seed}"
                    d.mkdir(parents=True)
                    pred = d / "pred.jsonl"
                    rows = predictions(dataset, run, seed, spec, datasets, fail)
                    pred.write_text("".join(json.dumps(r) + "\n" for r in rows))
                    run_evaluate(pred, d / "test.json", items_out=(d / "test.items.csv") if items else None)
                    paths.append(d / "test.json")
        return paths
    return build


def _normalised(pred):
    return pred / pred.sum()


@pytest.fixture(scope="session")
def write_runs(training_runs_factory):
    """``write_runs(root, datasets, methods, seeds=SEEDS, n_steps=30, scale=None, prompts=None)``:
    run records models/{dataset}/{method}/seed{seed}/run.json with a train_log.jsonl; returns their paths."""
    def write(root, datasets, methods, seeds=SEEDS, n_steps=30, scale=None, prompts=None):
        def record(method, seed):
            full = {"generation_batch_size": 4 * (prompts or {}).get(method, 2), "num_generations": 4}
            return {"method": method, "seed": seed,
                    "grpo_config": {"recorded": {"scale_rewards": (scale or {}).get(method, "group")},
                                    "full": full}}

        def log(method, seed):
            k = methods.index(method)
            return [{"event": "start", "step": 0}] + [
                {"event": "step", "step": s, "reward_mean": 0.3 + 0.01 * s * (k + 1) + 0.02 * seed,
                 "parse_rate": min(1.0, 0.5 + 0.02 * s), "zero_spread_frac": 0.4 - 0.01 * s}
                for s in range(1, n_steps + 1)]

        return training_runs_factory(root, datasets, methods, seeds, record=record, log=log)
    return write


@pytest.fixture(scope="module")
def report(tmp_path_factory, build_tree, write_runs):
    root = tmp_path_factory.mktemp("results")
    metrics = build_tree(root)
    runs = write_runs(root, DATASETS, ["mls", "shala"])
    out = root / "reports"
    paths = run_report(metrics, out, runs=runs, config=CONFIG)
    return root, out, paths, metrics, runs


def metrics_json(root, dataset, run, seed):
    return json.loads((root / "metrics" / dataset / run / f"seed{seed}" / "test.json").read_text())


def per_item(root, dataset, run):
    frames = [pd.read_csv(p, dtype={"id": str}) for p in sorted((root / "metrics" / dataset / run).glob("seed*/test.items.csv"))]
    return pd.concat(frames).groupby("id")["jsd"].mean()


def md_rows(text):
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines() if line.startswith("| ")]
    return rows[0], rows[1:]


def test_all_outputs_written(report):
    _, out, paths, _, _ = report
    assert [p.name for p in paths] == OUTPUTS
    for p in paths:
        assert p.is_file() and p.stat().st_size > 0, p
    page = (out / "report.md").read_text()
    for name in ("fig_ambiguity.png", "fig_per_class.png", "fig_training.png"):
        assert f"]({name})" in page
    for title in ("## Table 1", "## Table 2", "## The paper's claims", "## Figures"):
        assert page.count(title) == 1, title
    assert page.count("## Paired tests") == 1
    assert page.count("| dataset | method | vs |") == 1  # the paired-test table, once


def test_table1_values_match_metrics_files(report):
    root, out, _, _, _ = report
    t1 = pd.read_csv(out / "table1.csv")
    assert {"run", "jsd_mean", "parse_failure_rate_mean", "jsd_paper", "n_seeds", "jsd_rel_zs"} <= set(t1.columns)
    # each dataset, and ChaosNLI's subsets as dataset/subset rows
    assert set(t1.dataset) == {"chaosnli", "chaosnli/mnli", "chaosnli/snli", "toy"}
    for dataset in DATASETS:
        for run in RUNS:
            row = t1[(t1.dataset == dataset) & (t1.run == run)].iloc[0]
            seeds = SEEDS if not run.startswith("ref_") else SEEDS[:1]
            assert row.n_seeds == len(seeds)
            for metric in ("jsd", "bc", "kl", "accuracy", "macro_f1", "weighted_f1", "pred_spread"):
                vals = [metrics_json(root, dataset, run, s)["overall"][metric] for s in seeds]
                assert row[f"{metric}_mean"] == pytest.approx(np.mean(vals), abs=1e-6), (dataset, run, metric)
            zs = np.mean([metrics_json(root, dataset, "zs", s)["overall"]["jsd"] for s in SEEDS])
            assert row.jsd_rel_zs == pytest.approx(100 * (row.jsd_mean - zs) / zs, abs=1e-3)
            x = per_item(root, dataset, run).to_numpy()
            assert (row.jsd_ci_lo, row.jsd_ci_hi) == pytest.approx(bootstrap_ci(x, seed=0), abs=1e-6)
            assert row.jsd_ci_n_items == DATASETS[dataset][3]
    sub = t1[(t1.dataset == "chaosnli/mnli") & (t1.run == "shala")].iloc[0]
    want = np.mean([metrics_json(root, "chaosnli", "shala", s)["by_subset"]["mnli"]["jsd"] for s in SEEDS])
    assert sub.jsd_mean == pytest.approx(want, abs=1e-6)
    assert sub.jsd_ci_n_items == 20


def test_table1_paper_columns_equal_tables_yaml(report):
    _, out, _, _, _ = report
    paper_doc = yaml.safe_load(package_data("paper_tables.yaml").read_text())
    paper = paper_doc["table1"]
    t1 = pd.read_csv(out / "table1.csv")
    for row in t1.itertuples():
        for metric in ("jsd", "bc", "accuracy", "macro_f1", "weighted_f1"):
            want = (paper.get(row.dataset) or {}).get(row.run, {}).get(metric)
            got = getattr(row, f"{metric}_paper")
            assert (np.isnan(got) if want is None else got == want), (row.dataset, row.run, metric)
    assert t1.set_index(["dataset", "run"]).loc[("chaosnli/mnli", "mls"), "jsd_paper"] == 0.510
    header, body = md_rows((out / "table1.md").read_text())
    col = header.index("jsd (paper)")
    cells = {(r[0], r[1]): r[col] for r in body}
    assert cells[("chaosnli", "shala")] == "0.181" and cells[("chaosnli/snli", "zs")] == "0.375"
    assert cells[("toy", "shala")] == "–" and cells[("chaosnli", "ref_uniform")] == "–"
    assert "Qwen2.5-Omni-7B, full training data, one seed" in (out / "table1.md").read_text()
    # the packaged copy is the shared file's content
    shared = Path(__file__).resolve().parents[3] / "shared" / "paper" / "tables.yaml"
    if shared.is_file():
        assert yaml.safe_load(shared.read_text()) == paper_doc


def test_table1_md_bold_is_best_model_run(report):
    root, out, _, _, _ = report
    header, body = md_rows((out / "table1.md").read_text())
    jcol = header.index("jsd")
    for dataset in DATASETS:
        means = {run: np.mean([metrics_json(root, dataset, run, s)["overall"]["jsd"] for s in SEEDS])
                 for run in RUNS if not run.startswith("ref_")}
        uniform = metrics_json(root, dataset, "ref_uniform", 0)["overall"]["jsd"]
        eligible = {run: m for run, m in means.items() if m <= uniform}  # ¶ rows are never bold in JSD
        bold = [r[1].split()[0] for r in body if r[0] == dataset and r[jcol].startswith("**")]
        assert bold == ([min(eligible, key=eligible.get)] if eligible else [])
        zs_row = next(r for r in body if r[0] == dataset and r[1].split()[0] == "zs")
        assert zs_row[header.index("jsd vs zs")] == "–"
        assert re.fullmatch(r"\[\d\.\d{4}, \d\.\d{4}\]", zs_row[header.index("jsd 95% CI")])
    tex = (out / "table1.tex").read_text()
    assert r"\textbf{" in tex and r"\begin{tabular}" in tex


def test_significance_one_row_per_pair_matches_numpy_and_scipy(report):
    root, out, _, _, _ = report
    sig = pd.read_csv(out / "significance.csv")
    assert {"method", "baseline", "n_items", "mean_diff", "ci_lo", "ci_hi", "p_value"} <= set(sig.columns)
    for dataset in DATASETS:
        d = sig[sig.dataset == dataset]
        assert sorted(zip(d.method, d.baseline)) == [("mls", "zs"), ("shala", "mls"), ("shala", "zs")]
    for row in sig.itertuples():
        a, b = per_item(root, row.dataset, row.method), per_item(root, row.dataset, row.baseline)
        ids = sorted(set(a.index) & set(b.index))
        diff = a.loc[ids].to_numpy() - b.loc[ids].to_numpy()
        assert row.mean_diff == pytest.approx(diff.mean(), abs=1e-9)
        assert row.n_items == len(ids)
        assert row.p_value == pytest.approx(stats.wilcoxon(a.loc[ids], b.loc[ids]).pvalue, rel=1e-6)
        assert row.ci_lo <= row.mean_diff <= row.ci_hi
        assert row.p_value <= row.p_holm <= 1
    assert (sig[(sig.method == "shala") & (sig.baseline == "zs")].mean_diff < 0).all()


def test_pairs_cover_weight_variants_and_sft_soft():
    runs = ["zs", "mls", "shala_no_ambi", "shala", "shala_batch", "shala_no_ambi_batch", "sft_soft", "ref_prior",
            "ref_uniform"]
    trainers = {"zs": "none", "sft_soft": "sft"}  # a run is trained by its trainer, not its name
    got = pairs(runs, {"methods": {m: {"trainer": trainers.get(m, "grpo")} for m in runs if m[:4] != "ref_"}})
    assert ("mls", "zs") not in pairs(runs, None), "without trainers no run counts as trained"
    assert len(got) == len(set(got)) and not any((b, m) in got for m, b in got)
    for m in ("mls", "shala_no_ambi", "shala", "shala_batch", "sft_soft"):
        assert (m, "zs") in got
    for m in ("shala_no_ambi", "shala", "shala_batch", "sft_soft"):
        assert (m, "mls") in got
    for m in ("shala_no_ambi", "shala", "shala_batch"):
        assert (m, "sft_soft") in got
    assert {("shala", "shala_no_ambi"), ("shala_batch", "shala_no_ambi"), ("shala_batch", "shala")} <= set(got)
    assert ("shala_batch", "shala_no_ambi_batch") in got  # claim 3's fair pair
    # every trained method against the label prior, and no reference predictor as the method
    assert {m for m, b in got if b == "ref_prior"} == {"mls", "shala_no_ambi", "shala", "shala_batch",
                                                        "shala_no_ambi_batch", "sft_soft"}
    assert not any(m.startswith("ref_") for m, _ in got) and not any("ref_uniform" in p for p in got)
    assert pairs(["zs", "ref_uniform"], None) == []


def test_table2_has_literature_and_paper_systems(report):
    root, out, _, _, _ = report
    t2 = pd.read_csv(out / "table2.csv")
    pub = t2[t2.kind == "published"]
    lit = [e for e in load_literature() if e["dataset"] == "chaosnli"]
    assert len(pub[pub.origin == "literature"]) == len(lit)
    paper = [r for r in load_paper()["table2"] if r["dataset"].startswith("chaosnli")]
    pp = pub[pub.origin == "paper Table 2"]
    assert len(pp) == sum(sum(r.get(m) is not None for m in ("jsd", "bc", "accuracy", "macro_f1", "weighted_f1"))
                          for r in paper)
    cb = pp[(pp.model == "Chaos-Benchmark") & (pp.benchmark == "ChaosNLI-M")].set_index("metric")
    assert cb.loc["jsd_e", "value"] == 0.306 and cb.loc["jsd_e", "js_base"] == "e" and "jsd" not in cb.index
    dist = pp[(pp.model == "Dist. NLI") & (pp.benchmark == "ChaosNLI-S")].set_index("metric")
    assert dist.loc["jsd", "value"] == 0.181 and str(dist.loc["jsd", "js_base"]) in ("2", "2.0")
    ours = t2[(t2.kind == "ours") & (t2.model == "shala") & (t2.metric == "jsd_e") & (t2.benchmark == "ChaosNLI-M")]
    vals = [metrics_json(root, "chaosnli", "shala", s)["by_subset"]["mnli"]["jsd_e"] for s in SEEDS]
    assert ours.value.tolist() == [pytest.approx(np.mean(vals), abs=1e-6)]
    assert set(t2.dataset) == {"chaosnli"}  # no published numbers for toy
    md = (out / "table2.md").read_text()
    assert "0.3060 (base e)" in md and "0.1810 (base e)" not in md and "0.83" in md
    assert "RoBERTa-large" in md and "LLM-Explain" in md and "[1] " in md
    assert r"\begin{tabular}" in (out / "table2.tex").read_text()


def test_figures_are_valid_images(report):
    import matplotlib.image as mpimg

    _, out, _, _, _ = report
    for stem in ("fig_ambiguity", "fig_per_class", "fig_training"):
        img = mpimg.imread(out / f"{stem}.png")
        assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 400 and img.shape[2] in (3, 4)
        assert img.std() > 0  # not blank
        assert (out / f"{stem}.pdf").read_bytes().startswith(b"%PDF")


def test_claims_on_the_shared_fixture(report):
    _, out, _, _, _ = report
    claims = pd.read_csv(out / "claims.csv", keep_default_na=False)
    assert set(claims.claim) == {1, 2, 3, 4, 5}
    c3 = claims[claims.claim == 3]
    assert (c3.verdict == "cannot tell").all()  # no shala_no_ambi run
    c5 = claims[claims.claim == 5]
    assert c5.dataset.tolist() == ["chaosnli"]  # the only dataset with a contradiction class
    page = (out / "report.md").read_text()
    assert "**Claim 1.**" in page and "**Claim 5.**" in page


def test_report_is_deterministic(report, tmp_path):
    _, out, _, metrics, runs = report
    again = run_report(list(reversed(metrics)), tmp_path, runs=runs, config=CONFIG)
    for p in again:
        assert p.read_bytes() == (out / p.name).read_bytes(), p.name


# --------------------------------------------------------------------------- constructed claims and flags

CLAIM_DATA = {"chaosnli": (NLI, ("snli", "mnli"), "entropy", 60), "toy": (TOY, (None,), "entropy", 60)}


def test_claims_support_and_refute_constructed_metrics(tmp_path, build_tree, write_runs):
    uniformish = lambda dist, rng, i: 0.5 / dist.size + 0.5 * rng.dirichlet(np.full(dist.size, 0.8))  # noqa: E731
    runs = {"zs": uniformish, "mls": _collapse, "shala_no_ambi": _weighted(0.6),
            "shala": _weighted(0.6), "shala_batch": lambda d, rng, i: 0.95 * d + 0.05 / d.size}
    metrics = build_tree(tmp_path, datasets={"chaosnli": CLAIM_DATA["chaosnli"]}, runs=runs, seeds=(0,))
    # toy: MLS as good as SHALA (JSD falls): claim 1 is refuted there
    toy = dict(runs, mls=lambda d, rng, i: 0.95 * d + 0.05 / d.size)
    metrics += build_tree(tmp_path, datasets={"toy": CLAIM_DATA["toy"]}, runs=toy, seeds=(0,))
    recs = write_runs(tmp_path, ["chaosnli", "toy"], ["mls", "shala_no_ambi", "shala", "shala_batch"], seeds=(0,),
                      scale={"shala_batch": "batch"})
    out = tmp_path / "r"
    run_report(metrics, out, runs=recs, config={"run_methods": list(runs)})
    claims = pd.read_csv(out / "claims.csv", keep_default_na=False).set_index(["claim", "dataset"])
    assert claims.loc[(1, "chaosnli"), "verdict"] == "supports"
    assert claims.loc[(1, "toy"), "verdict"] == "refutes" and "JSD fell" in claims.loc[(1, "toy"), "reason"]
    assert claims.loc[(2, "chaosnli"), "verdict"] == "supports"
    assert claims.loc[(3, "chaosnli"), "verdict"] == "supports"  # shala_batch (batch) beats shala_no_ambi
    assert "scale_rewards: group" in claims.loc[(3, "chaosnli"), "text"]
    page = (out / "report.md").read_text()
    assert "chaosnli: **supports**" in page and "toy: **refutes**" in page
    # claim 4 follows its rule on the metrics files: the least BC drop is a SHALA run, the most is mls's
    deg = {}
    for run in runs:
        b = metrics_json(tmp_path, "chaosnli", run, 0)["by_ambiguity"]
        deg[run] = b["low"]["bc"] - b["high"]["bc"]
    # (a rise counts as no drop; drops within 0.005 tie)
    loss = {r: max(d, 0.0) for r, d in deg.items()}
    least_ok = any(loss[r] <= min(loss.values()) + 0.005 for r in loss if r.startswith("shala"))
    most_ok = 0.005 < loss["mls"] >= max(loss.values()) - 0.005
    want = "supports" if least_ok and most_ok else "refutes"
    assert claims.loc[(4, "chaosnli"), "verdict"] == want
    # without the batch-scaled run, the weight cancels under group scaling: cannot tell
    out2 = tmp_path / "r2"
    run_report([p for p in metrics if "shala_batch" not in str(p)], out2,
               runs=[p for p in recs if "shala_batch" not in str(p)], config={"run_methods": list(runs)})
    c3 = pd.read_csv(out2 / "claims.csv", keep_default_na=False).set_index(["claim", "dataset"]).loc[(3, "chaosnli")]
    assert c3.verdict == "cannot tell" and "group" in c3.reason
    # one prompt per generation batch: batch scaling is group scaling, the weight cancels again
    out3 = tmp_path / "r3"
    recs1 = write_runs(tmp_path / "one", ["chaosnli"], ["mls", "shala_no_ambi", "shala", "shala_batch"], seeds=(0,),
                       scale={"shala_batch": "batch"}, prompts={"shala_batch": 1})
    run_report([p for p in metrics if "toy" not in str(p)], out3, runs=recs1, config={"run_methods": list(runs)})
    c3 = pd.read_csv(out3 / "claims.csv", keep_default_na=False).set_index(["claim", "dataset"]).loc[(3, "chaosnli")]
    assert c3.verdict == "cannot tell" and "holds one prompt" in c3.reason


@pytest.mark.parametrize("weighted_better", [True, False])
def test_claim3_on_the_batch_pair_alone(tmp_path, build_tree, write_runs, weighted_better):
    # the replication's pair: shala_batch vs shala_no_ambi_batch, both batch-scaled with 2 prompts per
    # generation batch, and no shala_no_ambi run: the claim is judged on that pair's paired test
    good, bad = (lambda d, rng, i: 0.95 * d + 0.05 / d.size), _weighted(0.6)
    runs = {"zs": _weighted(0.3), "mls": _collapse, "shala_batch": good if weighted_better else bad,
            "shala_no_ambi_batch": bad if weighted_better else good}
    metrics = build_tree(tmp_path, datasets={"chaosnli": CLAIM_DATA["chaosnli"]}, runs=runs, seeds=(0,))
    recs = write_runs(tmp_path, ["chaosnli"], ["mls", "shala_batch", "shala_no_ambi_batch"], seeds=(0,),
                      scale={"shala_batch": "batch", "shala_no_ambi_batch": "batch"})
    run_report(metrics, tmp_path / "r", runs=recs, config={"run_methods": list(runs)})
    c3 = pd.read_csv(tmp_path / "r" / "claims.csv", keep_default_na=False).set_index(["claim", "dataset"]).loc[
        (3, "chaosnli")]
    assert c3.verdict == ("supports" if weighted_better else "refutes")
    assert "shala_batch (scale_rewards: batch) vs shala_no_ambi_batch" in c3.text


def test_parse_flagged_zs_is_never_best_and_constant_answer_is_flagged(tmp_path, build_tree):
    # near-uniform annotators: the uniform fallback of a failed parse has the lowest JSD
    data = {"flat": (NLI, (None,), "entropy", 100)}
    runs = {"zs": _weighted(0.2), "mls": _collapse, "shala": lambda d, rng, i: np.array([0.6, 0.3, 0.1]),
            "ref_prior": lambda d, rng, i: np.array([0.4, 0.35, 0.25])}
    metrics = build_tree(tmp_path, datasets=data, runs=runs, seeds=(0,),
                         fail=lambda run, i: run == "zs" and i < 97)
    out = tmp_path / "r"
    trainers = {"zs": {"trainer": "none"}, "mls": {"trainer": "grpo"}, "shala": {"trainer": "grpo"}}
    run_report(metrics, out, runs=[], config={"run_methods": ["zs", "mls", "shala"], "methods": trainers})
    t1 = pd.read_csv(out / "table1.csv").set_index("run")
    assert t1.loc["zs", "parse_failure_rate_mean"] == pytest.approx(0.97)
    assert t1.loc["zs", "jsd_mean"] == t1.jsd_mean.min()  # lowest JSD of all rows ...
    assert bool(t1.loc["zs", "parse_flag"]) and not t1.parse_flag.drop("zs").any()
    header, body = md_rows((out / "table1.md").read_text())
    cells = {r[1]: r for r in body}
    assert cells["zs ‡"][header.index("jsd")].startswith("0.")  # ... but not bold
    # shala answers one constant (§) and mls is worse than the label prior (†): no model row is bold in JSD
    assert t1.loc["mls", "jsd_mean"] > t1.loc["ref_prior", "jsd_mean"] and bool(t1.loc["mls", "above_prior"])
    assert [r[1] for r in body if r[header.index("jsd")].startswith("**")] == []
    page = (out / "report.md").read_text()
    assert "numbers are the fallback's, not the model's" in page
    # a constant answer: pred_spread 0, flagged, and named in the claims
    assert t1.loc["shala", "pred_spread_mean"] == pytest.approx(0.0, abs=1e-6)
    assert bool(t1.loc["shala", "item_independent"]) and not bool(t1.loc["ref_prior", "item_independent"])
    assert any(label.startswith("shala §") for label in cells) and "compare with ref_prior" in page
    claims = pd.read_csv(out / "claims.csv", keep_default_na=False).set_index(["claim", "dataset"])
    assert claims.loc[(1, "flat"), "verdict"] == "cannot tell"
    assert "claims against zs cannot be judged" in claims.loc[(1, "flat"), "reason"]
    assert "Item-independent answers" in page and "shala on flat" in page
    # no run records: the training figure says so, the page notes it
    assert "No training run records were given" in page
    assert (out / "fig_training.png").stat().st_size > 0 and (out / "fig_training.pdf").is_file()


def test_run_worse_than_uniform_is_flagged_and_never_bold_in_jsd(tmp_path, build_tree):
    """A model run whose mean JSD is above ref_uniform's is flagged ¶ and is
    not the bold JSD/BC row even when it is the lowest-JSD model row: a 1/C
    answer for every item does better."""
    data = {"flat": (NLI, (None,), "entropy", 100)}
    runs = {"zs": lambda d, rng, i: np.array([0.7, 0.2, 0.1]),          # constant and skewed
            "mls": lambda d, rng, i: np.array([0.98, 0.01, 0.01]),      # worse still
            "ref_uniform": RUNS["ref_uniform"]}
    metrics = build_tree(tmp_path, datasets=data, runs=runs, seeds=(0,))
    out = tmp_path / "r"
    run_report(metrics, out, runs=[], config={"run_methods": ["zs", "mls"]})
    t1 = pd.read_csv(out / "table1.csv").set_index("run")
    assert t1.loc["zs", "jsd_mean"] > t1.loc["ref_uniform", "jsd_mean"]
    assert bool(t1.loc["zs", "below_uniform"]) and bool(t1.loc["mls", "below_uniform"])
    assert not bool(t1.loc["ref_uniform", "below_uniform"])
    header, body = md_rows((out / "table1.md").read_text())
    labels = {r[1].split()[0]: r[1] for r in body}
    assert labels["zs"].endswith("¶") and labels["mls"].endswith("¶") and labels["ref_uniform"] == "ref_uniform"
    for metric in ("jsd", "bc", "kl"):
        assert not any(r[header.index(metric)].startswith("**") for r in body), metric
    assert "answering 1/C for every item does better" in (out / "report.md").read_text()


def test_missing_pieces(tmp_path, build_tree):
    # only a reference predictor and a method without zs, no items files, no literature
    metrics = build_tree(tmp_path / "m", datasets={"toy": DATASETS["toy"]},
                         runs={"mls": RUNS["mls"], "ref_uniform": RUNS["ref_uniform"]}, seeds=(0,), items=False)
    paths = run_report(metrics, tmp_path / "r", literature=[])
    assert all(p.is_file() for p in paths)
    md = (tmp_path / "r" / "table1.md").read_text()
    header, body = md_rows(md)
    mls = next(r for r in body if r[1] == "mls")
    assert "(+" not in mls[header.index("jsd")] and "(-" not in mls[header.index("jsd")]
    assert mls[header.index("jsd 95% CI")] == "–" and mls[header.index("jsd vs zs")] == "–"
    assert "jsd (paper)" not in header  # no paper numbers for toy
    page = (tmp_path / "r" / "report.md").read_text()
    assert "box plots skipped" in page and page.count("## Paired tests") == 1
    assert "No test" in (tmp_path / "r" / "significance.md").read_text()
    assert "no published numbers" in (tmp_path / "r" / "table2.md").read_text().lower()
    assert pd.read_csv(tmp_path / "r" / "significance.csv").empty


def test_bad_inputs(tmp_path, build_tree):
    with pytest.raises(InputError, match="no metrics files"):
        run_report([], tmp_path / "r")
    with pytest.raises(InputError, match="not found"):
        run_report([tmp_path / "toy" / "zs" / "seed0" / "test.json"], tmp_path / "r")
    metrics = build_tree(tmp_path / "m", datasets={"toy": DATASETS["toy"]}, runs={"mls": RUNS["mls"]}, seeds=(0,))
    other = metrics[0].with_name("validation.json")
    other.write_text(metrics[0].read_text())
    with pytest.raises(InputError, match="several splits"):
        run_report(metrics + [other], tmp_path / "r")
    with pytest.raises(InputError, match="not a run record path"):
        run_report(metrics, tmp_path / "r", runs=[tmp_path / "run.json"])
    bad = tmp_path / "lit.yaml"
    bad.write_text("entries:\n  - {dataset: x, model: m, metric: nope, value: 1, source: s}\n")
    with pytest.raises(InputError, match="unknown metric"):
        load_literature(bad)


def test_cli_reads_declared_files_and_a_partial_config(tmp_path, build_tree, write_runs):
    from shala.cli import main

    metrics = build_tree(tmp_path, datasets={"toy": DATASETS["toy"]}, runs={"zs": RUNS["zs"], "mls": RUNS["mls"]},
                         seeds=(0,))
    runs = write_runs(tmp_path, ["toy"], ["mls"], seeds=(0,), n_steps=5)
    cfg = tmp_path / "report.yaml"
    cfg.write_text("run_methods: [zs, mls]\nreport: {max_parse_failure_rate: 0.01}\n")
    argv = ["report", "--metrics", *map(str, metrics), "--runs", *map(str, runs), "--out", str(tmp_path / "r"),
            "--config", str(cfg)]
    assert main(argv) == 0
    t1 = pd.read_csv(tmp_path / "r" / "table1.csv").set_index("run")
    assert bool(t1.loc["zs", "parse_flag"])  # 1 failure in 30 is over 0.01
    cfg.write_text("report: {max_parse_failure_rate: 2}\n")
    with pytest.raises(ConfigError):
        from shala.report.load import load_report_config
        load_report_config([cfg])
    assert main(argv) == 2


def test_packaged_literature_entries_cite_sources():
    entries = load_literature()
    for e in entries:
        assert e["source"] and e["url"].startswith("https://")
        if e["metric"] in ("jsd", "jsd_e"):
            assert e["js_base"] == ("e" if e["metric"] == "jsd_e" else 2)
    ro = {(e["benchmark"], e["metric"]): e["value"] for e in entries if e["model"] == "RoBERTa-large"}
    assert ro[("ChaosNLI-S", "jsd_e")] == 0.221 and ro[("ChaosNLI-M", "jsd_e")] == 0.3112


def test_setup_section_states_prompt_prefix_and_settings():
    from shala.report.load import RunRecord
    from shala.report.page import setup_md

    def rec(method, task):
        data = {"kind": "grpo", "model_ref": "m", "response_prefix": ['{"entailment": '], "constrained": None,
                "prompt": {"target": "P: {premise}\nH: {hypothesis}", "task": task},
                "grpo_config": {"full": {"learning_rate": 5e-5, "max_steps": 24, "num_generations": 4,
                                         "scale_rewards": "group"}},
                "timing": {"seconds_per_step": 9.87}}
        return RunRecord("chaosnli", method, 0, Path(f"x/{method}/seed0/run.json"), data, pd.DataFrame())

    md = setup_md([rec("shala", "How many?")])
    assert "| chaosnli | shala | 0 | grpo | m | 5e-05 | 24 | 4 |" in md
    assert '`{"entailment": `' in md and "| 9.9 |" in md
    assert "a compact prompt, not the paper's" in md
    assert 'target: "P: {premise}\\nH: {hypothesis}"' in md
    md = setup_md([rec("mls", "Given a premise and a hypothesis, predict the probability of the relationship")])
    assert "the paper's prompt (Appendix D.3)" in md
    assert "No training run records" in setup_md([])


def test_prompt_kind_names_the_papers_prompts_and_no_others():
    """config.yaml's prompts for the paper's three datasets are the paper's;
    the control's (written in the paper's style) is not, nor a compact one."""
    import yaml

    from shala.report.page import prompt_kind

    cfg = yaml.safe_load((Path(__file__).parents[2] / "config.yaml").read_text())["datasets"]
    for ds in ("chaosnli", "goemotions", "msp_podcast"):
        assert prompt_kind(ds, cfg[ds]["prompt"]["task"]) == "the paper's prompt (Appendix D.3)", ds
    assert prompt_kind("control", cfg["control"]["prompt"]["task"]).startswith("this dataset's own prompt")
    assert prompt_kind("chaosnli", "Which relation holds?").startswith("a compact prompt, not the paper's")
    assert prompt_kind("goemotions", cfg["chaosnli"]["prompt"]["task"]).startswith("a compact prompt")


def test_identical_training_curves_are_named():
    from shala.report.figures import FIELDS, identical_curves

    rows = []
    for method, bump in (("shala", 0.0), ("shala_batch", 0.0), ("mls", 0.1)):
        for seed in (0, 1):
            for step in (1, 2, 3):
                rows.append({"dataset": "chaosnli", "method": method, "seed": seed, "step": step,
                             **{f: 0.1 * step + 0.01 * seed + bump for f in FIELDS}})
    notes = identical_curves(pd.DataFrame(rows), ["mls", "shala", "shala_batch"])
    assert notes == ["chaosnli: shala, shala_batch logged identical training steps (the same values at every step "
                     "and seed): their lines coincide in the training figure."]
    changed = [dict(r) for r in rows]
    next(r for r in changed if r["method"] == "shala_batch")["entropy"] += 1e-9  # one value apart
    assert identical_curves(pd.DataFrame(changed), ["mls", "shala", "shala_batch"]) == []


def test_setup_section_shows_the_gpu_fit():
    """The memory fallback a run applied (run.json key `fit`, shala.launch.fit) is a
    column of the Setup table, and so is a run that was not checked."""
    from shala.report.load import RunRecord
    from shala.report.page import fit_cell, setup_md
    from shala.report.tables import DASH

    fit = {"checked": True, "mode": "fallback", "fits": True, "fallback": "no_gather",
           "estimate_gib": 62.76, "configured_gib": 79.4, "gpus": 2, "gpu_mem_gib": 79.2}
    assert fit_cell({"fit": fit}) == "no_gather (62.8 of 79.2 GiB x 2)"
    assert fit_cell({"fit": {**fit, "fallback": None, "estimate_gib": 79.4, "gpu_mem_gib": 139.8}}) == \
        "none needed (79.4 of 139.8 GiB x 2)"
    assert fit_cell({"fit": None}) == "not checked (CPU)"
    assert fit_cell({"fit": {"checked": False, "mode": "off", "reason": "training.fit_to_hardware off"}}) == \
        "not checked (training.fit_to_hardware off)"
    assert fit_cell({}) == DASH                                   # records from before the column
    rec = RunRecord("chaosnli", "shala", 0, Path("x/shala/seed0/run.json"),
                    {"kind": "grpo", "model_ref": "m", "fit": fit, "timing": {"seconds_per_step": 9.87}},
                    pd.DataFrame())
    md = setup_md([rec])
    assert "| s/step | GPU fit |" in md and "| 9.9 | no_gather (62.8 of 79.2 GiB x 2) |" in md
    lines = md.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| dataset"))
    assert lines[header].count("|") == lines[header + 1].count("|") == lines[header + 2].count("|")
