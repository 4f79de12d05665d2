"""LoRA (``training.peft``): adapters instead of the paper's full fine-tune.

Shared by GRPO training and SFT: the ``peft.LoraConfig`` both trainers get
as ``peft_config=``, the run record's ``peft`` entry, and the final save.
The save writes the adapters alone under ``<out>/adapter/`` and the base
they belong to; loading a run folder applies them unmerged over that base
(:mod:`shala.model.adapters`, which says why a merge would lose the
learning), so ``shala predict`` reads a LoRA run as it reads a full
fine-tune's, and GRPO from a LoRA warm-up goes on training the warm-up's
adapters. peft is imported only when LoRA is enabled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..model.adapters import ADAPTER_DIR, is_adapter_model, write_base
from ..model.loading import OMNI_TOWER_PREFIXES

LORA_FIELDS = ("r", "lora_alpha", "lora_dropout", "target_modules")


def lora_settings(config: dict[str, Any]) -> dict[str, Any] | None:
    """The resolved ``training.peft`` fields (schema defaults filled), or None when LoRA is off."""
    peft = config["training"]["peft"]
    if not peft["enabled"]:
        return None
    return {f: peft[f] for f in LORA_FIELDS}


def lora_config(config: dict[str, Any], model=None):
    """The ``peft.LoraConfig`` of ``training.peft``, or None when LoRA is off
    or ``model`` already carries adapters (loaded from a LoRA warm-up).

    With ``training.freeze_unused_towers`` an Omni thinker's audio and vision
    towers (of ``model``, when it has them) get no adapters ("all-linear"
    would otherwise reach them).
    """
    settings = lora_settings(config)
    if settings is None or is_adapter_model(model):  # a LoRA warm-up's adapters train on
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
    parameter counts as peft reports them (None when ``model`` has no adapters)."""
    settings = lora_settings(config)
    if settings is None or not is_adapter_model(model):
        return None
    trainable, total = model.get_nb_trainable_parameters()
    return {**settings, "trainable_params": int(trainable), "total_params": int(total)}


def save_lora(trainer, out_dir: Path, base_ref: str | Path) -> None:
    """The adapters alone in ``out_dir/adapter`` (the trainer's own save,
    which gathers them under ZeRO-3) and the base they belong to; no merged
    copy (:mod:`shala.model.adapters`: a bf16 merge rounds the learning away)."""
    out_dir = Path(out_dir)
    trainer.save_model(str(out_dir / ADAPTER_DIR))
    if trainer.is_world_process_zero():
        write_base(out_dir, base_ref)
