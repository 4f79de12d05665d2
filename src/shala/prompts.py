"""Prompts (docs/design.md §4): background, target, task, output constraints, and an
optional response prefix.

A dataset's prompt lives in config; this module renders it for one item as
chat messages, and as the exact model input string (chat template applied,
assistant turn opened, response prefix written). Prediction, GRPO and SFT
all use :func:`render_prompt_string`, so the model sees the same text at
training and at evaluation.

Why a response prefix: a small model (SmolLM2-135M) asked for JSON mostly
writes prose; writing the opening of the answer for it (``{"entailment": ``)
makes it continue in the format. The prefix is part of the answer: it is
prepended to every completion before parsing (:func:`full_answer`) and
recorded in every run record. TRL's GRPOTrainer cannot continue an
assistant message in the conversational format (it renders with
``add_generation_prompt=True``), so training uses the standard (string)
prompt format with the template applied here.

Every function takes a dataset's ``prompt`` block with its schema defaults
filled (the generic task and output texts among them: the schema holds
them, so the config and the run records show what the model was asked).
"""

from __future__ import annotations

import json
import string
from collections.abc import Sequence
from typing import Any

from .errors import ConfigError, InputError

AUTO_PREFIX = "auto"
LABEL_FIELDS = ("label_list", "example")  # what task and output templates may name


def _fields(template: str) -> list[str]:
    return [f for _, f, _, _ in string.Formatter().parse(template) if f]


def placeholder_problem(prompt_cfg: dict[str, Any], text_fields: Sequence[str]) -> tuple[str, str] | None:
    """``(part, why)`` for the first placeholder of a prompt block that
    nothing fills, or None: ``target`` may name the items' text fields,
    ``task``/``output`` only {label_list} and {example}; ``background`` is
    plain text, so a ``{name}`` there would reach the model as written.
    Checked at plan time (:func:`shala.config.check_registries`), where a
    typo costs nothing; at render time it would stop the first model job."""
    have = ", ".join(text_fields) or "none"
    label_fields = ", ".join("{" + f + "}" for f in LABEL_FIELDS)
    allowed = {"target": (tuple(text_fields), f"is not a text field of the items (they have: {have})"),
               "task": (LABEL_FIELDS, f"is not one of {label_fields}"),
               "output": (LABEL_FIELDS, f"is not one of {label_fields}")}
    if not (prompt_cfg.get("target") or "").strip():
        return "target", f"is empty; name the items' text fields (they have: {have})"
    for part in ("background", "target", "task", "output"):
        template = prompt_cfg.get(part) or ""
        try:
            fields = _fields(template)
        except ValueError as exc:
            if part == "background":
                continue  # plain text: braces are literal
            return part, f"bad template ({exc}); write literal braces as {{{{ }}}}"
        for field in fields:
            name = field.split(".", 1)[0].split("[", 1)[0]
            if part == "background":
                if name.isidentifier():
                    return part, (f"{{{field}}} would be shown as written: the background is plain text; "
                                  "item fields go in target")
            elif name not in allowed[part][0]:
                return part, f"{{{field}}} {allowed[part][1]}"
    return None


def example_json(labels: Sequence[str]) -> str:
    """A format example with a non-informative spread (not the uniform, so the
    model sees that values may differ)."""
    n = len(labels)
    vals = [round(1.0 / n, 2)] * n
    vals[0] = round(1.0 - sum(vals[1:]), 2)
    return json.dumps(dict(zip(labels, vals)))


def _format(template: str, labels: Sequence[str], where: str) -> str:
    """Task/output templates: ``{label_list}`` and ``{example}`` are filled;
    literal braces are doubled, as in the paper's templates."""
    try:
        return template.format(label_list=", ".join(labels), example=example_json(labels))
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(f"prompt.{where}: bad template ({exc}); write literal braces as {{{{ }}}}") from None


def _sections(item: dict[str, Any], prompt_cfg: dict[str, Any]) -> list[str]:
    """Background, target, task and output constraints of ``item`` (stripped)."""
    labels = item["labels"]
    inputs = item.get("inputs", {})
    target_tpl = prompt_cfg["target"]
    if not target_tpl:
        raise ConfigError("prompt.target is empty")
    missing = [f for f in _fields(target_tpl) if f not in inputs]
    if missing:
        raise InputError(f"item {item.get('id')!r} has no input field(s) {missing} used by prompt.target",
                         field="inputs")
    target = target_tpl.format_map({k: str(v) for k, v in inputs.items()})
    definitions = prompt_cfg["definitions"]
    task = _format(prompt_cfg["task"], labels, "task").strip()
    if definitions:
        lines = [f"- {lab}: {definitions[lab]}" if definitions.get(lab) else f"- {lab}" for lab in labels]
        task += "\n" + "\n".join(lines)
    output = _format(prompt_cfg["output"], labels, "output")
    return [prompt_cfg["background"].strip(), target.strip(), task, output.strip()]


