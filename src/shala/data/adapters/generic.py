"""Bring your own data (docs/design.md §3.4): annotations in three common shapes.

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
    vote deliberately left out (e.g. ``{"idk": null}``). Several raw values
    may share a class: ConvAbuse's -3..1 as ``{"-3": abusive, "-2": abusive,
    "-1": abusive, "0": not_abusive, "1": not_abusive}``.
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
    ``{input name: source field}``; a dotted path (``text.context``) reaches
    into nested objects, and into a string that holds a JSON object
    (ConvAbuse's ``text.user``). The input names are the placeholders the
    prompt's ``target`` may use, checked at plan time.
``multi_label_sep``
    optional separator inside one annotation (``"contradiction,neutral"``
    with ``","``): the annotation votes once for each distinct class. Not
    used for LeWiDi 2023 strings, whose commas separate annotators.
``ambiguity`` (``entropy`` | ``active``; default ``entropy``)
    the ambiguity scheme of :mod:`shala.data.items`.
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
    convabuse:                        # text is a JSON string of four turns
      adapter: generic
      split: {train: 0.70, validation: 0.15}
      options:
        format: lewidi
        files: ["ConvAbuse_*.json"]
        labels: [not_abusive, abusive]
        label_map: {"-3": abusive, "-2": abusive, "-1": abusive, "0": not_abusive, "1": not_abusive}
        text_fields: {agent: text.agent, user: text.user}
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

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ...errors import ConfigError, InputError
from ..items import AMBIGUITY_SCHEMES
from .generic_formats import LOADERS

NAME = "generic"
AMBIGUITY = "entropy"  # default; the ``ambiguity`` option overrides it per dataset
FORMATS = ("long", "counts", "lewidi")
FILE_TYPES = ("csv", "tsv", "jsonl", "json")
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


def text_fields(options: dict[str, Any] | None) -> list[str]:
    """The input names every item carries: the keys of ``text_fields``."""
    return list(check_options(options)["text_fields"])


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


def load(source: Path, options: dict[str, Any] | None = None, seed: int = 0) -> list[dict[str, Any]]:
    """Items from the configured files; ``seed`` is unused (no sampling here)."""
    opts = check_options(options)
    files = resolve_files(Path(source), opts["files"])
    return LOADERS[opts["format"]](files, opts, NAME)
