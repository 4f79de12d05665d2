"""Speech + text for MSP-Podcast on a tiny random Qwen2.5-Omni thinker
(seconds each): the 16 kHz WAV loader, the audio features and placeholder
expansion, GRPO with and without audio through ``run_train``, prediction,
and an SFT warm-up from an Omni checkpoint then trained on.

Audio is real speech from ``espeak-ng`` where it is installed (22050 Hz
mono WAV), else a synthesized tone at the same rate.
"""

from __future__ import annotations

import copy
import math
import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest
import torch

from shala.config import fill_defaults
from shala.data.items import make_item
from shala.errors import ConfigError, InputError
from shala.jsonio import read_json, read_jsonl, write_jsonl
from shala.model.audio import AudioFeatures, audio_in_play, audio_seconds, load_audio
from shala.model.tiny_omni import MEL_BINS, build_tiny_omni
from shala.plan import load_config
from shala.prompts import render_prompt_string

ROOT = Path(__file__).resolve().parents[2]
LABELS = ["angry", "contempt", "disgust", "fear", "happy", "neutral", "sad", "surprise"]
SHORT_PROMPT = fill_defaults({"background": "Two speakers are talking.", "target": "{text}", "task": "Classes:",
                              "output": "Answer in JSON: {label_list}"}, at="datasets.x.prompt")
UTTERANCES = ["I am so happy today", "no", "why would you do that to me"]


def _write_wav(path: Path, samples: np.ndarray, rate: int, width: int = 2) -> Path:
    """``samples`` (frames, or frames x channels) in [-1, 1] as integer PCM."""
    frames = samples if samples.ndim == 2 else samples[:, None]
    scale = float(1 << (8 * width - 1)) - 1
    ints = np.round(np.clip(frames, -1, 1) * scale).astype(np.int64)
    if width == 2:
        raw = ints.astype("<i2").tobytes()
    elif width == 3:
        raw = b"".join(int(v).to_bytes(3, "little", signed=True) for v in ints.reshape(-1))
    else:
        raise ValueError(width)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(frames.shape[1])
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(raw)
    return path


