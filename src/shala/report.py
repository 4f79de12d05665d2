"""Tables, tests and figures from metrics files alone (SPEC §6 end, §7).

No model is needed. Inputs, under ``metrics_root``:

- ``{dataset}/{run}/seed{seed}/{split}.json``: metrics (see
  :mod:`shala.evaluate`); runs are methods (``zs``, ``mls``, ...) and
  ``ref_*`` model-free reference predictors;
- ``{split}.items.csv`` next to each, when present: per-item scores
  (``evaluate.ITEM_COLUMNS``), used for intervals, paired tests and box plots.

Outputs, under ``out`` (all of them are always written, so a workflow can
declare them; missing inputs give notes instead of numbers):

- ``table1.{csv,md,tex}``: one row per dataset × run, the main metrics as
  mean ± std over seeds, the relative change against ``zs`` (in parentheses,
  and for JSD in its own column, "–" when the dataset has no ``zs`` run), the
  best model run per dataset in bold, and a 95% bootstrap interval of mean
  JSD; ``metrics_long.csv``: the per-seed overall metrics.
- ``significance.{csv,md}``: each method (non-``ref_*`` run) against ``zs``
  and against ``mls``: per-item JSD paired by item id, mean difference
  (method − baseline; negative = lower JSD than the baseline), paired
  bootstrap 95% interval, two-sided Wilcoxon signed-rank p-value and Holm's
  adjustment over the tests of the dataset. ``zs`` against ``mls`` is the
  mirror of ``mls`` against ``zs`` and is listed once.
- ``table2.{csv,md,tex}``: our runs next to published numbers from the
  literature file (``shala/data/literature.yaml``), on the same metric and
  convention (e.g. ChaosNLI's natural-log JS distance is our ``jsd_e``) and
  the same subset (``by_subset``).
- ``fig_ambiguity.{png,pdf}``: per ambiguity level, box plots per run of
  per-item JSD and BC, and macro-F1 per level (bars, ± std over seeds).
- ``fig_per_class.{png,pdf}``: per-class F1 and mean predicted probability
  against the annotators' mean, per method.
- ``report.md``: one page with all of the above.

Decisions (where the SPEC is silent):

- Seeds: per-item scores are averaged over the seeds of a run first (an
  item scored in some seeds only is averaged over those; items scored in
  none are dropped). The JSD interval of Table 1 is the percentile bootstrap
  (10,000 resamples of items, numpy seed 0) of the mean of these per-item
  averages; it reflects item sampling, while ± std reflects seeds.
- Paired tests use the items both runs scored (inner join on id).
- Figures use the per-item averages too; reference predictors appear in the
  ambiguity figure as context, and in the per-class figure only when a
  dataset has no method run.
"""

from __future__ import annotations

import json
import logging
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .errors import InputError
from .evaluate import METRIC_KEYS, level_order
from .jsonio import atomic_path, write_text
from .significance import bootstrap_ci, holm, mean_std, paired_test

log = logging.getLogger(__name__)

# metric -> True when higher is better
TABLE1_METRICS = {"jsd": False, "bc": True, "kl": False, "accuracy": True, "macro_f1": True,
                  "soft_micro_f1": True, "parse_failure_rate": False}
_PATH = re.compile(r"(?P<dataset>[^/]+)/(?P<run>[^/]+)/seed(?P<seed>\d+)/(?P<split>[^/]+)\.json$")
BASELINES = ("zs", "mls")
N_BOOT = 10000
ALPHA = 0.05
DASH = "–"
METRIC_LABELS = {"jsd": "JSD", "jsd_e": "JSD (ln)", "kl": "KL", "bc": "BC", "accuracy": "accuracy",
                 "macro_f1": "macro-F1", "weighted_f1": "weighted-F1", "soft_micro_f1": "soft micro-F1",
                 "soft_accuracy": "soft accuracy", "tvd": "TVD"}
OUTPUT_NAMES = ("table1.csv", "table1.md", "table1.tex", "metrics_long.csv",
                "significance.csv", "significance.md",
                "table2.csv", "table2.md", "table2.tex",
                "fig_ambiguity.png", "fig_ambiguity.pdf", "fig_per_class.png", "fig_per_class.pdf",
                "report.md")


# --------------------------------------------------------------------------- inputs

@dataclass
class Record:
    """One metrics file and its parsed content."""
    dataset: str
    run: str
    seed: int
    path: Path
    data: dict[str, Any] = field(repr=False)

    @property
    def items_path(self) -> Path:
        return self.path.with_name(self.path.name[:-len(".json")] + ".items.csv")


