"""Disk need of the training runs against free space under ``results``,
for ``shala preflight`` (its "Disk" section): a paper run needs about half
a terabyte, and a full disk otherwise shows up as a failed checkpoint write
hours into a run.

Disk model
----------
P = all parameters, T = trainable ones (:mod:`shala.launch.gpu_memory`), GiB = 2^30 B.

- A checkpoint (``checkpoints/checkpoint-N/``) under DeepSpeed: the ZeRO
  optimizer state, fp32 master weights + Adam m and v, 12 B x T (all ranks
  together), plus ``model.safetensors``, bf16, 2 B x P, which ZeRO-3 writes
  only with ``stage3_gather_16bit_weights_on_model_save`` (ZeRO-1/2 always).
  Without DeepSpeed: fp32 weights 4 B x P + Adam m, v 8 B x T. With LoRA
  (``training.peft``; A = adapter parameters, :func:`~shala.launch.gpu_memory.lora_params`)
  the Trainer saves the adapters alone: fp32 adapters + Adam m, v, 12 B x A.
- The final weights beside ``run.json``: 2 B x P under DeepSpeed (the bf16
  gather), 4 B x P without (fp32 training weights). With LoRA the fp32
  adapters alone, 4 B x A (no merged copy: :mod:`shala.model.adapters`).
- While a run goes the Trainer keeps ``save_total_limit`` checkpoints
  (training.grpo, or a method's overrides; shala's default 2), and has one
  more on disk while it writes a new one before deleting the oldest
  (transformers ``rotate_checkpoints``): peak (limit + 1) checkpoints, or
  limit checkpoints + the final weights at the end, whichever is larger.
  With ``max_steps`` > 0 no more than max_steps // save_steps are written.
  SFT runs (the warm-up, sft_soft) save no checkpoints (``save_strategy:
  no``) unless their settings say otherwise.
- After a run: its final weights, plus its last ``save_total_limit``
  checkpoints when ``training.keep_checkpoints`` is true (else removed).

The grid: every training run of the config (``run_datasets`` that can run x
trained ``run_methods`` x ``seeds``, plus the warm-ups) without a
``run.json`` yet needs what it leaves, and the largest of them the rest of
its peak while it runs (one training job at a time: jobs that run side by
side each need their peak), minus what their folders already hold (an
interrupted run's checkpoints). Free space is ``shutil.disk_usage`` of the
nearest existing folder of ``results``. The hub cache is not counted.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .gpu_memory import GIB, billions
from .model_shape import ModelShape


@dataclass(frozen=True)
class Run:
    """One training run of the grid and its checkpoints."""

    path: Path
    kind: str                   # grpo | sft
    peak_checkpoints: int       # on disk at once while it runs
    end_checkpoints: int        # beside the final weights when they are written
    kept_checkpoints: int       # left after the run
    unbounded: bool = False     # no save_total_limit and no max_steps: count unknown


@dataclass
class DiskCheck:
    root: Path
    free: float
    free_from: str
    checkpoint: float
    checkpoint_formula: str
    final: float
    final_formula: str
    runs: list[Run]
    unfinished: list[Run]
    existing: float             # bytes already in the unfinished runs' folders
    save_total_limit: int | None
    keep_checkpoints: bool

    def peak(self, run: Run) -> float:
        return max(run.peak_checkpoints * self.checkpoint, run.end_checkpoints * self.checkpoint + self.final)

    def leaves(self, run: Run) -> float:
        return self.final + run.kept_checkpoints * self.checkpoint

    @property
    def need(self) -> float:
        if not self.unfinished:
            return 0.0
        transient = max(self.peak(r) - self.leaves(r) for r in self.unfinished)
        return max(0.0, sum(self.leaves(r) for r in self.unfinished) + transient - self.existing)

    @property
    def fits(self) -> bool:
        return self.need <= self.free

    def report(self) -> list[str]:
        """The "Disk" section of the preflight report."""
        g = lambda b: f"{b / GIB:.1f} GiB"  # noqa: E731
        out = [f"disk: free {g(self.free)} under {self.root} ({self.free_from})",
               f"  checkpoint      {g(self.checkpoint):>10}   {self.checkpoint_formula}",
               f"  final weights   {g(self.final):>10}   {self.final_formula}"]
        grpo = [r for r in self.runs if r.kind == "grpo"]
        if grpo:
            r = max(grpo, key=self.peak)
            out.append(f"  one GRPO run    {g(self.peak(r)):>10}   peak: {r.peak_checkpoints} checkpoint(s) while "
                       f"it writes a new one (save_total_limit {self.save_total_limit}), or "
                       f"{r.end_checkpoints} + the final weights")
        n_kind = {k: sum(r.kind == k for r in self.runs) for k in ("grpo", "sft")}
        out.append(f"  grid            {g(self.need):>10}   {len(self.unfinished)} of {len(self.runs)} training "
                   f"runs ({n_kind['grpo']} GRPO, {n_kind['sft']} SFT) without run.json: final weights each"
                   + (", their last checkpoints too (training.keep_checkpoints true)" if self.keep_checkpoints
                      else " (checkpoints removed after each: training.keep_checkpoints false)")
                   + ", plus the largest run's checkpoints while it runs"
                   + (f", minus {g(self.existing)} already in their folders" if self.existing else ""))
        if any(r.unbounded for r in self.unfinished):
            out.append("  note: save_total_limit unset and max_steps -1: every checkpoint is kept and their "
                       "number depends on the data; counted as one")
        return out

    def error(self) -> str:
        """Why it does not fit and what lowers the need."""
        c = self.checkpoint / GIB
        fixes = []
        if self.save_total_limit and self.save_total_limit > 1:
            fixes.append(f"training.grpo.save_total_limit {self.save_total_limit - 1} (now "
                         f"{self.save_total_limit}; each checkpoint is {c:.1f} GiB)")
        if self.keep_checkpoints:
            fixes.append("training.keep_checkpoints false (now true: each run leaves "
                         f"{self.save_total_limit} checkpoint(s) of {c:.1f} GiB)")
        else:
            fixes.append("(training.keep_checkpoints is false already: checkpoints go once a run is done)")
        fixes.append("fewer runs (run_datasets, run_methods, seeds), or `results` on a larger disk "
                     "(training.check_disk false only reports)")
        return (f"not enough disk under {self.root}: {self.need / GIB:.1f} GiB needed by {len(self.unfinished)} "
                f"unfinished training run(s), {self.free / GIB:.1f} GiB free. Lower it with: " + "; ".join(fixes))


def checkpoint_bytes(shape: ModelShape, *, deepspeed: bool, freeze_towers: bool = True,
                     save_16bit: bool = True, lora: int | None = None) -> tuple[float, str]:
    """Bytes of one training checkpoint and how (module doc); ``lora``: adapter parameters, under LoRA."""
    p, t = shape.total, shape.trainable(freeze_towers)
    if lora is not None:
        return 12 * lora, f"LoRA adapters + Adam m, v 12 B x {billions(lora)}"
    if deepspeed:
        w = 2 * p if save_16bit else 0
        return 12 * t + w, (f"ZeRO optimizer state 12 B x {billions(t)}"
                            + (f" + bf16 weights 2 B x {billions(p)}" if save_16bit else
                               " (no 16-bit weights: stage3_gather_16bit_weights_on_model_save false)"))
    return 4 * p + 8 * t, f"fp32 weights 4 B x {billions(p)} + Adam m, v 8 B x {billions(t)}"


def final_bytes(shape: ModelShape, *, deepspeed: bool, lora: int | None = None) -> tuple[float, str]:
    if lora is not None:
        return 4 * lora, f"adapters alone, fp32 4 B x {billions(lora)} (no merged copy)"
    b = 2 if deepspeed else 4
    return b * shape.total, f"{'bf16' if deepspeed else 'fp32'}, {b} B x {billions(shape.total)}"


def run_checkpoints(settings: dict[str, Any], keep: bool) -> tuple[int, int, int, bool]:
    """(peak, at the end, kept after the run, unbounded) checkpoint counts
    of a run with these TRL settings (module doc)."""
    if str(settings.get("save_strategy", "steps")) == "no":
        return 0, 0, 0, False
    limit = settings.get("save_total_limit")
    max_steps = int(settings.get("max_steps", -1) or -1)
    save_steps = float(settings.get("save_steps", 500) or 500)
    written = int(max_steps // save_steps) if max_steps > 0 and save_steps >= 1 else None
    if limit is not None and int(limit) > 0:
        peak, end = int(limit) + 1, int(limit)
        if written is not None:
            peak, end = min(peak, written), min(end, written)
        return peak, end, end if keep else 0, False
    if written is None:
        return 1, 1, 1 if keep else 0, True
    return written, written, written if keep else 0, False


def training_runs(config: dict[str, Any], only: tuple[str, str, int] | None = None) -> list[Run]:
    """Every training run of the grid (:func:`shala.plan.make_plan`), with
    its checkpoints; ``only`` (dataset, method, seed): that one job's run,
    read from that job's config alone (a training job's own preflight)."""
    from ..plan import make_plan, run_dir, training_run

    keep = bool(config["training"]["keep_checkpoints"])
    runs = [training_run(config, *only)] if only else make_plan(config).training
    return [Run(Path(run_dir(config["results"], r)), r.trainer, *run_checkpoints(r.settings, keep)) for r in runs]


def folder_bytes(path: Path) -> float:
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.stat(os.path.join(root, f), follow_symlinks=False).st_size
            except OSError:
                pass
    return float(total)


def existing_parent(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_disk(config: dict[str, Any], shape: ModelShape, *, deepspeed: bool, save_16bit: bool = True,
               free_gib: float | None = None, lora: int | None = None,
               only: tuple[str, str, int] | None = None) -> DiskCheck:
    """The disk need of the config's unfinished training runs and the free
    space under ``results`` (``free_gib`` overrides the measurement;
    ``lora``: adapter parameters when ``training.peft`` is on)."""
    training = config["training"]
    freeze = bool(training["freeze_unused_towers"])
    ckpt, ckpt_formula = checkpoint_bytes(shape, deepspeed=deepspeed, freeze_towers=freeze, save_16bit=save_16bit,
                                          lora=lora)
    final, final_formula = final_bytes(shape, deepspeed=deepspeed, lora=lora)
    runs = training_runs(config, only)
    unfinished = [r for r in runs if not (r.path / "run.json").is_file()]
    root = existing_parent(Path(str(config["results"])))
    if free_gib is not None:
        free, free_from = free_gib * GIB, "--free-disk"
    else:
        free, free_from = float(shutil.disk_usage(root).free), "shutil.disk_usage"
    limit = training["grpo"]["save_total_limit"]  # schema default 2; null: every checkpoint kept
    return DiskCheck(root=root, free=free, free_from=free_from, checkpoint=ckpt, checkpoint_formula=ckpt_formula,
                     final=final, final_formula=final_formula, runs=runs, unfinished=unfinished,
                     existing=sum(folder_bytes(r.path) for r in unfinished if r.path.is_dir()),
                     save_total_limit=limit, keep_checkpoints=bool(training["keep_checkpoints"]))