def _tone(seconds: float, rate: int, freq: float = 440.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    return amp * np.sin(2 * np.pi * freq * t)


def speech_wav(path: Path, text: str) -> Path:
    """``text`` spoken by espeak-ng (22050 Hz mono), or a tone whose length
    follows the text, where espeak-ng is absent."""
    if shutil.which("espeak-ng"):
        subprocess.run(["espeak-ng", "-w", str(path), text], check=True, capture_output=True)
        return path
    return _write_wav(path, _tone(0.3 + 0.05 * len(text), 22050, freq=200 + 10 * len(text)), 22050)


def _frames(path: Path) -> int:
    with wave.open(str(path)) as w:
        return w.getnframes()


# ------------------------------------------------------------------ fixtures

@pytest.fixture(scope="module")
def omni_dir(tmp_path_factory):
    return build_tiny_omni(tmp_path_factory.mktemp("omni") / "thinker", full=False)[0]


@pytest.fixture(scope="module")
def wavs(tmp_path_factory):
    d = tmp_path_factory.mktemp("wav")
    return [speech_wav(d / f"u{k}.wav", text) for k, text in enumerate(UTTERANCES)]


@pytest.fixture(scope="module")
def msp_dir(tmp_path_factory, wavs):
    """Six MSP-Podcast-like items (transcript + audio path), train and test."""
    d = tmp_path_factory.mktemp("msp")
    items = []
    for k in range(6):
        it = make_item(id=f"MSP_{k}", dataset="msp_podcast", subset=None,
                       inputs={"text": UTTERANCES[k % 3], "audio": str(wavs[k % 3])},
                       labels=LABELS, counts=[k % 2, 0, 0, 0, 2, 1, 0, 0], ambiguity="active")
        items.append(it)
    write_jsonl(d / "train.jsonl", [{**it, "split": "train"} for it in items])
    write_jsonl(d / "test.jsonl", [{**it, "split": "test"} for it in items[:3]])
    return d


@pytest.fixture(scope="module")
def cfg():
    config = load_config([ROOT / "config.yaml"])
    assert config["datasets"]["msp_podcast"]["text_only"] is False  # the paper: Speech + Text
    config["datasets"]["msp_podcast"]["prompt"] = copy.deepcopy(SHORT_PROMPT)
    config["model"].update(source="local", dtype="float32")
    config["training"]["threads"] = 1
    config["training"]["grpo"].update(per_device_train_batch_size=2, num_generations=2,
                                      gradient_accumulation_steps=1, max_completion_length=8,
                                      learning_rate=1e-2, save_steps=1, logging_steps=1,
                                      activation_checkpointing=False)
    config["training"]["warmup_sft"].update(per_device_train_batch_size=2, learning_rate=1e-3,
                                            activation_checkpointing=False, logging_steps=1)
    config["evaluation"].update(batch_size=3, max_new_tokens=6)
    return config


def _text_only(cfg):
    out = copy.deepcopy(cfg)
    out["datasets"]["msp_podcast"]["text_only"] = True
    return out


@pytest.fixture
def spread_reward(monkeypatch):
    """A reward that varies with the completion text, so groups have spread
    and the GRPO loss has a gradient (the random model never parses)."""
    import shala.train.rewards

    def reward(prompts=None, completions=(), **kw):
        return [float(sum(map(ord, c)) % 7) for c in completions]

    monkeypatch.setattr(shala.train.rewards, "get_reward", lambda name: reward)


@pytest.fixture
def tower_calls(monkeypatch):
    """(grad enabled, mel lengths) of every audio-tower forward."""
    from transformers.models.qwen2_5_omni.modeling_qwen2_5_omni import Qwen2_5OmniAudioEncoder

    calls = []
    original = Qwen2_5OmniAudioEncoder.forward

    def counting(self, input_features=None, feature_lens=None, **kw):
        calls.append((torch.is_grad_enabled(), feature_lens.tolist()))
        return original(self, input_features, feature_lens, **kw)

    monkeypatch.setattr(Qwen2_5OmniAudioEncoder, "forward", counting)
    return calls


def _weights(d: Path):
    from safetensors.torch import load_file

    return load_file(str(next(d.glob("*.safetensors"))))


def _moved(before_dir: Path, after_dir: Path) -> set[str]:
    """Which parts of the thinker changed: text, audio (tower), vision."""
    before, after = _weights(before_dir), _weights(after_dir)
    assert before.keys() == after.keys()
    part = lambda k: "audio" if "audio_tower" in k else "vision" if "visual" in k else "text"  # noqa: E731
    return {part(k) for k in before if not torch.equal(before[k], after[k])}


def _mel_frames(path: Path) -> int:
    """Mel frames the feature extractor keeps for a clip: one per 160
    samples at 16 kHz, a partial last one included."""
    return math.ceil(len(load_audio(path)) / 160)


# ------------------------------------------------------------- 16 kHz loader

def test_omni_audio_loader_resamples_to_16k(tmp_path, wavs):
    n = _frames(wavs[0])
    speech = load_audio(wavs[0])
    assert speech.dtype == np.float32 and speech.ndim == 1
    assert len(speech) == math.ceil(n * 16000 / 22050)  # 22050 -> 16000 = 160/441
    assert 0.01 < np.abs(speech).max() <= 1.0
    # 8 kHz stereo: channels averaged, twice the samples, the tone's frequency kept
    left, right = _tone(0.5, 8000, amp=0.8), _tone(0.5, 8000, amp=0.2)
    stereo = load_audio(_write_wav(tmp_path / "st.wav", np.stack([left, right], 1), 8000))
    assert len(stereo) == 8000
    assert abs(np.abs(stereo[200:-200]).max() - 0.5) < 0.02
    crossings = np.count_nonzero(np.diff(np.signbit(stereo[200:-200])))
    assert abs(crossings - 2 * 440 * (7600 / 16000)) <= 3
    # 24-bit PCM reads as the same signal
    tone = _tone(0.25, 16000)
    a24 = load_audio(_write_wav(tmp_path / "t24.wav", tone, 16000, width=3))
    np.testing.assert_allclose(a24, tone, atol=1e-5)
    assert audio_seconds(tmp_path / "t24.wav") == pytest.approx(0.25)


def test_omni_audio_bad_file_names_its_path(tmp_path):
    bad = tmp_path / "clip_17.wav"
    bad.write_bytes(b"RIFF\x00\x00not a wav at all")
    for fn in (load_audio, audio_seconds):
        with pytest.raises(InputError, match="clip_17.wav"):
            fn(bad)
        with pytest.raises(InputError, match=r"missing_3\.wav.*not found"):
            fn(tmp_path / "missing_3.wav")


# ------------------------------------------------- features and prompt tokens

def test_omni_audio_prompt_and_features_match_the_tower(omni_dir, wavs):
    from shala.model.loading import load_model_and_tokenizer

    model, tok = load_model_and_tokenizer(omni_dir)
    item = {"id": "a", "labels": LABELS, "inputs": {"text": "hello there", "audio": str(wavs[0])}}
    text = render_prompt_string(tok, item, SHORT_PROMPT, audio=True)
    assert "Two speakers are talking.\n\n<|audio_bos|><|AUDIO|><|audio_eos|>\nhello there\n\nClasses:" in text
    assert "<|AUDIO|>" not in render_prompt_string(tok, item, SHORT_PROMPT)  # text-only unchanged

    audio = AudioFeatures.for_model(omni_dir, model)
    assert audio.fe.feature_size == MEL_BINS
    paths = [str(wavs[0]), str(wavs[1]), str(wavs[0])]
    ids = [tok(text, add_special_tokens=False)["input_ids"]] * 3
    expanded, feats = audio.prepare(ids, paths)
    assert feats["input_features"].shape[:2] == (3, MEL_BINS)
    lens = feats["feature_attention_mask"].sum(-1).tolist()
    assert lens == [_mel_frames(wavs[0]), _mel_frames(wavs[1]), _mel_frames(wavs[0])]
    # as many placeholders as the tower outputs vectors, clip by clip
    with torch.no_grad():
        out = model.model.get_audio_features(feats["input_features"], feats["feature_attention_mask"])
    per_clip = [e.count(audio.audio_token_id) for e in expanded]
    assert sum(per_clip) == out.last_hidden_state.shape[0] and per_clip[0] == per_clip[2] != per_clip[1]
    assert all(len(e) - p == len(ids[0]) - 1 for e, p in zip(expanded, per_clip))
    # the short clip's features do not depend on the batch (the processor's fixed padding gives the same)
    alone = audio([str(wavs[1])])
    n = lens[1]
    assert alone["feature_attention_mask"].sum().item() == n
    torch.testing.assert_close(alone["input_features"][0, :, :n], feats["input_features"][1, :, :n])
    ref = audio.fe([load_audio(wavs[1])], sampling_rate=16000, padding="max_length", return_attention_mask=True,
                   return_tensors="pt")
    assert ref["attention_mask"].sum().item() == n
    torch.testing.assert_close(ref["input_features"][0, :, :n].float(), feats["input_features"][1, :, :n])
    with pytest.raises(ConfigError, match="audio placeholder"):
        audio.expand([1, 2, 3], 4)


def test_omni_audio_in_play_rules(omni_dir, tiny_model_dir, msp_dir):
    from shala.model.loading import load_model_and_tokenizer

    items = read_jsonl(msp_dir / "train.jsonl")
    omni, _ = load_model_and_tokenizer(omni_dir)
    text_model, _ = load_model_and_tokenizer(tiny_model_dir)
    speech = {"text_only": False}
    assert audio_in_play(speech, omni, items) is True
    assert audio_in_play({"text_only": True}, omni, items) is False
    assert audio_in_play(speech, text_model, items) is False  # a text model reads text only
    no_audio = [{**it, "inputs": {"text": it["inputs"]["text"]}} for it in items]
    assert audio_in_play(speech, omni, no_audio) is False
    with pytest.raises(InputError, match="MSP_1"):
        audio_in_play(speech, omni, [items[0], no_audio[1]])


# ------------------------------------------------------------------- GRPO

def test_omni_text_only_grpo_step(cfg, msp_dir, omni_dir, tmp_path, tower_calls, spread_reward):
    from shala.train.grpo import run_train

    out = tmp_path / "text"
    rec = run_train(_text_only(cfg), "msp_podcast", "shala", 0, msp_dir, str(omni_dir), out, max_steps=1)
    assert rec["audio"] is False and rec["global_step"] == 1
    assert read_json(out / "run.json")["audio"] is False
    assert tower_calls == []  # the audio tower never ran
    steps = [r for r in read_jsonl(out / "train_log.jsonl") if r["event"] == "step"]
    assert [r["n_completions"] for r in steps] == [2]
    assert _moved(omni_dir, out) == {"text"}  # towers frozen, the LLM trained


def test_omni_audio_grpo_step_feeds_features(cfg, msp_dir, omni_dir, wavs, tmp_path, tower_calls,
                                             spread_reward):
    from shala.train.grpo import run_train

    out = tmp_path / "audio"
    rec = run_train(cfg, "msp_podcast", "shala", 0, msp_dir, str(omni_dir), out, max_steps=1)
    assert rec["audio"] is True and rec["global_step"] == 1
    # generation (no grad) and the loss forward (grad) each encoded the
    # prompt's clip once per completion (2 rollouts of 1 prompt)
    assert [grad for grad, _ in tower_calls] == [False, True]
    clip = {_mel_frames(w) for w in wavs}
    for _, lens in tower_calls:
        assert len(lens) == 2 and lens[0] == lens[1] and lens[0] in clip
    assert tower_calls[0][1] == tower_calls[1][1]  # the same clip in both
    assert _moved(omni_dir, out) == {"text"}  # the audio tower is frozen (training.freeze_unused_towers)
    assert (out / "preprocessor_config.json").is_file()  # the trained model can hear too


def test_omni_audio_grpo_with_lora(cfg, msp_dir, omni_dir, tmp_path, tower_calls, spread_reward):
    """LoRA (training.peft) on speech + text, one process: the clip reaches
    generation and the loss as without LoRA, only the language model's
    adapters train (none on the towers), and the thinker with its adapters
    applied unmerged predicts with audio."""
    from safetensors.torch import load_file

    from shala.evaluation.predict import run_predict
    from shala.train.grpo import run_train

    lora = copy.deepcopy(cfg)
    lora["training"]["peft"] = {**lora["training"]["peft"], "enabled": True, "r": 4, "lora_alpha": 8}
    out = tmp_path / "lora"
    rec = run_train(lora, "msp_podcast", "shala", 0, msp_dir, str(omni_dir), out, max_steps=1)
    assert rec["audio"] is True and rec["global_step"] == 1 and rec["peft"]["r"] == 4
    assert [grad for grad, _ in tower_calls] == [False, True]  # generation, then the loss forward
    adapter = load_file(str(out / "adapter" / "adapter_model.safetensors"))
    assert adapter and not any("audio_tower" in k or "visual" in k for k in adapter)
    assert sum(t.numel() for t in adapter.values()) == rec["peft"]["trainable_params"]
    assert not list(out.glob("*.safetensors"))  # no merged copy: shala.model.adapters
    pred = tmp_path / "pred.jsonl"
    assert run_predict(cfg, "msp_podcast", msp_dir, str(out), "test", pred, progress=False)["audio"] is True
    assert [r["id"] for r in read_jsonl(pred)] == ["MSP_0", "MSP_1", "MSP_2"]
    assert len(tower_calls) == 3  # the adapted thinker heard the test clips in one batch


def test_omni_audio_trainer_uses_audio_in_the_loss(cfg, msp_dir, omni_dir, tmp_path):
    """The policy log-probs of the same completions change when the audio
    features are swapped for another clip's: audio reaches the loss."""
    from shala.train.audio_grpo import AudioGRPOTrainer
    from shala.train.grpo import grpo_settings, load_train_dataset, make_grpo_config
    from shala.train.model_setup import load_for_training

    settings = {**grpo_settings(cfg, "shala", 1), "bf16": False}
    args = make_grpo_config(settings, tmp_path, 0)
    model, tok = load_for_training(str(omni_dir))
    items = read_jsonl(msp_dir / "train.jsonl")
    ds = load_train_dataset(cfg, "msp_podcast", msp_dir, tok, items=items, audio=True)
    trainer = AudioGRPOTrainer(model=model, reward_funcs=[lambda completions, **kw: [0.0] * len(completions)],
                               args=args, train_dataset=ds, processing_class=tok,
                               audio=AudioFeatures.for_model(omni_dir, model))
    batch = trainer._generate_and_score_completions([ds[0], ds[0]])
    assert batch["input_features"].shape[0] == 2 == batch["completion_ids"].shape[0]
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], 1)
    mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], 1)
    k = batch["completion_ids"].shape[1]

    def logps(features):
        trainer._audio_inputs = features
        try:
            with torch.no_grad():
                return trainer._get_per_token_logps_and_entropies(trainer.model, ids, mask, k)[0]
        finally:
            trainer._audio_inputs = None

    own = {key: batch[key] for key in ("input_features", "feature_attention_mask")}
    noise = {**own, "input_features": torch.randn_like(own["input_features"])}
    assert not torch.allclose(logps(own), logps(noise))
    torch.testing.assert_close(logps(own), logps(own))
    assert trainer.audio_forwards == 4  # each scoring above carried the audio