def load_records(root: Path, split: str = "test") -> list[Record]:
    """Every ``{split}`` metrics file under ``root``, sorted by path."""
    root = Path(root)
    records = []
    for p in sorted(root.rglob("*.json")):
        m = _PATH.search(p.relative_to(root).as_posix())
        if not m or m["split"] != split:
            continue
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
            if not isinstance(data, dict) or not isinstance(data["overall"], dict):
                raise KeyError("overall")
        except (json.JSONDecodeError, KeyError) as exc:
            raise InputError(f"not a metrics file ({exc})", path=p) from None
        records.append(Record(m["dataset"], m["run"], int(m["seed"]), p, data))
    if not records:
        raise InputError(f"no {split} metrics files found", path=root)
    return records


def _frame(records: list[Record]) -> pd.DataFrame:
    rows = []
    for r in records:
        row = {"dataset": r.dataset, "run": r.run, "seed": r.seed}
        row.update({k: r.data["overall"].get(k) for k in TABLE1_METRICS if k != "parse_failure_rate"})
        row["parse_failure_rate"] = r.data.get("parse_failure_rate")
        rows.append(row)
    df = pd.DataFrame(rows)
    for k in TABLE1_METRICS:
        df[k] = pd.to_numeric(df[k], errors="coerce")
    return df


def collect_metrics(root: Path, split: str = "test") -> pd.DataFrame:
    """One row per metrics file: dataset, run, seed, and the overall metrics."""
    return _frame(load_records(root, split))


def load_items(records: list[Record]) -> pd.DataFrame:
    """Per-item scores of every record that has an items file (one row per
    item and seed); columns dataset, run, seed, id, subset, ambiguity, jsd, bc."""
    frames = []
    for r in records:
        p = r.items_path
        if not p.is_file():
            continue
        try:
            df = pd.read_csv(p, dtype=str, keep_default_na=False)
            missing = {"id", "ambiguity", "jsd", "bc"} - set(df.columns)
            if missing:
                raise ValueError(f"missing columns {sorted(missing)}")
        except (ValueError, pd.errors.ParserError) as exc:
            raise InputError(f"not an items file ({exc})", path=p) from None
        df = df[["id", "subset", "ambiguity", "jsd", "bc"]].copy() if "subset" in df else \
            df[["id", "ambiguity", "jsd", "bc"]].assign(subset="")
        for col in ("jsd", "bc"):
            df[col] = pd.to_numeric(df[col].replace("", np.nan), errors="coerce")
        df.insert(0, "seed", r.seed)
        df.insert(0, "run", r.run)
        df.insert(0, "dataset", r.dataset)
        frames.append(df)
    cols = ["dataset", "run", "seed", "id", "subset", "ambiguity", "jsd", "bc"]
    return pd.concat(frames, ignore_index=True)[cols] if frames else pd.DataFrame(columns=cols)


def item_means(items: pd.DataFrame) -> pd.DataFrame:
    """Per-item scores averaged over seeds (NaN-skipping); one row per
    dataset × run × item, sorted by item id (so intervals do not depend on
    the order of the files)."""
    cols = ["dataset", "run", "id", "subset", "ambiguity", "jsd", "bc", "n_seeds"]
    if items.empty:
        return pd.DataFrame(columns=cols)
    g = items.groupby(["dataset", "run", "id"], sort=True)
    out = g.agg(subset=("subset", "first"), ambiguity=("ambiguity", "first"),
                jsd=("jsd", "mean"), bc=("bc", "mean"), n_seeds=("seed", "nunique")).reset_index()
    return out[cols]


def run_order(runs: list[str], config: dict[str, Any] | None) -> list[str]:
    """Methods in config order first, then reference predictors, then the rest."""
    methods = list((config or {}).get("run_methods", ["zs", "mls", "shala_no_ambi", "shala"]))
    known = [r for r in methods if r in runs]
    refs = sorted(r for r in runs if r.startswith("ref_"))
    rest = sorted(r for r in runs if r not in known and r not in refs)
    return known + rest + refs


def _is_ref(run: str) -> bool:
    return run.startswith("ref_")


# --------------------------------------------------------------------------- Table 1

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


