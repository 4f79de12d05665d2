"""bench/readable_task.py (the readable tasks beyond the control) and the
scoring of bench/readable_check.py (when a trained run "reads" the items)."""

from __future__ import annotations

import csv
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _task(tmp_path: Path, *args: str) -> list[dict[str, str]]:
    subprocess.run([sys.executable, str(ROOT / "bench" / "readable_task.py"), "--out", str(tmp_path), *args],
                   check=True, capture_output=True)
    with (tmp_path / "raw" / "poll.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


def _said(text: str) -> list[tuple[int, str]]:
    return [(int(n), lab) for n, lab in re.findall(r"(\d+) (yes|no|maybe|abstain)", text.split(": ", 1)[1])]


def test_ordered_poll_lists_every_count_in_label_order(tmp_path):
    rows = _task(tmp_path, "--classes", "4", "--shuffled", "0", "--n", "200", "--seed", "5")
    labels = ["yes", "no", "maybe", "abstain"]
    assert len(rows) == 200
    for r in rows:
        said = _said(r["text"])
        assert [lab for _, lab in said] == labels
        assert [n for n, _ in said] == [int(r[lab]) for lab in labels]
        assert sum(n for n, _ in said) == 10


def test_default_poll_shuffles_about_half_and_is_deterministic(tmp_path):
    rows = _task(tmp_path / "a", "--n", "400")
    again = _task(tmp_path / "b", "--n", "400")
    assert rows == again
    out_of_order = sum([lab for _, lab in _said(r["text"])] != ["yes", "no", "maybe"] for r in rows)
    # half are permuted, and 1 in 6 permutations is the identity: about 5/12 of 400 = 167
    assert 130 < out_of_order < 205
    for r in rows:  # the stated counts are the item's counts, whatever the order
        assert {lab: n for n, lab in _said(r["text"])} == {lab: int(r[lab]) for lab in ("yes", "no", "maybe")}


def _load_check():
    spec = importlib.util.spec_from_file_location("readable_check", ROOT / "bench" / "readable_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _items(path: Path, jsd: np.ndarray) -> None:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "subset", "ambiguity", "majority", "pred_label", "parsed", "scored", "jsd", "bc"])
        for i, v in enumerate(jsd):
            w.writerow([f"x{i}", "", "low", "a", "a", True, True, v, 1 - v])


@pytest.mark.parametrize("shift,spread,reads", [(-0.1, 0.2, True), (-0.1, 0.01, False), (0.05, 0.2, False)])
def test_readable_check_scores_a_run_against_the_prior(tmp_path, shift, spread, reads):
    check = _load_check()
    rng = np.random.default_rng(0)
    prior = rng.uniform(0.2, 0.5, 60)
    zs = rng.uniform(0.2, 0.5, 60)
    run = np.clip(prior + shift + rng.normal(0, 0.02, 60), 0, 1)
    e = tmp_path / "poll" / "e"
    e.mkdir(parents=True)
    _items(e / "ref_prior.items.csv", prior)
    _items(e / "zs.items.csv", zs)
    _items(e / "shala-1.items.csv", run)
    (e / "shala-1.json").write_text(json.dumps({"overall": {"jsd": float(run.mean()), "pred_spread": spread}}))
    m = tmp_path / "poll" / "m" / "shala-1"
    m.mkdir(parents=True)
    log = [{"event": "log", "step": s, "entropy": ent, "grad_norm": g}
           for s, (ent, g) in enumerate([(1.2, 3.0), (0.3, 0.0), (0.9, 2.0)], 1)]
    log += [{"event": "step", "step": s, "zero_spread_frac": z} for s, z in enumerate([0.0, 1.0, 0.5], 1)]
    (m / "train_log.jsonl").write_text("\n".join(json.dumps(r) for r in log) + "\n")
    row = check.score(tmp_path, "poll", 1, "shala")
    assert row["reads"] is reads
    assert row["d_ref_prior"] == pytest.approx(float((run - prior).mean()))
    assert row["d_zs"] == pytest.approx(float((run - zs).mean()))
    assert row["d_ref_prior_lo"] < row["d_ref_prior"] < row["d_ref_prior_hi"]
    assert (row["entropy_first"], row["entropy_min"], row["entropy_last"]) == (1.2, 0.3, 0.9)
    assert row["zero_spread_mean"] == pytest.approx(0.5)
    assert row["grad_zero_steps"] == 1
