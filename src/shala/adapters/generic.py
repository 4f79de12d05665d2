"""Bring your own data (SPEC §3.4): annotations in three common shapes.

Options (``datasets.X.options`` in config):

``format`` (required)
    ``long``: one row per annotation (item id, optional annotator id, label,
    text fields); ``counts``: one row per item with vote counts per class;
    ``lewidi``: the harmonised LeWiDi JSON (one object per file keyed by item
    id, with ``text``, ``annotations`` and ``annotators``; LeWiDi 2023 stores
    both as comma-separated strings, LeWiDi 2025 ``annotations`` as
    ``{annotator: label}``).
``files`` (required)
    a path or a list of paths relative to the source directory; entries with
    ``*``, ``?`` or ``[`` are globs (matches sorted). Every entry must match.
``labels`` (required)
    the class names, in the dataset's label order.
``label_map``
    ``{raw value: class name}`` applied before the label-set check, e.g.
    ``{"0": not_hateful, "1": hateful}``; a raw value mapped to ``null`` is a
    vote deliberately left out (e.g. ``{"idk": null}``).
``id_field`` (default ``id``)
    item id column / field (``long``, ``counts``). In a JSON file that is one
    object keyed by id (``lewidi``), the key is the id.
``id_prefix`` (``none`` | ``file``; default ``file`` for ``lewidi``, else ``none``)
    ``file`` makes ids ``<file stem>:<id>``, for sources whose files reuse
    ids (LeWiDi numbers every split file from 1).
``annotator_field``
    ``long``: optional annotator column; ``n_annotators`` is then the number
    of distinct annotators, otherwise the number of annotation rows.
    ``lewidi``: default ``annotators``.
``label_field``
    ``long``: default ``label``; ``lewidi``: default ``annotations``.
``counts_field``
    ``counts``: a field holding ``{label: count}`` (keys go through
    ``label_map``; ``null`` counts 0). Without it, one column per class:
    ``count_columns`` ``{class: column}`` (default: the class names).
``n_annotators_field``
    ``counts``: optional; otherwise ``n_annotators`` = the rounded vote sum.
``text_fields`` (default ``{text: text}``)
    ``{input name: source field}``; in JSON a dotted path (``text.context``)
    reaches into nested objects.
``multi_label_sep``
    optional separator inside one annotation (``"contradiction,neutral"``
    with ``","``): the annotation votes once for each distinct class. Not
    used for LeWiDi 2023 strings, whose commas separate annotators.
``ambiguity`` (``entropy`` | ``active``; default ``entropy``)
    the ambiguity scheme of :mod:`shala.items`.
``subset_field``
    optional field whose value becomes the item's ``subset``.
``keep_source_splits`` (default false), ``split_field`` (default ``split``)
    keep the source's split (``dev``/``val`` -> ``validation``) instead of
    the seeded random split.
``file_type`` (``csv`` | ``tsv`` | ``jsonl`` | ``json``)
    override the guess from the extension. A ``.json`` file may be JSON
    Lines, an array of records or an object keyed by id.

Every bad record is an :class:`~shala.errors.InputError` naming file, line
(CSV: the header is line 1) and field: a label outside the label set, a
missing field, an item with zero votes, an id used twice.

Example config (the real data in ``../shared/data``)::

    hs_brexit:
      adapter: generic
      split: {train: 0.70, validation: 0.15}
      options:
        format: lewidi
        files: [HS-Brexit_train.json, HS-Brexit_dev.json, HS-Brexit_test.json]
        labels: [not_hateful, hateful]
        label_map: {"0": not_hateful, "1": hateful}
        text_fields: {text: text}
        keep_source_splits: true      # LeWiDi's own train/dev/test
    md_agreement:
      adapter: generic
      split: {train: 0.70, validation: 0.15}
      options:
        format: lewidi
        files: ["MD-Agreement_*.json"]
        labels: [not_offensive, offensive]
        label_map: {"0": not_offensive, "1": offensive}
        subset_field: other_info.domain
        keep_source_splits: true
    varierr:
      adapter: generic
      split: {train: 0.70, validation: 0.15}
      options:
        format: counts
        files: [varierr.json]           # JSON Lines despite the extension
        labels: [entailment, neutral, contradiction]
        counts_field: label_count_round_1
        text_fields: {premise: context, hypothesis: statement}
        ambiguity: entropy

and a long-format CSV of your own (``item,annotator,label,text``)::

    my_data:
      adapter: generic
      split: {train: 0.70, validation: 0.15}
      options:
        format: long
        files: [annotations.csv]
        labels: [negative, neutral, positive]
        id_field: item
        annotator_field: annotator
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError, InputError
from ..items import AMBIGUITY_SCHEMES, make_item

NAME = "generic"
AMBIGUITY = "entropy"  # default; the ``ambiguity`` option overrides it per dataset
FORMATS = ("long", "counts", "lewidi")
FILE_TYPES = ("csv", "tsv", "jsonl", "json")
SPLIT_NAMES = {"train": "train", "training": "train", "dev": "validation", "val": "validation",
               "valid": "validation", "validation": "validation", "test": "test"}
KNOWN_OPTIONS = {
    "format", "files", "labels", "label_map", "id_field", "id_prefix", "annotator_field", "label_field",
    "counts_field", "count_columns", "n_annotators_field", "text_fields", "multi_label_sep", "ambiguity",
    "subset_field", "keep_source_splits", "split_field", "file_type",
}


# ---------------------------------------------------------------- options

def ambiguity_scheme(options: dict[str, Any]) -> str:
    """The ambiguity scheme this dataset uses (the ``ambiguity`` option)."""
    return (options or {}).get("ambiguity", AMBIGUITY)


def check_options(options: dict[str, Any] | None) -> dict[str, Any]:
    """Validate the options and fill in the defaults; typos fail early."""
    opts = dict(options or {})
    unknown = sorted(set(opts) - KNOWN_OPTIONS)
    if unknown:
        raise ConfigError(f"generic adapter: unknown option(s) {unknown}; known: {sorted(KNOWN_OPTIONS)}")
    fmt = opts.get("format")
    if fmt not in FORMATS:
        raise ConfigError(f"generic adapter: option 'format' must be one of {list(FORMATS)}, got {fmt!r}")
    labels = opts.get("labels")
    if (not isinstance(labels, list) or len(labels) < 2 or not all(isinstance(x, str) and x for x in labels)
            or len(set(labels)) != len(labels)):
        raise ConfigError("generic adapter: option 'labels' must list at least two distinct class names")
    files = opts.get("files")
    if isinstance(files, str):
        files = [files]
    if not files or not all(isinstance(f, str) and f for f in files):
        raise ConfigError("generic adapter: option 'files' must name at least one file")
    label_map = opts.get("label_map") or {}
    if not isinstance(label_map, dict):
        raise ConfigError("generic adapter: option 'label_map' must be a mapping")
    for raw, lab in label_map.items():
        if lab is not None and lab not in labels:
            raise ConfigError(f"generic adapter: label_map maps {raw!r} to {lab!r}, not in labels {labels}")
    if ambiguity_scheme(opts) not in AMBIGUITY_SCHEMES:
        raise ConfigError(f"generic adapter: option 'ambiguity' must be one of {list(AMBIGUITY_SCHEMES)}")
    if opts.get("file_type") not in (None, *FILE_TYPES):
        raise ConfigError(f"generic adapter: option 'file_type' must be one of {list(FILE_TYPES)}")
    id_prefix = opts.get("id_prefix", "file" if fmt == "lewidi" else "none")
    if id_prefix not in ("none", "file"):
        raise ConfigError("generic adapter: option 'id_prefix' must be 'none' or 'file'")
    text_fields = opts.get("text_fields", {"text": "text"})
    if not isinstance(text_fields, dict) or not all(isinstance(v, str) for v in text_fields.values()):
        raise ConfigError("generic adapter: option 'text_fields' must map input names to field names")
    count_columns = opts.get("count_columns") or {lab: lab for lab in labels}
    if not isinstance(count_columns, dict) or set(count_columns) != set(labels):
        raise ConfigError("generic adapter: option 'count_columns' must name one column per class")
    sep = opts.get("multi_label_sep")
    if sep is not None and (not isinstance(sep, str) or not sep):
        raise ConfigError("generic adapter: option 'multi_label_sep' must be a non-empty string")
    return {
        **opts, "files": list(files), "label_map": {str(k).strip(): v for k, v in label_map.items()},
        "id_field": opts.get("id_field", "id"), "id_prefix": id_prefix, "text_fields": text_fields,
        "label_field": opts.get("label_field", "annotations" if fmt == "lewidi" else "label"),
        "annotator_field": opts.get("annotator_field", "annotators" if fmt == "lewidi" else None),
        "count_columns": count_columns, "split_field": opts.get("split_field", "split"),
        "keep_source_splits": bool(opts.get("keep_source_splits", False)),
        "ambiguity": ambiguity_scheme(opts),
    }


def resolve_files(source: Path, patterns: Sequence[str]) -> list[Path]:
    """Paths of ``patterns`` under ``source``, in the given order (globs sorted)."""
    out: list[Path] = []
    for pat in patterns:
        if any(ch in pat for ch in "*?["):
            found = sorted(p for p in Path(source).glob(pat) if p.is_file())
            if not found:
                raise InputError(f"no file matches {pat!r}", path=source, field="files")
        else:
            found = [Path(source) / pat]
            if not found[0].is_file():
                raise InputError("source file not found", path=found[0], field="files")
        out.extend(p for p in found if p not in out)
    return out


# ---------------------------------------------------------------- readers

def iter_csv(path: Path, required: Sequence[str] = (), delimiter: str = ",") -> Iterator[tuple[int, dict[str, str]]]:
    """Yield ``(line, row)``; ``line`` is where the record starts (header = 1).

    Quoted fields may span lines, so the start line is tracked from the
    reader, not by counting rows. Missing columns and ragged rows are errors.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("source file not found", path=path)
    with path.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh, delimiter=delimiter)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise InputError("empty file, expected a header row", path=path, line=1) from None
        except csv.Error as exc:
            raise InputError(f"malformed CSV ({exc})", path=path, line=1) from None
        dupes = sorted({h for h in header if header.count(h) > 1})
        if dupes:
            raise InputError(f"duplicate column(s) {dupes}", path=path, line=1, field=dupes[0])
        missing = [c for c in required if c not in header]
        if missing:
            raise InputError(f"missing column(s) {missing}", path=path, line=1, field=missing[0])
        while True:
            start = reader.line_num + 1
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise InputError(f"malformed CSV ({exc})", path=path, line=start) from None
            if not row:
                continue  # blank line: no record
            if len(row) != len(header):
                raise InputError(f"expected {len(header)} fields, found {len(row)}", path=path, line=start)
            yield start, dict(zip(header, row))


