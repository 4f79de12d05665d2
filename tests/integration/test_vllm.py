"""vLLM end to end on the CPU (vLLM's CPU build in .venv-vllm) with the
demo's SmolLM2 on real ChaosNLI items: prediction identical to
``generate``, the constrained answer through a structured-output regex,
and GRPO with vLLM rollouts whose weights follow the trained model; the
same GRPO check on a tiny Qwen2.5-Omni thinker (head_dim 32, as vLLM's CPU
attention needs), and a saved thinker served through the push
(shala.model.vllm_engine, shala.train.vllm_rollouts; issue 28).

One engine at a time runs in this process, as shala runs it; the GRPO tests
come last (TRL's colocate mode leaves its rank variables set)."""

from __future__ import annotations

import copy
import importlib.util
import json
import re
from pathlib import Path

import pytest
from conftest import needs_shared_data

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None,
                       reason="the vllm package is not importable here (bash scripts/setup_venv.sh --vllm)"),
    needs_shared_data("chaosnli"),
]
ROOT = Path(__file__).resolve().parents[2]
N_ITEMS = 16


@pytest.fixture(scope="module")
def demo(tmp_path_factory, smollm2_dir):
    """The demo config, ChaosNLI prepared from ../shared/data, SmolLM2, one torch thread."""
    import torch
    from conftest import SHARED_DATA

    from shala.data.prepare import prepare
    from shala.plan import load_config

    torch.set_num_threads(1)  # before any engine starts: vLLM's CPU worker keeps this count
    config = load_config([ROOT / "config.yaml", ROOT / "config" / "demo.yaml"])
    data = tmp_path_factory.mktemp("chaosnli")
    prepare("chaosnli", SHARED_DATA / "chaosnli", data, config=config)
    return config, data, str(smollm2_dir)


def _predict(config, data, model, out, engine, limit=N_ITEMS):
    from shala.evaluation.predict import run_predict

    rec = run_predict(config, "chaosnli", data, model, "test", out, limit=limit, engine=engine, progress=False)
    return rec, [json.loads(line) for line in Path(out).read_text().splitlines()]


def test_vllm_predictions_equal_generate_on_16_chaosnli_items(demo, tmp_path):
    config, data, model = demo
    config = copy.deepcopy(config)
    config["datasets"]["chaosnli"]["prompt"]["constrained"] = False
    rec_hf, rows_hf = _predict(config, data, model, tmp_path / "hf.jsonl", "generate")
    rec_v, rows_v = _predict(config, data, model, tmp_path / "vllm.jsonl", "vllm")
    assert len(rows_v) == N_ITEMS
    assert [r["completion"] for r in rows_v] == [r["completion"] for r in rows_hf]
    assert len({r["completion"] for r in rows_hf}) > 1  # a discriminating check: not one answer for all
    assert rec_v["engine"] == "vllm" and rec_hf["engine_settings"] is None
    settings = rec_v["engine_settings"]
    assert settings["dtype"] == "float32" and settings["enforce_eager"] is True
    assert settings["torch_threads"] == 1 and settings["structured_outputs_regex"] is None
    assert settings["max_num_seqs"] == config["evaluation"]["batch_size"]
    assert 0 < settings["kv_cache_memory_bytes"] < 2 ** 30  # sized from the workload, not a share of RAM
    assert json.loads((tmp_path / "vllm.run.json").read_text())["engine_settings"] == settings


def test_constrained_answers_through_the_regex_all_parse(demo, tmp_path):
    config, data, model = demo
    assert config["datasets"]["chaosnli"]["prompt"]["constrained"] is True  # the demo's setting
    rec, rows = _predict(config, data, model, tmp_path / "c.jsonl", "vllm", limit=8)
    regex = rec["engine_settings"]["structured_outputs_regex"]
    assert regex.startswith("(0|[1-9][0-9]{0,2}), \"neutral\": ")
    assert rec["parse_rate"] == 1.0 and all(r["pred_dist"] is not None for r in rows)
    for r in rows:
        assert re.fullmatch(regex, r["completion"][len(r["response_prefix"]):]), r["completion"]