def jsd_intervals(means: pd.DataFrame, n_boot: int = N_BOOT, alpha: float = ALPHA) -> pd.DataFrame:
    """Bootstrap interval of mean JSD per dataset × run over per-item seed averages."""
    rows = []
    for (dataset, run), sub in means.groupby(["dataset", "run"], sort=True):
        x = sub["jsd"].to_numpy(dtype=np.float64)
        x = x[~np.isnan(x)]
        lo, hi = bootstrap_ci(x, n_boot=n_boot, alpha=alpha, seed=0)
        rows.append({"dataset": dataset, "run": run, "jsd_ci_lo": lo, "jsd_ci_hi": hi, "jsd_ci_n_items": int(x.size)})
    return pd.DataFrame(rows, columns=["dataset", "run", "jsd_ci_lo", "jsd_ci_hi", "jsd_ci_n_items"])


def _best(agg: pd.DataFrame, dataset: str, metric: str) -> float | None:
    """Best mean among model runs (reference predictors are context, not contenders)."""
    sub = agg[(agg.dataset == dataset) & ~agg.run.str.startswith("ref_")][f"{metric}_mean"].dropna()
    if sub.empty:
        return None
    return sub.max() if TABLE1_METRICS[metric] else sub.min()


def _cell(row, metric: str, best: float | None, bold: tuple[str, str]) -> str:
    mean, std = row[f"{metric}_mean"], row[f"{metric}_std"]
    if pd.isna(mean):
        return DASH
    text = f"{mean:.4f}"
    if row["n_seeds"] > 1:
        text += f" ± {std:.4f}"
    rel = row.get(f"{metric}_rel_zs")
    if row["run"] != "zs" and not row["run"].startswith("ref_") and rel is not None and not pd.isna(rel):
        text += f" ({rel:+.1f}%)"
    if best is not None and np.isclose(mean, best) and not row["run"].startswith("ref_"):
        text = f"{bold[0]}{text}{bold[1]}"
    return text


def _rel_cell(row) -> str:
    rel = row.get("jsd_rel_zs")
    if row["run"] == "zs" or _is_ref(row["run"]) or rel is None or pd.isna(rel):
        return DASH
    return f"{rel:+.1f}%"


def _ci_cell(row) -> str:
    lo, hi = row.get("jsd_ci_lo"), row.get("jsd_ci_hi")
    if lo is None or pd.isna(lo):
        return DASH
    return f"[{lo:.4f}, {hi:.4f}]"


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
                if metric == "jsd":
                    cells["jsd 95% CI"] = _ci_cell(r)
                    cells["jsd vs zs"] = _rel_cell(r)
            rows.append(cells)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- significance

SIG_COLUMNS = ["dataset", "method", "baseline", "n_items", "n_seeds_method", "n_seeds_baseline",
               "jsd_method", "jsd_baseline", "mean_diff", "ci_lo", "ci_hi", "statistic", "p_value", "p_holm"]


def significance(means: pd.DataFrame, config: dict[str, Any] | None,
                 n_boot: int = N_BOOT, alpha: float = ALPHA) -> pd.DataFrame:
    """Paired per-item JSD tests of each method against ``zs`` and ``mls``."""
    rows = []
    for dataset in sorted(means.dataset.unique()):
        dm = means[means.dataset == dataset]
        runs = run_order(sorted(dm.run.unique()), config)
        methods = [r for r in runs if not _is_ref(r)]
        by_run = {r: dm[dm.run == r].set_index("id") for r in runs}
        drows = []
        for base in BASELINES:
            if base not in by_run:
                continue
            for m in methods:
                if m == base or (base == "mls" and m == "zs" and "zs" in by_run):
                    continue  # itself, or the mirror of mls vs zs
                a, b = by_run[m], by_run[base]
                ids = a.index.intersection(b.index, sort=False)
                res = paired_test(a.loc[ids, "jsd"].to_numpy(float), b.loc[ids, "jsd"].to_numpy(float),
                                  n_boot=n_boot, alpha=alpha, seed=0)
                drows.append({"dataset": dataset, "method": m, "baseline": base, "n_items": res.n,
                              "n_seeds_method": int(a["n_seeds"].max()), "n_seeds_baseline": int(b["n_seeds"].max()),
                              "jsd_method": res.mean_a, "jsd_baseline": res.mean_b, "mean_diff": res.mean_diff,
                              "ci_lo": res.ci_lo, "ci_hi": res.ci_hi, "statistic": res.statistic,
                              "p_value": res.p_value})
        if drows:
            adj = holm([r["p_value"] for r in drows])
            for r, p in zip(drows, adj):
                r["p_holm"] = float(p)
        rows += drows
    return pd.DataFrame(rows, columns=SIG_COLUMNS)


