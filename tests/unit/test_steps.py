"""Each step reads only the config it declares (shala.steps, shala.cli), and
the workflow's rerun triggers are those declarations (rules/common.smk)."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

import shala.cli  # noqa: F401  (its decorators declare every step's reads)
from shala.config import UndeclaredRead, restrict, schema
from shala.plan import load_config
from shala.steps import HOW_ENV, STEPS, job_slice, step_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def demo():
    return load_config([ROOT / "config.yaml", ROOT / "config" / "demo.yaml"])


def test_a_read_outside_the_declaration_fails_naming_step_and_path(demo):
    cfg = step_config("predict", copy.deepcopy(demo), None, dataset="chaosnli")
    assert cfg["datasets"]["chaosnli"]["prompt"]["system"].startswith("You estimate")
    assert list(cfg["datasets"]) == ["chaosnli"]  # the other datasets are not there to iterate
    with pytest.raises(UndeclaredRead, match=r"step 'predict' reads config 'training.grpo'"):
        cfg["training"]["grpo"]
    with pytest.raises(UndeclaredRead, match=r"'datasets.control'"):
        cfg["datasets"].get("control")
    with pytest.raises(UndeclaredRead, match=r"'seeds'"):
        "seeds" in cfg


def test_restrict_copies_only_declared_values_and_keeps_writes():
    cfg = restrict({"a": {"b": 1, "c": 2}, "d": 3}, ["a.b"], "x")
    assert json.loads(json.dumps(cfg)) == {"a": {"b": 1}}
    star = restrict({"m": {"x": {"t": 1, "r": 2}, "y": {"t": 3}}}, ["m.*.t"], "x")
    assert json.loads(json.dumps(star)) == {"m": {"x": {"t": 1}, "y": {"t": 3}}}
    assert star["m"]["y"]["t"] == 3
    with pytest.raises(UndeclaredRead, match="'m.x.r'"):
        star["m"]["x"]["r"]
    cfg["a"]["threads"] = 4  # a step may set a value for what it calls (the CLI's --threads)
    assert dict.get(cfg["a"], "threads") == 4


def _schema_has(path: str) -> bool:
    node = schema()
    for key in path.split("."):
        props = node.get("properties") or {}
        if key in props:
            node = props[key]
        elif key[:1] in "{*" and isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]
        else:
            return False
    return True


def test_every_declared_path_is_a_config_field():
    """A typo in a declaration would be a trigger that never fires."""
    for s in STEPS.values():
        for p in (*s.reads, *s.how):
            assert _schema_has(p), f"step {s.name}: {p} is not in the schema"


def test_job_slices_are_the_rerun_triggers(demo):
    train = job_slice(demo, "train", dataset="control", method="shala", seed=0)
    assert train["training"]["peft"] == demo["training"]["peft"]  # toggling LoRA reruns training
    assert set(train["methods"]) == {"shala"} and set(train["datasets"]) == {"control"}
    assert "threads" not in train["training"] and "evaluation" not in train
    predict = job_slice(demo, "predict", dataset="chaosnli")
    assert predict["evaluation"] == {"limit": 128, "max_new_tokens": 24}  # batch size and engine: how, not what
    report = job_slice(demo, "report")
    assert set(report) == {"run_methods", "methods", "report"}
    assert report["methods"]["shala"] == {"trainer": "grpo"}  # the trainers alone: an edit of a reward reruns no report


def test_a_job_gets_its_slice_and_the_how_values(demo, monkeypatch):
    monkeypatch.setenv(HOW_ENV, json.dumps({"evaluation": {"batch_size": 3}, "training": {"threads": 1}}))
    text = json.dumps(job_slice(demo, "predict", dataset="chaosnli"))
    cfg = step_config("predict", None, text, dataset="chaosnli")
    assert cfg["evaluation"]["batch_size"] == 3 and cfg["evaluation"]["max_new_tokens"] == 24
    assert cfg["training"]["threads"] == 1


def test_cli_step_with_a_slice_prepares_like_with_the_config(tmp_path, demo):
    """`shala prepare --slice` (a workflow job) writes the same splits as `--config`."""
    text = json.dumps(job_slice(demo, "prepare", dataset="control"))
    outs = []
    for how, args in (("slice", ["--slice", text]), ("config", ["--config", str(ROOT / "config.yaml"),
                                                               "--config", str(ROOT / "config" / "demo.yaml")])):
        out = tmp_path / how
        subprocess.run([sys.executable, "-m", "shala", "fetch-data", "control", "--out", str(tmp_path / "raw"),
                        *args], check=True, capture_output=True)
        subprocess.run([sys.executable, "-m", "shala", "prepare", "control", "--source", str(tmp_path / "raw"),
                        "--out", str(out), *args], check=True, capture_output=True)
        outs.append((out / "test.jsonl").read_text())
    assert outs[0] == outs[1] and outs[0].count("\n") > 10
