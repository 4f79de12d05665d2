"""The device and threads a run uses: CPU or CUDA, the CPU launch
environment (gloo, DeepSpeed's CPU accelerator), the caller's fit to the
GPUs' memory, torch threads, and the process group's teardown.

Shared by GRPO training, SFT and prediction, so that the three commands
adapt to a machine (and name it in their run records) the same way.
"""

from __future__ import annotations

import logging
import os
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# (config, settings, out_dir) -> (settings, notes, fit record): how the
# caller fits a job's settings to the GPUs (`shala train`: fit_to_hardware of launch/fit.py)
Fit = Callable[[dict[str, Any], dict[str, Any], Path], tuple[dict[str, Any], list[str], dict[str, Any] | None]]


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


def run_settings(config: dict[str, Any], requested: dict[str, Any], out_dir: Path,
                 fit: Fit | None = None) -> tuple[dict[str, Any], list[str], dict[str, Any] | None]:
    """Trainer settings for this machine, before the trainer config is built:
    the device adaptation (:func:`adapt_to_device`), then ``fit``, the
    caller's fit to the GPUs' memory (``shala train`` passes launch/fit.py's
    ``fit_to_hardware``, which applies the first fallback that fits;
    training sits below launch/, so the caller chooses).
    None: no fit, as on a CPU. Returns settings, the notes to record, and
    the fit record (None on CPU or without ``fit``)."""
    settings, notes = adapt_to_device(requested)
    if fit is None:
        return settings, notes, None
    settings, fit_notes, record = fit(config, settings, out_dir)
    for note in fit_notes:
        log.info("fit to hardware: %s", note)
    return settings, [*notes, *fit_notes], record


def cpu_launch_env() -> None:
    """On a machine without CUDA, tell DeepSpeed to use its CPU accelerator
    (``DS_ACCELERATOR=cpu``; it would otherwise look for CUDA and fail to
    build). Called before anything imports deepspeed; a value the user set
    is kept."""
    if "DS_ACCELERATOR" not in os.environ and not cuda_available():
        os.environ["DS_ACCELERATOR"] = "cpu"


def threads_per_rank(threads: int | None) -> int | None:
    """This process's share of a job's CPU threads: a launcher (accelerate,
    torchrun) starts LOCAL_WORLD_SIZE ranks on the node, and each taking
    every core of the job oversubscribes it by that factor. None (no count
    given) stays None for a lone process, and is the node's usable cores
    divided by the ranks under a launcher."""
    ranks = int(os.environ.get("LOCAL_WORLD_SIZE") or 1)
    if ranks <= 1:
        return threads
    if not threads:
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, int(threads) // ranks)


def apply_threads(config: dict[str, Any]) -> int:
    """Honour ``training.threads`` (CPU intra-op threads; the job's, shared
    by its ranks: :func:`threads_per_rank`): on a shared CPU, more threads
    than free cores makes torch spin and slows steps many-fold."""
    import torch

    threads = threads_per_rank(config["training"].get("threads"))  # unset, one process: torch's default
    if threads:
        torch.set_num_threads(int(threads))
    return torch.get_num_threads()


def device_name() -> str:
    import torch

    if torch.cuda.is_available():
        n = torch.cuda.device_count()
        return f"cuda x{n} ({torch.cuda.get_device_name(0)})"
    cpu = platform.processor() or platform.machine()
    return f"cpu ({cpu}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()})"


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