def _skip_ws(text: str, i: int) -> int:
    while i < len(text) and text[i] in " \t\r\n":
        i += 1
    return i


def iter_json_document(path: Path, text: str) -> Iterator[tuple[str | None, int, Any]]:
    """Yield ``(key, line, value)`` for the members of a top-level JSON object
    (or ``(None, line, element)`` for an array), with the line each starts on.

    ``json.load`` forgets positions and silently keeps the last of two equal
    keys; this scanner keeps both, so errors can name the line.
    """
    dec = json.JSONDecoder()
    line, pos = 1, 0

    def line_at(i: int) -> int:
        nonlocal line, pos
        line += text.count("\n", pos, i)
        pos = i
        return line

    def decode(i: int) -> tuple[Any, int]:
        try:
            return dec.raw_decode(text, i)
        except json.JSONDecodeError as exc:
            raise InputError(f"malformed JSON ({exc.msg})", path=path, line=exc.lineno) from None

    def fail(i: int, what: str):
        raise InputError(f"malformed JSON (expected {what})", path=path, line=line_at(i))

    i = _skip_ws(text, 0)
    if i >= len(text) or text[i] not in "{[":
        fail(i, "a JSON object or array")
    is_object, close = text[i] == "{", "}" if text[i] == "{" else "]"
    i = _skip_ws(text, i + 1)
    if i < len(text) and text[i] == close:
        i += 1
    else:
        while True:
            start = i
            key = None
            if is_object:
                if i >= len(text) or text[i] != '"':
                    fail(i, "a string key")
                key, i = decode(i)
                i = _skip_ws(text, i)
                if i >= len(text) or text[i] != ":":
                    fail(i, "':'")
                i = _skip_ws(text, i + 1)
            value, i = decode(i)
            yield key, line_at(start), value
            i = _skip_ws(text, i)
            if i < len(text) and text[i] == ",":
                i = _skip_ws(text, i + 1)
            elif i < len(text) and text[i] == close:
                i += 1
                break
            else:
                fail(i, f"',' or '{close}'")
    if _skip_ws(text, i) != len(text):
        fail(_skip_ws(text, i), "end of file")


