"""Generation engines (shala.model.engines): the same greedy completions under
HF generate and transformers' continuous batching, and the combinations that
are refused before any model loads (issue 15, item 2)."""

from __future__ import annotations

import copy
import importlib.util
import json

import pytest

from shala.config import fill_defaults, schema
from shala.errors import ConfigError
from shala.evaluation.predict import run_predict
from shala.jsonio import read_jsonl, write_jsonl
from shala.model.engines import ENGINES, check_rollout_engine, greedy_completions
from shala.model.loading import load_model_and_tokenizer
from shala.prompts import encode_prompt

LABELS = ["entailment", "neutral", "contradiction"]
TEXTS = ["a dog runs", "the cat sleeps on a very warm mat in the sun " * 3, "rain",
         "two people talk about the weather and the news", "ok " * 14, "a man plays guitar " * 6]
PROMPT = fill_defaults({"target": "Premise: {premise}\nHypothesis: {hypothesis}"}, at="datasets.toy.prompt")
NO_MODEL = "/nonexistent/model"  # a check that loaded a model would fail on this path instead


@pytest.fixture(scope="module")
def lively(tiny_model_dir):
    """The tiny model with larger random weights: its greedy completions
    differ from prompt to prompt (the stock one answers newlines to all)."""
    import torch

    model, tok = load_model_and_tokenizer(tiny_model_dir)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.3, generator=gen)
    prompts = [tok.apply_chat_template([{"role": "user", "content": t}], tokenize=False, add_generation_prompt=True)
               for t in TEXTS]
    return model, tok, prompts


def _both(model, tok, prompts, **kw):
    return [greedy_completions(model, tok, prompts, engine=e, batch_size=2, max_new_tokens=16, progress=False, **kw)
            for e in ("generate", "continuous_batching")]


def test_greedy_completions_agree_across_engines(lively):
    model, tok, prompts = lively
    assert len({len(tok(p)["input_ids"]) for p in prompts}) == len(prompts)  # all lengths differ
    hf, cb = _both(model, tok, prompts)
    assert len(set(hf)) == len(prompts) and all(hf)  # a discriminating check: every completion differs
    assert cb == hf


def test_engines_agree_when_stop_ids_end_answers_early(lively):
    model, tok, prompts = lively
    import torch

    hf, _ = _both(model, tok, prompts)
    ids = torch.tensor([encode_prompt(tok, prompts[0])])
    stop = int(model.generate(ids, max_new_tokens=4, do_sample=False)[0, -1])  # the first answer's 4th token
    hf_stop, cb_stop = _both(model, tok, prompts, stop_ids=[stop])
    assert len(hf_stop[0]) < len(hf[0]) and hf[0].startswith(hf_stop[0])
    assert cb_stop == hf_stop


def test_continuous_batching_refuses_a_logits_processor_and_audio(lively):
    model, tok, prompts = lively
    with pytest.raises(ConfigError, match="continuous_batching takes no logits processor"):
        greedy_completions(model, tok, prompts, engine="continuous_batching", batch_size=2, max_new_tokens=4,
                           processor_factory=object)
    with pytest.raises(ConfigError, match="text only"):
        greedy_completions(model, tok, prompts, engine="continuous_batching", batch_size=2, max_new_tokens=4,
                           audio=object(), audio_paths=["a.wav"] * len(prompts))


@pytest.fixture
def predict_setup(tmp_path, item_factory):
    items = [item_factory([i + 1, 2, 3], LABELS, id=f"x{i}", split="test",
                          inputs={"premise": TEXTS[i], "hypothesis": TEXTS[-1 - i]}) for i in range(4)]
    write_jsonl(tmp_path / "test.jsonl", items)
    config = fill_defaults({"model": {"source": "local", "dtype": "float32", "component": None},
                            "evaluation": {"batch_size": 2, "max_new_tokens": 6},
                            "datasets": {"toy": {"prompt": dict(PROMPT)}}})
    return config, tmp_path


def test_predict_takes_the_engine_from_config_and_records_it(predict_setup, tiny_model_dir):
    config, d = predict_setup
    assert config["evaluation"]["engine"] == "generate"
    rec = run_predict(config, "toy", d, str(tiny_model_dir), "test", d / "hf.jsonl", progress=False)
    cb_config = copy.deepcopy(config)
    cb_config["evaluation"]["engine"] = "continuous_batching"
    rec_cb = run_predict(cb_config, "toy", d, str(tiny_model_dir), "test", d / "cb.jsonl", progress=False)
    assert (rec["engine"], rec_cb["engine"]) == ("generate", "continuous_batching")
    assert json.loads((d / "cb.run.json").read_text())["engine"] == "continuous_batching"
    assert [r["completion"] for r in read_jsonl(d / "cb.jsonl")] == [r["completion"] for r in read_jsonl(d / "hf.jsonl")]


