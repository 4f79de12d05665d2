"""``shala preflight``: check the launch config, estimate per-GPU memory
and the disk the runs need, before a GPU training job (docs/design.md §8).

Run it where the job will run (the repo root: accelerate resolves the
DeepSpeed json relative to the directory ``accelerate launch`` runs in)::

    shala preflight --config config.yaml [--config overlay.yaml] [--gpus N] [--gpu-mem GIB]
                    [--strict] [--free-disk GIB]

Exit status: 0 when the estimate fits with 10 % headroom, or a fallback
of :mod:`shala.launch.fit` does and training will apply it (the report names it
and its estimate), or the GPU memory is unknown (the estimate is printed
with a note); 3 when nothing fits, or the configured setup does not and
``training.fit_to_hardware`` is ``strict`` (or ``--strict``; the report names
the settings that would make it fit); 4 when the unfinished training runs
need more disk than is free under ``results`` (:mod:`shala.launch.disk`), with
``--enforce-disk`` (each GPU training job's preflight passes it unless
``training.check_disk`` is false; by hand the verdict is printed, and the
exit status is the memory verdict's); 2 when the launch config has problems
(each named by file and field), when something would fail at the first
step (vLLM rollouts for a model they cannot serve yet, named by field:
:func:`shala.model.engines.vllm_model_problems`; with CUDA, no C compiler
or libcuda for TRL's Triton kernels: :mod:`shala.train.toolchain`), or
the config cannot be read.

What it checks and how it estimates lives in modules of their own, and
this one gathers their inputs from the config and prints the report:

- :mod:`shala.launch.launch_check`: ``training.accelerate_config`` and its
  DeepSpeed json, by accelerate's own code ("Launch config" there);
- :mod:`shala.launch.model_shape`: the model's parameter counts and dimensions,
  from its config on the ``meta`` device;
- :mod:`shala.launch.gpu_memory`: the per-GPU memory model ("Memory model (per GPU)"
  there), with the ZeRO-3 terms of :mod:`shala.launch.zero3_memory`;
- :mod:`shala.launch.fit`: the ordered fallbacks training applies ("Fallbacks") and
  the settings that would make a job fit;
- :mod:`shala.launch.disk`: the disk model ("Disk model").
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any, TextIO

from ..errors import ConfigError
from ..model.engines import vllm_model_problems
from ..train.toolchain import toolchain_problems
from .disk import check_disk
from .fit import FALLBACKS, choose, describe, fit_mode, suggestions
from .gpu_memory import (
    GIB,
    HEADROOM,
    PROMPT_TOKENS,
    Estimate,
    Setup,
    billions,
    estimate_memory,
    fits_in,
    lora_params,
    peft_setup,
    setup_for,
)
from .launch_check import check_launch_config
from .model_shape import ModelShape, count_parameters, model_config_dict

__all__ = ["EXIT_DOES_NOT_FIT", "EXIT_NO_DISK", "EXIT_OK", "EXIT_PROBLEMS", "detect_gpus", "run_preflight"]

EXIT_OK, EXIT_PROBLEMS, EXIT_DOES_NOT_FIT, EXIT_NO_DISK = 0, 2, 3, 4


def detect_gpus() -> tuple[int, float | None, str | None]:
    """(visible CUDA devices, smallest total memory in GiB, name), or (0, None, None)."""
    try:
        import torch
        if not torch.cuda.is_available():
            return 0, None, None
        count = torch.cuda.device_count()
        props = [torch.cuda.get_device_properties(i) for i in range(count)]
        return count, min(p.total_memory for p in props) / GIB, props[0].name
    except Exception:  # noqa: BLE001 - a broken CUDA setup means "no GPU here"
        return 0, None, None


def _table(say, est: Estimate, mem: float | None, title: str) -> None:
    """The estimate's lines with the phase each is live in, and its peak."""
    say(title)
    width = max(len(line.label) for line in est.lines)
    phases = [", ".join(line.phases) or "static" for line in est.lines]
    pw = max(map(len, phases))
    for line, phase in zip(est.lines, phases):
        say(f"  {line.label:<{width}}  {line.bytes / GIB:7.2f}  {phase:<{pw}}  {line.formula}")
    peak = est.peak_phase
    say(f"  {'total':<{width}}  {est.total_gib:7.2f}" + (f"   of {mem:.1f} GiB" if mem is not None else "")
        + f": static {est.static / GIB:.2f} + the largest phase, {peak}, {est.phase_bytes()[peak] / GIB:.2f}")


