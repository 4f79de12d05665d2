"""Table 1 (datasets × methods, the paper's numbers beside ours) and the
CSV / Markdown / LaTeX writers (Table 2 is :mod:`.published`).

Decisions the paper leaves open:

- Rows: each dataset, and each of its subsets as ``dataset/subset`` (the
  paper reports ChaosNLI-M and -S as ``chaosnli/mnli`` and ``chaosnli/snli``).
- Seeds: mean ± std over seeds; the JSD interval is the percentile bootstrap
  (10,000 resamples of items, numpy seed 0) of the mean of per-item JSD
  averaged over seeds: it reflects item sampling, ± std reflects seeds.
- Flags: ``‡`` a parse-failure rate over the threshold (the numbers are the
  fallback's, not the model's); ``§`` a trained run with ``pred_spread``
  under ``report.min_pred_spread`` (an item-independent answer); ``†`` a
  model run whose mean JSD is above ``ref_prior``'s (the label prior, one
  answer for every item, does better); ``¶`` a model run whose mean JSD is
  above ``ref_uniform``'s (answering 1/C for every item does better).
- Best (bold) per dataset and metric (:func:`can_be_best`): among model runs
  flagged neither ``‡``, ``§`` nor ``†``, whose value is not worse than
  ``ref_prior``'s in that metric, and (in the distribution metrics) not
  flagged ``¶``: bold must not praise a run that a model-free predictor
  beats. Reference predictors (``ref_*``) are context, never best.
  ``pred_spread`` has no best.
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
PARSE_MARK, SPREAD_MARK, PRIOR_MARK, UNIFORM_MARK = "‡", "§", "†", "¶"
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
    for flag, ref in (("above_prior", "ref_prior"), ("below_uniform", "ref_uniform")):
        ref_jsd = out.dataset.map(out[out.run == ref].set_index("dataset")["jsd_mean"])
        out[flag] = (~out.run.map(is_ref) & (out.jsd_mean > ref_jsd)).fillna(False)
    return out[cols + ["jsd_ci_lo", "jsd_ci_hi", "jsd_ci_n_items", "parse_flag", "item_independent",
                       "above_prior", "below_uniform"]]


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


def can_be_best(row: dict, metric: str, prior: dict) -> bool:
    """Whether ``row``'s value of ``metric`` may be bold; ``prior``: the
    dataset's ``ref_prior`` row ({} without one)."""
    higher = METRICS[metric]
    if higher is None or is_ref(row["run"]) or row["parse_flag"] or row["item_independent"] or row["above_prior"]:
        return False
    if metric in DIST_METRICS and row["below_uniform"]:
        return False
    value, p = row[f"{metric}_mean"], prior.get(f"{metric}_mean", np.nan)
    return pd.isna(p) or bool(np.isclose(value, p)) or (value > p) == higher


def prior_row(agg: pd.DataFrame, dataset: str) -> dict:
    rows = agg[(agg.dataset == dataset) & (agg.run == "ref_prior")].to_dict("records")
    return rows[0] if rows else {}


def best(agg: pd.DataFrame, dataset: str, metric: str) -> float | None:
    """Best mean among the rows that :func:`can_be_best` allows."""
    prior = prior_row(agg, dataset)
    values = [r[f"{metric}_mean"] for r in agg[agg.dataset == dataset].to_dict("records")
              if can_be_best(r, metric, prior) and not pd.isna(r[f"{metric}_mean"])]
    if not values:
        return None
    return max(values) if METRICS[metric] else min(values)


def _num(v: Any, digits: int = 4) -> str:
    return DASH if v is None or pd.isna(v) else f"{v:.{digits}f}"


def _cell(row: dict, metric: str, best_value: float | None, bold: tuple[str, str], prior: dict) -> str:
    mean, std = row[f"{metric}_mean"], row[f"{metric}_std"]
    if pd.isna(mean):
        return DASH
    text = f"{mean:.4f}" + (f" ± {std:.4f}" if row["n_seeds"] > 1 else "")
    rel = row.get(f"{metric}_rel_zs")
    if row["run"] != "zs" and not is_ref(row["run"]) and metric not in NOT_RANKED and not pd.isna(rel):
        text += f" ({rel:+.1f}%)"
    if best_value is not None and can_be_best(row, metric, prior) and np.isclose(mean, best_value):
        text = f"{bold[0]}{text}{bold[1]}"
    return text


