"""Table 2: our runs next to published numbers on the same benchmark,
metric and subset (the literature file and the paper's own Table 2).

A JSD the paper prints with ``js_base: e`` is a base-e distance: it is
filed under our ``jsd_e`` and flagged, never compared with base-2 JSD.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .load import METRICS, run_order
from .tables import DASH, METRIC_LABELS, PAPER_METRICS, PAPER_REF, latex, markdown

BASE_E_MARK = " (base e)"
BENCHMARKS = {"chaosnli": "ChaosNLI", "chaosnli/mnli": "ChaosNLI-M", "chaosnli/snli": "ChaosNLI-S",
              "msp_podcast": "MSP-Podcast", "goemotions": "GoEmotions"}


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