def test_constrained_with_continuous_batching_is_refused_before_loading(predict_setup):
    config, d = predict_setup
    config["datasets"]["toy"]["prompt"].update(constrained=True, response_prefix="auto")
    with pytest.raises(ConfigError) as err:
        run_predict(config, "toy", d, NO_MODEL, "test", d / "p.jsonl", engine="continuous_batching", progress=False)
    assert "datasets.toy.prompt.constrained" in str(err.value) and "evaluation.engine" in str(err.value)


def test_vllm_missing_names_the_field_and_the_package(predict_setup, monkeypatch):
    config, d = predict_setup
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real(name, *a))
    with pytest.raises(ConfigError, match=r"evaluation\.engine: vllm: the vllm package is not installed"):
        run_predict(config, "toy", d, NO_MODEL, "test", d / "p.jsonl", engine="vllm", progress=False)
    with pytest.raises(ConfigError,
                       match=r"training\.grpo\.use_vllm: the vllm package is not installed \(shala.s `vllm` extra"):
        check_rollout_engine({"use_vllm": True}, "toy", PROMPT)


def test_an_unknown_engine_is_refused(predict_setup):
    config, d = predict_setup
    with pytest.raises(ConfigError, match="unknown engine 'beam'"):
        run_predict(config, "toy", d, NO_MODEL, "test", d / "p.jsonl", engine="beam", progress=False)


def test_constrained_rollouts_under_continuous_batching_are_refused_before_training(paper_config, tmp_path):
    from shala.train.grpo import run_train

    config = copy.deepcopy(paper_config)
    dataset = next(iter(config["datasets"]))
    config["datasets"][dataset]["prompt"].update(constrained=True, response_prefix="auto")
    config["training"]["grpo"]["use_transformers_continuous_batching"] = True
    with pytest.raises(ConfigError) as err:
        run_train(config, dataset, "shala", 0, tmp_path / "data", NO_MODEL, tmp_path / "out")
    msg = str(err.value)
    assert f"datasets.{dataset}.prompt.constrained" in msg
    assert "training.grpo.use_transformers_continuous_batching" in msg
    check_rollout_engine({"use_transformers_continuous_batching": True}, dataset, PROMPT)  # unconstrained: fine


def test_schema_defaults_and_engine_names():
    assert fill_defaults({}, at="evaluation")["engine"] == "generate"
    grpo = fill_defaults({}, at="training.grpo")
    assert grpo["use_transformers_continuous_batching"] is False and grpo["use_vllm"] is False
    assert schema()["properties"]["evaluation"]["properties"]["engine"]["enum"] == list(ENGINES)


@pytest.mark.gpu_first_run
def test_vllm_rollouts_take_the_qwen25_omni_thinker_and_refuse_other_omni_models_before_loading(paper_config,
                                                                                               tmp_path):
    """vLLM rollouts serve the Qwen2.5-Omni thinker (full folder or a saved
    thinker) on text items; another Omni model's weight names are not mapped:
    refused whether or not vllm is installed, naming the field, by training
    (before loading) and in the config scan preflight uses."""
    from shala.model.engines import vllm_model_problems, vllm_rollout_fields, vllm_serves
    from shala.train.grpo import run_train

    config = copy.deepcopy(paper_config)
    dataset = next(iter(config["datasets"]))
    config["training"]["grpo"]["use_vllm"] = True
    omni = tmp_path / "omni"  # what is read before loading: the model type
    omni.mkdir()
    (omni / "config.json").write_text('{"model_type": "qwen3_omni_moe"}')
    with pytest.raises(ConfigError, match=r"^training\.grpo\.use_vllm: true cannot train this Omni model's thinker: "
                                          r"shala maps only Qwen2\.5-Omni's"):
        run_train(config, dataset, "shala", 0, tmp_path / "data", str(omni), tmp_path / "out")
    assert not (tmp_path / "out" / "run.json").exists()
    config["methods"]["mls"].setdefault("overrides", {})["use_vllm"] = True
    assert vllm_rollout_fields(config) == ["training.grpo.use_vllm", "methods.mls.overrides.use_vllm"]
    problems = vllm_model_problems(config, "qwen3_omni_moe_thinker")
    assert [p.split(":")[0] for p in problems] == vllm_rollout_fields(config)
    assert [vllm_serves(t) for t in ("qwen2_5_omni", "qwen2_5_omni_thinker", "qwen2", "qwen3_omni_moe")] == [
        True, True, True, False]
    config["results"] = str(tmp_path / "results")  # no prepared items: nothing read says audio
    assert vllm_model_problems(config, "qwen2_5_omni") == vllm_model_problems(config, "qwen2") == []
