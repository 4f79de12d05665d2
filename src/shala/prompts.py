"""Prompts (SPEC §4): background, target, task, output constraints.

A dataset's prompt lives in config; this module renders it for one item as
chat messages. The chat template of the model is applied later (by TRL or
by :mod:`shala.predict`), so the same messages serve every model.
"""

from __future__ import annotations

import json
import string
from collections.abc import Sequence
from typing import Any

from .errors import ConfigError, InputError

DEFAULT_OUTPUT = (
    "Answer with exactly one JSON object whose keys are the class names in this "
    "order: {label_list}. Each value is the probability of that class, the values "
    "sum to 1, and nothing else is written. Example format: {example}"
)
DEFAULT_TASK = (
    "Different people may judge this item differently. Estimate the distribution "
    "of judgements a large group of annotators would give, as calibrated "
    "probabilities over the classes:"
)


def _fields(template: str) -> list[str]:
    return [f for _, f, _, _ in string.Formatter().parse(template) if f]


def example_json(labels: Sequence[str]) -> str:
    """A format example with a non-informative spread (not the uniform, so the
    model sees that values may differ)."""
    n = len(labels)
    vals = [round(1.0 / n, 2)] * n
    vals[0] = round(1.0 - sum(vals[1:]), 2)
    return json.dumps(dict(zip(labels, vals)))


def render_prompt_text(item: dict[str, Any], prompt_cfg: dict[str, Any]) -> str:
    """The user message for ``item``: four parts separated by blank lines."""
    labels = item["labels"]
    inputs = item.get("inputs", {})
    target_tpl = prompt_cfg.get("target")
    if not target_tpl:
        raise ConfigError("prompt.target is missing")
    missing = [f for f in _fields(target_tpl) if f not in inputs]
    if missing:
        raise InputError(f"item {item.get('id')!r} has no input field(s) {missing} used by prompt.target",
                         field="inputs")
    target = target_tpl.format_map({k: str(v) for k, v in inputs.items()})
    definitions = prompt_cfg.get("definitions") or {}
    lines = []
    for lab in labels:
        d = definitions.get(lab)
        lines.append(f"- {lab}: {d}" if d else f"- {lab}")
    task = (prompt_cfg.get("task") or DEFAULT_TASK).strip() + "\n" + "\n".join(lines)
    out_tpl = prompt_cfg.get("output") or DEFAULT_OUTPUT
    output = out_tpl.format(label_list=", ".join(labels), example=example_json(labels))
    parts = [prompt_cfg.get("background", "").strip(), target.strip(), task, output.strip()]
    return "\n\n".join(p for p in parts if p)


def render_messages(item: dict[str, Any], prompt_cfg: dict[str, Any]) -> list[dict[str, str]]:
    """Chat messages for ``item`` (an optional system message, one user turn)."""
    messages = []
    if prompt_cfg.get("system"):
        messages.append({"role": "system", "content": prompt_cfg["system"]})
    messages.append({"role": "user", "content": render_prompt_text(item, prompt_cfg)})
    return messages
