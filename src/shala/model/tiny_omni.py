"""A tiny random Qwen2.5-Omni checkpoint, built in seconds, for fast tests,
vLLM's CPU tests (``vllm=True``) and part (a) of bench/gpu_check.sh. Laid out like the hub repo: weights + config, a tokenizer without a chat
template, the processor's ``chat_template.json`` (rendering audio message
parts as ``<|audio_bos|><|AUDIO|><|audio_eos|>``, as the real one does) and
the audio ``preprocessor_config.json`` (a ``WhisperFeatureExtractor`` with
the tiny audio tower's 16 mel bins)."""

from __future__ import annotations

import json
from pathlib import Path

OMNI_SPECIALS = ["<|AUDIO|>", "<|IMAGE|>", "<|VIDEO|>", "<|audio_bos|>", "<|audio_eos|>",
                 "<|vision_bos|>", "<|vision_eos|>"]
MEL_BINS = 16
#: the thinker's shapes for vLLM's CPU build, whose attention takes head_dim >= 32 (the defaults give 16)
VLLM_SHAPES = {"text_config": dict(num_attention_heads=2, num_key_value_heads=1, rope_parameters={
                   "rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 6, 6]}),
               "audio_config": dict(encoder_attention_heads=1),
               "vision_config": dict(num_heads=1)}
#: tokenizer_config.json's names of the media tokens, read by Qwen2_5OmniProcessor
MEDIA_TOKENS = {"audio_token": "<|AUDIO|>", "image_token": "<|IMAGE|>", "video_token": "<|VIDEO|>",
                "audio_bos_token": "<|audio_bos|>", "audio_eos_token": "<|audio_eos|>",
                "vision_bos_token": "<|vision_bos|>", "vision_eos_token": "<|vision_eos|>"}
#: the hub repo's image processor settings (preprocessor_config.json)
IMAGE_PROCESSOR = {"image_processor_type": "Qwen2VLImageProcessor", "patch_size": 14, "temporal_patch_size": 2,
                   "merge_size": 2, "min_pixels": 3136, "max_pixels": 12845056,
                   "image_mean": [0.48145466, 0.4578275, 0.40821073],
                   "image_std": [0.26862954, 0.26130258, 0.27577711]}
# ChatML, plus content lists as Qwen2.5-Omni's template renders them (no default system message here).
OMNI_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'audio' or 'audio' in part %}{{ '<|audio_bos|><|AUDIO|><|audio_eos|>' }}"
    "{% elif part['type'] == 'image' or 'image' in part %}{{ '<|vision_bos|><|IMAGE|><|vision_eos|>' }}"
    "{% elif 'text' in part %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def build_tiny_omni(out_dir: Path, *, full: bool, seed: int = 0, vllm: bool = False):
    """A tiny random Qwen2.5-Omni in seconds: the full checkpoint layout
    (``model_type`` qwen2_5_omni, weights under ``thinker.``; no talker) or
    a thinker saved alone (qwen2_5_omni_thinker, as a warm-up run saves it).
    Like the hub repo, the tokenizer has no chat template: it is in the
    processor's chat_template.json. ``vllm``: one vLLM's CPU build serves
    (:data:`VLLM_SHAPES`, :func:`add_processor_files`); the existing tests'
    model keeps its shapes. Returns (directory, the thinker's state dict as
    built)."""
    import torch
    import transformers
    from transformers import (
        Qwen2_5OmniConfig,
        Qwen2_5OmniForConditionalGeneration,
        Qwen2_5OmniThinkerConfig,
        Qwen2_5OmniThinkerForConditionalGeneration,
        WhisperFeatureExtractor,
    )

    from shala.model.tiny_models import build_tokenizer

    tok = build_tokenizer()
    tok.add_tokens(OMNI_SPECIALS, special_tokens=True)
    ids = {t: tok.convert_tokens_to_ids(t) for t in OMNI_SPECIALS}
    thinker = dict(
        text_config=dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                          "mrope_section": [2, 3, 3]},
                         tie_word_embeddings=False),
        audio_config=dict(d_model=32, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=64,
                          num_mel_bins=MEL_BINS, max_source_positions=100, n_window=10, output_dim=64),
        vision_config=dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                           fullatt_block_indexes=[0]),
        audio_token_index=ids["<|AUDIO|>"], image_token_index=ids["<|IMAGE|>"],
        video_token_index=ids["<|VIDEO|>"], audio_start_token_id=ids["<|audio_bos|>"],
        audio_end_token_id=ids["<|audio_eos|>"], vision_start_token_id=ids["<|vision_bos|>"],
        vision_end_token_id=ids["<|vision_eos|>"],
        pad_token_id=tok.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"), tie_word_embeddings=False)
    if vllm:
        for part, shape in VLLM_SHAPES.items():
            thinker[part].update(shape)
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # the default talker config's token ids
    try:
        torch.manual_seed(seed)
        if full:
            model = Qwen2_5OmniForConditionalGeneration(
                Qwen2_5OmniConfig(thinker_config=thinker, enable_audio_output=False))
        else:
            model = Qwen2_5OmniThinkerForConditionalGeneration(Qwen2_5OmniThinkerConfig(**thinker))
        model.save_pretrained(out_dir, safe_serialization=True)
        state = (model.thinker if full else model).state_dict()
    finally:
        transformers.logging.set_verbosity(verbosity)
    tok.chat_template = None
    tok.save_pretrained(out_dir)
    (Path(out_dir) / "chat_template.json").write_text(json.dumps({"chat_template": OMNI_CHAT_TEMPLATE}))
    # the hub repo's preprocessor_config.json, scaled to the tiny audio tower
    WhisperFeatureExtractor(feature_size=MEL_BINS, sampling_rate=16000, hop_length=160, chunk_length=30,
                            n_fft=400, return_attention_mask=True).save_pretrained(out_dir)
    if vllm:
        add_processor_files(Path(out_dir))
    return Path(out_dir), state


def add_processor_files(folder: Path) -> None:
    """What Qwen2.5-Omni's processor reads beside the audio features, as the
    hub repo has them: the named media tokens in tokenizer_config.json
    (``tokenizer.audio_token`` ...) and the image processor's settings in
    preprocessor_config.json. vLLM builds that processor for an engine that
    takes media (shala's language-model-only rollouts do not)."""
    cfg_file = folder / "tokenizer_config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg.update(MEDIA_TOKENS)
    cfg_file.write_text(json.dumps(cfg, indent=2))
    pre_file = folder / "preprocessor_config.json"
    pre = json.loads(pre_file.read_text())
    pre.update(IMAGE_PROCESSOR, processor_class="Qwen2_5OmniProcessor")
    pre_file.write_text(json.dumps(pre, indent=2))