def _p(p: float) -> str:
    if pd.isna(p):
        return DASH
    return "<0.0001" if p < 1e-4 else f"{p:.4f}"


def significance_md(sig: pd.DataFrame, notes: list[str]) -> str:
    text = ("Paired tests of per-item JSD (base 2), each method against `zs` and `mls`: items matched "
            "by id, per-item JSD averaged over seeds first. Δ = mean(method − baseline) "
            "(negative: the method is closer to the human distributions); 95% paired bootstrap "
            f"interval ({N_BOOT:,} resamples of items); two-sided Wilcoxon signed-rank p-value; "
            "Holm-adjusted over the tests of each dataset.\n\n")
    if sig.empty:
        text += "No paired test: " + ("; ".join(notes) if notes else "no method run with a zs or mls baseline "
                                      "and per-item scores") + ".\n"
        return text
    view = pd.DataFrame({
        "dataset": sig.dataset, "method": sig.method, "vs": sig.baseline, "n": sig.n_items,
        "JSD method": sig.jsd_method.map(lambda v: f"{v:.4f}"),
        "JSD baseline": sig.jsd_baseline.map(lambda v: f"{v:.4f}"),
        "Δ": sig.mean_diff.map(lambda v: f"{v:+.4f}"),
        "95% CI": [f"[{lo:+.4f}, {hi:+.4f}]" for lo, hi in zip(sig.ci_lo, sig.ci_hi)],
        "p": sig.p_value.map(_p), "p (Holm)": sig.p_holm.map(_p),
    })
    text += _markdown(view)
    if notes:
        text += "\n" + "".join(f"- {n}\n" for n in notes)
    return text


# --------------------------------------------------------------------------- Table 2

LIT_REQUIRED = ("dataset", "model", "metric", "value", "source")


def default_literature_path() -> Path:
    from importlib.resources import files

    return Path(str(files("shala") / "data" / "literature.yaml"))


def load_literature(path: Path | None = None) -> list[dict[str, Any]]:
    """Entries of the literature file (``entries:`` list), validated."""
    import yaml

    path = Path(path) if path is not None else default_literature_path()
    if not path.is_file():
        raise InputError("literature file not found", path=path)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise InputError(f"malformed YAML ({exc})", path=path) from None
    entries = doc.get("entries") if isinstance(doc, dict) else doc
    entries = entries or []
    if not isinstance(entries, list):
        raise InputError("expected a list under 'entries'", path=path)
    out = []
    for i, e in enumerate(entries):
        where = f"entries[{i}]"
        if not isinstance(e, dict):
            raise InputError("expected a mapping", path=path, field=where)
        for key in LIT_REQUIRED:
            if e.get(key) is None:
                raise InputError("missing field", path=path, field=f"{where}.{key}")
        if e["metric"] not in METRIC_KEYS:
            raise InputError(f"unknown metric {e['metric']!r} (one of {', '.join(METRIC_KEYS)})",
                             path=path, field=f"{where}.metric")
        if isinstance(e["value"], bool) or not isinstance(e["value"], (int, float)):
            raise InputError("must be a number", path=path, field=f"{where}.value")
        entry = {"subset": None, "benchmark": None, "js_base": None, "convention": "", "url": ""} | e
        entry["benchmark"] = entry["benchmark"] or (f"{e['dataset']}/{entry['subset']}" if entry["subset"]
                                                    else e["dataset"])
        out.append(entry)
    return out


T2_COLUMNS = ["benchmark", "dataset", "subset", "kind", "model", "metric", "value", "std", "n_seeds",
              "n_items", "js_base", "convention", "source"]


def table2_long(records: list[Record], literature: list[dict[str, Any]],
                config: dict[str, Any] | None) -> pd.DataFrame:
    """Published numbers and ours, one row per benchmark × system × metric."""
    datasets = {r.dataset for r in records}
    lit = [e for e in literature if e["dataset"] in datasets]
    rows = []
    groups: dict[tuple, list[dict]] = {}
    for e in lit:
        groups.setdefault((e["benchmark"], e["dataset"], e["subset"]), []).append(e)
    for (bench, dataset, subset), entries in groups.items():
        metrics = list(dict.fromkeys(e["metric"] for e in entries))
        conv = {e["metric"]: (e.get("convention") or "", e.get("js_base")) for e in entries}
        for e in entries:
            rows.append({"benchmark": bench, "dataset": dataset, "subset": subset, "kind": "published",
                         "model": e["model"], "metric": e["metric"], "value": float(e["value"]),
                         "std": np.nan, "n_seeds": np.nan, "n_items": np.nan,
                         "js_base": e.get("js_base"), "convention": e.get("convention") or "",
                         "source": e["source"]})
        recs = [r for r in records if r.dataset == dataset]
        for run in run_order(sorted({r.run for r in recs}), config):
            rr = [r for r in recs if r.run == run]
            for metric in metrics:
                vals, ns = [], []
                for r in rr:
                    block = r.data["overall"] if subset is None else (r.data.get("by_subset") or {}).get(subset)
                    v = (block or {}).get(metric)
                    vals.append(np.nan if v is None else float(v))
                    ns.append((block or {}).get("n", 0))
                mean, std = mean_std(vals)
                rows.append({"benchmark": bench, "dataset": dataset, "subset": subset, "kind": "ours",
                             "model": run, "metric": metric, "value": mean, "std": std,
                             "n_seeds": int(np.sum(~np.isnan(vals))), "n_items": int(max(ns)) if ns else 0,
                             "js_base": "e" if metric == "jsd_e" else (2 if metric == "jsd" else None),
                             "convention": "same metric key as the published entries"
                                           + (f" ({conv[metric][0]})" if conv[metric][0] else ""),
                             "source": "this run"})
    return pd.DataFrame(rows, columns=T2_COLUMNS)


def table2_wide(long: pd.DataFrame, split: str) -> tuple[pd.DataFrame, list[str]]:
    """One row per benchmark × system, metrics as columns; and the source list."""
    if long.empty:
        return pd.DataFrame(), []
    sources = list(dict.fromkeys(long[long.kind == "published"].source))
    metrics = list(dict.fromkeys(long.metric))
    rows = []
    for (bench, kind, model), sub in long.groupby(["benchmark", "kind", "model"], sort=False):
        cells = {"benchmark": bench, "model": model,
                 "source": f"[{sources.index(sub.source.iloc[0]) + 1}]" if kind == "published"
                 else _ours_label(sub, split)}
        for metric in metrics:
            m = sub[sub.metric == metric]
            if m.empty or pd.isna(m.value.iloc[0]):
                cells[METRIC_LABELS.get(metric, metric)] = DASH
                continue
            v, s, n = m.value.iloc[0], m["std"].iloc[0], m.n_seeds.iloc[0]
            cells[METRIC_LABELS.get(metric, metric)] = f"{v:.4f}" + (f" ± {s:.4f}" if kind == "ours" and n > 1 else "")
        rows.append(cells)
    return pd.DataFrame(rows), sources


def _ours_label(sub: pd.DataFrame, split: str) -> str:
    n_items, n_seeds = int(sub.n_items.max()), int(sub.n_seeds.max())
    if n_items == 0:
        return f"ours ({split}, no items of this subset)"
    return f"ours ({split}, n={n_items}, {n_seeds} seed{'s' if n_seeds != 1 else ''})"


def table2_texts(long: pd.DataFrame, literature: list[dict[str, Any]], split: str) -> tuple[str, str]:
    """Markdown and LaTeX of Table 2."""
    wide, sources = table2_wide(long, split)
    if wide.empty:
        have = sorted({e["dataset"] for e in literature})
        why = ("The literature file has no entries." if not literature else
               f"No published numbers for the datasets of this run (the literature file covers: {', '.join(have)}).")
        return f"Table 2: comparison with published numbers.\n\n{why}\n", f"% Table 2: {why}\n"
    conv = long[long.kind == "published"].drop_duplicates("metric").set_index("metric")["convention"]
    head = ("Table 2 ({split} split): our runs next to published numbers on the same metric and subset. "
            "Published systems were evaluated on all items of the benchmark, ours on the "
            f"{split} split of our own split, so the items differ; "
            "ours: mean ± std over seeds.\n\n").format(split=split)
    md = head + _markdown(wide) + "\n"
    md += "".join(f"- {METRIC_LABELS.get(m, m)} (`{m}`): {c}\n" for m, c in conv.items() if c)
    md += "\n" + "".join(f"[{i}] {s}\n\n" for i, s in enumerate(sources, 1))
    tex = _latex(wide, n_text=3)
    tex += "".join(f"% [{i}] {s}\n" for i, s in enumerate(sources, 1))
    return md, tex


# --------------------------------------------------------------------------- figures

