"""Canonical items (docs/design.md §3): construction, ambiguity levels, seeded splits, stats.

Every adapter produces items through :func:`make_item`, so the derived fields
(``dist``, ``majority``, ``entropy_norm``, ``n_active``, ``ambiguity``) are
computed in exactly one place.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..errors import InputError

SPLITS = ("train", "validation", "test")
ITEM_KEYS = ("id", "dataset", "subset", "inputs", "labels", "counts", "dist",
             "n_annotators", "majority", "entropy_norm", "n_active", "ambiguity", "split")

# Ambiguity schemes, by name (the dataset config picks one).
ENTROPY_LEVELS = ("low", "medium", "high")
ACTIVE_LEVELS = ("1", "2", "3", "4+")


def normalised_entropy(dist: Sequence[float]) -> float:
    """H~(p) = -sum p log p / log C, in [0, 1]; 0 log 0 = 0.

    Uses ``math.log`` on Python floats so the value is the same on every
    machine (no SIMD-dependent rounding), which keeps files byte-identical.
    """
    c = len(dist)
    if c < 2:
        return 0.0
    h = -sum(p * math.log(p) for p in dist if p > 0)
    return min(1.0, max(0.0, h / math.log(c)))


def ambiguity_by_entropy(entropy_norm: float) -> str:
    """ChaosNLI levels: low [0, .33), medium [.33, .66), high [.66, 1]."""
    if entropy_norm < 0.33:
        return "low"
    if entropy_norm < 0.66:
        return "medium"
    return "high"


def ambiguity_by_active(n_active: int) -> str:
    """Number of classes with votes: '1', '2', '3', '4+'."""
    return str(n_active) if n_active < 4 else "4+"


AMBIGUITY_SCHEMES: dict[str, tuple[tuple[str, ...], Callable[[dict[str, Any]], str]]] = {
    "entropy": (ENTROPY_LEVELS, lambda it: ambiguity_by_entropy(it["entropy_norm"])),
    "active": (ACTIVE_LEVELS, lambda it: ambiguity_by_active(it["n_active"])),
}


def ambiguity_levels(scheme: str) -> tuple[str, ...]:
    return AMBIGUITY_SCHEMES[scheme][0]


def make_item(*, id: str, dataset: str, subset: str | None, inputs: dict[str, str],
              labels: Sequence[str], counts: Sequence[int | float], ambiguity: str,
              n_annotators: int | None = None, where: dict[str, Any] | None = None) -> dict[str, Any]:
    """Build one canonical item; ``ambiguity`` names the scheme.

    ``where`` (``{"path": ..., "line": ...}``) locates the source record for
    error messages. Counts may be fractional only for generic soft-label
    input; an item with no votes is an error, never silently dropped.
    """
    where = where or {}
    labels = list(labels)
    counts = list(counts)
    if len(counts) != len(labels):
        raise InputError(f"{len(counts)} counts for {len(labels)} labels", field="counts", **where)
    for c in counts:
        if not isinstance(c, (int, float)) or isinstance(c, bool) or not math.isfinite(c) or c < 0:
            raise InputError(f"invalid vote count {c!r}", field="counts", **where)
    total = sum(counts)
    if total <= 0:
        raise InputError(f"item {id!r} has zero votes", field="counts", **where)
    dist = [c / total for c in counts]
    majority = labels[int(np.argmax(np.asarray(dist)))]
    ent = normalised_entropy(dist)
    n_active = sum(1 for c in counts if c > 0)
    item = {
        "id": str(id),
        "dataset": dataset,
        "subset": subset,
        "inputs": dict(inputs),
        "labels": labels,
        "counts": counts,
        "dist": dist,
        "n_annotators": int(n_annotators if n_annotators is not None else round(total)),
        "majority": majority,
        "entropy_norm": ent,
        "n_active": n_active,
        "ambiguity": "",
        "split": None,
    }
    try:
        item["ambiguity"] = AMBIGUITY_SCHEMES[ambiguity][1](item)
    except KeyError:
        raise InputError(f"unknown ambiguity scheme {ambiguity!r}", field="ambiguity") from None
    return item


def split_sizes(n: int, f_train: float, f_val: float) -> tuple[int, int, int]:
    """n_train = round(f_train n), n_val = round(f_val n), the rest is test.

    Python's ``round`` (banker's rounding at .5) is used as written in docs/design.md §3.
    """
    n_train = round(f_train * n)
    n_val = round(f_val * n)
    if n_train + n_val > n:
        raise InputError(f"split fractions {f_train}+{f_val} exceed 1", field="split")
    return n_train, n_val, n - n_train - n_val


def assign_splits(items: list[dict[str, Any]], f_train: float, f_val: float, seed: int) -> list[dict[str, Any]]:
    """Set ``split`` on every item from a seeded random permutation.

    numpy's PCG64 ``permutation`` is platform-independent, so the same seed
    gives the same split on any machine. Items keep their source order.
    """
    n = len(items)
    n_train, n_val, _ = split_sizes(n, f_train, f_val)
    perm = np.random.default_rng(seed).permutation(n)
    split_of = np.empty(n, dtype=object)
    split_of[perm[:n_train]] = "train"
    split_of[perm[n_train:n_train + n_val]] = "validation"
    split_of[perm[n_train + n_val:]] = "test"
    for item, s in zip(items, split_of):
        item["split"] = str(s)
    return items


def check_unique_ids(items: list[dict[str, Any]], source: str) -> None:
    seen: dict[str, int] = {}
    for i, item in enumerate(items):
        if item["id"] in seen:
            raise InputError(f"duplicate item id {item['id']!r}", path=source, field="id")
        seen[item["id"]] = i


def _counts(items: list[dict[str, Any]], labels: Sequence[str], levels: Sequence[str]) -> dict[str, Any]:
    maj = Counter(it["majority"] for it in items)
    amb = Counter(it["ambiguity"] for it in items)
    return {
        "n_items": len(items),
        "majority_counts": {c: maj.get(c, 0) for c in labels},
        "ambiguity_counts": {lv: amb.get(lv, 0) for lv in levels},
    }


def compute_stats(dataset: str, items: list[dict[str, Any]], levels: Sequence[str]) -> dict[str, Any]:
    """``stats.json`` of docs/design.md §8 (levels listed in scheme order, zeros kept)."""
    labels = items[0]["labels"] if items else []
    overall = _counts(items, labels, levels)
    splits = Counter(it["split"] for it in items)
    subsets = sorted({it["subset"] for it in items if it["subset"] is not None})
    return {
        "dataset": dataset,
        "n_items": overall["n_items"],
        "labels": list(labels),
        "majority_counts": overall["majority_counts"],
        "ambiguity_counts": overall["ambiguity_counts"],
        "split_counts": {s: splits.get(s, 0) for s in SPLITS},
        "subsets": {s: _counts([it for it in items if it["subset"] == s], labels, levels) for s in subsets},
    }


def validate_item(item: dict[str, Any], *, path: str, line: int) -> None:
    """Check a canonical item read back from JSONL (keys and types)."""
    for key in ITEM_KEYS:
        if key not in item:
            raise InputError("missing field", path=path, line=line, field=key)
    labels, dist = item["labels"], item["dist"]
    if not isinstance(labels, list) or len(labels) < 2:
        raise InputError("need a list of at least two class names", path=path, line=line, field="labels")
    if not isinstance(dist, list) or len(dist) != len(labels):
        raise InputError("must have one value per label", path=path, line=line, field="dist")
    if item["majority"] not in labels:
        raise InputError(f"label {item['majority']!r} not in label set", path=path, line=line, field="majority")


def subsample(items: list[dict[str, Any]], limit: int | None, seed: int = 0) -> list[dict[str, Any]]:
    """A seeded random subset of ``limit`` items, kept in file order.

    Used by ``--limit`` of ``predict`` and ``reference`` (demos): taking the
    first N would take only the first source file (e.g. SNLI, never MNLI).
    Models and reference predictors get the same subset.
    """
    if limit is None or limit >= len(items):
        return items
    keep = np.sort(np.random.default_rng(seed).choice(len(items), size=limit, replace=False))
    return [items[i] for i in keep]
