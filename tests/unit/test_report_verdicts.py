"""The report never claims more than its numbers: verdicts on small
constructed frames (the Holm-adjusted p, item-independent runs), Table 1's
bold, exactly uniform answers, and one colour per method in every figure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shala.report.claims import Facts, claim2, claim3, claim4
from shala.report.load import LOG_FIELDS, METRICS, STEP_FIELDS, Record, RunRecord, uniform_answers
from shala.report.tables import aggregate, table1, table1_notes

SETTINGS = {"max_parse_failure_rate": 0.5, "min_pred_spread": 0.05}


def _run(method: str, scale: str = "batch", steps: pd.DataFrame | None = None, dataset: str = "d") -> RunRecord:
    data = {"grpo_config": {"recorded": {"scale_rewards": scale},
                            "full": {"generation_batch_size": 16, "num_generations": 4}}}
    return RunRecord(dataset, method, 0, Path(f"{dataset}/{method}/seed0/run.json"), data,
                     steps if steps is not None else pd.DataFrame())


def _facts(runs: dict[str, dict], sig: list[dict], records: list | None = None) -> Facts:
    """Facts over one dataset "d": ``runs`` maps a run to its means (jsd,
    pred_spread, ...); flags default to off."""
    rows = [{"dataset": "d", "run": r, "parse_flag": False, "item_independent": False,
             **{f"{k}_mean": v for k, v in m.items() if k not in ("parse_flag", "item_independent")},
             **{k: m[k] for k in ("parse_flag", "item_independent") if k in m}} for r, m in runs.items()]
    sig_df = pd.DataFrame([{"dataset": "d", **s} for s in sig])
    return Facts(pd.DataFrame(rows), sig_df, records or [], [_run(m) for m in runs if m.startswith("shala")],
                 {}, SETTINGS)


def _pair(method: str, baseline: str, diff: float, lo: float, hi: float, p_holm: float) -> dict:
    return {"method": method, "baseline": baseline, "mean_diff": diff, "ci_lo": lo, "ci_hi": hi, "p_holm": p_holm}


SHALA_PAIR = {"shala": {"jsd": 0.1099, "pred_spread": 0.35}, "shala_no_ambi": {"jsd": 0.1224, "pred_spread": 0.29}}


@pytest.mark.parametrize("lo,hi,p_holm,verdict,reason", [
    # the committed control's numbers: the interval is below 0, but the Holm-adjusted p is 0.054
    (-0.0228, -0.0021, 0.054, "cannot tell",
     "shala vs shala_no_ambi: the JSD difference is not significant after Holm's adjustment over this dataset's "
     "paired tests (p 0.0540 ≥ 0.05)"),
    (-0.0228, -0.0021, 0.01, "supports", ""),
    (-0.0228, 0.0030, 0.01, "cannot tell", "shala vs shala_no_ambi: the 95% CI of the JSD difference includes 0"),
])
def test_claim3_counts_a_difference_through_the_holm_adjusted_p(lo, hi, p_holm, verdict, reason):
    f = _facts(SHALA_PAIR, [_pair("shala", "shala_no_ambi", -0.0125, lo, hi, p_holm)])
    x = claim3(f, "d")
    assert (x.verdict, x.reason) == (verdict, reason)
    assert "Holm-adjusted p " + ("0.0540" if p_holm == 0.054 else "0.0100") in x.text


def test_claim3_on_item_independent_runs_cannot_tell():
    runs = {"shala": {"jsd": 0.4095, "pred_spread": 0.011, "item_independent": True},
            "shala_no_ambi": {"jsd": 0.3917, "pred_spread": 0.014, "item_independent": True}}
    f = _facts(runs, [_pair("shala", "shala_no_ambi", 0.0178, 0.0089, 0.0269, 0.004)])
    x = claim3(f, "d")
    assert x.verdict == "cannot tell"  # was "refutes": shala's constant is further from the annotators
    assert x.reason == ("shala gives an item-independent answer (pred_spread 0.011, under 0.05), so it cannot be "
                        "judged; shala_no_ambi gives an item-independent answer (pred_spread 0.014, under 0.05), "
                        "so it cannot be judged")
    assert x.text.startswith("shala vs shala_no_ambi: JSD 0.4095 vs 0.3917, not judged.")


def test_claim2_against_an_item_independent_shala_cannot_tell():
    runs = {"zs": {"jsd": 0.42, "bc": 0.85, "macro_f1": 0.18}, "mls": {"jsd": 0.44, "bc": 0.82, "macro_f1": 0.18},
            "shala": {"jsd": 0.41, "bc": 0.85, "macro_f1": 0.18, "pred_spread": 0.011, "item_independent": True}}
    x = claim2(_facts(runs, []), "d")
    assert (x.verdict, x.reason) == ("cannot tell", "shala gives an item-independent answer (pred_spread 0.011, "
                                                    "under 0.05), so it cannot be judged")


def _level_record(run: str, low: float, high: float) -> Record:
    return Record("d", run, 0, "test", Path(f"d/{run}/seed0/test.json"),
                  {"overall": {}, "by_ambiguity": {"low": {"bc": low}, "high": {"bc": high}}})


def test_claim4_leaves_out_item_independent_runs_and_cannot_tell():
    # near-uniform answers: BC rises with ambiguity for every run, whatever it learned
    bc = {"zs": (0.721, 0.913), "mls": (0.702, 0.885), "shala": (0.718, 0.921)}
    runs = {"zs": {"jsd": 0.42}, "mls": {"jsd": 0.44}, "shala": {"jsd": 0.41, "pred_spread": 0.011,
                                                                  "item_independent": True}}
    x = claim4(_facts(runs, [], [_level_record(r, lo, hi) for r, (lo, hi) in bc.items()]), "d")
    assert x.verdict == "cannot tell"  # was "refutes: mls does not degrade"
    assert x.reason == ("shala gives an item-independent answer, and BC rises with ambiguity for any near-uniform "
                        "predictor; needs mls and a SHALA run with BC at both ends, neither flagged for parse "
                        "failures nor item-independent")
    assert "Left out (item-independent answers, pred_spread under 0.05): shala 0.718 → 0.921;" in x.text


# --------------------------------------------------------------------------- Table 1's bold

def _config(runs) -> dict:
    """run_methods and trainers (a run is trained by its trainer: zs none, sft_soft sft, the rest grpo)."""
    methods = [r for r in runs if not r.startswith("ref_")]
    return {"run_methods": methods,
            "methods": {m: {"trainer": {"zs": "none", "sft_soft": "sft"}.get(m, "grpo")} for m in methods}}


def _agg(means: dict[str, dict[str, float]]) -> pd.DataFrame:
    """Table 1's aggregate of one dataset "d" with one seed per run (metrics not given: 0.5)."""
    df = pd.DataFrame([{"dataset": "d", "run": r, "seed": 0, **{k: m.get(k, 0.5) for k in METRICS}}
                       for r, m in means.items()])
    items = pd.DataFrame(columns=["dataset", "run", "id", "subset", "ambiguity", "jsd", "bc", "n_seeds"])
    return aggregate(df, items, {}, SETTINGS, _config(means))


