"""GoEmotions adapter (docs/design.md §3.2) on rows written in the official raw CSV format."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from shala.data.adapters import goemotions
from shala.errors import ConfigError, InputError

HEADER = ("text,id,author,subreddit,link_id,parent_id,created_utc,rater_id,example_very_unclear,"
          "admiration,amusement,anger,annoyance,approval,caring,confusion,curiosity,desire,"
          "disappointment,disapproval,disgust,embarrassment,excitement,fear,gratitude,grief,joy,love,"
          "nervousness,optimism,pride,realization,relief,remorse,sadness,surprise,neutral").split(",")
EMOTIONS = HEADER[9:]
LABELS = ["anger", "disgust", "fear", "joy", "sadness", "surprise", "neutral"]


def row(cid: str, rater: int, *emotions: str, unclear: str = "FALSE", text: str | None = None) -> list[str]:
    """One rater row as in goemotions_*.csv (emotion columns are 0/1)."""
    assert all(e in EMOTIONS for e in emotions)
    meta = [text if text is not None else f"comment {cid}", cid, "someone", "r/test", "t3_x", "t1_y",
            "1548381039.0", str(rater), unclear]
    return meta + ["1" if e in emotions else "0" for e in EMOTIONS]


def write_source(tmp_path: Path, files: dict[int, list[list[str]]], header=HEADER) -> Path:
    """Write goemotions_1..3.csv (header only where no rows are given)."""
    for k in (1, 2, 3):
        with (tmp_path / f"goemotions_{k}.csv").open("w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(header)
            w.writerows(files.get(k, []))
    return tmp_path


def by_id(items):
    return {it["id"]: it for it in items}


def test_valid_rater_rules_and_ekman_votes(tmp_path):
    src = write_source(tmp_path, {
        1: [
            # A: one of three raters is very unclear -> 2 valid raters -> dropped
            row("A", 1, "joy"), row("A", 2, "joy"), row("A", 3, "joy", unclear="TRUE"),
            # B: admiration+joy is one joy vote; anger+fear votes anger and fear
            row("B", 1, "admiration", "joy"), row("B", 2, "anger", "fear"), row("B", 3, "neutral"),
            # C: a rater with no label is invalid; 3 valid raters remain
            row("C", 1, "grief", "remorse"), row("C", 2), row("C", 3, "sadness"), row("C", 4, "curiosity"),
        ],
        2: [
            # D: rows split over two files are one comment; flags in other spellings
            row("D", 1, "disgust", unclear="False"), row("D", 2, "annoyance", "disapproval", unclear="0"),
        ],
        3: [row("D", 3, "nervousness", unclear="false"), row("D", 4, "amusement", unclear="1")],
    })
    items = by_id(goemotions.load(src, {}, seed=0))
    assert list(items) == ["B", "C", "D"]
    b = items["B"]
    assert b["labels"] == LABELS
    assert b["counts"] == [1, 0, 1, 1, 0, 0, 1]
    assert b["n_annotators"] == 3
    assert b["majority"] == "anger"  # 4-way tie -> first class in label order
    assert b["ambiguity"] == "4+"
    assert b["inputs"] == {"text": "comment B"} and tuple(b["inputs"]) == goemotions.TEXT_FIELDS
    assert b["subset"] is None and b["split"] is None
    c = items["C"]
    assert c["counts"] == [0, 0, 0, 0, 2, 1, 0]  # grief+remorse = one sadness vote
    assert c["n_annotators"] == 3 and c["majority"] == "sadness" and c["ambiguity"] == "2"
    d = items["D"]
    assert d["counts"] == [1, 1, 1, 0, 0, 0, 0]  # rater 4 (unclear "1") is not counted
    assert d["n_annotators"] == 3
    assert d["dataset"] == "goemotions"


def test_min_raters_option(tmp_path):
    src = write_source(tmp_path, {1: [row("A", 1, "joy"), row("A", 2, "fear"), row("A", 3, unclear="TRUE")]})
    assert goemotions.load(src, {}, seed=0) == []
    (item,) = goemotions.load(src, {"min_raters": 2}, seed=0)
    assert item["counts"] == [0, 0, 1, 1, 0, 0, 0] and item["n_annotators"] == 2


def majority_rows(n_joy: int, n_anger: int) -> list[list[str]]:
    rows = []
    for i in range(n_joy):
        rows += [row(f"j{i}", r, "joy") for r in range(3)]
    for i in range(n_anger):
        rows += [row(f"a{i}", r, "anger") for r in range(3)]
    return rows


def test_max_per_class_caps_each_class_with_a_seeded_sample(tmp_path):
    src = write_source(tmp_path, {1: majority_rows(12, 3)})
    items = goemotions.load(src, {"max_per_class": 4}, seed=0)
    ids = [it["id"] for it in items]
    assert sum(i.startswith("j") for i in ids) == 4
    assert [i for i in ids if i.startswith("a")] == ["a0", "a1", "a2"]  # under the cap: all kept
    # kept items stay in source order
    assert ids == sorted(ids, key=lambda s: (s[0] == "a", int(s[1:])))
    again = [it["id"] for it in goemotions.load(src, {"max_per_class": 4}, seed=0)]
    assert again == ids
    samples = {tuple(it["id"] for it in goemotions.load(src, {"max_per_class": 4}, seed=s)) for s in range(6)}
    assert len(samples) > 1  # the seed matters
    assert len(goemotions.load(src, {"max_per_class": None}, seed=0)) == 15


def test_default_cap_is_1000(tmp_path):
    src = write_source(tmp_path, {1: majority_rows(1003, 2)})
    items = goemotions.load(src, {}, seed=1)
    assert sum(it["majority"] == "joy" for it in items) == 1000
    assert sum(it["majority"] == "anger" for it in items) == 2


def test_bad_flag_names_file_line_and_field(tmp_path):
    bad = row("B", 2, "joy")
    bad[HEADER.index("joy")] = "yes"
    # a quoted multi-line text before it: the error must give the physical line
    src = write_source(tmp_path, {2: [row("A", 1, "joy", text="line one\nline two"), bad]})
    with pytest.raises(InputError) as exc:
        goemotions.load(src, {}, seed=0)
    err = exc.value
    assert err.path.endswith("goemotions_2.csv") and err.line == 4 and err.field == "joy"
    assert "goemotions_2.csv:4" in str(err)


def test_bad_unclear_flag(tmp_path):
    src = write_source(tmp_path, {1: [row("A", 1, "joy", unclear="maybe")]})
    with pytest.raises(InputError) as exc:
        goemotions.load(src, {}, seed=0)
    assert exc.value.field == "example_very_unclear" and exc.value.line == 2


def test_missing_column_is_named(tmp_path):
    header = [h for h in HEADER if h != "rater_id"]
    src = write_source(tmp_path, {}, header=header)
    with pytest.raises(InputError) as exc:
        goemotions.load(src, {}, seed=0)
    assert exc.value.field == "rater_id" and exc.value.line == 1
    assert "goemotions_1.csv" in str(exc.value)


def test_ragged_row_is_an_error(tmp_path):
    src = write_source(tmp_path, {3: [row("A", 1, "joy")[:-2]]})
    with pytest.raises(InputError, match=r"goemotions_3\.csv:2: expected 37 fields, found 35"):
        goemotions.load(src, {}, seed=0)


def test_missing_source_file(tmp_path):
    write_source(tmp_path, {})
    (tmp_path / "goemotions_3.csv").unlink()
    with pytest.raises(InputError, match="goemotions_3.csv"):
        goemotions.load(tmp_path, {}, seed=0)


@pytest.mark.parametrize("options", [{"max_per_class": 0}, {"min_raters": "3"}, {"cap": 5}])
def test_bad_options(tmp_path, options):
    with pytest.raises(ConfigError):
        goemotions.load(write_source(tmp_path, {}), options, seed=0)


def test_ekman_mapping_covers_all_28_labels_once():
    mapped = [e for emos in goemotions.EKMAN.values() for e in emos]
    assert sorted(mapped) == sorted(EMOTIONS) and len(mapped) == 28
    assert goemotions.EKMAN_OF["realization"] == LABELS.index("surprise")
    assert goemotions.EKMAN_OF["embarrassment"] == LABELS.index("sadness")
