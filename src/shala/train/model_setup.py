"""The model as training loads it: float32 master weights, the Omni
thinker where the model has one, its unused towers frozen, and only the
checkpoint renamings that loading used (so that the saved model reloads).

Shared by GRPO training and SFT, so that both start from the same model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def load_for_training(ref: str | Path, component: str | None = None, freeze_towers: bool = True,
                      dtype: str = "float32"):
    """Model (float32, as TRL itself loads string models) and tokenizer.

    float32 master weights matter: at lr 1e-6 bf16 weights would swallow
    the updates. Under DeepSpeed bf16 the engine casts. ``dtype`` bfloat16:
    the frozen base of a LoRA run (:func:`base_dtype`), whose trained
    adapters peft keeps in float32. ``freeze_towers``
    (config ``training.freeze_unused_towers``) freezes an Omni model's audio
    and vision encoders, which text-only data never reaches.
    """
    from ..model.loading import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(str(ref), dtype=dtype, component=component,
                                                for_training=True, freeze_towers=freeze_towers)
    keep_used_weight_conversions(model)
    return model, tokenizer


def keep_used_weight_conversions(model) -> None:
    """Keep only the checkpoint renamings that loading used, as a plain load does.

    transformers 5.23's ZeRO-3 loading path (``_load_state_dict_into_zero3_model``)
    stores every conversion of the model type, used or not, and
    ``save_pretrained`` reverses them all: a Qwen2.5-Omni thinker trained
    under ZeRO-3 was saved as ``thinker.model.thinker.language_model...``,
    and reloading it initialised every weight at random. Filtering by
    ``was_used()`` is what the non-ZeRO path does (core_model_loading).
    """
    conversions = getattr(model, "_weight_conversions", None)
    if conversions:
        model._weight_conversions = [c for c in conversions if c.was_used()]


def freeze_towers(config: dict[str, Any]) -> bool:
    return bool(config["training"]["freeze_unused_towers"])


def model_component(config: dict[str, Any], ref: str | Path) -> str | None:
    """config's ``model.component`` (the Omni thinker) when ``ref`` can hold
    one; a local model directory of another type (a demo or test model run
    under the paper config) is loaded whole."""
    import json

    component = config["model"]["component"]
    cfg_file = Path(str(ref)) / "config.json"
    if component and cfg_file.is_file():
        model_type = json.loads(cfg_file.read_text(encoding="utf-8")).get("model_type", "")
        if "omni" not in model_type:
            return None
    return component


def base_dtype(config: dict[str, Any], bf16: bool) -> str:
    """The dtype to load the model in: bfloat16 for LoRA's frozen base when
    training in bf16 (``training.peft.enabled``; the memory estimate counts
    it so), float32 master weights otherwise."""
    return "bfloat16" if config["training"]["peft"]["enabled"] and bf16 else "float32"
