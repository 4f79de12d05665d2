"""What a training run records about itself in ``run.json`` besides its
results: JSON-safe values, ZeRO-3's partitioning, a count of a submodule's
forward calls, and what happens to the checkpoints once the record is
written (the library versions: :mod:`shala.provenance`).

Why one module: GRPO training and SFT must record the same things the same
way, so that their run records compare.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any


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


def checkpoint_policy(config: dict[str, Any]) -> str:
    """What happens to ``out_dir/checkpoints`` once run.json is written."""
    keep = config["training"]["keep_checkpoints"]
    return "kept (training.keep_checkpoints)" if keep else "removed once run.json was written"


def clean_checkpoints(out_dir: Path, config: dict[str, Any]) -> bool:
    """Remove ``out_dir/checkpoints`` after a finished run (call it after
    run.json is written): they exist to resume an interrupted run, and a
    ZeRO-3 checkpoint of the 7B thinker is 101.7 GiB (docs/paper_run.md, "Disk"). The final weights in
    ``out_dir`` stay. Returns whether anything was removed."""
    import shutil

    ckpt = Path(out_dir) / "checkpoints"
    if config["training"]["keep_checkpoints"] or not ckpt.exists():
        return False
    shutil.rmtree(ckpt)
    return True
