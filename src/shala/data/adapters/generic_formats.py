"""The three input formats of the generic adapter
(:mod:`shala.data.adapters.generic`, whose docstring documents the options):
``long``, ``counts`` and ``lewidi`` records -> canonical items.

One job: turn located records (:mod:`shala.data.adapters.generic_readers`) into
votes, counts and item metadata, checking every value against the label
set. It is apart from the option handling in ``generic`` so that each
module stays one readable piece; ``generic.load`` picks the loader from
:data:`LOADERS` and passes the adapter's name, which every item carries as
its ``dataset`` (this module imports nothing from ``generic``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ...errors import InputError
from ..items import make_item
from .generic_readers import file_type_of, get_field, iter_records

SPLIT_NAMES = {"train": "train", "training": "train", "dev": "validation", "val": "validation",
               "valid": "validation", "validation": "validation", "test": "test"}


# ---------------------------------------------------------------- values

def class_indices(raw: Any, opts: dict[str, Any], *, split_multi: bool, path: Path, line: int,
                  field: str) -> list[int]:
    """Class indices one annotation votes for (each class once).

    Raw values go through ``label_map``; a value mapped to ``null`` gives no
    vote. Anything else outside the label set is an error.
    """
    if raw is None or isinstance(raw, (dict, list)):
        raise InputError(f"expected a label, got {raw!r}", path=path, line=line, field=field)
    text = str(raw)
    sep = opts.get("multi_label_sep")
    parts = text.split(sep) if split_multi and sep else [text]
    labels, label_map = opts["labels"], opts["label_map"]
    out: list[int] = []
    for part in parts:
        part = part.strip()
        lab = label_map[part] if part in label_map else part
        if lab is None:
            continue
        if lab not in labels:
            raise InputError(f"label {part!r} not in label set {labels}", path=path, line=line, field=field)
        idx = labels.index(lab)
        if idx not in out:
            out.append(idx)
    return out


def as_count(value: Any, *, path: Path, line: int, field: str) -> int | float:
    """A vote count: null/empty -> 0, integral floats -> int, negatives are errors."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return 0
    if isinstance(value, bool):
        raise InputError(f"invalid count {value!r}", path=path, line=line, field=field)
    try:
        num = float(value)
    except (TypeError, ValueError):
        raise InputError(f"invalid count {value!r}", path=path, line=line, field=field) from None
    if not math.isfinite(num) or num < 0:
        raise InputError(f"invalid count {value!r}", path=path, line=line, field=field)
    return int(num) if num.is_integer() else num