def test_pushed_weights_reach_the_engine_and_the_tied_output_layer(demo):
    """vLLM's CPU backend repacks weights after loading: the push goes
    through reload_weights, and SmolLM2's LM head, tied to the embeddings,
    is re-tied and repacked; greedy tokens then equal transformers'."""
    import torch
    from vllm import SamplingParams

    from shala.model.loading import load_model_and_tokenizer
    from shala.model.vllm_engine import engine_settings, start_engine, stop_engine
    from shala.train.vllm_rollouts import push_weights

    _, _, model_dir = demo
    model, tok = load_model_and_tokenizer(model_dir)
    prompts = [tok.apply_chat_template([{"role": "user", "content": t}], tokenize=True, add_generation_prompt=True)
               ["input_ids"] for t in ("Name a colour.", "What is 2+2?", "Say hello in French.")]

    def greedy_hf():
        with torch.no_grad():
            return [model.generate(torch.tensor([p]), max_new_tokens=10, do_sample=False)[0, len(p):].tolist()
                    for p in prompts]

    llm = start_engine(engine_settings(model, max_model_len=128, max_num_seqs=4))
    try:
        def greedy_vllm():
            outs = llm.generate([{"prompt_token_ids": p} for p in prompts],
                                SamplingParams(temperature=0.0, max_tokens=10), use_tqdm=False)
            return [list(o.outputs[0].token_ids) for o in outs]

        before = greedy_hf()
        assert greedy_vllm() == before
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=gen) * 0.02)
        after = greedy_hf()
        assert after != before  # the push has something to show
        assert push_weights(llm, [(n, p.detach()) for n, p in model.named_parameters()]) == [
            {"lm_head": "model.embed_tokens"}]
        assert greedy_vllm() == after
    finally:
        stop_engine(llm)


@pytest.fixture(scope="module")
def omni_dir(tmp_path_factory):
    """The tiny Qwen2.5-Omni, full folder, shaped for vLLM's CPU build (head_dim 32)."""
    from shala.model.tiny_omni import build_tiny_omni

    return build_tiny_omni(tmp_path_factory.mktemp("omni") / "full", full=True, vllm=True)[0]


def test_a_saved_omni_thinker_is_served_from_the_full_layout_and_the_push(tmp_path):
    """vLLM builds no thinker from a thinker-only folder (a warm-up's output):
    the engine starts from the full layout's config with dummy weights, and
    the push (text weights only, names mapped) makes it the thinker."""
    import shutil

    import torch
    from vllm import SamplingParams

    from shala.model.loading import load_model_and_tokenizer
    from shala.model.tiny_omni import build_tiny_omni
    from shala.model.vllm_engine import engine_settings, start_engine, stop_engine
    from shala.train.vllm_rollouts import omni_engine_kwargs, push_weights, pushed, vllm_weight_name

    folder = build_tiny_omni(tmp_path / "thinker", full=False, vllm=True)[0]
    model, tok = load_model_and_tokenizer(str(folder))
    prompts = [tok(text=t)["input_ids"] for t in ("Premise: a dog runs", "neutral contradiction", "joy")]
    with torch.no_grad():
        hf = [model.generate(torch.tensor([p]), max_new_tokens=8, do_sample=False)[0, len(p):].tolist()
              for p in prompts]
    extra = omni_engine_kwargs(model)
    assert extra["language_model_only"] is True and extra["load_format"] == "dummy"
    assert json.loads((Path(extra["model"]) / "config.json").read_text())["model_type"] == "qwen2_5_omni"
    llm = start_engine({**engine_settings(model, max_model_len=128, max_num_seqs=4), **extra})
    try:
        def greedy():
            outs = llm.generate([{"prompt_token_ids": p} for p in prompts],
                                SamplingParams(temperature=0.0, max_tokens=8), use_tqdm=False)
            return [list(o.outputs[0].token_ids) for o in outs]

        assert greedy() != hf  # dummy weights
        weights = [(vllm_weight_name(n, True), p.detach()) for n, p in model.named_parameters() if pushed(n, True)]
        assert not any(".audio_tower." in n or ".visual." in n for n, _ in weights)
        assert push_weights(llm, weights) == [{}]  # untied: nothing to re-tie
        assert greedy() == hf
    finally:
        stop_engine(llm)
        shutil.rmtree(extra["model"])


