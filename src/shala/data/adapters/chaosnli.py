"""ChaosNLI (SNLI and MNLI-matched parts), docs/design.md §3.1.

100 NLI judgements per item in ``label_count`` (order e, n, c). The alphaNLI
part is not used. The 5 original votes (``old_labels``) are read by the
``old_labels`` reference predictor from the same files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...errors import InputError
from ...jsonio import iter_jsonl
from ..items import make_item

NAME = "chaosnli"
AMBIGUITY = "entropy"
LABELS = ["entailment", "neutral", "contradiction"]
DEFAULT_SPLIT = (0.65, 0.15)
TEXT_FIELDS = ("premise", "hypothesis")  # the inputs of every item: what prompt.target may name
FILES = {"snli": "chaosNLI_snli.jsonl", "mnli": "chaosNLI_mnli_m.jsonl"}


def iter_records(source: Path):
    """Yield ``(subset, path, line_number, record)`` for both source files."""
    for subset, fname in FILES.items():
        path = Path(source) / fname
        if not path.is_file():
            raise InputError("source file not found", path=path)
        for lineno, rec in iter_jsonl(path):
            yield subset, path, lineno, rec


def load(source: Path, options: dict[str, Any] | None = None, seed: int = 0) -> list[dict[str, Any]]:
    items = []
    for subset, path, lineno, rec in iter_records(source):
        where = {"path": path, "line": lineno}
        for key in ("uid", "label_count", "example"):
            if key not in rec:
                raise InputError("missing field", field=key, **where)
        ex = rec["example"]
        for key in ("premise", "hypothesis"):
            if not isinstance(ex, dict) or not isinstance(ex.get(key), str):
                raise InputError("missing or non-text field", field=f"example.{key}", **where)
        counts = rec["label_count"]
        if not isinstance(counts, list) or len(counts) != len(LABELS):
            raise InputError(f"expected {len(LABELS)} vote counts", field="label_count", **where)
        if not all(isinstance(c, int) and not isinstance(c, bool) for c in counts):
            raise InputError("vote counts must be integers", field="label_count", **where)
        items.append(make_item(
            id=rec["uid"], dataset=NAME, subset=subset,
            inputs={"premise": ex["premise"], "hypothesis": ex["hypothesis"]},
            labels=LABELS, counts=counts, ambiguity=AMBIGUITY, where=where,
        ))
    return items


def old_label_counts(source: Path) -> dict[str, list[int]]:
    """uid -> vote counts of the 5 original (pre-ChaosNLI) annotators."""
    out = {}
    for _, path, lineno, rec in iter_records(source):
        old = rec.get("old_labels")
        if not isinstance(old, list) or not old:
            raise InputError("missing or empty", path=path, line=lineno, field="old_labels")
        counts = [0] * len(LABELS)
        for lab in old:
            if lab not in LABELS:
                raise InputError(f"label {lab!r} not in {LABELS}", path=path, line=lineno, field="old_labels")
            counts[LABELS.index(lab)] += 1
        out[rec["uid"]] = counts
    return out
