"""Figures (seaborn), each written as PNG and PDF (docs/design.md §7).

- ``fig_ambiguity``: per ambiguity level, box plots per run of per-item JSD
  and BC (averaged over seeds), and macro-F1 per level (bars, ± std over seeds);
- ``fig_per_class``: per-class F1 and mean predicted probability against the
  annotators' mean, per method (reference predictors only when a dataset
  has no method run);
- ``fig_training``: per dataset, what the "Did training learn?" section
  reads, per step: the completions' token entropy, the fraction of
  zero-spread groups and the gradient norm, one line per method (mean over
  seeds, ± std band), smoothed with a rolling mean. Rewards are not drawn:
  each method has its own reward function, so their levels share no scale.

Each run keeps one colour in every figure (:func:`palette`: a fixed order of
method names, not each figure's own runs). Every figure is always written;
missing inputs give a text note in the figure (and a note for the report
page) instead of a plot.

:data:`FIGURES` declares each figure once, next to its function: its file
stem, the alt text of its image and its caption on the report page.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from ..evaluation.evaluate import level_order
from ..evaluation.reference import REFERENCE_PREDICTORS
from ..jsonio import atomic_path
from ..registry import Registry
from .load import LOG_FIELDS, STEP_FIELDS, is_ref, run_order
from .tables import METRIC_LABELS

# the project's methods (config.yaml's methods block) in a fixed order: a
# method's colour is its place here, the same in every figure and report
METHOD_ORDER = ("zs", "mls", "shala_no_ambi", "shala", "shala_batch", "shala_no_ambi_batch", "sft_soft")
REF_ORDER = tuple(f"ref_{name}" for name in REFERENCE_PREDICTORS)
# the training figure's panels: what the "Did training learn?" section reads
TRAINING_PANELS = {"entropy": "token entropy", "zero_spread_frac": "zero-spread groups (fraction)",
                   "grad_norm": "gradient norm"}
# the report's figures in page order, by file stem; metadata ``alt`` (the
# image's alt text) and ``caption`` (the text above it; empty: written from
# the run records by :func:`training_caption`)
FIGURES: Registry[Callable[..., Any]] = Registry("figure")


def palette(runs: list[str]) -> dict[str, Any]:
    """Colours of a report's runs, to pass to every figure: a method of
    :data:`METHOD_ORDER` by its place there, other methods (sorted by name)
    on the colours after them, reference predictors in greys by their fixed
    order, and "human" black. tab10's grey is left to the references."""
    import seaborn as sns

    colours = [c for i, c in enumerate(sns.color_palette("tab10")) if i != 7]
    colours += [c for i, c in enumerate(sns.color_palette("tab20")) if i % 2 and i != 15]  # light, no grey
    other = sorted({r for r in runs if not is_ref(r) and r not in METHOD_ORDER})
    methods = list(METHOD_ORDER) + other
    if len(methods) > len(colours):
        colours += sns.color_palette("husl", len(methods) - len(colours))
    refs = list(REF_ORDER) + sorted({r for r in runs if is_ref(r) and r not in REF_ORDER})
    greys = sns.color_palette("Greys", len(refs) + 2)[1:-1]
    return {**dict(zip(methods, colours)), **dict(zip(refs, greys)), "human": (0.0, 0.0, 0.0)}


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


def _legend(fig, colours: dict[str, Any], runs: list[str]) -> None:
    from matplotlib.patches import Patch

    if runs:
        fig.legend(handles=[Patch(facecolor=colours[r], label=r) for r in runs], loc="upper center",
                   ncol=min(len(runs), 8), frameon=False, bbox_to_anchor=(0.5, 1.0))


@FIGURES.register("fig_ambiguity", alt="JSD, BC and macro-F1 per ambiguity level",
                  caption="JSD and BC per item (box plots, per-item values averaged over seeds) and macro-F1 "
                          "per ambiguity level:")
def fig_ambiguity(records: list, means: pd.DataFrame, config: dict[str, Any] | None,
                  stem: Path, split: str, colours: dict[str, Any] | None = None) -> tuple[list[Path], list[str]]:
    """JSD and BC box plots per ambiguity level and run, macro-F1 bars."""
    import seaborn as sns
    from matplotlib.figure import Figure

    notes = []
    datasets = sorted({r.dataset for r in records})
    all_runs = run_order(sorted({r.run for r in records}), config)
    colours = colours or palette(all_runs)
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
                            hue="run", order=levels, hue_order=box_runs, palette=colours, ax=ax,
                            fliersize=1.5, linewidth=0.8, legend=False)
            ax.set_title(f"{dataset}: per-item {METRIC_LABELS[metric]}" + (" (base 2)" if metric == "jsd" else ""))
            ax.set_xlabel("ambiguity level")
            ax.set_ylabel(METRIC_LABELS[metric])
        ax = axes[i, 2]
        if f1.macro_f1.notna().any():
            sns.barplot(data=f1, x="ambiguity", y="macro_f1", hue="run", order=levels, hue_order=runs,
                        palette=colours, errorbar="sd", ax=ax, legend=False)
            ax.set_title(f"{dataset}: macro-F1 per level (± std over seeds)")
            ax.set_xlabel("ambiguity level")
            ax.set_ylabel("macro-F1")
            ax.set_ylim(0, 1)
        else:
            _note(ax, f"{dataset}: no macro-F1 per ambiguity level in the metrics")
    _legend(fig, colours, all_runs)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / fig.get_figheight()))
    return _save(fig, stem), notes


@FIGURES.register("fig_per_class", alt="Per-class F1 and mean probabilities",
                  caption="Per-class F1, and the mean probability each run gives a class against the "
                          "annotators' mean:")
