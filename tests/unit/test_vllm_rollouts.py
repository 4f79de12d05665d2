"""The parts of the vLLM engine that need no engine (shala.model.vllm_engine,
shala.train.vllm_rollouts, the refusals in shala.model.engines): the
constrained answer's regex, the forced tokens on vLLM's own spelling, the
Omni thinker's weight names, and what is refused before a model loads."""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import json
import re
from pathlib import Path

import pytest

from shala.config import fill_defaults
from shala.errors import ConfigError
from shala.jsonio import write_jsonl
from shala.model import engines
from shala.model.constrained import JSONSkeleton, forced_positions
from shala.model.engines import check_rollout_engine, vllm_model_problems
from shala.model.loading import load_model_and_tokenizer
from shala.plan import path

LABELS = ["entailment", "neutral", "contradiction"]
PROMPT = fill_defaults({"target": "Premise: {premise}\nHypothesis: {hypothesis}"}, at="datasets.toy.prompt")
HAS_VLLM = importlib.util.find_spec("vllm") is not None


@pytest.fixture(scope="module")
def skeleton(tiny_model_dir):
    _, tok = load_model_and_tokenizer(tiny_model_dir)
    return tok, JSONSkeleton(tok, LABELS, max_digits=3)


def test_the_regex_admits_exactly_the_skeletons_answers(skeleton):
    from shala.model.vllm_engine import skeleton_regex

    tok, sk = skeleton
    regex = skeleton_regex(sk, tok)
    assert regex == ('(0|[1-9][0-9]{0,2}), "neutral": (0|[1-9][0-9]{0,2}), "contradiction": '
                     '(0|[1-9][0-9]{0,2})\\}')
    for ok in ('50, "neutral": 30, "contradiction": 20}', '0, "neutral": 100, "contradiction": 0}'):
        assert re.fullmatch(regex, ok)
    for bad in ('05, "neutral": 3, "contradiction": 2}', '1000, "neutral": 3, "contradiction": 2}',
                '5, "neutral": 3}', '5, "neutral": 3, "contradiction": 2'):
        assert not re.fullmatch(regex, bad)


def test_forced_tokens_on_text_agree_with_the_token_walk_and_survive_another_spelling(skeleton):
    from shala.train.vllm_rollouts import forced_positions_text

    tok, sk = skeleton
    enc = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    # the skeleton's own tokens: digits one by one, each literal as the skeleton tokenises it
    canonical = []
    for number, piece in zip(["5", "100", "0"], [p for p in sk.pieces if p is not None]):
        canonical += [enc(d)[0] for d in number] + list(piece)
    canonical.append(tok.eos_token_id)
    assert [tok.decode([t]) for t in canonical] == ["5", ",", ' "', "neutral", '":', " ", "1", "0", "0", ",", ' "',
                                                    "contradiction", '":', " ", "0", "}", "<|im_end|>"]
    expected = [False, False, True, True, True, True, False, False, False, True, True, True, True, True,
                False, True, True]  # free: the digits and a separator the model chose to start
    assert forced_positions_text(tok, sk, [canonical]) == forced_positions(sk, [canonical]) == [expected]
    # the same answer spelt in other tokens (", " then '"'), as vLLM's regex allows: the text walk
    # still frees the digits of "100", where the token walk, off its skeleton, forces every token
    other = enc("5") + enc(", ") + enc('"neutral": ') + enc("100") + enc(', "contradiction": 0}') + [tok.eos_token_id]
    assert [tok.decode([t]) for t in other][:8] == ["5", ",", " ", '"', "neutral", '":', " ", "1"]
    assert forced_positions_text(tok, sk, [other]) == [[False, False, True, True, True, True, True, False, False,
                                                        False, True, True, True, True, True, False, True, True]]
    assert forced_positions(sk, [other]) == [[False, False] + [True] * 16]


@pytest.mark.vllm
@pytest.mark.skipif(not HAS_VLLM, reason="the vllm package is not importable here (bash scripts/setup_venv.sh --vllm)")
def test_omni_thinker_names_map_to_vllms():
    from shala.train.vllm_rollouts import vllm_weight_name

    names = {"model.language_model.layers.0.self_attn.q_proj.weight": "thinker.model.layers.0.self_attn.q_proj.weight",
             "model.language_model.embed_tokens.weight": "thinker.model.embed_tokens.weight",
             "model.audio_tower.conv1.weight": "thinker.audio_tower.conv1.weight",
             "model.visual.blocks.0.attn.qkv.weight": "thinker.visual.blocks.0.attn.qkv.weight",
             "lm_head.weight": "thinker.lm_head.weight"}
    assert {n: vllm_weight_name(n, omni=True) for n in names} == names
    assert all(vllm_weight_name(n, omni=False) == n for n in names)  # a text model: unchanged
    assert vllm_weight_name("model.layers.0.mlp.up_proj.weight", omni=True) == "model.layers.0.mlp.up_proj.weight"


