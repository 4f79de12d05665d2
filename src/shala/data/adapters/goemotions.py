"""GoEmotions from the raw rater-level CSVs, mapped to Ekman categories (docs/design.md §3.2).

``goemotions_1.csv`` .. ``goemotions_3.csv`` hold one row per rater per
comment. A rater row is valid when it is not marked ``example_very_unclear``
and selects at least one of the 28 labels; a valid rater votes once for every
Ekman category their labels map to (admiration + joy is one ``joy`` vote).
Comments with fewer than ``min_raters`` valid raters are dropped (the
authors' filter); ``n_annotators`` is the number of valid rater rows.

Class balance: items are grouped by majority label and each group larger
than ``max_per_class`` is sampled down with ``numpy.random.default_rng(seed)``
(classes visited in label order); the kept items stay in source order of
first appearance, so the output does not depend on hash order.

Options: ``min_raters`` (default 3), ``max_per_class`` (default 1000;
``null`` keeps every item).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ConfigError, InputError
from ..items import make_item
from .generic_readers import iter_csv

NAME = "goemotions"
AMBIGUITY = "active"
LABELS = ["anger", "disgust", "fear", "joy", "sadness", "surprise", "neutral"]
TEXT_FIELDS = ("text",)  # the inputs of every item: what prompt.target may name
FILES = ("goemotions_1.csv", "goemotions_2.csv", "goemotions_3.csv")
EMOTIONS = (
    "admiration", "amusement", "anger", "annoyance", "approval", "caring", "confusion", "curiosity",
    "desire", "disappointment", "disapproval", "disgust", "embarrassment", "excitement", "fear",
    "gratitude", "grief", "joy", "love", "nervousness", "optimism", "pride", "realization", "relief",
    "remorse", "sadness", "surprise", "neutral",
)
# The dataset authors' Ekman grouping (ekman_mapping.json of the GoEmotions repository).
EKMAN = {
    "anger": ("anger", "annoyance", "disapproval"),
    "disgust": ("disgust",),
    "fear": ("fear", "nervousness"),
    "joy": ("admiration", "amusement", "approval", "caring", "desire", "excitement", "gratitude", "joy",
            "love", "optimism", "pride", "relief"),
    "sadness": ("disappointment", "embarrassment", "grief", "remorse", "sadness"),
    "surprise": ("confusion", "curiosity", "realization", "surprise"),
    "neutral": ("neutral",),
}
EKMAN_OF = {emo: LABELS.index(cat) for cat, emos in EKMAN.items() for emo in emos}
REQUIRED = ("text", "id", "rater_id", "example_very_unclear", *EMOTIONS)
FLAG = {"true": True, "false": False, "1": True, "0": False}
DEFAULTS = {"min_raters": 3, "max_per_class": 1000}


def check_options(options: dict[str, Any] | None) -> dict[str, Any]:
    opts = {**DEFAULTS, **(options or {})}
    unknown = sorted(set(opts) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f"goemotions adapter: unknown option(s) {unknown}; known: {sorted(DEFAULTS)}")
    if not isinstance(opts["min_raters"], int) or isinstance(opts["min_raters"], bool) or opts["min_raters"] < 1:
        raise ConfigError("goemotions adapter: option 'min_raters' must be a positive integer")
    cap = opts["max_per_class"]
    if cap is not None and (not isinstance(cap, int) or isinstance(cap, bool) or cap < 1):
        raise ConfigError("goemotions adapter: option 'max_per_class' must be a positive integer or null")
    return opts


def parse_flag(value: str, *, path: Path, line: int, field: str) -> bool:
    """``TRUE``/``FALSE`` as in the official files; also True/False/1/0."""
    try:
        return FLAG[value.strip().lower()]
    except KeyError:
        raise InputError(f"expected TRUE/FALSE or 1/0, got {value!r}", path=path, line=line, field=field) from None


def rater_votes(row: dict[str, str], *, path: Path, line: int) -> set[int] | None:
    """Ekman category indices of one rater row, or None for an invalid rater."""
    selected = [emo for emo in EMOTIONS if parse_flag(row[emo], path=path, line=line, field=emo)]
    if parse_flag(row["example_very_unclear"], path=path, line=line, field="example_very_unclear"):
        return None
    if not selected:
        return None
    return {EKMAN_OF[emo] for emo in selected}


def aggregate(source: Path) -> dict[str, dict[str, Any]]:
    """comment id -> text, Ekman counts, valid raters, location (source order)."""
    comments: dict[str, dict[str, Any]] = {}
    for fname in FILES:
        path = Path(source) / fname
        for line, row in iter_csv(path, REQUIRED):
            cid = row["id"].strip()
            if not cid:
                raise InputError("empty comment id", path=path, line=line, field="id")
            votes = rater_votes(row, path=path, line=line)
            c = comments.get(cid)
            if c is None:
                c = comments[cid] = {"text": row["text"], "counts": [0] * len(LABELS), "raters": 0,
                                     "where": {"path": path, "line": line}}
            if votes is None:
                continue
            c["raters"] += 1
            for idx in votes:
                c["counts"][idx] += 1
    return comments


def balance(items: list[dict[str, Any]], cap: int | None, seed: int) -> list[dict[str, Any]]:
    """At most ``cap`` items per majority class, seeded; source order kept."""
    if cap is None:
        return items
    rng = np.random.default_rng(seed)
    keep = np.zeros(len(items), dtype=bool)
    for lab in LABELS:
        idx = np.array([i for i, it in enumerate(items) if it["majority"] == lab], dtype=np.int64)
        if len(idx) > cap:
            idx = rng.choice(idx, size=cap, replace=False)
        keep[idx] = True
    return [it for it, k in zip(items, keep) if k]


def load(source: Path, options: dict[str, Any] | None = None, seed: int = 0) -> list[dict[str, Any]]:
    opts = check_options(options)
    items = []
    for cid, c in aggregate(Path(source)).items():
        if c["raters"] < opts["min_raters"]:
            continue  # docs/design.md §3.2: too few valid raters
        items.append(make_item(id=cid, dataset=NAME, subset=None, inputs={"text": c["text"]}, labels=LABELS,
                               counts=c["counts"], ambiguity=AMBIGUITY, n_annotators=c["raters"],
                               where=c["where"]))
    return balance(items, opts["max_per_class"], seed)