def _iter_jsonl(path: Path, text: str) -> Iterator[tuple[str | None, int, Any]]:
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield None, lineno, json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"malformed JSON ({exc.msg} at column {exc.colno})", path=path, line=lineno) from None


def _looks_like_jsonl(text: str) -> bool:
    """True when the first line holds a complete JSON object on its own."""
    first = text.lstrip().split("\n", 1)[0]
    try:
        return isinstance(json.loads(first), dict)
    except json.JSONDecodeError:
        return False


def file_type_of(path: Path, override: str | None) -> str:
    if override:
        return override
    suffix = path.suffix.lower()
    return {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}.get(suffix, "json")


def iter_records(path: Path, file_type: str, required: Sequence[str] = ()) -> Iterator[tuple[str | None, int, dict]]:
    """Yield ``(key, line, record)`` from a CSV/TSV/JSONL/JSON file.

    ``key`` is the member name when the file is one JSON object keyed by id.
    ``required`` columns are checked once on a CSV header. ``json`` sniffs
    JSON Lines; ``json_document`` always reads one JSON object or array.
    """
    if file_type in ("csv", "tsv"):
        for line, row in iter_csv(path, required, delimiter="," if file_type == "csv" else "\t"):
            yield None, line, row
        return
    text = path.read_text(encoding="utf-8-sig")
    sniff_lines = file_type == "json" and text.strip().count("\n") > 0 and _looks_like_jsonl(text)
    if file_type == "jsonl" or sniff_lines:
        records = _iter_jsonl(path, text)
    else:
        records = iter_json_document(path, text)
    for key, line, rec in records:
        if not isinstance(rec, dict):
            raise InputError("expected a JSON object", path=path, line=line)
        yield key, line, rec


