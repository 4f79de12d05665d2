"""Rerun scope (docs/design.md §8): a complete run on the tiny model, then config edits,
each checked against the dry run's job list. Each rule depends only on the
config values it reads (`params.slice` in rules/), so an edit reruns only
the jobs it affects."""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import SHARED_DATA, needs_shared_data

ROOT = Path(__file__).resolve().parents[2]
SNAKEMAKE = shutil.which("snakemake", path=str(Path(sys.executable).parent)) or "snakemake"
MODEL_JOBS = {"fetch_data", "prepare", "base_model", "warmup_sft"}


def smk(*args):
    # the rules call `shala`: the venv's bin folder must be on PATH
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run([SNAKEMAKE, *args], capture_output=True, text=True, cwd=ROOT, timeout=1200, env=env)


def _planned(overlay_dir: Path, base: dict, edit: dict | None = None) -> dict[str, int]:
    cfg = copy.deepcopy(base)
    for path, value in (edit or {}).items():
        node = cfg
        *parents, last = path.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    f = overlay_dir / f"edit{len(list(overlay_dir.glob('edit*')))}.yaml"
    f.write_text(yaml.safe_dump(cfg))
    r = smk("-n", "--cores", "2", "--configfile", str(f))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Traceback" not in r.stdout + r.stderr and "Exception" not in r.stdout + r.stderr
    if "Nothing to be done" in r.stdout + r.stderr:
        return {}
    table = r.stdout.split("Job stats:")[1]
    jobs = {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, flags=re.M)}
    jobs.pop("total", None)
    jobs.pop("all", None)
    return jobs


@pytest.fixture(scope="module")
def complete_run(tmp_path_factory, tiny_model_dir):
    work = tmp_path_factory.mktemp("rerun")
    base = {
        "results": str(work / "res"), "data_mirror": str(SHARED_DATA),
        "run_datasets": ["chaosnli"], "run_methods": ["zs", "mls", "shala"],
        "reference_predictors": ["uniform"],
        "model": {"source": "local", "path": str(tiny_model_dir), "component": None, "dtype": "float32"},
        "training": {"gpus": 0, "threads": 1, "accelerate_config": None,
                     "warmup_sft": {"enabled": True, "max_steps": 2, "per_device_train_batch_size": 4},
                     "grpo": {"max_steps": 1, "max_completion_length": 8, "bf16": False,
                              "gradient_checkpointing": False, "save_steps": 100, "logging_steps": 1}},
        "evaluation": {"limit": 8, "max_new_tokens": 8, "batch_size": 8},
        "datasets": {"chaosnli": {"prompt": {"target": "P: {premise}\nH: {hypothesis}", "task": "Classes:",
                                             "output": "JSON: {label_list}", "response_prefix": "auto"}}},
    }
    f = work / "base.yaml"
    f.write_text(yaml.safe_dump(base))
    r = smk("--cores", "2", "--configfile", str(f))
    assert r.returncode == 0, r.stderr[-4000:]
    return work, base


@needs_shared_data("chaosnli")
def test_complete_run_then_nothing_to_do(complete_run):
    work, base = complete_run
    assert (work / "res" / "reports" / "table1.csv").is_file()
    assert (work / "res" / "models" / "chaosnli" / "warmup_sft" / "seed0" / "run.json").is_file()
    assert _planned(work, base) == {}


@needs_shared_data("chaosnli")
def test_scoring_edit_reruns_evaluation_and_report_only(complete_run):
    work, base = complete_run
    jobs = _planned(work, base, {"evaluation.on_parse_failure": "exclude"})
    assert set(jobs) == {"evaluate", "report"}
    assert jobs["evaluate"] == 4  # zs, mls, shala, ref_uniform


@needs_shared_data("chaosnli")
def test_grpo_edit_reruns_training_and_what_follows(complete_run):
    work, base = complete_run
    jobs = _planned(work, base, {"training.grpo.learning_rate": 3e-6})
    assert not MODEL_JOBS & set(jobs), jobs
    assert jobs["train"] == 2 and jobs["predict"] == 2 and jobs["evaluate"] == 2 and jobs["report"] == 1


@needs_shared_data("chaosnli")
def test_one_method_override_reruns_that_method_only(complete_run):
    work, base = complete_run
    jobs = _planned(work, base, {"methods.shala.overrides": {"temperature": 1.0}})
    assert jobs == {"train": 1, "predict": 1, "evaluate": 1, "report": 1}


@needs_shared_data("chaosnli")
def test_batch_size_edit_reruns_nothing(complete_run):
    """Greedy predictions do not depend on the batch size (tests/unit/test_predict.py)."""
    work, base = complete_run
    assert _planned(work, base, {"evaluation.batch_size": 4}) == {}


@needs_shared_data("chaosnli")
def test_lora_switch_reruns_training(complete_run):
    """training.peft is read by the warm-up and training (shala.train.lora):
    turning LoRA on retrains both and what follows, never data or the base model."""
    work, base = complete_run
    jobs = _planned(work, base, {"training.peft.enabled": True})
    assert not {"fetch_data", "prepare", "base_model"} & set(jobs), jobs
    assert jobs == {"warmup_sft": 1, "train": 2, "predict": 2, "evaluate": 2, "report": 1}