# --------------------------------------------------------------- prediction

def test_omni_audio_predict_writes_predictions(cfg, msp_dir, omni_dir, tmp_path, tower_calls):
    from shala.evaluation.predict import run_predict

    out = tmp_path / "pred.jsonl"
    rec = run_predict(cfg, "msp_podcast", msp_dir, str(omni_dir), "test", out, progress=False)
    assert rec["audio"] is True and rec["n_items"] == 3
    rows = read_jsonl(out)
    assert [r["id"] for r in rows] == ["MSP_0", "MSP_1", "MSP_2"]
    assert all(isinstance(r["completion"], str) and r["completion"] for r in rows)
    assert all((r["pred_dist"] is None) != (r["parse_error"] is None) for r in rows)
    assert [grad for grad, _ in tower_calls] == [False]  # one batch of three clips, encoded once
    assert sorted(tower_calls[0][1]) == sorted(_mel_frames(Path(r["inputs"]["audio"])) for r in rows)
    # batching with audio changes nothing: one item per batch gives the same completions
    single = tmp_path / "single.jsonl"
    run_predict(cfg, "msp_podcast", msp_dir, str(omni_dir), "test", single, batch_size=1, progress=False)
    assert [r["completion"] for r in read_jsonl(single)] == [r["completion"] for r in rows]
    assert len(tower_calls) == 4
    # text-only: no audio reaches the model, and the answers differ
    text = tmp_path / "text.jsonl"
    assert run_predict(_text_only(cfg), "msp_podcast", msp_dir, str(omni_dir), "test", text,
                       progress=False)["audio"] is False
    assert len(tower_calls) == 4
    assert [r["completion"] for r in read_jsonl(text)] != [r["completion"] for r in rows]


