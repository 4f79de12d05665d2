"""Constrained decoding (docs/design.md §4): the JSON skeleton is forced, numbers are free."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer

from shala.config import fill_defaults
from shala.errors import ConfigError
from shala.model.constrained import JSONSkeleton, constraint_settings, skeleton_processor
from shala.parsing import parse_distribution

LABELS = ["entailment", "neutral", "contradiction"]


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    return AutoTokenizer.from_pretrained(str(tiny_model_dir))


def _walk(tok, sk, rng, steps=40):
    ids = []
    for _ in range(steps):
        allowed = sk.allowed(ids)
        nxt = allowed[int(rng.integers(len(allowed)))]
        ids.append(nxt)
        if nxt == tok.eos_token_id:
            break
    return ids


def test_every_constrained_answer_is_well_formed(tok):
    import numpy as np

    sk = JSONSkeleton(tok, LABELS, max_digits=3)
    rng = np.random.default_rng(0)
    n_parsed = 0
    for _ in range(300):
        ids = _walk(tok, sk, rng)
        assert ids[-1] == tok.eos_token_id
        text = '{"entailment": ' + tok.decode(ids[:-1])
        numbers = [v.split(":")[-1].strip() for v in text.strip("{}").split(",")]
        assert len(numbers) == 3 and all(n.isdigit() and len(n) <= 3 for n in numbers), text
        assert all(n == "0" or not n.startswith("0") for n in numbers), text  # valid JSON numbers
        res = parse_distribution(text, LABELS)
        # only an all-zero answer fails to parse
        assert res.ok or all(int(n) == 0 for n in numbers), text
        n_parsed += res.ok
    assert n_parsed > 250


def test_processor_masks_all_but_the_allowed_tokens(tok):
    proc = skeleton_processor(tok, LABELS)()
    prompt = torch.tensor([[5, 6, 7]])
    scores = torch.zeros(1, len(tok))
    out = proc(prompt, scores)
    allowed = torch.isfinite(out[0]).nonzero().flatten().tolist()
    assert sorted(tok.decode([i]) for i in allowed) == list("0123456789")
    comma = JSONSkeleton(tok, LABELS).pieces[1][0]
    digit = tok.convert_tokens_to_ids("4")
    out = proc(torch.tensor([[5, 6, 7, digit]]), torch.zeros(1, len(tok)))
    assert comma in torch.isfinite(out[0]).nonzero().flatten().tolist()


def test_settings_need_the_auto_prefix_and_whole_numbers():
    def prompt(**fields):  # a prompt block, the schema's defaults filled as the config's are
        return fill_defaults(fields, at="datasets.x.prompt")

    assert constraint_settings(prompt(), LABELS) is None
    s = constraint_settings(prompt(constrained=True, response_prefix="auto", answer_scale=100), LABELS)
    assert s["skeleton"] == '{"entailment": N, "neutral": N, "contradiction": N}'
    with pytest.raises(ConfigError, match="response_prefix"):
        constraint_settings(prompt(constrained=True), LABELS)
    with pytest.raises(ConfigError, match="answer_scale"):
        constraint_settings(prompt(constrained=True, response_prefix="auto"), LABELS)


def _answer_ids(tok, sk, numbers):
    """The token ids of a constrained answer with these numbers (as digit tokens)."""
    digit = {tok.decode([i]): i for i in sk.digit_ids}
    ids = []
    for n, piece in zip(numbers, [p for p in sk.pieces if p is not None]):
        ids += [digit[c] for c in str(n)] + piece
    return ids + [sk.eos_id]


def test_forced_positions_are_the_skeleton_tokens_without_choice(tok):
    from shala.model.constrained import forced_positions

    sk = JSONSkeleton(tok, LABELS, max_digits=3)
    literals = [p for p in sk.pieces if p is not None]
    ids = _answer_ids(tok, sk, [50, 30, 20])
    forced = forced_positions(sk, [ids])[0]
    # after a 1-2 digit number the literal's first token competes with more
    # digits; its other tokens, and the end of turn after "}", are forced
    assert sum(forced) == sum(len(p) - 1 for p in literals) + 1
    assert forced[-1] and not any(forced[:2])  # eos forced; "5", "0" were choices
    # a 3-digit number, and a 0 (no leading zero), end by force: the next
    # literal's first token has no alternative there (three times here)
    forced100 = forced_positions(sk, [_answer_ids(tok, sk, [100, 0, 0])])[0]
    assert sum(forced100) == sum(forced) + 3


def test_mask_forced_tokens_sets_tool_mask_and_recounts(tok):
    from types import SimpleNamespace

    from shala.model.constrained import forced_positions, mask_forced_tokens

    sk = JSONSkeleton(tok, LABELS, max_digits=3)
    rows = [_answer_ids(tok, sk, [50, 30, 20]), _answer_ids(tok, sk, [7, 3, 90])]
    width = max(map(len, rows)) + 2
    ids = torch.tensor([r + [sk.eos_id] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    trainer = SimpleNamespace(accelerator=SimpleNamespace(gather=lambda t: t.reshape(1)),
                              _generate_and_score_completions=lambda inputs: {
                                  "completion_ids": ids, "completion_mask": mask, "num_items_in_batch": mask.sum()})
    counts = mask_forced_tokens(trainer, tok, LABELS)
    out = trainer._generate_and_score_completions([])
    assert torch.equal(out["completion_mask"], mask)  # attention is untouched
    loss_mask = out["completion_mask"] * out["tool_mask"]
    n_forced = sum(sum(f) for f in forced_positions(sk, rows))
    assert int(loss_mask.sum()) == int(mask.sum()) - n_forced == counts["free_tokens"]
    assert counts["forced_tokens"] == n_forced and int(out["num_items_in_batch"]) == counts["free_tokens"]
