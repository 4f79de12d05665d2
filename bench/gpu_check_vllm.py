"""The vLLM row of bench/gpu_check.py's engines section: greedy decoding of
the thinker at the rollout shape (16 sequences x 256 prompt tokens, every
sequence forced to the same number of new tokens: ``min_tokens`` =
``max_tokens``, end tokens ignored) through vLLM, the engine shala's
prediction (shala.model.vllm_engine) and GRPO rollouts
(shala.train.vllm_rollouts) start, with the same settings:

- the thinker's config goes to a temporary folder, and
  ``omni_engine_kwargs`` gives vLLM the full Omni layout it builds the
  thinker from (``thinker_config`` in a ``qwen2_5_omni`` config),
  ``language_model_only`` and dummy weights; no tokenizer (token ids in,
  token ids out). Decoding time does not depend on the weights' values;
- in process: the engine's start (seconds, apart), one warm-up request, then
  the timed ``generate``; with the transformers model in hand, its text
  weights are then pushed into the engine as GRPO's sync does, timed too
  (its failure is the row's ``weight_push_error``, the timing stays);
- where vLLM does not import in this Python but another has it
  (``GPU_CHECK_VLLM_PYTHON``, set by bench/gpu_check.sh), this file runs
  there as a child: it builds the thinker on the meta device (config only,
  no memory), times the same and prints its row; gpu_check.py takes it.

Every failure is the row's ``error``; the caller adds the HBM bound.

    python bench/gpu_check_vllm.py [--tiny] [--new 128]   # the child: prints "VLLM_ROW {json}"
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MARK = "VLLM_ROW "


def vllm_row(torch, model, ids: list[list[int]], new: int, push: bool = True) -> dict:
    """Times vLLM's greedy decoding of ``ids`` to exactly ``new`` tokens each
    (module doc); ``push``: then times the push of ``model``'s weights."""
    row: dict = {"engine": "vllm", "sequences": len(ids), "prompt_tokens": len(ids[0]), "new_tokens": new}
    folder = Path(tempfile.mkdtemp(prefix="gpu-check-thinker-"))
    name, extra, llm = model.name_or_path, {}, None
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    try:
        from shala.model.vllm_engine import engine_settings, sampling_params, start_engine, stop_engine, vllm_version
        from shala.train.vllm_rollouts import omni_engine_kwargs, push_weights, pushed, vllm_weight_name

        if torch.cuda.is_available():  # engine_settings reads the free memory: the cache's blocks count as used
            torch.cuda.empty_cache()
        model.config.save_pretrained(folder)  # a saved thinker: omni_engine_kwargs gives it the full layout
        model.name_or_path = str(folder)
        settings = engine_settings(model, max_model_len=len(ids[0]) + new, max_num_seqs=len(ids))
        extra = omni_engine_kwargs(model)
        settings.update(extra, skip_tokenizer_init=True)
        row["settings"] = {"vllm": vllm_version(), "executor": "uni (in process)",
                           **{k: v for k, v in settings.items() if k != "model"}}
        t0 = time.perf_counter()
        llm = start_engine(settings)
        sync()
        row["engine_start_s"] = round(time.perf_counter() - t0, 2)
        params = sampling_params(max_new_tokens=new, stop_ids=(), min_tokens=new, ignore_eos=True,
                                 detokenize=False)
        llm.generate([{"prompt_token_ids": ids[0]}], sampling_params(max_new_tokens=4, stop_ids=(),
                     detokenize=False), use_tqdm=False)  # warm-up, as generate's in part (b)
        sync()
        t0 = time.perf_counter()
        outs = llm.generate([{"prompt_token_ids": p} for p in ids], params, use_tqdm=False)
        sync()
        secs = time.perf_counter() - t0
        lengths = sorted({len(o.outputs[0].token_ids) for o in outs})
        if len(outs) != len(ids) or lengths != [new]:
            raise RuntimeError(f"{len(outs)} outputs of lengths {lengths}, not {len(ids)} of {new}")
        row.update(seconds=round(secs, 2), tokens_per_s=round(len(ids) * new / secs, 1))
        if push:  # GRPO's weight sync at this size; a failure keeps the timing above
            try:
                weights = [(vllm_weight_name(n, True), p.detach()) for n, p in model.named_parameters()
                           if pushed(n, True)]
                t0 = time.perf_counter()
                push_weights(llm, weights)
                sync()
                row.update(weight_push_s=round(time.perf_counter() - t0, 2), weight_push_tensors=len(weights))
            except Exception as exc:  # noqa: BLE001
                row["weight_push_error"] = f"{type(exc).__name__}: {exc}"[:500]
    except Exception as exc:  # noqa: BLE001 - the row records it; the other engines' numbers stay
        row["error"] = f"{type(exc).__name__}: {exc}"[:500]
    finally:
        model.name_or_path = name
        if llm is not None:
            try:
                stop_engine(llm)
            except Exception as exc:  # noqa: BLE001
                row["stop_error"] = f"{type(exc).__name__}: {exc}"[:300]
        shutil.rmtree(folder, ignore_errors=True)
        if extra.get("model"):
            shutil.rmtree(extra["model"], ignore_errors=True)
    return row


def child_row(python: str, tiny: bool, new: int, timeout: float | None = None) -> dict:
    """The row from ``python`` (a Python where vLLM imports) running this file;
    shala is the tree's (src/ alone on PYTHONPATH: that environment's own
    packages, not the ones carried for this Python)."""
    row: dict = {"engine": "vllm", "python": python}
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    cmd = [python, str(Path(__file__).resolve()), "--new", str(new)] + (["--tiny"] if tiny else [])
    try:
        r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        rows = [line[len(MARK):] for line in r.stdout.splitlines() if line.startswith(MARK)]
        if rows:
            return {**json.loads(rows[-1]), "python": python}
        tail = (r.stdout + r.stderr).strip().splitlines()[-6:]
        row["error"] = f"the vLLM child exited {r.returncode} without a row: " + " | ".join(tail)
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        row["error"] = f"the vLLM child failed: {type(exc).__name__}: {exc}"
    row["error"] = row["error"][:800]
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="toy-size thinker on the CPU (gpu_check.py --tiny)")
    ap.add_argument("--new", type=int, default=128, help="new tokens per sequence")
    a = ap.parse_args()
    row: dict = {"engine": "vllm", "sequences": 16, "prompt_tokens": 256, "new_tokens": a.new}
    try:
        import torch
        from gpu_check import build  # bench/: the thinker of parts (b)/(c)

        model, cfg = build(torch, "meta", a.tiny)  # config, dtype and names only: vLLM's weights are dummy
        vocab = cfg.get_text_config().vocab_size
        g = torch.Generator().manual_seed(0)
        ids = [r.tolist() for r in torch.randint(1000, vocab - 1000, (16, 256), generator=g)]
        row = vllm_row(torch, model, ids, a.new, push=False)
    except Exception as exc:  # noqa: BLE001
        row["error"] = f"{type(exc).__name__}: {exc}"[:500]
    print(MARK + json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
