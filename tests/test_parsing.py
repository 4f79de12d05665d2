"""Parser (SPEC §4): never raises, returns a valid distribution or None."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shala.parsing import format_distribution, parse_distribution

LABELS = ["entailment", "neutral", "contradiction"]


def test_plain_object():
    r = parse_distribution('{"entailment": 0.2, "neutral": 0.5, "contradiction": 0.3}', LABELS)
    np.testing.assert_allclose(r.dist, [0.2, 0.5, 0.3])
    assert r.sum_error == pytest.approx(0.0, abs=1e-12)


def test_last_object_with_class_key_wins_and_ignores_unrelated_objects():
    text = ('First guess {"entailment": 1, "neutral": 0, "contradiction": 0}. '
            'Final: {"Entailment ": 0.1, " NEUTRAL": 0.6, "contradiction": 0.3} {"note": 1}')
    r = parse_distribution(text, LABELS)
    np.testing.assert_allclose(r.dist, [0.1, 0.6, 0.3])


def test_strings_percentages_missing_and_renormalised():
    r = parse_distribution('{"entailment": "50%", "neutral": "0.25"}', LABELS)
    np.testing.assert_allclose(r.dist, [0.5 / 0.75, 0.25 / 0.75, 0.0])
    assert r.sum_error == pytest.approx(0.25)


def test_raw_sum_error_reported():
    r = parse_distribution('{"entailment": 60, "neutral": 30, "contradiction": 10}', LABELS)
    np.testing.assert_allclose(r.dist, [0.6, 0.3, 0.1])
    assert r.sum_error == pytest.approx(99.0)


def test_nested_answer_and_code_fence():
    text = '```json\n{"answer": {"entailment": 0.7, "neutral": 0.2, "contradiction": 0.1}}\n```'
    np.testing.assert_allclose(parse_distribution(text, LABELS).dist, [0.7, 0.2, 0.1])


@pytest.mark.parametrize("text,why", [
    ("no json here", "no JSON"),
    ('{"entailment": -0.1, "neutral": 1.1}', "negative"),
    ('{"entailment": NaN, "neutral": 1}', "not finite"),
    ('{"entailment": Infinity}', "not finite"),
    ('{"entailment": 0, "neutral": 0, "contradiction": 0}', "zero"),
    ('{"entailment": "high", "neutral": 0.5}', "not a number"),
    ('{"entailment": true, "neutral": 0.5}', "not a number"),
    ('{"foo": 0.5, "bar": 0.5}', "no JSON"),
    ('{"entailment": 0.5, "neutral": 0.5', "no JSON"),
    ('{"entailment": 1e400}', "not finite"),
])
def test_failures(text, why):
    r = parse_distribution(text, LABELS)
    assert r.dist is None and r.sum_error is None
    assert why.lower() in r.error.lower()


def test_non_string_input():
    assert parse_distribution(None, LABELS).dist is None
    assert parse_distribution(b'{"neutral": 1}', LABELS).dist is None


def test_eval_is_never_used():
    # A Python expression that eval would compute must not be accepted.
    assert parse_distribution('{"entailment": 1/2, "neutral": 1/2}', LABELS).dist is None


@settings(max_examples=400, deadline=None)
@given(st.text())
def test_never_raises_on_any_text(text):
    r = parse_distribution(text, LABELS)
    assert r.dist is None or (r.dist.shape == (3,) and abs(r.dist.sum() - 1) < 1e-9 and (r.dist >= 0).all())


json_values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.integers(-10, 10**6),
    st.text(max_size=6), st.booleans(), st.none(),
    st.floats(0, 100).map(lambda x: f"{x}%"),
)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.sampled_from(LABELS + ["Neutral", " contradiction ", "other"]), json_values),
       st.text(max_size=20), st.text(max_size=20))
def test_objects_parse_to_valid_distribution_or_none(obj, before, after):
    import json
    text = before + json.dumps(obj) + after
    r = parse_distribution(text, LABELS)
    if r.dist is not None:
        assert r.dist.shape == (3,)
        assert np.all(r.dist >= 0) and math.isclose(r.dist.sum(), 1.0, rel_tol=1e-9)
        assert r.sum_error >= 0


def test_format_distribution_round_trips_and_sums_to_one():
    text = format_distribution(LABELS, [1 / 3, 1 / 3, 1 / 3])
    r = parse_distribution(text, LABELS)
    assert r.sum_error == pytest.approx(0.0, abs=1e-9)
    assert list(__import__("json").loads(text)) == LABELS
