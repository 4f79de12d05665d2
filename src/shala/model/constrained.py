"""Constrained decoding of the JSON answer (docs/design.md §4: an optional
decoding aid which, when a config turns it on, is the same in training and
evaluation).

With ``prompt.constrained: true`` the answer's skeleton is forced and the
model chooses only the numbers: after the response prefix ``{"<first
class>": `` it may write 1 to ``max_digits`` digit tokens, then the
separator ``, "<next class>": `` is forced token by token, and so on, and
``}`` and the end-of-turn token close it. A small model then always answers
in the format, and GRPO's reward differences are about the distribution
alone, not about format slips (a 135M model under GRPO otherwise learns to
drop classes: a missing class counts 0 and a shorter answer is a safer one).

The constraint is a transformers ``LogitsProcessor``: prediction passes it
to ``generate``; GRPO gets it through :func:`constrain_generate`, which wraps
the model's ``generate`` (TRL 1.16's GRPOTrainer calls
``unwrapped_model.generate(**inputs, generation_config=...)`` and has no
hook for logits processors). The policy-gradient loss still uses the
model's unconstrained log-probabilities of the sampled tokens.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from typing import Any

from ..errors import ConfigError

DIGITS = "0123456789"


class JSONSkeleton:
    """Token-level state machine of ``{"c1": N, "c2": N, ..., "cK": N}``
    after the prefix ``{"c1": `` (the prefix itself is in the prompt)."""

    def __init__(self, tokenizer, labels: Sequence[str], max_digits: int = 3):
        vocab = tokenizer.get_vocab()
        self.digit_ids = sorted(i for t, i in vocab.items() if tokenizer.decode([i]) in set(DIGITS))
        self.zero_ids = {i for i in self.digit_ids if tokenizer.decode([i]) == "0"}
        if len(self.digit_ids) < 10:
            raise ConfigError("prompt.constrained: the tokenizer has no single-digit tokens")
        # pieces: None = a number, else the forced token ids of a literal
        self.pieces: list[list[int] | None] = []
        for lab in labels[1:]:
            self.pieces += [None, tokenizer(", " + json.dumps(lab) + ": ", add_special_tokens=False)["input_ids"]]
        self.pieces += [None, tokenizer("}", add_special_tokens=False)["input_ids"]]
        self.eos_id = tokenizer.eos_token_id
        self.max_digits = max_digits

    def allowed(self, generated: Sequence[int]) -> list[int]:
        """Token ids allowed after ``generated`` (the tokens after the prompt)."""
        piece, pos = 0, 0  # pos: digits written (number) or tokens matched (literal)
        first = None  # the current number's first digit (JSON allows no leading zero)
        for tok in generated:
            if piece >= len(self.pieces):
                return [self.eos_id]
            lit = self.pieces[piece]
            if lit is None:
                if tok in self.digit_ids and pos < self.max_digits and first not in self.zero_ids:
                    first = tok if pos == 0 else first
                    pos += 1
                    continue
                piece, pos, first = piece + 1, 0, None  # the number ended: tok must open the literal
                lit = self.pieces[piece]
            if pos < len(lit) and tok == lit[pos]:
                pos += 1
                if pos == len(lit):
                    piece, pos = piece + 1, 0
            else:  # off the skeleton (cannot happen when every step was constrained)
                return [self.eos_id]
        if piece >= len(self.pieces):
            return [self.eos_id]
        lit = self.pieces[piece]
        if lit is None:
            out = list(self.digit_ids) if pos < self.max_digits and first not in self.zero_ids else []
            if pos > 0:
                out.append(self.pieces[piece + 1][0])
            return out
        return [lit[pos]]


def skeleton_processor(tokenizer, labels: Sequence[str], max_digits: int = 3):
    """A fresh ``LogitsProcessor`` (it remembers where the prompt ends)."""
    import torch
    from transformers import LogitsProcessor

    skeleton = JSONSkeleton(tokenizer, labels, max_digits)

    class SkeletonProcessor(LogitsProcessor):
        def __init__(self):
            self.start: int | None = None

        def __call__(self, input_ids, scores):
            if self.start is None:
                self.start = input_ids.shape[1]
            mask = torch.full_like(scores, float("-inf"))
            for row, ids in enumerate(input_ids[:, self.start:].tolist()):
                mask[row, skeleton.allowed(ids)] = 0.0
            return scores + mask

    return SkeletonProcessor


def constraint_settings(prompt_cfg: dict[str, Any], labels: Sequence[str]) -> dict[str, Any] | None:
    """None when unconstrained; else what the run record states. ``prompt_cfg``
    has its schema defaults filled (:func:`shala.config.fill_defaults`)."""
    if not prompt_cfg["constrained"]:
        return None
    if prompt_cfg["response_prefix"] != "auto":
        raise ConfigError("prompt.constrained needs prompt.response_prefix: auto (the skeleton starts "
                          "after the first class's key)")
    if prompt_cfg["answer_scale"] != 100:
        raise ConfigError("prompt.constrained writes whole numbers: it needs prompt.answer_scale: 100")
    max_digits = 3
    return {"skeleton": "{" + ", ".join(f"{json.dumps(lab)}: N" for lab in labels) + "}",
            "number": f"1 to {max_digits} digits", "max_digits": max_digits}


def constrain_generate(model, tokenizer, labels: Sequence[str], max_digits: int = 3) -> None:
    """Make every ``model.generate`` call (TRL's rollouts) follow the skeleton."""
    from transformers import LogitsProcessorList

    factory = skeleton_processor(tokenizer, labels, max_digits)
    original = model.generate

    @functools.wraps(original)
    def generate(*args, **kwargs):
        procs = LogitsProcessorList(kwargs.pop("logits_processor", None) or [])
        procs.append(factory())
        return original(*args, logits_processor=procs, **kwargs)

    model.generate = generate


def forced_positions(skeleton: JSONSkeleton, completion_ids: Sequence[Sequence[int]]) -> list[list[bool]]:
    """Per completion token: whether the skeleton allowed exactly one token
    there (a separator piece, ``}``, the end of turn). Such a token was not
    chosen by the model; its log-probability carries no reward information."""
    out = []
    for ids in completion_ids:
        ids = list(ids)
        out.append([len(skeleton.allowed(ids[:t])) == 1 for t in range(len(ids))])
    return out


def mask_forced_tokens(trainer, tokenizer, labels: Sequence[str], max_digits: int = 3,
                       find_forced=forced_positions) -> dict[str, int]:
    """Take the forced tokens of constrained rollouts out of GRPO's loss.

    Without this, 11 of a 3-class answer's ~20 tokens (the forced ``, "neutral": ``
    and so on) carry a policy-gradient term on the model's *unconstrained*
    probability of a token it had no choice about: 15-25 % of the gradient
    norm, none of it about the distribution. TRL multiplies its loss mask
    by an optional ``tool_mask`` (0: not the model's token) and leaves the
    attention mask alone, so the forced tokens are set to 0 there.
    ``num_items_in_batch`` (the token count DAPO-style losses divide by) is
    recounted. Returns a live counter of masked and kept tokens.
    ``find_forced(skeleton, completion_ids)``: where the forced tokens are
    (vLLM's rollouts: :func:`shala.train.vllm_rollouts.forced_positions_text`).
    """
    import torch

    skeleton = JSONSkeleton(tokenizer, labels, max_digits)
    original = trainer._generate_and_score_completions
    counts = {"forced_tokens": 0, "free_tokens": 0}

    @functools.wraps(original)
    def generate_and_score(inputs):
        out = original(inputs)
        ids, mask = out["completion_ids"], out["completion_mask"]
        forced = torch.tensor(find_forced(skeleton, ids.tolist()), dtype=torch.bool, device=ids.device)
        keep = (~forced).to(mask.dtype)
        tool = out.get("tool_mask")
        out["tool_mask"] = keep if tool is None else tool * keep
        loss_mask = mask * out["tool_mask"]
        counts["forced_tokens"] += int((mask * forced.to(mask.dtype)).sum())
        counts["free_tokens"] += int(loss_mask.sum())
        out["num_items_in_batch"] = trainer.accelerator.gather(loss_mask.sum()).sum()
        return out

    trainer._generate_and_score_completions = generate_and_score
    return counts
