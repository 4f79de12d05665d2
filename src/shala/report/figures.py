"""Figures (seaborn), each written as PNG and PDF (docs/design.md §7).

- ``fig_ambiguity``: per ambiguity level, box plots per run of per-item JSD
  and BC (averaged over seeds), and macro-F1 per level (bars, ± std over seeds);
- ``fig_per_class``: per-class F1 and mean predicted probability against the
  annotators' mean, per method (reference predictors only when a dataset
  has no method run);
- ``fig_training``: per dataset, training reward, parse rate and the fraction
  of zero-spread groups per step, one line per method (mean over seeds,
  ± std band), smoothed with a rolling mean.

Every figure is always written; missing inputs give a text note in the
figure (and a note for the report page) instead of a plot.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pandas as pd

from ..evaluation.evaluate import level_order
from ..jsonio import atomic_path
from .load import STEP_FIELDS, is_ref, run_order
from .tables import METRIC_LABELS

STEP_LABELS = {"reward_mean": "mean reward", "parse_rate": "parse rate",
               "zero_spread_frac": "zero-spread groups (fraction)"}


def _palette(runs: list[str]) -> dict[str, Any]:
    import seaborn as sns

    methods = [r for r in runs if not is_ref(r)]
    refs = [r for r in runs if is_ref(r)]
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


def fig_ambiguity(records: list, means: pd.DataFrame, config: dict[str, Any] | None,
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


def fig_per_class(records: list, config: dict[str, Any] | None, stem: Path) -> list[Path]:
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
        runs = [r for r in runs if not is_ref(r)] or runs
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




def smooth_steps(runs: list) -> pd.DataFrame:
    """Step rows of every run (dataset, method, seed, step, fields), each field
    smoothed per run by a trailing rolling mean over a tenth of its steps
    (1 to 10 steps)."""
    cols = ["dataset", "method", "seed", "step", *STEP_FIELDS]
    frames = []
    for r in runs:
        s = r.steps
        if s.empty:
            continue
        window = max(1, min(10, len(s) // 10))
        sm = s[list(STEP_FIELDS)].rolling(window, min_periods=1).mean()
        frames.append(sm.assign(step=s.step, dataset=r.dataset, method=r.method, seed=r.seed)[cols])
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols)


def identical_curves(df: pd.DataFrame, methods: list[str]) -> list[str]:
    """Methods whose logged steps are identical (every seed, step and field),
    so their lines coincide and only the last drawn shows: say so."""
    notes = []
    for dataset, d in df.groupby("dataset", sort=True):
        key = {m: d[d.method == m].sort_values(["seed", "step"])[["seed", "step", *STEP_FIELDS]]
               .to_numpy(dtype=float).tobytes() for m in methods if m in set(d.method)}
        groups: dict[bytes, list[str]] = {}
        for m, k in key.items():
            groups.setdefault(k, []).append(m)
        for same in (g for g in groups.values() if len(g) > 1):
            notes.append(f"{dataset}: {', '.join(same)} logged identical training steps (same rewards, parse "
                         "rates and spreads at every step and seed): their lines coincide in the training figure.")
    return notes


def fig_training(runs: list, config: dict[str, Any] | None, stem: Path) -> tuple[list[Path], list[str]]:
    """Reward, parse rate and zero-spread fraction per step, per dataset and method."""
    import seaborn as sns
    from matplotlib.figure import Figure

    df = smooth_steps(runs)
    notes = []
    if not runs:
        notes.append("No training run records were given: the training figure has no curves.")
    elif df.empty:
        notes.append("The training logs (train_log.jsonl) hold no step rows: the training figure has no curves.")
    else:
        empty = [f"{r.dataset}/{r.method}/seed{r.seed}" for r in runs if r.steps.empty]
        if empty:
            notes.append(f"No step rows in train_log.jsonl of {', '.join(empty)}; not in the training figure.")
    datasets = sorted(set(df.dataset)) or [""]
    fig = Figure(figsize=(15, 3.6 * len(datasets) + 0.6))
    axes = fig.subplots(len(datasets), 3, squeeze=False)
    if df.empty:
        for ax in axes[0]:
            _note(ax, "no training steps to plot\n(no run records, or train_log.jsonl without step rows)")
        return _save(fig, stem), notes
    methods = run_order(sorted(set(df.method)), config)
    palette = _palette(methods)
    notes += identical_curves(df, methods)
    for i, dataset in enumerate(datasets):
        d = df[df.dataset == dataset]
        for j, col in enumerate(STEP_FIELDS):
            ax, sub = axes[i, j], d.dropna(subset=[col])
            if sub.empty:
                _note(ax, f"{dataset}: no {STEP_LABELS[col]} logged")
                continue
            sns.lineplot(data=sub, x="step", y=col, hue="method", palette=palette, errorbar="sd", ax=ax,
                         hue_order=[m for m in methods if m in set(sub.method)], legend=False)
            ax.set_title(f"{dataset}: {STEP_LABELS[col]}")
            ax.set_xlabel("optimizer step")
            ax.set_ylabel(STEP_LABELS[col])
            if col != "reward_mean":
                ax.set_ylim(-0.02, 1.02)
    _legend(fig, palette, methods)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / fig.get_figheight()))
    return _save(fig, stem), notes
