"""vLLM's reserve in the per-GPU estimate and the fit fallbacks
(shala.launch.gpu_memory "With vLLM rollouts", shala.launch.fit 6-8): the
paper's setup on 2 x H200 and 2 x H100 with training.grpo.use_vllm."""

from __future__ import annotations

import dataclasses

import pytest

from shala.launch.fit import choose, suggestions
from shala.launch.gpu_memory import GENERATION, GIB, estimate_memory, setup_for
from shala.launch.zero3_memory import Zero3Config

# the paper's GRPO settings (config.yaml) as the estimate reads them
PAPER = {"per_device_train_batch_size": 4, "gradient_accumulation_steps": 2, "max_completion_length": 128,
         "gradient_checkpointing": True}
ZERO3 = Zero3Config(sub_group_size=100_000_000)


def _setup(mem, **grpo):
    return setup_for({**PAPER, **grpo}, gpus=2, deepspeed=True, zero3=ZERO3, gpu_mem_gib=mem)


def _lines(est):
    return {line.label: line for line in est.lines}


@pytest.mark.parametrize("mem", [139.8, 79.2])
def test_the_reserve_replaces_the_policys_own_generation(omni_shape, mem):
    hf = estimate_memory(omni_shape, _setup(mem))
    vl = estimate_memory(omni_shape, _setup(mem, use_vllm=True))
    reserve = _lines(vl)["vLLM reserve (weights, KV cache; colocate)"]
    assert reserve.bytes == pytest.approx(0.3 * mem * GIB) and reserve.phases == ()  # TRL's default share
    gone = {"generation gather (ds3_gather_for_generation)", "generation KV cache (bf16)",
            "generation prefill (bf16, one layer)"}
    assert gone <= set(_lines(hf)) and not gone & set(_lines(vl))
    assert _lines(vl)["vLLM weight push (one gathered parameter)"].bytes == 2 * omni_shape.largest
    assert vl.static - hf.static == pytest.approx(reserve.bytes)
    half = estimate_memory(omni_shape, _setup(mem, use_vllm=True, vllm_gpu_memory_utilization=0.5))
    assert half.static - vl.static == pytest.approx(0.2 * mem * GIB)
    server = estimate_memory(omni_shape, _setup(mem, use_vllm=True, vllm_mode="server"))
    assert server.total == hf.total  # a separate server: nothing on the training GPUs


def test_sleep_mode_moves_the_reserve_into_the_generation_phase(omni_shape):
    awake = estimate_memory(omni_shape, _setup(79.2, use_vllm=True))
    asleep = estimate_memory(omni_shape, _setup(79.2, use_vllm=True, vllm_enable_sleep_mode=True))
    line = _lines(asleep)["vLLM reserve (weights, KV cache; colocate, asleep while training)"]
    assert line.phases == (GENERATION,) and asleep.peak_phase == GENERATION
    assert asleep.total == pytest.approx(asleep.static + line.bytes + 2 * omni_shape.largest)
    assert asleep.total < awake.total


def test_the_fallbacks_know_the_reserve(omni_shape):
    # 2 x H200: fits as configured, 41.9 GiB of vLLM reserve included
    h200 = choose(omni_shape, _setup(139.8, use_vllm=True), 139.8)
    assert h200.fits and h200.fallback is None and 100 < h200.estimate.total_gib < 0.9 * 139.8
    # 2 x H100: over 80 GiB as configured; sleep mode alone is not enough, then the optimizer goes to the CPU
    h100 = choose(omni_shape, _setup(79.2, use_vllm=True), 79.2)
    assert [name for name, _ in h100.tried][:2] == ["vllm_sleep", "offload_optimizer"]
    assert h100.fits and h100.fallback.name == "offload_optimizer"
    assert all(name != "no_gather" for name, _ in h100.tried)  # the policy does not generate
    # sleep mode saves the larger of the forward/backward and step phases (the reserve no longer
    # overlaps them): a share just over the line fits with it, first of the fallbacks
    bare = estimate_memory(omni_shape, dataclasses.replace(_setup(79.2, use_vllm=True), vllm_utilization=1e-9))
    share = (0.9 * 79.2 - bare.static / GIB - 2 * omni_shape.largest / GIB - 0.2) / 79.2
    setup = dataclasses.replace(_setup(79.2, use_vllm=True), vllm_utilization=share)
    small = choose(omni_shape, setup, 79.2)
    assert not small.configured.total_gib <= 0.9 * 79.2 and small.tried == [("vllm_sleep", pytest.approx(71.1, abs=0.1))]
    assert small.fallback.name == "vllm_sleep" and small.setup.vllm_sleep
    assert any(s.startswith("vLLM asleep while the policy trains") for s in suggestions(omni_shape, setup, 79.2, None))
