"""The GPU check's scripts, run here on the CPU at toy size, so the script a
GPU machine runs once keeps working: part (a) (tiny Omni thinker, text and
audio: 2 GRPO steps, save, reload, predict; one process, no DeepSpeed),
part (d) (the full-size step's code path: a thinker from the shipped config
at toy size, 2 GRPO steps through `accelerate launch --num_processes 1`
with the ZeRO-3 config on a CPU rank, measured against shala.launch.gpu_memory's
estimate), and parts (b)/(c) (generation, forward + backward, prediction)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
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
    assert res["ok"] is True and set(res["runs"]) == {"chaosnli", "msp_podcast"}
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
