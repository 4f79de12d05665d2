"""A tiny, randomly initialised chat model for fast unit tests (docs/design.md §9).

Tests must not download anything and must run in seconds on a CPU, so we
build a Qwen2 causal LM with a few thousand parameters and a tokenizer
trained on a small built-in corpus. Its outputs are gibberish; it exists to
exercise loading, chat templates, batching, generation and training code
paths. Never use it as a demo model.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

# ChatML, as used by Qwen and SmolLM2, so prompts look like the real models'.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

_CLASSES = ("entailment neutral contradiction anger disgust fear joy sadness surprise "
            "angry contempt happy sad positive negative other")
_WORDS = ("You are an expert annotator for natural language inference. Given a premise "
          "and a hypothesis, people decide whether the premise entails the hypothesis, "
          "is neutral towards it, or contradicts it. Many items are ambiguous, and "
          "annotators disagree. Premise: Hypothesis: Comment: Transcript: Text: "
          "Different people may judge this item differently. Estimate the distribution "
          "of judgements a large group of annotators would give, as calibrated "
          "probabilities over the classes: Answer with exactly one JSON object whose "
          "keys are the class names in this order. Each value is the probability of "
          "that class, the values sum to 1, and nothing else is written. Example format: "
          "the hypothesis is definitely true false may or may not be given emotions in "
          "text speech Reddit comment podcast segment which emotion it expresses "
          "system user assistant")


def tokenizer_corpus() -> list[str]:
    """Deterministic training text: prompt words, class names, JSON, digits."""
    lines = [_WORDS, _CLASSES, _WORDS.lower(), _CLASSES.upper()]
    for a in range(0, 101, 5):
        b = (100 - a) // 2
        c = 100 - a - b
        lines.append('{"entailment": %.2f, "neutral": %.2f, "contradiction": %.2f}'
                     % (a / 100, b / 100, c / 100))
        lines.append(f'{{"joy": {a}%, "anger": "{b / 100}", "neutral": {c / 100}}}')
    lines.append("0123456789 .,:;!?'\"()[]{}<>-_+=*/\\@#$%^&|~` \n\t")
    return lines * 3


def build_tokenizer(vocab_size: int = 600):
    """A byte-level BPE tokenizer trained locally (no hub access), with ChatML
    specials and a chat template, wrapped as a ``PreTrainedTokenizerFast``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(tokenizer_corpus(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        bos_token=None, unk_token=None, additional_special_tokens=SPECIAL_TOKENS[1:],
        model_max_length=4096)
    fast.chat_template = CHATML_TEMPLATE
    return fast


def build_tiny_model(out_dir: Path, seed: int = 0) -> Path:
    """Write a tiny random Qwen2ForCausalLM + tokenizer to ``out_dir``.

    Same seed, same weights (bit for bit). Built in a temporary directory and
    renamed into place so concurrent test sessions never see half a model.
    """
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    out_dir = Path(out_dir)
    tokenizer = build_tokenizer()
    eos_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    pad_id = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=4096, tie_word_embeddings=True,
        bos_token_id=None, eos_token_id=eos_id, pad_token_id=pad_id)
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config).to(torch.float32)
    finally:
        torch.random.set_rng_state(state)
    model.generation_config = GenerationConfig(
        eos_token_id=eos_id, pad_token_id=pad_id, do_sample=False)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        from .gguf import relax_permissions
        relax_permissions(tmp)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir
