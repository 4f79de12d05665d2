"""GRPO reward functions (SPEC §5), callable directly by TRL's GRPOTrainer.

TRL calls ``reward(prompts=..., completions=..., **columns)`` where every
other dataset column arrives as a list aligned with the completions. The
columns these rewards read, and nothing else, are:

- ``labels``: the dataset's class names in label order (list[str] per row);
- ``dist``: the annotator distribution p in that order (list[float]);
- ``entropy_norm``: H~(p) in [0, 1] (float), used by ``shala`` only.

A completion is a string (standard format) or a list of chat messages
(conversational format; the last assistant message is used). A completion
that fails to parse gets 0.0. Every reward lies in [0, 1].

Adding a reward: write a function with this signature and add it to
:data:`REWARDS`; a method in ``config.yaml`` then names it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .metrics import jsd
from .parsing import parse_distribution

REWARD_COLUMNS = ("labels", "dist", "entropy_norm")


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


def _parsed(completions: Sequence[Any], labels: Sequence[Sequence[str]]) -> list[np.ndarray | None]:
    return [parse_distribution(completion_text(c), lab).dist for c, lab in zip(completions, labels)]


def mls_reward(prompts=None, completions=(), *, labels, dist, **_: Any) -> list[float]:
    """Probability the prediction puts on the majority class of p (MLS)."""
    out = []
    for q, p in zip(_parsed(completions, labels), dist):
        out.append(0.0 if q is None else float(q[int(np.argmax(np.asarray(p)))]))
    return out


def shala_no_ambi_reward(prompts=None, completions=(), *, labels, dist, **_: Any) -> list[float]:
    """1 − JSD(p̂, p), JS distance base 2."""
    out = []
    for q, p in zip(_parsed(completions, labels), dist):
        out.append(0.0 if q is None else float(1.0 - jsd(q, np.asarray(p, dtype=np.float64))))
    return out


def shala_reward(prompts=None, completions=(), *, labels, dist, entropy_norm, **_: Any) -> list[float]:
    """H~(p) · (1 − JSD(p̂, p)): agreement weighted by the item's ambiguity."""
    base = shala_no_ambi_reward(prompts, completions, labels=labels, dist=dist)
    return [float(h) * r for h, r in zip(entropy_norm, base)]


# Give TRL readable names in its logs (it uses __name__).
mls_reward.__name__ = "mls"
shala_no_ambi_reward.__name__ = "shala_no_ambi"
shala_reward.__name__ = "shala"

REWARDS: dict[str, Callable[..., list[float]]] = {
    "mls": mls_reward,
    "shala_no_ambi": shala_no_ambi_reward,
    "shala": shala_reward,
}


def get_reward(name: str) -> Callable[..., list[float]]:
    from .errors import ConfigError
    try:
        return REWARDS[name]
    except KeyError:
        raise ConfigError(f"unknown reward {name!r}; known: {', '.join(REWARDS)}") from None
