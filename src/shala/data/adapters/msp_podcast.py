"""MSP-Podcast (v1.12 layout), votes from each worker's primary emotion (docs/design.md §3.3).

``Labels/labels_detailed.csv`` has one row per worker: ``FileName,EmoDetail``
with EmoDetail ``WORKER; Primary; Secondaries; A:..; V:..; D:..;``. The
primary (second ``;`` field, stripped, matched case-insensitively) votes for
one of the eight classes. Any other primary (``Other-Concerned``,
``Other-``, ...) is an "other" vote, handled by ``other_policy``:

- ``drop_item`` (default): an item with any other vote is dropped, so every
  kept item's distribution covers all of its workers;
- ``drop_vote``: only that vote is dropped; an item left without votes is
  dropped.

An empty primary is a malformed row (error), not an other vote.
``n_annotators`` is the number of votes kept. Items keep the order of first
appearance in ``labels_detailed.csv``; the id is the file name without
extension. ``labels_consensus.csv`` (and its ``Split_Set``) is not used: the
splits are the project's own five seeded random folds (docs/design.md §3).

Inputs: ``text`` from ``Transcripts/<stem>.txt`` (stripped) and ``audio``,
the path ``<source>/Audios/<FileName>`` as given (not resolved, so the same
configured source gives the same bytes everywhere; the audio file need not
exist for text-only runs). With ``require_transcripts: false`` a missing
transcript gives ``text`` = ``""`` instead of an error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...errors import ConfigError, InputError
from ..items import make_item
from .generic_readers import iter_csv

NAME = "msp_podcast"
# Licensed: no download route; the data exists only where `source` names a copy.
LICENSED = True
AMBIGUITY = "active"
LABELS = ["angry", "contempt", "disgust", "fear", "happy", "neutral", "sad", "surprise"]
# what prompt.target may name: the transcript (inputs.audio is a path, placed as an audio part)
TEXT_FIELDS = ("text",)
MSP_NAMES = ["Angry", "Contempt", "Disgust", "Fear", "Happy", "Neutral", "Sad", "Surprise"]
CLASS_OF = {name.lower(): i for i, name in enumerate(MSP_NAMES)}
DETAILED = Path("Labels") / "labels_detailed.csv"
POLICIES = ("drop_item", "drop_vote")
DEFAULTS = {"other_policy": "drop_item", "require_transcripts": True}


def check_options(options: dict[str, Any] | None) -> dict[str, Any]:
    opts = {**DEFAULTS, **(options or {})}
    unknown = sorted(set(opts) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f"msp_podcast adapter: unknown option(s) {unknown}; known: {sorted(DEFAULTS)}")
    if opts["other_policy"] not in POLICIES:
        raise ConfigError(f"msp_podcast adapter: option 'other_policy' must be one of {list(POLICIES)}")
    if not isinstance(opts["require_transcripts"], bool):
        raise ConfigError("msp_podcast adapter: option 'require_transcripts' must be true or false")
    return opts


def primary_emotion(detail: str, *, path: Path, line: int) -> str:
    """The stripped primary emotion of one EmoDetail string."""
    fields = detail.split(";")
    if len(fields) < 2 or not fields[0].strip():
        raise InputError(f"expected 'WORKER; Primary; ...', got {detail!r}", path=path, line=line, field="EmoDetail")
    primary = fields[1].strip()
    if not primary:
        raise InputError(f"empty primary emotion in {detail!r}", path=path, line=line, field="EmoDetail")
    return primary


def read_votes(source: Path) -> dict[str, dict[str, Any]]:
    """FileName -> class votes, number of other votes, location of first row."""
    path = Path(source) / DETAILED
    files: dict[str, dict[str, Any]] = {}
    for line, row in iter_csv(path, ("FileName", "EmoDetail")):
        name = row["FileName"].strip()
        if not name:
            raise InputError("empty file name", path=path, line=line, field="FileName")
        primary = primary_emotion(row["EmoDetail"], path=path, line=line)
        f = files.setdefault(name, {"counts": [0] * len(LABELS), "other": 0,
                                    "where": {"path": path, "line": line}})
        idx = CLASS_OF.get(primary.lower())
        if idx is None:
            f["other"] += 1
        else:
            f["counts"][idx] += 1
    return files


def transcript(source: Path, stem: str, required: bool) -> str:
    path = Path(source) / "Transcripts" / f"{stem}.txt"
    if path.is_file():
        return path.read_text(encoding="utf-8").strip()
    if required:
        raise InputError("transcript not found (set require_transcripts: false to allow)", path=path)
    return ""


def load(source: Path, options: dict[str, Any] | None = None, seed: int = 0) -> list[dict[str, Any]]:
    opts = check_options(options)
    source = Path(source)
    items = []
    for name, f in read_votes(source).items():
        if f["other"] and opts["other_policy"] == "drop_item":
            continue
        if sum(f["counts"]) == 0:
            continue  # drop_vote left no votes
        stem = Path(name).stem
        inputs = {"text": transcript(source, stem, opts["require_transcripts"]),
                  "audio": str(source / "Audios" / name)}
        items.append(make_item(id=stem, dataset=NAME, subset=None, inputs=inputs, labels=LABELS,
                               counts=f["counts"], ambiguity=AMBIGUITY, where=f["where"]))
    return items
