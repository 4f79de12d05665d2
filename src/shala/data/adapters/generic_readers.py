"""File readers of the generic adapter (:mod:`shala.data.adapters.generic`):
CSV, TSV, JSON Lines and JSON files -> records that know their line.

One job: read a source file into ``(key, line, record)`` so that every
error about a bad record can name file, line and field. It is apart from
the format logic (:mod:`shala.data.adapters.generic_formats`) because other
adapters read CSV with it too (:func:`iter_csv`), and because the JSON
scanner (positions, duplicate keys) is its own piece of work.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ...errors import InputError


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
        # a dotted path (text.user) needs only its first column (text)
        missing = [c for c in required if c not in header and c.partition(".")[0] not in header]
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

    A literal key with dots wins over the nested reading. A string met on
    the way is read as JSON when the path goes on (LeWiDi 2023 ConvAbuse
    stores its turns as ``text: '{"user": ...}'``): copying the data into
    a new shape is what a user of the generic adapter should not have to do.
    """
    if name in record:
        return record[name]
    head, dot, rest = name.partition(".")
    inner = record.get(head)
    if dot and isinstance(inner, str):
        inner = json_object_in(inner, path=path, line=line, field=head, reading=name)
    if dot and isinstance(inner, dict):
        try:
            return get_field(inner, rest, path=path, line=line)
        except InputError as exc:
            if exc.reason != "missing field":
                raise
    raise InputError("missing field", path=path, line=line, field=name)


def json_object_in(text: str, *, path: Path, line: int, field: str, reading: str) -> dict:
    """The JSON object a string field holds; anything else is an error naming
    ``reading``, the dotted path that needed it."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"cannot read {reading!r}: {field!r} is a string but not JSON ({exc.msg} "
                         f"at character {exc.pos} of it)", path=path, line=line, field=reading) from None
    if not isinstance(value, dict):
        raise InputError(f"cannot read {reading!r}: {field!r} holds JSON {type(value).__name__}, "
                         "not an object", path=path, line=line, field=reading)
    return value
