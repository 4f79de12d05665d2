"""GRPO training of one (dataset, method, seed) with TRL's ``GRPOTrainer`` (docs/design.md §5).

Why this module exists rather than a bare TRL script:

- every GRPOConfig field whose default moved across TRL versions is taken
  from config and passed explicitly (:data:`RECORDED_FIELDS`), and the full
  resolved GRPOConfig is written into ``run.json``, so a run can be compared
  with the paper's even after TRL changes its defaults again (TRL 1.16
  defaults: ``loss_type="dapo"``, ``scale_rewards="group"``,
  ``num_generations=8``, ``max_completion_length=512``, ``temperature=1.0``,
  ``beta=0.0``, ``gradient_checkpointing=True``, ``bf16=None`` → True);
- the reward is wrapped to record, per optimizer step, the mean reward, the
  parse rate and the fraction of zero-spread groups (groups whose
  ``num_generations`` rewards are all equal carry no gradient under group
  normalisation), into ``train_log.jsonl`` and the trainer logs;
- an interrupted run resumes from its last checkpoint when rerun with the
  same ``out_dir``; ``run.json`` is written last, atomically, and serves as
  the Snakemake output marker;
- speech + text: when the dataset's items carry audio and the model is an
  Omni model (and the dataset is not ``text_only``), prompts hold the audio
  and :class:`shala.train.audio_grpo.AudioGRPOTrainer` feeds it to generation and
  to the loss; otherwise TRL's own trainer runs, unchanged.

The job around the trainer (device, fit, model, save, the common run.json
fields) is :mod:`shala.train.job`'s; this module is GRPO's recipe for it.

Output layout of ``out_dir``: final weights (``model.safetensors`` + config;
with LoRA the adapters in ``adapter/``, :mod:`shala.train.lora`) + tokenizer,
``checkpoints/checkpoint-N/``, ``train_log.jsonl``, ``run.json``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..jsonio import dumps_line
from ..model.loading import OMNI_TOWER_PREFIXES, model_type_of
from .device import Fit
from .job import Job, Recipe, Run, load_train_items, method_spec, prompt_config, run_job
from .run_record import count_calls, jsonable
from .toolchain import check_toolchain
from .trainlog import CHECKPOINTS, append_log, prepare_log, reward_summary

log = logging.getLogger(__name__)

# docs/design.md §5: passed explicitly to GRPOConfig and recorded in run.json.
RECORDED_FIELDS = (
    "scale_rewards", "loss_type", "max_completion_length", "num_generations", "temperature",
    "beta", "num_train_epochs", "max_steps", "learning_rate", "optim",
    "per_device_train_batch_size", "gradient_accumulation_steps", "bf16", "save_steps",
    "logging_steps", "lr_scheduler_type", "warmup_steps", "max_grad_norm",
    "use_transformers_continuous_batching", "use_vllm",  # the rollout engine (shala.model.engines)
)
TRAIN_LOG = "train_log.jsonl"


# --------------------------------------------------------------------- config

def grpo_settings(config: dict[str, Any], method: str, max_steps: int | None = None,
                  dataset: str | None = None) -> dict[str, Any]:
    """training.grpo (schema defaults filled: save_total_limit,
    logging_first_step, report_to), overlaid with the dataset's ``grpo``
    fields, then the method's overrides (and ``max_steps``).

    Every field of :data:`RECORDED_FIELDS` must be present: a silently
    inherited TRL default is exactly what docs/design.md §5 forbids.
    """
    spec = method_spec(config, method)
    per_dataset = config["datasets"][dataset].get("grpo") if dataset else None  # unset: none
    settings = {**config["training"]["grpo"], **(per_dataset or {}), **(spec.get("overrides") or {})}
    if max_steps is not None:
        settings["max_steps"] = int(max_steps)
    missing = [f for f in RECORDED_FIELDS if f not in settings]
    if missing:
        raise ConfigError(f"training.grpo: missing field(s) {missing} (docs/design.md §5 wants them explicit)")
    return settings


def make_grpo_config(settings: dict[str, Any], out_dir: Path, seed: int):
    """Build the GRPOConfig; unknown keys are a config error, not a TypeError."""
    from trl import GRPOConfig

    known = set(GRPOConfig.__dataclass_fields__)
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ConfigError(f"training.grpo: not GRPOConfig fields: {unknown}")
    return GRPOConfig(output_dir=str(Path(out_dir) / CHECKPOINTS), seed=seed, data_seed=seed,
                      save_strategy="steps", **settings)


# ---------------------------------------------------------------------- data

def train_rows(items: Sequence[dict[str, Any]], prompt_cfg: dict[str, Any], tokenizer, *,
               audio: bool = False) -> list[dict[str, Any]]:
    """Standard-format (string) prompts plus the columns the rewards read.

    The string is the chat-templated prompt with the response prefix
    written (:func:`shala.prompts.render_prompt_string`), exactly what
    ``shala predict`` feeds the model; the ``response_prefix`` column lets
    the reward parse prefix + completion. With ``audio`` the prompt holds
    the audio placeholder and an ``audio`` column the path
    (:mod:`shala.train.audio_grpo` feeds it).
    """
    from ..prompts import render_prompt_string, response_prefix

    return [{"id": str(it["id"]), "prompt": render_prompt_string(tokenizer, it, prompt_cfg, audio=audio),
             "response_prefix": response_prefix(prompt_cfg, it["labels"]),
             "labels": list(it["labels"]), "dist": [float(x) for x in it["dist"]],
             "entropy_norm": float(it["entropy_norm"]),
             **({"audio": str(it["inputs"]["audio"])} if audio else {})} for it in items]


def load_train_dataset(config: dict[str, Any], dataset: str, data_dir: Path, tokenizer, *,
                       items: Sequence[dict[str, Any]] | None = None, audio: bool = False):
    """``data_dir/train.jsonl`` (or ``items``) as a ``datasets.Dataset`` of :func:`train_rows`."""
    from datasets import Dataset

    items = load_train_items(data_dir) if items is None else items
    return Dataset.from_list(train_rows(items, prompt_config(config, dataset), tokenizer, audio=audio))


# ------------------------------------------------------------ reward stats

def zero_spread_fraction(rewards: Sequence[float], num_generations: int) -> float | None:
    """Fraction of consecutive groups of ``num_generations`` whose rewards are
    all equal (None if the batch does not hold whole groups)."""
    g = int(num_generations)
    if not rewards or len(rewards) % g:
        return None
    groups = [rewards[i:i + g] for i in range(0, len(rewards), g)]
    return sum(max(gr) - min(gr) <= 1e-12 for gr in groups) / len(groups)


class RecordingReward:
    """Wraps a reward function and records what it saw, per call.

    TRL calls the reward once per generation batch (per optimizer step with
    the default ``steps_per_generation = gradient_accumulation_steps``) on
    this process's completions; TRL's RepeatSampler puts the
    ``num_generations`` rollouts of a prompt next to each other, so the
    zero-spread fraction is exact on one process, and on several when
    ``per_device_train_batch_size`` is a multiple of ``num_generations``
    (the paper's 4 and 4); it then describes this process's share. Parse
    rate and zero-spread fraction also go to TRL's own logs through its
    ``log_metric`` hook (averaged over processes).
    """

    def __init__(self, fn: Callable[..., list[float]], num_generations: int):
        self.fn = fn
        self.num_generations = num_generations
        self.__name__ = getattr(fn, "__name__", "reward")
        self.pending: list[dict[str, Any]] = []

    def __call__(self, prompts=None, completions=(), **kwargs: Any) -> list[float]:
        from .rewards import parse_completions

        labels = kwargs.get("labels") or [[]] * len(completions)
        dists = parse_completions(completions, labels, kwargs.get("response_prefix"))
        rewards = [float(r) for r in self.fn(prompts=prompts, completions=completions, parsed=dists, **kwargs)]
        parsed = [d is not None for d in dists]
        ent = kwargs.get("entropy_norm") or []
        stats = {"n": len(rewards), "reward_sum": sum(rewards), "parsed": sum(parsed),
                 "entropy_sum": float(sum(ent)) if len(ent) == len(rewards) else None,
                 "zero_spread": zero_spread_fraction(rewards, self.num_generations),
                 "reward_min": min(rewards, default=None), "reward_max": max(rewards, default=None)}
        self.pending.append(stats)
        log_metric = kwargs.get("log_metric")
        if callable(log_metric) and rewards:
            log_metric("parse_rate", stats["parsed"] / stats["n"])
            if stats["zero_spread"] is not None:
                log_metric("zero_spread_frac", stats["zero_spread"])
        return rewards

    def pop_step(self) -> dict[str, Any] | None:
        """Aggregate the calls since the last pop into one step's stats."""
        calls, self.pending = self.pending, []
        n = sum(c["n"] for c in calls)
        if not n:
            return None
        zs = [c["zero_spread"] for c in calls if c["zero_spread"] is not None]
        ent = [c["entropy_sum"] for c in calls]
        return {"reward_mean": sum(c["reward_sum"] for c in calls) / n,
                # mean H~(p) of the step's rollouts: per-step rewards of
                # `shala` scale with it, so read reward trends against it
                "entropy_norm_mean": sum(ent) / n if None not in ent else None,
                "parse_rate": sum(c["parsed"] for c in calls) / n,
                "zero_spread_frac": sum(zs) / len(zs) if zs else None,
                "reward_min": min(c["reward_min"] for c in calls),
                "reward_max": max(c["reward_max"] for c in calls),
                "n_completions": n}


def _step_log_callback(recorder: RecordingReward, log_path: Path):
    """A TrainerCallback appending one ``event: step`` row per optimizer step
    (and the trainer's own log rows) to ``train_log.jsonl``."""
    from transformers import TrainerCallback

    class StepLog(TrainerCallback):
        def __init__(self):
            self.t_step = None
            self.step_seconds: list[float] = []

        def _write(self, state, row):
            if state.is_world_process_zero:
                with log_path.open("a", encoding="utf-8") as fh:
                    fh.write(dumps_line(row) + "\n")

        def on_step_begin(self, args, state, control, **kw):
            if self.t_step is None:
                self.t_step = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            now = time.perf_counter()
            secs = now - self.t_step if self.t_step is not None else None
            self.t_step = now
            if secs is not None:
                self.step_seconds.append(secs)
            stats = recorder.pop_step() or {}
            self._write(state, {"event": "step", "step": state.global_step, "seconds": secs, **stats})

        def on_log(self, args, state, control, logs=None, **kw):
            self._write(state, {"event": "log", "step": state.global_step, **jsonable(logs or {})})

    return StepLog()


# ------------------------------------------------------------------ run

class GRPORecipe(Recipe):
    """GRPO's part of a training job (:mod:`shala.train.job`): rollout checks,
    the reward recorder and step log, audio prompts on an Omni model, the
    constrained answer and its stop tokens, and resuming from a checkpoint."""

    kind, recorded_fields, resumes = "grpo", RECORDED_FIELDS, True

    def settings(self) -> dict[str, Any]:
        job = self.job
        self.spec = method_spec(job.config, job.method)
        return grpo_settings(job.config, job.method, job.max_steps, job.dataset)

    def check(self, requested: dict[str, Any]) -> None:
        from ..model.engines import check_rollout_engine

        job = self.job
        check_rollout_engine(requested, job.dataset, job.prompt, model_type_of(job.model_ref),
                             job.config["datasets"][job.dataset], Path(job.data_dir) / "train.jsonl")
        check_toolchain()

    def trainer_args(self, settings: dict[str, Any]):
        return make_grpo_config(settings, self.job.out_dir, self.job.seed)

    def trainer(self, run: Run, peft_config):
        from trl import GRPOTrainer

        from ..model.audio import audio_features_for
        from ..model.constrained import constrain_generate, constraint_settings
        from ..prompts import stop_token_ids, with_stop_ids
        from .rewards import get_reward
        from .vllm_rollouts import build_trainer

        job, model, tokenizer = self.job, run.model, run.tokenizer
        # speech + text (MSP-Podcast on an Omni model) unless the dataset is text_only
        self.audio = audio_features_for(job.config["datasets"][job.dataset], model, run.items, job.source)
        train_ds = load_train_dataset(job.config, job.dataset, job.data_dir, tokenizer, items=run.items,
                                      audio=self.audio is not None)
        labels = train_ds[0]["labels"]
        self.constrained = constraint_settings(job.prompt, labels)
        if self.constrained:
            constrain_generate(model, tokenizer, labels, self.constrained["max_digits"])
        stop_ids = stop_token_ids(tokenizer, job.prompt)
        if stop_ids:  # TRL ends (and masks) rollouts at every eos id the model declares
            model.generation_config.eos_token_id = with_stop_ids(
                model.generation_config.eos_token_id or tokenizer.eos_token_id, stop_ids)

        reward = RecordingReward(get_reward(self.spec["reward"]), run.args.num_generations)
        self.log_path = Path(job.out_dir) / TRAIN_LOG
        if run.main:
            prepare_log(self.log_path, run.resume_step)
            event = ({"event": "resume", "checkpoint": run.resume.name, "from_step": run.resume_step} if run.resume
                     else {"event": "start"})
            append_log(self.log_path, {**event, "step": run.resume_step or 0, "method": job.method, "seed": job.seed})
        self.step_log = _step_log_callback(reward, self.log_path)
        trainer_cls, extra = (GRPOTrainer, {}) if self.audio is None else (_audio_trainer(), {"audio": self.audio})
        self.tower_calls = count_calls(model, OMNI_TOWER_PREFIXES["audio"])
        trainer, self.masked = build_trainer(
            trainer_cls, self.constrained, labels, job.config["training"]["mask_forced_tokens"], model=model,
            reward_funcs=[reward], args=run.args, train_dataset=train_ds, processing_class=tokenizer,
            callbacks=[self.step_log], peft_config=peft_config, **extra)
        return trainer

    def final_metrics(self, trainer, run: Run) -> dict[str, Any]:
        """The logged rewards' summary (main process; the others log nothing)."""
        if not run.main:
            return {}
        append_log(self.log_path, {"event": "end", "step": trainer.state.global_step})
        return reward_summary(self.log_path)

    def record(self, trainer, run: Run) -> dict[str, Any]:
        log.info("rank %d: audio tower ran %d times", run.args.process_index, self.tower_calls[0])
        job, constrained, masked = self.job, self.constrained, self.masked
        return {
            "reward": self.spec["reward"], "init_from": str(job.init_from) if job.init_from else None,
            "audio": self.audio is not None, "stop_at": job.prompt["stop_at"], "constrained": constrained,
            "forced_tokens": ({"masked": True, **masked} if masked is not None
                              else {"masked": False} if constrained else None),
            "resumed_from": {"checkpoint": str(run.resume), "step": run.resume_step} if run.resume else None,
            "steps_this_run": trainer.state.global_step - (run.resume_step or 0),
            "audio_tower_calls": self.tower_calls[0],
            "vllm_weight_sync": getattr(trainer, "vllm_sync_stats", None),  # shala.train.vllm_rollouts
            "timing": {"step_seconds": self.step_log.step_seconds},
        }


def run_train(config: dict[str, Any], dataset: str, method: str, seed: int, data_dir: Path,
              model_ref: str, out_dir: Path, *, max_steps: int | None = None,
              init_from: Path | None = None, fit: Fit | None = None) -> dict[str, Any]:
    """Train ``method`` on ``dataset`` with GRPO, write ``out_dir`` (module doc), return the run record.
    ``init_from``: a warm-up run to start from (``model_ref``, its base, is still recorded);
    ``fit``: the caller's fit to the GPUs (:func:`shala.train.device.run_settings`)."""
    return run_job(GRPORecipe(Job(config, dataset, method, seed, Path(data_dir), model_ref, Path(out_dir),
                                  max_steps=max_steps, init_from=init_from, fit=fit)))


def _audio_trainer():
    from .audio_grpo import AudioGRPOTrainer

    return AudioGRPOTrainer
