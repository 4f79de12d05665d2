"""Table 1 (datasets × methods, the paper's numbers beside ours), Table 2
(published systems), and the CSV / Markdown / LaTeX writers.

Decisions (where the SPEC is silent):

- Rows: each dataset, and each of its subsets as ``dataset/subset`` (the
  paper reports ChaosNLI-M and -S as ``chaosnli/mnli`` and ``chaosnli/snli``).
- Seeds: mean ± std over seeds; the JSD interval is the percentile bootstrap
  (10,000 resamples of items, numpy seed 0) of the mean of per-item JSD
  averaged over seeds: it reflects item sampling, ± std reflects seeds.
- Best (bold) per dataset and metric: among model runs whose mean
  parse-failure rate is at most ``report.max_parse_failure_rate``; reference
  predictors (``ref_*``) are context, never best. ``pred_spread`` has no best.
- Flags: ``‡`` a parse-failure rate over the threshold (the numbers are the
  fallback's, not the model's); ``§`` a trained run with ``pred_spread``
  under ``report.min_pred_spread`` (an item-independent answer); ``¶`` a
  model run whose mean JSD is above ``ref_uniform``'s (answering 1/C for
  every item does better): never bold in the distribution metrics.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..evaluation.significance import bootstrap_ci
from .load import METRICS, is_ref, is_trained, run_order

N_BOOT = 10000
ALPHA = 0.05
DASH = "–"
PARSE_MARK, SPREAD_MARK, UNIFORM_MARK, BASE_E_MARK = "‡", "§", "¶", " (base e)"
# metrics of the distribution, where a run worse than the uniform predictor is never best
DIST_METRICS = ("jsd", "jsd_e", "bc", "kl", "tvd")
TABLE1_METRICS = ("jsd", "bc", "kl", "accuracy", "macro_f1", "weighted_f1", "soft_micro_f1",
                  "parse_failure_rate", "pred_spread")
PAPER_METRICS = ("jsd", "bc", "accuracy", "macro_f1", "weighted_f1")
NOT_RANKED = tuple(m for m, higher in METRICS.items() if higher is None)  # no best, no change vs zs
PAPER_REF = "SHALA-LLM, arXiv:2606.05376v1"
PAPER_SETUP = "Qwen2.5-Omni-7B, full training data, one seed: a different model and scale from this run"
METRIC_LABELS = {"jsd": "JSD", "jsd_e": "JSD (ln)", "kl": "KL", "bc": "BC", "accuracy": "accuracy",
                 "macro_f1": "macro-F1", "weighted_f1": "weighted-F1", "soft_micro_f1": "soft micro-F1",
                 "soft_accuracy": "soft accuracy", "tvd": "TVD", "pred_spread": "pred spread",
                 "parse_failure_rate": "parse failures"}
BENCHMARKS = {"chaosnli": "ChaosNLI", "chaosnli/mnli": "ChaosNLI-M", "chaosnli/snli": "ChaosNLI-S",
              "msp_podcast": "MSP-Podcast", "goemotions": "GoEmotions"}


# --------------------------------------------------------------------------- Table 1

def aggregate(df: pd.DataFrame, means: pd.DataFrame, paper: dict[str, Any], settings: dict[str, Any],
              config: dict[str, Any] | None) -> pd.DataFrame:
    """Per dataset × run: mean, std over seeds, the paper's value, relative
    change vs zs (%) for each metric; n_seeds, the JSD interval and flags."""
    metrics = list(METRICS)
    g = df.groupby(["dataset", "run"])[metrics]
    mean, std = g.mean().add_suffix("_mean"), g.std(ddof=1).fillna(0.0).add_suffix("_std")
    n = df.groupby(["dataset", "run"]).size().rename("n_seeds")
    out = pd.concat([mean, std, n], axis=1).reset_index()
    cols = ["dataset", "run", "n_seeds"]
    table1 = paper.get("table1") or {}
    for metric in metrics:
        base = out[out.run == "zs"].set_index("dataset")[f"{metric}_mean"]
        ref = out["dataset"].map(base)
        with np.errstate(divide="ignore", invalid="ignore"):
            out[f"{metric}_rel_zs"] = np.where(ref.abs() > 0, 100.0 * (out[f"{metric}_mean"] - ref) / ref.abs(),
                                               np.nan)
        cols += [f"{metric}_mean", f"{metric}_std"]
        if metric in PAPER_METRICS:
            out[f"{metric}_paper"] = [((table1.get(d) or {}).get(r) or {}).get(metric, np.nan)
                                      for d, r in zip(out.dataset, out.run)]
            out[f"{metric}_paper"] = pd.to_numeric(out[f"{metric}_paper"], errors="coerce")
            cols.append(f"{metric}_paper")
        cols.append(f"{metric}_rel_zs")
    out = out.merge(jsd_intervals(means), on=["dataset", "run"], how="left")
    out["parse_flag"] = (out.parse_failure_rate_mean > settings["max_parse_failure_rate"]).fillna(False)
    trained = out.run.map(lambda r: is_trained(r, config))
    out["item_independent"] = trained & (out.pred_spread_mean < settings["min_pred_spread"]).fillna(False)
    uniform = out.dataset.map(out[out.run == "ref_uniform"].set_index("dataset")["jsd_mean"])
    out["below_uniform"] = (~out.run.map(is_ref) & (out.jsd_mean > uniform)).fillna(False)
    return out[cols + ["jsd_ci_lo", "jsd_ci_hi", "jsd_ci_n_items", "parse_flag", "item_independent",
                       "below_uniform"]]


def jsd_intervals(means: pd.DataFrame, n_boot: int = N_BOOT, alpha: float = ALPHA) -> pd.DataFrame:
    """Bootstrap interval of mean JSD per dataset (and ``dataset/subset``) × run."""
    cols = ["dataset", "run", "jsd_ci_lo", "jsd_ci_hi", "jsd_ci_n_items"]
    scoped = [means] + [means[means.subset == s].assign(dataset=means.dataset + "/" + s)
                        for s in sorted(set(means.subset) - {""})]
    rows = []
    for (dataset, run), sub in pd.concat(scoped).groupby(["dataset", "run"], sort=True):
        x = sub["jsd"].to_numpy(dtype=np.float64)
        x = x[~np.isnan(x)]
        lo, hi = bootstrap_ci(x, n_boot=n_boot, alpha=alpha, seed=0)
        rows.append({"dataset": dataset, "run": run, "jsd_ci_lo": lo, "jsd_ci_hi": hi, "jsd_ci_n_items": int(x.size)})
    return pd.DataFrame(rows, columns=cols)


def best(agg: pd.DataFrame, dataset: str, metric: str) -> float | None:
    """Best mean among model runs not flagged for parse failures."""
    higher = METRICS[metric]
    if higher is None:
        return None
    ok = (agg.dataset == dataset) & ~agg.run.map(is_ref) & ~agg.parse_flag
    if metric in DIST_METRICS:
        ok &= ~agg.below_uniform
    sub = agg.loc[ok, f"{metric}_mean"].dropna()
    if sub.empty:
        return None
    return sub.max() if higher else sub.min()


def _num(v: Any, digits: int = 4) -> str:
    return DASH if v is None or pd.isna(v) else f"{v:.{digits}f}"


def _cell(row: dict, metric: str, best_value: float | None, bold: tuple[str, str]) -> str:
    mean, std = row[f"{metric}_mean"], row[f"{metric}_std"]
    if pd.isna(mean):
        return DASH
    text = f"{mean:.4f}" + (f" ± {std:.4f}" if row["n_seeds"] > 1 else "")
    rel = row.get(f"{metric}_rel_zs")
    if row["run"] != "zs" and not is_ref(row["run"]) and metric not in NOT_RANKED and not pd.isna(rel):
        text += f" ({rel:+.1f}%)"
    eligible = not row["parse_flag"] and not is_ref(row["run"]) and not (metric in DIST_METRICS and
                                                                         row["below_uniform"])
    if best_value is not None and eligible and np.isclose(mean, best_value):
        text = f"{bold[0]}{text}{bold[1]}"
    return text


def run_label(row: dict) -> str:
    return row["run"] + (f" {PARSE_MARK}" if row["parse_flag"] else "") + \
        (f" {SPREAD_MARK}" if row["item_independent"] else "") + (f" {UNIFORM_MARK}" if row["below_uniform"] else "")


def has_paper(agg: pd.DataFrame) -> bool:
    return bool(agg[[f"{m}_paper" for m in PAPER_METRICS]].notna().to_numpy().any())


def table1(agg: pd.DataFrame, config: dict[str, Any] | None, bold: tuple[str, str]) -> pd.DataFrame:
    """The displayed Table 1: one row per dataset × run, text cells."""
    order = run_order(sorted(agg.run.unique()), config)
    paper = has_paper(agg)
    rows = []
    for dataset in sorted(agg.dataset.unique()):
        sub = agg[agg.dataset == dataset].set_index("run")
        for run in (r for r in order if r in sub.index):
            r = sub.loc[run].to_dict() | {"run": run}
            cells = {"dataset": dataset, "method": run_label(r)}
            for metric in TABLE1_METRICS:
                cells[metric] = _cell(r, metric, best(agg, dataset, metric), bold)
                if paper and metric in PAPER_METRICS:
                    cells[f"{metric} (paper)"] = _num(r[f"{metric}_paper"], 3)
                if metric == "jsd":
                    lo, hi = r.get("jsd_ci_lo"), r.get("jsd_ci_hi")
                    cells["jsd 95% CI"] = DASH if lo is None or pd.isna(lo) else f"[{lo:.4f}, {hi:.4f}]"
                    rel = r.get("jsd_rel_zs")
                    cells["jsd vs zs"] = DASH if run == "zs" or is_ref(run) or pd.isna(rel) else f"{rel:+.1f}%"
            rows.append(cells)
    return pd.DataFrame(rows)


def _by_run(agg: pd.DataFrame, flag: str, metric: str, fmt: str) -> dict[str, str]:
    hits = agg[agg[flag]]
    return {run: ", ".join(f"{d} {v:{fmt}}" for d, v in zip(sub.dataset, sub[f"{metric}_mean"]))
            for run, sub in hits.groupby("run", sort=True)}


def table1_notes(agg: pd.DataFrame, settings: dict[str, Any], policy: str) -> list[str]:
    """Explanation lines under Table 1: the paper columns and every flag."""
    notes = []
    if has_paper(agg):
        notes.append(f"(paper): the paper's Table 1 as printed ({PAPER_REF}): {PAPER_SETUP}. "
                     "For orientation, not a target.")
    fallback = ("scored as the uniform distribution" if policy == "uniform"
                else "left out of every metric but the parse-failure rate")
    for run, where in _by_run(agg, "parse_flag", "parse_failure_rate", ".0%").items():
        notes.append(f"{PARSE_MARK} {run}: parse-failure rate over report.max_parse_failure_rate "
                     f"({settings['max_parse_failure_rate']}): {where}. Failed parses are {fallback}, so these "
                     "numbers are the fallback's, not the model's; the row is never marked best.")
    prior = agg[agg.run == "ref_prior"].set_index("dataset")["jsd_mean"]
    for run, where in _by_run(agg, "item_independent", "pred_spread", ".3f").items():
        datasets = agg[(agg.run == run) & agg.item_independent].dataset
        ref = ", ".join(f"{d} {prior[d]:.4f}" for d in datasets if d in prior.index) or "no ref_prior run"
        notes.append(f"{SPREAD_MARK} {run}: pred_spread under report.min_pred_spread ({settings['min_pred_spread']}): "
                     f"{where}. Item-independent answer: the model gives (nearly) the same distribution for "
                     f"every item; compare with ref_prior (JSD: {ref}).")
    uniform = agg[agg.run == "ref_uniform"].set_index("dataset")["jsd_mean"]
    for run, where in _by_run(agg, "below_uniform", "jsd", ".4f").items():
        datasets = agg[(agg.run == run) & agg.below_uniform].dataset
        ref = ", ".join(f"{d} {uniform[d]:.4f}" for d in datasets if d in uniform.index)
        notes.append(f"{UNIFORM_MARK} {run}: mean JSD above ref_uniform's ({where}; ref_uniform: {ref}): answering "
                     "1/C for every item does better, so the row is never bold in JSD, BC, KL or TVD.")
    return notes


# --------------------------------------------------------------------------- Table 2

def paper_entries(paper: dict[str, Any]) -> list[dict[str, Any]]:
    """The paper's Table 2 systems as literature entries (one per metric).

    A JSD the paper prints with ``js_base: e`` is a base-e distance: it is
    filed under our ``jsd_e`` and flagged, not compared with base-2 JSD."""
    out = []
    for row in paper.get("table2") or []:
        key = row["dataset"]
        dataset, _, subset = key.partition("/")
        for metric in PAPER_METRICS:
            if row.get(metric) is None:
                continue
            base_e = metric == "jsd" and str(row.get("js_base", 2)) == "e"
            conv = ("printed in the paper's (base-2) JSD column, but a base-e JS distance (the ChaosNLI "
                    "evaluation code); a base-e distance is √ln2 ≈ 0.83 times the base-2 one, so it is "
                    "compared with our jsd_e" if base_e else
                    "JS distance, base 2 (the paper's convention)" if metric == "jsd" else "")
            out.append({"dataset": dataset, "subset": subset or None, "benchmark": BENCHMARKS.get(key, key),
                        "model": row["system"], "metric": "jsd_e" if base_e else metric,
                        "value": float(row[metric]), "js_base": "e" if base_e else (2 if metric == "jsd" else None),
                        "convention": conv, "origin": "paper Table 2",
                        "source": f"{row['source']}, as quoted in the paper's Table 2 ({PAPER_REF})"})
    return out


T2_COLUMNS = ["benchmark", "dataset", "subset", "kind", "origin", "model", "metric", "value", "std", "n_seeds",
              "n_items", "js_base", "convention", "source"]


def table2_long(records: list, published: list[dict[str, Any]], config: dict[str, Any] | None) -> pd.DataFrame:
    """Published numbers and ours, one row per benchmark × system × metric."""
    from ..evaluation.significance import mean_std

    datasets = {r.dataset for r in records}
    groups: dict[tuple, list[dict]] = {}
    for e in published:
        if e["dataset"] in datasets:
            groups.setdefault((e["benchmark"], e["dataset"], e["subset"]), []).append(e)
    rows = []
    for (bench, dataset, subset), entries in groups.items():
        order = list(METRICS) + sorted({e["metric"] for e in entries} - set(METRICS))
        metrics = [m for m in order if any(e["metric"] == m for e in entries)]
        for e in entries:
            rows.append({"benchmark": bench, "dataset": dataset, "subset": subset, "kind": "published",
                         "origin": e.get("origin", "literature"), "model": e["model"], "metric": e["metric"],
                         "value": float(e["value"]), "std": np.nan, "n_seeds": np.nan, "n_items": np.nan,
                         "js_base": e.get("js_base"), "convention": e.get("convention") or "", "source": e["source"]})
        recs = [r for r in records if r.dataset == dataset]
        for run in run_order(sorted({r.run for r in recs}), config):
            rr = [r for r in recs if r.run == run]
            for metric in metrics:
                blocks = [r.data["overall"] if subset is None else (r.data.get("by_subset") or {}).get(subset) or {}
                          for r in rr]
                vals = [np.nan if b.get(metric) is None else float(b[metric]) for b in blocks]
                mean, std = mean_std(vals)
                rows.append({"benchmark": bench, "dataset": dataset, "subset": subset, "kind": "ours",
                             "origin": "this run", "model": run, "metric": metric, "value": mean, "std": std,
                             "n_seeds": int(np.sum(~np.isnan(vals))),
                             "n_items": int(max((b.get("n") or 0) for b in blocks)),
                             "js_base": "e" if metric == "jsd_e" else (2 if metric == "jsd" else None),
                             "convention": "this project's metric key", "source": "this run"})
    df = pd.DataFrame(rows, columns=T2_COLUMNS)
    return df.sort_values(["benchmark", "kind"], ascending=[True, False], kind="stable").reset_index(drop=True)


def table2_texts(long: pd.DataFrame, published: list[dict[str, Any]], split: str) -> tuple[str, str]:
    """Markdown and LaTeX of Table 2."""
    if long.empty:
        have = sorted({e["dataset"] for e in published})
        why = ("There are no published numbers to compare with." if not published else
               f"No published numbers for the datasets of this run (they cover: {', '.join(have)}).")
        return f"{why}\n", f"% Table 2: {why}\n"
    pub = long[long.kind == "published"]
    sources = list(dict.fromkeys(pub.source))
    metrics = list(dict.fromkeys(long.metric))
    rows = []
    for (bench, kind, model), sub in long.groupby(["benchmark", "kind", "model"], sort=False):
        if kind == "published":
            label = f"[{sources.index(sub.source.iloc[0]) + 1}]"
        else:
            n_items, n_seeds = int(sub.n_items.max()), int(sub.n_seeds.max())
            label = (f"ours ({split}, no items of this subset)" if n_items == 0 else
                     f"ours ({split}, n={n_items}, {n_seeds} seed{'s' if n_seeds != 1 else ''})")
        cells = {"benchmark": bench, "model": model, "source": label}
        for metric in metrics:
            m = sub[sub.metric == metric]
            if m.empty or pd.isna(m.value.iloc[0]):
                cells[METRIC_LABELS.get(metric, metric)] = DASH
                continue
            v, s, n = m.value.iloc[0], m["std"].iloc[0], m.n_seeds.iloc[0]
            text = f"{v:.4f}" + (f" ± {s:.4f}" if kind == "ours" and n > 1 else "")
            if m.origin.iloc[0] == "paper Table 2" and m.js_base.iloc[0] == "e":
                text += BASE_E_MARK
            cells[METRIC_LABELS.get(metric, metric)] = text
        rows.append(cells)
    wide = pd.DataFrame(rows)
    head = (f"Our runs ({split} split, mean ± std over seeds) next to published numbers on the same metric and "
            "subset. Published systems were evaluated on all items of the benchmark, ours on the "
            f"{split} split of our own split, so the items differ.\n\n")
    conv = pub.drop_duplicates("metric").set_index("metric")["convention"]
    md = head + markdown(wide) + "\n"
    md += "".join(f"- {METRIC_LABELS.get(m, m)} (`{m}`): {c}\n" for m, c in conv.items()
                  if c and m != "jsd_e")
    md += (f"- JSD (ln) (`jsd_e`): JS distance with natural log (the ChaosNLI evaluation code); ours is "
           f"`jsd_e`. \"{BASE_E_MARK.strip()}\": the paper's Table 2 prints this value in its base-2 JSD "
           "column; a base-e distance is √ln2 ≈ 0.83 times the base-2 one, so it is not comparable with "
           "base-2 numbers and is shown here next to our base-e JSD.\n" if "jsd_e" in conv.index else "")
    md += "\n" + "".join(f"[{i}] {s}\n\n" for i, s in enumerate(sources, 1))
    tex = latex(wide, n_text=3) + "".join(f"% [{i}] {s}\n" for i, s in enumerate(sources, 1))
    return md, tex


# --------------------------------------------------------------------------- writers

def _md_cell(v: Any) -> str:
    return str(v).replace("|", r"\|").replace("\n", " ")


def markdown(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(_md_cell(c) for c in cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


_TEX = (("&", r"\&"), ("#", r"\#"), ("_", r"\_"), ("%", r"\%"), ("±", r"$\pm$"), ("–", "--"),
        ("Δ", r"$\Delta$"), (PARSE_MARK, r"$^\ddagger$"), (SPREAD_MARK, r"\S{}"), ("√", r"$\surd$"),
        ("≈", r"$\approx$"))


def latex(df: pd.DataFrame, n_text: int = 2) -> str:
    def esc(s: str) -> str:
        for a, b in _TEX:
            s = s.replace(a, b)
        return s

    cols = list(df.columns)
    lines = [r"\begin{tabular}{" + "l" * n_text + "r" * (len(cols) - n_text) + "}", r"\toprule",
             " & ".join(esc(c) for c in cols) + r" \\", r"\midrule"]
    lines += [" & ".join(esc(str(v)) for v in row) + r" \\" for row in df.itertuples(index=False)]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"
