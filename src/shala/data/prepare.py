"""``shala prepare``: raw files -> canonical items, seeded splits, stats (docs/design.md §3, §8).

Outputs (all or none, see :func:`shala.jsonio.staged_outputs`):
``items.jsonl``, ``train.jsonl``, ``validation.jsonl``, ``test.jsonl``,
``stats.json`` and ``prepare.json`` (what was done: adapter, options, seed,
source checksums, versions). ``prepare.json`` holds no wall-clock time, so
a rerun is byte-identical in full; timings go to the log.
"""

from __future__ import annotations

import hashlib
import logging
import platform
import time
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import ConfigError, InputError
from ..jsonio import dumps_line, staged_outputs
from .adapters import get_adapter
from .items import (
    ACTIVE_LEVELS,
    ENTROPY_LEVELS,
    SPLITS,
    ambiguity_levels,
    assign_splits,
    check_unique_ids,
    compute_stats,
)

log = logging.getLogger(__name__)

# Split fractions of the built-in datasets (docs/design.md §3), used when no config names them.
DEFAULT_SPLITS = {"chaosnli": (0.65, 0.15), "goemotions": (0.70, 0.15), "msp_podcast": (0.60, 0.20)}
OUTPUT_FILES = ("items.jsonl", "train.jsonl", "validation.jsonl", "test.jsonl", "stats.json", "prepare.json")


def dataset_settings(dataset: str, config: dict[str, Any] | None) -> dict[str, Any]:
    """Adapter, options and split fractions for ``dataset`` from config, or the
    built-in defaults when the dataset is a built-in adapter name."""
    if config and dataset in config["datasets"]:
        d = config["datasets"][dataset]
        return {"adapter": d["adapter"], "options": d["options"],
                "split": (d["split"]["train"], d["split"]["validation"])}
    if dataset in DEFAULT_SPLITS:
        return {"adapter": dataset, "options": {}, "split": DEFAULT_SPLITS[dataset]}
    raise ConfigError(f"dataset {dataset!r} is neither configured nor a built-in adapter "
                      f"({', '.join(DEFAULT_SPLITS)})")


def _levels(items: list[dict[str, Any]], adapter) -> tuple[str, ...]:
    seen = {it["ambiguity"] for it in items}
    if seen <= set(ENTROPY_LEVELS):
        return ENTROPY_LEVELS
    if seen <= set(ACTIVE_LEVELS):
        return ACTIVE_LEVELS
    return ambiguity_levels(getattr(adapter, "AMBIGUITY", "entropy"))


def _source_checksums(source: Path) -> dict[str, str]:
    out = {}
    for p in sorted(source.rglob("*")):
        if p.is_file() and p.suffix in {".jsonl", ".json", ".csv", ".tsv"} and p.stat().st_size < 2**31:
            out[str(p.relative_to(source))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def prepare(dataset: str, source: str | Path, out: str | Path, *, config: dict[str, Any] | None = None,
            seed: int | None = None) -> dict[str, Any]:
    """Run the adapter, assign splits, write the outputs; return stats."""
    source, out = Path(source), Path(out)
    if not source.is_dir():
        raise InputError("source directory not found", path=source)
    settings = dataset_settings(dataset, config)
    seed = seed if seed is not None else (config or {}).get("split_seed", 0)
    adapter = get_adapter(settings["adapter"])
    t0 = time.perf_counter()
    items = adapter.load(source, settings["options"], seed)
    if not items:
        raise InputError("no items after filtering", path=source)
    for it in items:
        it["dataset"] = dataset
    check_unique_ids(items, str(source))
    labels = items[0]["labels"]
    for it in items:
        if it["labels"] != labels:
            raise InputError(f"item {it['id']!r} has labels {it['labels']} but the dataset has {labels}",
                             path=source, field="labels")
    if not all(it["split"] in SPLITS for it in items):
        assign_splits(items, *settings["split"], seed=seed)
    levels = _levels(items, adapter)
    stats = compute_stats(dataset, items, levels)
    record = {
        "dataset": dataset, "adapter": settings["adapter"], "options": settings["options"],
        "split_fractions": {"train": settings["split"][0], "validation": settings["split"][1]},
        "split_seed": seed, "source": str(source), "source_sha256": _source_checksums(source),
        "ambiguity_levels": list(levels), "n_items": len(items),
        "versions": {"shala": __version__, "python": platform.python_version()},
    }
    import json

    with staged_outputs(*(out / f for f in OUTPUT_FILES)) as tmps:
        paths = dict(zip(OUTPUT_FILES, tmps))
        with paths["items.jsonl"].open("w", encoding="utf-8", newline="\n") as fh:
            for it in items:
                fh.write(dumps_line(it) + "\n")
        for split in SPLITS:
            with paths[f"{split}.jsonl"].open("w", encoding="utf-8", newline="\n") as fh:
                for it in items:
                    if it["split"] == split:
                        fh.write(dumps_line(it) + "\n")
        for name, obj in (("stats.json", stats), ("prepare.json", record)):
            paths[name].write_text(json.dumps(obj, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    log.info("prepared %s: %d items (%s) in %.2fs -> %s", dataset, len(items),
             ", ".join(f"{k} {v}" for k, v in stats["split_counts"].items()), time.perf_counter() - t0, out)
    return stats
