"""The ZeRO-3 terms of the memory estimate (shala.launch.zero3_memory): the
optimizer step's transient and the live gathered parameters, from the
DeepSpeed json's own values; the one-process overhead and LoRA on 24 GB
cards (issue 26). Each number is written out from the model config and the
json, not taken from the code under test."""

from __future__ import annotations

import dataclasses
import io
import json
import re
from pathlib import Path

import pytest
import yaml

from shala.launch.gpu_memory import GIB, Setup, estimate_memory
from shala.launch.launch_check import check_launch_config
from shala.launch.model_shape import ModelShape
from shala.launch.preflight import run_preflight
from shala.launch.zero3_memory import Zero3Config
from shala.plan import load_config

pytestmark = pytest.mark.gpu_first_run

ROOT = Path(__file__).resolve().parents[2]
ACC = "config/accelerate_zero3.yaml"
# The paper model (Qwen2.5-Omni-7B thinker, its shipped config.json)
L, H, I, KV, HD, VOCAB = 28, 3584, 18944, 4, 128, 152064  # noqa: E741 (the paper's symbols)
LARGEST = VOCAB * H                                    # embed_tokens, lm_head

SHAPE = ModelShape(name="s", source="test", groups={"text": 600_000_000, "audio": 400_000_000},
                   towers=("audio",), layers=2, hidden=100, intermediate=8, kv_heads=1, head_dim=2,
                   vocab=10, largest=50_000_000)
ZERO3 = Setup(gpus=4, batch=2, generation_steps=3, prompt_tokens=10, completion_tokens=6,
              zero3=Zero3Config(sub_group_size=100_000_000, max_live_parameters=10_000_000,
                                prefetch_bucket_size="auto"))


def _line(est, start):
    return next(line for line in est.lines if line.label.startswith(start))


def test_step_transient_by_hand():
    # T = 6e8 (audio frozen), N = 4: partition 1.5e8; a sub-group closes once it
    # reaches 1e8 elements, so it holds at most 1e8 + 5e7 / 4 = 1.125e8.
    step = _line(estimate_memory(SHAPE, ZERO3), "optimizer step transient")
    assert step.phases == ("optimizer step",)
    assert step.bytes == 8 * 1.125e8                      # fp32 gradient copy 4 B + foreach scratch 4 B
    # a sub_group_size above the partition: the whole partition, 8 B x 1.5e8
    big = dataclasses.replace(ZERO3, zero3=dataclasses.replace(ZERO3.zero3, sub_group_size=10**9))
    assert _line(estimate_memory(SHAPE, big), "optimizer step transient").bytes == 8 * 1.5e8
    # fused AdamW (no scratch): the fp32 copy beside the bf16 flatten, 6 B
    fused = dataclasses.replace(ZERO3, foreach_adam=False)
    assert _line(estimate_memory(SHAPE, fused), "optimizer step transient").bytes == 6 * 1.125e8
    # DeepSpeed's own optimizer (an optimizer section in the json) is fused too
    ds_opt = dataclasses.replace(ZERO3, zero3=dataclasses.replace(ZERO3.zero3, ds_optimizer=True))
    assert _line(estimate_memory(SHAPE, ds_opt), "optimizer step transient").bytes == 6 * 1.125e8
    # sub_group_size 0 (one parameter per sub-group), fused: the fp64 norm of the
    # largest gradient partition, 8 B x 5e7 / 4, is the larger transient
    tiny = dataclasses.replace(fused, zero3=dataclasses.replace(ZERO3.zero3, sub_group_size=0))
    assert _line(estimate_memory(SHAPE, tiny), "optimizer step transient").bytes == 8 * 5e7 / 4
    # optimizer offload: the fp32 gradients and the Adam step are on the CPU
    off = estimate_memory(SHAPE, dataclasses.replace(ZERO3, offload_optimizer=True))
    assert not any("optimizer step" in line.label for line in off.lines)


def test_live_parameters_by_hand():
    # "auto" prefetch = int(0.9 x 100^2) = 9000; max(1e7, 5e7 + 9000), bf16
    live = _line(estimate_memory(SHAPE, ZERO3), "ZeRO-3 live gathered parameters")
    assert live.bytes == 2 * (50_000_000 + 9000)
    assert live.phases == ("forward/backward",)          # generation uses the full gather
    many = dataclasses.replace(ZERO3, zero3=dataclasses.replace(ZERO3.zero3, max_live_parameters=300_000_000))
    assert _line(estimate_memory(SHAPE, many), "ZeRO-3 live").bytes == 2 * 300_000_000
    # never more than the whole model, P = 1e9
    cap = dataclasses.replace(ZERO3, zero3=dataclasses.replace(ZERO3.zero3, max_live_parameters=5 * 10**9))
    assert _line(estimate_memory(SHAPE, cap), "ZeRO-3 live").bytes == 2 * 1e9
    # without the gather, generation gathers layer by layer: live in both phases
    no_gather = estimate_memory(SHAPE, dataclasses.replace(ZERO3, gather_for_generation=False))
    assert _line(no_gather, "ZeRO-3 live").phases == ("generation", "forward/backward")


