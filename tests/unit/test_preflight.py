"""`shala preflight`: launch-config checks and the per-GPU memory estimate."""

from __future__ import annotations

import dataclasses
import functools
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from shala.cli import main
from shala.jsonio import write_jsonl
from shala.launch.fit import suggestions
from shala.launch.gpu_memory import GIB, Setup, estimate_memory, smallest_gpus
from shala.launch.launch_check import check_launch_config
from shala.launch.model_shape import ModelShape, count_parameters
from shala.launch.preflight import EXIT_DOES_NOT_FIT, EXIT_OK, EXIT_PROBLEMS
from shala.train.toolchain import toolchain_problems

ROOT = Path(__file__).resolve().parents[2]
ACC = "config/accelerate_zero3.yaml"


# ---------------------------------------------------------------- counts

def test_shipped_omni_config_parameter_counts(omni_shape):
    """Qwen2.5-Omni-7B thinker: text 7.62B, audio 0.64B, vision 0.67B (±2 %)."""
    g = omni_shape.groups
    assert g["text"] == pytest.approx(7.62e9, rel=0.02)
    assert g["audio"] == pytest.approx(0.64e9, rel=0.02)
    assert g["vision"] == pytest.approx(0.67e9, rel=0.02)
    assert omni_shape.total == pytest.approx(8.93e9, rel=0.01)
    assert omni_shape.towers == ("audio", "vision")
    assert omni_shape.trainable(True) == g["text"]
    assert omni_shape.trainable(False) == omni_shape.total
    assert (omni_shape.layers, omni_shape.hidden, omni_shape.intermediate) == (28, 3584, 18944)
    assert (omni_shape.kv_heads, omni_shape.head_dim) == (4, 128)


def test_counts_a_plain_causal_lm(tiny_model_dir):
    """Non-Omni models are counted whole, all text, no towers."""
    import torch
    from transformers import AutoModelForCausalLM

    cfg = json.loads((tiny_model_dir / "config.json").read_text())
    shape = count_parameters(cfg)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    assert shape.groups == {"text": sum(p.numel() for p in model.parameters())}
    assert shape.towers == () and shape.trainable(True) == shape.total


# ------------------------------------------------------------ arithmetic

SMALL = ModelShape(name="small", source="test", groups={"text": 600_000_000, "audio": 100_000_000,
                                                         "vision": 300_000_000},
                   towers=("audio", "vision"), layers=2, hidden=4, intermediate=8, kv_heads=1,
                   head_dim=2, vocab=10)
SMALL_SETUP = Setup(gpus=4, deepspeed=True, zero_stage=3, freeze_towers=True, batch=2, generation_steps=3,
                    prompt_tokens=10, completion_tokens=6, gradient_checkpointing=True,
                    gather_for_generation=True, overhead_gib=1.0)


def _lines(est):
    return {line.label.split(" (")[0]: line.bytes for line in est.lines}


def test_estimate_arithmetic_by_hand():
    # P = 1e9 params, T = 6e8 trainable (towers frozen), N = 4, ZeRO-3 with
    # DeepSpeed's defaults (sub_group_size 1e9, max live 1e9, prefetch 5e7).
    est = estimate_memory(SMALL, SMALL_SETUP)
    got = _lines(est)
    assert got["weights"] == 2 * 1e9 / 4                  # bf16, sharded
    assert got["optimizer"] == 12 * 6e8 / 4               # fp32 master + m + v, sharded
    assert got["gradients"] == 2 * 6e8 / 4                # bf16, sharded
    assert got["generation gather"] == 2 * 1e9            # full bf16 copy per GPU
    # 2 seqs x 16 tokens x 2 B x (2L*h + 12h + 4i) = 32 x 2 x (16 + 48 + 32)
    assert got["activations"] == 32 * 2 * (2 * 2 * 4 + 12 * 4 + 4 * 8) == 6144
    # 2*3 seqs x 16 tokens x 2 layers x (k, v) x 1 kv head x head_dim 2 x 2 B
    assert got["generation KV cache"] == 6 * 16 * 2 * 2 * 1 * 2 * 2 == 1536
    # 2*3 prompts x 10 tokens x 2 B x (2h + 3i)
    assert got["generation prefill"] == 6 * 10 * 2 * (2 * 4 + 3 * 8) == 3840
    # max(max live 1e9, largest parameter 0 + prefetch 5e7) = 1e9, bf16
    assert got["ZeRO-3 live gathered parameters"] == 2 * 1e9
    # 8 B x min(T/N = 1.5e8, 1e9 + 0)
    assert got["optimizer step transient"] == 8 * 1.5e8
    assert got["CUDA context / allocator / NCCL"] == GIB
    static = 5e8 + 1.8e9 + 3e8 + GIB
    phases = {"generation": 2e9 + 1536 + 3840, "forward/backward": 6144 + 2e9, "optimizer step": 1.2e9}
    assert est.static == pytest.approx(static)
    assert est.phase_bytes() == pytest.approx(phases)
    assert est.peak_phase == "forward/backward"
    assert est.total == pytest.approx(static + 2e9 + 6144)
    assert est.host_bytes == 0