def _palette(runs: list[str]) -> dict[str, Any]:
    import seaborn as sns

    methods = [r for r in runs if not _is_ref(r)]
    refs = [r for r in runs if _is_ref(r)]
    colors = sns.color_palette("tab10", max(1, len(methods))) if len(methods) <= 10 else \
        sns.color_palette("husl", len(methods))
    greys = sns.color_palette("Greys", len(refs) + 2)[1:-1] if refs else []
    return {**dict(zip(methods, colors)), **dict(zip(refs, greys)), "human": (0.0, 0.0, 0.0)}


def _save(fig, stem: Path) -> list[Path]:
    paths = []
    for fmt, meta in (("png", {"Software": None}), ("pdf", {"CreationDate": None, "ModDate": None})):
        path = stem.with_suffix(f".{fmt}")
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=150, metadata=meta, bbox_inches="tight")
        paths.append(path)
    return paths


def _note(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, fontsize=9, transform=ax.transAxes)
    ax.set_axis_off()


def _legend(fig, palette: dict[str, Any], runs: list[str]) -> None:
    from matplotlib.patches import Patch

    if runs:
        fig.legend(handles=[Patch(facecolor=palette[r], label=r) for r in runs], loc="upper center",
                   ncol=min(len(runs), 8), frameon=False, bbox_to_anchor=(0.5, 1.0))


def fig_ambiguity(records: list[Record], means: pd.DataFrame, config: dict[str, Any] | None,
                  stem: Path, split: str) -> tuple[list[Path], list[str]]:
    """JSD and BC box plots per ambiguity level and run, macro-F1 bars."""
    import seaborn as sns
    from matplotlib.figure import Figure

    notes = []
    datasets = sorted({r.dataset for r in records})
    all_runs = run_order(sorted({r.run for r in records}), config)
    palette = _palette(all_runs)
    fig = Figure(figsize=(16, 3.8 * len(datasets) + 0.6))
    axes = fig.subplots(len(datasets), 3, squeeze=False)
    for i, dataset in enumerate(datasets):
        recs = [r for r in records if r.dataset == dataset]
        runs = [r for r in all_runs if any(x.run == r for x in recs)]
        f1 = pd.DataFrame([{"run": r.run, "seed": r.seed, "ambiguity": str(lv), "macro_f1": b.get("macro_f1")}
                           for r in recs for lv, b in (r.data.get("by_ambiguity") or {}).items()],
                          columns=["run", "seed", "ambiguity", "macro_f1"])
        f1["macro_f1"] = pd.to_numeric(f1["macro_f1"], errors="coerce")
        dm = means[means.dataset == dataset]
        levels = level_order(set(f1.ambiguity) | set(dm.ambiguity.astype(str)))
        box_runs = [r for r in runs if r in set(dm.run)]
        missing = [r for r in runs if r not in box_runs]
        if missing:
            notes.append(f"{dataset}: no per-item scores ({split}.items.csv) for "
                         f"{', '.join(missing)}; {'box plots skipped' if not box_runs else 'not in the box plots'}.")
        for j, metric in enumerate(("jsd", "bc")):
            ax = axes[i, j]
            if not box_runs:
                _note(ax, f"{dataset}: no per-item scores ({split}.items.csv);\n{metric.upper()} box plots skipped")
                continue
            with warnings.catch_warnings():  # seaborn 0.13.2 passes matplotlib's deprecated `vert`
                warnings.filterwarnings("ignore", message=".*vert: bool was deprecated")
                sns.boxplot(data=dm.assign(ambiguity=dm.ambiguity.astype(str)), x="ambiguity", y=metric,
                            hue="run", order=levels, hue_order=box_runs, palette=palette, ax=ax,
                            fliersize=1.5, linewidth=0.8, legend=False)
            ax.set_title(f"{dataset}: per-item {METRIC_LABELS[metric]}" + (" (base 2)" if metric == "jsd" else ""))
            ax.set_xlabel("ambiguity level")
            ax.set_ylabel(METRIC_LABELS[metric])
        ax = axes[i, 2]
        if f1.macro_f1.notna().any():
            sns.barplot(data=f1, x="ambiguity", y="macro_f1", hue="run", order=levels, hue_order=runs,
                        palette=palette, errorbar="sd", ax=ax, legend=False)
            ax.set_title(f"{dataset}: macro-F1 per level (± std over seeds)")
            ax.set_xlabel("ambiguity level")
            ax.set_ylabel("macro-F1")
            ax.set_ylim(0, 1)
        else:
            _note(ax, f"{dataset}: no macro-F1 per ambiguity level in the metrics")
    _legend(fig, palette, all_runs)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / fig.get_figheight()))
    return _save(fig, stem), notes


