"""MSP-Podcast adapter (docs/design.md §3.3): real WHiSER label files + small written fixtures."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from conftest import SHARED_DATA, needs_shared_data

from shala.data.adapters import msp_podcast
from shala.errors import ConfigError, InputError

WHISER = SHARED_DATA / "whiser" / "Labels"
LABELS = ["angry", "contempt", "disgust", "fear", "happy", "neutral", "sad", "surprise"]
MSP = ["Angry", "Contempt", "Disgust", "Fear", "Happy", "Neutral", "Sad", "Surprise"]

needs_whiser = needs_shared_data("whiser", "Labels")


@pytest.fixture(scope="module")
def whiser_source(tmp_path_factory) -> Path:
    """Real Labels/ (symlinked, read in place) plus one transcript per clip."""
    src = tmp_path_factory.mktemp("whiser")
    (src / "Labels").symlink_to(WHISER, target_is_directory=True)
    (src / "Transcripts").mkdir()
    for name in pd.read_csv(WHISER / "labels_detailed.csv")["FileName"].unique():
        (src / "Transcripts" / f"{Path(name).stem}.txt").write_text(f"words of {name}\n", encoding="utf-8")
    return src


@pytest.fixture(scope="module")
def expected() -> pd.DataFrame:
    """Votes per clip computed here with pandas, independently of the adapter."""
    df = pd.read_csv(WHISER / "labels_detailed.csv")
    df["primary"] = df["EmoDetail"].str.split(";").str[1].str.strip()
    df["valid"] = df["primary"].isin(MSP)
    return df


@needs_whiser
def test_drop_item_keeps_clips_whose_votes_are_all_in_the_eight(whiser_source, expected):
    items = msp_podcast.load(whiser_source, {}, seed=0)
    all_valid = expected.groupby("FileName", sort=False)["valid"].all()
    assert len(items) == int(all_valid.sum()) == 4209
    assert {it["id"] + ".wav" for it in items} == set(all_valid[all_valid].index)
    assert sum(it["n_annotators"] for it in items) == int(
        expected[expected["FileName"].isin(all_valid[all_valid].index)].shape[0])


@needs_whiser
def test_drop_vote_keeps_clips_with_any_valid_vote_and_their_counts(whiser_source, expected):
    items = msp_podcast.load(whiser_source, {"other_policy": "drop_vote"}, seed=0)
    any_valid = expected.groupby("FileName", sort=False)["valid"].any()
    assert len(items) == int(any_valid.sum()) == 5427  # every WHiSER clip has a valid vote
    assert len(items) > len(msp_podcast.load(whiser_source, {"other_policy": "drop_item"}, seed=0))
    table = pd.crosstab(expected.loc[expected["valid"], "FileName"], expected.loc[expected["valid"], "primary"])
    table = table.reindex(columns=MSP, fill_value=0)
    for it in items:
        assert it["counts"] == table.loc[it["id"] + ".wav"].tolist(), it["id"]
    assert sum(sum(it["counts"]) for it in items) == int(expected["valid"].sum())
    # items keep the order of first appearance in labels_detailed.csv
    assert [it["id"] + ".wav" for it in items] == list(any_valid[any_valid].index)


@needs_whiser
def test_first_whiser_clip(whiser_source, expected):
    rows = expected[expected["FileName"] == "001-105.1-2_14.wav"]
    (item,) = [it for it in msp_podcast.load(whiser_source, {"other_policy": "drop_vote"}, seed=0)
               if it["id"] == "001-105.1-2_14"]
    assert item["labels"] == LABELS
    assert item["n_annotators"] == int(rows["valid"].sum())
    assert item["counts"][LABELS.index("contempt")] == int((rows["primary"] == "Contempt").sum())
    assert item["inputs"]["text"] == "words of 001-105.1-2_14.wav"
    assert item["inputs"]["audio"] == str(whiser_source / "Audios" / "001-105.1-2_14.wav")
    assert set(item["inputs"]) == {*msp_podcast.TEXT_FIELDS, "audio"}  # the audio is no text for a target
    assert item["dataset"] == "msp_podcast" and item["subset"] is None and item["split"] is None


@needs_whiser
def test_real_file_has_the_awkward_other_spellings(expected):
    # guards the test data assumption behind the two tests above
    primaries = set(expected["EmoDetail"].str.split(";").str[1].str.strip())
    assert {"Other-concerned", "Other-", "Other- Concerned"} <= primaries


def write_labels(root: Path, rows: list[tuple[str, str]], transcripts: bool = True) -> Path:
    (root / "Labels").mkdir(parents=True, exist_ok=True)
    lines = ["FileName,EmoDetail"] + [f"{f},{d}" for f, d in rows]
    (root / "Labels" / "labels_detailed.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    if transcripts:
        (root / "Transcripts").mkdir(exist_ok=True)
        for f, _ in rows:
            (root / "Transcripts" / f"{Path(f).stem}.txt").write_text(f"text {f}", encoding="utf-8")
    return root


def detail(worker: int, primary: str) -> str:
    return f"WORKER{worker:08d}; {primary}; {primary}; A:4.000000; V:3.000000; D:4.000000;"


SMALL = [
    ("MSP-PODCAST_0001_0001.wav", detail(1, "Happy")),
    ("MSP-PODCAST_0001_0001.wav", detail(2, "Happy")),
    ("MSP-PODCAST_0001_0001.wav", detail(3, "Sad")),
    ("MSP-PODCAST_0001_0002.wav", detail(1, "Neutral")),
    ("MSP-PODCAST_0001_0002.wav", detail(2, "Other-Concerned ")),
    ("MSP-PODCAST_0001_0003.wav", detail(1, "Other-")),
    ("MSP-PODCAST_0001_0003.wav", detail(2, "Other-Annoyed")),
    ("MSP-PODCAST_0001_0004.wav", detail(1, "surprise")),  # case-insensitive
]


def test_small_policies(tmp_path):
    src = write_labels(tmp_path, SMALL)
    kept = msp_podcast.load(src, {"other_policy": "drop_item"}, seed=0)
    assert [it["id"] for it in kept] == ["MSP-PODCAST_0001_0001", "MSP-PODCAST_0001_0004"]
    assert kept[0]["counts"] == [0, 0, 0, 0, 2, 0, 1, 0] and kept[0]["n_annotators"] == 3
    assert kept[0]["ambiguity"] == "2" and kept[0]["majority"] == "happy"
    assert kept[1]["counts"] == [0, 0, 0, 0, 0, 0, 0, 1]
    votes = msp_podcast.load(src, {"other_policy": "drop_vote"}, seed=0)
    # 0002 keeps its Neutral vote; 0003 has no vote left and is dropped
    assert [it["id"] for it in votes] == ["MSP-PODCAST_0001_0001", "MSP-PODCAST_0001_0002", "MSP-PODCAST_0001_0004"]
    assert votes[1]["counts"] == [0, 0, 0, 0, 0, 1, 0, 0] and votes[1]["n_annotators"] == 1
    assert votes[0]["inputs"]["text"] == "text MSP-PODCAST_0001_0001.wav"


def test_missing_transcript_names_the_expected_file(tmp_path):
    src = write_labels(tmp_path, SMALL)
    (src / "Transcripts" / "MSP-PODCAST_0001_0004.txt").unlink()
    with pytest.raises(InputError) as exc:
        msp_podcast.load(src, {}, seed=0)
    assert exc.value.path == str(src / "Transcripts" / "MSP-PODCAST_0001_0004.txt")
    items = msp_podcast.load(src, {"require_transcripts": False}, seed=0)
    assert items[-1]["inputs"]["text"] == "" and items[0]["inputs"]["text"] != ""


def test_malformed_emodetail_names_line(tmp_path):
    rows = SMALL[:2] + [("MSP-PODCAST_0001_0009.wav", "WORKER00000001")]
    with pytest.raises(InputError) as exc:
        msp_podcast.load(write_labels(tmp_path, rows), {}, seed=0)
    assert exc.value.line == 4 and exc.value.field == "EmoDetail"
    assert "labels_detailed.csv:4" in str(exc.value)


def test_empty_primary_is_an_error_not_an_other_vote(tmp_path):
    rows = SMALL[:1] + [("MSP-PODCAST_0001_0001.wav", "WORKER00000002; ; ; A:1; V:1; D:1;")]
    with pytest.raises(InputError, match="empty primary") as exc:
        msp_podcast.load(write_labels(tmp_path, rows), {"other_policy": "drop_vote"}, seed=0)
    assert exc.value.line == 3


def test_missing_label_file_and_column(tmp_path):
    with pytest.raises(InputError, match="labels_detailed.csv"):
        msp_podcast.load(tmp_path, {}, seed=0)
    (tmp_path / "Labels").mkdir()
    (tmp_path / "Labels" / "labels_detailed.csv").write_text("FileName,Emo\na.wav,x\n", encoding="utf-8")
    with pytest.raises(InputError) as exc:
        msp_podcast.load(tmp_path, {}, seed=0)
    assert exc.value.field == "EmoDetail" and exc.value.line == 1


@pytest.mark.parametrize("options", [{"other_policy": "keep"}, {"require_transcripts": "no"}, {"policy": 1}])
def test_bad_options(tmp_path, options):
    with pytest.raises(ConfigError):
        msp_podcast.load(write_labels(tmp_path, SMALL), options, seed=0)
