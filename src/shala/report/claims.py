"""The paper's five qualitative claims, checked on this run's numbers.

For each claim and dataset: ``supports``, ``refutes`` or ``cannot tell``
(with the reason), and the numbers behind it. Rules:

- A JSD difference counts when its paired 95% interval excludes 0 and its
  Holm-adjusted p (the paired-test table's, adjusted over the dataset's
  tests) is under 0.05; otherwise it cannot tell, and the text gives both.
  Without per-item scores the sign of the difference of means is used and
  the text says so. BC, F1 and accuracy compare means over seeds.
- A run cannot be judged when its parse-failure rate is over
  ``report.max_parse_failure_rate`` (its numbers are the fallback's) or when
  it is a trained run with an item-independent answer (``pred_spread``
  under ``report.min_pred_spread``: one distribution for every item, so a
  difference from it measures that constant, not what the method learned
  from the items): a comparison with it gives "cannot tell", with the
  reason. Any comparison that goes against the claim refutes it; otherwise
  any comparison that cannot be judged leaves it at "cannot tell"; else it
  supports it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from ..evaluation.evaluate import level_order
from .load import is_ref
from .paired import p_text
from .tables import ALPHA, PAPER_SETUP, markdown

SHALA = ("shala", "shala_no_ambi", "shala_batch", "shala_no_ambi_batch")
CLAIMS = {
    1: "MLS raises accuracy/F1 over zero-shot on NLI but worsens JSD and BC (collapse to the dominant label).",
    2: "SHALA (with or without the ambiguity weight) lowers JSD and raises BC and F1 over both zero-shot "
       "and MLS, on every dataset.",
    3: "The ambiguity weight H̃(p) adds a further gain (0.192 → 0.181 JSD on ChaosNLI).",
    4: "SHALA degrades least from low to high ambiguity; MLS degrades most.",
    5: "Largest per-class gain on ChaosNLI contradiction: F1 0.09 (ZS), 0.50 (MLS) → 0.83 (SHALA).",
}
# Claim 4: BC drops closer than this count as a tie (a run flat at BC 1.000
# and one at 0.999 degrade alike).
BC_TIE = 0.005


@dataclass(frozen=True)
class Finding:
    claim: int
    dataset: str
    verdict: str  # supports | refutes | cannot tell
    reason: str   # why it cannot tell, or what goes against the claim
    text: str     # the numbers

    @property
    def label(self) -> str:
        return f"cannot tell ({self.reason})" if self.verdict == "cannot tell" else self.verdict


class Facts:
    """Look-ups over the aggregates, paired tests and raw records."""

    def __init__(self, agg: pd.DataFrame, sig: pd.DataFrame, records: list, runs: list,
                 paper: dict[str, Any], settings: dict[str, Any]):
        self.agg = agg.set_index(["dataset", "run"])
        self.sig = sig.set_index(["dataset", "method", "baseline"]) if not sig.empty else None
        self.records, self.runs, self.paper, self.settings = records, runs, paper, settings

    def has(self, ds: str, run: str) -> bool:
        return (ds, run) in self.agg.index

    def v(self, ds: str, run: str, metric: str) -> float:
        return float(self.agg.loc[(ds, run), f"{metric}_mean"]) if self.has(ds, run) else math.nan

    def unjudgeable(self, ds: str, *runs: str) -> str | None:
        missing = [r for r in runs if not self.has(ds, r)]
        if missing:
            return f"no {' or '.join(missing)} run"
        bad = [r for r in runs if self.agg.loc[(ds, r), "parse_flag"]]
        constant = [r for r in runs if self.agg.loc[(ds, r), "item_independent"]]
        return "; ".join(
            [f"claims against {r} cannot be judged: its parse-failure rate {self.v(ds, r, 'parse_failure_rate'):.0%} "
             f"is over {self.settings['max_parse_failure_rate']}, so its numbers are the fallback's, not the model's"
             for r in bad] +
            [f"{r} gives an item-independent answer (pred_spread {self.v(ds, r, 'pred_spread'):.3f}, under "
             f"{self.settings['min_pred_spread']}), so it cannot be judged" for r in constant]) or None

    def jsd(self, ds: str, m: str, b: str) -> tuple[int, str, str]:
        """Direction of JSD(m) − JSD(b) (+1, −1; 0: cannot tell), its text,
        and why it cannot tell ("" when it can)."""
        row, sign = None, 1
        if self.sig is not None:
            for key, s in (((ds, m, b), 1), ((ds, b, m), -1)):
                if key in self.sig.index:
                    row, sign = self.sig.loc[key], s
                    break
        va, vb = self.v(ds, m, "jsd"), self.v(ds, b, "jsd")
        if row is None or pd.isna(row.ci_lo):
            d = va - vb
            return (int(d > 0) - int(d < 0),
                    f"JSD {va:.4f} vs {vb:.4f} (Δ {d:+.4f}; no per-item scores, so no interval)", "")
        d, lo, hi = float(sign * row.mean_diff), *sorted((float(sign * row.ci_lo), float(sign * row.ci_hi)))
        p = float(row.p_holm)
        text = (f"JSD {va:.4f} vs {vb:.4f} (paired Δ {d:+.4f}, 95% CI [{lo:+.4f}, {hi:+.4f}], "
                f"Holm-adjusted p {p_text(p)})")
        if lo <= 0 <= hi:
            return 0, text, f"{m} vs {b}: the 95% CI of the JSD difference includes 0"
        if not p < ALPHA:
            return 0, text, (f"{m} vs {b}: the JSD difference is not significant after Holm's adjustment over "
                             f"this dataset's paired tests (p {p_text(p)} ≥ {ALPHA})")
        return (1 if lo > 0 else -1), text, ""

    def diff(self, ds: str, m: str, b: str, metric: str) -> float:
        return self.v(ds, m, metric) - self.v(ds, b, metric)

    def paper_row(self, ds: str, run: str) -> dict[str, Any]:
        return ((self.paper.get("table1") or {}).get(ds) or {}).get(run) or {}

    def scale_rewards(self, ds: str, method: str) -> str | None:
        values = sorted({r.scale_rewards for r in self.runs
                         if r.dataset == ds and r.method == method and r.scale_rewards is not None})
        return values[0] if len(values) == 1 else ("mixed: " + ", ".join(values) if values else None)

    def prompts_per_batch(self, ds: str, method: str) -> int | None:
        values = {r.prompts_per_batch for r in self.runs if r.dataset == ds and r.method == method}
        return values.pop() if len(values) == 1 else None


def _verdict(against: list[str], unknown: list[str]) -> tuple[str, str]:
    if against:
        return "refutes", "; ".join(against)
    if unknown:
        return "cannot tell", "; ".join(unknown)
    return "supports", ""


def _not_judged(verdict: str, unknown: list[str]) -> str:
    """What was left out, when the verdict does not already say it."""
    return f" Not judged: {'; '.join(unknown)}." if unknown and verdict != "cannot tell" else ""


def claim1(f: Facts, ds: str) -> Finding:
    why = f.unjudgeable(ds, "zs", "mls")
    if why:
        return Finding(1, ds, "cannot tell", why, "")
    d_acc, d_f1, d_bc = (f.diff(ds, "mls", "zs", m) for m in ("accuracy", "macro_f1", "bc"))
    jdir, jtxt, jwhy = f.jsd(ds, "mls", "zs")
    text = (f"mls vs zs: accuracy {f.v(ds, 'mls', 'accuracy'):.4f} vs {f.v(ds, 'zs', 'accuracy'):.4f} "
            f"({d_acc:+.4f}), macro-F1 {d_f1:+.4f}, BC {f.v(ds, 'mls', 'bc'):.4f} vs {f.v(ds, 'zs', 'bc'):.4f} "
            f"({d_bc:+.4f}), {jtxt}.")
    pz, pm = f.paper_row(ds, "zs"), f.paper_row(ds, "mls")
    if pz and pm:
        text += " Paper: " + ", ".join(f"{lab} {pz[k]:.3f} → {pm[k]:.3f}" for lab, k in
                                       (("accuracy", "accuracy"), ("JSD", "jsd"), ("BC", "bc"))) + "."
    against = (["accuracy and macro-F1 did not rise"] if d_acc <= 0 and d_f1 <= 0 else []) + \
        (["JSD fell"] if jdir < 0 else []) + (["BC did not fall"] if d_bc >= 0 else [])
    verdict, reason = _verdict(against, [jwhy] if jdir == 0 else [])
    return Finding(1, ds, verdict, reason, text)


def claim2(f: Facts, ds: str) -> Finding:
    variants = [v for v in SHALA if f.has(ds, v)]
    bases = [b for b in ("zs", "mls") if f.has(ds, b)]
    if not variants or not bases:
        return Finding(2, ds, "cannot tell", "needs a SHALA run and a zs or mls run", "")
    parts, against, unknown = [], [], [] if len(bases) == 2 else [f"no {({'zs', 'mls'} - set(bases)).pop()} run"]
    for v in variants:
        for b in bases:
            why = f.unjudgeable(ds, v, b)
            if why:
                unknown.append(why)
                continue
            jdir, jtxt, jwhy = f.jsd(ds, v, b)
            d_bc, d_f1 = f.diff(ds, v, b, "bc"), f.diff(ds, v, b, "macro_f1")
            parts.append(f"{v} vs {b}: {jtxt}, BC {d_bc:+.4f}, macro-F1 {d_f1:+.4f}")
            bad = (["JSD higher"] if jdir > 0 else []) + (["BC not higher"] if d_bc <= 0 else []) + \
                (["macro-F1 not higher"] if d_f1 <= 0 else [])
            if bad:
                against.append(f"{v} vs {b}: {', '.join(bad)}")
            elif jdir == 0:
                unknown.append(jwhy)
    unknown = list(dict.fromkeys(unknown))
    verdict, reason = _verdict(against, unknown)
    text = ("; ".join(parts) + "." if parts else "") + _not_judged(verdict, unknown)
    return Finding(2, ds, verdict, reason, text)


def claim3(f: Facts, ds: str) -> Finding:
    # each weighted run against the run that differs from it only in the
    # weight: shala_batch against shala_no_ambi_batch where it ran (else
    # shala_no_ambi), shala against shala_no_ambi
    baseline = {}
    if f.has(ds, "shala") and f.has(ds, "shala_no_ambi"):
        baseline["shala"] = "shala_no_ambi"
    nb = next((b for b in ("shala_no_ambi_batch", "shala_no_ambi") if f.has(ds, b)), None)
    if f.has(ds, "shala_batch") and nb:
        baseline["shala_batch"] = nb
    if not baseline:
        return Finding(3, ds, "cannot tell", "needs shala_batch with shala_no_ambi_batch, or shala with "
                       "shala_no_ambi", "")
    variants = list(baseline)
    parts, results, unknown = [], {}, []
    for v in variants:
        why = f.unjudgeable(ds, v, baseline[v])
        if why:
            unknown.append(why)
            parts.append(f"{v} vs {baseline[v]}: JSD {f.v(ds, v, 'jsd'):.4f} vs {f.v(ds, baseline[v], 'jsd'):.4f}, "
                         "not judged")
            continue
        jdir, jtxt, jwhy = f.jsd(ds, v, baseline[v])
        sr = f.scale_rewards(ds, v)
        parts.append(f"{v} (scale_rewards: {sr or 'not recorded'}) vs {baseline[v]}: {jtxt}")
        results[v] = (jdir, sr, jwhy)
    text = "; ".join(parts) + "." if parts else ""
    pa, pn = f.paper_row(ds, "shala"), f.paper_row(ds, "shala_no_ambi")
    if pa and pn:
        text += f" Paper: JSD {pn['jsd']:.3f} (shala_no_ambi) → {pa['jsd']:.3f} (shala)."
    text += (" Under scale_rewards=group the weight H̃(p) multiplies every rollout of a group and cancels in the "
             "group-normalised advantage (docs/design.md §5); only a batch-scaled run tests it.")
    primary = next((v for v in ("shala_batch", "shala") if v in results and results[v][1] != "group"), None)
    if primary is None:
        reason = "; ".join(unknown) or ("under scale_rewards=group the weight cancels, so shala vs shala_no_ambi "
                                        "measures run-to-run variation, not the weight; measure shala_batch")
        return Finding(3, ds, "cannot tell", reason, text)
    jdir, sr, jwhy = results[primary]
    if sr == "batch" and f.prompts_per_batch(ds, primary) == 1:
        return Finding(3, ds, "cannot tell", f"{primary}'s generation batch holds one prompt, so batch scaling "
                       "normalises over that prompt's group alone: the weight cancels as under group scaling "
                       "(run with several prompts per generation batch to test it)", text)
    if sr is None or sr.startswith("mixed"):
        return Finding(3, ds, "cannot tell", f"scale_rewards of {primary} is {sr or 'not recorded (no run record)'}",
                       text)
    if jdir == 0:
        return Finding(3, ds, "cannot tell", jwhy, text)
    return Finding(3, ds, "supports" if jdir < 0 else "refutes",
                   "" if jdir < 0 else f"{primary} has a higher JSD than {baseline[primary]}", text)


def _level_bc(f: Facts, ds: str) -> dict[str, dict[str, float]]:
    """Mean over seeds of BC per ambiguity level, per run."""
    rows = [{"run": r.run, "level": str(lv), "bc": b.get("bc")}
            for r in f.records if r.dataset == ds for lv, b in (r.data.get("by_ambiguity") or {}).items()]
    df = pd.DataFrame(rows, columns=["run", "level", "bc"]).astype({"bc": float})
    out: dict[str, dict[str, float]] = {}
    for (run, level), v in df.groupby(["run", "level"])["bc"].mean().items():
        out.setdefault(run, {})[level] = v
    return out


def degradation_against(bc: dict[str, dict[str, float]], lo: str, hi: str, deg: dict[str, float],
                        shalas: list[str]) -> list[str]:
    """What goes against claim 4, given each run's BC drop ``deg`` (BC at
    ``lo`` minus BC at ``hi``).

    A run whose BC rises (or holds) from low to high has not degraded: its
    degradation is 0, not negative. So a SHALA run flat at the ceiling ties
    a run that improves, and "MLS degrades most" needs mls's BC to drop.
    """
    loss = {r: max(d, 0.0) for r, d in deg.items()}
    against = []
    if not any(loss[r] <= min(loss.values()) + BC_TIE for r in shalas):
        against.append(f"{min(loss, key=loss.get)} degrades least, not a SHALA run")
    if loss["mls"] <= BC_TIE:
        against.append(f"mls does not degrade (BC {bc['mls'][lo]:.3f} → {bc['mls'][hi]:.3f})")
    elif loss["mls"] < max(loss.values()) - BC_TIE:
        against.append(f"{max(loss, key=loss.get)} degrades most, not mls")
    return against


def claim4(f: Facts, ds: str) -> Finding:
    bc = _level_bc(f, ds)
    levels = level_order({lv for d in bc.values() for lv in d})
    if len(levels) < 2:
        return Finding(4, ds, "cannot tell", "fewer than two ambiguity levels", "")
    lo, hi = levels[0], levels[-1]
    left = {flag: [r for r in bc if not is_ref(r) and f.has(ds, r) and f.agg.loc[(ds, r), flag]]
            for flag in ("parse_flag", "item_independent")}
    deg = {r: d[lo] - d[hi] for r, d in bc.items() if not is_ref(r) and r not in sum(left.values(), [])
           and not pd.isna(d.get(lo, math.nan)) and not pd.isna(d.get(hi, math.nan))}
    text = f"BC at ambiguity {lo} → {hi}: " + ", ".join(
        f"{r} {bc[r][lo]:.3f} → {bc[r][hi]:.3f} (drop {deg[r]:+.3f})" for r in sorted(deg, key=deg.get)) + "."
    if left["parse_flag"]:
        text += f" Left out (parse failures over the threshold): {', '.join(left['parse_flag'])}."
    constant = left["item_independent"]
    if constant:
        text += (f" Left out (item-independent answers, pred_spread under {f.settings['min_pred_spread']}): "
                 + ", ".join(f"{r} {bc[r][lo]:.3f} → {bc[r][hi]:.3f}" for r in constant)
                 + "; BC rises with ambiguity for any near-uniform predictor, so their BC by level says nothing "
                   "of how the method degrades.")
    paper = (f.paper.get(f"ambiguity_{ds}_bc") or {}).get("mls")
    if paper:
        text += f" Paper: mls {paper['low']:.3f} → {paper['high']:.3f}."
    shalas = [r for r in deg if r in SHALA]
    if "mls" not in deg or not shalas:
        why = "needs mls and a SHALA run with BC at both ends, neither flagged for parse failures nor item-independent"
        if constant:
            why = (f"{', '.join(constant)} give{'s' if len(constant) == 1 else ''} an item-independent answer, and "
                   f"BC rises with ambiguity for any near-uniform predictor; {why}")
        return Finding(4, ds, "cannot tell", why, text)
    against = degradation_against(bc, lo, hi, deg, shalas)
    verdict, reason = _verdict(against, [])
    return Finding(4, ds, verdict, reason, text)


def _per_class(f: Facts, ds: str, run: str) -> pd.DataFrame:
    rows = [{"class": c, "f1": b.get("f1"), "recall": b.get("recall")}
            for r in f.records if r.dataset == ds and r.run == run for c, b in (r.data.get("per_class") or {}).items()]
    df = pd.DataFrame(rows, columns=["class", "f1", "recall"]).astype({"f1": float, "recall": float})
    return df.groupby("class", sort=False).mean()


def claim5(f: Facts, ds: str) -> Finding:
    C = "contradiction"
    runs = [r for r in ("zs", "mls", "shala") if f.has(ds, r)]
    pc = {r: _per_class(f, ds, r) for r in runs}
    text = f"{C} F1 / accuracy on {C} items (recall): " + ", ".join(
        f"{r} {pc[r].loc[C, 'f1']:.2f} / {pc[r].loc[C, 'recall']:.2f}" for r in runs if C in pc[r].index) + "."
    paper = f.paper.get(f"per_class_{ds}_{C}") or {}
    if paper:
        text += " Paper: " + ", ".join(f"{r} {v['f1']:.2f} / {v['accuracy']:.2f}" for r, v in paper.items()) + "."
    why = f.unjudgeable(ds, "shala")
    if why:
        return Finding(5, ds, "cannot tell", why, text)
    against, unknown = [], []
    judged = []
    for b in ("zs", "mls"):
        why = f.unjudgeable(ds, b)
        if why:
            unknown.append(why)
            continue
        judged.append(b)
        if pc["shala"].loc[C, "f1"] <= pc[b].loc[C, "f1"]:
            against.append(f"shala's {C} F1 is not above {b}'s")
    if judged:
        gain = (pc["shala"]["f1"] - pc[judged[0]]["f1"]).dropna()
        text += f" F1 gain of shala over {judged[0]} per class: " + ", ".join(
            f"{c} {g:+.2f}" for c, g in gain.sort_values(ascending=False).items()) + "."
        if gain.idxmax() != C:
            against.append(f"the largest F1 gain over {judged[0]} is on {gain.idxmax()}, not {C}")
    verdict, reason = _verdict(against, unknown)
    return Finding(5, ds, verdict, reason, text + _not_judged(verdict, unknown))


def check_claims(f: Facts) -> list[Finding]:
    datasets = sorted({r.dataset for r in f.records})
    out = [fn(f, ds) for fn in (claim1, claim2, claim3, claim4) for ds in datasets]
    nli = [ds for ds in datasets if any(r.dataset == ds and "contradiction" in (r.data.get("per_class") or {})
                                        for r in f.records)]
    out += [claim5(f, ds) for ds in nli] or [
        Finding(5, "", "cannot tell", "no dataset with a contradiction class (ChaosNLI) in this report", "")]
    return out


def claims_frame(findings: list[Finding]) -> pd.DataFrame:
    return pd.DataFrame([{"claim": x.claim, "dataset": x.dataset, "verdict": x.verdict, "reason": x.reason,
                          "text": x.text} for x in findings], columns=["claim", "dataset", "verdict", "reason", "text"])


def claims_md(findings: list[Finding], f: Facts) -> str:
    """The body of the claims section (no heading: the page adds one)."""
    text = ("The paper's five qualitative claims, each checked per dataset on this run's numbers: "
            "**supports**, **refutes**, or **cannot tell** (and why). A JSD difference counts when its "
            "paired 95% interval excludes 0 and its Holm-adjusted p (see the paired tests) is under "
            f"{ALPHA}; BC, F1 and accuracy compare means over seeds. A trained run with an item-independent "
            "answer cannot be judged: a difference from it measures one constant distribution, not what the "
            "method learned from the items, so a comparison with it cannot tell. "
            f"The paper's numbers quoted here are for {PAPER_SETUP}.\n\n")
    ind = f.agg[f.agg.item_independent].reset_index()
    if not ind.empty:
        text += "Item-independent answers (pred_spread under report.min_pred_spread, " \
                f"{f.settings['min_pred_spread']}): " + ", ".join(
                    f"{r.run} on {r.dataset} ({r.pred_spread_mean:.3f})" for r in ind.itertuples()) + \
                ". Such a run gives every item (nearly) the same distribution: compare it with ref_prior; " \
                "its gains do not come from reading the item, and no verdict rests on it.\n\n"
    for n, claim in CLAIMS.items():
        text += f"**Claim {n}.** {claim}\n\n"
        for x in (x for x in findings if x.claim == n):
            where = f"{x.dataset}: " if x.dataset else ""
            text += f"- {where}**{x.label}**" + (f" ({x.reason})" if x.verdict == "refutes" else "") + \
                (f". {x.text.lstrip()}" if x.text else ".") + "\n"
        text += "\n"
    return text


def summary_table(findings: list[Finding]) -> str:
    """One line per claim and dataset (for the top of the page)."""
    return markdown(pd.DataFrame([{"claim": x.claim, "dataset": x.dataset or "–", "verdict": x.verdict}
                                  for x in findings]))