def fig_per_class(records: list[Record], config: dict[str, Any] | None, stem: Path) -> list[Path]:
    """Per-class F1 and mean predicted vs human probability, per method."""
    import seaborn as sns
    from matplotlib.figure import Figure

    datasets = sorted({r.dataset for r in records})
    all_runs = run_order(sorted({r.run for r in records}), config)
    palette = _palette(all_runs)
    shown, heights, data = [], [], {}
    for dataset in datasets:
        recs = [r for r in records if r.dataset == dataset]
        runs = [r for r in all_runs if any(x.run == r for x in recs)]
        runs = [r for r in runs if not _is_ref(r)] or runs
        rows = [{"run": r.run, "seed": r.seed, "class": c, **{k: blk.get(k) for k in ("f1", "mean_pred", "mean_human")}}
                for r in recs if r.run in runs for c, blk in (r.data.get("per_class") or {}).items()]
        df = pd.DataFrame(rows, columns=["run", "seed", "class", "f1", "mean_pred", "mean_human"])
        for k in ("f1", "mean_pred", "mean_human"):
            df[k] = pd.to_numeric(df[k], errors="coerce")
        classes = list(dict.fromkeys(df["class"]))
        data[dataset] = (runs, df, classes)
        shown += [r for r in runs if r not in shown]
        heights.append(max(2.6, len(classes) * (0.09 * (len(runs) + 1) + 0.12) + 1.0))
    fig = Figure(figsize=(14, sum(heights) + 0.6))
    axes = fig.subplots(len(datasets), 2, squeeze=False, gridspec_kw={"height_ratios": heights})
    for i, dataset in enumerate(datasets):
        runs, df, classes = data[dataset]
        if df.empty:
            _note(axes[i, 0], f"{dataset}: no per-class metrics")
            _note(axes[i, 1], f"{dataset}: no per-class metrics")
            continue
        ax = axes[i, 0]
        sns.barplot(data=df, y="class", x="f1", hue="run", order=classes, hue_order=runs, palette=palette,
                    errorbar="sd", orient="h", ax=ax, legend=False)
        ax.set_title(f"{dataset}: per-class F1 (± std over seeds)")
        ax.set_xlim(0, 1)
        ax.set_xlabel("F1")
        ax.set_ylabel("")
        human = df.groupby("class", sort=False)["mean_human"].mean()
        prob = pd.concat([pd.DataFrame({"run": "human", "seed": 0, "class": human.index, "p": human.to_numpy()}),
                          df.rename(columns={"mean_pred": "p"})[["run", "seed", "class", "p"]]], ignore_index=True)
        ax = axes[i, 1]
        sns.barplot(data=prob, y="class", x="p", hue="run", order=classes, hue_order=["human"] + runs,
                    palette=palette, errorbar="sd", orient="h", ax=ax, legend=False)
        ax.set_title(f"{dataset}: mean probability per class, predicted vs human")
        ax.set_xlabel("mean probability")
        ax.set_ylabel("")
    _legend(fig, palette, ["human"] + shown)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / fig.get_figheight()))
    return _save(fig, stem)


# --------------------------------------------------------------------------- text formats

def _md_cell(v: Any) -> str:
    return str(v).replace("|", r"\|").replace("\n", " ")