def run_preflight(config: dict[str, Any], *, gpus: int | None = None, gpu_mem: float | None = None,
                  model_config: str | Path | None = None, prompt_tokens: int = PROMPT_TOKENS,
                  strict: bool = False, free_disk: float | None = None, enforce_disk: bool = False,
                  only: tuple[str, str, int] | None = None,
                  out: TextIO | None = None) -> int:
    """Print the launch-config check, the per-GPU memory estimate with the
    fallback training applies, and the disk check; return the exit status
    (module doc). ``strict`` overrides training.fit_to_hardware; ``only``
    (dataset, method, seed): a training job's own check, of its run's disk need
    alone and from its own config slice (rules/common.smk)."""
    out = out or sys.stdout

    def say(text: str = "") -> None:
        print(text, file=out)

    training = config["training"]
    grpo = dict(training["grpo"])
    mode = fit_mode(config, strict)
    n_seen, mem_seen, gpu_name = detect_gpus()
    notes: list[str] = []
    if gpus is not None:
        n, n_from = gpus, "--gpus"
    elif int(training["gpus"]) > 0:
        n, n_from = int(training["gpus"]), "training.gpus"
    elif n_seen:
        n, n_from = n_seen, "visible CUDA devices"
    else:
        n, n_from = 1, "default"
    if n < 1:
        raise ConfigError(f"--gpus must be at least 1, not {n}")
    if n_seen and n_seen < n:
        notes.append(f"only {n_seen} CUDA device(s) visible here, the job asks for {n}")
    if gpu_mem is not None:
        mem, mem_from = float(gpu_mem), "--gpu-mem"
    elif mem_seen is not None:
        mem, mem_from = mem_seen, f"detected: {gpu_name}"
    elif training["gpu_mem_gb"]:
        mem, mem_from = float(training["gpu_mem_gb"]), "training.gpu_mem_gb"
    else:
        mem, mem_from = None, "unknown"
    if mem is not None and mem <= 0:
        raise ConfigError(f"--gpu-mem must be positive, not {mem}")

    acc = training["accelerate_config"]
    launch = check_launch_config(acc, gpus=n, grpo=grpo)
    if acc and n <= 1:
        launch.notes.append("1 GPU: the workflow runs plain `shala` (no accelerate launch, no DeepSpeed), "
                            "so the estimate is for plain training")

    cfg_dict, cfg_source = model_config_dict(config, model_config)
    model_cfg = config["model"]
    name = str(model_cfg.get("id") or model_cfg.get("path") or model_cfg.get("name") or "model")
    shape = count_parameters(cfg_dict, name=name, source=cfg_source)
    freeze = bool(training["freeze_unused_towers"])
    deepspeed = launch.deepspeed and n > 1
    setup = setup_for(grpo, gpus=n, deepspeed=deepspeed, zero_stage=launch.zero_stage,
                      offload_optimizer=launch.offload_optimizer != "none",
                      offload_param=launch.offload_param != "none", freeze_towers=freeze,
                      prompt_tokens=prompt_tokens, zero3=launch.zero3, gpu_mem_gib=mem)  # mem: vLLM's share
    peft = training["peft"]
    full_setup, lora_setup = setup, peft_setup(setup, peft, enabled=True)
    if not peft["enabled"]:  # the alternative as config/one_gpu.yaml runs it: one process
        lora_setup = dataclasses.replace(lora_setup, gpus=1)
    setup = peft_setup(setup, peft)
    est = estimate_memory(shape, setup)

    say(f"shala preflight: {n} GPU(s) ({n_from}), "
        + (f"{mem:.1f} GiB each ({mem_from})" if mem is not None else "GPU memory unknown"))
    say()
    say(f"launch config: {launch.accelerate_config or '(none)'}"
        + (f" -> {launch.ds_config_file}" if launch.ds_config_file else ""))
    for c in launch.checks:
        say(f"  checked: {c}")
    if setup.deepspeed:
        say(f"  DeepSpeed ZeRO stage {setup.zero_stage}, offload_optimizer {launch.offload_optimizer}, "
            f"offload_param {launch.offload_param}")
    for note in launch.notes:
        say(f"  note: {note}")
    for prob in launch.problems:
        say(f"  PROBLEM: {prob}")
    if launch.accelerate_config and not launch.problems:
        say("  launch config OK")
    say()
    # what would fail at the first step, after the model has loaded
    before_step = (vllm_model_problems(config, cfg_dict.get("model_type"))
                   + toolchain_problems(cuda=n_seen > 0))
    say("before the first step: rollout engine" + (", C compiler and libcuda for TRL's Triton kernels"
                                                   if n_seen else " (no CUDA here: no toolchain to check)"))
    for prob in before_step:
        say(f"  PROBLEM: {prob}")
    if not before_step:
        say("  OK")
    say()
    t = shape.trainable(freeze)
    parts = " + ".join(f"{g} {billions(c)}" for g, c in shape.groups.items())
    say(f"model: {shape.name} ({'thinker, ' if shape.towers else ''}config {shape.source})")
    say(f"  parameters: {parts} = {billions(shape.total)} (counted on the meta device)")
    if shape.towers:
        say(f"  trainable: {billions(t)} ("
            + (f"{' and '.join(shape.towers)} towers frozen: training.freeze_unused_towers true"
               if freeze else "nothing frozen: training.freeze_unused_towers false") + ")")
    say(f"  GRPO: per-device batch {setup.batch} x ({setup.prompt_tokens} prompt + "
        f"{setup.completion_tokens} completion) tokens, {setup.generation_steps} micro-batch(es) per "
        f"generation, activation checkpointing {'on' if setup.gradient_checkpointing else 'off'}")
    say()
    _table(say, est, mem, "per-GPU memory estimate (GiB = 2^30 bytes)"
           + (f", LoRA r={peft['r']} (training.peft):" if peft["enabled"] else ", full fine-tune:"))
    for note in notes:
        say(f"note: {note}")
    say()
    _compare(say, shape, full_setup, lora_setup, mem, peft)
    _lora_cards(say, shape, lora_setup, grpo)
    say()
    rc = _memory_verdict(say, shape, setup, est, mem, mode, launch.ds_config_file)

    say()
    adapters = lora_params(shape, setup.lora_r, setup.lora_targets) if setup.lora_r is not None else None
    disk = check_disk(config, shape, deepspeed=deepspeed, save_16bit=launch.save_16bit, free_gib=free_disk,
                      lora=adapters, only=only)
    for line in disk.report():
        say(line)
    if disk.fits:
        say(f"disk verdict: OK: {disk.need / GIB:.1f} GiB needed, {disk.free / GIB:.1f} GiB free")
    elif not enforce_disk or not training["check_disk"]:
        why = "training.check_disk false" if enforce_disk else "training jobs stop on it (--enforce-disk)"
        say(f"disk verdict: NOT ENOUGH (reported only; {why}): {disk.error()}")
    else:
        say(f"disk verdict: NOT ENOUGH: {disk.error()}")
        rc = rc or EXIT_NO_DISK
    if launch.problems:
        say(f"launch config: {len(launch.problems)} problem(s), see above")
        rc = EXIT_PROBLEMS
    if before_step:
        say(f"before the first step: {len(before_step)} problem(s), see above")
        rc = EXIT_PROBLEMS
    return rc


