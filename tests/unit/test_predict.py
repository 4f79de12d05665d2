"""Batched greedy prediction (docs/design.md §6) with the tiny local model."""

from __future__ import annotations

import json

import pytest

from shala.config import fill_defaults
from shala.data.items import subsample
from shala.evaluation.predict import RUN_RECORD_KEYS, run_predict
from shala.jsonio import read_jsonl, write_jsonl
from shala.model.engines import generate
from shala.model.loading import load_model_and_tokenizer
from shala.prompts import render_prompt_string

LABELS = ["entailment", "neutral", "contradiction"]
# built here, partial: the schema's defaults filled as load_config fills them
PROMPT = fill_defaults({
    "background": "You are an expert annotator for natural language inference.",
    "target": "Premise: {premise}\nHypothesis: {hypothesis}",
    "definitions": {"entailment": "true", "neutral": "maybe", "contradiction": "false"},
}, at="datasets.toy.prompt")
CONFIG = fill_defaults({
    "model": {"source": "local", "dtype": "float32", "component": None},
    "evaluation": {"batch_size": 4, "max_new_tokens": 12},
    "datasets": {"toy": {"prompt": PROMPT}},
})


def _items(item_factory, n: int = 7) -> list[dict]:
    words = ["a dog runs", "the cat sleeps on a very warm mat in the sun", "rain",
             "two people talk about the weather and the news", "ok", "a man plays guitar",
             "children are playing outside near the big old tree"]
    return [item_factory([i + 1, 3, 7 - i % 7], LABELS, id=f"x{i}", subset="s" if i % 2 else None,
                         inputs={"premise": words[i % len(words)] * (1 + i % 3),
                                 "hypothesis": words[(i + 3) % len(words)]}, split="test")
            for i in range(n)]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, item_factory):
    d = tmp_path_factory.mktemp("data")
    write_jsonl(d / "test.jsonl", _items(item_factory))
    return d


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load_model_and_tokenizer(tiny_model_dir)


def test_batched_equals_one_at_a_time(tiny, item_factory):
    model, tok = tiny
    msgs = [render_prompt_string(tok, it, PROMPT) for it in _items(item_factory)]
    batched = generate(model, tok, msgs, batch_size=3, max_new_tokens=10, progress=False)
    single = generate(model, tok, msgs, batch_size=1, max_new_tokens=10, progress=False)
    assert len(batched) == len(msgs)
    assert batched == single
    assert any(batched)  # the random model does write something


def test_generate_keeps_input_order(tiny, item_factory):
    model, tok = tiny
    msgs = [render_prompt_string(tok, it, PROMPT) for it in _items(item_factory)]
    full = generate(model, tok, msgs, batch_size=4, max_new_tokens=6, progress=False)
    rev = generate(model, tok, msgs[::-1], batch_size=4, max_new_tokens=6, progress=False)
    assert rev == full[::-1]


def test_run_predict_deterministic_and_complete(tmp_path, data_dir, tiny_model_dir):
    out1, out2 = tmp_path / "a" / "test.jsonl", tmp_path / "b" / "test.jsonl"
    rec = run_predict(CONFIG, "toy", data_dir, str(tiny_model_dir), "test", out1, progress=False)
    run_predict(CONFIG, "toy", data_dir, str(tiny_model_dir), "test", out2, batch_size=2,
                progress=False)
    assert out1.read_bytes() == out2.read_bytes()  # batch size does not change greedy output

    items = read_jsonl(data_dir / "test.jsonl")
    rows = read_jsonl(out1)
    assert len(rows) == len(items)
    for item, row in zip(items, rows):
        assert {k: row[k] for k in item} == item
        assert isinstance(row["completion"], str)
        assert (row["pred_dist"] is None) == (row["parse_error"] is not None)
        if row["pred_dist"] is not None:
            assert len(row["pred_dist"]) == len(LABELS)

    on_disk = json.loads(out1.with_suffix(".run.json").read_text())
    assert on_disk == rec
    assert set(RUN_RECORD_KEYS) <= set(rec)
    assert rec["n_items"] == len(items) and rec["batch_size"] == 4 and rec["max_new_tokens"] == 12
    assert rec["decoding"] == "greedy" and 0.0 <= rec["parse_rate"] <= 1.0
    assert set(rec["versions"]) >= {"torch", "transformers", "shala"}
    assert out1.with_suffix(".run.json").name == "test.run.json"


def test_run_predict_limit_and_overrides(tmp_path, data_dir, tiny_model_dir):
    out = tmp_path / "p.jsonl"
    rec = run_predict(CONFIG, "toy", data_dir, str(tiny_model_dir), "test", out,
                      limit=2, max_new_tokens=3, batch_size=8, progress=False)
    assert rec["n_items"] == 2 and rec["max_new_tokens"] == 3 and rec["batch_size"] == 8
    # the same seeded subset as `shala reference --limit`
    expected = [it["id"] for it in subsample(read_jsonl(data_dir / "test.jsonl"), 2)]
    assert [r["id"] for r in read_jsonl(out)] == expected


def test_parsed_distribution_is_stored(tmp_path, data_dir, tiny_model_dir, monkeypatch):
    """pred_dist is the parser's renormalised output of the raw completion."""
    import shala.evaluation.predict as predict

    fake = ['{"entailment": 2, "neutral": 1, "contradiction": 1}', "no json"]
    monkeypatch.setattr(predict, "greedy_completions", lambda *a, **k: fake)
    out = tmp_path / "p.jsonl"
    rec = run_predict(CONFIG, "toy", data_dir, str(tiny_model_dir), "test", out, limit=2,
                      progress=False)
    rows = read_jsonl(out)
    assert rows[0]["pred_dist"] == [0.5, 0.25, 0.25] and rows[0]["parse_error"] is None
    assert rows[1]["pred_dist"] is None and rows[1]["parse_error"]
    assert rec["parse_rate"] == 0.5 and rec["n_parsed"] == 1


def test_response_prefix_is_prepended_before_parsing(tmp_path, data_dir, tiny_model_dir, monkeypatch):
    """With a response prefix the model continues the answer; the stored
    completion is prefix + generated text, and that is what is parsed."""
    import shala.evaluation.predict as predict

    seen = {}

    def fake_generate(model, tok, prompts, **kw):
        seen["prompts"] = prompts
        return ['0.5, "neutral": 0.25, "contradiction": 0.25}', "oops"]

    monkeypatch.setattr(predict, "greedy_completions", fake_generate)
    cfg = fill_defaults({**CONFIG, "datasets": {"toy": {"prompt": {**PROMPT, "response_prefix": "auto"}}}})
    out = tmp_path / "p.jsonl"
    rec = run_predict(cfg, "toy", data_dir, str(tiny_model_dir), "test", out, limit=2, progress=False)
    assert all(p.endswith('<|im_start|>assistant\n{"entailment": ') for p in seen["prompts"])
    rows = read_jsonl(out)
    assert rows[0]["completion"] == '{"entailment": 0.5, "neutral": 0.25, "contradiction": 0.25}'
    assert rows[0]["pred_dist"] == [0.5, 0.25, 0.25] and rows[0]["response_prefix"] == '{"entailment": '
    assert rows[1]["completion"] == '{"entailment": oops' and rows[1]["pred_dist"] is None
    assert rec["response_prefix"] == ['{"entailment": '] and rec["parse_rate"] == 0.5
