"""Score predictions against the human label distributions (docs/design.md §6, §8).

Input: predictions JSONL, each line a canonical item plus ``"completion"``.
Output: one metrics JSON with the same metric block overall, per subset, per
ambiguity level, and a per-class block. A block has one key per entry of
:data:`shala.evaluation.metrics.REGISTRY`, which says what each one means.

Decisions the paper leaves open:

- A failed parse is scored as the uniform distribution (``uniform``,
  default; its argmax is the first class by the ties rule) or dropped from
  every metric except ``parse_failure_rate`` (``exclude``).
  ``parse_failure_rate`` and ``n`` always count all rows of the slice;
  ``n_scored`` counts the rows the other metrics are computed on.
- A slice with no scored rows reports ``null`` for those metrics (JSON has
  no NaN); ``mean_sum_error`` is ``null`` when no row of the slice parsed.
- ``pred_spread`` (every block): mean base-2 JS distance between each
  scored prediction and the mean prediction over the slice's scored items;
  0 means the model answers every item alike (an item-independent answer,
  as good as a class prior at best).
- The human hard label is the argmax of ``dist`` (ties -> first class), the
  same rule that defines ``majority``.
- ``by_subset`` lists the non-null subsets, sorted by name; rows with
  ``subset: null`` count only overall.
- ``by_ambiguity`` lists the levels present, in the order of the dataset's
  scheme (``items.ENTROPY_LEVELS`` / ``items.ACTIVE_LEVELS``) when the levels
  belong to one, else sorted by name.
- ``per_class`` (one block per class, label order, over the scored rows):
  ``support`` (items whose human majority is the class) and ``predicted``
  (items whose predicted argmax is it); hard ``precision``, ``recall``,
  ``f1`` on argmax labels (zero_division 0); Kurniawan et al.'s
  ``soft_precision``, ``soft_recall``, ``soft_f1`` (see ``metrics``);
  ``mean_pred`` and ``mean_human``, the mean probability the prediction and
  the annotators give the class (calibration at a glance); and ``jsd``, the
  mean base-2 JS distance over the items whose human majority is the class
  (``null`` when it has none).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..data.items import ACTIVE_LEVELS, ENTROPY_LEVELS
from ..errors import ConfigError, InputError
from ..jsonio import read_jsonl, write_json, write_text
from ..parsing import parse_distribution
from . import metrics as M

POLICIES = ("uniform", "exclude")
JS_BASE = 2
_DIST_TOL = 1e-3


def read_located(path: str | Path) -> list[tuple[int, dict[str, Any]]]:
    """JSONL rows paired with their 1-based line numbers (blank lines skipped),
    so later validation errors can name the line."""
    path = Path(path)
    rows = read_jsonl(path)
    with path.open(encoding="utf-8") as fh:
        lines = [i for i, line in enumerate(fh, 1) if line.strip()]
    return list(zip(lines, rows))


def _check_dist(dist: Any, n_labels: int, *, path: str, line: int) -> None:
    if not isinstance(dist, list) or len(dist) != n_labels:
        raise InputError("must be a list with one value per label", path=path, line=line, field="dist")
    ok = all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x >= 0
             for x in dist)
    if not ok or abs(sum(dist) - 1.0) > _DIST_TOL:
        raise InputError(f"must be non-negative numbers summing to 1 (within {_DIST_TOL})",
                         path=path, line=line, field="dist")


# Fields evaluation needs; the other canonical fields are optional here so a
# researcher can score predictions made outside this pipeline.
REQUIRED_FIELDS = ("labels", "dist", "completion")


def validate_rows(rows: Sequence[dict[str, Any]], *, path: str = "<predictions>",
                  lines: Sequence[int] | None = None) -> list[str]:
    """Check every row before any scoring; return the shared label list.

    Only ``labels``, ``dist`` and ``completion`` are required. Missing
    optional fields get defaults in place: ``id`` = the line number,
    ``subset`` and ``ambiguity`` = null (the row then counts in ``overall``
    only), ``majority`` = argmax of ``dist``. ``dist`` is renormalised (it
    may carry rounding, e.g. three times 0.333).
    """
    if not rows:
        raise InputError("no predictions to evaluate", path=path)
    lines = list(lines) if lines is not None else list(range(1, len(rows) + 1))
    labels = None
    for row, line in zip(rows, lines):
        for key in REQUIRED_FIELDS:
            if key not in row:
                raise InputError("missing field", path=path, line=line, field=key)
        if not isinstance(row["labels"], list) or len(row["labels"]) < 2 or \
                not all(isinstance(x, str) for x in row["labels"]):
            raise InputError("need a list of at least two class names", path=path, line=line, field="labels")
        _check_dist(row["dist"], len(row["labels"]), path=path, line=line)
        total = float(sum(row["dist"]))
        row["dist"] = [float(x) / total for x in row["dist"]]
        row.setdefault("id", str(line))
        for key in ("subset", "ambiguity"):
            row.setdefault(key, None)
            if row[key] is not None and not isinstance(row[key], str):
                raise InputError("must be a string or null", path=path, line=line, field=key)
        row.setdefault("majority", row["labels"][int(np.argmax(row["dist"]))])
        if not isinstance(row["completion"], str):
            raise InputError("must be a string", path=path, line=line, field="completion")
        if labels is None:
            labels = row["labels"]
        elif row["labels"] != labels:
            raise InputError(f"label list {row['labels']} differs from {labels} of the first row",
                             path=path, line=line, field="labels")
    return list(labels)


def _mean(x: np.ndarray) -> float | None:
    return float(np.mean(x)) if x.size else None


def _block(human: np.ndarray, pred: np.ndarray, parsed: np.ndarray, scored: np.ndarray,
           sum_error: np.ndarray) -> dict[str, Any]:
    """The metric block of one slice (all arrays already cut to the slice):
    one key per entry of :data:`shala.evaluation.metrics.REGISTRY`, in its order. The
    entries without a function are the counts taken here from the parse."""
    n = int(human.shape[0])
    P, Q = human[scored], pred[scored]
    k = int(P.shape[0])
    out: dict[str, Any] = {
        "n": n,
        "n_scored": k,
        "parse_failure_rate": float(np.mean(~parsed)) if n else None,
        "mean_sum_error": _mean(sum_error[parsed]),
    }
    for m in M.REGISTRY.values():
        if m.fn is not None:
            out[m.name] = m.score(P, Q) if k else None
    return {key: out[key] for key in M.REGISTRY}


def _per_class(labels: list[str], P: np.ndarray, Q: np.ndarray) -> dict[str, dict[str, Any]]:
    C = len(labels)
    t, p = M.argmax_labels(P), M.argmax_labels(Q)
    prec, rec, f1, support = M.precision_recall_f1_support(t, p, C)
    sprec, srec, sf1, _ = M.soft_precision_recall_f1(P, Q)
    predicted = np.bincount(p, minlength=C)
    dists = M.jsd(P, Q, base=2.0)
    out = {}
    for c, name in enumerate(labels):
        out[name] = {
            "support": int(support[c]),
            "predicted": int(predicted[c]),
            "precision": float(prec[c]),
            "recall": float(rec[c]),
            "f1": float(f1[c]),
            "soft_precision": float(sprec[c]),
            "soft_recall": float(srec[c]),
            "soft_f1": float(sf1[c]),
            "mean_pred": _mean(Q[:, c]),
            "mean_human": _mean(P[:, c]),
            "jsd": _mean(dists[t == c]),
        }
    return out


def level_order(levels: set[str]) -> list[str]:
    """Present levels in the order of the ambiguity scheme they belong to."""
    for scheme in (ENTROPY_LEVELS, ACTIVE_LEVELS):
        if levels <= set(scheme):
            return [lv for lv in scheme if lv in levels]
    return sorted(levels)


def parse_rows(rows: Sequence[dict[str, Any]]) -> list:
    """Each row's completion parsed once (:func:`shala.parsing.parse_distribution`)."""
    return [parse_distribution(r["completion"], r["labels"]) for r in rows]


