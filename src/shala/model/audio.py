"""Speech input for Omni models: MSP-Podcast is "Speech + Text" in the paper
(the model hears the audio and reads the transcript).

An item's ``inputs.audio`` (a WAV path) is loaded at 16 kHz, turned into
log-mel features by the model's own ``WhisperFeatureExtractor`` (its
``preprocessor_config.json``, as the Omni processor does), and the one
``<|AUDIO|>`` token the chat template writes for the audio part of the user
message (:func:`shala.prompts.render_messages`) is expanded to as many
tokens as the audio tower outputs, as ``Qwen2_5OmniProcessor`` does.

Why not the processor itself: prompts here are strings (template applied,
response prefix written) tokenised like any text model's, and the processor
would also need the image and video processors. Why pad to the longest
audio of a batch, not to the processor's 30 s / 300 s: the thinker encodes
only the frames ``feature_attention_mask`` keeps, and those frames (and
their count) are the same either way, at a fraction of the memory.

WAV only, read with the stdlib ``wave`` (integer PCM), mixed down to mono,
resampled with ``scipy.signal.resample_poly``: no new dependency.
"""

from __future__ import annotations

import logging
import math
import wave
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, InputError, ShalaError

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
PREPROCESSOR_CONFIG = "preprocessor_config.json"


