"""`shala prepare chaosnli` on the real ChaosNLI files (docs/design.md §3.1, §8)."""

import hashlib
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import SHARED_DATA, needs_shared_data
from scipy.stats import entropy

from shala.data.prepare import OUTPUT_FILES, prepare

SRC = SHARED_DATA / "chaosnli"
pytestmark = needs_shared_data("chaosnli")


def _raw():
    rows = []
    for subset, f in (("snli", "chaosNLI_snli.jsonl"), ("mnli", "chaosNLI_mnli_m.jsonl")):
        for line in (SRC / f).read_text().splitlines():
            rows.append((subset, json.loads(line)))
    return rows


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    out = tmp_path_factory.mktemp("chaos")
    prepare("chaosnli", SRC, out)
    return out


def test_counts_match_an_independent_computation(prepared):
    stats = json.loads((prepared / "stats.json").read_text())
    raw = _raw()
    counts = np.array([r["label_count"] for _, r in raw], dtype=float)
    h = entropy(counts.T, base=3)  # scipy normalises counts; base C gives H~
    levels = np.where(h < 0.33, "low", np.where(h < 0.66, "medium", "high"))
    maj = np.array(["entailment", "neutral", "contradiction"])[counts.argmax(1)]
    assert stats["n_items"] == 3113
    assert stats["split_counts"] == {"train": 2023, "validation": 467, "test": 623}
    assert stats["ambiguity_counts"] == {lv: int((levels == lv).sum()) for lv in ("low", "medium", "high")}
    assert stats["majority_counts"] == {c: int((maj == c).sum()) for c in ("entailment", "neutral", "contradiction")}
    # Pinned values (ChaosNLI v1.0, seed 0): a change here changes every table.
    assert stats["ambiguity_counts"] == {"low": 377, "medium": 1493, "high": 1243}
    assert stats["majority_counts"] == {"entailment": 1168, "neutral": 1397, "contradiction": 548}
    assert stats["subsets"]["snli"]["n_items"] == 1514 and stats["subsets"]["mnli"]["n_items"] == 1599
    assert set(stats) == {"dataset", "n_items", "labels", "majority_counts", "ambiguity_counts",
                          "split_counts", "subsets"}


def test_items_are_canonical(prepared):
    lines = (prepared / "items.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    assert list(first) == ["id", "dataset", "subset", "inputs", "labels", "counts", "dist", "n_annotators",
                           "majority", "entropy_norm", "n_active", "ambiguity", "split"]
    assert first["id"] == "2407214681.jpg#0r1n" and first["subset"] == "snli"
    assert first["counts"] == [30, 70, 0] and first["dist"] == [0.3, 0.7, 0.0]
    assert first["majority"] == "neutral" and first["n_active"] == 2
    assert first["entropy_norm"] == pytest.approx(0.8812908992306927 / np.log2(3))
    split_lines = sum(len((prepared / f"{s}.jsonl").read_text().splitlines())
                      for s in ("train", "validation", "test"))
    assert split_lines == len(lines) == 3113


def test_byte_identical_rerun_and_seed_changes_split(prepared, tmp_path):
    prepare("chaosnli", SRC, tmp_path / "again")
    for f in OUTPUT_FILES:
        assert (prepared / f).read_bytes() == (tmp_path / "again" / f).read_bytes(), f
    prepare("chaosnli", SRC, tmp_path / "seed1", seed=1)
    assert (prepared / "test.jsonl").read_bytes() != (tmp_path / "seed1" / "test.jsonl").read_bytes()
    # Split digest pinned so any change of the split procedure is noticed.
    digest = hashlib.sha256((prepared / "test.jsonl").read_bytes()).hexdigest()
    assert digest == hashlib.sha256((tmp_path / "again" / "test.jsonl").read_bytes()).hexdigest()


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "shala", *args], capture_output=True, text=True, cwd=cwd)


def _broken_copy(tmp_path, mutate):
    src = tmp_path / "src"
    shutil.copytree(SRC, src)
    f = src / "chaosNLI_mnli_m.jsonl"
    lines = f.read_text().splitlines()
    mutate(lines)
    f.write_text("\n".join(lines) + "\n")
    return src


@pytest.mark.parametrize("mutate,expect", [
    (lambda ls: ls.__setitem__(4, ls[4][:-3]), "chaosNLI_mnli_m.jsonl:5: malformed JSON"),
    (lambda ls: ls.__setitem__(6, ls[6].replace('"label_count"', '"label_cnt"')),
     "chaosNLI_mnli_m.jsonl:7: field 'label_count': missing field"),
    (lambda ls: ls.__setitem__(2, ls[2].replace('"label_count": [', '"label_count": [0, 0, 0], "x": [')),
     "chaosNLI_mnli_m.jsonl:3: field 'counts': item"),
])
def test_bad_input_one_line_error_and_no_output(tmp_path, mutate, expect):
    src = _broken_copy(tmp_path, mutate)
    out = tmp_path / "out"
    r = _cli("prepare", "chaosnli", "--source", str(src), "--out", str(out), cwd=tmp_path)
    assert r.returncode == 2
    err = r.stderr.strip().splitlines()[-1]
    assert expect in err, err
    assert not out.exists() or not any(out.iterdir())


def test_missing_source_file(tmp_path):
    (tmp_path / "src").mkdir()
    r = _cli("prepare", "chaosnli", "--source", str(tmp_path / "src"), "--out", str(tmp_path / "o"), cwd=tmp_path)
    assert r.returncode == 2
    assert "chaosNLI_snli.jsonl: source file not found" in r.stderr
    assert not (tmp_path / "o").exists()


def test_failed_rerun_keeps_previous_outputs(tmp_path, prepared):
    out = tmp_path / "out"
    shutil.copytree(prepared, out)
    before = {f: (out / f).read_bytes() for f in OUTPUT_FILES}
    src = _broken_copy(tmp_path, lambda ls: ls.__setitem__(0, "{"))
    r = _cli("prepare", "chaosnli", "--source", str(src), "--out", str(out), cwd=tmp_path)
    assert r.returncode == 2
    assert {f: (out / f).read_bytes() for f in OUTPUT_FILES} == before
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUT_FILES)
