"""LoRA (``training.peft``): adapters instead of the paper's full fine-tune.

Shared by GRPO training and SFT: the ``peft.LoraConfig`` both trainers get
as ``peft_config=``, the run record's ``peft`` entry, and the final save.
The save merges the adapters into the base weights and writes the merged
model where a full fine-tune's weights go (so ``shala predict`` and
GRPO-from-warm-up read it unchanged), and the adapters alone under
``<out>/adapter/``. peft is imported only when LoRA is enabled.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..model.loading import OMNI_TOWER_PREFIXES

ADAPTER_DIR = "adapter"
LORA_FIELDS = ("r", "lora_alpha", "lora_dropout", "target_modules")


def lora_settings(config: dict[str, Any]) -> dict[str, Any] | None:
    """The resolved ``training.peft`` fields (schema defaults filled), or None when LoRA is off."""
    peft = config["training"]["peft"]
    if not peft["enabled"]:
        return None
    return {f: peft[f] for f in LORA_FIELDS}


def lora_config(config: dict[str, Any], model=None):
    """The ``peft.LoraConfig`` of ``training.peft``, or None when LoRA is off.

    With ``training.freeze_unused_towers`` an Omni thinker's audio and vision
    towers (of ``model``, when it has them) get no adapters ("all-linear"
    would otherwise reach them).
    """
    settings = lora_settings(config)
    if settings is None:
        return None
    try:
        from peft import LoraConfig
    except ImportError:
        raise ConfigError("training.peft.enabled needs peft: install shala's `model` extra "
                          "(pip install -e '.[model]')") from None
    exclude = None
    names = [n for n, _ in model.named_modules()] if model is not None else []
    has_towers = any(n.startswith(p) for n in names for p in OMNI_TOWER_PREFIXES.values())
    if config["training"]["freeze_unused_towers"] and (model is None or has_towers):
        towers = "|".join(p.rstrip(".").replace(".", r"\.") for p in OMNI_TOWER_PREFIXES.values())
        exclude = rf"(.*\.)?({towers})\..*"
    target = settings["target_modules"]
    return LoraConfig(task_type="CAUSAL_LM", r=settings["r"], lora_alpha=settings["lora_alpha"],
                      lora_dropout=settings["lora_dropout"],
                      target_modules=target if isinstance(target, str) else list(target),
                      exclude_modules=exclude)


def peft_record(config: dict[str, Any], model) -> dict[str, Any] | None:
    """run.json's ``peft``: the LoRA settings and the trainable / total
    parameter counts as peft reports them (None when LoRA is off)."""
    settings = lora_settings(config)
    if settings is None:
        return None
    trainable, total = model.get_nb_trainable_parameters()
    return {**settings, "trainable_params": int(trainable), "total_params": int(total)}


def _gathered(model):
    """All parameters whole on every rank under ZeRO-3 (read-only), else nothing."""
    params = [p for p in model.parameters() if hasattr(p, "ds_id")]
    if not params:
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(params, modifier_rank=None)


def save_lora(trainer, out_dir: Path) -> None:
    """The adapters alone in ``out_dir/adapter`` (the trainer's own save,
    which gathers under ZeRO-3), then the merged model as safetensors in
    ``out_dir``, from the trainer's unwrapped model (main process writes)."""
    out_dir = Path(out_dir)
    trainer.save_model(str(out_dir / ADAPTER_DIR))
    model = trainer.accelerator.unwrap_model(trainer.model)
    with _gathered(model):  # every rank merges alike, so the module trees stay the same
        merged = model.merge_and_unload()
        if trainer.is_world_process_zero():
            merged.save_pretrained(str(out_dir), safe_serialization=True)
