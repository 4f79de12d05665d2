"""The workflow on a real SLURM (slurm-wlm 22.05 on localhost, started by
scripts/local_slurm.sh): the tiny-model DAG through profiles/slurm and
snakemake-executor-plugin-slurm, checked against a local run of the same
config. Installs Debian's slurm-wlm when it is missing and this runs as
root; CI sets SHALA_REQUIRE_SLURM=1 so a missing SLURM fails instead of
skipping."""

from __future__ import annotations

import filecmp
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import SHARED_DATA, needs_shared_data

pytestmark = pytest.mark.slurm

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "local_slurm.sh"
BIN = Path(sys.executable).parent
SNAKEMAKE = shutil.which("snakemake", path=str(BIN)) or "snakemake"
# per-role resources of the test run: small enough for this machine, distinct
# enough that the check below can tell which role a job was submitted as
JOBS = {"light": {"mem_mb": 700, "runtime": 11}, "predict": {"mem_mb": 1500, "runtime": 12},
        "train": {"mem_mb": 2500, "runtime": 13}}
ROLE = {"prepare": "light", "base_model": "light", "reference_predictor": "light", "evaluate": "light",
        "report": "light", "predict": "predict", "train": "train", "warmup_sft": "train"}


def _missing(msg: str):
    if os.environ.get("SHALA_REQUIRE_SLURM"):
        pytest.fail(msg)
    pytest.skip(msg)


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        _missing("snakemake-executor-plugin-slurm is not installed (pip install -e '.[test]')")
    if not shutil.which("slurmctld"):
        if os.geteuid() != 0 or not shutil.which("apt-get"):
            _missing("slurm-wlm is not installed, and installing it needs root and apt-get")
        subprocess.run(["bash", str(SCRIPT), "install"], check=True, timeout=600)
    state = tmp_path_factory.mktemp("slurm")
    r = subprocess.run(["bash", str(SCRIPT), "start", str(state)], capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    env = {**os.environ, "SLURM_CONF": str(state / "slurm.conf"),
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    yield env
    subprocess.run(["bash", str(SCRIPT), "stop", str(state)], timeout=60)


def _config(results: Path, tiny_model_dir: Path) -> dict:
    return {
        "results": str(results), "data_mirror": str(SHARED_DATA),
        "run_datasets": ["chaosnli"], "run_methods": ["zs", "shala"], "reference_predictors": ["uniform"],
        "model": {"source": "local", "path": str(tiny_model_dir), "component": None, "dtype": "float32"},
        "training": {"gpus": 0, "threads": 1, "accelerate_config": None, "warmup_sft": {"enabled": False},
                     "grpo": {"max_steps": 1, "max_completion_length": 8, "bf16": False,
                              "gradient_checkpointing": False, "save_steps": 100, "logging_steps": 1}},
        "evaluation": {"limit": 8, "max_new_tokens": 8, "batch_size": 8},
        "datasets": {"chaosnli": {"prompt": {"target": "P: {premise}\nH: {hypothesis}", "task": "Classes:",
                                             "output": "JSON: {label_list}", "response_prefix": "auto"}}},
        "cluster": {"account": None, "cpu_partition": "cpu", "gpu_partition": "nonexistent", "jobs": JOBS},
    }


def _run(args, env, cwd=ROOT, timeout=900):
    return subprocess.run([SNAKEMAKE, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)


def _slurm_jobs(env) -> list[dict]:
    out = subprocess.run(["squeue", "--states=all", "-h", "-o", "%k|%P|%l|%m|%T"], capture_output=True,
                         text=True, env=env, check=True).stdout
    return [dict(zip(("comment", "partition", "time", "mem", "state"), line.split("|")))
            for line in out.splitlines() if line.startswith("rule_")]


def _minutes(limit: str) -> int:
    h, m, s = (int(x) for x in ([0] + [0] + limit.split(":"))[-3:])
    return h * 60 + m + (1 if s else 0)


def _mb(mem: str) -> int:
    num, unit = re.fullmatch(r"(\d+)([KMGT]?)", mem).groups()
    return int(num) * {"": 1, "K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 ** 2}[unit]


@needs_shared_data("chaosnli")
def test_tiny_dag_through_slurm_matches_local_run(slurm, tmp_path, tiny_model_dir):
    local_cfg, slurm_cfg = tmp_path / "local.yaml", tmp_path / "slurm.yaml"
    local_cfg.write_text(yaml.safe_dump(_config(tmp_path / "local", tiny_model_dir)))
    slurm_cfg.write_text(yaml.safe_dump(_config(tmp_path / "slurm", tiny_model_dir)))

    r = _run(["--cores", "2", "--configfile", str(local_cfg)], slurm)
    assert r.returncode == 0, r.stderr[-3000:]
    r = _run(["--profile", "profiles/slurm", "--configfile", str(slurm_cfg), "--jobs", "2",
              "--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "2",
              "--latency-wait", "10"], slurm)
    assert r.returncode == 0, (r.stdout + r.stderr)[-5000:]

    # every job but the local rules (all, fetch_data) went through sbatch, with
    # the partition, wall time and memory of its role in config `cluster`
    planned = {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", (r.stdout + r.stderr).split("Job stats:")[1],
                                                     flags=re.M)}
    jobs = _slurm_jobs(slurm)
    ran = {}
    for j in jobs:
        rule = re.match(r"rule_(\w+?)(_wildcards_.*)?$", j["comment"])[1]
        ran[rule] = ran.get(rule, 0) + 1
        role = JOBS[ROLE[rule]]
        assert j["state"] == "COMPLETED", j
        assert j["partition"] == "cpu"
        assert _minutes(j["time"]) == role["runtime"], j
        assert role["mem_mb"] <= _mb(j["mem"]) <= role["mem_mb"] + 64, j  # the plugin adds a few MB
    assert ran == {k: v for k, v in planned.items() if k not in ("all", "fetch_data", "total")}
    assert ran["train"] == 1 and ran["predict"] == 2 and ran["evaluate"] == 3

    # the same outputs as the local run: predictions, metrics and Table 1
    same = ["data/chaosnli/test.jsonl", "predictions/chaosnli/zs/seed0/test.jsonl",
            "predictions/chaosnli/shala/seed0/test.jsonl", "metrics/chaosnli/shala/seed0/test.items.csv",
            "reports/table1.csv", "reports/significance.csv"]
    for rel in same:
        assert filecmp.cmp(tmp_path / "local" / rel, tmp_path / "slurm" / rel, shallow=False), rel


def test_profile_maps_gpus_partition_account_from_config(tmp_path):
    """The paper's setup, dry run: training asks --gpus=training.gpus on the
    GPU partition with config's memory, time and account; CPU jobs don't."""
    cfg = tmp_path / "acct.yaml"
    cfg.write_text(yaml.safe_dump({"results": str(tmp_path / "res"),
                                   "cluster": {"account": "proj42", "gpu_partition": "h200",
                                               "jobs": {"train": {"mem_mb": 123000, "runtime": 999}}}}))
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    r = _run(["-n", "--verbose", "--cores", "2", "--configfile", str(cfg)], env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    res = {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", r.stdout):
        m = re.match(r"(?:local)?rule (\w+):", block)
        found = re.search(r"resources: (.*)", block)
        if m and found:
            res.setdefault(m[1], dict(kv.split("=", 1) for kv in found[1].split(", ")))
    train = res["train"]
    assert (train["gpu"], train["slurm_partition"], train["mem_mb"], train["runtime"]) == ("2", "h200", "123000",
                                                                                             "999")
    assert train["slurm_account"] == "proj42"
    assert (res["predict"]["gpu"], res["predict"]["slurm_partition"], res["predict"]["mem_mb"]) == ("1", "h200",
                                                                                                    "100000")
    assert (res["evaluate"]["gpu"], res["evaluate"]["slurm_partition"], res["evaluate"]["mem_mb"]) == ("0", "cpu",
                                                                                                       "8000")
