"""A known-answer control: synthetic items whose text states the annotators' distribution.

Why: when GRPO training seems not to learn, the first question is whether
the setup (prompt, prefix, constraint, reward, regime) *can* learn at all.
On these items it can: each text says how the annotators voted, e.g.

    A jar holds 7 red, 2 green and 1 blue marbles. 10 people each take one
    marble and name its colour.

and the item's counts are exactly those (7/2/1 of 10 annotators). A model
that reads the numbers can match every item's distribution; a constant
answer cannot (the per-item distributions span one-hot to near-uniform, and
the label prior is neither). It is a positive control for anyone's setup:
run it first; a trained method that cannot beat ``ref_prior`` here has
learned nothing from the items. Sized for a 135M model (SmolLM2) in ~40 CPU
GRPO steps: three colours, digits, a fixed colour order, a short text.

No files: items are generated from ``options.seed`` alone (numpy PCG64, the
same on every machine), so ``source`` is ignored and ``shala fetch-data``
writes only a MANIFEST.json (route ``synthetic``, see :mod:`shala.data.download`).
The generation seed is independent of ``split_seed``: changing the split
seed re-splits the same items.

Options (``datasets.X.options``; every one optional):

``n_items`` (default 600)
    number of items.
``n_annotators`` (default 10, at most 100)
    annotators per item, also the number of marbles: the counts are the
    marbles of each colour, so the text states them exactly.
``labels`` (default ``[red, green, blue]``, 2 to 7 names)
    the classes (label order), listed in the text in this order.
``template`` (default ``jar``)
    ``jar``: the sentence above (container drawn from ``containers``);
    ``votes``: the counts stated directly, "10 people named a colour:
    7 red, 2 green, 1 blue."; or a custom format string with the fields
    ``{n}`` (annotators), ``{counts}`` ("7 red, 2 green and 1 blue") and
    ``{container}``.
``containers`` (default ``[jar, bag, box, bowl]``)
    the container named in each ``jar`` item, drawn per item (surface
    variety that does not change the answer).
``order`` (``fixed`` | ``shuffled``; default ``fixed``)
    the order of the colours in the text: label order (easiest to read), or
    a seeded shuffle per item (the model must bind each number to its name).
``ambiguity_mix`` (default ``[1, 2, 2]``)
    relative frequency of low / medium / high items (the ``entropy`` levels
    of :mod:`shala.data.items`). Low is rarer by default: a one-hot item has
    H~ = 0, so the ``shala`` reward is 0 on it and it teaches ``shala``
    nothing.
``majority_weights`` (default: evenly spaced from 1.2 to 0.8 over the labels)
    how often each label takes an item's largest share; the rest of the
    shares go to the other labels in random order. The default tilts the
    label prior slightly off uniform (about 0.38 / 0.32 / 0.31), so
    ``ref_prior`` and ``ref_uniform`` differ.
``seed`` (default 0)
    the generation seed: the same options and seed give the same items.

Generation: per item, draw an ambiguity level by ``ambiguity_mix``, then a
*shape* (the counts sorted high to low, e.g. 7/2/1) uniformly among the
shapes of ``n_annotators`` over the labels at that level, then the label
holding the top share by ``majority_weights``, then the order of the rest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ConfigError
from ..items import ENTROPY_LEVELS, ambiguity_by_entropy, make_item, normalised_entropy

NAME = "control"
AMBIGUITY = "entropy"
# No raw files: fetch-data writes a MANIFEST only and load() ignores `source`.
SYNTHETIC = True
TEXT_FIELDS = ("text",)  # the inputs of every item: what prompt.target may name
TEMPLATES = {
    "jar": "A {container} holds {counts} marbles. {n} people each take one marble and name its colour.",
    "votes": "{n} people named a colour: {counts}.",
}
DEFAULTS: dict[str, Any] = {
    "n_items": 600, "n_annotators": 10, "labels": ["red", "green", "blue"], "template": "jar",
    "containers": ["jar", "bag", "box", "bowl"], "order": "fixed", "ambiguity_mix": [1, 2, 2],
    "majority_weights": None, "seed": 0,
}
# 7 labels x 100 annotators: 0.6M shapes, under a second to enumerate
MAX_ANNOTATORS, MAX_LABELS = 100, 7


def _fail(msg: str) -> ConfigError:
    return ConfigError(f"control adapter: {msg}")


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _weights(x: Any, n: int, name: str) -> list[float]:
    if (not isinstance(x, list) or len(x) != n
            or not all(isinstance(w, (int, float)) and not isinstance(w, bool) and w >= 0 for w in x)
            or sum(x) <= 0):
        raise _fail(f"option {name!r} must be {n} non-negative numbers, not all 0 (got {x!r})")
    return [float(w) for w in x]


def check_options(options: dict[str, Any] | None) -> dict[str, Any]:
    """The options with defaults filled in, checked; unknown keys are an error.

    ``shala fetch-data`` records this resolved form in MANIFEST.json.
    """
    opts = {**DEFAULTS, **(options or {})}
    unknown = sorted(set(opts) - set(DEFAULTS))
    if unknown:
        raise _fail(f"unknown option(s) {unknown}; known: {sorted(DEFAULTS)}")
    for key, lo, hi in (("n_items", 1, None), ("n_annotators", 1, MAX_ANNOTATORS), ("seed", 0, None)):
        v = opts[key]
        if not _is_int(v) or v < lo or (hi is not None and v > hi):
            raise _fail(f"option {key!r} must be an integer in [{lo}, {hi or 'inf'}] (got {v!r})")
    labels = opts["labels"]
    if (not isinstance(labels, list) or not 2 <= len(labels) <= MAX_LABELS
            or not all(isinstance(s, str) and s.strip() for s in labels) or len(set(labels)) != len(labels)):
        raise _fail(f"option 'labels' must be 2 to {MAX_LABELS} distinct names (got {labels!r})")
    tpl = opts["template"]
    if not isinstance(tpl, str) or (tpl not in TEMPLATES and "{counts}" not in tpl):
        raise _fail(f"option 'template' must be one of {sorted(TEMPLATES)} or a format string "
                    f"with {{counts}} (got {tpl!r})")
    try:
        _text(TEMPLATES.get(tpl, tpl), 1, "x", "jar")
    except (KeyError, IndexError, ValueError) as exc:
        raise _fail(f"option 'template': bad format string ({exc}); fields: {{n}}, {{counts}}, "
                    "{container}") from None
    cont = opts["containers"]
    if not isinstance(cont, list) or not cont or not all(isinstance(c, str) and c for c in cont):
        raise _fail(f"option 'containers' must be a non-empty list of names (got {cont!r})")
    if opts["order"] not in ("fixed", "shuffled"):
        raise _fail(f"option 'order' must be fixed or shuffled (got {opts['order']!r})")
    opts["ambiguity_mix"] = _weights(opts["ambiguity_mix"], len(ENTROPY_LEVELS), "ambiguity_mix")
    k = len(labels)
    mw = opts["majority_weights"]
    opts["majority_weights"] = (_weights(mw, k, "majority_weights") if mw is not None
                                else [round(1.2 - 0.4 * i / (k - 1), 6) for i in range(k)])
    return opts


def shapes(n: int, k: int) -> list[tuple[int, ...]]:
    """All ways to split ``n`` votes over ``k`` classes, sorted high to low
    (``(7, 2, 1)``; zeros allowed), in lexicographic descending order."""
    out: list[tuple[int, ...]] = []

    def rec(prefix: tuple[int, ...], left: int, cap: int) -> None:
        if len(prefix) == k - 1:
            if left <= cap:
                out.append(prefix + (left,))
            return
        for v in range(min(left, cap), -1, -1):
            if v * (k - len(prefix)) < left:  # the rest cannot exceed v each
                break
            rec(prefix + (v,), left - v, v)

    rec((), n, n)
    return out


def shapes_by_level(n: int, k: int) -> dict[str, list[tuple[int, ...]]]:
    """The shapes of :func:`shapes`, grouped by entropy ambiguity level."""
    groups: dict[str, list[tuple[int, ...]]] = {lv: [] for lv in ENTROPY_LEVELS}
    for s in shapes(n, k):
        groups[ambiguity_by_entropy(normalised_entropy([c / n for c in s]))].append(s)
    return groups


def counts_phrase(pairs: list[tuple[int, str]]) -> str:
    """``[(7, red), (2, green), (1, blue)]`` -> ``7 red, 2 green and 1 blue``."""
    parts = [f"{c} {lab}" for c, lab in pairs]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _text(template: str, n: int, counts: str, container: str) -> str:
    return template.format(n=n, counts=counts, container=container)


def load(source: Path | None = None, options: dict[str, Any] | None = None,
         seed: int = 0) -> list[dict[str, Any]]:
    """Generate the items; ``source`` and ``seed`` (the split seed) are not read."""
    opts = check_options(options)
    labels, n, k = opts["labels"], opts["n_annotators"], len(opts["labels"])
    groups = shapes_by_level(n, k)
    mix = np.array([w if groups[lv] else 0.0 for lv, w in zip(ENTROPY_LEVELS, opts["ambiguity_mix"])])
    if mix.sum() <= 0:
        raise _fail(f"no shape of {n} annotators over {k} labels has an ambiguity level that "
                    f"ambiguity_mix {opts['ambiguity_mix']} asks for")
    mix /= mix.sum()
    maj = np.array(opts["majority_weights"]) / sum(opts["majority_weights"])
    template = TEMPLATES.get(opts["template"], opts["template"])
    rng = np.random.default_rng(opts["seed"])
    width = len(str(opts["n_items"] - 1))
    items = []
    for i in range(opts["n_items"]):
        level = ENTROPY_LEVELS[int(rng.choice(len(ENTROPY_LEVELS), p=mix))]
        shape = groups[level][int(rng.integers(len(groups[level])))]
        top = int(rng.choice(k, p=maj))
        rest = [j for j in range(k) if j != top]
        rest = [rest[j] for j in rng.permutation(len(rest))]
        counts = [0] * k
        for c, j in zip(shape, [top] + rest):
            counts[j] = c
        order = list(range(k)) if opts["order"] == "fixed" else [int(j) for j in rng.permutation(k)]
        container = opts["containers"][int(rng.integers(len(opts["containers"])))]
        text = _text(template, n, counts_phrase([(counts[j], labels[j]) for j in order]), container)
        items.append(make_item(
            id=f"control-{i:0{width}d}", dataset=NAME, subset=None, inputs={"text": text},
            labels=labels, counts=counts, ambiguity=AMBIGUITY, n_annotators=n,
        ))
    return items