def render_prompt_text(item: dict[str, Any], prompt_cfg: dict[str, Any]) -> str:
    """The user message for ``item``: four parts separated by blank lines."""
    return "\n\n".join(p for p in _sections(item, prompt_cfg) if p)


def render_messages(item: dict[str, Any], prompt_cfg: dict[str, Any], *,
                    audio: bool = False) -> list[dict[str, Any]]:
    """Chat messages for ``item`` (an optional system message, one user turn).

    With ``audio`` the user turn is a list of parts: the background, then
    the item's ``inputs.audio`` as an audio part (the Omni chat template
    writes its placeholder tokens there), then the target (the transcript)
    and the rest, so the model hears the utterance right before reading it.
    """
    messages: list[dict[str, Any]] = []
    if prompt_cfg["system"]:
        messages.append({"role": "system", "content": prompt_cfg["system"]})
    if not audio:
        messages.append({"role": "user", "content": render_prompt_text(item, prompt_cfg)})
        return messages
    path = (item.get("inputs") or {}).get("audio")
    if not path:
        raise InputError(f"item {item.get('id')!r} has no inputs.audio", field="inputs.audio")
    background, *rest = _sections(item, prompt_cfg)
    parts = [{"type": "text", "text": background + "\n\n"}] if background else []
    parts += [{"type": "audio", "audio": str(path)},
              {"type": "text", "text": "\n" + "\n\n".join(p for p in rest if p)}]
    messages.append({"role": "user", "content": parts})
    return messages


def response_prefix(prompt_cfg: dict[str, Any], labels: Sequence[str]) -> str:
    """The configured opening of the answer ('' when none). ``auto`` opens the
    JSON object at the first class: ``{"<first label>": ``."""
    prefix = prompt_cfg["response_prefix"]
    if prefix == AUTO_PREFIX:
        return "{" + json.dumps(labels[0]) + ": "
    return str(prefix)


def render_prompt_string(tokenizer, item: dict[str, Any], prompt_cfg: dict[str, Any], *,
                         audio: bool = False) -> str:
    """The model input: chat template applied, assistant turn opened, and the
    response prefix written (``audio``: see :func:`render_messages`)."""
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError("the tokenizer has no chat template; prompts are chat messages (docs/design.md §4)")
    text = tokenizer.apply_chat_template(render_messages(item, prompt_cfg, audio=audio), tokenize=False,
                                         add_generation_prompt=True)
    return without_added_bos(tokenizer, text) + response_prefix(prompt_cfg, item["labels"])


def adds_bos(tokenizer) -> bool:
    """Whether encoding a string puts a BOS token in front (Llama 3, Gemma)."""
    bos = getattr(tokenizer, "bos_token_id", None)
    return bos is not None and tokenizer("a")["input_ids"][:1] == [bos]


def without_added_bos(tokenizer, text: str) -> str:
    """The template's leading BOS removed when the tokenizer adds its own.

    TRL tokenises string prompts with special tokens added, and so does
    ``shala predict`` (:func:`encode_prompt`); a template that also writes
    the BOS would give a double BOS. Stripping it from the text leaves one,
    the same in training and prediction, for any tokenizer."""
    bos = getattr(tokenizer, "bos_token", None)
    if bos and text.startswith(bos) and adds_bos(tokenizer):
        return text[len(bos):]
    return text


def encode_prompt(tokenizer, prompt: str) -> list[int]:
    """Token ids of a rendered prompt string, exactly as TRL's GRPOTrainer
    tokenises a string prompt (``processing_class(text=...)``, special
    tokens added): what prediction reads is what training trained on."""
    return tokenizer(text=prompt)["input_ids"]


def full_answer(prefix: str | None, completion: str) -> str:
    """What the parser reads: the response prefix plus the generated text."""
    return (prefix or "") + completion


def stop_token_ids(tokenizer, prompt_cfg: dict[str, Any]) -> list[int]:
    """Token ids that end the answer besides the end-of-turn token: every
    vocabulary token whose text ends with ``prompt.stop_at`` (e.g. ``}``,
    which closes the JSON answer). Generation then stops at the answer
    instead of running on to the token limit; the same ids end GRPO rollouts
    and greedy predictions. Empty when ``stop_at`` is empty."""
    stop = prompt_cfg["stop_at"]
    if not stop:
        return []
    vocab = tokenizer.get_vocab()
    ids = sorted(i for i in vocab.values() if tokenizer.decode([i]).endswith(stop))
    if not ids:
        raise ConfigError(f"prompt.stop_at {stop!r}: no token of the vocabulary ends with it")
    return ids


def with_stop_ids(eos_ids: int | list[int] | None, stop_ids: list[int]) -> list[int]:
    """The model's end-of-sequence ids plus the stop ids, in order, no repeats."""
    base = [] if eos_ids is None else [eos_ids] if isinstance(eos_ids, int) else list(eos_ids)
    return list(dict.fromkeys(base + stop_ids))
