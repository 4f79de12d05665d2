"""The skeleton of every training job, GRPO (:mod:`shala.train.grpo`) and
SFT (:mod:`shala.train.sft`) alike.

Why one skeleton: both trainers must adapt to the machine, load the model,
save it and describe themselves in ``run.json`` the same way, so that their
records compare and a fix to one reaches the other. A trainer is a
:class:`Recipe` (its settings, checks, TRL config, trainer with its dataset
rows, and its own record fields); :func:`run_job` does the rest, in order:

1. ``out_dir`` made and its ``run.json`` removed (the marker of a finished
   run, written last, atomically);
2. the recipe's settings and checks, before any model loads;
3. the device adaptation and the caller's fit to the GPUs
   (:func:`shala.train.device.run_settings`), torch threads, the seed;
4. the TRL config, before the model (ZeRO-3 partitions at load);
5. the model (Omni thinker, frozen towers, LoRA's base dtype) and the items;
6. the recipe's trainer, given LoRA's ``peft_config``; training, resumed
   from the last checkpoint for a recipe that resumes;
7. final weights (or LoRA adapters), tokenizer, Omni feature extractor;
8. ``run.json`` on the main process, finished checkpoints removed, the
   process group torn down.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..jsonio import read_jsonl, write_json
from ..provenance import library_versions
from .device import Fit, apply_threads, device_name, finish_distributed, peak_gpu_memory_gib, run_settings
from .lora import lora_config, peft_record, save_lora
from .model_setup import base_dtype, freeze_towers, load_for_training, model_component
from .run_record import checkpoint_policy, clean_checkpoints, jsonable, zero3_status
from .trainlog import checkpoint_step, last_checkpoint

log = logging.getLogger(__name__)

RUN_RECORD = "run.json"
WARMUP = "warmup_sft"  # run.json's method of the warm-up (an SFT run of no method)


# --------------------------------------------------------------- config

def method_spec(config: dict[str, Any], method: str, trainer: str = "grpo") -> dict[str, Any]:
    """The method's registry entry; it must use ``trainer``."""
    try:
        spec = config["methods"][method]
    except KeyError:
        known = ", ".join(config["methods"])
        raise ConfigError(f"unknown method {method!r}; known: {known}") from None
    if spec["trainer"] != trainer:
        raise ConfigError(f"method {method!r} has trainer {spec['trainer']!r}, not {trainer!r}")
    return spec


def prompt_config(config: dict[str, Any], dataset: str) -> dict[str, Any]:
    try:
        return config["datasets"][dataset]["prompt"]
    except KeyError:
        raise ConfigError(f"datasets.{dataset}.prompt is missing") from None


def load_train_items(data_dir: Path) -> list[dict[str, Any]]:
    """``data_dir/train.jsonl`` (a config error when empty)."""
    items = read_jsonl(Path(data_dir) / "train.jsonl")
    if not items:
        raise ConfigError(f"{Path(data_dir) / 'train.jsonl'}: no training items")
    return items


# ----------------------------------------------------------------- job

@dataclass
class Job:
    """One training run as its caller asks for it."""

    config: dict[str, Any]
    dataset: str
    method: str | None  # None: the warm-up
    seed: int
    data_dir: Path
    model_ref: str  # the base model, recorded even when training starts from init_from
    out_dir: Path
    max_steps: int | None = None
    init_from: Path | None = None  # a warm-up run to start from
    fit: Fit | None = None  # the caller's fit to the GPUs (shala.train.device.run_settings)

    @property
    def source(self) -> str | Path:
        """The weights training starts from."""
        return self.init_from or self.model_ref

    @cached_property
    def prompt(self) -> dict[str, Any]:
        return prompt_config(self.config, self.dataset)


@dataclass
class Run:
    """What the skeleton has made when the recipe builds its trainer."""

    args: Any  # the TRL config (GRPOConfig, SFTConfig)
    model: Any
    tokenizer: Any
    items: list[dict[str, Any]]
    notes: list[str]  # what run.json says about this run's departures; a recipe may add to it
    resume: Path | None  # the checkpoint this run resumes from
    resume_step: int | None

    @property
    def main(self) -> bool:
        return self.args.process_index == 0


class Recipe(ABC):
    """What one trainer adds to the skeleton (module doc)."""

    kind: str  # run.json's ``kind``, and its ``<kind>_config`` key
    recorded_fields: tuple[str, ...]  # TRL config fields recorded apart from the full config
    resumes: bool = False  # resume from out_dir's last checkpoint

    def __init__(self, job: Job):
        self.job = job

    @abstractmethod
    def settings(self) -> dict[str, Any]:
        """The TRL config fields config asks for, before device adaptation."""

    def check(self, requested: dict[str, Any]) -> None:
        """Refuse a job that cannot run, before any model loads."""

    @abstractmethod
    def trainer_args(self, settings: dict[str, Any]):
        """The TRL config (GRPOConfig, SFTConfig) of these settings."""

    @abstractmethod
    def trainer(self, run: Run, peft_config):
        """The TRL trainer, with its dataset rows."""

    def final_metrics(self, trainer, run: Run) -> dict[str, Any]:
        """run.json's ``final_metrics``, once trained and saved."""
        return {}

    def record(self, trainer, run: Run) -> dict[str, Any]:
        """The trainer's own run.json fields; a dict under a common key
        (``timing``) adds to that key's."""
        return {}


