"""Fit a training job to the GPUs it runs on: when the configured setup's
per-GPU estimate (:mod:`shala.launch.gpu_memory`) does not fit, apply the first
fallback of an ordered list that does, rather than stop (or run out of
memory an hour in).

Two callers share :func:`choose`: ``shala preflight`` says which fallback a
job will get, and :func:`fit_to_hardware`, called by training before the
GRPOConfig/SFTConfig is built, applies it. :func:`suggestions` lists, for a
job that does not fit, the settings that would (each with its estimate).

Fallbacks
---------
"Fits" means the estimate leaves :data:`~shala.launch.gpu_memory.HEADROOM` (10 %) of
the smallest GPU's memory free: the model does not count allocator
fragmentation. The fallbacks, in order (the first that fits is applied, on
top of the configured settings; one that changes nothing or does not apply
is skipped):

1. ``no_gather``: ``ds3_gather_for_generation: false`` in the GRPOConfig.
   Generation gathers each layer's shards as it goes instead of one full
   bf16 copy (2 B x parameters per GPU): slower rollouts, nothing else.
2. ``offload_optimizer``: DeepSpeed ``zero_optimization.offload_optimizer.device:
   cpu``. fp32 master weights and Adam moments (12 B x trainable / GPUs per
   process; under ZeRO-3 also the bf16 gradient partitions, 2 B x trainable /
   GPUs) live in host RAM and DeepSpeed's CPU Adam steps them: slower
   steps, host RAM, DeepSpeed's ``cpu_adam`` op (built on first use).
3. ``offload_optimizer+no_gather``: both of the above.
4. ``offload_param``: parameter offload too (``offload_param.device: cpu``;
   ZeRO-3 only): the weights stream from host RAM at every forward.
5. ``offload_param+no_gather``: all three.

With colocated vLLM rollouts (``training.grpo.use_vllm``), whose engine
holds ``vllm_gpu_memory_utilization`` of each GPU, the generation gather
does not apply (the policy does not generate) and three more take its
place, tried in the same cost order:

6. ``vllm_sleep``: ``training.grpo.vllm_enable_sleep_mode: true``: the
   engine frees its weights and KV cache while the policy trains (level 2),
   so its reserve counts in the generation phase only; the weights are
   pushed again and the cache remade at every generation (tried first);
7. ``offload_optimizer+vllm_sleep`` (after 2);
8. ``offload_param+vllm_sleep`` (after 4).

Cheapest first: 1 costs rollout speed only, 2-3 add host RAM and a CPU
optimizer step, 4-5 PCIe traffic at every forward. The gather fallbacks
apply to GRPO under ZeRO-3 only (SFT does not generate), the offloads under
DeepSpeed with a DeepSpeed json (ZeRO >= 1; parameters: ZeRO-3); without
DeepSpeed (one GPU) there is none.

``training.fit_to_hardware`` chooses the policy: ``fallback`` (default)
applies the first that fits; ``strict`` applies none and stops a job whose
configured setup does not fit (preflight exit 3, :class:`ConfigError` in
training); ``off`` checks nothing. When no fallback fits, both ``fallback``
and ``strict`` stop.

An offload fallback writes a copy of the DeepSpeed json into the run's
folder (:data:`DS_CONFIG_NAME`) and points ``ACCELERATE_DEEPSPEED_CONFIG_FILE``
at it: ``accelerate launch`` hands each process the json's path in that
variable (accelerate 1.15 ``utils/launch.py`` ``prepare_deepspeed_cmd_env``),
and ``TrainingArguments.__post_init__`` (transformers 5.23) builds
``DeepSpeedPlugin()``, which reads it (``accelerate/utils/dataclasses.py``),
so the variable must be set before the GRPOConfig. The copy also gets an
``optimizer`` section (AdamW, every value ``"auto"``: filled from the
GRPOConfig's lr, betas, eps, weight decay) when it has none: DeepSpeed
refuses ZeRO-Offload with the Trainer's torch optimizer
(``zero_force_ds_cpu_optimizer``), and its AdamW on offload is
``DeepSpeedCPUAdam``, the same update as ``adamw_torch``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, ShalaError
from ..jsonio import write_json
from .gpu_memory import GIB, HEADROOM, MAX_GPUS, Estimate, Setup, estimate_memory, fits_in, peft_setup, setup_for, smallest_gpus
from .launch_check import LaunchCheck, check_ds_values, first_line
from .model_shape import ModelShape, count_parameters, model_config_dict

FIT_MODES = ("fallback", "strict", "off")
DS_CONFIG_NAME = "ds_config.fit.json"
SMALL_SUB_GROUP = 100_000_000   # config/ds_zero3.json's sub_group_size (shala.launch.zero3_memory)
DS_ENV = "ACCELERATE_DEEPSPEED_CONFIG_FILE"
# DeepSpeed AdamW, its values filled from the TrainingArguments (transformers'
# HfTrainerDeepSpeedConfig.trainer_config_process).
DS_ADAMW = {"type": "AdamW", "params": {"lr": "auto", "betas": "auto", "eps": "auto", "weight_decay": "auto"}}


@dataclass(frozen=True)
class Fallback:
    name: str
    changes: tuple[tuple[str, bool], ...]   # Setup fields it sets
    settings: str                           # what it sets, as a user would write it
    cost: str
    rank: int = 0                           # the cost order :func:`choose` tries them in (module doc)


_GATHER = (("gather_for_generation", False),)
_OPT = (("offload_optimizer", True),)
_PARAM = (("offload_optimizer", True), ("offload_param", True))
_DS = "the DeepSpeed json's zero_optimization"
_SLEEP = (("vllm_sleep", True),)
_SLEEPS = "training.grpo.vllm_enable_sleep_mode true"
FALLBACKS = (
    Fallback("no_gather", _GATHER, "training.grpo.ds3_gather_for_generation false", "slower rollouts", 1),
    Fallback("offload_optimizer", _OPT, f"{_DS}.offload_optimizer.device cpu",
             "optimizer state in host RAM, Adam step on the CPU", 2),
    Fallback("offload_optimizer+no_gather", _OPT + _GATHER,
             f"{_DS}.offload_optimizer.device cpu and ds3_gather_for_generation false",
             "optimizer on the CPU and slower rollouts", 3),
    Fallback("offload_param", _PARAM, f"{_DS}.offload_optimizer.device and offload_param.device cpu",
             "optimizer and weights in host RAM, weights streamed at every forward", 4),
    Fallback("offload_param+no_gather", _PARAM + _GATHER,
             f"{_DS}.offload_optimizer.device and offload_param.device cpu, ds3_gather_for_generation false",
             "optimizer and weights in host RAM and slower rollouts", 5),
)
#: with colocated vLLM rollouts (module doc): numbered 6-8, tried by ``rank`` among the others
VLLM_FALLBACKS = (
    Fallback("vllm_sleep", _SLEEP, _SLEEPS, "vLLM's weights pushed and KV cache remade at every generation", 0),
    Fallback("offload_optimizer+vllm_sleep", _OPT + _SLEEP, f"{_DS}.offload_optimizer.device cpu and {_SLEEPS}",
             "optimizer on the CPU and vLLM asleep while training", 2),
    Fallback("offload_param+vllm_sleep", _PARAM + _SLEEP,
             f"{_DS}.offload_optimizer.device and offload_param.device cpu, {_SLEEPS}",
             "optimizer and weights in host RAM and vLLM asleep while training", 4),
)


@dataclass
class Choice:
    """What :func:`choose` decided: ``fallback`` None and ``fits`` true when
    the configured setup fits; ``fits`` false when nothing does (or strict)."""

    configured: Estimate
    setup: Setup
    estimate: Estimate
    fits: bool
    fallback: Fallback | None = None
    tried: list[tuple[str, float]] = dataclasses.field(default_factory=list)


def applies(fb: Fallback, setup: Setup, generation: bool, has_ds_file: bool = True) -> bool:
    """Whether ``fb`` can run under ``setup`` and changes something."""
    fields = dict(fb.changes)
    if "vllm_sleep" in fields and not (setup.vllm and generation):
        return False
    if fb.changes == _SLEEP:  # the only one without DeepSpeed
        return not setup.vllm_sleep
    if not setup.deepspeed:
        return False
    if "gather_for_generation" in fields and not (generation and setup.zero_stage == 3
                                                  and setup.gather_for_generation and not setup.vllm):
        return False
    if fields.get("offload_optimizer") and not (has_ds_file and setup.zero_stage >= 1):
        return False
    if fields.get("offload_param") and setup.zero_stage != 3:
        return False
    return dataclasses.replace(setup, **fields) != setup


def choose(shape: ModelShape, setup: Setup, mem_gib: float, *, mode: str = "fallback",
           generation: bool = True, has_ds_file: bool = True) -> Choice:
    """The configured setup when it fits, else (mode ``fallback``) the first
    fitting fallback (module doc); ``strict`` tries none."""
    est = estimate_memory(shape, setup)
    if fits_in(est.total_gib, mem_gib):
        return Choice(est, setup, est, fits=True)
    choice = Choice(est, setup, est, fits=False)
    if mode != "fallback":
        return choice
    seen = {setup}
    for fb in sorted(FALLBACKS + VLLM_FALLBACKS, key=lambda f: f.rank):
        if not applies(fb, setup, generation, has_ds_file):
            continue
        alt = dataclasses.replace(setup, **dict(fb.changes))
        if alt in seen:
            continue
        seen.add(alt)
        alt_est = estimate_memory(shape, alt)
        choice.tried.append((fb.name, alt_est.total_gib))
        if fits_in(alt_est.total_gib, mem_gib):
            return Choice(est, alt, alt_est, fits=True, fallback=fb, tried=choice.tried)
    return choice


def fit_mode(config: dict[str, Any], strict: bool = False) -> str:
    mode = "strict" if strict else str(config["training"]["fit_to_hardware"])
    if mode not in FIT_MODES:
        raise ConfigError(f"training.fit_to_hardware: {mode!r} is not one of {FIT_MODES}")
    return mode


def describe(choice: Choice, mem_gib: float, gpus: int) -> str:
    """One line: the decision and its estimate."""
    est, cfg = choice.estimate.total_gib, choice.configured.total_gib
    room = f"{est:.1f} of {mem_gib:.1f} GiB per GPU x {gpus}, {mem_gib - est:.1f} GiB headroom"
    if not choice.fits:
        return (f"does not fit: {cfg:.1f} GiB per GPU as configured, at most {mem_gib * (1 - HEADROOM):.1f} "
                f"of {mem_gib:.1f} GiB wanted ({HEADROOM:.0%} headroom)")
    if choice.fallback is None:
        return f"fits as configured: {room}"
    n = [fb.name for fb in FALLBACKS + VLLM_FALLBACKS].index(choice.fallback.name) + 1
    return (f"fallback {n} {choice.fallback.name} ({choice.fallback.settings}; {choice.fallback.cost}): {room} "
            f"(configured: {cfg:.1f} GiB)")


def fit_record(choice: Choice, mode: str, mem_gib: float, gpus: int, gpu_name: str | None,
               ds_config: str | None) -> dict[str, Any]:
    """The JSON-safe record of the decision (run.json key ``fit``)."""
    return {"checked": True, "mode": mode, "fits": choice.fits,
            "fallback": choice.fallback.name if choice.fallback else None,
            "settings": choice.fallback.settings if choice.fallback else None,
            "estimate_gib": round(choice.estimate.total_gib, 2),
            "configured_gib": round(choice.configured.total_gib, 2),
            "gpus": gpus, "gpu_mem_gib": round(mem_gib, 2), "gpu_name": gpu_name, "headroom": HEADROOM,
            "tried": [[name, round(gib, 2)] for name, gib in choice.tried], "ds_config": ds_config}


def offload_ds_config(ds: dict[str, Any], *, param: bool) -> dict[str, Any]:
    """A copy of the DeepSpeed json with the optimizer (and, with ``param``,
    the parameters) offloaded to the CPU and a DeepSpeed optimizer (module doc)."""
    out = copy.deepcopy(ds)
    zero = out.setdefault("zero_optimization", {})
    keys = ("offload_optimizer", "offload_param") if param else ("offload_optimizer",)
    for key in keys:
        zero[key] = {**(zero.get(key) or {}), "device": "cpu", "pin_memory": True}
    out.setdefault("optimizer", copy.deepcopy(DS_ADAMW))
    return out


def detect_cuda() -> tuple[int, float, str] | None:
    """(processes of this job, smallest device memory in GiB, device name),
    or None without CUDA. Under a launcher WORLD_SIZE counts the processes."""
    try:
        import torch
        if not torch.cuda.is_available():
            return None
        props = [torch.cuda.get_device_properties(i) for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001 - a broken CUDA setup means "no GPU here"
        return None
    if not props:
        return None
    n = int(os.environ.get("WORLD_SIZE") or len(props))
    return n, min(p.total_memory for p in props) / GIB, props[0].name


def _ds_json_path(config: dict[str, Any]) -> str | None:
    """The DeepSpeed json this process uses: the launcher's variable, else
    the one ``training.accelerate_config`` names."""
    if os.environ.get(DS_ENV, "none") != "none":
        return os.environ[DS_ENV]
    acc = config["training"]["accelerate_config"]
    if not acc or not Path(acc).is_file():
        return None
    import yaml

    section = (yaml.safe_load(Path(acc).read_text(encoding="utf-8")) or {}).get("deepspeed_config") or {}
    return section.get("deepspeed_config_file")


def fit_to_hardware(config: dict[str, Any], settings: dict[str, Any],
                    out_dir: Path) -> tuple[dict[str, Any], list[str], dict[str, Any] | None]:
    """Apply the first fitting fallback (module doc) to a training job's
    GRPOConfig/SFTConfig ``settings`` (SFT: no ``num_generations``); call it
    before the config is built. Returns (settings, notes to log and record,
    the ``fit`` record for run.json, None without CUDA). Raises ConfigError
    when nothing fits, or in strict mode when the configured setup does not."""
    cuda = detect_cuda()
    if cuda is None:
        return settings, [], None
    n, mem, gpu_name = cuda
    mode = fit_mode(config)
    if mode == "off":
        return settings, ["fit: training.fit_to_hardware off, memory not checked"], {
            "checked": False, "mode": mode, "reason": "training.fit_to_hardware off"}
    generation = "num_generations" in settings
    deepspeed = os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
    ds_path = _ds_json_path(config) if deepspeed else None
    ds: dict[str, Any] = {}
    launch = LaunchCheck(accelerate_config=None, deepspeed=deepspeed)
    try:
        if ds_path:
            ds = json.loads(Path(ds_path).read_text(encoding="utf-8"))
            check_ds_values(ds_path, ds, launch)
        elif deepspeed:
            launch.zero_stage = int(os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE") or 3)
        cfg_dict, source = model_config_dict(config)
        model_cfg = config["model"]
        shape = count_parameters(cfg_dict, name=str(model_cfg.get("id") or model_cfg.get("path") or "model"),
                                 source=source)
    except (OSError, ValueError, ShalaError) as exc:
        reason = f"memory not checked: {first_line(exc)}"
        return settings, [f"fit: {reason}"], {"checked": False, "mode": mode, "reason": reason}
    if launch.problems:
        raise ConfigError("; ".join(str(p) for p in launch.problems))
    setup = setup_for(settings, gpus=n, deepspeed=deepspeed, zero_stage=launch.zero_stage,
                      offload_optimizer=launch.offload_optimizer != "none",
                      offload_param=launch.offload_param != "none",
                      freeze_towers=bool(config["training"]["freeze_unused_towers"]), generation=generation,
                      zero3=launch.zero3, gpu_mem_gib=mem)
    setup = peft_setup(setup, config["training"]["peft"])  # LoRA: frozen bf16 base, adapters train
    choice = choose(shape, setup, mem, mode=mode, generation=generation, has_ds_file=bool(ds_path))
    if not choice.fits:
        tried = ", ".join(f"{name} {gib:.1f} GiB" for name, gib in choice.tried)
        raise ConfigError(
            f"training does not fit {n} x {gpu_name} ({mem:.1f} GiB): {describe(choice, mem, n)}"
            + (f"; fallbacks tried: {tried}" if tried else "")
            + ("; training.fit_to_hardware is strict (fallback would apply the first that fits)"
               if mode == "strict" else "") + "; run `shala preflight` for the settings that would fit")
    settings = dict(settings)
    new_ds = None
    if choice.fallback is not None:
        fields = dict(choice.fallback.changes)
        if "gather_for_generation" in fields:
            settings["ds3_gather_for_generation"] = False
        if "vllm_sleep" in fields:
            settings["vllm_enable_sleep_mode"] = True
        if "offload_optimizer" in fields:
            path = Path(out_dir) / DS_CONFIG_NAME
            write_json(path, offload_ds_config(ds, param=bool(fields.get("offload_param"))))
            new_ds = str(path.resolve())
            os.environ[DS_ENV] = new_ds
    record = fit_record(choice, mode, mem, n, gpu_name, new_ds or ds_path)
    notes = [f"fit: {describe(choice, mem, n)}"]
    if new_ds:
        notes.append(f"fit: DeepSpeed config {new_ds} (copy of {ds_path} with the offload), "
                     f"{DS_ENV} points at it")
    return settings, notes, record


def suggestions(shape: ModelShape, setup: Setup, mem_gib: float, ds_file: str | None) -> list[str]:
    """Settings that would make the estimate fit, each with its estimate."""
    ds = ds_file or "the DeepSpeed json"
    options: list[tuple[str, Setup]] = []
    if setup.deepspeed and not setup.offload_optimizer and setup.zero_stage >= 1:
        options.append((f"optimizer offload: {ds} zero_optimization.offload_optimizer.device \"cpu\" "
                        "(needs host RAM, slower steps)", dataclasses.replace(setup, offload_optimizer=True)))
    if shape.towers and not setup.freeze_towers:
        options.append(("freeze the unused towers: training.freeze_unused_towers true",
                        dataclasses.replace(setup, freeze_towers=True)))
    if not setup.gradient_checkpointing:
        options.append(("activation (gradient) checkpointing: training.grpo.activation_checkpointing true",
                        dataclasses.replace(setup, gradient_checkpointing=True)))
    if setup.vllm and not setup.vllm_sleep:
        options.append((f"vLLM asleep while the policy trains: {_SLEEPS} (weights re-pushed at every generation)",
                        dataclasses.replace(setup, vllm_sleep=True)))
    if setup.deepspeed and setup.zero_stage == 3 and setup.gather_for_generation and not setup.vllm:
        options.append(("no full-model gather for generation: training.grpo.ds3_gather_for_generation "
                        "false (much slower generation)",
                        dataclasses.replace(setup, gather_for_generation=False)))
    zero3 = setup.zero3
    if (setup.deepspeed and setup.zero_stage == 3 and not setup.offload_optimizer
            and zero3.sub_group_size > SMALL_SUB_GROUP):
        options.append((f"a smaller optimizer-step sub-group: {ds} zero_optimization.sub_group_size "
                        f"{SMALL_SUB_GROUP:.0e} (shala.launch.zero3_memory)", dataclasses.replace(
                            setup, zero3=dataclasses.replace(zero3, sub_group_size=SMALL_SUB_GROUP))))

    def verdict(alt: Setup) -> str:
        est = estimate_memory(shape, alt).total_gib
        return f"{est:.1f} GiB ({'fits' if fits_in(est, mem_gib) else 'does not fit'})"

    out = [f"{text}: {verdict(alt)}" for text, alt in options]
    combo = setup
    for _, alt in options:
        combo = dataclasses.replace(combo, **{f.name: getattr(alt, f.name) for f in dataclasses.fields(Setup)
                                              if getattr(alt, f.name) != getattr(setup, f.name)})
    if len(options) > 1:
        out.append(f"all of the above: {verdict(combo)}")
    if setup.deepspeed:
        n = smallest_gpus(shape, setup, mem_gib)
        if n:
            out.append(f"more GPUs: training.gpus {n}, the smallest count that fits with the current "
                       f"settings: {verdict(dataclasses.replace(setup, gpus=n))}")
        else:
            out.append(f"more GPUs alone: no count up to {MAX_GPUS} fits (the unsharded part, the generation "
                       "gather or activations, KV cache and overhead, stays on every GPU)")
        others = [(label, alt) for label, alt in
                  [("optimizer offload", dataclasses.replace(setup, offload_optimizer=True)),
                   ("all of the above", combo)] if alt != setup]
        seen = set()
        for label, alt in others:
            n = smallest_gpus(shape, alt, mem_gib)
            if n and n > setup.gpus and alt not in seen:
                out.append(f"more GPUs with {label}: training.gpus {n}")
            seen.add(alt)
    return out
