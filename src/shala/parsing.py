"""Turn a model completion into a class distribution (docs/design.md §4).

Model output is untrusted data: we scan it for JSON objects with the standard
``json`` decoder, never ``eval``. :func:`parse_distribution` never raises.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

_DECODER = json.JSONDecoder()
_OPEN = re.compile(r"\{")
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


@dataclass(frozen=True)
class ParseResult:
    """``dist`` is None on failure; ``sum_error`` = |raw sum − 1| on success."""

    dist: np.ndarray | None
    sum_error: float | None
    error: str | None

    @property
    def ok(self) -> bool:
        return self.dist is not None


def _to_number(value: object) -> float | None:
    """Numbers, numeric strings and percentages ('35%' -> 0.35); else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        s = value.strip()
        scale = 1.0
        if s.endswith("%"):
            s, scale = s[:-1].strip(), 0.01
        if _NUMBER.match(s):
            try:
                return float(s) * scale
            except (ValueError, OverflowError):
                return None
        if s.lower() in ("nan", "inf", "+inf", "-inf", "infinity", "-infinity"):
            return float(s)
    return None


#: Only this many characters, ending at the last '}', are scanned for JSON.
#: The answer is the *last* JSON object, and docs/design.md §4 asks for exactly one
#: short object (a few dozen characters per class), so the tail holds it;
#: scanning the whole text would cost time quadratic in its length on
#: adversarial input (e.g. 200 KB of '{' took ~13 s).
MAX_SCAN_CHARS = 4096
#: At most this many '{' positions (the last ones in the window) are tried
#: as object starts, so one completion costs at most this many decoder calls.
MAX_OBJECT_STARTS = 256


def _json_objects(text: str) -> list[dict]:
    """The JSON objects near the end of ``text``, in order of appearance.

    Bounded work whatever the input: only the window of
    :data:`MAX_SCAN_CHARS` characters that ends at the last ``}`` is read
    (nothing after the last ``}`` can belong to an object), and only the last
    :data:`MAX_OBJECT_STARTS` ``{`` in it are tried as starts, each with one
    ``raw_decode`` call. Objects are taken left to right; a start inside an
    object already decoded is skipped. An answer longer than the window, or
    followed by more than a window of text with braces, is not found.

    Nested objects are also offered (a model may wrap its answer in
    ``{"answer": {...}}``), after their parent, so "the last one with a
    class key" prefers the innermost, last answer.
    """
    last = text.rfind("}")
    if last < 0:
        return []
    lo = max(0, last + 1 - MAX_SCAN_CHARS)
    window = text[lo:last + 1]
    starts = [m.start() for m in _OPEN.finditer(window)]
    found: list[dict] = []
    end = 0
    for i in starts[-MAX_OBJECT_STARTS:]:
        if i < end:  # inside the object just decoded
            continue
        try:
            obj, j = _DECODER.raw_decode(window, i)
        except (json.JSONDecodeError, RecursionError, ValueError):
            continue
        if isinstance(obj, dict):
            stack = [obj]
            while stack:
                o = stack.pop(0)
                found.append(o)
                stack.extend(v for v in o.values() if isinstance(v, dict))
        end = j
    return found


def _normalise_key(key: str) -> str:
    return key.strip().lower()


def parse_distribution(text: object, labels: Sequence[str]) -> ParseResult:
    """Parse the last JSON object in ``text`` that has a class key.

    Time is bounded whatever the length of ``text``: only its tail is
    scanned (see :func:`_json_objects`; the answer is the last object).

    Keys match case-insensitively, ignoring surrounding space; missing
    classes count 0; a negative/NaN/infinite/non-numeric class value or an
    all-zero object is a failure; otherwise values are renormalised.
    """
    try:
        if not isinstance(text, str):
            return ParseResult(None, None, "completion is not a string")
        wanted = {_normalise_key(lab): k for k, lab in enumerate(labels)}
        candidates = [o for o in _json_objects(text)
                      if any(isinstance(k, str) and _normalise_key(k) in wanted for k in o)]
        if not candidates:
            return ParseResult(None, None, "no JSON object with a class key")
        obj = candidates[-1]
        values = np.zeros(len(labels), dtype=np.float64)
        for key, raw in obj.items():
            k = wanted.get(_normalise_key(key)) if isinstance(key, str) else None
            if k is None:
                continue
            v = _to_number(raw)
            if v is None:
                return ParseResult(None, None, f"value for {key!r} is not a number")
            if not math.isfinite(v):
                return ParseResult(None, None, f"value for {key!r} is not finite")
            if v < 0:
                return ParseResult(None, None, f"value for {key!r} is negative")
            values[k] = v
        total = float(values.sum())
        if not math.isfinite(total):
            return ParseResult(None, None, "values overflow")
        if total <= 0:
            return ParseResult(None, None, "all values are zero")
        return ParseResult(values / total, abs(total - 1.0), None)
    except Exception as exc:  # never raise on model output  # noqa: BLE001
        return ParseResult(None, None, f"parser error: {type(exc).__name__}")


def format_distribution(labels: Sequence[str], dist: Sequence[float], digits: int = 2) -> str:
    """The target JSON for a distribution, keys in label order (SFT targets,
    reference predictors). Rounded values are fixed up to sum exactly 1."""
    vals = [round(float(x), digits) for x in dist]
    if vals:
        k = int(np.argmax(vals))
        vals[k] = round(vals[k] + (1.0 - sum(vals)), digits)
    return json.dumps({lab: v for lab, v in zip(labels, vals)})


def format_percent(labels: Sequence[str], dist: Sequence[float]) -> str:
    """The target JSON as whole numbers out of 100 (a prompt that asks "how
    many of 100 annotators chose each label"); largest-remainder rounding,
    so the values sum to exactly 100."""
    raw = np.asarray(dist, dtype=np.float64) * 100.0
    vals = np.floor(raw).astype(int)
    short = 100 - int(vals.sum())
    for k in np.argsort(-(raw - vals), kind="stable")[:max(short, 0)]:
        vals[k] += 1
    return json.dumps({lab: int(v) for lab, v in zip(labels, vals)})
