"""Paired per-item JSD tests between runs (docs/design.md §6), on :mod:`shala.evaluation.significance`.

Pairs, per dataset, among the runs present (``method`` − ``baseline``):

- each trained method against ``zs``, ``mls``, ``sft_soft`` and ``ref_prior``
  (a pair is listed once: ``mls`` − ``sft_soft`` is the mirror of
  ``sft_soft`` − ``mls``). A trained model that cannot beat the label prior
  has learned nothing from the items;
- ``shala`` − ``shala_no_ambi``, ``shala_batch`` − ``shala_no_ambi_batch``
  (the fair pair: batch scaling on both sides), ``shala_batch`` −
  ``shala_no_ambi`` and ``shala_batch`` − ``shala`` (the ambiguity weight,
  claim 3).

Per-item JSD is averaged over the seeds of a run first; items are matched by
id (inner join). Mean difference, paired bootstrap 95% interval (10,000
resamples of items, seed 0), two-sided Wilcoxon signed-rank p-value, and
Holm's adjustment over the tests of each dataset.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from ..evaluation.significance import holm, paired_test
from .load import is_trained, run_order
from .tables import ALPHA, DASH, N_BOOT, markdown

BASELINES = ("zs", "mls", "sft_soft", "ref_prior")
WEIGHT_PAIRS = (("shala", "shala_no_ambi"), ("shala_batch", "shala_no_ambi_batch"), ("shala_batch", "shala_no_ambi"),
                ("shala_batch", "shala"))
SIG_COLUMNS = ["dataset", "method", "baseline", "n_items", "n_seeds_method", "n_seeds_baseline",
               "jsd_method", "jsd_baseline", "mean_diff", "ci_lo", "ci_hi", "statistic", "p_value", "p_holm"]


def pairs(runs: list[str], config: dict[str, Any] | None) -> list[tuple[str, str]]:
    """(method, baseline) pairs among ``runs``, each unordered pair once."""
    present = set(runs)
    out: list[tuple[str, str]] = []

    def add(m: str, b: str) -> None:
        if m != b and m in present and b in present and (m, b) not in out and (b, m) not in out:
            out.append((m, b))

    for b in BASELINES:
        for m in runs:
            if is_trained(m, config):
                add(m, b)
    for m, b in WEIGHT_PAIRS:
        add(m, b)
    return out


def significance(means: pd.DataFrame, config: dict[str, Any] | None,
                 n_boot: int = N_BOOT, alpha: float = ALPHA) -> pd.DataFrame:
    """One row per dataset × (method, baseline) pair with per-item scores."""
    rows = []
    for dataset in sorted(means.dataset.unique()):
        dm = means[means.dataset == dataset]
        by_run = {r: sub.set_index("id") for r, sub in dm.groupby("run")}
        drows = []
        for m, base in pairs(run_order(sorted(by_run), config), config):
            a, b = by_run[m], by_run[base]
            ids = a.index.intersection(b.index, sort=False)
            res = paired_test(a.loc[ids, "jsd"].to_numpy(float), b.loc[ids, "jsd"].to_numpy(float),
                              n_boot=n_boot, alpha=alpha, seed=0)
            drows.append({"dataset": dataset, "method": m, "baseline": base, "n_items": res.n,
                          "n_seeds_method": int(a["n_seeds"].max()), "n_seeds_baseline": int(b["n_seeds"].max()),
                          "jsd_method": res.mean_a, "jsd_baseline": res.mean_b, "mean_diff": res.mean_diff,
                          "ci_lo": res.ci_lo, "ci_hi": res.ci_hi, "statistic": res.statistic,
                          "p_value": res.p_value})
        for r, p in zip(drows, holm([r["p_value"] for r in drows])):
            r["p_holm"] = float(p)
        rows += drows
    return pd.DataFrame(rows, columns=SIG_COLUMNS)


def notes(records: list, config: dict[str, Any] | None, split: str) -> list[str]:
    """Why a dataset has fewer tests than expected."""
    out = []
    for dataset in sorted({r.dataset for r in records}):
        runs = run_order(sorted({r.run for r in records if r.dataset == dataset}), config)
        if not pairs(runs, config):
            out.append(f"{dataset}: no pair of runs to compare (needs a trained method and zs, mls or "
                       "sft_soft, or two shala variants)")
    for dataset, run in sorted({(r.dataset, r.run) for r in records if not r.items_path.is_file()}):
        if not run.startswith("ref_"):
            out.append(f"{dataset}/{run}: a seed has no per-item scores ({split}.items.csv); "
                       "it is left out of the paired tests")
    return out


def p_text(p: float) -> str:
    """A p-value as the tables print it."""
    if pd.isna(p):
        return DASH
    return "<0.0001" if p < 1e-4 else f"{p:.4f}"


def significance_md(sig: pd.DataFrame, notes_: list[str]) -> str:
    """The body of the paired-test section (no heading: the page adds one)."""
    text = ("Per-item JSD (base 2) of two runs on the same items: each trained method against `zs`, "
            "`mls`, `sft_soft` and `ref_prior` (where present), and the SHALA variants against each other. "
            "Items are matched by id, per-item JSD averaged over seeds first. Δ = mean(method − baseline) "
            "(negative: the method is closer to the human distributions); 95% paired bootstrap "
            f"interval ({N_BOOT:,} resamples of items); two-sided Wilcoxon signed-rank p-value; "
            "Holm-adjusted over the tests of each dataset. The claims count a difference only when its "
            f"interval excludes 0 and its Holm-adjusted p is under {ALPHA}.\n\n")
    if sig.empty:
        return text + "No test: " + ("; ".join(notes_) if notes_ else "no pair of runs with per-item scores") + ".\n"
    view = pd.DataFrame({
        "dataset": sig.dataset, "method": sig.method, "vs": sig.baseline, "n": sig.n_items,
        "JSD method": sig.jsd_method.map(lambda v: f"{v:.4f}"),
        "JSD baseline": sig.jsd_baseline.map(lambda v: f"{v:.4f}"),
        "Δ": sig.mean_diff.map(lambda v: f"{v:+.4f}"),
        "95% CI": [f"[{lo:+.4f}, {hi:+.4f}]" for lo, hi in zip(sig.ci_lo, sig.ci_hi)],
        "p": sig.p_value.map(p_text), "p (Holm)": sig.p_holm.map(p_text),
    })
    text += markdown(view)
    if notes_:
        text += "\n" + "".join(f"- {n}\n" for n in notes_)
    return text
