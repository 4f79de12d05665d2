"""shala.report on a fake metrics tree built with shala.evaluate."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from shala.errors import InputError
from shala.evaluate import run_evaluate
from shala.items import make_item
from shala.report import OUTPUT_NAMES, load_literature, run_report
from shala.significance import bootstrap_ci

NLI = ["entailment", "neutral", "contradiction"]
TOY = ["a", "b", "c", "d"]
RUNS = {"zs": 0.2, "mls": 0.5, "shala": 0.8, "ref_uniform": None}  # weight on the human dist
SEEDS = (0, 1)
DATASETS = {"chaosnli": (NLI, ("snli", "mnli"), "entropy", 40),
            "toy": (TOY, (None,), "active", 30)}


def make_predictions(dataset: str, run: str, seed: int) -> list[dict]:
    labels, subsets, scheme, n = DATASETS[dataset]
    items_rng = np.random.default_rng(len(dataset))  # the same items in every run and seed
    rng = np.random.default_rng(1000 * seed + 7 * len(run) + len(dataset))
    C = len(labels)
    rows = []
    for i in range(n):
        counts = items_rng.multinomial(20, items_rng.dirichlet(np.full(C, 0.7))).tolist()
        item = make_item(id=f"{dataset}-{i}", dataset=dataset, subset=subsets[i % len(subsets)],
                         inputs={"text": f"t{i}"}, labels=labels, counts=counts, ambiguity=scheme)
        item["split"] = "test"
        w = RUNS[run]
        if w is None:
            pred = np.full(C, 1.0 / C)
        else:
            pred = w * np.asarray(item["dist"]) + (1 - w) * rng.dirichlet(np.full(C, 0.8))
        if run == "zs" and i == 3:
            item["completion"] = "no idea"  # a parse failure, scored as uniform
        else:
            item["completion"] = "Answer: " + json.dumps(dict(zip(labels, pred.tolist())))
        rows.append(item)
    return rows


def build_tree(root, datasets=DATASETS, runs=RUNS, seeds=SEEDS, items=True):
    for dataset in datasets:
        for run in runs:
            for seed in seeds:
                d = root / dataset / run / f"seed{seed}"
                d.mkdir(parents=True)
                pred = d / "pred.jsonl"
                pred.write_text("".join(json.dumps(r) + "\n" for r in make_predictions(dataset, run, seed)))
                run_evaluate(pred, d / "test.json", items_out=(d / "test.items.csv") if items else None)
    return root


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = build_tree(tmp_path_factory.mktemp("metrics"))
    out = tmp_path_factory.mktemp("report")
    paths = run_report(root, out, config={"run_methods": ["zs", "mls", "shala_no_ambi", "shala"]})
    return root, out, paths


def metrics_json(root, dataset, run, seed):
    return json.loads((root / dataset / run / f"seed{seed}" / "test.json").read_text())


def per_item(root, dataset, run):
    frames = [pd.read_csv(root / dataset / run / f"seed{s}" / "test.items.csv", dtype={"id": str}) for s in SEEDS]
    return pd.concat(frames).groupby("id")["jsd"].mean()


def test_all_outputs_written(report):
    _, out, paths = report
    assert [p.name for p in paths] == list(OUTPUT_NAMES)
    for p in paths:
        assert p.is_file() and p.stat().st_size > 0, p
    page = (out / "report.md").read_text()
    for name in ("fig_ambiguity.png", "fig_per_class.png"):
        assert f"]({name})" in page
    for title in ("Table 1", "Table 2", "Paired tests"):
        assert title in page


def test_table1_values_match_metrics_files(report):
    root, out, _ = report
    t1 = pd.read_csv(out / "table1.csv")
    assert len(t1) == len(DATASETS) * len(RUNS)
    for dataset in DATASETS:
        for run in RUNS:
            row = t1[(t1.dataset == dataset) & (t1.run == run)].iloc[0]
            assert row.n_seeds == len(SEEDS)
            for metric in ("jsd", "bc", "kl", "accuracy", "macro_f1", "soft_micro_f1"):
                vals = [metrics_json(root, dataset, run, s)["overall"][metric] for s in SEEDS]
                assert row[f"{metric}_mean"] == pytest.approx(np.mean(vals), abs=1e-6), (dataset, run, metric)
                assert row[f"{metric}_std"] == pytest.approx(np.std(vals, ddof=1), abs=1e-6), (dataset, run, metric)
            zs = np.mean([metrics_json(root, dataset, "zs", s)["overall"]["jsd"] for s in SEEDS])
            assert row.jsd_rel_zs == pytest.approx(100 * (row.jsd_mean - zs) / zs, abs=1e-3)
            # the interval: bootstrap of per-item JSD averaged over seeds, around the mean
            x = per_item(root, dataset, run).to_numpy()
            lo, hi = bootstrap_ci(x, seed=0)
            assert (row.jsd_ci_lo, row.jsd_ci_hi) == pytest.approx((lo, hi), abs=1e-6)
            assert row.jsd_ci_lo < row.jsd_mean < row.jsd_ci_hi
            assert row.jsd_ci_n_items == DATASETS[dataset][3]


def test_table1_md_bold_is_best_model_run(report):
    root, out, _ = report
    md = (out / "table1.md").read_text()
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in md.splitlines() if line.startswith("| ")]
    header, body = rows[0], rows[1:]
    assert {r[1] for r in body} == set(RUNS)
    jcol = header.index("jsd")
    for dataset in DATASETS:
        means = {run: np.mean([metrics_json(root, dataset, run, s)["overall"]["jsd"] for s in SEEDS])
                 for run in RUNS if not run.startswith("ref_")}
        best = min(means, key=means.get)
        bold = [r[1] for r in body if r[0] == dataset and r[jcol].startswith("**")]
        assert bold == [best]
        zs_row = next(r for r in body if r[0] == dataset and r[1] == "zs")
        assert zs_row[header.index("jsd vs zs")] == "–"
        assert re.fullmatch(r"\[\d\.\d{4}, \d\.\d{4}\]", zs_row[header.index("jsd 95% CI")])
    tex = (out / "table1.tex").read_text()
    assert r"\textbf{" in tex and r"\begin{tabular}" in tex


def test_significance_matches_scipy(report):
    root, out, _ = report
    sig = pd.read_csv(out / "significance.csv")
    # each method against zs, and each method but zs against mls
    pairs = {(m, b) for m, b in zip(sig.method, sig.baseline)}
    assert pairs == {("mls", "zs"), ("shala", "zs"), ("shala", "mls")}
    assert len(sig) == 3 * len(DATASETS)
    for row in sig.itertuples():
        a, b = per_item(root, row.dataset, row.method), per_item(root, row.dataset, row.baseline)
        a, b = a.align(b, join="inner")
        want = stats.wilcoxon(a.to_numpy(), b.to_numpy())
        assert row.p_value == pytest.approx(want.pvalue, rel=1e-6)
        assert row.mean_diff == pytest.approx(np.mean(a - b), abs=1e-9)
        assert row.n_items == len(a)
        assert row.ci_lo <= row.mean_diff <= row.ci_hi
        assert row.p_value <= row.p_holm <= 1
    shala_vs_zs = sig[(sig.method == "shala") & (sig.baseline == "zs")]
    assert (shala_vs_zs.mean_diff < 0).all()  # built to be closer to the human distributions
    assert "Wilcoxon" in (out / "significance.md").read_text()


def test_table2_has_literature_rows_and_our_subset_values(report):
    root, out, _ = report
    t2 = pd.read_csv(out / "table2.csv")
    lit = [e for e in load_literature() if e["dataset"] == "chaosnli"]
    assert lit, "the packaged literature file lists ChaosNLI numbers"
    pub = t2[t2.kind == "published"]
    assert len(pub) == len(lit)
    for e in lit:
        hit = pub[(pub.model == e["model"]) & (pub.metric == e["metric"]) & (pub.benchmark == e["benchmark"])]
        assert hit.value.tolist() == [pytest.approx(e["value"])]
        assert hit.source.iloc[0] == e["source"]
    ours = t2[(t2.kind == "ours") & (t2.model == "shala") & (t2.metric == "jsd_e") & (t2.subset == "snli")]
    vals = [metrics_json(root, "chaosnli", "shala", s)["by_subset"]["snli"]["jsd_e"] for s in SEEDS]
    assert ours.value.tolist() == [pytest.approx(np.mean(vals), abs=1e-6)]
    assert ours["std"].tolist() == [pytest.approx(np.std(vals, ddof=1), abs=1e-6)]
    assert set(t2.dataset) == {"chaosnli"}  # no published numbers for toy
    md = (out / "table2.md").read_text()
    assert "RoBERTa-large" in md and "ChaosNLI-M" in md and "[1] Nie" in md
    assert r"\begin{tabular}" in (out / "table2.tex").read_text()


def test_figures_are_valid_images(report):
    import matplotlib.image as mpimg

    _, out, _ = report
    for stem in ("fig_ambiguity", "fig_per_class"):
        img = mpimg.imread(out / f"{stem}.png")
        assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 400 and img.shape[2] in (3, 4)
        assert img.std() > 0  # not blank
        assert (out / f"{stem}.pdf").read_bytes().startswith(b"%PDF")


def test_report_is_deterministic(report, tmp_path):
    root, out, _ = report
    again = run_report(root, tmp_path, config={"run_methods": ["zs", "mls", "shala_no_ambi", "shala"]})
    for p in again:
        assert p.read_bytes() == (out / p.name).read_bytes(), p.name


def test_missing_pieces(tmp_path):
    # only reference predictors and a method without zs, no items files
    root = build_tree(tmp_path / "m", datasets={"toy": DATASETS["toy"]},
                      runs={"mls": 0.5, "ref_uniform": None}, seeds=(0,), items=False)
    paths = run_report(root, tmp_path / "r", literature=[])
    assert all(p.is_file() for p in paths)
    md = (tmp_path / "r" / "table1.md").read_text()
    mls = next(line for line in md.splitlines() if line.startswith("| toy | mls"))
    assert "(+" not in mls and "(-" not in mls
    cells = [c.strip() for c in mls.strip("|").split("|")]
    assert cells[3] == "–" and cells[4] == "–"  # no CI without items, no zs
    page = (tmp_path / "r" / "report.md").read_text()
    assert "box plots skipped" in page
    assert "No paired test" in (tmp_path / "r" / "significance.md").read_text()
    assert "literature file has no entries" in (tmp_path / "r" / "table2.md").read_text()
    assert pd.read_csv(tmp_path / "r" / "significance.csv").empty

    root2 = build_tree(tmp_path / "m2", datasets={"chaosnli": DATASETS["chaosnli"]},
                       runs={"ref_uniform": None}, seeds=(0,))
    paths = run_report(root2, tmp_path / "r2")
    t2 = pd.read_csv(tmp_path / "r2" / "table2.csv")
    assert set(t2[t2.kind == "ours"].model) == {"ref_uniform"}
    import matplotlib.image as mpimg
    assert mpimg.imread(tmp_path / "r2" / "fig_ambiguity.png").ndim == 3


def test_no_metrics_and_bad_literature(tmp_path):
    with pytest.raises(InputError):
        run_report(tmp_path, tmp_path / "r")
    bad = tmp_path / "lit.yaml"
    bad.write_text("entries:\n  - {dataset: x, model: m, metric: nope, value: 1, source: s}\n")
    with pytest.raises(InputError, match="unknown metric"):
        load_literature(bad)
    bad.write_text("entries:\n  - {dataset: x, model: m, metric: jsd, source: s}\n")
    with pytest.raises(InputError, match="missing field"):
        load_literature(bad)


def test_packaged_literature_entries_cite_sources():
    entries = load_literature()
    for e in entries:
        assert e["source"] and e["url"].startswith("https://")
        if e["metric"] in ("jsd", "jsd_e"):
            assert e["js_base"] == ("e" if e["metric"] == "jsd_e" else 2)
    ro = {(e["benchmark"], e["metric"]): e["value"] for e in entries if e["model"] == "RoBERTa-large"}
    assert ro[("ChaosNLI-S", "jsd_e")] == 0.221 and ro[("ChaosNLI-M", "jsd_e")] == 0.3112