# ------------------------------------------------------------ SFT warm-up

def test_omni_sft_warmup_then_audio_grpo(cfg, msp_dir, tmp_path, tower_calls, spread_reward):
    """Warm-up from the hub layout (full Omni checkpoint): the output is a
    thinker with the feature extractor kept, and GRPO with audio runs from it."""
    from shala.train.grpo import run_train
    from shala.train.sft import run_sft

    full, _ = build_tiny_omni(tmp_path / "full", full=True)
    warm = tmp_path / "warm"
    sft = run_sft(cfg, "msp_podcast", 0, msp_dir, str(full), warm, max_steps=2)
    assert sft["global_step"] == 2 and any("transcripts only" in n for n in sft["notes"])
    assert tower_calls == []  # SFT is text-only
    assert read_json(warm / "config.json")["model_type"] == "qwen2_5_omni_thinker"
    assert read_json(warm / "preprocessor_config.json")["feature_size"] == MEL_BINS
    rec = run_train(cfg, "msp_podcast", "shala", 0, msp_dir, str(full), tmp_path / "grpo",
                    max_steps=1, init_from=warm)
    assert rec["audio"] is True and rec["init_from"] == str(warm) and rec["global_step"] == 1
    assert [grad for grad, _ in tower_calls] == [False, True]