def run_label(row: dict) -> str:
    return row["run"] + (f" {PARSE_MARK}" if row["parse_flag"] else "") + \
        (f" {SPREAD_MARK}" if row["item_independent"] else "") + (f" {PRIOR_MARK}" if row["above_prior"] else "") + \
        (f" {UNIFORM_MARK}" if row["below_uniform"] else "")


def has_paper(agg: pd.DataFrame) -> bool:
    return bool(agg[[f"{m}_paper" for m in PAPER_METRICS]].notna().to_numpy().any())


def table1(agg: pd.DataFrame, config: dict[str, Any] | None, bold: tuple[str, str]) -> pd.DataFrame:
    """The displayed Table 1: one row per dataset × run, text cells."""
    order = run_order(sorted(agg.run.unique()), config)
    paper = has_paper(agg)
    rows = []
    for dataset in sorted(agg.dataset.unique()):
        sub, prior = agg[agg.dataset == dataset].set_index("run"), prior_row(agg, dataset)
        for run in (r for r in order if r in sub.index):
            r = sub.loc[run].to_dict() | {"run": run}
            cells = {"dataset": dataset, "method": run_label(r)}
            for metric in TABLE1_METRICS:
                cells[metric] = _cell(r, metric, best(agg, dataset, metric), bold, prior)
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


def table1_notes(agg: pd.DataFrame, settings: dict[str, Any], policy: str,
                 uniform: list[tuple[str, str, int, float]] = ()) -> list[str]:
    """Explanation lines under Table 1: the paper columns, every flag, and
    the seeds that answered exactly uniformly (``uniform``: dataset, run,
    seed, parse-failure rate; :func:`.load.uniform_answers`)."""
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
                     f"every item; compare with ref_prior (JSD: {ref}). The row is never bold.")
    for flag, mark, ref_run, why in (
            ("above_prior", PRIOR_MARK, "ref_prior", "the label prior, one answer for every item, does better, "
             "so the row is never bold"),
            ("below_uniform", UNIFORM_MARK, "ref_uniform", "answering 1/C for every item does better, so the row "
             "is never bold in JSD, BC, KL or TVD")):
        ref_jsd = agg[agg.run == ref_run].set_index("dataset")["jsd_mean"]
        for run, where in _by_run(agg, flag, "jsd", ".4f").items():
            refs = ", ".join(f"{d} {ref_jsd[d]:.4f}" for d in agg[(agg.run == run) & agg[flag]].dataset
                             if d in ref_jsd.index)
            notes.append(f"{mark} {run}: mean JSD above {ref_run}'s ({where}; {ref_run}: {refs}): {why}.")
    if uniform:
        by_dataset: dict[str, list[str]] = {}
        for d, run, seed, fail in uniform:
            failures = f" ({fail:.0%} parse failures)" if fail else ""
            by_dataset.setdefault(d, []).append(f"{run} seed {seed}{failures}")
        seeds = "; ".join(f"{d}: {', '.join(runs)}" for d, runs in by_dataset.items())
        notes.append(f"Exactly uniform answers: {seeds}. Every prediction of these seeds is 1/C for each class "
                     "(pred_spread 0, mean prediction uniform), so each scores exactly as ref_uniform does; "
                     "they count in the means and ± std above.")
    return notes


# --------------------------------------------------------------------------- writers

def _md_cell(v: Any) -> str:
    return str(v).replace("|", r"\|").replace("\n", " ")


def markdown(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(_md_cell(c) for c in cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


_TEX = (("&", r"\&"), ("#", r"\#"), ("_", r"\_"), ("%", r"\%"), ("±", r"$\pm$"), ("–", "--"),
        ("Δ", r"$\Delta$"), (PARSE_MARK, r"$^\ddagger$"), (SPREAD_MARK, r"\S{}"), (PRIOR_MARK, r"$^\dagger$"),
        (UNIFORM_MARK, r"\P{}"), ("√", r"$\surd$"), ("≈", r"$\approx$"))


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