def test_estimate_variants_by_hand():
    # Towers trainable: T = P = 1e9.
    got = _lines(estimate_memory(SMALL, dataclasses.replace(SMALL_SETUP, freeze_towers=False)))
    assert got["optimizer"] == 12 * 1e9 / 4 and got["gradients"] == 2 * 1e9 / 4
    # Optimizer offloaded to CPU: under ZeRO-3 the optimizer state and the bf16
    # gradient partitions are host memory, and the step has no GPU transient.
    est = estimate_memory(SMALL, dataclasses.replace(SMALL_SETUP, offload_optimizer=True))
    got = _lines(est)
    assert got["optimizer"] == 0 and got["gradients"] == 0 and "optimizer step transient" not in got
    assert est.host_bytes == 12 * 6e8 / 4 + 2 * 6e8 / 4
    # ZeRO-2: weights whole, no gather; optimizer and gradients still sharded;
    # the step casts the whole partition (8 B x T/N).
    got = _lines(estimate_memory(SMALL, dataclasses.replace(SMALL_SETUP, zero_stage=2)))
    assert got["weights"] == 2e9 and "generation gather" not in got
    assert got["optimizer"] == 12 * 6e8 / 4 and got["gradients"] == 2 * 6e8 / 4
    assert got["optimizer step transient"] == 8 * 6e8 / 4
    # No checkpointing: every layer's tensors, 2 B x L x (12h + 4i) per token.
    got = _lines(estimate_memory(SMALL, dataclasses.replace(SMALL_SETUP, gradient_checkpointing=False)))
    assert got["activations"] == 32 * 2 * 2 * (12 * 4 + 4 * 8)
    # No DeepSpeed (one process): fp32 weights, fp32 gradients, Adam m and v.
    est = estimate_memory(SMALL, dataclasses.replace(SMALL_SETUP, gpus=1, deepspeed=False, overhead_gib=None))
    got = _lines(est)
    assert got["weights"] == 4e9 and got["gradients"] == 4 * 6e8 and got["optimizer"] == 8 * 6e8
    assert got["optimizer step scratch"] == 4 * 6e8 and "generation gather" not in got
    # one process: 1 GiB of overhead; gradients + scratch at the step are its peak
    assert got["CUDA context / cuBLAS / allocator"] == GIB
    assert est.peak_phase == "optimizer step"
    assert est.total == pytest.approx(4e9 + 8 * 6e8 + GIB + 4 * 6e8 + 4 * 6e8)


def test_smallest_gpu_count_by_hand():
    # Unsharded: 1 GiB + the forward/backward phase (live 2e9 + 6144), which is
    # the peak from N = 3 (step 8 B x 6e8 / N); sharded: (2e9 + 7.2e9 + 1.2e9) / N.
    fixed = 2e9 + 6144 + GIB
    mem_gib = (fixed + 10.4e9 / 5) / GIB / 0.9 + 1e-9   # exactly enough for N = 5 with 10 % headroom
    assert smallest_gpus(SMALL, SMALL_SETUP, mem_gib) == 5
    assert smallest_gpus(SMALL, SMALL_SETUP, fixed / GIB) is None   # no N makes the shards vanish
    tips = suggestions(SMALL, SMALL_SETUP, mem_gib, "ds.json")
    assert any("training.gpus 5" in t for t in tips)
    assert any("offload_optimizer.device" in t and "ds.json" in t for t in tips)
    assert any("sub_group_size 1e+08" in t for t in tips)          # DeepSpeed's 1e9 is above shala's


def test_paper_setup_on_two_gpus(omni_shape):
    """The paper's setup, ZeRO-3 on 2 GPUs, towers frozen: static weights
    2P/2, optimizer 12T/2, gradients 2T/2, 3 GiB; the generation phase
    (gather 2P, KV cache, prefill) is its peak."""
    setup = Setup(gpus=2, zero_stage=3, batch=4, generation_steps=2, completion_tokens=128)
    est = estimate_memory(omni_shape, setup)
    p, t = omni_shape.total, omni_shape.groups["text"]
    assert est.static == pytest.approx(2 * p / 2 + 12 * t / 2 + 2 * t / 2 + 3 * GIB)
    assert est.peak_phase == "generation"
    gen = sum(line.bytes for line in est.lines if "generation" in line.phases)
    assert gen == pytest.approx(2 * p + 8 * 640 * 28 * 2 * 4 * 128 * 2 + 8 * 512 * 2 * (2 * 3584 + 3 * 18944))
    assert 70 < est.total_gib < 90


