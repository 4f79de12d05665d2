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

The job around the trainer (device, fit, model, save, the common run.json
fields) is :mod:`shala.train.job`'s; this module is SFT's recipe for it.
SFT's defaults (logging, no checkpoints, completion-only loss, no gradient
checkpointing) are schema defaults of ``training.warmup_sft``; ``bf16``
alone is chosen here, from the machine (:func:`sft_settings`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .device import Fit, cuda_available
from .job import Job, Recipe, Run, method_spec, run_job
from .run_record import jsonable

SFT_TARGET_DIGITS = 2
# Fields of a method spec / training.warmup_sft that are not SFTConfig fields.
NON_SFT_KEYS = ("enabled",)
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
    """training.warmup_sft (schema defaults filled), then (for a method) the
    GRPO length when ``match_grpo`` and the method's overrides, then
    ``max_steps``.

    ``bf16`` unset follows the machine: on where CUDA is visible, off on a
    CPU (no schema default can say that; an explicit value wins, and on a
    CPU :func:`shala.train.device.adapt_to_device` turns it off anyway).
    """
    cfg = {k: v for k, v in config["training"]["warmup_sft"].items() if k not in NON_SFT_KEYS}
    settings = {"bf16": cuda_available(), **cfg}
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


class SFTRecipe(Recipe):
    """SFT's part of a training job (:mod:`shala.train.job`): prompt-completion
    rows, a text-only trainer, the loss curve as final metrics."""

    kind, recorded_fields = "sft", RECORDED_SFT_FIELDS

    def settings(self) -> dict[str, Any]:
        job = self.job
        return sft_settings(job.config, job.method, job.max_steps, job.dataset)

    def trainer_args(self, settings: dict[str, Any]):
        return make_sft_config(settings, self.job.out_dir, self.job.seed)

    def trainer(self, run: Run, peft_config):
        from datasets import Dataset
        from trl import SFTTrainer

        from ..model.audio import audio_in_play

        job = self.job
        train_ds = Dataset.from_list(sft_rows(run.items, job.prompt, run.tokenizer))
        if audio_in_play(job.config["datasets"][job.dataset], run.model, run.items):
            run.notes.append("SFT saw the transcripts only (no audio path in SFTTrainer)")
        return SFTTrainer(model=run.model, args=run.args, train_dataset=train_ds, processing_class=run.tokenizer,
                          peft_config=peft_config)

    def final_metrics(self, trainer, run: Run) -> dict[str, Any]:
        history = trainer.state.log_history
        losses = [r["loss"] for r in history if "loss" in r]
        return {"loss_first": losses[0] if losses else None, "loss_last": losses[-1] if losses else None,
                "log_history": [jsonable(r) for r in history]}

    def record(self, trainer, run: Run) -> dict[str, Any]:
        return {"target_digits": SFT_TARGET_DIGITS}


def run_sft(config: dict[str, Any], dataset: str, seed: int, data_dir: Path, model_ref: str,
            out_dir: Path, *, max_steps: int | None = None, method: str | None = None,
            fit: Fit | None = None) -> dict[str, Any]:
    """SFT on ``data_dir/train.jsonl`` (the warm-up, or ``method`` with
    trainer ``sft``); writes safetensors weights, tokenizer and ``run.json``
    (last, atomically) to ``out_dir``. ``fit``: the caller's fit to the GPUs
    (:func:`shala.train.device.run_settings`)."""
    return run_job(SFTRecipe(Job(config, dataset, method, seed, Path(data_dir), model_ref, Path(out_dir),
                                 max_steps=max_steps, fit=fit)))
