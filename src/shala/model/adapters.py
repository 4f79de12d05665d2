"""A LoRA run's weights as saved and loaded: the adapters alone, applied
unmerged over the base model they were trained on.

Why unmerged: a LoRA run trains float32 adapters over a frozen bf16 base.
At the paper's learning rate its weight change B·A·(alpha/r) is of order
1e-5 to 1e-4, while a bf16 weight near 0.015 has a spacing of 6e-5, so
merging the change into bf16 weights (peft's ``merge_and_unload`` adds in
place to ``weight.data``) rounds most of it away, and saving the merge in
float32 only defers that to a bf16 load. Unmerged, every forward computes
``base(x) + B(A(x))·alpha/r`` with the adapters in float32, exactly as the
trainer did, so prediction scores the model that was trained.

A run folder holds ``adapter/`` (peft's ``adapter_config.json`` and
``adapter_model.safetensors``) and :data:`BASE_FILE`, which names the base
model folder the adapters belong to (the run's ``model_ref``: for a GRPO
run that continues a LoRA warm-up, the warm-up's base as well, since GRPO
goes on training the warm-up's adapters). peft is imported only here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import ShalaError

ADAPTER_DIR = "adapter"
BASE_FILE = "adapter_base.json"
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")


def adapter_dir(ref: str | Path) -> Path | None:
    """``ref/adapter`` when ``ref`` is a LoRA run folder (adapters, no full weights), else None."""
    folder = Path(str(ref))
    adapter = folder / ADAPTER_DIR
    if not (adapter / "adapter_config.json").is_file():
        return None
    if any((folder / name).is_file() for name in WEIGHT_FILES):
        return None  # a full model saved beside its adapters: load the full model
    return adapter


def write_base(out_dir: str | Path, base_ref: str | Path) -> None:
    """Record which base model the adapters of ``out_dir`` were trained on."""
    if adapter_dir(base_ref) is not None:  # trained on from another LoRA run: that run's base
        base_ref = adapter_base(base_ref)
    path = Path(out_dir) / BASE_FILE
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps({"base_model": str(base_ref)}, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


def adapter_base(ref: str | Path) -> str:
    """The base model folder of the LoRA run ``ref`` (:data:`BASE_FILE`)."""
    path = Path(str(ref)) / BASE_FILE
    try:
        base = json.loads(path.read_text(encoding="utf-8"))["base_model"]
    except (OSError, ValueError, KeyError) as exc:
        raise ShalaError(f"{path}: a LoRA run folder must name its base model ({exc})") from exc
    hub_id = base.count("/") == 1 and not base.startswith((".", "/"))  # org/name, trained from the hub
    if Path(base).exists() or hub_id:
        return str(base)
    raise ShalaError(f"{path}: base model {base!r} not found (relative paths resolve from {os.getcwd()})")


def apply_adapter(model, adapter: Path, *, trainable: bool = False):
    """``model`` wrapped with the saved adapters, unmerged; ``trainable``:
    the adapters get gradients (GRPO continuing a LoRA warm-up). peft casts
    bf16 adapters to float32 (``autocast_adapter_dtype``, its default)."""
    try:
        from peft import PeftModel
    except ImportError:
        raise ShalaError(f"{adapter.parent} holds LoRA adapters: install shala's `model` extra for peft") from None
    return PeftModel.from_pretrained(model, str(adapter), is_trainable=trainable)


def is_adapter_model(model: Any) -> bool:
    """Whether ``model`` is a peft model (adapters over a base)."""
    return hasattr(model, "peft_config") and hasattr(model, "get_base_model")