# ---------------------------------------------------------- launch config

def test_accelerate_yaml_validates(in_repo, paper_config):
    check = check_launch_config(ACC, gpus=2, grpo=paper_config["training"]["grpo"])
    assert check.problems == [], [str(p) for p in check.problems]
    assert check.deepspeed and check.ds_config_file == "config/ds_zero3.json"
    assert (check.zero_stage, check.offload_optimizer, check.offload_param) == (3, "none", "none")
    assert any("DeepSpeedPlugin" in c for c in check.checks)   # accelerate's own checks ran
    assert any("launcher" in c for c in check.checks)


def test_mixed_precision_next_to_ds_file_is_named(in_repo, tmp_path, paper_config):
    """The launch error of the issue: mixed_precision beside deepspeed_config_file."""
    bad = yaml.safe_load((ROOT / ACC).read_text())
    bad["mixed_precision"] = "bf16"
    bad["deepspeed_config"]["zero_stage"] = 3
    path = tmp_path / "acc.yaml"
    path.write_text(yaml.safe_dump(bad))
    check = check_launch_config(str(path), gpus=2, grpo=paper_config["training"]["grpo"])
    fields = {p.field for p in check.problems}
    assert fields == {"mixed_precision", "deepspeed_config.zero_stage"}
    assert all(p.file == str(path) for p in check.problems)


def test_ds_json_problems_are_named(in_repo, tmp_path, paper_config):
    ds = json.loads((ROOT / "config/ds_zero3.json").read_text())
    ds["train_micro_batch_size_per_gpu"] = 8                      # grpo says 4
    ds["zero_optimization"]["offload_param"]["device"] = "disk"
    ds_path = tmp_path / "ds.json"
    ds_path.write_text(json.dumps(ds))
    acc = yaml.safe_load((ROOT / ACC).read_text())
    acc["deepspeed_config"]["deepspeed_config_file"] = str(ds_path)
    acc_path = tmp_path / "acc.yaml"
    acc_path.write_text(yaml.safe_dump(acc))
    check = check_launch_config(str(acc_path), gpus=2, grpo=paper_config["training"]["grpo"])
    named = {(p.file, p.field) for p in check.problems}
    assert (str(ds_path), "train_micro_batch_size_per_gpu") in named
    assert (str(ds_path), "zero_optimization.offload_param.device") in named

    ds_path.write_text("{\n  \"zero_optimization\": {,\n}")
    check = check_launch_config(str(acc_path), gpus=2, grpo=paper_config["training"]["grpo"])
    assert [(p.file, p.field) for p in check.problems] == [(str(ds_path), "(file)")]
    assert "line 2" in check.problems[0].message

    acc["deepspeed_config"]["deepspeed_config_file"] = str(tmp_path / "missing.json")
    acc_path.write_text(yaml.safe_dump(acc))
    check = check_launch_config(str(acc_path), gpus=2, grpo=paper_config["training"]["grpo"])
    assert [p.field for p in check.problems] == ["deepspeed_config.deepspeed_config_file"]


# -------------------------------------------------------------------- CLI

def _preflight(capsys, *args):
    """The CLI's exit status and report; disk is checked against a large
    --free-disk unless given (tests/unit/test_disk.py checks the disk)."""
    disk = [] if "--free-disk" in args else ["--free-disk", "100000"]
    with pytest.raises(SystemExit) as exc:
        main(["preflight", "--config", str(ROOT / "config.yaml"), *args, *disk])
        raise SystemExit(0)
    return exc.value.code or 0, capsys.readouterr().out


def test_cli_fits_on_two_141gb_gpus(in_repo, capsys):
    rc, out = _preflight(capsys, "--gpus", "2", "--gpu-mem", "141")
    assert rc == EXIT_OK, out
    assert "verdict: FITS" in out and "launch config OK" in out
    assert "2 B x 8.932B / 2" in out and "12 B x 7.616B / 2" in out   # the arithmetic is shown
    total = float(next(line for line in out.splitlines() if line.strip().startswith("total")).split()[1])
    assert 70 < total < 90


def test_cli_does_not_fit_on_24gb_and_names_fixes(in_repo, capsys):
    """Strict: no fallback applied; the report names the one that would fit and the settings."""
    rc, out = _preflight(capsys, "--gpus", "2", "--gpu-mem", "24", "--strict")
    assert rc == EXIT_DOES_NOT_FIT, out
    assert "DOES NOT FIT" in out and "fallback would apply fallback 3 offload_optimizer+no_gather" in out
    assert "offload_optimizer.device" in out and "more GPUs" in out