def _compare(say, shape: ModelShape, full: Setup, lora: Setup, mem: float | None, peft: dict[str, Any]) -> None:
    """Full fine-tune beside LoRA (training.peft), and which of them fits."""
    def verdict(gib: float) -> str:
        return "" if mem is None else ("  fits" if fits_in(gib, mem) else "  does not fit")

    f_gib, l_gib = estimate_memory(shape, full).total_gib, estimate_memory(shape, lora).total_gib
    say(f"full fine-tune vs LoRA, per GPU{f' of {mem:.1f} GiB' if mem is not None else ''}:")
    say(f"  full fine-tune (the paper){'' if peft['enabled'] else ', as configured'}: {f_gib:7.2f} GiB{verdict(f_gib)}")
    procs = "one process" if lora.gpus == 1 else f"{lora.gpus} processes"
    say(f"  LoRA r={peft['r']}, {peft['target_modules']} (training.peft, {procs})"
        f"{', as configured' if peft['enabled'] else ''}: {l_gib:7.2f} GiB{verdict(l_gib)}")
    if mem is None:
        return
    if fits_in(l_gib, mem) and not fits_in(f_gib, mem):
        say("  LoRA fits where the full fine-tune does not"
            + ("" if peft["enabled"] else ": training.peft.enabled true (config/one_gpu.yaml)")
            + "; a departure from the paper, which the report names")
    elif not fits_in(l_gib, mem):
        base = 2 * shape.total / GIB
        say(f"  LoRA does not fit {mem:.1f} GiB either (needs {l_gib / (1 - HEADROOM):.1f} GiB with "
            f"{HEADROOM:.0%} headroom; the frozen bf16 base alone is {base:.1f} GiB): a 48 GB GPU, or a smaller "
            "training.grpo.per_device_train_batch_size / max_completion_length (activations, KV cache)")


