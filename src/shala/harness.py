"""The run harness shared by GRPO training, SFT and prediction: the device
and threads a run uses, the library versions and JSON-safe values its run
record holds, and how a model is loaded for training.

Why one module: every run writes a record of what it did (config, versions,
seed, device, timings) next to its outputs, and the three commands must
record the same things the same way.
"""

from __future__ import annotations

import logging
import math
import os
import platform
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

LIBRARIES = ("torch", "transformers", "trl", "datasets", "accelerate", "shala")


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def adapt_to_device(settings: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Without CUDA: turn off bf16 (CPU bf16 autocast is slow and not the
    paper's setting), set use_cpu, without which transformers ignores a
    torchrun launch on CPU (each rank then trains alone instead of DDP over
    gloo), and the gloo backend. Return the notes to record."""
    notes = []
    if cuda_available():
        return settings, notes
    cpu_launch_env()
    settings = {**settings, "use_cpu": True}
    # Without a device backend accelerate sets num_processes = 1 on every
    # rank of a CPU launch (accelerate/state.py, _prepare_backend), and
    # DeepSpeed's batch-size check then fails: gloo is the CPU backend.
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # launched ranks; a lone process has no group
        settings.setdefault("ddp_backend", "gloo")
    if settings.get("bf16"):
        settings = {**settings, "bf16": False}
        notes.append("bf16 requested but no CUDA device: trained in float32 (bf16=False)")
        log.warning(notes[-1])
    return settings, notes


def run_settings(config: dict[str, Any], requested: dict[str, Any],
                 out_dir: Path) -> tuple[dict[str, Any], list[str], dict[str, Any] | None]:
    """Trainer settings for this machine, before the trainer config is built:
    the device adaptation (:func:`adapt_to_device`), then on GPUs the first
    fallback that fits (:func:`shala.fit.fit_to_hardware`; an offload points
    accelerate at a rewritten DeepSpeed json). Returns settings, the notes
    to record, and the fit record (None on CPU)."""
    from .fit import fit_to_hardware

    settings, notes = adapt_to_device(requested)
    settings, fit_notes, fit = fit_to_hardware(config, settings, out_dir)
    for note in fit_notes:
        log.info("fit to hardware: %s", note)
    return settings, [*notes, *fit_notes], fit


def cpu_launch_env() -> None:
    """On a machine without CUDA, tell DeepSpeed to use its CPU accelerator
    (``DS_ACCELERATOR=cpu``; it would otherwise look for CUDA and fail to
    build). Called before anything imports deepspeed; a value the user set
    is kept."""
    if "DS_ACCELERATOR" not in os.environ and not cuda_available():
        os.environ["DS_ACCELERATOR"] = "cpu"


def apply_threads(config: dict[str, Any]) -> int:
    """Honour ``training.threads`` (CPU intra-op threads): on a shared CPU,
    more threads than free cores makes torch spin and slows steps many-fold."""
    import torch

    threads = config["training"].get("threads")  # unset: torch's default, every core
    if threads:
        torch.set_num_threads(int(threads))
    return torch.get_num_threads()


def library_versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in LIBRARIES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def device_name() -> str:
    import torch

    if torch.cuda.is_available():
        n = torch.cuda.device_count()
        return f"cuda x{n} ({torch.cuda.get_device_name(0)})"
    cpu = platform.processor() or platform.machine()
    return f"cpu ({cpu}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()})"


def jsonable(d: dict[str, Any]) -> dict[str, Any]:
    """A dict with non-finite floats as None and other objects as strings."""
    out = {}
    for k, v in d.items():
        if isinstance(v, float) and not math.isfinite(v):
            v = None
        elif not isinstance(v, (int, float, str, bool, type(None))):
            v = str(v)
        out[k] = v
    return out


def load_for_training(ref: str | Path, component: str | None = None, freeze_towers: bool = True):
    """Model (float32, as TRL itself loads string models) and tokenizer.

    float32 master weights matter: at lr 1e-6 bf16 weights would swallow
    the updates. Under DeepSpeed bf16 the engine casts. ``freeze_towers``
    (config ``training.freeze_unused_towers``) freezes an Omni model's audio
    and vision encoders, which text-only data never reaches.
    """
    from .models import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(str(ref), dtype="float32", component=component,
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


def zero3_status(model) -> dict[str, Any]:
    """How many parameters DeepSpeed ZeRO-3 partitioned at load (those with
    a ``ds_id``): the run record's proof that ``zero3_init_flag`` took
    effect, rather than each rank holding the whole model."""
    params = list(model.parameters())
    part = [p for p in params if hasattr(p, "ds_id")]
    return {"partitioned_tensors": len(part), "tensors": len(params),
            "partitioned_numel": int(sum(getattr(p, "ds_numel", 0) for p in part)),
            "local_numel": int(sum(p.numel() for p in params))}


def count_calls(model, prefix: str) -> list[int]:
    """A one-element counter of forward calls of the submodule named by
    ``prefix`` (e.g. an Omni thinker's audio tower); [0] without one."""
    counter = [0]
    try:
        module = model.get_submodule(prefix.rstrip("."))
    except AttributeError:
        return counter

    def hook(*_):
        counter[0] += 1

    module.register_forward_hook(hook)
    return counter


def peak_gpu_memory_gib() -> float | None:
    """This process's peak allocated CUDA memory (GiB), None without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return None
    return torch.cuda.max_memory_allocated() / 2**30


def finish_distributed() -> None:
    """Wait for every rank, then tear the process group down: without it a
    rank of a DeepSpeed launch sometimes aborts at exit (SIGABRT) and fails
    the whole launch."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def checkpoint_policy(config: dict[str, Any]) -> str:
    """What happens to ``out_dir/checkpoints`` once run.json is written."""
    keep = config["training"]["keep_checkpoints"]
    return "kept (training.keep_checkpoints)" if keep else "removed once run.json was written"


def clean_checkpoints(out_dir: Path, config: dict[str, Any]) -> bool:
    """Remove ``out_dir/checkpoints`` after a finished run (call it after
    run.json is written): they exist to resume an interrupted run, and a
    ZeRO-3 checkpoint of the 7B thinker is ~125 GB. The final weights in
    ``out_dir`` stay. Returns whether anything was removed."""
    import shutil

    ckpt = Path(out_dir) / "checkpoints"
    if config["training"]["keep_checkpoints"] or not ckpt.exists():
        return False
    shutil.rmtree(ckpt)
    return True
