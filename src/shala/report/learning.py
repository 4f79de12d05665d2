"""Did training learn? Per run and seed: the training log's health and
whether the model reads the items, before any table is read.

Why: a GRPO run whose rollouts all agree gets zero advantages and a zero
gradient; its numbers then say nothing about its reward. And a trained
model that cannot beat the label prior (``ref_prior``) answers without
reading the items. Both show per seed, so a result that holds on one seed
of three is not mistaken for one that holds on all.

Two tables, ``learning.csv`` (one row per dataset × trained method × seed):

- health, from ``train_log.jsonl``: token entropy of the completions on the
  first and in the last quarter of the steps (TRL's ``entropy``, over the
  tokens that carry loss), the fraction of zero-spread groups in the last
  quarter, and the number of steps whose gradient norm was 0;
- reading, from the per-item scores of that seed: JSD, ``pred_spread``,
  ``p_majority`` (the probability given to the majority class: where ``mls``
  moves) and
  the paired per-item JSD difference against ``ref_prior``, ``mls`` and
  ``zs`` (same items; bootstrap 95% interval, as in :mod:`.paired`), against
  the same seed of ``mls``: "below mls on 2 of 3 seeds" is a per-seed count.

A run *reads the items* on a seed when ``pred_spread`` ≥
:data:`MIN_SPREAD` and its JSD is below ``ref_prior``'s with the paired
interval's upper end below 0. A seed that *answers uniformly* gives 1/C to
every class of every item (:attr:`.load.Record.answers_uniform`): it scores
exactly as ``ref_uniform``, and the text names it, since a mean over seeds
would hide it.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from ..evaluation.significance import paired_test
from .load import RunRecord, is_trained, run_order
from .tables import DASH, N_BOOT, markdown

MIN_SPREAD = 0.05       # below it, the answers are (nearly) one constant
AGAINST = ("ref_prior", "mls", "zs")
LEARNING_COLUMNS = ["dataset", "method", "seed", "steps", "entropy_first", "entropy_last",
                    "zero_spread_last", "zero_grad_steps", "jsd", "pred_spread", "p_majority",
                    *[f"{c}_{b}" for b in AGAINST for c in ("diff", "ci_lo", "ci_hi")], "reads_items",
                    "answers_uniform", "probe_reads"]


def log_health(run: RunRecord) -> dict[str, Any]:
    """Entropy (first step, last quarter), zero-spread fraction (last
    quarter) and zero-gradient steps, from the run's step rows."""
    s = run.steps
    n = int(s["step"].max()) if not s.empty else 0
    tail = s[s["step"] >= max(1, n - max(1, n // 4) + 1)]  # the last quarter of the steps
    entropy = s["entropy"].dropna()
    return {"steps": n, "entropy_first": float(entropy.iloc[0]) if len(entropy) else math.nan,
            "entropy_last": float(tail["entropy"].mean()), "zero_spread_last": float(tail["zero_spread_frac"].mean()),
            "zero_grad_steps": int((s["grad_norm"] == 0).sum())}


def learning(df: pd.DataFrame, items: pd.DataFrame, run_records: list[RunRecord],
             config: dict[str, Any] | None, uniform: list[tuple] = ()) -> pd.DataFrame:
    """The :data:`LEARNING_COLUMNS` table for the report's split.

    ``df``: the per-seed metrics frame (:func:`.load.frame`); ``items``: the
    per-item scores per seed (:func:`.load.load_items`); ``uniform``: the
    seeds that answered exactly uniformly (:func:`.load.uniform_answers`).
    """
    uniform_seeds = {(d, run, seed) for d, run, seed, *_ in uniform}
    health = {(r.dataset, r.method, r.seed): log_health(r) for r in run_records}
    rows = []
    overall = df[~df["dataset"].str.contains("/", regex=False)]
    for ds in sorted(overall["dataset"].unique()):
        runs = run_order(list(overall.loc[overall["dataset"] == ds, "run"].unique()), config)
        per_item = items[items["dataset"] == ds]
        base = {b: per_item[per_item["run"] == b] for b in AGAINST}
        # the probe against the best item-independent answer run: ref_constant (the JSD-optimal
        # constant) where it was run, else ref_prior, which a constant may beat on skewed data
        constant = per_item[per_item["run"] == "ref_constant"]
        probe = probe_reads(per_item, runs, config, constant if not constant.empty else base["ref_prior"])
        for method in (r for r in runs if is_trained(r, config)):
            for seed in sorted(overall.loc[(overall["dataset"] == ds) & (overall["run"] == method), "seed"]):
                m = overall[(overall["dataset"] == ds) & (overall["run"] == method) & (overall["seed"] == seed)]
                row: dict[str, Any] = {"dataset": ds, "method": method, "seed": int(seed),
                                       **health.get((ds, method, int(seed)), {}),
                                       "jsd": float(m["jsd"].iloc[0]), "pred_spread": float(m["pred_spread"].iloc[0]),
                                       "p_majority": float(m["p_majority"].iloc[0]) if "p_majority" in m else math.nan}
                own = per_item[(per_item["run"] == method) & (per_item["seed"] == seed)].set_index("id")["jsd"]
                for b in AGAINST:
                    if b == method or base[b].empty or own.empty:
                        continue
                    both = pd.concat([own.astype(float), _against(base[b], seed)], axis=1, join="inner").sort_index()
                    res = paired_test(both.iloc[:, 0], both.iloc[:, 1], n_boot=N_BOOT)
                    row.update({f"diff_{b}": res.mean_diff, f"ci_lo_{b}": res.ci_lo, f"ci_hi_{b}": res.ci_hi})
                hi = row.get("ci_hi_ref_prior")
                row["reads_items"] = (bool(row["pred_spread"] >= MIN_SPREAD and hi is not None and hi < 0)
                                      if hi is not None else None)
                row["answers_uniform"] = (ds, method, int(seed)) in uniform_seeds
                row["probe_reads"] = probe
                rows.append(row)
    return pd.DataFrame(rows, columns=LEARNING_COLUMNS)


def probe_reads(per_item: pd.DataFrame, runs: list[str], config: dict[str, Any] | None,
                prior: pd.DataFrame) -> bool | None:
    """Does the dataset's capacity probe (a method whose trainer is ``probe``)
    beat ``prior``, the item-independent reference's per-item scores: JSD
    below it with the paired interval under 0? None without a probe run or
    a reference to compare with."""
    methods = (config or {}).get("methods") or {}
    probes = [r for r in runs if (methods.get(r) or {}).get("trainer") == "probe"]
    if not probes or prior.empty:
        return None
    own = per_item[per_item["run"] == probes[0]].groupby("id")["jsd"].mean().astype(float)
    both = pd.concat([own, _against(prior, 0)], axis=1, join="inner").sort_index()
    if both.empty:
        return None
    return bool(paired_test(both.iloc[:, 0], both.iloc[:, 1], n_boot=N_BOOT).ci_hi < 0)


def _against(scores: pd.DataFrame, seed: int) -> pd.Series:
    """A comparison run's per-item JSD for this seed: the same seed's where
    it has one (a trained ``mls`` of seed 1 against ``shala`` of seed 1), else
    its mean over seeds (``zs`` and ``ref_*`` do not depend on the seed)."""
    same = scores[scores["seed"] == seed]
    return (same if not same.empty else scores).groupby("id")["jsd"].mean().astype(float)


# why a trained run does not read the items, from the dataset's capacity probe
CAUSE = {
    True: "cause: training (the capacity probe reads the items: it beats ref_constant, or ref_prior where "
          "no constant was run, so the model's representation supports more than one answer for all)",
    False: "cause: capacity (the capacity probe does not beat ref_constant, or ref_prior where no constant "
           "was run, either: this model's representation of the items supports no more than one answer for all)",
    None: "capacity or training cannot be told apart: no capacity probe run on this dataset",
}


def _f(x: Any, fmt: str = ".3f") -> str:
    return DASH if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def learning_md(table: pd.DataFrame) -> str:
    """The per-seed table, then one line per dataset × method: on how many
    seeds it reads the items and beats ``mls``."""
    if table.empty:
        return "No trained run with per-item scores.\n"
    head = ["dataset", "method", "seed", "entropy first → last", "zero-spread (last ¼)", "grad = 0 steps",
            "JSD", "pred_spread", "p(majority)", "− ref_prior [95% CI]", "− mls [95% CI]", "reads the items"]
    body = []
    for r in table.itertuples(index=False):
        def diff(b: str) -> str:
            d = getattr(r, f"diff_{b}")
            if d is None or (isinstance(d, float) and math.isnan(d)):
                return DASH
            return f"{d:+.3f} [{getattr(r, f'ci_lo_{b}'):+.3f}, {getattr(r, f'ci_hi_{b}'):+.3f}]"
        body.append([r.dataset, r.method, str(r.seed), f"{_f(r.entropy_first, '.2f')} → {_f(r.entropy_last, '.2f')}",
                     _f(r.zero_spread_last, ".2f"), str(r.zero_grad_steps) if pd.notna(r.zero_grad_steps) else DASH,
                     _f(r.jsd, ".4f"), _f(r.pred_spread), _f(r.p_majority), diff("ref_prior"), diff("mls"),
                     {True: "yes", False: "no"}.get(r.reads_items, DASH)])
    lines = [markdown(pd.DataFrame(body, columns=head)), ""]
    for (ds, method), g in table.groupby(["dataset", "method"], sort=False):
        reads = int((g["reads_items"] == True).sum())  # noqa: E712 (None stays out)
        beats = int((g["ci_hi_mls"] < 0).sum()) if "ci_hi_mls" in g else 0
        tail = f"; below mls (interval under 0) on {beats} of {len(g)}" if method != "mls" and g["ci_hi_mls"].notna().any() else ""
        flat = [str(seed) for seed in g.loc[g["answers_uniform"] == True, "seed"]]  # noqa: E712
        if flat:
            tail += (f"; seed{'s' if len(flat) > 1 else ''} {', '.join(flat)} answer{'s' if len(flat) == 1 else ''} "
                     "exactly uniformly (1/C for every class of every item), scoring as ref_uniform does")
        if reads < len(g):
            probe = g["probe_reads"].iloc[0] if "probe_reads" in g else None
            tail += "; " + CAUSE[probe if probe in (True, False) else None]  # NaN from a CSV: none
        lines.append(f"- {ds} / {method}: reads the items on {reads} of {len(g)} seed(s){tail}.")
    return "\n".join(lines) + "\n"


def reward_constant_md(df: pd.DataFrame) -> str:
    """One line per dataset where both single-answer references ran: the
    JSD of the answer the ``shala`` reward favours in a policy that reads
    nothing (``ref_shala_constant``) beside ``ref_constant``'s and
    ``ref_prior``'s. Where it is far above them, a collapsed run's bad JSD is
    the reward's optimum, not a failure to optimise (docs/design.md §6.3b)."""
    overall = df[~df["dataset"].str.contains("/", regex=False)]
    lines = []
    for ds in sorted(overall["dataset"].unique()):
        jsd = overall[overall["dataset"] == ds].groupby("run")["jsd"].mean()
        if "ref_shala_constant" not in jsd or "ref_constant" not in jsd:
            continue
        prior = f", ref_prior {jsd['ref_prior']:.3f}" if "ref_prior" in jsd else ""
        lines.append(f"- {ds}: the shala reward's best single answer (ref_shala_constant) scores JSD "
                     f"{jsd['ref_shala_constant']:.3f} (ref_constant {jsd['ref_constant']:.3f}{prior}): a run that "
                     "does not read the items and maximises this reward is pushed toward that answer.")
    return ("\n" + "\n".join(lines) + "\n") if lines else ""
