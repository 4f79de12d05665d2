"""Prompt rendering (docs/design.md §4): the paper's templates and the response prefix."""

from __future__ import annotations

from pathlib import Path

import pytest

from shala.config import fill_defaults
from shala.errors import ConfigError
from shala.plan import load_config
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


# ---------------------------------------------------------------- the paper's text stays, the generic one reads well

# render_prompt_text of config.yaml's chaosnli prompt, computed before the
# generic default text changed (issue 27): the paper's prompt must not move.
CHAOSNLI_TEXT = (
    "Premise: A man plays a guitar.\nHypothesis: A person makes music.\n\n"
    "Given a premise and a hypothesis, predict the probability of the relationship between them from the "
    "following options: entailment, neutral, contradiction. 1. entailment: the hypothesis logically follows "
    "from the premise 2. neutral: neither entailment nor contradiction can be determined 3. contradiction: "
    "the hypothesis conflicts with the premise. You MUST produce a calibrated probability distribution.\n\n"
    "Before outputting, check if the format of your output is in accordance with the requirements I provided. "
    "1. Generate the label probabilities in EXACTLY this JSON structure: {\"entailment\": float, \"neutral\": "
    "float, \"contradiction\": float}. 2. The sum of all probabilities must be exactly 1.0. 3. Do not include "
    "any explanations or text besides the dictionary.")


def test_chaosnli_prompt_is_byte_identical(item):
    it = item("chaosnli", ["entailment", "neutral", "contradiction"],
              {"premise": "A man plays a guitar.", "hypothesis": "A person makes music."})
    assert render_prompt_text(it, CONFIG["datasets"]["chaosnli"]["prompt"]) == CHAOSNLI_TEXT


def test_generic_prompt_without_definitions_is_a_sentence_naming_every_label(item):
    labels = ["not_abusive", "abusive", "unsure"]
    text = render_prompt_text(item("mine", labels, {"text": "hi"}), _prompt(target="{text}"))
    target, task, output = text.split("\n\n")
    assert target == "hi" and "over the classes:" not in text
    assert task.endswith("as calibrated probabilities over these classes: not_abusive, abusive, unsure.")
    assert output.startswith("Answer with exactly one JSON object whose keys are the class names in this order: "
                             "not_abusive, abusive, unsure.")


def test_generic_prompt_keeps_the_definitions_block(item):
    labels = ["no", "yes"]
    cfg = _prompt(target="{text}", definitions={"no": "not abusive", "yes": "abusive"})
    task = render_prompt_text(item("mine", labels, {"text": "hi"}), cfg).split("\n\n")[1]
    assert task.splitlines()[1:] == ["- no: not abusive", "- yes: abusive"]
    assert task.splitlines()[0].endswith("over these classes: no, yes.")


# ---------------------------------------------------------------- placeholders, checked at plan time

@pytest.mark.parametrize("part, template, why", [
    ("target", "Text: {txt}", "{txt} is not a text field of the items (they have: text, user)"),
    ("target", "{user.upper}{0}", "{0} is not a text field of the items (they have: text, user)"),
    ("target", "Text: {text", "bad template"),
    ("target", "  ", "is empty; name the items' text fields (they have: text, user)"),
    ("task", "Pick from {labels}", "{labels} is not one of {label_list}, {example}"),
    ("output", "{example} {user}", "{user} is not one of {label_list}, {example}"),
    ("background", "About {user}:", "{user} would be shown as written: the background is plain text"),
])
def test_placeholder_problem_names_the_part_and_the_placeholder(part, template, why):
    from shala.prompts import placeholder_problem

    cfg = _prompt(**{"target": "{text}", part: template})
    found = placeholder_problem(cfg, ["text", "user"])
    assert found is not None and found[0] == part and found[1].startswith(why)


def test_good_placeholders_and_literal_braces_pass():
    from shala.prompts import placeholder_problem

    cfg = _prompt(target="{user}: {text}", background='Answers look like {"a": 1}.', output="{{x}} {example}")
    assert placeholder_problem(cfg, ["text", "user"]) is None


SHIPPED = [["config.yaml"], ["config.yaml", "config/demo.yaml"], ["config.yaml", "config/byod.yaml"],
           ["config.yaml", "config/demo.yaml", "config/replication.yaml"]]


@pytest.mark.parametrize("files", SHIPPED, ids=["+".join(Path(f).stem for f in s) for s in SHIPPED])
def test_shipped_configs_pass_the_placeholder_check(files):
    from shala.data.adapters import item_text_fields
    from shala.plan import check_config
    from shala.prompts import placeholder_problem

    cfg = load_config([ROOT / f for f in files])
    check_config(cfg)
    for ds, d in cfg["datasets"].items():  # the datasets not run too
        assert placeholder_problem(d["prompt"], item_text_fields(d["adapter"], d["options"])) is None, ds


def test_a_bad_target_stops_the_config_with_the_field_named(tmp_path):
    import yaml

    mine = tmp_path / "mine.yaml"
    mine.write_text(yaml.safe_dump({"run_datasets": ["mine"], "datasets": {"mine": {
        "adapter": "generic", "split": {"train": 0.7, "validation": 0.15},
        "options": {"format": "long", "files": ["a.csv"], "labels": ["no", "yes"]},
        "prompt": {"target": "Text: {txt}"}}}}))
    with pytest.raises(ConfigError) as exc:
        load_config([ROOT / "config.yaml", mine])
    assert str(exc.value).endswith("field 'datasets.mine.prompt.target': {txt} is not a text field of the items "
                                   "(they have: text)")
    chaos = tmp_path / "chaos.yaml"
    chaos.write_text(yaml.safe_dump({"datasets": {"chaosnli": {"prompt": {"target": "{premise} / {hypotesis}"}}}}))
    with pytest.raises(ConfigError, match=r"'datasets\.chaosnli\.prompt\.target': \{hypotesis\} is not a text "
                                          r"field of the items \(they have: premise, hypothesis\)"):
        load_config([ROOT / "config.yaml", chaos])