def _check_policy(on_parse_failure: str) -> None:
    if on_parse_failure not in POLICIES:
        raise ConfigError(f"on_parse_failure must be one of {', '.join(POLICIES)}, not {on_parse_failure!r}")


def evaluate_rows(rows: Sequence[dict[str, Any]], on_parse_failure: str = "uniform", *,
                  path: str = "<predictions>", lines: Sequence[int] | None = None) -> dict[str, Any]:
    """Metrics JSON (docs/design.md §8) for prediction rows; validates all rows first."""
    _check_policy(on_parse_failure)
    labels = validate_rows(rows, path=path, lines=lines)
    return _metrics(rows, labels, parse_rows(rows), on_parse_failure)


def _metrics(rows: Sequence[dict[str, Any]], labels: list[str], results: Sequence,
             on_parse_failure: str) -> dict[str, Any]:
    """Metrics of validated rows from their parses (:func:`parse_rows`)."""
    C = len(labels)
    human = np.array([r["dist"] for r in rows], dtype=np.float64)
    parsed = np.array([res.ok for res in results], dtype=bool)
    pred = np.array([res.dist if res.ok else np.full(C, 1.0 / C) for res in results], dtype=np.float64)
    sum_error = np.array([res.sum_error if res.ok else np.nan for res in results], dtype=np.float64)
    scored = parsed.copy() if on_parse_failure == "exclude" else np.ones(len(rows), dtype=bool)

    def block(mask: np.ndarray) -> dict[str, Any]:
        return _block(human[mask], pred[mask], parsed[mask], scored[mask], sum_error[mask])

    def where(key: str, value: Any) -> np.ndarray:
        return np.array([r[key] == value for r in rows], dtype=bool)

    subset_names = sorted({r["subset"] for r in rows if r["subset"] is not None})
    levels = level_order({r["ambiguity"] for r in rows if r["ambiguity"] is not None})
    overall = block(np.ones(len(rows), dtype=bool))
    return {
        "n": overall["n"],
        "parse_failure_rate": overall["parse_failure_rate"],
        "on_parse_failure": on_parse_failure,
        "js_base": JS_BASE,
        "overall": overall,
        "by_subset": {s: block(where("subset", s)) for s in subset_names},
        "by_ambiguity": {lv: block(where("ambiguity", lv)) for lv in levels},
        "per_class": _per_class(labels, human[scored], pred[scored]),
    }


