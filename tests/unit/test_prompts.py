"""Prompt rendering (docs/design.md §4): the paper's templates and the response prefix."""

from __future__ import annotations

from pathlib import Path

import pytest

from shala.config import fill_defaults, load_config
from shala.errors import ConfigError
from shala.prompts import render_prompt_text, response_prefix

ROOT = Path(__file__).resolve().parents[2]
CONFIG = load_config([ROOT / "config.yaml"])


def _prompt(**fields):
    """A prompt block built here, with the schema's defaults filled as the config's are."""
    return fill_defaults(fields, at="datasets.x.prompt")


@pytest.fixture
def item(item_factory):
    """Item "x" of this dataset, one vote per label."""
    def make(dataset, labels, inputs):
        return item_factory([1] * len(labels), labels, dataset=dataset, inputs=inputs)
    return make


def test_chaosnli_prompt_is_the_papers(item):
    it = item("chaosnli", ["entailment", "neutral", "contradiction"], {"premise": "P.", "hypothesis": "H."})
    text = render_prompt_text(it, CONFIG["datasets"]["chaosnli"]["prompt"])
    # empty Background: the text starts at the Target Utterance
    assert text.startswith("Premise: P.\nHypothesis: H.\n\nGiven a premise and a hypothesis, predict")
    # the doubled braces of the paper's template are single in the rendered prompt
    assert '{"entailment": float, "neutral": float, "contradiction": float}.' in text
    assert "{{" not in text and text.endswith("besides the dictionary.")
    assert "3. contradiction: the hypothesis conflicts with the premise." in text


def test_msp_prompt_has_capitalised_keys_and_goemotions_background(item):
    msp = CONFIG["datasets"]["msp_podcast"]["prompt"]
    labels = ["angry", "contempt", "disgust", "fear", "happy", "neutral", "sad", "surprise"]
    text = render_prompt_text(item("msp_podcast", labels, {"text": "hello"}), msp)
    assert text.startswith("Two speakers are having a conversation.\n\nhello\n\n")
    assert '{"Angry": float, "Contempt": float, "Disgust": float, "Fear": float, "Happy": float,' in text
    go = CONFIG["datasets"]["goemotions"]["prompt"]
    labels = ["anger", "disgust", "fear", "joy", "sadness", "surprise", "neutral"]
    text = render_prompt_text(item("goemotions", labels, {"text": "wow"}), go)
    assert text.startswith("This is a text comment extracted from Reddit.\n\nwow\n\nAssign a calibrated")
    assert "• joy: happiness, admiration" in text


def test_response_prefix():
    labels = ["entailment", "neutral", "contradiction"]
    assert response_prefix(_prompt(), labels) == ""
    assert response_prefix(_prompt(response_prefix="auto"), labels) == '{"entailment": '
    assert response_prefix(_prompt(response_prefix='{"x": '), labels) == '{"x": '


def test_bad_template_names_the_field(item):
    it = item("chaosnli", ["a", "b"], {"premise": "P", "hypothesis": "H"})
    with pytest.raises(ConfigError, match="prompt.output"):
        render_prompt_text(it, _prompt(target="{premise}", output='{"a": float}'))


def test_stop_token_ids_end_with_the_stop_string(tiny_model_dir):
    from transformers import AutoTokenizer

    from shala.prompts import stop_token_ids, with_stop_ids

    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    assert stop_token_ids(tok, _prompt()) == []
    ids = stop_token_ids(tok, _prompt(stop_at="}"))
    assert ids and all(tok.decode([i]).endswith("}") for i in ids)
    assert tok.convert_tokens_to_ids("}") in ids
    others = set(tok.get_vocab().values()) - set(ids)
    assert not any(tok.decode([i]).endswith("}") for i in others)
    assert with_stop_ids(2, [5, 2, 7]) == [2, 5, 7] and with_stop_ids([1, 2], []) == [1, 2]
    with pytest.raises(ConfigError, match="stop_at"):
        stop_token_ids(tok, _prompt(stop_at="\u2603never"))


def _bos_tokenizer():
    """The tiny tokenizer turned into a Llama-3-like one: it adds a BOS on
    every encode, and its chat template writes the BOS too."""
    from tokenizers.processors import TemplateProcessing

    from shala.model.tiny_models import CHATML_TEMPLATE, build_tokenizer

    tok = build_tokenizer()
    tok.add_special_tokens({"bos_token": "<|begin_of_text|>"})
    tok._tokenizer.post_processor = TemplateProcessing(
        single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", tok.bos_token_id)])
    tok.chat_template = "{{ bos_token }}" + CHATML_TEMPLATE
    return tok


@pytest.mark.parametrize("bos", [True, False])
def test_training_and_prediction_tokenise_prompts_alike(tiny_model_dir, bos, item):
    """One BOS in front, the same ids where TRL tokenises a string prompt
    (``processing_class(text=...)``) and where `shala predict` does."""
    from transformers import AutoTokenizer

    from shala.prompts import encode_prompt, render_prompt_string

    tok = _bos_tokenizer() if bos else AutoTokenizer.from_pretrained(str(tiny_model_dir))
    it = item("chaosnli", ["entailment", "neutral", "contradiction"], {"premise": "P.", "hypothesis": "H."})
    cfg = {**CONFIG["datasets"]["chaosnli"]["prompt"], "response_prefix": "auto", "answer_scale": 100}
    prompt = render_prompt_string(tok, it, cfg)
    trl_ids = tok(text=[prompt])["input_ids"][0]  # GRPOTrainer._tokenize_prompts, string prompts
    ids = encode_prompt(tok, prompt)
    assert ids == trl_ids
    if bos:
        assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
    else:
        assert tok.bos_token_id is None or tok.bos_token_id not in ids