def get_field(record: dict, name: str, *, path: Path, line: int) -> Any:
    """``record[name]``, or a dotted path into nested objects (``text.context``).

    A literal key with dots wins over the nested reading.
    """
    if name in record:
        return record[name]
    head, dot, rest = name.partition(".")
    if dot and isinstance(record.get(head), dict):
        try:
            return get_field(record[head], rest, path=path, line=line)
        except InputError:
            pass
    raise InputError("missing field", path=path, line=line, field=name)


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


def _finish(meta: dict[str, Any], counts: list, n_annotators: int | None, opts: dict[str, Any],
            where: dict[str, Any]) -> dict[str, Any]:
    item = make_item(id=meta["id"], dataset=NAME, subset=meta["subset"], inputs=meta["inputs"],
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

def load_long(files: list[Path], opts: dict[str, Any]) -> list[dict[str, Any]]:
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
    return [_finish(g["meta"], g["counts"], len(g["annotators"]) if opts["annotator_field"] else g["rows"],
                    opts, g["where"]) for g in groups.values()]


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


def load_counts(files: list[Path], opts: dict[str, Any]) -> list[dict[str, Any]]:
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
            items.append(_finish(meta, counts, n_ann, opts, {"path": path, "line": line}))
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


def load_lewidi(files: list[Path], opts: dict[str, Any]) -> list[dict[str, Any]]:
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
            items.append(_finish(meta, counts, n_ann, opts, {"path": path, "line": line}))
    return items


LOADERS = {"long": load_long, "counts": load_counts, "lewidi": load_lewidi}


def load(source: Path, options: dict[str, Any] | None = None, seed: int = 0) -> list[dict[str, Any]]:
    """Items from the configured files; ``seed`` is unused (no sampling here)."""
    opts = check_options(options)
    files = resolve_files(Path(source), opts["files"])
    return LOADERS[opts["format"]](files, opts)