def _grpo_following_vllm(config, data, model, out, monkeypatch, norms: tuple[str, str]):
    """``run_train`` of 2 steps with vLLM rollouts; after each step a forced
    weight sync, and per step: whether vLLM's greedy tokens on three training
    prompts equal the trained transformers model's, whether the final norm's
    weight (``norms``: its transformers and vLLM names) differed before the
    sync (the step moved it; the demo's warm-up gives step 1 a learning rate
    of 0) and whether it is equal after. Returns the run record, those
    checks and the engines' dtypes."""
    import torch
    from transformers import TrainerCallback

    from shala.train import vllm_rollouts
    from shala.train.grpo import run_train

    config = copy.deepcopy(config)
    config["training"]["grpo"]["use_vllm"] = True
    checks, engines = [], []
    install = vllm_rollouts.install_weight_sync

    def install_and_check(trainer, omni):
        from vllm import SamplingParams

        stats = install(trainer, omni)
        gen, tok = trainer.vllm_generation, trainer.processing_class
        engines.append(gen.llm.llm_engine.model_config.dtype)
        prompts = [tok(text=p)["input_ids"] for p in trainer.train_dataset["prompt"][:3]]
        hf_norm, vllm_norm = norms

        def same_norm():
            theirs = gen.llm.collective_rpc(lambda w: dict(w.model_runner.get_model().named_parameters())
                                            [vllm_norm].detach().clone())[0]
            return torch.equal(theirs, trainer.model.get_parameter(hf_norm).detach())

        class Check(TrainerCallback):
            def on_step_end(self, args, state, control, **kw):
                stale = same_norm()
                gen.sync_weights()
                outs = gen.llm.generate([{"prompt_token_ids": p} for p in prompts],
                                        SamplingParams(temperature=0.0, max_tokens=12), use_tqdm=False)
                m = trainer.model  # its own generate: constrain_generate wraps the instance's
                with torch.no_grad():
                    hf = [type(m).generate(m, torch.tensor([p]), max_new_tokens=12, do_sample=False)[0, len(p):]
                          .tolist() for p in prompts]
                checks.append((state.global_step, [list(o.outputs[0].token_ids) for o in outs] == hf,
                               not stale, same_norm()))

        trainer.add_callback(Check())
        return stats

    monkeypatch.setattr(vllm_rollouts, "install_weight_sync", install_and_check)
    rec = run_train(config, "chaosnli", "shala", 0, data, model, out, max_steps=2)
    return rec, checks, engines


def test_two_grpo_steps_with_vllm_rollouts_follow_the_trained_weights(demo, tmp_path, monkeypatch):
    """After each weight sync (forced after each step), vLLM's greedy tokens
    equal the trained transformers model's on three training prompts."""
    import torch

    config, data, model = demo
    rec, checks, engines = _grpo_following_vllm(config, data, model, tmp_path / "run", monkeypatch,
                                                ("model.norm.weight", "model.norm.weight"))
    assert checks == [(1, True, False, True), (2, True, True, True)]
    assert engines == [torch.float32]  # the policy's dtype, not the folder's
    sync = rec["vllm_weight_sync"]
    assert sync["syncs"] == 4 and sync["seconds"] > 0  # TRL's two (steps 0 and 1) and the two forced here
    assert sync["skipped"] == 0 and sync["tensors"] == 272  # every parameter: 30 layers of 9, embeddings (tied to the LM head), norm
    full = rec["grpo_config"]["full"]
    assert full["use_vllm"] is True and full["vllm_mode"] == "colocate"
    assert full["vllm_structured_outputs_regex"].endswith("(0|[1-9][0-9]{0,2})\\}")
    assert full["vllm_importance_sampling_correction"] is False
    assert rec["forced_tokens"]["masked"] is True
    assert rec["forced_tokens"]["forced_tokens"] > rec["forced_tokens"]["free_tokens"] > 0
    assert rec["final_metrics"] and rec["global_step"] == 2


def test_two_grpo_steps_on_the_omni_thinker_with_vllm_rollouts_follow_the_trained_weights(demo, omni_dir,
                                                                                         tmp_path, monkeypatch):
    """Issue 28: the tiny Qwen2.5-Omni thinker on ChaosNLI's text items, as
    the SmolLM2 test above: after each sync vLLM's greedy tokens equal the
    trained thinker's; only the text weights are pushed (the engine holds no
    audio or vision tower)."""
    import torch

    from shala.model.loading import OMNI_TOWER_PREFIXES, load_model_and_tokenizer

    config, data, _ = demo
    rec, checks, engines = _grpo_following_vllm(config, data, str(omni_dir), tmp_path / "run", monkeypatch,
                                                ("model.language_model.norm.weight", "language_model.model.norm.weight"))
    assert checks == [(1, True, False, True), (2, True, True, True)]
    assert engines == [torch.float32]
    names = [n for n, _ in load_model_and_tokenizer(str(omni_dir))[0].named_parameters()]
    towers = [n for n in names if n.startswith(tuple(OMNI_TOWER_PREFIXES.values()))]
    sync = rec["vllm_weight_sync"]
    assert sync["syncs"] == 4 and (sync["tensors"], sync["skipped"]) == (len(names) - len(towers), len(towers))
    assert towers and sync["tensors"] == 27  # embeddings, 2 layers of 12, final norm, LM head
    assert rec["grpo_config"]["full"]["use_vllm"] is True and rec["audio"] is False
    assert rec["final_metrics"] and rec["global_step"] == 2
    print(f"\nOmni thinker, 2 GRPO steps with vLLM rollouts: {sync['syncs']} syncs in {sync['seconds']:.2f} s; "
          f"steps {[round(s, 2) for s in rec['timing']['step_seconds']]} s")
