"""Parser (docs/design.md §4): never raises, returns a valid distribution or None."""

import json
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


# --- bounded work on long or adversarial completions -------------------------

ANSWER = '{"entailment": 0.2, "neutral": 0.5, "contradiction": 0.3}'


@pytest.fixture
def decode_calls(monkeypatch):
    """Count ``raw_decode`` calls, the parser's unit of work."""
    import json

    from shala import parsing

    calls = []

    class Counting(json.JSONDecoder):
        def raw_decode(self, s, idx=0):
            calls.append(idx)
            return super().raw_decode(s, idx)

    monkeypatch.setattr(parsing, "_DECODER", Counting())
    return calls


@pytest.mark.parametrize("text", [
    "{" * 200_000,
    "{" * 200_000 + "}",
    '{"a":' * 100_000 + "}",
    '{"a":"' * 100_000 + "}",
    '{"a":' + "[" * 200_000 + "}",
    '{"a": 1}' * 100_000,
])
def test_adversarial_input_fails_with_bounded_work(text, decode_calls):
    from shala.parsing import MAX_OBJECT_STARTS

    r = parse_distribution(text, LABELS)
    assert r.dist is None and r.error
    assert len(decode_calls) <= MAX_OBJECT_STARTS


@pytest.mark.parametrize("filler", ["x", "{", "}", '{"a": 1} ', "\u00e9{\"", " "])
def test_answer_at_end_of_1mb_is_found_with_bounded_work(filler, decode_calls):
    from shala.parsing import MAX_OBJECT_STARTS

    text = filler * (1_000_000 // len(filler)) + ANSWER
    r = parse_distribution(text, LABELS)
    np.testing.assert_allclose(r.dist, [0.2, 0.5, 0.3])
    assert len(decode_calls) <= MAX_OBJECT_STARTS


def test_answer_followed_by_long_text_without_braces_is_found(decode_calls):
    r = parse_distribution("Reasoning... " + ANSWER + " and some rambling." * 50_000, LABELS)
    np.testing.assert_allclose(r.dist, [0.2, 0.5, 0.3])
    assert len(decode_calls) == 1


def test_answer_before_a_window_of_text_is_out_of_reach():
    # Documented limits: only the last MAX_SCAN_CHARS up to the last '}' are
    # read, and only the last MAX_OBJECT_STARTS '{' in them are tried.
    from shala.parsing import MAX_OBJECT_STARTS, MAX_SCAN_CHARS

    assert parse_distribution(ANSWER + " " * MAX_SCAN_CHARS + "{}", LABELS).dist is None
    assert parse_distribution(ANSWER + " " * (MAX_SCAN_CHARS - 100) + "{}", LABELS).ok
    assert parse_distribution(ANSWER + "{" * MAX_OBJECT_STARTS + "}", LABELS).dist is None
    assert parse_distribution(ANSWER + "{" * (MAX_OBJECT_STARTS - 2) + "}", LABELS).ok


def _unbounded_objects(text):
    """The previous parser's scan (every '{' of the whole text), as a reference."""
    import json

    dec, found, i = json.JSONDecoder(), [], 0
    while (i := text.find("{", i)) >= 0:
        try:
            obj, end = dec.raw_decode(text, i)
        except (json.JSONDecodeError, RecursionError, ValueError):
            i += 1
            continue
        level = [obj] if isinstance(obj, dict) else []
        while level:  # breadth first, one nesting level at a time
            found.extend(level)
            level = [v for o in level for v in o.values() if isinstance(v, dict)]
        i = end
    return found


_fragments = st.sampled_from(['{', '}', '"', ':', ',', ' ', '[', ']', '0.5', '"50%"', '"entailment"',
                              '"neutral"', '"x"', '{"answer": ', ANSWER, '{"neutral": 1}', 'é', '\\'])


@settings(max_examples=400, deadline=None)
@given(st.lists(_fragments, max_size=60))
def test_short_text_scan_equals_the_unbounded_scan(parts):
    from shala.parsing import _json_objects

    text = "".join(parts)
    assert _json_objects(text) == _unbounded_objects(text)


def test_format_percent_sums_to_100_and_parses_back():
    from shala.parsing import format_percent

    rng = np.random.default_rng(0)
    for _ in range(200):
        d = rng.dirichlet(np.ones(3))
        text = format_percent(LABELS, d)
        vals = list(json.loads(text).values())
        assert sum(vals) == 100 and all(isinstance(v, int) for v in vals)
        assert np.abs(np.array(vals) / 100 - d).max() < 0.01 + 1e-9
        assert np.allclose(parse_distribution(text, LABELS).dist, np.array(vals) / 100)
    assert format_percent(LABELS, [1 / 3, 1 / 3, 1 / 3]) == '{"entailment": 34, "neutral": 33, "contradiction": 33}'