def _table1(means: dict[str, dict[str, float]]) -> pd.DataFrame:
    """Table 1 (Markdown bold) of one dataset "d" with one seed per run."""
    return table1(_agg(means), _config(means), ("**", "**"))


def _bold(t: pd.DataFrame, metric: str) -> list[str]:
    return [m for m, cell in zip(t["method"], t[metric]) if cell.startswith("**")]


def test_bold_skips_item_independent_rows_and_rows_worse_than_the_prior():
    t = _table1({
        "zs": {"jsd": 0.45, "accuracy": 0.60, "pred_spread": 0.04},         # above ref_prior and ref_uniform: † ¶
        "shala": {"jsd": 0.30, "accuracy": 0.70, "pred_spread": 0.01},      # lowest JSD, but item-independent: §
        "shala_no_ambi": {"jsd": 0.36, "accuracy": 0.65, "pred_spread": 0.2},  # above ref_prior's JSD: †
        "sft_soft": {"jsd": 0.33, "accuracy": 0.40, "pred_spread": 0.2},    # beats the prior in JSD, not accuracy
        "ref_prior": {"jsd": 0.35, "accuracy": 0.50, "pred_spread": 0.0},
        "ref_uniform": {"jsd": 0.40, "accuracy": 0.30, "pred_spread": 0.0},
    })
    assert t["method"].tolist() == ["zs † ¶", "shala §", "shala_no_ambi †", "sft_soft", "ref_prior",
                                    "ref_uniform"]
    assert _bold(t, "jsd") == ["sft_soft"]
    assert t.set_index("method").loc["sft_soft", "jsd"] == "**0.3300 (-26.7%)**"
    assert _bold(t, "accuracy") == []  # every eligible row is below ref_prior's accuracy


def test_no_bold_where_every_model_row_is_flagged():
    # ChaosNLI in the committed replication: item-independent SHALA runs, everything else above ref_prior
    t = _table1({"zs": {"jsd": 0.42, "pred_spread": 0.04}, "mls": {"jsd": 0.44, "pred_spread": 0.14},
                 "shala_no_ambi": {"jsd": 0.39, "pred_spread": 0.014}, "ref_prior": {"jsd": 0.38}})
    for metric in ("jsd", "bc", "kl", "accuracy", "macro_f1", "weighted_f1", "soft_micro_f1"):
        assert _bold(t, metric) == [], metric


# --------------------------------------------------------------------------- exactly uniform answers

def _record(run: str, seed: int, spread: float, mean_pred: list[float], fail: float = 0.0) -> Record:
    per_class = {c: {"mean_pred": p} for c, p in zip(("entailment", "neutral", "contradiction"), mean_pred)}
    return Record("chaosnli", run, seed, "test", Path(f"chaosnli/{run}/seed{seed}/test.json"),
                  {"overall": {"pred_spread": spread, "parse_failure_rate": fail}, "per_class": per_class})


