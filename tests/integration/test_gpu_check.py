"""The GPU check's scripts, run here on the CPU at toy size, so the script a
GPU machine runs once keeps working: part (a) (tiny Omni thinker, text and
audio: 2 GRPO steps, save, reload, predict; one process, no DeepSpeed),
part (d) (the full-size step's code path: a thinker from the shipped config
at toy size, 2 GRPO steps through `accelerate launch --num_processes 1`
with the ZeRO-3 config on a CPU rank, measured against shala.launch.gpu_memory's
estimate), and parts (b)/(c) (generation, forward + backward, prediction).
Issue 26 (a fresh machine): the probe records a package that does not
import and the check runs the parts that do not need it; part (d) is
planned by memory; the wheel list follows the resolver and the machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.gpu_first_run
ENV = {**os.environ, "PYTHON": sys.executable,
       "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


def _check(out: Path, part: str) -> subprocess.CompletedProcess:
    r = subprocess.run(["bash", "bench/gpu_check.sh", str(out), "--cpu-smoke", "--parts", part], cwd=ROOT,
                       env=ENV, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    assert f"gpu_check: part ({part}) exit 0" in (out / f"gpu_check_{part}.log").read_text()
    return r


def test_gpu_check_cpu_smoke_omni_audio(tmp_path):
    _check(tmp_path, "a")
    res = json.loads((tmp_path / "gpu_check_a.json").read_text())
    assert res["ok"] is True and set(res["runs"]) == {"chaosnli", "msp_podcast"} and res["pending"] == []
    for name, run in res["runs"].items():
        assert run["checks"] == {"global_step": True, "audio": True, "predicted_every_item": True,
                                 "predict_audio": True, "weights_saved": True}, name
        assert run["world_size"] == 1
    # the audio run really heard audio, the text run did not
    audio = json.loads((tmp_path / "tiny" / "models" / "msp_podcast" / "run.json").read_text())
    text = json.loads((tmp_path / "tiny" / "models" / "chaosnli" / "run.json").read_text())
    assert audio["audio"] is True and text["audio"] is False
    assert not (tmp_path / "tiny" / "models" / "msp_podcast" / "checkpoints").exists()
    assert "(a) msp_podcast" in (tmp_path / "gpu_check_a.log").read_text()


def test_gpu_check_full_size_step_path_at_toy_size(tmp_path):
    """Part (d): the launch a user's job runs (ZeRO-3 config, one rank, its
    own port), the paper's per-device setting, every number recorded, the
    model files removed afterwards."""
    pytest.importorskip("deepspeed", reason="deepspeed is not installed (the `gpu` extra; CI installs it)")
    _check(tmp_path, "d")
    res = json.loads((tmp_path / "gpu_check_d.json").read_text())
    assert res["ok"] is True, res.get("error")
    assert all(res["checks"].values()) and res["error"] is None
    assert res["launch"].startswith("python -m accelerate.commands.launch --config_file "
                                    "config/accelerate_zero3.yaml --num_processes 1 --main_process_port ")
    assert " -m shala train --dataset chaosnli --method shala " in res["launch"]
    run = json.loads((tmp_path / "step" / "run" / "run.json").read_text())
    g = run["grpo_config"]["full"]
    assert (g["per_device_train_batch_size"], g["num_generations"], g["gradient_accumulation_steps"],
            g["max_completion_length"], g["temperature"], g["gradient_checkpointing"]) == (4, 4, 2, 128, 1.2, True)
    assert run["world_size"] == 1 and run["zero3"]["partitioned_tensors"] == run["zero3"]["tensors"] > 0
    # the paper's prompt, about as long as with Qwen's tokenizer; rollouts the full 128 tokens
    assert 256 <= res["inputs"]["prompt_tokens"][0] <= 320
    assert res["last_log"]["completions/mean_length"] == 128
    t = res["timing"]
    assert len(t["step_seconds"]) == 2 and all(s > 0 for s in t["step_seconds"])
    grid = res["grid_estimate"]  # config.yaml: 4 GRPO methods, 1 seed, 506 + 1225 + 1940 steps each
    assert grid["grpo_methods"] == ["mls", "shala_no_ambi", "shala", "shala_batch"]
    assert grid["total_steps"] == 4 * 3671 and grid["seconds_per_step"] == t["step_seconds"][1]
    assert grid["hours"] == round(4 * 3671 * t["step_seconds"][1] / 3600, 1)
    est = res["estimate"]["as_run"]
    assert est["prompt_tokens"] == res["inputs"]["prompt_tokens"][1] and est["total_gib"] > 0
    assert res["estimate"]["preflight_default_prompt"]["prompt_tokens"] == 512
    assert set(est["lines"]) >= {"weights (bf16)", "optimizer (fp32 master + Adam m, v)", "gradients (bf16)"}
    # no GPU: no GPU peaks, but the hook reached the trainer process
    m = res["memory"]
    assert m["peak_allocated_gib_run_json"] is None and m["trainer_max_rss_gib"] > 0
    log = (tmp_path / "gpu_check_d.log").read_text()
    assert "measured vs estimated" in log and "seconds per step" in log
    assert not list((tmp_path / "step").rglob("*.safetensors"))  # removed (~36 GB at full size)


def test_gpu_check_full_size_part_runs_at_toy_size(tmp_path):
    """Parts (b) and (c) (bench/gpu_check.py) on the same architecture at toy
    size: the script a GPU machine runs still builds, generates, trains a
    step and predicts, and freezes exactly the two towers."""
    r = subprocess.run([sys.executable, "bench/gpu_check.py", str(tmp_path), "--tiny"], cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    res = json.loads((tmp_path / "gpu_check_bc.json").read_text())
    p = res["params"]
    assert p["total"] == p["trainable"] + p["frozen_towers"] and 0 < p["frozen_towers"] < p["total"]
    assert res["generation"]["rollouts"] == 16 and res["generation"]["tokens_per_s"] > 0
    assert [x["batch_size"] for x in res["predict"]] == [16, 64]
    eng = {x["engine"]: x for x in res["engines"]}
    assert list(eng) == ["generate", "continuous_batching", "vllm"]
    for name in ("generate", "continuous_batching"):  # both decode the Omni thinker (its 3-D rope included)
        assert "error" not in eng[name] and eng[name]["tokens_per_s"] > 0, eng
    assert "vllm" in eng["vllm"]["error"]


def test_gpu_check_missing_package_skips_only_the_parts_that_need_it(tmp_path):
    """A fresh machine where trl does not import: the probe records the
    error and goes on, (a) and (d) are skipped with the reason, (bc), which
    needs only torch and transformers, still runs and writes its JSON."""
    fake = tmp_path / "fake"
    (fake / "trl").mkdir(parents=True)
    (fake / "trl" / "__init__.py").write_text('raise ImportError("trl made unimportable by the test")\n')
    out = tmp_path / "out"
    r = subprocess.run(["bash", "bench/gpu_check.sh", str(out), "--cpu-smoke", "--parts", "a,d,bc"], cwd=ROOT,
                       env={**ENV, "PYTHONPATH": str(fake)}, capture_output=True, text=True, timeout=600)
    assert r.returncode == 1, (r.stdout + r.stderr)[-4000:]  # a part skipped for a missing package fails the check
    env = json.loads((out / "gpu_check_env.json").read_text())
    assert env["packages"]["trl"] == {**env["packages"]["trl"], "ok": False,
                                      "error": "ImportError: trl made unimportable by the test"}
    assert env["packages"]["torch"]["ok"] and env["packages"]["transformers"]["ok"]
    assert env["packages"]["shala"]["file"].startswith(str(ROOT / "src"))  # the tree's, not an installed copy
    for part in ("a", "d"):
        plan = env["plan"][part]
        assert plan["run"] is False and plan["kind"] == "missing" and "trl does not import" in plan["reason"]
        assert env["parts"][part]["status"] == "skipped"
        assert json.loads((out / f"gpu_check_{part}.json").read_text()) == {
            "part": part, "ok": None, "skipped": plan["reason"]}
        assert "skipped: missing: trl does not import" in (out / f"gpu_check_{part}.log").read_text()
    assert env["plan"]["bc"] == {"needs": ["torch", "transformers"], "run": True}
    assert env["parts"]["bc"]["status"] == "passed" and env["parts"]["bc"]["exit"] == 0
    bc = json.loads((out / "gpu_check_bc.json").read_text())
    assert bc["generation"]["tokens_per_s"] > 0 and [x["batch_size"] for x in bc["predict"]] == [16, 64]
    assert "gpu_check: part (bc) exit 0 (passed)" in r.stdout


def _bench(name: str):
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        return __import__(name)
    finally:
        sys.path.remove(str(ROOT / "bench"))


def test_gpu_check_plans_full_size_step_by_gpu_memory():
    """Part (d) (the full-size thinker under ZeRO-3 on one GPU) is planned
    from shala.launch.gpu_memory's estimate against the GPU's memory, before
    anything is built: skipped on an 80 GB H100 with the numbers, run on an
    H200; --force-d overrides. The other parts do not depend on it."""
    probe = _bench("gpu_probe")
    ok = {"ok": True, "version": "x"}
    res = {"packages": {name: ok for name in probe.PACKAGES}}
    h100 = probe.plan_parts({**res, "cuda": {"available": True, "total_memory_gib": 79.2}}, ["a", "d", "bc"],
                            smoke=False, force_d=False)
    assert h100["a"]["run"] and h100["bc"]["run"]
    d = h100["d"]
    assert d["run"] is False and d["kind"] == "memory" and d["reason"].startswith("memory: needs about ")
    m = d["memory"]
    assert m["source"] == "shala.launch.gpu_memory.estimate_memory" and m["have_gib"] == 79.2
    assert 79.2 < m["static_gib"] < m["need_gib"] < 139.8, m  # never on 80 GB; on a 141 GB H200 by the estimate
    assert f"{m['need_gib']} GiB" in d["reason"] and "79.2 GiB" in d["reason"]
    h200 = probe.plan_parts({**res, "cuda": {"available": True, "total_memory_gib": 139.8}}, ["d"],
                            smoke=False, force_d=False)
    assert h200["d"]["run"] is True and h200["d"]["memory"]["fits"] is True
    forced = probe.plan_parts({**res, "cuda": {"available": True, "total_memory_gib": 79.2}}, ["d"],
                              smoke=False, force_d=True)
    assert forced["d"]["run"] is True and forced["d"]["memory"]["fits"] is False
    # the smoke run needs no DeepSpeed for (a), and no GPU
    no_ds = {**res["packages"], "deepspeed": {"ok": False, "error": "ImportError: x"}}
    smoke = probe.plan_parts({"packages": no_ds, "cuda": {"available": False}}, ["a", "d"], smoke=True,
                             force_d=False)
    assert smoke["a"]["run"] is True and smoke["d"]["kind"] == "missing"


def test_gpu_wheels_carry_only_what_the_machine_lacks():
    """bench/gpu_wheels.py's choice from a resolution (no network): carried
    where the machine lacks a package or its version fails a requirement;
    never torch or CUDA packages; a bounded package of unknown version is
    carried unless its wheel is too big, then listed as unverified."""
    from packaging.requirements import Requirement
    from packaging.version import Version

    wheels = _bench("gpu_wheels")

    def pkg(name, version, *deps):
        return {"metadata": {"name": name, "version": version, "requires_dist": list(deps)}}

    resolved = {p["metadata"]["name"]: p for p in (
        pkg("transformers", "5.23.0", "huggingface-hub<3.0,>=1.31.0", "regex>=2025.10.22", "tokenizers>=0.23.1"),
        pkg("trl", "1.16.0", "accelerate>=1.10.1", "datasets>=4.7.0", "torch>=2.0"),
        pkg("datasets", "5.2.0", "pyarrow>=24.0.0", "dill<0.4.2", "xxhash", 'tomli; python_version < "3.11"'),
        pkg("accelerate", "1.15.0", "torch>=2.0.0"), pkg("huggingface-hub", "2.4.0", "httpx2"),
        pkg("regex", "2026.12.2"), pkg("tokenizers", "0.23.3"), pkg("pyarrow", "26.0.1"), pkg("dill", "0.4.1"),
        pkg("xxhash", "4.1.0"), pkg("torch", "2.11.0", "nvidia-cublas"), pkg("nvidia-cublas", "13.1"),
        pkg("httpx2", "2.17.0"), pkg("tomli", "2.0"))}
    machine = {"transformers": Version("5.17.0"), "huggingface-hub": Version("1.33.0"), "tokenizers": Version("0.23.2"),
               "accelerate": Version("1.15.0"), "torch": Version("2.11.0"), "regex": None, "pyarrow": None,
               "xxhash": None}
    root = [Requirement("transformers==5.23.0"), Requirement("trl==1.16.0"), Requirement("accelerate==1.15.0")]
    env = wheels.marker_env("3.12")
    carry, unverified = wheels.choose(root, resolved, machine, env, too_big={"pyarrow"})
    assert set(carry) == {"transformers", "trl", "datasets", "regex", "dill"}, carry
    assert carry["transformers"].startswith("machine has 5.17.0") and "not on the machine" in carry["trl"]
    assert unverified == ["pyarrow>=24.0.0 (datasets)"]
    carry, unverified = wheels.choose(root, resolved, machine, env, too_big=set())
    assert "pyarrow" in carry and unverified == []
    assert "manylinux_2_39_x86_64" in wheels.platforms("2.39") and "manylinux_2_17_x86_64" in wheels.platforms("2.39")


def test_gpu_check_step_skips_before_building_where_memory_is_short(tmp_path):
    """bench/gpu_check_step.py run on its own on an 80 GB card (a stand-in
    nvidia-smi reports an H100's 81559 MiB): it writes why it skipped and
    exits 0 before the 17.9 GB checkpoint is built."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text("#!/bin/sh\necho 81559\n")
    (bin_dir / "nvidia-smi").chmod(0o755)
    env = {**ENV, "PATH": f"{bin_dir}{os.pathsep}{ENV['PATH']}"}
    r = subprocess.run([sys.executable, "bench/gpu_check_step.py", str(tmp_path / "out")], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    res = json.loads((tmp_path / "out" / "gpu_check_d.json").read_text())
    assert res["ok"] is None and res["skipped"].startswith("memory: needs about ")
    assert res["memory_gate"]["have_gib"] == 79.6 and res["memory_gate"]["have_source"] == "nvidia-smi memory.total"
    assert "checkpoint" not in res and not (tmp_path / "out" / "step" / "model").exists()
    assert "(d) skipped: memory: needs about" in r.stdout
