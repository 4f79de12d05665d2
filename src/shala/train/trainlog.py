"""Checkpoints and the per-step training log (``train_log.jsonl``) of a
GRPO run: finding the checkpoint to resume from, trimming the log to it,
and summarising the logged rewards into the run record."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..jsonio import dumps_line, read_jsonl

CHECKPOINTS = "checkpoints"


def last_checkpoint(out_dir: Path) -> Path | None:
    """The newest complete ``checkpoints/checkpoint-N`` (None if none)."""
    from transformers.trainer_utils import get_last_checkpoint

    ckpt_dir = Path(out_dir) / CHECKPOINTS
    if not ckpt_dir.is_dir():
        return None
    last = get_last_checkpoint(str(ckpt_dir))
    if last and (Path(last) / "trainer_state.json").is_file():
        return Path(last)
    return None


def checkpoint_step(ckpt: Path) -> int:
    from ..jsonio import read_json

    return int(read_json(Path(ckpt) / "trainer_state.json")["global_step"])


def prepare_log(log_path: Path, resume_step: int | None) -> None:
    """Start a fresh log, or on resume drop the rows an interrupted run wrote
    after its last checkpoint (they will be redone)."""
    if resume_step is None or not log_path.is_file():
        log_path.unlink(missing_ok=True)
        return
    rows = [r for r in read_jsonl(log_path) if r.get("step", 0) <= resume_step]
    with log_path.open("w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(dumps_line(r) + "\n")


def append_log(log_path: Path, row: dict[str, Any]) -> None:
    with log_path.open("a", encoding="utf-8") as fh:
        fh.write(dumps_line(row) + "\n")


def reward_summary(log_path: Path) -> dict[str, Any]:
    """Mean reward / parse rate over the first and last steps of the whole
    run (resumed parts included); the window is a tenth of the steps, >= 1."""
    steps = {}
    for r in read_jsonl(log_path):
        if r.get("event") == "step" and r.get("reward_mean") is not None:
            steps[r["step"]] = r  # a redone step replaces its earlier row
    rows = [steps[k] for k in sorted(steps)]
    if not rows:
        return {"n_logged_steps": 0}
    k = max(1, len(rows) // 10)

    def mean(key, part):
        vals = [r[key] for r in part if r.get(key) is not None]
        return sum(vals) / len(vals) if vals else None

    first, last = rows[:k], rows[-k:]
    return {"n_logged_steps": len(rows), "window_steps": k,
            "reward_mean_first": mean("reward_mean", first), "reward_mean_last": mean("reward_mean", last),
            "parse_rate_first": mean("parse_rate", first), "parse_rate_last": mean("parse_rate", last),
            "zero_spread_frac_first": mean("zero_spread_frac", first),
            "zero_spread_frac_last": mean("zero_spread_frac", last)}
