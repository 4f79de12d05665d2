"""Tables from metrics files alone (SPEC §7): no model is needed.

Reads ``metrics/{dataset}/{run}/seed{seed}/{split}.json`` (runs are methods
and ``ref_*`` reference predictors), aggregates over seeds (mean ± std) and
writes Table 1 as CSV, Markdown and LaTeX: one row per dataset × run, the
main metrics as columns, the relative change against ``zs`` where it
exists, and the best value per dataset in bold.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .errors import InputError
from .jsonio import write_text

log = logging.getLogger(__name__)

# metric -> True when higher is better
TABLE1_METRICS = {"jsd": False, "bc": True, "kl": False, "accuracy": True, "macro_f1": True,
                  "soft_micro_f1": True, "parse_failure_rate": False}
_PATH = re.compile(r"(?P<dataset>[^/]+)/(?P<run>[^/]+)/seed(?P<seed>\d+)/(?P<split>[^/]+)\.json$")


def collect_metrics(root: Path, split: str = "test") -> pd.DataFrame:
    """One row per metrics file: dataset, run, seed, and the overall metrics."""
    rows = []
    for p in sorted(Path(root).rglob("*.json")):
        m = _PATH.search(p.relative_to(root).as_posix())
        if not m or m["split"] != split:
            continue
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
            overall = data["overall"]
        except (json.JSONDecodeError, KeyError) as exc:
            raise InputError(f"not a metrics file ({exc})", path=p) from None
        row = {"dataset": m["dataset"], "run": m["run"], "seed": int(m["seed"])}
        row.update({k: overall.get(k) for k in TABLE1_METRICS if k != "parse_failure_rate"})
        row["parse_failure_rate"] = data.get("parse_failure_rate")
        rows.append(row)
    if not rows:
        raise InputError(f"no {split} metrics files found", path=root)
    return pd.DataFrame(rows)


def run_order(runs: list[str], config: dict[str, Any] | None) -> list[str]:
    """Methods in config order first, then reference predictors, then the rest."""
    methods = list((config or {}).get("run_methods", ["zs", "mls", "shala_no_ambi", "shala"]))
    known = [r for r in methods if r in runs]
    refs = sorted(r for r in runs if r.startswith("ref_"))
    rest = sorted(r for r in runs if r not in known and r not in refs)
    return known + rest + refs


def aggregate(df: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds, plus the relative change of the mean vs zs (%)."""
    metrics = list(TABLE1_METRICS)
    g = df.groupby(["dataset", "run"])[metrics]
    mean = g.mean().add_suffix("_mean")
    std = g.std(ddof=1).fillna(0.0).add_suffix("_std")
    n = df.groupby(["dataset", "run"]).size().rename("n_seeds")
    out = pd.concat([mean, std, n], axis=1).reset_index()
    for metric in metrics:
        base = out[out.run == "zs"].set_index("dataset")[f"{metric}_mean"]
        ref = out["dataset"].map(base)
        with np.errstate(divide="ignore", invalid="ignore"):
            out[f"{metric}_rel_zs"] = np.where(ref.abs() > 0, 100.0 * (out[f"{metric}_mean"] - ref) / ref.abs(), np.nan)
    return out


def _best(agg: pd.DataFrame, dataset: str, metric: str) -> float | None:
    """Best mean among model runs (reference predictors are context, not contenders)."""
    sub = agg[(agg.dataset == dataset) & ~agg.run.str.startswith("ref_")][f"{metric}_mean"].dropna()
    if sub.empty:
        return None
    return sub.max() if TABLE1_METRICS[metric] else sub.min()


def _cell(row, metric: str, best: float | None, bold: tuple[str, str]) -> str:
    mean, std = row[f"{metric}_mean"], row[f"{metric}_std"]
    if pd.isna(mean):
        return "–"
    text = f"{mean:.4f}"
    if row["n_seeds"] > 1:
        text += f" ± {std:.4f}"
    rel = row.get(f"{metric}_rel_zs")
    if row["run"] != "zs" and not row["run"].startswith("ref_") and rel is not None and not pd.isna(rel):
        text += f" ({rel:+.1f}%)"
    if best is not None and np.isclose(mean, best) and not row["run"].startswith("ref_"):
        text = f"{bold[0]}{text}{bold[1]}"
    return text


def table1(agg: pd.DataFrame, config: dict[str, Any] | None, bold: tuple[str, str]) -> pd.DataFrame:
    order = run_order(sorted(agg.run.unique()), config)
    rows = []
    for dataset in sorted(agg.dataset.unique()):
        sub = agg[agg.dataset == dataset].set_index("run")
        for run in order:
            if run not in sub.index:
                continue
            r = sub.loc[run].to_dict() | {"run": run}
            cells = {"dataset": dataset, "method": run}
            for metric in TABLE1_METRICS:
                cells[metric] = _cell(r, metric, _best(agg, dataset, metric), bold)
            rows.append(cells)
    return pd.DataFrame(rows)


def _markdown(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def _latex(df: pd.DataFrame) -> str:
    def esc(s: str) -> str:
        return s.replace("_", r"\_").replace("%", r"\%").replace("±", r"$\pm$").replace("–", "--")

    cols = list(df.columns)
    lines = [r"\begin{tabular}{ll" + "r" * (len(cols) - 2) + "}", r"\toprule",
             " & ".join(esc(c) for c in cols) + r" \\", r"\midrule"]
    lines += [" & ".join(esc(str(v)) for v in row) + r" \\" for row in df.itertuples(index=False)]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def run_report(metrics_root: Path, out: Path, *, config: dict[str, Any] | None = None,
               split: str = "test") -> list[Path]:
    """Write table1.{csv,md,tex} (and the per-seed long table) under ``out``."""
    df = collect_metrics(metrics_root, split)
    agg = aggregate(df)
    out = Path(out)
    paths = [out / "table1.csv", out / "table1.md", out / "table1.tex", out / "metrics_long.csv"]
    write_text(paths[0], agg.to_csv(index=False, float_format="%.6f"))
    header = (f"Table 1 ({split} split): mean over seeds (± std when more than one), "
              "relative change against zs in parentheses, best model run per dataset in bold; "
              "ref_* rows are model-free reference predictors. JSD is the Jensen–Shannon "
              "distance, base 2.\n\n")
    write_text(paths[1], header + _markdown(table1(agg, config, ("**", "**"))))
    write_text(paths[2], _latex(table1(agg, config, (r"\textbf{", "}"))))
    write_text(paths[3], df.to_csv(index=False, float_format="%.6f"))
    log.info("report: %d metrics files, %d datasets -> %s", len(df), df.dataset.nunique(), out)
    return paths
