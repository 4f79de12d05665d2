"""GRPO reward functions (docs/design.md §5), callable directly by TRL's GRPOTrainer.

TRL calls ``reward(prompts=..., completions=..., **columns)`` where every
other dataset column arrives as a list aligned with the completions. The
columns these rewards read, and nothing else, are:

- ``labels``: the dataset's class names in label order (list[str] per row);
- ``dist``: the annotator distribution p in that order (list[float]);
- ``entropy_norm``: H~(p) in [0, 1] (float), used by ``shala`` only;
- ``response_prefix`` (optional): the opening of the answer written into the
  prompt (docs/design.md §4), prepended to the completion before parsing.

A completion is a string (standard format) or a list of chat messages
(conversational format; the last assistant message is used). A completion
that fails to parse gets 0.0. Every reward lies in [0, 1]. A caller that
has already parsed the completions (the recorder in :mod:`shala.train.grpo`)
passes ``parsed=`` so each completion is parsed once.

Adding a reward: write a function with this signature under
``@reward("name")``; a method in ``config.yaml`` then names it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..distributions import jsd
from ..parsing import parse_distribution
from ..prompts import full_answer
from ..registry import Registry

REWARDS: Registry[Callable[..., list[float]]] = Registry("reward")


def reward(name: str) -> Callable[[Callable[..., list[float]]], Callable[..., list[float]]]:
    """Register a reward under ``name``, also as its ``__name__``: TRL labels
    a reward's columns in its logs by ``__name__``."""
    def decorate(fn: Callable[..., list[float]]) -> Callable[..., list[float]]:
        fn.__name__ = name
        return REWARDS.add(name, fn)
    return decorate


def completion_text(completion: Any) -> str:
    """Text of a completion in TRL's standard or conversational format."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list):
        for msg in reversed(completion):
            if isinstance(msg, dict) and msg.get("role", "assistant") == "assistant":
                content = msg.get("content", "")
                if isinstance(content, list):  # multimodal content parts
                    return "".join(part.get("text", "") for part in content if isinstance(part, dict))
                return str(content)
    return ""


def parse_completions(completions: Sequence[Any], labels: Sequence[Sequence[str]],
                      response_prefix: Sequence[str] | None = None) -> list[np.ndarray | None]:
    """Parsed distributions (None on failure) of prefix + completion."""
    prefixes = response_prefix or [""] * len(completions)
    return [parse_distribution(full_answer(pre, completion_text(c)), lab).dist
            for c, lab, pre in zip(completions, labels, prefixes)]


def _get_parsed(parsed, completions, labels, response_prefix):
    return parsed if parsed is not None else parse_completions(completions, labels, response_prefix)


@reward("mls")
def mls_reward(prompts=None, completions=(), *, labels, dist, response_prefix=None, parsed=None,
               **_: Any) -> list[float]:
    """Probability the prediction puts on the majority class of p (MLS)."""
    out = []
    for q, p in zip(_get_parsed(parsed, completions, labels, response_prefix), dist):
        out.append(0.0 if q is None else float(q[int(np.argmax(np.asarray(p)))]))
    return out


@reward("shala_no_ambi")
def shala_no_ambi_reward(prompts=None, completions=(), *, labels, dist, response_prefix=None,
                         parsed=None, **_: Any) -> list[float]:
    """1 − JSD(p̂, p), JS distance base 2."""
    out = []
    for q, p in zip(_get_parsed(parsed, completions, labels, response_prefix), dist):
        out.append(0.0 if q is None else float(1.0 - jsd(q, p)))
    return out


@reward("shala")
def shala_reward(prompts=None, completions=(), *, labels, dist, entropy_norm, response_prefix=None,
                 parsed=None, **_: Any) -> list[float]:
    """H~(p) · (1 − JSD(p̂, p)): agreement weighted by the item's ambiguity."""
    base = shala_no_ambi_reward(prompts, completions, labels=labels, dist=dist,
                                response_prefix=response_prefix, parsed=parsed)
    return [float(h) * r for h, r in zip(entropy_norm, base)]


def get_reward(name: str) -> Callable[..., list[float]]:
    """The reward a method names; an unknown name raises ConfigError (one line)."""
    return REWARDS[name]
