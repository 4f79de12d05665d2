"""The known-answer control (shala.data.adapters.control): deterministic, its text
states its counts, it spans low to high ambiguity, a constant answer cannot
match it, and it goes through fetch-data + prepare with no files."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy.spatial.distance import jensenshannon

from shala.data.adapters import ADAPTERS, control
from shala.data.items import ENTROPY_LEVELS, normalised_entropy
from shala.errors import ConfigError
from shala.plan import load_config

ROOT = Path(__file__).resolve().parents[2]
SHALA = Path(sys.executable).parent / "shala"
CMD = [str(SHALA)] if SHALA.exists() else [sys.executable, "-m", "shala"]
LABELS = ["red", "green", "blue"]


def _parse_counts(text: str, labels: list[str]) -> list[int]:
    """The counts as the text states them ("7 red, 2 green and 1 blue"),
    read independently of the adapter: one "<digits> <label>" per label."""
    found = {lab: [int(n) for n in re.findall(rf"\b(\d+) {re.escape(lab)}\b", text)] for lab in labels}
    assert all(len(v) == 1 for v in found.values()), (text, found)
    return [found[lab][0] for lab in labels]


@pytest.fixture(scope="module")
def items():
    return control.load(None, {}, 0)


def test_registered_and_synthetic():
    assert ADAPTERS["control"] is control
    assert control.SYNTHETIC and control.AMBIGUITY == "entropy"


def test_deterministic_and_seeded(items):
    assert control.load(None, {}, 0) == items
    assert control.load(Path("/nonexistent"), {}, 7) == items  # source and split seed are not read
    other = control.load(None, {"seed": 1}, 0)
    assert [it["counts"] for it in other] != [it["counts"] for it in items]


def test_counts_dist_consistent(items):
    assert len(items) == 600 and len({it["id"] for it in items}) == 600
    for it in items:
        assert it["labels"] == LABELS and it["n_annotators"] == 10 and sum(it["counts"]) == 10
        assert all(isinstance(c, int) and c >= 0 for c in it["counts"])
        assert it["dist"] == [c / 10 for c in it["counts"]]
        assert it["entropy_norm"] == normalised_entropy(it["dist"])
        assert it["split"] is None and it["subset"] is None


def test_ambiguity_span(items):
    ent = [it["entropy_norm"] for it in items]
    assert min(ent) == 0.0 and max(ent) > 0.99  # 10/0/0 and 4/3/3 both occur
    levels = {lv: sum(it["ambiguity"] == lv for it in items) for lv in ENTROPY_LEVELS}
    # ambiguity_mix [1, 2, 2]: about 20 / 40 / 40 %
    assert 0.12 < levels["low"] / 600 < 0.28 and all(levels[lv] / 600 > 0.3 for lv in ("medium", "high"))
    assert {tuple(it["counts"]) for it in items} >= {(10, 0, 0), (4, 3, 3)}


def test_text_states_the_counts(items):
    for it in items:
        assert _parse_counts(it["inputs"]["text"], LABELS) == it["counts"]
        assert "10 people" in it["inputs"]["text"]
        assert tuple(it["inputs"]) == control.TEXT_FIELDS


def test_a_constant_answer_cannot_match(items):
    dists = np.array([it["dist"] for it in items])
    prior = dists.mean(0)
    # near uniform, but not exactly (majority_weights tilt it), so ref_prior != ref_uniform
    assert np.abs(prior - 1 / 3).max() < 0.08 and np.abs(prior - 1 / 3).max() > 0.02
    jsd_prior = np.mean([jensenshannon(d, prior, base=2) for d in dists])
    jsd_uniform = np.mean([jensenshannon(d, np.ones(3) / 3, base=2) for d in dists])
    assert jsd_prior > 0.3 and jsd_uniform > 0.3  # a perfect reader scores 0
    # the per-item optimum differs from the prior on most items
    assert np.mean([jensenshannon(d, prior, base=2) > 0.1 for d in dists]) > 0.8


def test_options_templates_order_and_size():
    opts = {"n_items": 50, "n_annotators": 100, "labels": ["cyan", "magenta", "yellow", "black"],
            "order": "shuffled", "template": "votes", "seed": 3}
    its = control.load(None, opts)
    assert len(its) == 50 and all(sum(it["counts"]) == 100 for it in its)
    for it in its:
        assert it["inputs"]["text"].startswith("100 people named a colour: ")
        assert _parse_counts(it["inputs"]["text"], opts["labels"]) == it["counts"]
    custom = control.load(None, {"n_items": 5, "template": "Votes of {n}: {counts}."})
    assert all(re.fullmatch(r"Votes of 10: \d+ red, \d+ green and \d+ blue\.", it["inputs"]["text"])
               for it in custom)
    only_high = control.load(None, {"n_items": 40, "ambiguity_mix": [0, 0, 1]})
    assert all(it["ambiguity"] == "high" for it in only_high)


@pytest.mark.parametrize("bad", [
    {"n_itemz": 3}, {"n_items": 0}, {"n_annotators": 101}, {"labels": ["red"]},
    {"labels": ["red", "red"]}, {"template": "nope"}, {"template": "{counts} {oops}"},
    {"order": "random"}, {"ambiguity_mix": [1, 1]}, {"majority_weights": [0, 0, 0]},
    {"n_annotators": 1, "ambiguity_mix": [0, 1, 1]},
])
def test_bad_options_are_config_errors(bad):
    with pytest.raises(ConfigError, match="control adapter"):
        control.load(None, bad)


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CMD, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_fetch_and_prepare_through_the_cli(tmp_path):
    cfg = ROOT / "config.yaml"
    assert "control" in load_config([cfg])["datasets"]
    raw = tmp_path / "raw"
    r = _run("fetch-data", "control", "--out", str(raw), "--config", str(cfg))
    assert r.returncode == 0, r.stderr
    assert [p.name for p in raw.iterdir()] == ["MANIFEST.json"]
    man = json.loads((raw / "MANIFEST.json").read_text())
    assert man["route"] == "synthetic" and man["sha256"] == {} and man["seed"] == 0
    assert man["options"] == control.check_options(load_config([cfg])["datasets"]["control"]["options"])

    outs = []
    for name in ("a", "b"):
        out = tmp_path / name
        r = _run("prepare", "control", "--source", str(raw), "--out", str(out), "--config", str(cfg))
        assert r.returncode == 0, r.stderr
        outs.append(out)
    for f in ("items.jsonl", "train.jsonl", "validation.jsonl", "test.jsonl", "stats.json", "prepare.json"):
        assert (outs[0] / f).read_bytes() == (outs[1] / f).read_bytes(), f
    stats = json.loads((outs[0] / "stats.json").read_text())
    assert stats["n_items"] == 600 and stats["split_counts"] == {"train": 360, "validation": 60, "test": 180}
    test_items = [json.loads(line) for line in (outs[0] / "test.jsonl").read_text().splitlines()]
    assert all(it["split"] == "test" and it["dataset"] == "control" for it in test_items)

    # another split seed: the same items, split differently
    overlay = tmp_path / "seed1.yaml"
    overlay.write_text(yaml.safe_dump({"split_seed": 1}))
    out = tmp_path / "c"
    r = _run("prepare", "control", "--source", str(raw), "--out", str(out),
             "--config", str(cfg), "--config", str(overlay))
    assert r.returncode == 0, r.stderr

    def strip(path):
        return [{k: v for k, v in json.loads(line).items() if k != "split"}
                for line in path.read_text().splitlines()]
    assert strip(out / "items.jsonl") == strip(outs[0] / "items.jsonl")
    assert (out / "test.jsonl").read_bytes() != (outs[0] / "test.jsonl").read_bytes()


def test_fetch_rejects_a_bad_option(tmp_path):
    overlay = tmp_path / "bad.yaml"
    overlay.write_text(yaml.safe_dump({"datasets": {"control": {"options": {"colours": 3}}}}))
    r = _run("fetch-data", "control", "--out", str(tmp_path / "raw"),
             "--config", str(ROOT / "config.yaml"), "--config", str(overlay))
    assert r.returncode == 2 and "unknown option" in r.stderr
    assert not (tmp_path / "raw").exists()