def _markdown(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(_md_cell(c) for c in cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def _latex(df: pd.DataFrame, n_text: int = 2) -> str:
    def esc(s: str) -> str:
        for a, b in (("&", r"\&"), ("#", r"\#"), ("_", r"\_"), ("%", r"\%"), ("±", r"$\pm$"),
                     ("–", "--"), ("Δ", r"$\Delta$")):
            s = s.replace(a, b)
        return s

    cols = list(df.columns)
    lines = [r"\begin{tabular}{" + "l" * n_text + "r" * (len(cols) - n_text) + "}", r"\toprule",
             " & ".join(esc(c) for c in cols) + r" \\", r"\midrule"]
    lines += [" & ".join(esc(str(v)) for v in row) + r" \\" for row in df.itertuples(index=False)]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- entry point

def run_report(metrics_root: Path, out: Path, *, config: dict[str, Any] | None = None,
               split: str = "test", literature: Path | list[dict[str, Any]] | None = None) -> list[Path]:
    """Write every report output (see module doc) under ``out``; return their paths.

    ``literature``: a literature YAML file or a list of entries; default the
    packaged ``shala/data/literature.yaml``.
    """
    records = load_records(metrics_root, split)
    df = _frame(records)
    agg = aggregate(df)
    items = load_items(records)
    means = item_means(items)
    agg = agg.merge(jsd_intervals(means), on=["dataset", "run"], how="left")
    out = Path(out)
    P = {name: out / name for name in OUTPUT_NAMES}
    notes: list[str] = []

    # Table 1
    write_text(P["table1.csv"], agg.to_csv(index=False, float_format="%.6f"))
    t1_head = (f"Table 1 ({split} split): mean over seeds (± std when more than one), "
               "relative change against zs in parentheses (\"jsd vs zs\": the change in JSD, "
               f"{DASH} without a zs run), best model run per dataset in bold; "
               "ref_* rows are model-free reference predictors. JSD is the Jensen–Shannon "
               "distance, base 2; its 95% CI is a percentile bootstrap over items "
               f"({N_BOOT:,} resamples) of per-item JSD averaged over seeds "
               f"({DASH} without per-item scores).\n\n")
    t1_md = _markdown(table1(agg, config, ("**", "**")))
    write_text(P["table1.md"], t1_head + t1_md)
    write_text(P["table1.tex"], _latex(table1(agg, config, (r"\textbf{", "}"))))
    write_text(P["metrics_long.csv"], df.to_csv(index=False, float_format="%.6f"))

    # significance
    runs_without_items = sorted({(r.dataset, r.run) for r in records if not r.items_path.is_file()})
    sig_notes = []
    for dataset in sorted(agg.dataset.unique()):
        runs = set(agg[agg.dataset == dataset].run)
        if not runs & set(BASELINES):
            sig_notes.append(f"{dataset}: no zs or mls run")
        elif not [r for r in runs if not _is_ref(r) and r not in BASELINES] and len(runs & set(BASELINES)) < 2:
            sig_notes.append(f"{dataset}: no method to compare with {', '.join(sorted(runs & set(BASELINES)))}")
    for dataset, run in runs_without_items:
        if not _is_ref(run):
            sig_notes.append(f"{dataset}/{run}: a seed has no per-item scores ({split}.items.csv); "
                             "it is left out of the paired tests")
    sig = significance(means, config)
    write_text(P["significance.csv"], sig.to_csv(index=False, float_format="%.10g"))
    sig_md = significance_md(sig, sig_notes)
    write_text(P["significance.md"], sig_md)

    # Table 2
    lit = literature if isinstance(literature, list) else load_literature(literature)
    long = table2_long(records, lit, config)
    write_text(P["table2.csv"], long.to_csv(index=False, float_format="%.6f"))
    t2_md, t2_tex = table2_texts(long, lit, split)
    write_text(P["table2.md"], t2_md)
    write_text(P["table2.tex"], t2_tex)

    # figures
    _, fig_notes = fig_ambiguity(records, means, config, out / "fig_ambiguity", split)
    fig_per_class(records, config, out / "fig_per_class")
    notes += fig_notes

    # one page
    page = [f"# Results report ({split} split)\n",
            f"{len(records)} metrics files, {df.dataset.nunique()} dataset(s), "
            f"{df.run.nunique()} run(s). Tables as CSV/Markdown/LaTeX and figures as PNG/PDF "
            "lie next to this page.\n",
            "## Table 1: datasets × methods\n", t1_head + t1_md,
            "## Table 2: published numbers\n", t2_md,
            "## Paired tests against zs and mls\n", sig_md,
            "## Figures\n",
            "JSD and BC per item (box plots, per-item values averaged over seeds) and macro-F1 "
            "per ambiguity level:\n",
            "![JSD, BC and macro-F1 per ambiguity level](fig_ambiguity.png)\n",
            "([PDF](fig_ambiguity.pdf))\n",
            "Per-class F1, and the mean probability each run gives a class against the annotators' mean:\n",
            "![Per-class F1 and mean probabilities](fig_per_class.png)\n",
            "([PDF](fig_per_class.pdf))\n"]
    if notes:
        page += ["## Notes\n", "".join(f"- {n}\n" for n in notes)]
    write_text(P["report.md"], "\n".join(page))
    log.info("report: %d metrics files, %d datasets -> %s", len(df), df.dataset.nunique(), out)
    return [P[name] for name in OUTPUT_NAMES]
