"""LoRA (training.peft, GitHub issue 15): config, a GRPO and an SFT run of
the tiny model with adapters, the merged save that prediction reads, and
the one-GPU preflight (seconds, CPU)."""

from __future__ import annotations

import copy
import io
import json
import re
from pathlib import Path

import pytest
from conftest import write_nli_train

from shala.config import fill_defaults, schema
from shala.jsonio import read_json, read_jsonl, write_jsonl
from shala.plan import load_config

ROOT = Path(__file__).resolve().parents[2]
SHORT_PROMPT = {"target": "Premise: {premise}\nHypothesis: {hypothesis}", "task": "Classes:",
                "output": "Answer in JSON: {label_list}"}


def test_schema_defaults_and_lora_config():
    peft_schema = schema()["properties"]["training"]["properties"]["peft"]["properties"]
    assert {k: v["default"] for k, v in peft_schema.items()} == {
        "enabled": False, "r": 16, "lora_alpha": 32, "lora_dropout": 0.05, "target_modules": "all-linear"}
    paper = load_config([ROOT / "config.yaml"])
    assert paper["training"]["peft"]["enabled"] is False  # the paper: a full fine-tune

    from shala.train.lora import lora_config, lora_settings

    assert lora_config(paper) is None and lora_settings(paper) is None
    one = load_config([ROOT / "config.yaml", ROOT / "config" / "one_gpu.yaml"])
    assert one["training"]["gpus"] == 1 and one["training"]["peft"]["enabled"] is True
    lc = lora_config(one)
    assert (lc.r, lc.lora_alpha, lc.lora_dropout, lc.target_modules) == (16, 32, 0.05, "all-linear")
    assert str(lc.task_type.value if hasattr(lc.task_type, "value") else lc.task_type) == "CAUSAL_LM"
    assert "audio_tower" in lc.exclude_modules  # frozen towers get no adapters
    custom = copy.deepcopy(one)
    custom["training"]["peft"].update(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"])
    lc = lora_config(custom)
    assert (lc.r, lc.lora_alpha, lc.lora_dropout, sorted(lc.target_modules)) == (4, 8, 0.0, ["q_proj", "v_proj"])


@pytest.fixture(scope="module")
def cfg():
    config = load_config([ROOT / "config.yaml"])
    config["datasets"]["chaosnli"]["prompt"] = dict(SHORT_PROMPT)
    config["training"]["threads"] = 1
    config["training"]["grpo"].update(max_completion_length=16, save_steps=1, logging_steps=1,
                                      activation_checkpointing=False)
    config["training"]["warmup_sft"].update(per_device_train_batch_size=8, activation_checkpointing=False)
    config["training"]["peft"].update(enabled=True, r=4, lora_alpha=8)
    return fill_defaults(config)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = write_nli_train(tmp_path_factory.mktemp("data"))
    test = [{**it, "id": f"t{k}", "split": "test"} for k, it in enumerate(read_jsonl(d / "train.jsonl")[:2])]
    write_jsonl(d / "test.jsonl", test)
    return d


def _check_lora_output(out: Path, record: dict, base_dir: Path):
    from safetensors.torch import load_file

    peft = record["peft"]
    assert {k: peft[k] for k in ("r", "lora_alpha", "lora_dropout", "target_modules")} == {
        "r": 4, "lora_alpha": 8, "lora_dropout": 0.05, "target_modules": "all-linear"}
    assert 0 < peft["trainable_params"] < peft["total_params"]
    assert read_json(out / "run.json")["peft"] == json.loads(json.dumps(peft))
    # the adapters alone and the base they belong to; no merged copy (shala.model.adapters)
    assert not (out / "model.safetensors").exists()
    assert read_json(out / "adapter_base.json") == {"base_model": str(base_dir)}
    assert (out / "adapter" / "adapter_config.json").is_file()
    adapter = load_file(str(out / "adapter" / "adapter_model.safetensors"))
    assert adapter and all("lora" in k for k in adapter)
    assert sum(t.numel() for t in adapter.values()) == peft["trainable_params"]


def test_grpo_with_lora_trains_adapters_only(cfg, data_dir, tiny_model_dir, tmp_path, monkeypatch):
    from transformers import Trainer

    from shala.evaluation.predict import run_predict
    from shala.train.grpo import run_train

    seen = {}
    original = Trainer.train

    def train(self, *a, **kw):  # what the optimizer sees: the adapters, nothing else
        params = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        seen["trainable"] = sum(p.numel() for _, p in params)
        seen["names"] = [n for n, _ in params]
        seen["nb"] = self.model.get_nb_trainable_parameters()
        return original(self, *a, **kw)

    monkeypatch.setattr(Trainer, "train", train)
    out = tmp_path / "grpo"
    record = run_train(cfg, "chaosnli", "shala", 0, data_dir, str(tiny_model_dir), out, max_steps=1)
    assert seen["names"] and all("lora_" in n for n in seen["names"])
    assert seen["trainable"] == seen["nb"][0] == record["peft"]["trainable_params"]
    assert seen["trainable"] < seen["nb"][1] == record["peft"]["total_params"]
    assert record["global_step"] == 1
    _check_lora_output(out, record, tiny_model_dir)
    # preflight's adapter count is peft's
    from shala.launch.gpu_memory import lora_params
    from shala.launch.model_shape import count_parameters

    shape = count_parameters(json.loads((tiny_model_dir / "config.json").read_text()), name="tiny")
    assert lora_params(shape, 4) == record["peft"]["trainable_params"]

    # prediction reads the merged model as it reads a full fine-tune's
    run_predict(cfg, "chaosnli", data_dir, str(out), "test", tmp_path / "pred.jsonl", progress=False)
    rows = read_jsonl(tmp_path / "pred.jsonl")
    assert [r["id"] for r in rows] == ["t0", "t1"] and all("completion" in r for r in rows)


def test_sft_with_lora(cfg, data_dir, tiny_model_dir, tmp_path):
    from shala.train.sft import run_sft

    out = tmp_path / "sft"
    record = run_sft(cfg, "chaosnli", 0, data_dir, str(tiny_model_dir), out, max_steps=2)
    assert record["global_step"] == 2
    _check_lora_output(out, record, tiny_model_dir)


def _preflight(mem: float) -> tuple[int, str]:
    from shala.launch.preflight import run_preflight

    config = load_config([ROOT / "config.yaml", ROOT / "config" / "one_gpu.yaml"])
    buf = io.StringIO()
    rc = run_preflight(config, gpus=1, gpu_mem=mem, free_disk=10_000, out=buf)
    return rc, buf.getvalue()


def test_one_gpu_preflight_names_lora():
    """The 7B thinker: its full fine-tune fits no single GPU; config/one_gpu.yaml's
    LoRA (one completion per micro-batch, the paper's 16 per step) fits a
    24 GB card as torch reports it (23.6 GiB), 48 and 80 GB with the 10 % headroom."""
    for mem in (23.6, 48, 80):
        rc, text = _preflight(mem)
        assert rc == 0, text
        assert "LoRA r=16" in text and "LoRA fits where the full fine-tune does not" in text, text
        assert re.search(r"full fine-tune \(the paper\): +[\d.]+ GiB  does not fit", text), text
        assert "per-device batch 1 x (512 prompt + 128 completion) tokens, 16 micro-batch(es)" in text, text
    total = float(re.search(r"^  total +([\d.]+)", text, re.M).group(1))
    assert 19.5 < total < 0.9 * 23.6, text
    # adapters-only checkpoints, and the adapters alone at the end (40.37M x 4 B = 0.15 GiB)
    assert re.search(r"checkpoint +0\.5 GiB +LoRA adapters \+ Adam m, v 12 B x 40\.370M", text), text
    assert re.search(r"final weights +0\.2 GiB +adapters alone, fp32 4 B x 40\.370M", text), text


def test_lora_estimate():
    from shala.launch.gpu_memory import Setup, estimate_memory, lora_params, with_lora
    from shala.launch.model_shape import count_parameters, model_config_dict

    config = load_config([ROOT / "config.yaml"])
    cfg_dict, source = model_config_dict(config)
    shape = count_parameters(cfg_dict, name="qwen", source=source)
    h, i, kv = shape.hidden, shape.intermediate, shape.kv_heads * shape.head_dim
    assert lora_params(shape, 16) == shape.layers * 16 * (9 * h + 2 * kv + 3 * i)
    assert lora_params(shape, 8, ("q_proj", "v_proj")) == shape.layers * 8 * (3 * h + kv)
    full = Setup(gpus=1, deepspeed=False)
    lora = with_lora(full, 16)
    assert estimate_memory(shape, lora).total < estimate_memory(shape, full).total / 4
    labels = [line.label for line in estimate_memory(shape, lora).lines]
    assert labels[0] == "weights (bf16, frozen base)" and not any("optimizer" in x for x in labels)


def test_report_setup_names_lora_as_a_departure():
    import pandas as pd

    from shala.report.load import RunRecord
    from shala.report.page import setup_md

    def rec(method, peft):
        data = {"kind": "grpo", "model_ref": "m", "response_prefix": [], "peft": peft,
                "grpo_config": {"full": {"learning_rate": 1e-6}}}
        return RunRecord("chaosnli", method, 0, Path(f"x/{method}/seed0/run.json"), data, pd.DataFrame())

    lora = {"r": 16, "lora_alpha": 32, "lora_dropout": 0.05, "target_modules": "all-linear",
            "trainable_params": 10, "total_params": 100}
    md = setup_md([rec("shala", lora), rec("mls", None)])
    assert ("Departure from the paper: LoRA (r=16, alpha=32, all-linear, learning rate 1e-06) instead of the "
            "paper's full fine-tune (training.peft): chaosnli/shala/seed 0.") in md
    assert "LoRA" not in setup_md([rec("mls", None)])


def test_omni_towers_get_no_adapters(tmp_path):
    """"all-linear" on an Omni thinker: the language model gets adapters, the
    frozen audio and vision towers none."""
    from peft import get_peft_model

    from shala.model.tiny_omni import build_tiny_omni
    from shala.train.lora import lora_config
    from shala.train.model_setup import load_for_training

    thinker = build_tiny_omni(tmp_path / "thinker", full=False)[0]
    model, _ = load_for_training(thinker, component="thinker")
    config = load_config([ROOT / "config.yaml", ROOT / "config" / "one_gpu.yaml"])
    peft_model = get_peft_model(model, lora_config(config, model))
    adapted = [n for n, _ in peft_model.named_parameters() if "lora_" in n]
    assert adapted and not any("audio_tower" in n or "visual" in n for n in adapted)
    assert any("layers.0.self_attn.q_proj" in n for n in adapted)


@pytest.mark.gpu_first_run
def test_saved_lora_run_keeps_what_it_learned(tiny_model_dir, tmp_path):
    """A bf16 base with small adapter weights, the paper's LoRA regime on a GPU:
    the run folder as shala saves and loads it gives the trained (unmerged)
    model's logits, while peft's in-place merge into the bf16 weights, the
    previous save, rounds most of the change away. Logits are computed in
    float32 from each model's weights (bf16 values upcast exactly), so what
    is compared is what each save kept, not bf16 output rounding."""
    import copy

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import Trainer, TrainingArguments

    from shala.model.loading import load_model_and_tokenizer
    from shala.train.lora import save_lora

    base, _ = load_model_and_tokenizer(str(tiny_model_dir), dtype="bfloat16")
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # B·A·(alpha/r) of order 1e-5, as ~500 Adam steps at a small lr leave it
        for name, p in model.named_parameters():
            if "lora_A" in name or "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 2e-3)
    deltas = [m.get_delta_weight("default").abs().mean().item() for m in model.modules()
              if hasattr(m, "get_delta_weight") and hasattr(m, "lora_A")]
    assert 1e-6 < max(deltas) < 5e-5

    run = tmp_path / "run"
    save_lora(Trainer(model=model, args=TrainingArguments(output_dir=str(tmp_path / "t"), use_cpu=True,
                                                          report_to=[])), run, str(tiny_model_dir))
    naive = copy.deepcopy(model).merge_and_unload()  # bf16 weight.data += delta, in place
    assert next(naive.parameters()).dtype == torch.bfloat16
    loaded, _ = load_model_and_tokenizer(str(run), dtype="bfloat16")
    ids = torch.randint(0, base.config.vocab_size, (4, 16), generator=gen)

    def logits(m):
        m = m.float().eval()
        with torch.no_grad():
            return m(input_ids=ids).logits

    trained = logits(model)
    with model.disable_adapter():
        before = logits(model)
    saved, merged = logits(loaded), logits(naive)
    learned = (trained - before).abs().mean().item()
    assert learned > 1e-5  # the adapters change the logits
    assert (saved - trained).abs().mean().item() <= 0.01 * learned
    assert (merged - trained).abs().mean().item() >= 0.5 * learned


@pytest.mark.gpu_first_run
def test_grpo_continues_a_lora_warmup(cfg, data_dir, tiny_model_dir, tmp_path, monkeypatch):
    """GRPO from a LoRA warm-up trains the warm-up's adapters on (no merge
    into the base, no second adapter), and its run folder names the base."""
    from safetensors.torch import load_file
    from transformers import Trainer

    from shala.train.grpo import run_train
    from shala.train.sft import run_sft

    warm = tmp_path / "warm"
    run_sft(cfg, "chaosnli", 0, data_dir, str(tiny_model_dir), warm, max_steps=1)
    warmed = load_file(str(warm / "adapter" / "adapter_model.safetensors"))
    assert any(k.endswith("lora_B.weight") and v.abs().max() > 0 for k, v in warmed.items())  # B left 0
    seen = {}
    original = Trainer.train

    def train(self, *a, **kw):  # what GRPO starts from: the warm-up's adapters, trainable
        seen["trainable"] = {n: p.detach().clone() for n, p in self.model.named_parameters() if p.requires_grad}
        return original(self, *a, **kw)

    monkeypatch.setattr(Trainer, "train", train)
    out = tmp_path / "grpo"
    record = run_train(cfg, "chaosnli", "shala", 0, data_dir, str(tiny_model_dir), out, max_steps=1,
                       init_from=warm)
    start = {n.replace(".default.weight", ".weight"): v for n, v in seen["trainable"].items()}
    assert set(start) == set(warmed)
    assert all(torch_equal(start[k], warmed[k]) for k in warmed)
    after = load_file(str(out / "adapter" / "adapter_model.safetensors"))
    assert set(after) == set(warmed)
    assert record["peft"]["trainable_params"] == sum(t.numel() for t in after.values())
    assert read_json(out / "adapter_base.json") == {"base_model": str(tiny_model_dir)}


def torch_equal(a, b) -> bool:
    return bool((a.float() - b.float()).abs().max() == 0)