def test_an_exactly_uniform_run_is_named():
    third = 1 / 3
    records = [_record("mls", 1, 1.27e-08, [third] * 3),                  # the committed ChaosNLI mls seed 1
               _record("shala", 2, 2.0e-08, [third] * 3, fail=0.25),
               _record("shala", 0, 0.0, [0.34, 0.33, 0.33]),              # constant, but not uniform
               _record("shala_no_ambi", 0, 0.02, [third] * 3),            # uniform on average only
               _record("ref_uniform", 0, 0.0, [third] * 3)]               # a reference predictor: not named
    assert uniform_answers(records) == [("chaosnli", "mls", 1, 0.0), ("chaosnli", "shala", 2, 0.25)]
    notes = table1_notes(_agg({"mls": {"pred_spread": 0.2}}), SETTINGS, "uniform", uniform_answers(records))
    assert notes == ["Exactly uniform answers: chaosnli: mls seed 1, shala seed 2 (25% parse failures). Every "
                     "prediction of these seeds is 1/C for each class (pred_spread 0, mean prediction uniform), "
                     "so each scores exactly as ref_uniform does; they count in the means and ± std above."]


def test_learning_names_the_uniform_seed():
    from shala.report.learning import LEARNING_COLUMNS, learning_md

    rows = [{c: np.nan for c in LEARNING_COLUMNS} | {"dataset": "chaosnli", "method": "mls", "seed": s,
                                                     "zero_grad_steps": 0, "reads_items": False,
                                                     "answers_uniform": s == 1} for s in (0, 1, 2)]
    md = learning_md(pd.DataFrame(rows, columns=LEARNING_COLUMNS))
    assert md.splitlines()[-1] == ("- chaosnli / mls: reads the items on 0 of 3 seed(s); seed 1 answers exactly "
                                   "uniformly (1/C for every class of every item), scoring as ref_uniform does; "
                                   "capacity or training cannot be told apart: no capacity probe run on this dataset.")


# --------------------------------------------------------------------------- figures

def test_the_palette_is_one_fixed_order_of_method_names():
    from shala.report.figures import palette

    a, b = palette(["zs", "mls", "shala", "ref_prior"]), palette(["shala", "sft_soft", "mine", "ref_uniform"])
    for run in ("shala", "ref_prior", "ref_uniform", "human"):
        assert a[run] == b[run], run
    assert a["zs"] != a["mls"] != a["shala"]
    assert b["mine"] not in [b[m] for m in b if m != "mine"]  # a method of no fixed place gets a free colour


def _steps(n: int = 4) -> pd.DataFrame:
    return pd.DataFrame({"step": range(1, n + 1), **{f: np.linspace(0.1, 0.5, n) for f in (*STEP_FIELDS,
                                                                                          *LOG_FIELDS)}})


def test_a_method_keeps_its_colour_in_figures_with_different_runs(tmp_path, monkeypatch):
    """fig_per_class draws zs, mls and shala; fig_training only the trained mls
    and shala: shala gets the same colour in both, drawn without a shared palette."""
    import seaborn as sns

    from shala.report.figures import fig_per_class, fig_training

    seen: list[dict] = []

    def record(*args, **kwargs):
        seen.append(dict(kwargs["palette"]))

    for name in ("barplot", "lineplot", "boxplot"):
        monkeypatch.setattr(sns, name, record)
    per_class = {"a": {"f1": 0.5, "mean_pred": 0.5, "mean_human": 0.6},
                 "b": {"f1": 0.4, "mean_pred": 0.5, "mean_human": 0.4}}
    records = [Record("d", r, 0, "test", Path(f"d/{r}/seed0/test.json"), {"overall": {}, "per_class": per_class})
               for r in ("zs", "mls", "shala")]
    fig_per_class(records, None, tmp_path / "per_class")
    per_class_colours = seen[-1]
    fig_training([_run("shala", steps=_steps()), _run("sft_soft", steps=_steps())], None, tmp_path / "training")
    training_colours = seen[-1]
    assert per_class_colours["shala"] == training_colours["shala"]
    assert per_class_colours["shala"] != per_class_colours["zs"]


def test_training_caption_states_the_recorded_reward_scaling():
    from shala.report.figures import training_caption

    runs = [_run("shala", "batch", _steps()), _run("mls", "batch", _steps()), _run("shala_no_ambi", "group", _steps()),
            _run("sft_soft", "batch")]  # no step rows: not in the figure
    caption = training_caption(runs)
    assert caption.endswith("Reward scaling, as the run records state it: d: mls, shala (batch, 4 prompts per "
                            "generation batch), shala_no_ambi (group).\n")
    assert "Rewards are not drawn" in caption and "token entropy" in caption