# ------------------------------------------------------------ the run

def config_record(args, requested: dict[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    """All TRL config fields as used (JSON-safe), ``fields`` apart, and
    what config asked for (before device adaptation, e.g. bf16)."""
    full = jsonable(args.to_dict())
    return {"recorded": {f: full.get(f) for f in fields}, "full": full, "requested": jsonable(requested)}


def save_final(trainer, tokenizer, out_dir: Path, source: str | Path | None = None,
               lora_base: str | Path | None = None) -> None:
    """Final weights (safetensors; a LoRA run's adapters and ``lora_base``) +
    tokenizer in out_dir, and an Omni ``source``'s audio feature extractor."""
    from ..model.audio import has_audio_tower, save_feature_extractor

    if lora_base is not None:  # the adapters in out_dir/adapter, unmerged (shala.model.adapters)
        save_lora(trainer, out_dir, lora_base)
    else:
        trainer.save_model(str(out_dir))  # on every process (ZeRO-3 gathers)
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(str(out_dir))
        if source is not None and has_audio_tower(trainer.model):
            save_feature_extractor(source, out_dir)


def run_job(recipe: Recipe) -> dict[str, Any]:
    """Run ``recipe``'s job (module doc) and return its run record."""
    from transformers import set_seed

    from ..prompts import response_prefix

    job, config = recipe.job, recipe.job.config
    t0 = time.perf_counter()
    out_dir = Path(job.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / RUN_RECORD).unlink(missing_ok=True)  # the marker appears only when done
    requested = recipe.settings()
    prompt_cfg = job.prompt
    recipe.check(requested)
    settings, notes, fit = run_settings(config, requested, out_dir, job.fit)
    threads = apply_threads(config)
    set_seed(job.seed)
    args = recipe.trainer_args(settings)  # before the model: ZeRO-3 init on load
    component = None if job.init_from else model_component(config, job.model_ref)
    model, tokenizer = load_for_training(job.source, component=component, freeze_towers=freeze_towers(config),
                                         dtype=base_dtype(config, bool(args.bf16)))
    zero3 = zero3_status(model)
    log.info("rank %d of world size %d: %d of %d parameter tensors partitioned by ZeRO-3 (%d elements in all, "
             "%d held here)", args.process_index, args.world_size, zero3["partitioned_tensors"], zero3["tensors"],
             zero3["partitioned_numel"], zero3["local_numel"])
    resume = last_checkpoint(out_dir) if recipe.resumes else None
    run = Run(args, model, tokenizer, load_train_items(job.data_dir), notes, resume,
              checkpoint_step(resume) if resume else None)
    trainer = recipe.trainer(run, lora_config(config, model))
    lora = peft_record(config, trainer.model)

    t_train = time.perf_counter()
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    train_seconds = time.perf_counter() - t_train
    save_final(trainer, tokenizer, out_dir, source=job.source, lora_base=job.model_ref if lora is not None else None)

    steps = trainer.state.global_step - (run.resume_step or 0)
    record = {
        "kind": recipe.kind, "dataset": job.dataset, "method": job.method or WARMUP, "seed": job.seed,
        "model_ref": str(job.model_ref), "component": component, "data_dir": str(job.data_dir),
        "n_train_items": len(run.items), "peft": lora, "prompt": prompt_cfg,
        "response_prefix": sorted({response_prefix(prompt_cfg, it["labels"]) for it in run.items}),
        f"{recipe.kind}_config": config_record(args, requested, recipe.recorded_fields),
        "notes": run.notes, "fit": fit, "global_step": trainer.state.global_step, "device": device_name(),
        "torch_threads": threads, "world_size": args.world_size, "zero3": zero3,
        "peak_gpu_memory_gib": peak_gpu_memory_gib(), "versions": library_versions(),
        "timing": {"total_seconds": time.perf_counter() - t0, "train_seconds": train_seconds,
                   "seconds_per_step": train_seconds / steps if steps else None},
        "checkpoints": checkpoint_policy(config),
    }
    for key, value in recipe.record(trainer, run).items():
        if isinstance(value, dict) and isinstance(record.get(key), dict):
            record[key].update(value)
        else:
            record[key] = value
    record["final_metrics"] = recipe.final_metrics(trainer, run)
    if run.main:
        write_json(out_dir / RUN_RECORD, record)
        clean_checkpoints(out_dir, config)
    finish_distributed()
    return record