def test_cli_nothing_fits_on_4gb_exits_3(in_repo, capsys):
    """2 x 4 GiB: even all offloads and no gather (5.6 GiB) leave under 10 % free."""
    rc, out = _preflight(capsys, "--gpus", "2", "--gpu-mem", "4")
    assert rc == EXIT_DOES_NOT_FIT, out
    assert "fit: no fallback of the 5 fits (tried: no_gather 63.7 GiB" in out


def test_cli_unknown_memory_exits_0_with_a_note(in_repo, capsys, monkeypatch):
    monkeypatch.setattr("shala.launch.preflight.detect_gpus", lambda: (0, None, None))
    rc, out = _preflight(capsys)
    assert rc == EXIT_OK and "verdict: UNKNOWN" in out and "2 GPU(s) (training.gpus)" in out


def test_cli_launch_problem_exits_2(in_repo, tmp_path, capsys):
    bad = yaml.safe_load((ROOT / ACC).read_text())
    bad["mixed_precision"] = "bf16"
    (tmp_path / "acc.yaml").write_text(yaml.safe_dump(bad))
    (tmp_path / "over.yaml").write_text(yaml.safe_dump({"training": {"accelerate_config": str(tmp_path / "acc.yaml")}}))
    rc, out = _preflight(capsys, "--config", str(tmp_path / "over.yaml"), "--gpus", "2", "--gpu-mem", "141")
    assert rc == EXIT_PROBLEMS
    assert f"{tmp_path / 'acc.yaml'}: field 'mixed_precision'" in out


def test_installed_command_exit_status():
    """The console script itself: 24 GiB per GPU does not fit, strict (exit 3)."""
    exe = Path(sys.executable).with_name("shala")
    cmd = [str(exe)] if exe.is_file() else [sys.executable, "-m", "shala"]
    r = subprocess.run(cmd + ["preflight", "--config", "config.yaml", "--gpus", "2", "--gpu-mem", "24",
                              "--strict"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == EXIT_DOES_NOT_FIT, r.stdout + r.stderr
    assert "per-GPU memory estimate" in r.stdout


@pytest.mark.gpu_first_run
def test_cli_takes_vllm_rollouts_for_the_omni_thinker_on_text_and_refuses_audio(in_repo, tmp_path, capsys):
    """use_vllm over the paper's config: the Omni thinker on the text datasets
    passes; once MSP-Podcast's prepared items carry audio, exit 2 with the
    field and the dataset named, before any model loads."""
    over = {"training": {"grpo": {"use_vllm": True}}, "results": str(tmp_path / "results")}
    (tmp_path / "over.yaml").write_text(yaml.safe_dump(over))
    rc, out = _preflight(capsys, "--config", str(tmp_path / "over.yaml"), "--gpus", "2", "--gpu-mem", "141")
    assert rc == EXIT_OK and "PROBLEM" not in out, out  # MSP-Podcast has no source: not in the plan
    over["datasets"] = {"msp_podcast": {"source": str(tmp_path)}}
    (tmp_path / "over.yaml").write_text(yaml.safe_dump(over))
    write_jsonl(tmp_path / "results" / "data" / "msp_podcast" / "train.jsonl",
                [{"id": "a", "inputs": {"text": "hi", "audio": "a.wav"}}])
    rc, out = _preflight(capsys, "--config", str(tmp_path / "over.yaml"), "--gpus", "2", "--gpu-mem", "141")
    assert rc == EXIT_PROBLEMS, out
    assert [line for line in out.splitlines() if "PROBLEM" in line] == [
        ("  PROBLEM: training.grpo.use_vllm: true (datasets.msp_podcast) cannot feed the items' audio to vLLM "
         "(TRL 1.16's colocate rollouts forward images, not audio); set it false (transformers' generate), "
         "or the dataset's text_only: true")]
    assert "verdict: FITS" in out  # memory is not the reason
    rc, out = _preflight(capsys, "--gpus", "2", "--gpu-mem", "141")
    assert rc == EXIT_OK and "use_vllm" not in out


@pytest.mark.gpu_first_run
def test_cli_names_a_missing_compiler_where_cuda_is(in_repo, tmp_path, capsys, monkeypatch):
    """With CUDA visible and no C compiler, TRL's Triton kernels would fail at
    the first loss: preflight says so and exits 2."""
    monkeypatch.setattr("shala.launch.preflight.detect_gpus", lambda: (2, 139.8, "NVIDIA H200"))
    monkeypatch.setattr("shala.launch.preflight.toolchain_problems",
                        functools.partial(toolchain_problems, triton=True))  # as where CUDA torch ships Triton
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CC", raising=False)
    rc, out = _preflight(capsys, "--gpus", "2")
    assert rc == EXIT_PROBLEMS, out
    assert "PROBLEM: no C compiler (gcc or clang) on PATH" in out and "verdict: FITS" in out
