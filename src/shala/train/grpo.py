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
from ..jsonio import dumps_line, read_jsonl, write_json
from ..model.loading import OMNI_TOWER_PREFIXES, model_type_of
from .device import apply_threads, device_name, finish_distributed, peak_gpu_memory_gib, run_settings
from .lora import lora_config, peft_record, save_lora
from .model_setup import base_dtype, freeze_towers, load_for_training, model_component
from .run_record import checkpoint_policy, clean_checkpoints, count_calls, jsonable, library_versions, zero3_status
from .toolchain import check_toolchain
from .trainlog import CHECKPOINTS, append_log, checkpoint_step, last_checkpoint, prepare_log, reward_summary

log = logging.getLogger(__name__)

# docs/design.md §5: passed explicitly to GRPOConfig and recorded in run.json.
RECORDED_FIELDS = (
    "scale_rewards", "loss_type", "max_completion_length", "num_generations", "temperature",
    "beta", "num_train_epochs", "max_steps", "learning_rate", "optim",
    "per_device_train_batch_size", "gradient_accumulation_steps", "bf16", "save_steps",
    "logging_steps", "lr_scheduler_type", "warmup_steps", "max_grad_norm",
    "use_transformers_continuous_batching", "use_vllm",  # the rollout engine (shala.model.engines)
)
# Non-§5 defaults we choose (config may override any of them): keep two
# checkpoints (resuming needs only the last), log the first step, no
# external trackers.
EXTRA_DEFAULTS = {"save_total_limit": 2, "logging_first_step": True, "report_to": "none"}
TRAIN_LOG = "train_log.jsonl"
RUN_RECORD = "run.json"


# --------------------------------------------------------------------- config

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


def grpo_settings(config: dict[str, Any], method: str, max_steps: int | None = None,
                  dataset: str | None = None) -> dict[str, Any]:
    """training.grpo, overlaid with the dataset's ``grpo`` fields, then the
    method's overrides (and ``max_steps``).

    Every field of :data:`RECORDED_FIELDS` must be present: a silently
    inherited TRL default is exactly what docs/design.md §5 forbids.
    """
    spec = method_spec(config, method)
    per_dataset = config["datasets"][dataset].get("grpo") if dataset else None  # unset: none
    settings = {**EXTRA_DEFAULTS, **config["training"]["grpo"], **(per_dataset or {}),
                **(spec.get("overrides") or {})}
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


# --------------------------------------------------------------- model/run

def config_record(args, requested: dict[str, Any]) -> dict[str, Any]:
    """All GRPOConfig fields as used (JSON-safe), the §5 fields apart, and
    what config asked for (before device adaptation, e.g. bf16)."""
    full = jsonable(args.to_dict())
    return {"recorded": {f: full.get(f) for f in RECORDED_FIELDS}, "full": full,
            "requested": jsonable(requested)}


def save_final(trainer, tokenizer, out_dir: Path, source: str | Path | None = None,
               lora_base: str | Path | None = None) -> None:
    """Final weights (safetensors; a LoRA run's adapters and ``lora_base``) +
    tokenizer in out_dir, and an Omni ``source``'s audio feature extractor."""
    from ..model.audio import has_audio_tower, save_feature_extractor

    if lora_base is not None:
        save_lora(trainer, out_dir, lora_base)
    else:
        trainer.save_model(str(out_dir))
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(str(out_dir))
        if source is not None and has_audio_tower(trainer.model):
            save_feature_extractor(source, out_dir)