def test_peak_is_static_plus_the_largest_phase():
    est = estimate_memory(SHAPE, ZERO3)
    static = 2 * 1e9 / 4 + 12 * 6e8 / 4 + 2 * 6e8 / 4 + 3 * GIB
    tokens, prompts = 2 * 16, 2 * 3 * 10
    generation = 2 * 1e9 + 6 * 16 * 2 * 2 * 1 * 2 * 2 + prompts * 2 * (2 * 100 + 3 * 8)
    forward = tokens * 2 * (2 * 2 * 100 + 12 * 100 + 4 * 8) + 2 * (50_000_000 + 9000)
    step = 8 * 1.125e8
    assert est.static == pytest.approx(static)
    assert est.peak_phase == "generation"
    assert est.total == pytest.approx(static + max(generation, forward, step))


def test_the_shipped_json_sizes_the_terms(in_repo, paper_config):
    """config/ds_zero3.json as the launch check reads it, and the paper
    model's terms on 2 GPUs from its config numbers."""
    check = check_launch_config(ACC, gpus=2, grpo=paper_config["training"]["grpo"])
    assert check.problems == []
    assert check.zero3 == Zero3Config(sub_group_size=100_000_000, max_live_parameters=500_000_000,
                                      prefetch_bucket_size="auto", ds_optimizer=False)
    rc, out = _run(paper_config, gpus=2, mem=139.8)
    t = 7_615_616_512                                      # text parameters (trainable)
    step_gib = 8 * min(t / 2, 1e8 + LARGEST / 2) / GIB     # 1e8 + 272.5M
    live_gib = 2 * max(5e8, LARGEST + int(0.9 * H * H)) / GIB
    assert re.search(rf"optimizer step transient \(ZeRO-3, one sub-group\) +{step_gib:.2f}  optimizer step", out)
    assert re.search(rf"ZeRO-3 live gathered parameters \(bf16\) +{live_gib:.2f}  forward/backward", out)
    assert "sub_group_size 1e+08" in out and "stage3_max_live_parameters 5e+08" in out
    assert rc == 0


def _run(config, *, gpus, mem):
    buf = io.StringIO()
    rc = run_preflight(config, gpus=gpus, gpu_mem=mem, free_disk=100_000, out=buf)
    return rc, buf.getvalue()


def _with_ds(tmp_path, **zero):
    """config.yaml with a copy of config/ds_zero3.json whose zero_optimization has ``zero``."""
    ds = json.loads((ROOT / "config/ds_zero3.json").read_text())
    ds["zero_optimization"].update(zero)
    (tmp_path / "ds.json").write_text(json.dumps(ds))
    acc = yaml.safe_load((ROOT / ACC).read_text())
    acc["deepspeed_config"]["deepspeed_config_file"] = str(tmp_path / "ds.json")
    (tmp_path / "acc.yaml").write_text(yaml.safe_dump(acc))
    (tmp_path / "over.yaml").write_text(yaml.safe_dump({"training": {"accelerate_config": str(tmp_path / "acc.yaml")}}))
    return load_config([ROOT / "config.yaml", tmp_path / "over.yaml"])


def _fallback_table(out):
    return out[out.index("per-GPU memory estimate with fallback"):]


def test_eight_24gb_cards(in_repo, paper_config):
    """8 x 23.6 GiB: as configured 34.9 GiB (the gather); no_gather fits at
    20.1 of 21.2 usable, its peak the forward/backward phase."""
    t, p = 7_615_616_512, 8_931_813_888
    static = 2 * p / 8 + 12 * t / 8 + 2 * t / 8 + 3 * GIB
    live = 2 * max(5e8, LARGEST + int(0.9 * H * H))
    forward = 4 * 640 * 2 * (2 * L * H + 12 * H + 4 * I) + live
    generation = live + 8 * 640 * L * 2 * KV * HD * 2 + 8 * 512 * 2 * (2 * H + 3 * I)
    step = 8 * min(t / 8, 1e8 + LARGEST / 8)
    gib = (static + max(forward, generation, step)) / GIB
    assert gib <= 0.9 * 23.6
    rc, out = _run(paper_config, gpus=8, mem=23.6)
    assert rc == 0, out
    assert "training applies fallback 1 no_gather" in out
    assert f"{gib:.1f} of 23.6 GiB per GPU x 8" in out
    table = _fallback_table(out)
    assert re.search(rf"optimizer step transient .* {step / GIB:.2f}  optimizer step", table)
    assert "the largest phase, forward/backward" in table