# 24 GB-class cards as torch reports them (total_memory / 2^30): A10G and L4
# about 22.0, RTX 3090 / 4090 and A5000 about 23.6.
CARDS = ((22.0, "A10G / L4"), (23.6, "RTX 3090 / 4090 / A5000"))


def _lora_cards(say, shape: ModelShape, lora: Setup, grpo: dict[str, Any]) -> None:
    """What LoRA on one 24 GB-class card gets and, where it does not fit,
    the first smaller generation or micro-batch that does, with the same
    completions per optimizer step (TRL ``steps_per_generation``: fewer
    completions per ``generate``)."""
    lora = dataclasses.replace(lora, gpus=1)   # one card, one process
    gib = estimate_memory(shape, lora).total_gib
    per_step, k = lora.batch * lora.generation_steps, int(grpo.get("num_generations") or 1)
    # (batch, generation steps) that keep per_step and whole prompt groups per generate
    shapes = [(b, d) for b in sorted({lora.batch, 1}, reverse=True) for d in range(per_step // b, 0, -1)
              if (per_step // b) % d == 0 and (b * d) % k == 0 and (b, d) != (lora.batch, lora.generation_steps)]
    say("  LoRA on one 24 GB-class card (GiB as torch reports it; fits = 10% headroom left):")
    for mem, name in CARDS:
        if fits_in(gib, mem):
            say(f"    {name}, {mem:.1f} GiB: fits ({gib:.1f} of {mem * (1 - HEADROOM):.1f} GiB usable)")
            continue
        say(f"    {name}, {mem:.1f} GiB: does not fit ({gib:.1f} GiB, {mem * (1 - HEADROOM):.1f} usable)")
        for b, d in shapes:
            alt = estimate_memory(shape, dataclasses.replace(lora, batch=b, generation_steps=d)).total_gib
            if fits_in(alt, mem):
                batch = "" if b == lora.batch else (f"per_device_train_batch_size {b}, gradient_accumulation_steps "
                                                     f"{per_step // b}, ")
                say(f"      to fit: training.grpo.{batch}steps_per_generation {d} ({b * d} completions per "
                    f"generate, still {per_step} per optimizer step; scale_rewards batch then scales over "
                    f"{b * d}): {alt:.1f} GiB, fits")
                break
        else:
            say("      to fit: a shorter training.grpo.max_completion_length or prompt (--prompt-tokens), "
                "or a 48 GB card")


def _memory_verdict(say, shape: ModelShape, setup: Setup, est: Estimate, mem: float | None, mode: str,
                    ds_file: str | None) -> int:
    """The memory verdict and the fallback training will apply (shala.launch.fit)."""
    if mem is None:
        say(f"verdict: UNKNOWN: {est.total_gib:.1f} GiB per GPU needed; no GPU visible and no --gpu-mem "
            "(or training.gpu_mem_gb) given, so nothing to compare with")
        return EXIT_OK
    want = f"at least {HEADROOM:.0%} headroom wanted: {mem * (1 - HEADROOM):.1f} GiB usable"
    headroom = mem - est.total_gib
    if fits_in(est.total_gib, mem):
        say(f"verdict: FITS: {est.total_gib:.1f} of {mem:.1f} GiB per GPU, {headroom:.1f} GiB headroom ({want})")
        say("fit: none needed")
        return EXIT_OK
    tight = (f"tight: {headroom:.1f} GiB headroom, under {HEADROOM:.0%}; allocator fragmentation and longer "
             "prompts use that up" if headroom >= 0 else f"{-headroom:.1f} GiB over")
    if mode == "off":
        say(f"verdict: NOT CHECKED (training.fit_to_hardware off): {est.total_gib:.1f} GiB per GPU of "
            f"{mem:.1f} ({tight})")
        return EXIT_OK
    choice = choose(shape, setup, mem, mode="fallback", has_ds_file=bool(ds_file))
    if choice.fits and mode == "fallback":
        say(f"verdict: FITS WITH A FALLBACK: as configured {est.total_gib:.1f} GiB per GPU of {mem:.1f} "
            f"({tight}; {want})")
        say(f"fit (training.fit_to_hardware fallback): training applies {describe(choice, mem, setup.gpus)}")
        for name, gib in choice.tried[:-1]:
            say(f"  tried first: {name}: {gib:.1f} GiB (does not fit)")
        say("  (training.fit_to_hardware strict, or --strict, refuses instead)")
        say()
        _table(say, choice.estimate, mem, f"per-GPU memory estimate with fallback {choice.fallback.name}:")
        return EXIT_OK
    say(f"verdict: DOES NOT FIT: {est.total_gib:.1f} GiB per GPU needed, {mem:.1f} GiB available ({tight}; "
        f"{want})" + (". training.fit_to_hardware is strict" if mode == "strict" else ""))
    if choice.fits:
        say(f"fit: training.fit_to_hardware fallback would apply {describe(choice, mem, setup.gpus)}")
    else:
        tried = ", ".join(f"{name} {gib:.1f} GiB" for name, gib in choice.tried)
        say(f"fit: no fallback of the {len(FALLBACKS)} fits (tried: {tried})" if tried else
            f"fit: none of the {len(FALLBACKS)} fallbacks applies (they need DeepSpeed: training.gpus > 1 "
            "with training.accelerate_config)" if not setup.deepspeed else
            f"fit: none of the {len(FALLBACKS)} fallbacks applies to this DeepSpeed setup")
    options = suggestions(shape, setup, mem, ds_file)
    if options:
        say("Settings that would change that:")
    for s in options:
        say(f"  - {s}")
    return EXIT_DOES_NOT_FIT
