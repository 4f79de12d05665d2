"""Supervised fine-tuning on the verbalised annotator distribution (TRL's
``SFTTrainer``), in two roles:

- the optional warm-up before GRPO (config ``training.warmup_sft``): a model
  that never emits a parseable answer gets reward 0 on every rollout, every
  GRPO group has zero spread and no gradient; a short SFT on the answer
  format fixes that;
- the method ``sft_soft`` (trainer ``sft`` in the method registry): the
  baseline a reviewer asks for first — is RL needed at all, or does plain
  supervised training on the soft labels do as well? With
  ``match_grpo: true`` it takes the GRPO run's length (optimizer steps,
  prompts per step, learning rate), so it sees the same number of training
  items as each GRPO method.

Examples are standard-format prompt-completion pairs: the prompt string is
exactly what prediction and GRPO feed the model
(:func:`shala.prompts.render_prompt_string`, response prefix included) and
the completion is the rest of the target answer: ``format_distribution(labels,
dist, 2)``, or whole numbers out of 100 when the prompt asks for counts
(``prompt.answer_scale: 100``);
``completion_only_loss=True`` puts the loss on the answer only.

SFT is text-only (TRL's ``SFTTrainer`` has no audio path): on an Omni
model with audio items it trains on the transcript and says so in the
record's notes; the output keeps the source's audio feature extractor, so
GRPO and prediction from it can still feed audio.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..jsonio import write_json
from .device import apply_threads, cuda_available, device_name, finish_distributed, peak_gpu_memory_gib, run_settings
from .grpo import RUN_RECORD, load_train_items, method_spec, prompt_config
from .lora import lora_config, peft_record, save_lora
from .model_setup import base_dtype, freeze_towers, load_for_training, model_component
from .run_record import checkpoint_policy, clean_checkpoints, jsonable, library_versions, zero3_status

log = logging.getLogger(__name__)

SFT_TARGET_DIGITS = 2
# Fields of a method spec / training.warmup_sft that are not SFTConfig fields.
NON_SFT_KEYS = ("enabled",)
SFT_DEFAULTS = {"logging_steps": 10, "save_strategy": "no", "report_to": "none",
                "completion_only_loss": True, "logging_first_step": True,
                "gradient_checkpointing": False}
RECORDED_SFT_FIELDS = ("learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size",
                       "gradient_accumulation_steps", "bf16", "completion_only_loss", "max_length",
                       "optim", "seed", "gradient_checkpointing")


def sft_rows(items: list[dict[str, Any]], prompt_cfg: dict[str, Any], tokenizer) -> list[dict[str, Any]]:
    """Prompt string + the target answer after the response prefix."""
    from ..parsing import format_distribution, format_percent
    from ..prompts import render_prompt_string, response_prefix

    percent = prompt_cfg["answer_scale"] == 100
    rows = []
    for it in items:
        target = (format_percent(it["labels"], it["dist"]) if percent
                  else format_distribution(it["labels"], it["dist"], SFT_TARGET_DIGITS))
        prefix = response_prefix(prompt_cfg, it["labels"])
        if not target.startswith(prefix):
            raise ConfigError(f"prompt.response_prefix {prefix!r} is not the start of the SFT target "
                              f"{target!r}; use 'auto' or the exact opening of the JSON answer")
        rows.append({"prompt": render_prompt_string(tokenizer, it, prompt_cfg),
                     "completion": target[len(prefix):]})
    return rows


def grpo_length(config: dict[str, Any], dataset: str | None = None) -> dict[str, Any]:
    """The SFT settings that match a GRPO run's length on ``dataset``
    (training.grpo with the dataset's ``grpo`` fields): optimizer steps,
    prompts per step (per device) and learning rate."""
    per_dataset = (config["datasets"].get(dataset) or {}).get("grpo") if dataset else None
    g = {**config["training"]["grpo"], **(per_dataset or {})}
    prompts = max(1, int(g["per_device_train_batch_size"]) // int(g["num_generations"]))
    return {"max_steps": int(g["max_steps"]), "num_train_epochs": g["num_train_epochs"],
            "per_device_train_batch_size": prompts,
            "gradient_accumulation_steps": int(g["gradient_accumulation_steps"]),
            "learning_rate": g["learning_rate"]}


def sft_settings(config: dict[str, Any], method: str | None = None,
                 max_steps: int | None = None, dataset: str | None = None) -> dict[str, Any]:
    """training.warmup_sft, then (for a method) the GRPO length when
    ``match_grpo`` and the method's overrides, then ``max_steps``."""
    cfg = dict(config["training"]["warmup_sft"])
    for key in NON_SFT_KEYS:
        cfg.pop(key, None)
    settings = {**SFT_DEFAULTS, "bf16": cuda_available(), **cfg}
    if method is not None:
        spec = method_spec(config, method, trainer="sft")
        if spec["match_grpo"]:
            settings.update(grpo_length(config, dataset))
        settings.update(spec.get("overrides") or {})
    if max_steps is not None:
        settings["max_steps"] = int(max_steps)
    return settings


def make_sft_config(settings: dict[str, Any], out_dir: Path, seed: int):
    from trl import SFTConfig

    unknown = sorted(set(settings) - set(SFTConfig.__dataclass_fields__))
    if unknown:
        raise ConfigError(f"training.warmup_sft / method overrides: not SFTConfig fields: {unknown}")
    return SFTConfig(output_dir=str(Path(out_dir) / "checkpoints"), seed=seed, data_seed=seed, **settings)


def run_sft(config: dict[str, Any], dataset: str, seed: int, data_dir: Path, model_ref: str,
            out_dir: Path, *, max_steps: int | None = None, method: str | None = None) -> dict[str, Any]:
    """SFT on ``data_dir/train.jsonl`` (the warm-up, or ``method`` with
    trainer ``sft``); writes safetensors weights, tokenizer and ``run.json``
    (last, atomically) to ``out_dir``."""
    from datasets import Dataset
    from transformers import set_seed
    from trl import SFTTrainer

    from ..model.audio import audio_in_play, has_audio_tower, save_feature_extractor
    from ..prompts import response_prefix

    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / RUN_RECORD).unlink(missing_ok=True)
    requested = sft_settings(config, method, max_steps, dataset)
    settings, notes, fit = run_settings(config, requested, out_dir)
    threads = apply_threads(config)
    set_seed(seed)
    args = make_sft_config(settings, out_dir, seed)
    prompt_cfg = prompt_config(config, dataset)
    items = load_train_items(data_dir)
    component = model_component(config, model_ref)
    model, tokenizer = load_for_training(model_ref, component=component, freeze_towers=freeze_towers(config),
                                         dtype=base_dtype(config, bool(args.bf16)))
    zero3 = zero3_status(model)
    log.info("rank %d of world size %d: %d of %d parameter tensors partitioned by ZeRO-3",
             args.process_index, args.world_size, zero3["partitioned_tensors"], zero3["tensors"])
    train_ds = Dataset.from_list(sft_rows(items, prompt_cfg, tokenizer))
    if audio_in_play(config["datasets"][dataset], model, items):
        notes = [*notes, "SFT saw the transcripts only (no audio path in SFTTrainer)"]

    peft_config = lora_config(config, model)
    trainer = SFTTrainer(model=model, args=args, train_dataset=train_ds, processing_class=tokenizer,
                         peft_config=peft_config)
    lora = peft_record(config, trainer.model)
    t_train = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - t_train
    if lora is not None:  # the adapters in out_dir/adapter, unmerged (shala.model.adapters)
        save_lora(trainer, out_dir, model_ref)
    else:
        trainer.save_model(str(out_dir))
    losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    full = jsonable(args.to_dict())
    steps = trainer.state.global_step
    record = {
        "kind": "sft", "dataset": dataset, "method": method or "warmup_sft", "seed": seed,
        "model_ref": str(model_ref), "component": component, "data_dir": str(data_dir),
        "n_train_items": len(train_ds), "target_digits": SFT_TARGET_DIGITS, "peft": lora,
        "prompt": prompt_cfg,
        "response_prefix": sorted({response_prefix(prompt_cfg, it["labels"]) for it in items}),
        "sft_config": {"recorded": {f: full.get(f) for f in RECORDED_SFT_FIELDS}, "full": full,
                       "requested": jsonable(requested)},
        "notes": notes, "fit": fit, "global_step": steps, "device": device_name(), "torch_threads": threads,
        "world_size": args.world_size, "zero3": zero3, "peak_gpu_memory_gib": peak_gpu_memory_gib(),
        "versions": library_versions(),
        "timing": {"total_seconds": time.perf_counter() - t0, "train_seconds": train_seconds,
                   "seconds_per_step": train_seconds / steps if steps else None},
        "final_metrics": {"loss_first": losses[0] if losses else None,
                          "loss_last": losses[-1] if losses else None,
                          "log_history": [jsonable(r) for r in trainer.state.log_history]},
    }
    record["checkpoints"] = checkpoint_policy(config)
    if trainer.is_world_process_zero():  # save_model above runs on every process (ZeRO-3 gather)
        tokenizer.save_pretrained(str(out_dir))
        if has_audio_tower(model):
            save_feature_extractor(model_ref, out_dir)
        write_json(out_dir / RUN_RECORD, record)
        clean_checkpoints(out_dir, config)
    finish_distributed()
    return record