def test_a_larger_sub_group_changes_the_line_and_the_verdict(in_repo, tmp_path):
    """DeepSpeed's default sub_group_size 1e9 in a copy of the json: on 8 x
    23.6 GiB the step's transient is the whole partition, 8 B x T / 8 = 7.1
    GiB, and no_gather no longer fits; training falls back to the optimizer
    offload without the gather, whose step is on the CPU."""
    t, p = 7_615_616_512, 8_931_813_888
    rc, out = _run(_with_ds(tmp_path, sub_group_size=10**9), gpus=8, mem=23.6)
    assert rc == 0, out
    assert "sub_group_size 1e+09" in out
    whole = 8 * t / 8 / GIB
    assert re.search(rf"optimizer step transient \(ZeRO-3, one sub-group\) +{whole:.2f}  optimizer step", out)
    static = 2 * p / 8 + 12 * t / 8 + 2 * t / 8 + 3 * GIB
    no_gather = (static + 8 * t / 8) / GIB               # the step is now the peak phase
    assert no_gather > 0.9 * 23.6 and f"tried first: no_gather: {no_gather:.1f} GiB" in out
    assert "training applies fallback 3 offload_optimizer+no_gather" in out
    assert "optimizer step transient" not in _fallback_table(out)     # offloaded: on the CPU
    # the shipped 1e8 keeps no_gather (test_eight_24gb_cards); 5e7 lowers the line further
    rc, out = _run(_with_ds(tmp_path, sub_group_size=50_000_000), gpus=8, mem=23.6)
    step = 8 * (5e7 + LARGEST / 8) / GIB
    assert rc == 0 and "training applies fallback 1 no_gather" in out
    assert re.search(rf"optimizer step transient .* {step:.2f}  optimizer step", _fallback_table(out))


def test_auto_is_refused_where_transformers_does_not_fill_it(in_repo, tmp_path, paper_config):
    config = _with_ds(tmp_path, sub_group_size="auto", stage3_max_live_parameters=-1)
    check = check_launch_config(config["training"]["accelerate_config"], gpus=2,
                                grpo=paper_config["training"]["grpo"])
    fields = {p.field for p in check.problems}
    assert {"zero_optimization.sub_group_size", "zero_optimization.stage3_max_live_parameters"} <= fields
    # keys the json leaves out take DeepSpeed's defaults (1e9, 1e9, 5e7)
    ds = json.loads((ROOT / "config/ds_zero3.json").read_text())
    for key in ("sub_group_size", "stage3_max_live_parameters", "stage3_prefetch_bucket_size"):
        del ds["zero_optimization"][key]
    (tmp_path / "ds.json").write_text(json.dumps(ds))
    check = check_launch_config(config["training"]["accelerate_config"], gpus=2,
                                grpo=paper_config["training"]["grpo"])
    assert check.zero3 == Zero3Config(10**9, 10**9, 50_000_000)


def test_lora_on_a_24gb_card(in_repo):
    """`shala preflight --config config.yaml --config config/one_gpu.yaml --gpus 1
    --gpu-mem 23.6` (an RTX 3090/4090 or A5000): LoRA fits; one process counts
    1 GiB of overhead, not the multi-rank launch's 3; a 22 GiB card (A10G,
    L4) is named, with the generation batch that makes it fit."""
    config = load_config([ROOT / "config.yaml", ROOT / "config" / "one_gpu.yaml"])
    grpo = config["training"]["grpo"]
    b, g = grpo["per_device_train_batch_size"], grpo.get("steps_per_generation") or grpo["gradient_accumulation_steps"]
    seq = 512 + grpo["max_completion_length"]
    p = 8_931_813_888
    a = L * 16 * (9 * H + 2 * KV * HD + 3 * I)           # r=16 on q, k, v, o, gate, up, down
    static = 2 * p + 20 * a + 1 * GIB
    forward = b * seq * 2 * (2 * L * H + 12 * H + 4 * I) + b * seq * 2 * (7 * H + I)
    generation = b * g * seq * L * 2 * KV * HD * 2 + b * g * 512 * 2 * (2 * H + 3 * I)
    gib = (static + max(forward, generation)) / GIB
    rc, out = _run(config, gpus=1, mem=23.6)
    assert rc == 0, out
    assert "LoRA r=16 (training.peft)" in out and "verdict: FITS" in out
    assert re.search(r"CUDA context / cuBLAS / allocator +1\.00  static +fixed, one process", out)
    assert f"verdict: FITS: {gib:.1f} of 23.6 GiB" in out
    cards = out[out.index("LoRA on one 24 GB-class card"):]
    assert f"RTX 3090 / 4090 / A5000, 23.6 GiB: fits ({gib:.1f}" in cards
    if gib > 0.9 * 22.0:
        assert f"A10G / L4, 22.0 GiB: does not fit ({gib:.1f} GiB, 19.8 usable)" in cards
        assert re.search(r"to fit: training\.grpo\.steps_per_generation \d+ .*, fits", cards)
    else:
        assert "A10G / L4, 22.0 GiB: fits" in cards