def run_train(config: dict[str, Any], dataset: str, method: str, seed: int, data_dir: Path,
              model_ref: str, out_dir: Path, *, max_steps: int | None = None,
              init_from: Path | None = None) -> dict[str, Any]:
    """Train ``method`` on ``dataset`` with GRPO, write ``out_dir`` (module doc), return the run record.
    ``init_from``: a warm-up run to start from (``model_ref``, its base, is still recorded)."""
    from transformers import set_seed
    from trl import GRPOTrainer

    from ..model.audio import audio_features_for
    from ..model.constrained import constrain_generate, constraint_settings
    from ..model.engines import check_rollout_engine
    from ..prompts import stop_token_ids, with_stop_ids
    from .rewards import get_reward
    from .vllm_rollouts import build_trainer

    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / RUN_RECORD).unlink(missing_ok=True)  # the marker appears only when done
    spec = method_spec(config, method)
    requested = grpo_settings(config, method, max_steps, dataset)
    check_rollout_engine(requested, dataset, prompt_config(config, dataset), model_type_of(model_ref),
                         config["datasets"][dataset], Path(data_dir) / "train.jsonl")
    check_toolchain()  # these two before any model loads
    settings, notes, fit = run_settings(config, requested, out_dir)
    threads = apply_threads(config)
    set_seed(seed)
    args = make_grpo_config(settings, out_dir, seed)  # before the model: ZeRO-3 init on load
    main_process = args.process_index == 0
    component = None if init_from else model_component(config, model_ref)
    model, tokenizer = load_for_training(init_from or model_ref, component=component,
                                         freeze_towers=freeze_towers(config),
                                         dtype=base_dtype(config, bool(args.bf16)))
    zero3 = zero3_status(model)
    log.info("rank %d of world size %d: %d of %d parameter tensors partitioned by ZeRO-3 (%d elements in all, "
             "%d held here)", args.process_index, args.world_size, zero3["partitioned_tensors"], zero3["tensors"],
             zero3["partitioned_numel"], zero3["local_numel"])
    items = load_train_items(data_dir)
    # speech + text (MSP-Podcast on an Omni model) unless the dataset is text_only
    audio = audio_features_for(config["datasets"][dataset], model, items, init_from or model_ref)
    train_ds = load_train_dataset(config, dataset, data_dir, tokenizer, items=items, audio=audio is not None)
    prompt_cfg = prompt_config(config, dataset)
    labels = train_ds[0]["labels"]
    constrained = constraint_settings(prompt_cfg, labels)
    if constrained:
        constrain_generate(model, tokenizer, labels, constrained["max_digits"])
    stop_ids = stop_token_ids(tokenizer, prompt_cfg)
    if stop_ids:  # TRL ends (and masks) rollouts at every eos id the model declares
        model.generation_config.eos_token_id = with_stop_ids(
            model.generation_config.eos_token_id or tokenizer.eos_token_id, stop_ids)

    reward = RecordingReward(get_reward(spec["reward"]), args.num_generations)
    log_path = out_dir / TRAIN_LOG
    ckpt = last_checkpoint(out_dir)
    resume_step = checkpoint_step(ckpt) if ckpt else None
    if main_process:
        prepare_log(log_path, resume_step)
        event = ({"event": "resume", "checkpoint": ckpt.name, "from_step": resume_step} if ckpt
                 else {"event": "start"})
        append_log(log_path, {**event, "step": resume_step or 0, "method": method, "seed": seed})
    step_log = _step_log_callback(reward, log_path)
    trainer_cls, extra = (GRPOTrainer, {}) if audio is None else (_audio_trainer(), {"audio": audio})
    tower_calls = count_calls(model, OMNI_TOWER_PREFIXES["audio"])
    peft_config = lora_config(config, model)
    trainer, masked = build_trainer(trainer_cls, constrained, labels, config["training"]["mask_forced_tokens"],
                                    model=model, reward_funcs=[reward], args=args, train_dataset=train_ds,
                                    processing_class=tokenizer, callbacks=[step_log], peft_config=peft_config, **extra)
    lora = peft_record(config, trainer.model)

    t_train = time.perf_counter()
    trainer.train(resume_from_checkpoint=str(ckpt) if ckpt else None)
    train_seconds = time.perf_counter() - t_train
    save_final(trainer, tokenizer, out_dir, source=init_from or model_ref,
               lora_base=model_ref if lora is not None else None)
    log.info("rank %d: audio tower ran %d times", args.process_index, tower_calls[0])

    steps_run = trainer.state.global_step - (resume_step or 0)
    record = {
        "kind": "grpo", "dataset": dataset, "method": method, "reward": spec["reward"], "seed": seed,
        "model_ref": str(model_ref), "init_from": str(init_from) if init_from else None,
        "component": component, "data_dir": str(data_dir), "n_train_items": len(train_ds),
        "audio": audio is not None, "peft": lora,
        "prompt": prompt_cfg, "response_prefix": sorted(set(train_ds["response_prefix"])),
        "stop_at": prompt_cfg["stop_at"], "constrained": constrained,
        "forced_tokens": ({"masked": True, **masked} if masked is not None
                          else {"masked": False} if constrained else None),
        "grpo_config": config_record(args, requested), "notes": notes, "fit": fit,
        "resumed_from": {"checkpoint": str(ckpt), "step": resume_step} if ckpt else None,
        "global_step": trainer.state.global_step, "steps_this_run": steps_run,
        "device": device_name(), "torch_threads": threads, "world_size": args.world_size,
        "zero3": zero3, "audio_tower_calls": tower_calls[0], "peak_gpu_memory_gib": peak_gpu_memory_gib(),
        "vllm_weight_sync": getattr(trainer, "vllm_sync_stats", None),  # shala.train.vllm_rollouts
        "versions": library_versions(),
        "timing": {"total_seconds": time.perf_counter() - t0, "train_seconds": train_seconds,
                   "seconds_per_step": train_seconds / steps_run if steps_run else None,
                   "step_seconds": step_log.step_seconds},
        "final_metrics": {}, "checkpoints": checkpoint_policy(config),
    }
    if main_process:
        append_log(log_path, {"event": "end", "step": trainer.state.global_step})
        record["final_metrics"] = reward_summary(log_path)
        write_json(out_dir / RUN_RECORD, record)
        clean_checkpoints(out_dir, config)
    finish_distributed()
    return record


def _audio_trainer():
    from .audio_grpo import AudioGRPOTrainer

    return AudioGRPOTrainer

