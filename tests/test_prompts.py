"""Prompt rendering (SPEC §4): the paper's templates and the response prefix."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from shala.errors import ConfigError
from shala.items import make_item
from shala.prompts import render_prompt_text, response_prefix

ROOT = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((ROOT / "config.yaml").read_text(encoding="utf-8"))


def _item(dataset, labels, inputs):
    return make_item(id="x", dataset=dataset, subset=None, inputs=inputs, labels=labels,
                     counts=[1] * len(labels), ambiguity="entropy")


def test_chaosnli_prompt_is_the_papers():
    it = _item("chaosnli", ["entailment", "neutral", "contradiction"], {"premise": "P.", "hypothesis": "H."})
    text = render_prompt_text(it, CONFIG["datasets"]["chaosnli"]["prompt"])
    # empty Background: the text starts at the Target Utterance
    assert text.startswith("Premise: P.\nHypothesis: H.\n\nGiven a premise and a hypothesis, predict")
    # the doubled braces of the paper's template are single in the rendered prompt
    assert '{"entailment": float, "neutral": float, "contradiction": float}.' in text
    assert "{{" not in text and text.endswith("besides the dictionary.")
    assert "3. contradiction: the hypothesis conflicts with the premise." in text


def test_msp_prompt_has_capitalised_keys_and_goemotions_background():
    msp = CONFIG["datasets"]["msp_podcast"]["prompt"]
    labels = ["angry", "contempt", "disgust", "fear", "happy", "neutral", "sad", "surprise"]
    text = render_prompt_text(_item("msp_podcast", labels, {"text": "hello"}), msp)
    assert text.startswith("Two speakers are having a conversation.\n\nhello\n\n")
    assert '{"Angry": float, "Contempt": float, "Disgust": float, "Fear": float, "Happy": float,' in text
    go = CONFIG["datasets"]["goemotions"]["prompt"]
    labels = ["anger", "disgust", "fear", "joy", "sadness", "surprise", "neutral"]
    text = render_prompt_text(_item("goemotions", labels, {"text": "wow"}), go)
    assert text.startswith("This is a text comment extracted from Reddit.\n\nwow\n\nAssign a calibrated")
    assert "• joy: happiness, admiration" in text


def test_response_prefix():
    labels = ["entailment", "neutral", "contradiction"]
    assert response_prefix({}, labels) == ""
    assert response_prefix({"response_prefix": "auto"}, labels) == '{"entailment": '
    assert response_prefix({"response_prefix": '{"x": '}, labels) == '{"x": '


def test_bad_template_names_the_field():
    it = _item("chaosnli", ["a", "b"], {"premise": "P", "hypothesis": "H"})
    with pytest.raises(ConfigError, match="prompt.output"):
        render_prompt_text(it, {"target": "{premise}", "output": '{"a": float}'})


def test_stop_token_ids_end_with_the_stop_string(tiny_model_dir):
    from transformers import AutoTokenizer

    from shala.prompts import stop_token_ids, with_stop_ids

    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    assert stop_token_ids(tok, {}) == []
    ids = stop_token_ids(tok, {"stop_at": "}"})
    assert ids and all(tok.decode([i]).endswith("}") for i in ids)
    assert tok.convert_tokens_to_ids("}") in ids
    others = set(tok.get_vocab().values()) - set(ids)
    assert not any(tok.decode([i]).endswith("}") for i in others)
    assert with_stop_ids(2, [5, 2, 7]) == [2, 5, 7] and with_stop_ids([1, 2], []) == [1, 2]
    with pytest.raises(ConfigError, match="stop_at"):
        stop_token_ids(tok, {"stop_at": "\u2603never"})
