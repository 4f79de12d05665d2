"""Optional supervised warm-up before GRPO (config ``training.warmup_sft``).

Why: GRPO learns only from reward *differences* within a group. A model
that never emits a parseable JSON distribution gets reward 0 on every
rollout, so every group has zero spread and no gradient. A short SFT on
the target format (the item's annotator distribution, verbalised exactly as
the prompt demands) makes the first rollouts parseable.

Examples are conversational prompt-completion pairs ([user prompt],
[assistant = ``format_distribution(labels, dist, digits=2)``]); TRL's
``SFTTrainer`` then computes the loss on the completion tokens only
(``completion_only_loss=True``). We do not use ``assistant_only_loss``: it
needs ``{% generation %}`` markers in the chat template, which neither
SmolLM2's nor Qwen's template has.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .jsonio import read_jsonl, write_json
from .train import (RUN_RECORD, _jsonable, adapt_to_device, apply_threads, cuda_available, device_name,
                    library_versions, load_for_training, model_component)

SFT_TARGET_DIGITS = 2
# Fields of training.warmup_sft that are not SFTConfig fields.
NON_SFT_KEYS = ("enabled",)
SFT_DEFAULTS = {"logging_steps": 10, "save_strategy": "no", "report_to": "none",
                "completion_only_loss": True, "logging_first_step": True}
RECORDED_SFT_FIELDS = ("learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size",
                       "gradient_accumulation_steps", "bf16", "completion_only_loss", "max_length",
                       "optim", "seed")


def sft_rows(items: list[dict[str, Any]], prompt_cfg: dict[str, Any]) -> list[dict[str, Any]]:
    """Conversational prompt-completion examples: the target is the item's
    annotator distribution as the JSON object the prompt asks for."""
    from .parsing import format_distribution
    from .prompts import render_messages

    return [{"prompt": render_messages(it, prompt_cfg),
             "completion": [{"role": "assistant",
                             "content": format_distribution(it["labels"], it["dist"], SFT_TARGET_DIGITS)}]}
            for it in items]


def sft_settings(config: dict[str, Any], max_steps: int | None = None) -> dict[str, Any]:
    cfg = dict((config.get("training") or {}).get("warmup_sft") or {})
    for key in NON_SFT_KEYS:
        cfg.pop(key, None)
    settings = {**SFT_DEFAULTS, "bf16": cuda_available(), **cfg}
    if max_steps is not None:
        settings["max_steps"] = int(max_steps)
    return settings


def make_sft_config(settings: dict[str, Any], out_dir: Path, seed: int):
    from trl import SFTConfig

    unknown = sorted(set(settings) - set(SFTConfig.__dataclass_fields__))
    if unknown:
        raise ConfigError(f"training.warmup_sft: not SFTConfig fields: {unknown}")
    return SFTConfig(output_dir=str(Path(out_dir) / "checkpoints"), seed=seed, data_seed=seed, **settings)


def run_sft(config: dict[str, Any], dataset: str, seed: int, data_dir: Path, model_ref: str,
            out_dir: Path, *, max_steps: int | None = None) -> dict[str, Any]:
    """Supervised warm-up on ``data_dir/train.jsonl``; writes safetensors
    weights, tokenizer and ``run.json`` (last, atomically) to ``out_dir``."""
    from datasets import Dataset
    from transformers import set_seed
    from trl import SFTTrainer

    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / RUN_RECORD).unlink(missing_ok=True)
    requested = sft_settings(config, max_steps)
    settings, notes = adapt_to_device(requested)
    threads = apply_threads(config)
    set_seed(seed)
    args = make_sft_config(settings, out_dir, seed)
    try:
        prompt_cfg = config["datasets"][dataset]["prompt"]
    except KeyError:
        raise ConfigError(f"datasets.{dataset}.prompt is missing") from None
    items = read_jsonl(Path(data_dir) / "train.jsonl")
    train_ds = Dataset.from_list(sft_rows(items, prompt_cfg))
    component = model_component(config, model_ref)
    model, tokenizer = load_for_training(model_ref, component=component)

    trainer = SFTTrainer(model=model, args=args, train_dataset=train_ds, processing_class=tokenizer)
    t_train = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - t_train
    trainer.save_model(str(out_dir))
    losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    full = _jsonable(args.to_dict())
    steps = trainer.state.global_step
    record = {
        "kind": "sft", "dataset": dataset, "seed": seed, "model_ref": str(model_ref),
        "component": component, "data_dir": str(data_dir), "n_train_items": len(train_ds),
        "target_digits": SFT_TARGET_DIGITS,
        "sft_config": {"recorded": {f: full.get(f) for f in RECORDED_SFT_FIELDS}, "full": full,
                       "requested": _jsonable(requested)},
        "notes": notes, "global_step": steps, "device": device_name(), "torch_threads": threads,
        "world_size": args.world_size, "versions": library_versions(),
        "timing": {"total_seconds": time.perf_counter() - t0, "train_seconds": train_seconds,
                   "seconds_per_step": train_seconds / steps if steps else None},
        "final_metrics": {"loss_first": losses[0] if losses else None,
                          "loss_last": losses[-1] if losses else None,
                          "log_history": _jsonable_list(trainer.state.log_history)},
    }
    if trainer.is_world_process_zero():  # save_model above runs on every process (ZeRO-3 gather)
        tokenizer.save_pretrained(str(out_dir))
        write_json(out_dir / RUN_RECORD, record)
    return record


def _jsonable_list(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [_jsonable(r) for r in rows]