def test_the_tiny_omni_for_vllm_has_head_dim_32_and_the_hub_processor_files(tmp_path):
    """vLLM's CPU attention takes head_dim >= 32; the processor files are
    the hub repo's, and shala's own audio path still reads them."""
    from transformers import AutoImageProcessor

    from shala.model.audio import AudioFeatures
    from shala.model.tiny_omni import MEL_BINS, build_tiny_omni

    folder, _ = build_tiny_omni(tmp_path / "omni", full=True, vllm=True)
    cfg = json.loads((folder / "config.json").read_text())["thinker_config"]
    text, audio, vision = cfg["text_config"], cfg["audio_config"], cfg["vision_config"]
    assert text["hidden_size"] // text["num_attention_heads"] == 32 == sum(text["rope_parameters"]["mrope_section"]) * 2
    assert audio["d_model"] // audio["encoder_attention_heads"] == 32 == vision["hidden_size"] // vision["num_heads"]
    model, tok = load_model_and_tokenizer(str(folder))
    assert (tok.audio_token, tok.audio_token_id) == ("<|AUDIO|>", cfg["audio_token_index"])
    assert tok.vision_bos_token_id == cfg["vision_start_token_id"]
    assert AutoImageProcessor.from_pretrained(folder).merge_size == 2
    assert AudioFeatures.for_model(folder, model).fe.feature_size == MEL_BINS


def _omni(tmp_path, model_type):
    folder = tmp_path / model_type
    folder.mkdir()
    (folder / "config.json").write_text(f'{{"model_type": "{model_type}"}}')
    return folder


def test_vllm_rollouts_take_the_omni_thinker_on_text_and_refuse_audio_before_loading(paper_config, tmp_path):
    """A Qwen2.5-Omni thinker (full folder or saved thinker) on text items
    passes the checks; audio items are refused before any model loads, by
    training and by the config scan preflight uses, naming the field."""
    from shala.train.grpo import run_train

    config = copy.deepcopy(paper_config)
    dataset = next(iter(config["datasets"]))
    config["training"]["grpo"]["use_vllm"] = True
    config["results"] = str(tmp_path / "results")
    data = tmp_path / "results" / "data" / dataset
    assert engines.prepared_train_items(config, dataset) == data / "train.jsonl" == Path(
        path("split", results=config["results"], dataset=dataset, split="train"))  # where the workflow prepares it
    write_jsonl(data / "train.jsonl", [{"id": "a", "inputs": {"premise": "p", "hypothesis": "h"}}])
    ds = config["datasets"][dataset]
    for model_type in ("qwen2_5_omni_thinker", "qwen2_5_omni"):  # a saved thinker, the full Omni folder
        assert vllm_model_problems(config, model_type) == []
        # passes the Omni checks: without vllm installed, only the package is missing
        with contextlib.nullcontext() if HAS_VLLM else pytest.raises(ConfigError, match="vllm package is not"):
            check_rollout_engine({"use_vllm": True}, dataset, PROMPT, model_type, ds, data / "train.jsonl")
    with pytest.raises(ConfigError, match=r"^training\.grpo\.vllm_mode: server cannot train the Omni thinker"):
        check_rollout_engine({"use_vllm": True, "vllm_mode": "server"}, dataset, PROMPT, "qwen2_5_omni", ds,
                             data / "train.jsonl")
    write_jsonl(data / "train.jsonl", [{"id": "a", "inputs": {"premise": "p", "hypothesis": "h", "audio": "a.wav"}}])
    audio = r"^training\.grpo\.use_vllm: true cannot feed the items' audio to vLLM \(TRL 1\.16's colocate rollouts"
    with pytest.raises(ConfigError, match=audio):
        check_rollout_engine({"use_vllm": True}, dataset, PROMPT, "qwen2_5_omni", ds, data / "train.jsonl")
    with pytest.raises(ConfigError, match=audio):
        run_train(config, dataset, "shala", 0, data, str(_omni(tmp_path, "qwen2_5_omni")), tmp_path / "out")
    assert vllm_model_problems(config, "qwen2_5_omni") == [
        f"training.grpo.use_vllm: true (datasets.{dataset}) " + engines.AUDIO_VLLM]
    config["datasets"][dataset]["grpo"] = {"use_vllm": True}
    config["training"]["grpo"]["use_vllm"] = False  # the dataset's own field is the one named
    assert [p.split(" (")[0] for p in vllm_model_problems(config, "qwen2_5_omni")] == [
        f"datasets.{dataset}.grpo.use_vllm: true"]
    assert vllm_model_problems(config, "qwen2") == []  # a text model never hears the audio
    check_rollout_engine({"use_vllm": False}, dataset, PROMPT, "qwen2_5_omni", ds, data / "train.jsonl")


def test_the_audio_trainer_refuses_vllm_before_the_engine_starts(tiny_model_dir, tmp_path):
    """AudioGRPOTrainer, the backstop behind the checks above, names the
    field before TRL would build the engine (so no vllm is needed here)."""
    from trl import GRPOConfig

    from shala.train.audio_grpo import AudioGRPOTrainer

    model, tok = load_model_and_tokenizer(tiny_model_dir)
    args = GRPOConfig(output_dir=str(tmp_path), use_vllm=True, bf16=False, report_to=[])
    with pytest.raises(ConfigError, match=r"^training\.grpo\.use_vllm: true cannot feed the items' audio to vLLM"):
        AudioGRPOTrainer(model=model, reward_funcs=[lambda completions, **kw: [0.0] * len(completions)],
                         args=args, processing_class=tok, audio=None)