def _as_text(value: Any, *, path: Path, line: int, field: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise InputError(f"expected text, got {type(value).__name__}", path=path, line=line, field=field)


def item_meta(rec: dict, key: str | None, opts: dict[str, Any], *, path: Path, line: int) -> dict[str, Any]:
    """Id, inputs, subset and source split of one record (the non-vote parts)."""
    loc = {"path": path, "line": line}
    raw_id = key if key is not None else get_field(rec, opts["id_field"], **loc)
    item_id = _as_text(raw_id, field=opts["id_field"], **loc).strip()
    if not item_id:
        raise InputError("empty item id", field=opts["id_field"], **loc)
    if opts["id_prefix"] == "file":
        item_id = f"{path.stem}:{item_id}"
    inputs = {name: _as_text(get_field(rec, src, **loc), field=src, **loc)
              for name, src in opts["text_fields"].items()}
    subset = None
    if opts.get("subset_field"):
        subset = _as_text(get_field(rec, opts["subset_field"], **loc), field=opts["subset_field"], **loc)
    split = None
    if opts["keep_source_splits"]:
        raw = _as_text(get_field(rec, opts["split_field"], **loc), field=opts["split_field"], **loc)
        split = SPLIT_NAMES.get(raw.strip().lower())
        if split is None:
            raise InputError(f"unknown split {raw!r} (expected one of {sorted(SPLIT_NAMES)})",
                             field=opts["split_field"], **loc)
    return {"id": item_id, "inputs": inputs, "subset": subset, "split": split}


def _finish(dataset: str, meta: dict[str, Any], counts: list, n_annotators: int | None,
            opts: dict[str, Any], where: dict[str, Any]) -> dict[str, Any]:
    item = make_item(id=meta["id"], dataset=dataset, subset=meta["subset"], inputs=meta["inputs"],
                     labels=opts["labels"], counts=counts, ambiguity=opts["ambiguity"],
                     n_annotators=n_annotators, where=where)
    item["split"] = meta["split"]
    return item


def _csv_required(opts: dict[str, Any], *fields: str | None) -> list[str]:
    names = [opts["id_field"], *opts["text_fields"].values(), *fields]
    if opts.get("subset_field"):
        names.append(opts["subset_field"])
    if opts["keep_source_splits"]:
        names.append(opts["split_field"])
    return [n for n in dict.fromkeys(names) if n]


# ---------------------------------------------------------------- formats

def load_long(files: list[Path], opts: dict[str, Any], dataset: str) -> list[dict[str, Any]]:
    """One row per annotation, grouped by item id in order of first appearance.

    Rows of one item must agree on text, subset and split (a clash usually
    means two items share an id).
    """
    groups: dict[str, dict[str, Any]] = {}
    required = _csv_required(opts, opts["label_field"], opts["annotator_field"])
    for path in files:
        ftype = file_type_of(path, opts.get("file_type"))
        for key, line, rec in iter_records(path, ftype, required):
            meta = item_meta(rec, key, opts, path=path, line=line)
            votes = class_indices(get_field(rec, opts["label_field"], path=path, line=line), opts,
                                  split_multi=True, path=path, line=line, field=opts["label_field"])
            g = groups.get(meta["id"])
            if g is None:
                g = groups[meta["id"]] = {"meta": meta, "where": {"path": path, "line": line},
                                          "counts": [0] * len(opts["labels"]), "annotators": [], "rows": 0}
            else:
                for part in ("inputs", "subset", "split"):
                    if meta[part] != g["meta"][part]:
                        raise InputError(f"item {meta['id']!r}: {part} differs from its row at "
                                         f"{g['where']['path']}:{g['where']['line']}", path=path, line=line,
                                         field=part)
            if not votes:
                continue
            for v in votes:
                g["counts"][v] += 1
            g["rows"] += 1
            if opts["annotator_field"]:
                ann = _as_text(get_field(rec, opts["annotator_field"], path=path, line=line),
                               path=path, line=line, field=opts["annotator_field"])
                if ann not in g["annotators"]:
                    g["annotators"].append(ann)
    return [_finish(dataset, g["meta"], g["counts"],
                    len(g["annotators"]) if opts["annotator_field"] else g["rows"], opts, g["where"])
            for g in groups.values()]


def _counts_of(rec: dict, opts: dict[str, Any], *, path: Path, line: int) -> list:
    labels = opts["labels"]
    counts: list = [0] * len(labels)
    field = opts.get("counts_field")
    if field:
        raw = get_field(rec, field, path=path, line=line)
        if not isinstance(raw, dict):
            raise InputError("expected an object {label: count}", path=path, line=line, field=field)
        for name, value in raw.items():
            n = as_count(value, path=path, line=line, field=f"{field}.{name}")
            for idx in class_indices(name, opts, split_multi=False, path=path, line=line, field=field):
                counts[idx] += n
        return counts
    for idx, lab in enumerate(labels):
        col = opts["count_columns"][lab]
        counts[idx] = as_count(get_field(rec, col, path=path, line=line), path=path, line=line, field=col)
    return counts


def load_counts(files: list[Path], opts: dict[str, Any], dataset: str) -> list[dict[str, Any]]:
    """One row per item with its vote counts."""
    items, seen = [], {}
    count_cols = [] if opts.get("counts_field") else list(opts["count_columns"].values())
    required = _csv_required(opts, opts.get("counts_field"), opts.get("n_annotators_field"), *count_cols)
    for path in files:
        ftype = file_type_of(path, opts.get("file_type"))
        for key, line, rec in iter_records(path, ftype, required):
            meta = item_meta(rec, key, opts, path=path, line=line)
            if meta["id"] in seen:
                raise InputError(f"item id {meta['id']!r} already used at {seen[meta['id']]}",
                                 path=path, line=line, field=opts["id_field"])
            seen[meta["id"]] = f"{path}:{line}"
            counts = _counts_of(rec, opts, path=path, line=line)
            n_ann = None
            if opts.get("n_annotators_field"):
                n_field = opts["n_annotators_field"]
                n_ann = as_count(get_field(rec, n_field, path=path, line=line), path=path, line=line, field=n_field)
                if not isinstance(n_ann, int):
                    raise InputError(f"expected a whole number, got {n_ann!r}", path=path, line=line, field=n_field)
            items.append(_finish(dataset, meta, counts, n_ann, opts, {"path": path, "line": line}))
    return items


def _lewidi_votes(rec: dict, opts: dict[str, Any], *, path: Path, line: int) -> tuple[list[list[int]], int]:
    """Per-annotation class indices and the number of annotators of one record.

    LeWiDi 2023: ``"0,1,1"`` aligned with ``"Ann1,Ann2,Ann3"``; LeWiDi 2025:
    ``{"Ann1": "neutral", "Ann2": "entailment,neutral"}``.
    """
    field, ann_field = opts["label_field"], opts["annotator_field"]
    raw = get_field(rec, field, path=path, line=line)
    if isinstance(raw, dict):
        annotations, annotators, multi = [raw[k] for k in raw], list(raw), True
    elif isinstance(raw, str):
        annotations, multi = raw.split(","), False
        annotators = None
        if ann_field:
            names = get_field(rec, ann_field, path=path, line=line)
            annotators = [a.strip() for a in _as_text(names, path=path, line=line, field=ann_field).split(",")]
            if len(annotators) != len(annotations):
                raise InputError(f"{len(annotations)} annotations but {len(annotators)} annotators",
                                 path=path, line=line, field=ann_field)
    else:
        raise InputError("expected a comma-separated string or {annotator: label}", path=path, line=line,
                         field=field)
    votes = [class_indices(a, opts, split_multi=multi, path=path, line=line, field=field) for a in annotations]
    voters = {annotators[i] if annotators else i for i, v in enumerate(votes) if v}
    return votes, len(voters)


def load_lewidi(files: list[Path], opts: dict[str, Any], dataset: str) -> list[dict[str, Any]]:
    """LeWiDi harmonised JSON: each file one object ``{item id: record}``."""
    items, seen = [], {}
    for path in files:
        for key, line, rec in iter_records(path, "json_document"):
            if key is None:
                raise InputError("expected one JSON object keyed by item id", path=path, line=line)
            meta = item_meta(rec, key, opts, path=path, line=line)
            if meta["id"] in seen:
                raise InputError(f"item id {meta['id']!r} already used at {seen[meta['id']]}",
                                 path=path, line=line, field="id")
            seen[meta["id"]] = f"{path}:{line}"
            votes, n_ann = _lewidi_votes(rec, opts, path=path, line=line)
            counts = [0] * len(opts["labels"])
            for v in votes:
                for idx in v:
                    counts[idx] += 1
            items.append(_finish(dataset, meta, counts, n_ann, opts, {"path": path, "line": line}))
    return items


LOADERS = {"long": load_long, "counts": load_counts, "lewidi": load_lewidi}
