"""shala.evaluation.evaluate against independent scipy/sklearn computations."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from sklearn.metrics import accuracy_score, f1_score

from shala.errors import ConfigError, InputError
from shala.evaluation.evaluate import POLICIES, evaluate_rows, run_evaluate
from shala.evaluation.metrics import REGISTRY

LABELS = ["entailment", "neutral", "contradiction"]


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def pred_of(row):
    obj = json.loads(row["completion"].split("Answer: ", 1)[1])
    return [obj[k] for k in row["labels"]]


def independent(P, Q):
    t, p = P.argmax(1), Q.argmax(1)
    labs = list(range(P.shape[1]))
    return {
        "jsd": float(np.mean(jensenshannon(P, Q, base=2, axis=1))),
        "jsd_e": float(np.mean(jensenshannon(P, Q, axis=1))),
        "bc": float(np.mean(np.sqrt(P * Q).sum(1))),
        "accuracy": accuracy_score(t, p),
        "macro_f1": f1_score(t, p, labels=labs, average="macro", zero_division=0),
        "weighted_f1": f1_score(t, p, labels=labs, average="weighted", zero_division=0),
    }


def test_run_evaluate_matches_scipy_sklearn(tmp_path, predictions_factory):
    rows = predictions_factory(120)
    out = tmp_path / "m" / "metrics.json"
    res = run_evaluate(write(tmp_path / "p.jsonl", rows), out)
    assert json.loads(out.read_text()) == res
    assert set(res) == {"n", "parse_failure_rate", "on_parse_failure", "js_base", "overall",
                        "by_subset", "by_ambiguity", "per_class"}
    assert (res["n"], res["parse_failure_rate"], res["js_base"]) == (120, 0.0, 2)
    P = np.array([r["dist"] for r in rows])
    Q = np.array([pred_of(r) for r in rows])
    for key, want in independent(P, Q).items():
        assert res["overall"][key] == pytest.approx(want, abs=1e-6), key
    # soft metrics equal for distributions; KL(p || p̂) direction
    assert res["overall"]["soft_micro_f1"] == pytest.approx(np.minimum(P, Q).sum(1).mean(), abs=1e-9)
    kl = np.where(P > 0, P * np.log(np.where(P > 0, P, 1) / Q), 0).sum(1).mean()
    assert res["overall"]["kl"] == pytest.approx(kl, abs=1e-9)
    # a slice equals the same computation on its rows only
    mnli = np.array([r["subset"] == "mnli" for r in rows])
    for key, want in independent(P[mnli], Q[mnli]).items():
        assert res["by_subset"]["mnli"][key] == pytest.approx(want, abs=1e-6), key
    assert list(res["by_subset"]) == ["mnli", "snli"]
    assert res["by_subset"]["mnli"]["n"] == 60


def test_by_ambiguity_in_scheme_order_and_partition(predictions_factory):
    rows = predictions_factory(150, seed=3)
    res = evaluate_rows(rows)
    present = {r["ambiguity"] for r in rows}
    assert list(res["by_ambiguity"]) == [lv for lv in ("low", "medium", "high") if lv in present]
    assert len(res["by_ambiguity"]) >= 2
    assert sum(b["n"] for b in res["by_ambiguity"].values()) == 150
    # first appearance would not give scheme order for this data
    first_seen = list(dict.fromkeys(r["ambiguity"] for r in rows))
    assert first_seen != list(res["by_ambiguity"])


def test_active_levels_ordered_numerically_with_4plus_last(item_factory):
    labels = list("abcde")
    rows = [item_factory(counts, labels, id=str(i), inputs={}, ambiguity="active", split="test",
                         completion='{"a": 1}')
            for i, counts in enumerate([[1, 1, 1, 1, 1], [5, 0, 0, 0, 0], [2, 2, 2, 0, 0], [3, 1, 0, 0, 0]])]
    res = evaluate_rows(rows)
    assert list(res["by_ambiguity"]) == ["1", "2", "3", "4+"]
    assert res["by_subset"] == {}


def test_unparseable_scored_as_uniform(tmp_path, predictions_factory):
    rows = predictions_factory(40, seed=1)
    bad = [0, 5, 6, 17]
    for i in bad:
        rows[i]["completion"] = "I think it is neutral."
    res = run_evaluate(write(tmp_path / "p.jsonl", rows), tmp_path / "m.json")
    assert res["parse_failure_rate"] == pytest.approx(4 / 40)
    assert res["overall"]["parse_failure_rate"] == pytest.approx(4 / 40)
    assert res["on_parse_failure"] == "uniform"
    P = np.array([r["dist"] for r in rows])
    Q = np.array([[1 / 3] * 3 if i in bad else pred_of(r) for i, r in enumerate(rows)])
    assert res["overall"]["n_scored"] == 40
    assert res["overall"]["jsd"] == pytest.approx(np.mean(jensenshannon(P, Q, base=2, axis=1)), abs=1e-9)
    # a uniform prediction's argmax is the first class (ties rule)
    assert res["overall"]["accuracy"] == pytest.approx(accuracy_score(P.argmax(1), Q.argmax(1)))
    # mean_sum_error over parsed rows only (all parsed sum to 1 up to rounding)
    assert res["overall"]["mean_sum_error"] < 1e-12


def test_exclude_policy_drops_failures_but_counts_them(predictions_factory):
    rows = predictions_factory(30, seed=2)
    for i in (1, 2, 3):
        rows[i]["completion"] = '{"entailment": -1}'
    res = evaluate_rows(rows, on_parse_failure="exclude")
    keep = [i for i in range(30) if i not in (1, 2, 3)]
    P = np.array([rows[i]["dist"] for i in keep])
    Q = np.array([pred_of(rows[i]) for i in keep])
    assert res["on_parse_failure"] == "exclude"
    assert res["parse_failure_rate"] == pytest.approx(0.1)
    assert (res["overall"]["n"], res["overall"]["n_scored"]) == (30, 27)
    for key, want in independent(P, Q).items():
        assert res["overall"][key] == pytest.approx(want, abs=1e-6), key
    assert sum(c["support"] for c in res["per_class"].values()) == 27


def test_exclude_all_failed_gives_nulls(tmp_path, predictions_factory):
    rows = predictions_factory(4)
    for r in rows:
        r["completion"] = ""
    res = run_evaluate(write(tmp_path / "p.jsonl", rows), tmp_path / "m.json", on_parse_failure="exclude")
    assert res["parse_failure_rate"] == 1.0
    assert res["overall"]["jsd"] is None and res["overall"]["mean_sum_error"] is None
    assert all(res["overall"][k] is None for k, m in REGISTRY.items() if m.fn is not None)
    assert res["per_class"]["neutral"]["jsd"] is None
    assert "NaN" not in (tmp_path / "m.json").read_text()


def test_mean_sum_error_uses_raw_sum(predictions_factory):
    rows = predictions_factory(2)
    rows[0]["completion"] = '{"entailment": 0.5, "neutral": 0.3, "contradiction": 0.4}'  # 1.2
    rows[1]["completion"] = '{"entailment": "50%", "neutral": "40%"}'                   # 0.9
    res = evaluate_rows(rows)
    assert res["overall"]["mean_sum_error"] == pytest.approx(0.15)
    assert res["parse_failure_rate"] == 0.0


def test_per_class_block(predictions_factory):
    rows = predictions_factory(2, subsets=("s",))
    rows[0].update(dist=[0.8, 0.2, 0.0], majority="entailment",
                   completion='{"entailment": 0.6, "neutral": 0.4, "contradiction": 0}')
    rows[1].update(dist=[0.1, 0.3, 0.6], majority="contradiction",
                   completion='{"entailment": 0.7, "neutral": 0.2, "contradiction": 0.1}')
    pc = evaluate_rows(rows)["per_class"]
    assert list(pc) == LABELS
    e, n, c = pc["entailment"], pc["neutral"], pc["contradiction"]
    assert (e["support"], e["predicted"], c["support"], c["predicted"]) == (1, 2, 1, 0)
    assert (e["precision"], e["recall"], e["f1"]) == pytest.approx((0.5, 1.0, 2 / 3))
    assert (c["precision"], c["recall"], c["f1"]) == (0.0, 0.0, 0.0)
    assert n["support"] == 0 and n["jsd"] is None
    assert e["mean_pred"] == pytest.approx(0.65) and e["mean_human"] == pytest.approx(0.45)
    # soft P/R/F (Kurniawan et al.): Σ min over items / Σ pred, / Σ human
    assert e["soft_precision"] == pytest.approx((0.6 + 0.1) / 1.3)
    assert e["soft_recall"] == pytest.approx((0.6 + 0.1) / 0.9)
    assert e["jsd"] == pytest.approx(jensenshannon([0.8, 0.2, 0], [0.6, 0.4, 0], base=2))


def test_blocks_follow_the_registry(predictions_factory):
    """Every block has the registry's keys in its order, each within the
    bounds its entry declares (the counts taken from the parse too)."""
    rows = predictions_factory(60, seed=6)
    rows[2]["completion"] = "no idea"
    for policy in POLICIES:
        res = evaluate_rows([dict(r) for r in rows], on_parse_failure=policy)
        for block in (res["overall"], *res["by_subset"].values(), *res["by_ambiguity"].values()):
            assert list(block) == list(REGISTRY)
            for key, v in block.items():
                lo, hi = REGISTRY[key].bounds
                tol = 1e-12 + REGISTRY[key].slack
                assert v is not None and lo - tol <= v <= hi + tol, (policy, key, v)


def test_output_is_deterministic(tmp_path, predictions_factory):
    p = write(tmp_path / "p.jsonl", predictions_factory(50, seed=9))
    run_evaluate(p, tmp_path / "a.json")
    run_evaluate(p, tmp_path / "b.json")
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()


# ----- errors -------------------------------------------------------------------

def _fails(tmp_path, text, *, match):
    p = tmp_path / "p.jsonl"
    p.write_text(text, encoding="utf-8")
    out = tmp_path / "out" / "m.json"
    with pytest.raises(InputError, match=match) as exc:
        run_evaluate(p, out)
    assert not out.exists()
    assert not (out.parent.exists() and any(out.parent.iterdir()))
    return exc.value


def test_malformed_line_names_file_and_line(tmp_path, predictions_factory):
    good = json.dumps(predictions_factory(1)[0])
    err = _fails(tmp_path, good + "\n\n" + good + "\n{not json\n", match=r"p\.jsonl:4")
    assert err.line == 4


def test_missing_completion_names_line_and_field(tmp_path, predictions_factory):
    rows = predictions_factory(3)
    del rows[2]["completion"]
    err = _fails(tmp_path, "".join(json.dumps(r) + "\n" for r in rows), match=r"p\.jsonl:3: field 'completion'")
    assert err.field == "completion"


def test_missing_item_field(tmp_path, predictions_factory):
    rows = predictions_factory(2)
    del rows[1]["dist"]
    err = _fails(tmp_path, "".join(json.dumps(r) + "\n" for r in rows), match=r":2: field 'dist'")
    assert err.line == 2


def test_mixed_label_lists_rejected(tmp_path, predictions_factory):
    rows = predictions_factory(2) + predictions_factory(1, labels=["yes", "no"])
    _fails(tmp_path, "".join(json.dumps(r) + "\n" for r in rows), match=r":3: field 'labels'")


def test_bad_dist_rejected(tmp_path, predictions_factory):
    rows = predictions_factory(2)
    rows[0]["dist"] = [0.5, 0.5, 0.5]
    _fails(tmp_path, "".join(json.dumps(r) + "\n" for r in rows), match=r":1: field 'dist'")


def test_empty_file_rejected(tmp_path):
    _fails(tmp_path, "\n", match="no predictions")


def test_existing_output_untouched_on_error(tmp_path):
    out = tmp_path / "m.json"
    out.write_text("old")
    p = tmp_path / "p.jsonl"
    p.write_text('{"id": "x"}\n')
    with pytest.raises(InputError):
        run_evaluate(p, out)
    assert out.read_text() == "old"


def test_unknown_policy(predictions_factory):
    with pytest.raises(ConfigError, match="on_parse_failure"):
        evaluate_rows(predictions_factory(2), on_parse_failure="drop")


def test_js_e_relation(predictions_factory):
    res = evaluate_rows(predictions_factory(20, seed=4))
    # jsd_e is the natural-log distance: each item's value is the base-2 one
    # times sqrt(ln 2), so the means are too (a base mix-up breaks this)
    assert res["overall"]["jsd_e"] == pytest.approx(res["overall"]["jsd"] * math.sqrt(math.log(2)))


def test_minimal_rows_from_outside_the_pipeline(tmp_path):
    """Only labels, dist and completion are needed; dist rounding is tolerated."""
    import json as _json

    from scipy.spatial.distance import jensenshannon

    from shala.evaluation.evaluate import run_evaluate

    rows = [{"labels": ["x", "y", "z"], "dist": [0.333, 0.333, 0.333], "completion": '{"x": 1}'},
            {"labels": ["x", "y", "z"], "dist": [0.5, 0.5, 0.0], "completion": '{"y": 0.5, "z": 0.5}'}]
    f = tmp_path / "p.jsonl"
    f.write_text("".join(_json.dumps(r) + "\n" for r in rows))
    m = run_evaluate(f, tmp_path / "m.json")
    expected = np.mean([jensenshannon([1 / 3] * 3, [1, 0, 0], base=2),
                        jensenshannon([0.5, 0.5, 0], [0, 0.5, 0.5], base=2)])
    assert m["overall"]["jsd"] == pytest.approx(expected, abs=1e-12)
    assert m["by_subset"] == {} and m["by_ambiguity"] == {}
    assert m["per_class"]["x"]["support"] == 2  # ties -> first class


def test_dist_far_from_one_is_an_error(tmp_path):
    import json as _json

    from shala.errors import InputError
    from shala.evaluation.evaluate import run_evaluate

    f = tmp_path / "p.jsonl"
    f.write_text(_json.dumps({"labels": ["x", "y"], "dist": [0.5, 0.4], "completion": "{}"}) + "\n")
    with pytest.raises(InputError, match=r"p.jsonl:1: field 'dist'"):
        run_evaluate(f, tmp_path / "m.json")
    assert not (tmp_path / "m.json").exists()


def test_pred_spread_matches_scipy_and_is_zero_for_a_constant_answer(predictions_factory):
    rows = predictions_factory(60, seed=5)
    rows[7]["completion"] = "no idea"  # scored as uniform: part of the spread
    res = evaluate_rows(rows)
    Q = np.array([pred_of(r) if i != 7 else [1 / 3] * 3 for i, r in enumerate(rows)])
    centre = Q.mean(axis=0)
    want = np.mean([jensenshannon(q, centre, base=2) for q in Q])
    assert res["overall"]["pred_spread"] == pytest.approx(want, abs=1e-9)
    assert want > 0.05
    snli = np.array([r["subset"] == "snli" for r in rows])
    want_snli = np.mean([jensenshannon(q, Q[snli].mean(axis=0), base=2) for q in Q[snli]])
    assert res["by_subset"]["snli"]["pred_spread"] == pytest.approx(want_snli, abs=1e-9)
    for r in rows:  # the same answer for every item
        r["completion"] = '{"entailment": 0.2, "neutral": 0.5, "contradiction": 0.3}'
    assert evaluate_rows(rows)["overall"]["pred_spread"] == pytest.approx(0.0, abs=1e-7)
