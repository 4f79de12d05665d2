"""Generic adapter (docs/design.md §3.4): real LeWiDi / VariErr data read in place, and written fixtures."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pytest
from conftest import SHARED_DATA, needs_shared_data

from shala.data.adapters import generic
from shala.errors import ConfigError, InputError

DATA = SHARED_DATA
needs_data = needs_shared_data("lewidi2023")

# The config snippets of the generic adapter's docstring.
HS_BREXIT = {
    "format": "lewidi",
    "files": ["HS-Brexit_train.json", "HS-Brexit_dev.json", "HS-Brexit_test.json"],
    "labels": ["not_hateful", "hateful"],
    "label_map": {"0": "not_hateful", "1": "hateful"},
    "text_fields": {"text": "text"},
    "keep_source_splits": True,
}
MD_AGREEMENT = {
    "format": "lewidi",
    "files": ["MD-Agreement_*.json"],
    "labels": ["not_offensive", "offensive"],
    "label_map": {"0": "not_offensive", "1": "offensive"},
    "subset_field": "other_info.domain",
    "keep_source_splits": True,
}
VARIERR = {
    "format": "counts",
    "files": ["varierr.json"],
    "labels": ["entailment", "neutral", "contradiction"],
    "counts_field": "label_count_round_1",
    "text_fields": {"premise": "context", "hypothesis": "statement"},
    "ambiguity": "entropy",
}
SPLIT_OF = {"train": "train", "dev": "validation", "test": "test"}


def check_lewidi_against_soft_labels(items, folder: Path, name: str, n_annotations: int):
    """Every item's dist equals the file's soft_label and raw votes; read with json.load here."""
    by_id = {it["id"]: it for it in items}
    n = 0
    for split in ("train", "dev", "test"):
        for key, rec in json.loads((folder / f"{name}_{split}.json").read_text(encoding="utf-8")).items():
            it = by_id[f"{name}_{split}:{key}"]
            # soft_label is rounded to 2 decimals in the files (5/6 is 0.83)
            assert it["dist"] == pytest.approx([rec["soft_label"]["0"], rec["soft_label"]["1"]], abs=0.005 + 1e-9)
            votes = rec["annotations"].split(",")
            assert it["counts"] == [votes.count("0"), votes.count("1")]
            assert it["split"] == SPLIT_OF[split]
            assert it["inputs"]["text"] == rec["text"]
            assert sum(it["counts"]) == n_annotations
            # distinct annotators: MD-Agreement_test 2038 lists Ann448 twice
            assert it["n_annotators"] == len(set(rec["annotators"].split(",")))
            n += 1
    assert n == len(items)


@needs_data
def test_hs_brexit():
    folder = DATA / "lewidi2023" / "HS-Brexit"
    items = generic.load(folder, HS_BREXIT, seed=0)
    assert len(items) == 784 + 168 + 168
    assert Counter(it["split"] for it in items) == {"train": 784, "validation": 168, "test": 168}
    assert items[0]["id"] == "HS-Brexit_train:1" and items[0]["counts"] == [6, 0]
    assert {it["ambiguity"] for it in items} <= {"low", "medium", "high"}
    check_lewidi_against_soft_labels(items, folder, "HS-Brexit", 6)


@needs_data
def test_md_agreement():
    folder = DATA / "lewidi2023" / "MD-Agreement"
    items = generic.load(folder, MD_AGREEMENT, seed=0)
    assert len(items) == 6592 + 1104 + 3057
    assert Counter(it["split"] for it in items) == {"train": 6592, "validation": 1104, "test": 3057}
    domains = Counter()
    for split in ("train", "dev", "test"):
        recs = json.loads((folder / f"MD-Agreement_{split}.json").read_text(encoding="utf-8"))
        domains.update(r["other_info"]["domain"] for r in recs.values())
    assert Counter(it["subset"] for it in items) == domains
    assert set(domains) == {"BLM", "Elections2020", "Covid-19"}
    check_lewidi_against_soft_labels(items, folder, "MD-Agreement", 5)
    assert Counter(it["n_annotators"] for it in items) == {5: 6592 + 1104 + 3057 - 1, 4: 1}


@needs_data
def test_varierr_counts():
    items = generic.load(DATA / "varierr", VARIERR, seed=0)
    assert len(items) == 500
    rows = [json.loads(line) for line in (DATA / "varierr" / "varierr.json").read_text().splitlines() if line]
    for it, row in zip(items, rows, strict=True):
        expect = [row["label_count_round_1"][lab] or 0 for lab in VARIERR["labels"]]
        assert it["id"] == row["id"]
        assert it["counts"] == expect and all(isinstance(c, int) for c in it["counts"])
        assert it["inputs"] == {"premise": row["context"], "hypothesis": row["statement"]}
        assert it["split"] is None
    first = items[0]
    assert first["id"] == "23751e" and first["counts"] == [1, 0, 1] and first["majority"] == "entailment"
    assert first["n_annotators"] == 2 and first["ambiguity"] == "medium"


@needs_data
def test_lewidi_2025_dict_annotations_with_multi_labels():
    folder = DATA / "lewidi2025" / "VariErrNLI"
    options = {"format": "lewidi", "files": ["VariErrNLI_train.json", "VariErrNLI_dev.json", "VariErrNLI_test.json"],
               "labels": ["entailment", "neutral", "contradiction"], "multi_label_sep": ",",
               "text_fields": {"premise": "text.context", "hypothesis": "text.statement"}}
    items = {it["id"]: it for it in generic.load(folder, options, seed=0)}
    assert len(items) == 388 + 50 + 50
    # dev item 49807: Ann1 neutral, Ann2 "entailment,neutral", Ann3 neutral, Ann4 entailment
    it = items["VariErrNLI_dev:49807"]
    assert it["counts"] == [2, 3, 0] and it["n_annotators"] == 4
    assert it["inputs"]["hypothesis"] == "Lolani was built in only 1 year."


@needs_data
def test_prepare_keeps_lewidi_splits(tmp_path):
    from shala.data.prepare import prepare

    config = {"datasets": {"hs_brexit": {"adapter": "generic", "options": HS_BREXIT,
                                         "split": {"train": 0.7, "validation": 0.15}}}}
    stats = prepare("hs_brexit", DATA / "lewidi2023" / "HS-Brexit", tmp_path, config=config, seed=0)
    assert stats["split_counts"] == {"train": 784, "validation": 168, "test": 168}
    assert stats["dataset"] == "hs_brexit"


# ---------------------------------------------------------------- long format, written here

LONG_OPTIONS = {"format": "long", "files": ["ann.csv"], "labels": ["negative", "neutral", "positive"],
                "id_field": "item", "annotator_field": "annotator", "multi_label_sep": ";",
                "keep_source_splits": True}
LONG_ROWS = [
    ["item", "annotator", "label", "text", "split"],
    ["1", "a1", "positive", "good, very good", "train"],   # line 2
    ["1", "a2", "neutral", "good, very good", "train"],    # line 3
    ["1", "a3", "positive", "good, very good", "train"],   # line 4
    ["2", "a1", "negative;neutral", "multi\nline", "dev"],  # lines 5-6
    ["2", "a2", "neutral", "multi\nline", "dev"],           # lines 7-8
    ["2", "a2", " negative ", "multi\nline", "dev"],        # lines 9-10
]


def write_csv(path: Path, rows) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows(rows)
    return path


def test_long_csv(tmp_path):
    write_csv(tmp_path / "ann.csv", LONG_ROWS)
    one, two = generic.load(tmp_path, LONG_OPTIONS, seed=0)
    assert one["id"] == "1" and one["counts"] == [0, 1, 2] and one["n_annotators"] == 3
    assert one["split"] == "train" and one["inputs"] == {"text": "good, very good"}
    # a1 votes negative and neutral; a2 votes twice: 2 distinct annotators, 4 votes
    assert two["counts"] == [2, 2, 0] and two["n_annotators"] == 2
    assert two["majority"] == "negative" and two["split"] == "validation"
    assert two["dataset"] == "generic" and two["subset"] is None


def test_long_without_annotator_counts_rows(tmp_path):
    write_csv(tmp_path / "ann.csv", [r[:1] + r[2:4] for r in LONG_ROWS])
    options = {k: v for k, v in LONG_OPTIONS.items() if k not in ("annotator_field", "keep_source_splits")}
    one, two = generic.load(tmp_path, options, seed=0)
    assert two["n_annotators"] == 3 and two["counts"] == [2, 2, 0]
    assert one["split"] is None


def test_bad_label_names_file_and_line(tmp_path):
    rows = LONG_ROWS + [["3", "a1", "postive", "typo", "test"]]  # line 11
    write_csv(tmp_path / "ann.csv", rows)
    with pytest.raises(InputError) as exc:
        generic.load(tmp_path, LONG_OPTIONS, seed=0)
    assert exc.value.line == 11 and exc.value.field == "label"
    assert f"{tmp_path / 'ann.csv'}:11" in str(exc.value) and "'postive'" in str(exc.value)


def test_missing_column_is_named(tmp_path):
    write_csv(tmp_path / "ann.csv", [[c for i, c in enumerate(r) if i != 1] for r in LONG_ROWS])
    with pytest.raises(InputError) as exc:
        generic.load(tmp_path, LONG_OPTIONS, seed=0)
    assert exc.value.field == "annotator" and exc.value.line == 1
    assert "ann.csv:1" in str(exc.value) and "annotator" in str(exc.value)


def test_item_with_zero_votes_is_an_error(tmp_path):
    write_csv(tmp_path / "ann.csv", LONG_ROWS + [["3", "a1", "idk", "t", "test"], ["3", "a2", "idk", "t", "test"]])
    options = {**LONG_OPTIONS, "label_map": {"idk": None}}
    with pytest.raises(InputError, match="zero votes") as exc:
        generic.load(tmp_path, options, seed=0)
    assert exc.value.line == 11
    # the same file without item 3 loads; "idk" votes elsewhere are left out
    write_csv(tmp_path / "ann.csv", LONG_ROWS + [["1", "a4", "idk", "good, very good", "train"]])
    one, _ = generic.load(tmp_path, options, seed=0)
    assert one["counts"] == [0, 1, 2] and one["n_annotators"] == 3


def test_rows_of_one_item_must_agree_on_text(tmp_path):
    write_csv(tmp_path / "ann.csv", LONG_ROWS + [["1", "a4", "neutral", "other text", "train"]])
    with pytest.raises(InputError, match="differs from its row at") as exc:
        generic.load(tmp_path, LONG_OPTIONS, seed=0)
    assert exc.value.line == 11 and exc.value.field == "inputs"


def test_unknown_source_split(tmp_path):
    write_csv(tmp_path / "ann.csv", LONG_ROWS + [["3", "a1", "neutral", "t", "holdout"]])
    with pytest.raises(InputError, match="unknown split 'holdout'"):
        generic.load(tmp_path, LONG_OPTIONS, seed=0)


def test_long_jsonl_with_label_map_and_nested_text(tmp_path):
    rows = [{"id": "x", "rater": "r1", "label": 0, "text": {"body": "hi"}},
            {"id": "x", "rater": "r2", "label": 1, "text": {"body": "hi"}},
            {"id": "x", "rater": "r3", "label": 1, "text": {"body": "hi"}}]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    options = {"format": "long", "files": "*.jsonl", "labels": ["no", "yes"], "label_map": {"0": "no", "1": "yes"},
               "annotator_field": "rater", "text_fields": {"text": "text.body"}, "ambiguity": "active"}
    (item,) = generic.load(tmp_path, options, seed=0)
    assert item["counts"] == [1, 2] and item["inputs"] == {"text": "hi"} and item["ambiguity"] == "2"
    (tmp_path / "a.jsonl").write_text(json.dumps(rows[0]) + "\n{oops\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"a\.jsonl:2: malformed JSON"):
        generic.load(tmp_path, options, seed=0)
    (tmp_path / "a.jsonl").write_text(json.dumps({**rows[0], "label": 2}) + "\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"a\.jsonl:1: field 'label': label '2' not in label set"):
        generic.load(tmp_path, options, seed=0)


# ---------------------------------------------------------------- counts format, written here

COUNTS_OPTIONS = {"format": "counts", "files": ["c.csv"], "labels": ["negative", "neutral", "positive"]}


def test_counts_columns_with_empty_cells(tmp_path):
    write_csv(tmp_path / "c.csv", [["id", "text", "negative", "neutral", "positive"],
                                   ["a", "t1", "3", "", "1"], ["b", "t2", "0", "2.0", "0"]])
    a, b = generic.load(tmp_path, COUNTS_OPTIONS, seed=0)
    assert a["counts"] == [3, 0, 1] and a["n_annotators"] == 4
    assert b["counts"] == [0, 2, 0] and b["majority"] == "neutral" and b["entropy_norm"] == 0.0


@pytest.mark.parametrize("cells, field, message", [
    (["a", "t", "1", "-1", "0"], "neutral", "invalid count"),
    (["a", "t", "x", "0", "0"], "negative", "invalid count"),
    (["a", "t", "0", "0", "0"], "counts", "zero votes"),
])
def test_bad_counts(tmp_path, cells, field, message):
    write_csv(tmp_path / "c.csv", [["id", "text", "negative", "neutral", "positive"], ["z", "t", "1", "0", "0"], cells])
    with pytest.raises(InputError, match=message) as exc:
        generic.load(tmp_path, COUNTS_OPTIONS, seed=0)
    assert exc.value.line == 3 and exc.value.field == field


def test_counts_duplicate_id(tmp_path):
    write_csv(tmp_path / "c.csv", [["id", "text", "negative", "neutral", "positive"],
                                   ["a", "t", "1", "0", "0"], ["a", "t", "0", "1", "0"]])
    with pytest.raises(InputError, match="already used at") as exc:
        generic.load(tmp_path, COUNTS_OPTIONS, seed=0)
    assert exc.value.line == 3


def test_counts_dict_field_in_json_array(tmp_path):
    records = [{"id": "a", "text": "t", "votes": {"POS": 2, "neutral": None}},
               {"id": "b", "text": "u", "votes": {"negative": 1, "other": 1}}]
    (tmp_path / "c.json").write_text(json.dumps(records, indent=2), encoding="utf-8")
    options = {**COUNTS_OPTIONS, "files": ["c.json"], "counts_field": "votes", "label_map": {"POS": "positive"}}
    with pytest.raises(InputError) as exc:
        generic.load(tmp_path, options, seed=0)
    # indent=2: "[", record a on lines 2-9 ("votes" spans 5-8), record b opens on line 10
    assert exc.value.line == 10 and "'other'" in str(exc.value) and exc.value.field == "votes"
    records[1]["votes"].pop("other")
    (tmp_path / "c.json").write_text(json.dumps(records, indent=2), encoding="utf-8")
    a, b = generic.load(tmp_path, options, seed=0)
    assert a["counts"] == [0, 0, 2] and b["counts"] == [1, 0, 0]


# ---------------------------------------------------------------- lewidi format, written here

def lewidi_record(annotations: str, annotators: str, split: str = "train") -> dict:
    return {"text": "a tweet", "annotations": annotations, "annotators": annotators, "split": split,
            "soft_label": {}}


LEWIDI_OPTIONS = {"format": "lewidi", "files": ["X_train.json"], "labels": ["no", "yes"],
                  "label_map": {"0": "no", "1": "yes"}}


def write_lewidi(tmp_path: Path, records: dict) -> str:
    text = json.dumps(records, indent=4)
    (tmp_path / "X_train.json").write_text(text, encoding="utf-8")
    return text


def line_of(text: str, needle: str) -> int:
    return text[:text.index(needle)].count("\n") + 1


def test_lewidi_bad_annotation_names_the_item_line(tmp_path):
    text = write_lewidi(tmp_path, {"1": lewidi_record("0,1,1", "A1,A2,A3"), "2": lewidi_record("0,2", "A1,A2")})
    with pytest.raises(InputError) as exc:
        generic.load(tmp_path, LEWIDI_OPTIONS, seed=0)
    assert exc.value.line == line_of(text, '"2": {') and exc.value.field == "annotations"
    assert "X_train.json" in str(exc.value)


def test_lewidi_counts_and_ids(tmp_path):
    write_lewidi(tmp_path, {"1": lewidi_record("0,1,1", "A1,A2,A3"), "2": lewidi_record("0,0", "A1,A2")})
    one, two = generic.load(tmp_path, LEWIDI_OPTIONS, seed=0)
    assert one["id"] == "X_train:1" and one["counts"] == [1, 2] and one["n_annotators"] == 3
    assert two["counts"] == [2, 0] and one["split"] is None
    plain = generic.load(tmp_path, {**LEWIDI_OPTIONS, "id_prefix": "none"}, seed=0)
    assert [it["id"] for it in plain] == ["1", "2"]


def test_lewidi_annotator_mismatch_and_duplicate_key(tmp_path):
    write_lewidi(tmp_path, {"1": lewidi_record("0,1,1", "A1,A2")})
    with pytest.raises(InputError, match="3 annotations but 2 annotators"):
        generic.load(tmp_path, LEWIDI_OPTIONS, seed=0)
    rec = json.dumps(lewidi_record("0", "A1"))
    (tmp_path / "X_train.json").write_text('{\n"1": ' + rec + ',\n"1": ' + rec + "\n}\n", encoding="utf-8")
    with pytest.raises(InputError, match="already used") as exc:
        generic.load(tmp_path, LEWIDI_OPTIONS, seed=0)
    assert exc.value.line == 3  # json.load would have silently kept only the second


def test_malformed_json_document_line(tmp_path):
    (tmp_path / "X_train.json").write_text('{\n "1": {"text": "a",\n "annotations": }\n}', encoding="utf-8")
    with pytest.raises(InputError, match="malformed JSON") as exc:
        generic.load(tmp_path, LEWIDI_OPTIONS, seed=0)
    assert exc.value.line == 3


# ---------------------------------------------------------------- options

@pytest.mark.parametrize("options, message", [
    ({**LONG_OPTIONS, "lables": ["a", "b"]}, "unknown option"),
    ({k: v for k, v in LONG_OPTIONS.items() if k != "labels"}, "labels"),
    ({**LONG_OPTIONS, "format": "wide"}, "format"),
    ({**LONG_OPTIONS, "label_map": {"x": "other"}}, "label_map"),
    ({**LONG_OPTIONS, "ambiguity": "variance"}, "ambiguity"),
    ({**LONG_OPTIONS, "files": []}, "files"),
])
def test_bad_options(tmp_path, options, message):
    with pytest.raises(ConfigError, match=message):
        generic.load(tmp_path, options, seed=0)


def test_missing_files(tmp_path):
    with pytest.raises(InputError, match="source file not found") as exc:
        generic.load(tmp_path, LONG_OPTIONS, seed=0)
    assert exc.value.path == str(tmp_path / "ann.csv")
    with pytest.raises(InputError, match="no file matches"):
        generic.load(tmp_path, {**LONG_OPTIONS, "files": ["*.csv"]}, seed=0)


def test_ambiguity_scheme_option():
    assert generic.ambiguity_scheme(VARIERR) == "entropy"
    assert generic.ambiguity_scheme({"ambiguity": "active"}) == "active"
    assert generic.ambiguity_scheme({}) == generic.AMBIGUITY == "entropy"
