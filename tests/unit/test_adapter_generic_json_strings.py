"""Generic adapter: fields that hold JSON in a string, read through a dotted
path (LeWiDi 2023 ConvAbuse's ``text``), on the real files and on written ones."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import yaml
from conftest import SHARED_DATA, needs_shared_data

from shala.data.adapters import generic
from shala.errors import InputError

ROOT = Path(__file__).resolve().parents[2]
CONVABUSE = SHARED_DATA / "lewidi2023" / "ConvAbuse"
# the shipped entry: what a user copies is what is tested
OPTIONS = yaml.safe_load((ROOT / "config" / "byod.yaml").read_text(encoding="utf-8"))["datasets"]["convabuse"]["options"]
TURNS = ("prev_agent", "prev_user", "agent", "user")
ABUSIVE = {"-3", "-2", "-1"}


@needs_shared_data("lewidi2023", "ConvAbuse")
def test_convabuse_turns_counts_and_splits_from_the_real_files():
    items = generic.load(CONVABUSE, OPTIONS, seed=0)
    by_id = {it["id"]: it for it in items}
    n = 0
    for split, ours in (("train", "train"), ("dev", "validation"), ("test", "test")):
        records = json.loads((CONVABUSE / f"ConvAbuse_{split}.json").read_text(encoding="utf-8"))
        for key, rec in records.items():
            it = by_id[f"ConvAbuse_{split}:{key}"]
            assert it["inputs"] == {t: json.loads(rec["text"])[t] for t in TURNS}
            votes = rec["annotations"].split(",")
            assert it["counts"] == [sum(v not in ABUSIVE for v in votes), sum(v in ABUSIVE for v in votes)]
            # LeWiDi's soft label is the same binarisation, rounded to 2 decimals
            assert it["dist"] == pytest.approx([rec["soft_label"]["0"], rec["soft_label"]["1"]], abs=0.005 + 1e-9)
            assert it["split"] == ours
            n += 1
        assert Counter(it["split"] for it in items)[ours] == len(records)
    assert len(items) == n == 2398 + 812 + 840


@needs_shared_data("lewidi2023", "ConvAbuse")
def test_convabuse_known_item():
    items = {it["id"]: it for it in generic.load(CONVABUSE, OPTIONS, seed=0)}
    first = items["ConvAbuse_train:1"]
    assert first["inputs"]["user"] == "yes" and first["inputs"]["prev_user"] == "well, i have a eatproblem"
    assert first["inputs"]["agent"] == "Can you elaborate on that?" and first["counts"] == [3, 0]
    # train 3: annotations "-1,1" by Ann1, Ann7; text '{"prev_agent": ..., "user": "yea"}'
    three = items["ConvAbuse_train:3"]
    assert three["inputs"] == {"prev_agent": "You are being a bit negative.", "prev_user": "I hate you",
                               "agent": "Do you wish to hate me?", "user": "yea"}
    assert three["counts"] == [1, 1] and three["n_annotators"] == 2 and three["dist"] == [0.5, 0.5]


# ---------------------------------------------------------------- written files

def write_lewidi(folder: Path, records: dict) -> str:
    text = "{\n" + ",\n".join(f'"{k}": {json.dumps(v)}' for k, v in records.items()) + "\n}\n"
    (folder / "C_train.json").write_text(text, encoding="utf-8")
    return text


def record(text: str, annotations: str = "-3,0,1", annotators: str = "A1,A2,A3") -> dict:
    return {"text": text, "annotations": annotations, "annotators": annotators}


WRITTEN = {**OPTIONS, "files": ["C_train.json"], "keep_source_splits": False,
           "text_fields": {"user": "text.user", "reply": "text.turn.reply"}}


def test_nested_json_strings_and_severity_labels(tmp_path):
    inner = json.dumps({"user": "you idiot", "turn": json.dumps({"reply": "hm"})})
    write_lewidi(tmp_path, {"1": record(inner), "2": record(inner, "-2,-1", "A1,A2")})
    one, two = generic.load(tmp_path, WRITTEN, seed=0)
    assert one["inputs"] == {"user": "you idiot", "reply": "hm"}  # a JSON string inside a JSON string
    assert one["counts"] == [2, 1] and two["counts"] == [0, 2]
    assert one["labels"] == ["not_abusive", "abusive"]


@pytest.mark.parametrize("text, message", [
    ("plain words", r"cannot read 'text.user': 'text' is a string but not JSON"),
    (json.dumps(["user", "x"]), r"cannot read 'text.user': 'text' holds JSON list, not an object"),
    (json.dumps({"agent": "hi"}), r"missing field"),
])
def test_a_string_that_is_no_json_object_names_file_line_and_field(tmp_path, text, message):
    written = write_lewidi(tmp_path, {"1": record(json.dumps({"user": "a"})), "2": record(text)})
    with pytest.raises(InputError, match=message) as exc:
        generic.load(tmp_path, {**WRITTEN, "text_fields": {"user": "text.user"}}, seed=0)
    assert exc.value.path == str(tmp_path / "C_train.json") and exc.value.field == "text.user"
    assert exc.value.line == written[:written.index('"2": {')].count("\n") + 1
    assert "\n" not in str(exc.value)


def test_csv_column_holding_json(tmp_path):
    """In a CSV the dotted path needs only its first column in the header."""
    (tmp_path / "a.csv").write_text('id,label,text\nx,0,"{""user"": ""hi""}"\nx,-3,"{""user"": ""hi""}"\n',
                                    encoding="utf-8")
    options = {**OPTIONS, "format": "long", "files": ["a.csv"], "keep_source_splits": False,
               "annotator_field": None, "label_field": "label", "text_fields": {"user": "text.user"}}
    (item,) = generic.load(tmp_path, options, seed=0)
    assert item["inputs"] == {"user": "hi"} and item["counts"] == [1, 1]
    with pytest.raises(InputError, match=r"a\.csv:1: field 'body\.user': missing column"):
        generic.load(tmp_path, {**options, "text_fields": {"user": "body.user"}}, seed=0)


def test_text_fields_are_the_input_names():
    assert generic.text_fields(OPTIONS) == list(TURNS)
    assert generic.text_fields({k: v for k, v in OPTIONS.items() if k != "text_fields"}) == ["text"]


def test_every_adapter_declares_the_text_fields_its_items_carry(tmp_path):
    """What the plan-time placeholder check reads (shala.config.check_registries)."""
    from shala.data.adapters import ADAPTERS, chaosnli, item_text_fields

    assert set(ADAPTERS) == {"chaosnli", "goemotions", "msp_podcast", "generic", "control"}
    assert item_text_fields("generic", OPTIONS) == list(TURNS)
    assert item_text_fields("control", {}) == ["text"] and item_text_fields("goemotions", {}) == ["text"]
    row = {"uid": "u1", "label_count": [1, 2, 97], "example": {"premise": "P", "hypothesis": "H"}}
    for name in chaosnli.FILES.values():
        (tmp_path / name).write_text(json.dumps(row) + "\n", encoding="utf-8")
    (item, _) = chaosnli.load(tmp_path, {}, seed=0)
    assert list(item["inputs"]) == item_text_fields("chaosnli", {}) == ["premise", "hypothesis"]