ITEM_COLUMNS = ("id", "subset", "ambiguity", "majority", "pred_label", "parsed", "scored", "jsd", "bc")


def item_scores(rows: Sequence[dict[str, Any]], on_parse_failure: str = "uniform",
                results: Sequence | None = None) -> list[dict[str, Any]]:
    """Per-item scores (for paired tests and box plots in the report).

    Rows must already be validated (see :func:`evaluate_rows`). Failed
    parses follow the same policy as the aggregate metrics: scored as the
    uniform distribution, or ``scored`` False (and null scores) under
    ``exclude``.
    """
    out = []
    for r, res in zip(rows, parse_rows(rows) if results is None else results):
        labels = r["labels"]
        C = len(labels)
        scored = res.ok or on_parse_failure == "uniform"
        q = res.dist if res.ok else np.full(C, 1.0 / C)
        p = np.asarray(r["dist"], dtype=np.float64)
        out.append({
            "id": r["id"], "subset": r["subset"], "ambiguity": r["ambiguity"], "majority": r["majority"],
            "pred_label": labels[int(np.argmax(q))] if scored else None,
            "parsed": bool(res.ok), "scored": bool(scored),
            "jsd": float(M.jsd(p, q, base=2.0)) if scored else None,
            "bc": float(M.bhattacharyya(p, q)) if scored else None,
        })
    return out


def _items_csv(scores: list[dict[str, Any]]) -> str:
    import csv
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=ITEM_COLUMNS, lineterminator="\n")
    w.writeheader()
    for s in scores:
        w.writerow({k: ("" if s[k] is None else (f"{s[k]:.10g}" if isinstance(s[k], float) else s[k]))
                    for k in ITEM_COLUMNS})
    return buf.getvalue()


def run_evaluate(predictions: Path, out: Path, on_parse_failure: str = "uniform",
                 items_out: Path | None = None) -> dict[str, Any]:
    """Read a predictions file, score it, write the metrics JSON atomically.

    Every row is validated before anything is written, so a bad input leaves
    no (and no partial) output file. ``items_out`` also writes per-item
    scores as CSV (columns :data:`ITEM_COLUMNS`).
    """
    located = read_located(predictions)
    rows = [row for _, row in located]
    _check_policy(on_parse_failure)
    labels = validate_rows(rows, path=str(predictions), lines=[ln for ln, _ in located])
    results = parse_rows(rows)  # once, for the metrics and the per-item scores
    metrics = _metrics(rows, labels, results, on_parse_failure)
    if items_out is not None:
        write_text(items_out, _items_csv(item_scores(rows, on_parse_failure, results)))
    write_json(out, metrics)
    return metrics