def fig_per_class(records: list, config: dict[str, Any] | None, stem: Path,
                  colours: dict[str, Any] | None = None) -> list[Path]:
    """Per-class F1 and mean predicted vs human probability, per method."""
    import seaborn as sns
    from matplotlib.figure import Figure

    datasets = sorted({r.dataset for r in records})
    all_runs = run_order(sorted({r.run for r in records}), config)
    colours = colours or palette(all_runs)
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
        sns.barplot(data=df, y="class", x="f1", hue="run", order=classes, hue_order=runs, palette=colours,
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
                    palette=colours, errorbar="sd", orient="h", ax=ax, legend=False)
        ax.set_title(f"{dataset}: mean probability per class, predicted vs human")
        ax.set_xlabel("mean probability")
        ax.set_ylabel("")
    _legend(fig, colours, ["human"] + shown)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / fig.get_figheight()))
    return _save(fig, stem)


FIELDS = (*STEP_FIELDS, *LOG_FIELDS)


def smooth_steps(runs: list) -> pd.DataFrame:
    """Step rows of every run (dataset, method, seed, step, fields), each field
    smoothed per run by a trailing rolling mean over a tenth of its steps
    (1 to 10 steps)."""
    cols = ["dataset", "method", "seed", "step", *FIELDS]
    frames = []
    for r in runs:
        s = r.steps
        if s.empty:
            continue
        window = max(1, min(10, len(s) // 10))
        sm = s[list(FIELDS)].rolling(window, min_periods=1).mean()
        frames.append(sm.assign(step=s.step, dataset=r.dataset, method=r.method, seed=r.seed)[cols])
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols)


def identical_curves(df: pd.DataFrame, methods: list[str]) -> list[str]:
    """Methods whose logged steps are identical (every seed, step and field),
    so their lines coincide and only the last drawn shows: say so."""
    fields = [c for c in FIELDS if c in df]
    notes = []
    for dataset, d in df.groupby("dataset", sort=True):
        key = {m: d[d.method == m].sort_values(["seed", "step"])[["seed", "step", *fields]]
               .to_numpy(dtype=float).tobytes() for m in methods if m in set(d.method)}
        groups: dict[bytes, list[str]] = {}
        for m, k in key.items():
            groups.setdefault(k, []).append(m)
        for same in (g for g in groups.values() if len(g) > 1):
            notes.append(f"{dataset}: {', '.join(same)} logged identical training steps (the same values at every "
                         "step and seed): their lines coincide in the training figure.")
    return notes


def training_caption(runs: list) -> str:
    """The training figure's caption: what it shows, and the reward scaling
    each method's runs recorded (from the run records, never assumed)."""
    scaling: dict[str, dict[str, list[str]]] = {}
    rank = {m: i for i, m in enumerate(METHOD_ORDER)}
    for r in sorted(runs, key=lambda r: (rank.get(r.method, len(rank)), r.method)):
        if r.steps.empty:
            continue
        how = r.scale_rewards or "not recorded"
        if r.scale_rewards == "batch" and r.prompts_per_batch:
            how += f", {r.prompts_per_batch} prompt{'s' if r.prompts_per_batch > 1 else ''} per generation batch"
        names = scaling.setdefault(r.dataset, {}).setdefault(how, [])
        if r.method not in names:
            names.append(r.method)
    runs_did = "; ".join(f"{ds}: " + ", ".join(f"{', '.join(m)} ({how})" for how, m in by.items())
                         for ds, by in sorted(scaling.items()))
    return ("Training per optimizer step, one line per method (mean over seeds, band ± std; trailing rolling mean "
            "over a tenth of the steps, 1 to 10): the completions' token entropy, the fraction of groups whose "
            "rollouts all got the same reward (their advantage is 0, so they carry no reward signal, under group "
            "and batch scaling alike) and the gradient norm, as the \"Did training learn?\" section reads them. "
            "Rewards are not drawn: each method has its own reward function, so their levels share no scale. "
            + (f"Reward scaling, as the run records state it: {runs_did}." if runs_did else
               "No run logged training steps.") + "\n")


@FIGURES.register("fig_training", alt="Token entropy, zero-spread groups and gradient norm per step",
                  caption="")
def fig_training(runs: list, config: dict[str, Any] | None, stem: Path,
                 colours: dict[str, Any] | None = None) -> tuple[list[Path], list[str]]:
    """Token entropy, zero-spread fraction and gradient norm per step, per dataset and method."""
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
    axes = fig.subplots(len(datasets), len(TRAINING_PANELS), squeeze=False)
    if df.empty:
        for ax in axes[0]:
            _note(ax, "no training steps to plot\n(no run records, or train_log.jsonl without step rows)")
        return _save(fig, stem), notes
    methods = run_order(sorted(set(df.method)), config)
    colours = colours or palette(methods)
    notes += identical_curves(df, methods)
    for i, dataset in enumerate(datasets):
        d = df[df.dataset == dataset]
        for j, (col, label) in enumerate(TRAINING_PANELS.items()):
            ax, sub = axes[i, j], d.dropna(subset=[col])
            if sub.empty:
                _note(ax, f"{dataset}: no {label} logged")
                continue
            sns.lineplot(data=sub, x="step", y=col, hue="method", palette=colours, errorbar="sd", ax=ax,
                         hue_order=[m for m in methods if m in set(sub.method)], legend=False)
            ax.set_title(f"{dataset}: {label}")
            ax.set_xlabel("optimizer step")
            ax.set_ylabel(label)
            if col == "zero_spread_frac":
                ax.set_ylim(-0.02, 1.02)
            else:
                ax.set_ylim(bottom=0)
    _legend(fig, colours, methods)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / fig.get_figheight()))
    return _save(fig, stem), notes
