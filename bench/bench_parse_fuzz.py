"""Fuzz :func:`shala.parsing.parse_distribution`: it must never raise, and
its time per completion must not grow with the completion's length (docs/design.md §4).

Builds N seeded random strings from mixes of JSON fragments, braces, quotes,
numbers (also NaN, huge exponents, percentages), class keys in odd case and
spacing, valid and broken answers, nested wrappers, unicode (astral, lone
surrogates, NUL, line separators) and very long runs of one fragment (up to
1 MB), and parses each with the ChaosNLI labels. Prints the number of strings,
exceptions, total parse seconds (generation not counted), strings/s, and the
slowest case's time, length and first 80 characters (then that case re-timed,
best of 5, since one slow call may be a pause of the machine). Exits 1 if any
call raised. No timing asserts: this is a measurement.

    python bench/bench_parse_fuzz.py --n 1000000 --seed 0
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time

from shala.parsing import parse_distribution

LABELS = ["entailment", "neutral", "contradiction"]

KEYS = ['"entailment"', '"neutral"', '"contradiction"', '"Entailment "', '" NEUTRAL"', '"CONTRADICTION"',
        '"answer"', '"note"', '"x"', '""', '"entail\\u006dent"']
NUMBERS = ["0", "1", "0.5", "0.25", "-0.1", "1e400", "-1e400", "NaN", "Infinity", "-Infinity", "1/2",
           "00", "1.", ".5", "1e-5", "123456789012345678901234567890", '"50%"', '"0.3"', '" 35 % "',
           '"%"', '"nan"', '"inf"', "true", "false", "null", "[]", "{}"]
SYNTAX = ["{", "}", "[", "]", '"', ":", ",", " ", "\n", "\\", '\\"', "{{", "}}", "```json\n", "```",
          '{"answer": ', '{"probabilities": {', "}}"]
UNICODE = ["é", "中文", "\U0001F600", "\u2028", "\x00", "\ud800", "\udfff", "\ufeff", "ﬁ", "\u202e", "\t"]
WORDS = ["The answer is", "Final:", "I think", "Reasoning:", "so", "Hope this helps!", "<|im_end|>"]
RUNS = ["{", "}", "[", '"', '{"a":', '{"a":"', '{"entailment":', "x", " ", '{"a": 1}', "\\", "é{", "9"]


def _answer(rng: random.Random) -> str:
    keys = rng.sample(LABELS + ["Neutral", " contradiction ", "other"], rng.randint(1, 4))
    vals = [rng.choice([json.dumps(rng.random()), str(rng.randint(0, 100)),
                        json.dumps(f"{rng.uniform(0, 100):.1f}%"), rng.choice(NUMBERS)])
            for _ in keys]  # raw JSON tokens (NUMBERS holds some invalid ones)
    text = "{" + ", ".join(f"{json.dumps(k)}: {v}" for k, v in zip(keys, vals)) + "}"
    if rng.random() < 0.2:
        text = '{"answer": ' + text + "}"
    if rng.random() < 0.1:  # truncated answer
        text = text[:rng.randrange(len(text))]
    return text


def _soup(rng: random.Random, k: int) -> list[str]:
    pools = (KEYS, NUMBERS, SYNTAX, UNICODE, WORDS)
    weights = (3, 3, 6, 1, 1)
    return [rng.choice(rng.choices(pools, weights)[0]) for _ in range(k)]


def make_string(rng: random.Random) -> str:
    """One fuzz case."""
    r = rng.random()
    if r < 0.40:  # fragment soup
        return "".join(_soup(rng, rng.randint(0, 40)))
    if r < 0.75:  # answers in noise
        parts = _soup(rng, rng.randint(0, 10))
        for _ in range(rng.randint(1, 3)):
            parts.insert(rng.randint(0, len(parts)), _answer(rng))
        return "".join(parts)
    if r < 0.90:  # random code points
        return "".join(chr(rng.randint(0, 0x10FFFF)) for _ in range(rng.randint(0, 60)))
    # a long run of one fragment (up to 1 MB), maybe with an answer around it
    run = rng.choice(RUNS)
    length = int(10 ** rng.uniform(2, 6))
    text = run * max(1, length // len(run))
    where = rng.random()
    if where < 0.3:
        text += _answer(rng)
    elif where < 0.5:
        text = _answer(rng) + text
    elif where < 0.6:
        mid = rng.randrange(len(text) + 1)
        text = text[:mid] + _answer(rng) + text[mid:]
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="number of strings (default 1,000,000)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)

    rng = random.Random(a.seed)
    exceptions = 0
    first_exc = None
    n_ok = 0
    total = 0.0
    slowest = (-1.0, 0, "")
    clock = time.perf_counter
    for _ in range(a.n):
        text = make_string(rng)
        t0 = clock()
        try:
            res = parse_distribution(text, LABELS)
        except Exception as exc:  # noqa: BLE001 - counting is the point
            dt = clock() - t0
            exceptions += 1
            if first_exc is None:
                first_exc = f"{type(exc).__name__}: {exc} on {text[:80]!r}"
        else:
            dt = clock() - t0
            n_ok += res.ok
        total += dt
        if dt > slowest[0]:
            slowest = (dt, len(text), text)

    print(f"strings: {a.n}")
    print(f"exceptions: {exceptions}")
    if first_exc:
        print(f"first exception: {first_exc}")
    print(f"parsed ok: {n_ok}")
    print(f"total seconds (parsing only): {total:.2f}")
    print(f"strings/s: {a.n / total:,.0f}" if total > 0 else "strings/s: n/a")
    print(f"slowest: {slowest[0] * 1000:.2f} ms, length {slowest[1]:,}, first 80 chars {slowest[2][:80]!r}")
    # one slow call may be a pause of the machine; re-time the case to tell
    retimed = []
    for _ in range(5):
        t0 = clock()
        try:
            parse_distribution(slowest[2], LABELS)
        except Exception:  # noqa: BLE001, S110 - already counted above
            pass
        retimed.append(clock() - t0)
    print(f"slowest case re-timed: best of 5 {min(retimed) * 1000:.3f} ms")
    return 1 if exceptions else 0


if __name__ == "__main__":
    sys.exit(main())
