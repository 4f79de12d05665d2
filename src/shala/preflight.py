"""``shala preflight``: check the launch config and estimate per-GPU memory
before a GPU training job (SPEC §8).

Run it where the job will run (the repo root: accelerate resolves the
DeepSpeed json relative to the directory ``accelerate launch`` runs in)::

    shala preflight --config config.yaml [--config overlay.yaml] [--gpus N] [--gpu-mem GIB]

Exit status: 0 when the estimate fits (or the GPU memory is unknown: the
estimate is printed with a note), 3 when it does not fit (the report names
the settings that would make it fit), 2 when the launch config has problems
(each named by file and field) or the config cannot be read.

What it checks and how it estimates lives in three modules, each with its
own job, and this one gathers their inputs from the config and prints the
report:

- :mod:`shala.launch_check`: ``training.accelerate_config`` and its
  DeepSpeed json, by accelerate's own code ("Launch config" there);
- :mod:`shala.model_shape`: the model's parameter counts and dimensions,
  from its config on the ``meta`` device;
- :mod:`shala.memory`: the per-GPU memory model ("Memory model (per GPU)"
  there) and the settings that would make a job fit.

Their public names stay importable from here.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, TextIO

from .errors import ConfigError
from .launch_check import (DS_FILE_EXCLUSIVE_FIELDS, OFFLOAD_DEVICES, LaunchCheck, Problem,
                           check_launch_config)
from .memory import (GIB, MAX_GPUS, OVERHEAD_GIB, PROMPT_TOKENS, Estimate, Line, Setup, _b,
                     estimate_memory, fits, smallest_gpus, suggestions)
from .model_shape import (SHIPPED_CONFIGS, ModelShape, count_parameters, model_config_dict,
                          shipped_config_path)

__all__ = [
    "DS_FILE_EXCLUSIVE_FIELDS", "EXIT_DOES_NOT_FIT", "EXIT_OK", "EXIT_PROBLEMS", "GIB", "MAX_GPUS",
    "OFFLOAD_DEVICES", "OVERHEAD_GIB", "PROMPT_TOKENS", "SHIPPED_CONFIGS", "TIGHT", "Estimate", "LaunchCheck",
    "Line", "ModelShape", "Problem", "Setup", "check_launch_config", "count_parameters", "detect_gpus",
    "estimate_memory", "fits", "model_config_dict", "run_preflight", "shipped_config_path", "smallest_gpus",
    "suggestions",
]

EXIT_OK, EXIT_PROBLEMS, EXIT_DOES_NOT_FIT = 0, 2, 3
TIGHT = 0.10           # headroom below this fraction of GPU memory is "tight"


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


def run_preflight(config: dict[str, Any], *, gpus: int | None = None, gpu_mem: float | None = None,
                  model_config: str | Path | None = None, prompt_tokens: int = PROMPT_TOKENS,
                  out: TextIO | None = None) -> int:
    """Print the launch-config check and the per-GPU memory estimate; return
    the exit status (module doc)."""
    out = out or sys.stdout

    def say(text: str = "") -> None:
        print(text, file=out)

    training = config.get("training") or {}
    grpo = dict(training.get("grpo") or {})
    n_seen, mem_seen, gpu_name = detect_gpus()
    notes: list[str] = []
    if gpus is not None:
        n, n_from = gpus, "--gpus"
    elif int(training.get("gpus") or 0) > 0:
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
    elif training.get("gpu_mem_gb"):
        mem, mem_from = float(training["gpu_mem_gb"]), "training.gpu_mem_gb"
    else:
        mem, mem_from = None, "unknown"
    if mem is not None and mem <= 0:
        raise ConfigError(f"--gpu-mem must be positive, not {mem}")

    acc = training.get("accelerate_config")
    launch = check_launch_config(acc, gpus=n, grpo=grpo)
    if acc and n <= 1:
        launch.notes.append("1 GPU: the workflow runs plain `shala` (no accelerate launch, no DeepSpeed), "
                            "so the estimate is for plain training")

    cfg_dict, cfg_source = model_config_dict(config, model_config)
    model_cfg = config.get("model") or {}
    name = str(model_cfg.get("id") or model_cfg.get("path") or model_cfg.get("name") or "model")
    shape = count_parameters(cfg_dict, name=name, source=cfg_source)
    freeze = bool(training.get("freeze_unused_towers", True))
    setup = Setup(
        gpus=n, deepspeed=launch.deepspeed and n > 1, zero_stage=launch.zero_stage,
        offload_optimizer=launch.offload_optimizer != "none", offload_param=launch.offload_param != "none",
        freeze_towers=freeze, batch=int(grpo.get("per_device_train_batch_size", 1)),
        generation_steps=int(grpo.get("steps_per_generation") or grpo.get("gradient_accumulation_steps", 1)),
        prompt_tokens=prompt_tokens, completion_tokens=int(grpo.get("max_completion_length", 128)),
        gradient_checkpointing=bool(grpo["activation_checkpointing"] if grpo.get("activation_checkpointing")
                                    is not None else grpo.get("gradient_checkpointing", True)),
        gather_for_generation=bool(grpo.get("ds3_gather_for_generation", True)))
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
    t = shape.trainable(freeze)
    parts = " + ".join(f"{g} {_b(c)}" for g, c in shape.groups.items())
    say(f"model: {shape.name} ({'thinker, ' if shape.towers else ''}config {shape.source})")
    say(f"  parameters: {parts} = {_b(shape.total)} (counted on the meta device)")
    if shape.towers:
        say(f"  trainable: {_b(t)} ("
            + (f"{' and '.join(shape.towers)} towers frozen: training.freeze_unused_towers true"
               if freeze else "nothing frozen: training.freeze_unused_towers false") + ")")
    say(f"  GRPO: per-device batch {setup.batch} x ({setup.prompt_tokens} prompt + "
        f"{setup.completion_tokens} completion) tokens, {setup.generation_steps} micro-batch(es) per "
        f"generation, activation checkpointing {'on' if setup.gradient_checkpointing else 'off'}")
    say()
    say("per-GPU memory estimate (GiB = 2^30 bytes):")
    width = max(len(line.label) for line in est.lines)
    for line in est.lines:
        say(f"  {line.label:<{width}}  {line.bytes / GIB:7.2f}   {line.formula}")
    say(f"  {'total':<{width}}  {est.total_gib:7.2f}"
        + (f"   of {mem:.1f} GiB" if mem is not None else ""))
    for note in notes:
        say(f"note: {note}")
    say()

    if mem is None:
        say(f"verdict: UNKNOWN: {est.total_gib:.1f} GiB per GPU needed; no GPU visible and no --gpu-mem "
            "(or training.gpu_mem_gb) given, so nothing to compare with")
        rc = EXIT_OK
    elif est.total_gib <= mem:
        headroom = mem - est.total_gib
        tight = headroom < TIGHT * mem
        say(f"verdict: FITS: {est.total_gib:.1f} of {mem:.1f} GiB per GPU, {headroom:.1f} GiB headroom"
            + (" (tight: under 10 %; allocator fragmentation and longer prompts can use that up)"
               if tight else ""))
        rc = EXIT_OK
    else:
        say(f"verdict: DOES NOT FIT: {est.total_gib:.1f} GiB per GPU needed, {mem:.1f} GiB available. "
            "Settings that would change that:")
        for s in suggestions(shape, setup, mem, launch.ds_config_file):
            say(f"  - {s}")
        rc = EXIT_DOES_NOT_FIT
    if launch.problems:
        say(f"launch config: {len(launch.problems)} problem(s), see above")
        rc = EXIT_PROBLEMS
    return rc
