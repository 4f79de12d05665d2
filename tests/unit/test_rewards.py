"""Rewards (docs/design.md §5) on fixed values and random Dirichlet samples."""

import json

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon

from shala.data.items import normalised_entropy
from shala.train.rewards import REWARDS, completion_text, get_reward

LABELS = ["entailment", "neutral", "contradiction"]


def _c(dist):
    return json.dumps(dict(zip(LABELS, dist)))


def test_fixed_values():
    p = [0.2, 0.8, 0.0]
    q = [0.6, 0.4, 0.0]
    cols = dict(labels=[LABELS], dist=[p], entropy_norm=[normalised_entropy(p)])
    comp = [_c(q)]
    assert REWARDS["mls"](None, comp, **cols) == pytest.approx([0.4])
    assert REWARDS["shala_no_ambi"](None, comp, **cols) == pytest.approx([1 - 0.352862], abs=1e-6)
    h = -(0.2 * np.log(0.2) + 0.8 * np.log(0.8)) / np.log(3)
    assert REWARDS["shala"](None, comp, **cols) == pytest.approx([h * (1 - 0.352862)], abs=1e-6)


def test_parse_failure_gives_zero_and_conversational_format():
    cols = dict(labels=[LABELS] * 2, dist=[[0.5, 0.5, 0.0]] * 2, entropy_norm=[0.63] * 2)
    comps = [[{"role": "assistant", "content": "I cannot say"}],
             [{"role": "assistant", "content": _c([0.5, 0.5, 0.0])}]]
    for name, fn in REWARDS.items():
        out = fn(prompts=["x", "x"], completions=comps, **cols)
        assert out[0] == 0.0, name
        assert out[1] > 0.0, name
    assert REWARDS["shala_no_ambi"](None, comps, **cols)[1] == pytest.approx(1.0)


def test_random_dirichlet_against_scipy():
    rng = np.random.default_rng(0)
    P = rng.dirichlet(np.ones(3), size=200)
    Q = rng.dirichlet(np.ones(3) * 0.5, size=200)
    cols = dict(labels=[LABELS] * 200, dist=P.tolist(), entropy_norm=[normalised_entropy(p) for p in P])
    comps = [json.dumps(dict(zip(LABELS, q.tolist()))) for q in Q]
    ref = np.array([1 - jensenshannon(q, p, base=2) for p, q in zip(P, Q)])
    na = np.array(REWARDS["shala_no_ambi"](None, comps, **cols))
    sh = np.array(REWARDS["shala"](None, comps, **cols))
    ml = np.array(REWARDS["mls"](None, comps, **cols))
    np.testing.assert_allclose(na, ref, atol=1e-9)
    np.testing.assert_allclose(sh, ref * np.array(cols["entropy_norm"]), atol=1e-9)
    np.testing.assert_allclose(ml, Q[np.arange(200), P.argmax(1)], atol=1e-9)
    for r in (na, sh, ml):
        assert np.all((r >= 0) & (r <= 1))


def test_completion_text_formats():
    assert completion_text("abc") == "abc"
    assert completion_text([{"role": "assistant", "content": [{"type": "text", "text": "a"}, {"text": "b"}]}]) == "ab"
    assert completion_text(None) == ""


def test_unknown_reward():
    with pytest.raises(Exception, match="unknown reward 'nope'"):
        get_reward("nope")
