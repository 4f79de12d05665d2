"""Batched greedy prediction for a split of a dataset (docs/design.md §6).

Evaluation uses greedy decoding, so predictions are a pure function of the
model, the prompts and ``max_new_tokens``; ``evaluation.engine`` picks how
they are generated (:mod:`shala.model.engines`: HF ``generate`` on sorted,
left-padded batches, or transformers' continuous batching). Raw
completions are stored next to the parsed distribution so metrics can be
recomputed (or the parser changed) without re-running the model.

Speech + text (an Omni model on items with audio, dataset not
``text_only``): the prompts hold the audio placeholder, each batch's audio
is featurised and its placeholders expanded (:mod:`shala.model.audio`), and the
features go to ``generate`` with the token ids, as in GRPO training.
"""

from __future__ import annotations

import logging
import platform
import time
from pathlib import Path
from typing import Any

from ..data.items import subsample
from ..errors import ConfigError, InputError
from ..jsonio import read_jsonl, write_json, write_jsonl
from ..model.constrained import constraint_settings, skeleton_processor
from ..model.engines import check_prediction_engine, greedy_completions
from ..parsing import parse_distribution
from ..prompts import full_answer, render_prompt_string, response_prefix, stop_token_ids

log = logging.getLogger(__name__)

RUN_RECORD_KEYS = ("model_ref", "dataset", "split", "predictions", "n_items", "limit", "batch_size",
                   "max_new_tokens", "decoding", "engine", "response_prefix", "parse_rate", "n_parsed", "seconds",
                   "items_per_s", "seed", "device", "dtype", "versions")


def _versions() -> dict[str, str | None]:
    from ..provenance import library_versions

    return {**library_versions(), "python": platform.python_version()}


def run_predict(config: dict[str, Any], dataset: str, data_dir: str | Path, model_ref: str,
                split: str, out: str | Path, *, batch_size: int | None = None,
                limit: int | None = None, max_new_tokens: int | None = None,
                seed: int = 0, device: str | None = None, progress: bool = True,
                engine: str | None = None) -> dict[str, Any]:
    """Predict ``data_dir/{split}.jsonl`` with ``model_ref``; write ``out``.

    Each output line is the canonical item plus ``completion`` (the response
    prefix, if any, followed by the generated text), ``response_prefix``,
    ``pred_dist`` (parsed distribution in label order, or null) and
    ``parse_error`` (null on success). ``limit`` keeps a seeded subset
    (:func:`shala.data.items.subsample`, the same items ``shala reference --limit``
    keeps). A run record goes to
    ``out.with_suffix('.run.json')`` and is returned. Defaults for batch size
    and max_new_tokens, and the generation ``engine``
    (:data:`shala.model.engines.ENGINES`), come from ``config['evaluation']``.
    """
    import torch

    from ..model.audio import audio_features_for
    from ..model.loading import load_model_and_tokenizer

    if dataset not in config["datasets"]:
        raise ConfigError(f"unknown dataset {dataset!r} (config datasets: {sorted(config['datasets'])})")
    prompt_cfg = config["datasets"][dataset]["prompt"]
    batch_size = int(batch_size or config["evaluation"]["batch_size"])
    max_new_tokens = int(max_new_tokens or config["evaluation"]["max_new_tokens"])
    engine = engine or config["evaluation"]["engine"]
    check_prediction_engine(engine, dataset, prompt_cfg)  # before the model loads
    out = Path(out)
    items = subsample(read_jsonl(Path(data_dir) / f"{split}.jsonl"), limit)
    if not items:
        raise InputError(f"no items in split {split!r}", path=Path(data_dir) / f"{split}.jsonl")

    model_cfg = config["model"]
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = model_cfg["dtype"]
    t0 = time.perf_counter()
    model, tokenizer = load_model_and_tokenizer(model_ref, dtype=dtype, component=model_cfg["component"],
                                                device=device)
    load_s = time.perf_counter() - t0
    audio = audio_features_for(config["datasets"][dataset], model, items, model_ref)
    prompts = [render_prompt_string(tokenizer, it, prompt_cfg, audio=audio is not None) for it in items]
    prefixes = [response_prefix(prompt_cfg, it["labels"]) for it in items]
    t1 = time.perf_counter()
    stop_ids = stop_token_ids(tokenizer, prompt_cfg)
    constrained = constraint_settings(prompt_cfg, items[0]["labels"])
    factory = (skeleton_processor(tokenizer, items[0]["labels"], constrained["max_digits"])
               if constrained else None)
    completions = greedy_completions(model, tokenizer, prompts, engine=engine, batch_size=batch_size,
                                     max_new_tokens=max_new_tokens, progress=progress, seed=seed,
                                     stop_ids=stop_ids, processor_factory=factory, audio=audio,
                                     audio_paths=[it["inputs"]["audio"] for it in items] if audio else None)
    seconds = time.perf_counter() - t1

    rows = []
    n_parsed = 0
    for item, prefix, generated in zip(items, prefixes, completions):
        text = full_answer(prefix, generated)
        res = parse_distribution(text, item["labels"])
        n_parsed += res.ok
        rows.append({**item, "completion": text, "response_prefix": prefix,
                     "pred_dist": [float(x) for x in res.dist] if res.ok else None,
                     "parse_error": res.error})
    write_jsonl(out, rows)
    parse_rate = n_parsed / len(rows)
    record = {
        "model_ref": str(model_ref), "dataset": dataset, "split": split,
        "predictions": str(out), "n_items": len(rows), "limit": limit, "batch_size": batch_size,
        "max_new_tokens": max_new_tokens, "decoding": "greedy", "engine": engine,
        "engine_settings": getattr(completions, "settings", None),  # vllm: shala.model.vllm_engine.Completions
        "response_prefix": sorted(set(prefixes)), "stop_at": prompt_cfg["stop_at"],
        "constrained": constrained, "audio": audio is not None,
        "prompt": prompt_cfg,
        "parse_rate": parse_rate, "n_parsed": n_parsed,
        "seconds": round(seconds, 3), "load_seconds": round(load_s, 3),
        "items_per_s": round(len(rows) / seconds, 4) if seconds > 0 else None,
        "seed": seed, "device": str(device), "dtype": str(dtype), "versions": _versions(),
    }
    write_json(out.with_suffix(".run.json"), record)
    log.info("predicted %d %s/%s items in %.1fs (%.2f items/s); parse rate %.1f%%",
             len(rows), dataset, split, seconds, record["items_per_s"] or 0.0, 100 * parse_rate)
    return record