def _read_wav(path: Path) -> tuple[np.ndarray, int]:
    """(frames x channels float32 in [-1, 1], sample rate)."""
    try:
        with wave.open(str(path), "rb") as w:
            rate, width, channels = w.getframerate(), w.getsampwidth(), w.getnchannels()
            raw = w.readframes(w.getnframes())
    except FileNotFoundError:
        raise InputError("audio file not found", path=path) from None
    except (wave.Error, EOFError, OSError) as exc:
        raise InputError(f"cannot read audio as an integer-PCM WAV file ({exc})", path=path) from None
    if rate <= 0 or channels <= 0:
        raise InputError(f"bad WAV header (rate {rate}, {channels} channels)", path=path)
    if width == 1:  # 8-bit WAV is unsigned
        data = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 3:  # 24-bit little-endian: widen to int32
        b = np.frombuffer(raw[:len(raw) // 3 * 3], np.uint8).reshape(-1, 3)
        ints = (b[:, 0].astype(np.int32) | (b[:, 1].astype(np.int32) << 8) | (b[:, 2].astype(np.int32) << 16))
        data = (np.where(ints >= 1 << 23, ints - (1 << 24), ints) / float(1 << 23)).astype(np.float32)
    elif width in (2, 4):
        dtype = np.int16 if width == 2 else np.int32
        data = np.frombuffer(raw[:len(raw) // width * width], dtype).astype(np.float32) / float(1 << (8 * width - 1))
    else:
        raise InputError(f"unsupported WAV sample width {width} bytes", path=path)
    return data[:len(data) // channels * channels].reshape(-1, channels), rate


def load_audio(path: str | Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """A WAV file as mono float32 at ``sample_rate`` (channels averaged;
    polyphase resampling, whose output has ceil(n·up/down) samples)."""
    from scipy.signal import resample_poly

    path = Path(path)
    frames, rate = _read_wav(path)
    mono = frames.mean(axis=1)
    if not len(mono):
        raise InputError("audio file holds no samples", path=path)
    if rate != sample_rate:
        g = math.gcd(rate, sample_rate)
        mono = resample_poly(mono, sample_rate // g, rate // g)
    return np.ascontiguousarray(mono, dtype=np.float32)


def audio_seconds(path: str | Path) -> float:
    """Duration from the WAV header alone (no decoding): checks early that a
    file is there and readable, and orders prediction batches by length."""
    path = Path(path)
    try:
        with wave.open(str(path), "rb") as w:
            if w.getsampwidth() not in (1, 2, 3, 4):
                raise InputError(f"unsupported WAV sample width {w.getsampwidth()} bytes", path=path)
            return w.getnframes() / float(w.getframerate())
    except FileNotFoundError:
        raise InputError("audio file not found", path=path) from None
    except (wave.Error, EOFError, OSError, ZeroDivisionError) as exc:
        raise InputError(f"cannot read audio as an integer-PCM WAV file ({exc})", path=path) from None


def has_audio_tower(model) -> bool:
    cfg = getattr(model, "config", None)
    return "omni" in (getattr(cfg, "model_type", "") or "") and getattr(cfg, "audio_config", None) is not None


def audio_in_play(dataset_cfg: dict[str, Any], model, items: Sequence[dict[str, Any]]) -> bool:
    """Whether prompts carry the items' audio: not ``text_only``, an Omni model
    with an audio tower, and items with ``inputs.audio`` (all of them: a
    mixed set would train and score two different tasks)."""
    if dataset_cfg["text_only"] or not has_audio_tower(model):
        return False
    missing = [it.get("id") for it in items if not (it.get("inputs") or {}).get("audio")]
    if len(missing) == len(items):
        return False
    if missing:
        raise InputError(f"{len(missing)} of {len(items)} items have no inputs.audio (first: {missing[0]!r}); "
                         "set text_only: true for this dataset or give every item its audio", field="inputs.audio")
    return True


def audio_features_for(dataset_cfg: dict[str, Any], model, items: Sequence[dict[str, Any]],
                       ref: str | Path) -> "AudioFeatures | None":
    """The featurizer when audio is in play (:func:`audio_in_play`), else None.
    Every file's header is read first, so a missing or unreadable file
    stops the run before any compute is spent."""
    if not audio_in_play(dataset_cfg, model, items):
        return None
    for it in items:
        audio_seconds(it["inputs"]["audio"])
    log.info("audio in play: %d items carry their audio into the prompts", len(items))
    return AudioFeatures.for_model(ref, model)


def output_lengths(feature_lengths):
    """Audio-tower output tokens per mel length (two stride-2 stages), the
    count Qwen2.5-Omni's processor writes ``<|AUDIO|>`` tokens for."""
    first = (feature_lengths - 1) // 2 + 1
    return (first - 2) // 2 + 1


class AudioFeatures:
    """Log-mel features of a batch of audio paths, and the placeholder expansion."""

    def __init__(self, feature_extractor, audio_token_id: int):
        self.fe = feature_extractor
        self.audio_token_id = int(audio_token_id)

    @classmethod
    def for_model(cls, ref: str | Path, model) -> "AudioFeatures":
        """The feature extractor saved with ``ref``; its mel bins must be the
        audio tower's."""
        fe = load_feature_extractor(ref)
        if fe is None:
            raise ShalaError(f"{ref}: no audio feature extractor ({PREPROCESSOR_CONFIG}); an Omni model "
                             "fed audio needs the one its hub repo ships, or set the dataset's text_only: true")
        mels = model.config.audio_config.num_mel_bins
        if fe.feature_size != mels or fe.sampling_rate != SAMPLE_RATE:
            raise ConfigError(f"{ref}: {PREPROCESSOR_CONFIG} gives {fe.feature_size} mel bins at "
                              f"{fe.sampling_rate} Hz; the audio tower wants {mels} at {SAMPLE_RATE}")
        token = getattr(model.config, "audio_token_id", None)
        if token is None:
            token = model.config.audio_token_index
        return cls(fe, token)

    def __call__(self, paths: Sequence[str]) -> dict[str, Any]:
        """``input_features`` (B, mels, T) float32 and ``feature_attention_mask``
        (B, T), one row per path (a repeated path is decoded once)."""
        import torch

        unique = list(dict.fromkeys(str(p) for p in paths))
        waves = [load_audio(p) for p in unique]
        hop, cap = self.fe.hop_length, self.fe.n_samples
        # padded past the longest by at least one sample, as the processor's
        # fixed length pads every clip: the same frames and mask counts
        length = min(cap, (max(len(w) for w in waves) // hop + 1) * hop)
        out = self.fe(waves, sampling_rate=SAMPLE_RATE, padding="max_length", max_length=length,
                      truncation=True, return_attention_mask=True, return_tensors="pt")
        index = torch.tensor([unique.index(str(p)) for p in paths])
        return {"input_features": out["input_features"].float()[index],
                "feature_attention_mask": out["attention_mask"].long()[index]}

    def n_tokens(self, features: dict[str, Any]) -> list[int]:
        return output_lengths(features["feature_attention_mask"].sum(-1)).tolist()

    def expand(self, ids: Sequence[int], n: int) -> list[int]:
        """``ids`` with its one audio token repeated ``n`` times."""
        ids = list(ids)
        where = [i for i, t in enumerate(ids) if t == self.audio_token_id]
        if len(where) != 1:
            raise ConfigError(f"a prompt has {len(where)} audio placeholder tokens, not 1: the chat template must "
                              "render an audio message part (Qwen2.5-Omni's writes <|audio_bos|><|AUDIO|><|audio_eos|>)")
        i = where[0]
        return ids[:i] + [self.audio_token_id] * int(n) + ids[i + 1:]

    def prepare(self, prompt_ids: Sequence[Sequence[int]], paths: Sequence[str]):
        """(expanded prompt ids, features) for prompts in the order of ``paths``."""
        features = self(paths)
        return [self.expand(ids, n) for ids, n in zip(prompt_ids, self.n_tokens(features))], features


def load_feature_extractor(ref: str | Path):
    """The ``WhisperFeatureExtractor`` kept with a model (local directory or
    hub id), or None when it has none."""
    from transformers import WhisperFeatureExtractor

    local = Path(str(ref))
    if local.is_dir() and not (local / PREPROCESSOR_CONFIG).is_file():
        return None
    try:
        return WhisperFeatureExtractor.from_pretrained(str(ref))
    except (OSError, ValueError):
        return None


def save_feature_extractor(ref: str | Path, out_dir: str | Path) -> bool:
    """Copy an Omni model's feature extractor next to weights saved from it
    (warm-up, training), so they can be fed audio too."""
    fe = load_feature_extractor(ref)
    if fe is None:
        return False
    fe.save_pretrained(str(out_dir))
    return True
