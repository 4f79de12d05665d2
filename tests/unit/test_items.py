"""Canonical items, ambiguity levels, seeded splits (docs/design.md §3)."""

import math

import numpy as np
import pytest

from shala.data.items import (
    ambiguity_by_active,
    ambiguity_by_entropy,
    assign_splits,
    compute_stats,
    normalised_entropy,
    split_sizes,
)
from shala.errors import InputError

LABELS = ["a", "b", "c"]


@pytest.fixture
def item(item_factory):
    """Item ``x{i}`` of dataset "d" with these counts."""
    def make(counts, i=0, subset=None):
        return item_factory(counts, LABELS, id=f"x{i}", dataset="d", subset=subset, inputs={"text": "t"})
    return make


def test_make_item_fields(item):
    it = item([30, 70, 0])
    assert it["dist"] == [0.3, 0.7, 0.0]
    assert it["majority"] == "b"
    assert it["n_annotators"] == 100
    assert it["n_active"] == 2
    h = -(0.3 * math.log(0.3) + 0.7 * math.log(0.7)) / math.log(3)
    assert it["entropy_norm"] == pytest.approx(h)
    assert it["ambiguity"] == "medium"  # 0.5558...


def test_majority_tie_goes_to_first_class(item):
    assert item([0, 5, 5])["majority"] == "b"
    assert item([4, 4, 4])["majority"] == "a"


def test_entropy_edges():
    assert normalised_entropy([1.0, 0.0, 0.0]) == 0.0
    assert normalised_entropy([1 / 3] * 3) == pytest.approx(1.0)
    assert ambiguity_by_entropy(0.3299) == "low"
    assert ambiguity_by_entropy(0.33) == "medium"
    assert ambiguity_by_entropy(0.6599) == "medium"
    assert ambiguity_by_entropy(0.66) == "high"
    assert ambiguity_by_entropy(1.0) == "high"
    assert [ambiguity_by_active(n) for n in (1, 2, 3, 4, 7)] == ["1", "2", "3", "4+", "4+"]


def test_zero_votes_and_bad_counts_are_errors(item):
    with pytest.raises(InputError, match="zero votes"):
        item([0, 0, 0])
    with pytest.raises(InputError, match="field 'counts'"):
        item([1, -1, 3])
    with pytest.raises(InputError, match="2 counts for 3 labels"):
        item([1, 2])


@pytest.mark.parametrize("n,ft,fv,expected", [
    (3113, 0.65, 0.15, (2023, 467, 623)),
    (100, 0.7, 0.15, (70, 15, 15)),
    (10, 0.65, 0.15, (6, 2, 2)),   # round(6.5) = 6 (banker's rounding), round(1.5) = 2
    (5, 0.6, 0.2, (3, 1, 1)),
])
def test_split_sizes(n, ft, fv, expected):
    assert split_sizes(n, ft, fv) == expected


def test_assign_splits_seeded_and_complete(item):
    items = [item([1, 2, 3], i) for i in range(50)]
    a = [it["split"] for it in assign_splits([dict(it) for it in items], 0.6, 0.2, seed=0)]
    b = [it["split"] for it in assign_splits([dict(it) for it in items], 0.6, 0.2, seed=0)]
    c = [it["split"] for it in assign_splits([dict(it) for it in items], 0.6, 0.2, seed=1)]
    assert a == b and a != c
    assert (a.count("train"), a.count("validation"), a.count("test")) == (30, 10, 10)
    # The permutation is numpy's PCG64: pin the first assignments so a change
    # of RNG (which would change every published split) fails loudly.
    perm = np.random.default_rng(0).permutation(50)
    assert a[perm[0]] == "train" and a[perm[-1]] == "test"


def test_stats_counts(item):
    items = [item([9, 1, 0], 0, subset="s1"), item([1, 9, 0], 1, subset="s2"), item([3, 3, 4], 2, subset="s2")]
    for it, s in zip(items, ["train", "validation", "test"]):
        it["split"] = s
    st = compute_stats("d", items, ("low", "medium", "high"))
    assert st["majority_counts"] == {"a": 1, "b": 1, "c": 1}
    assert st["ambiguity_counts"] == {"low": 2, "medium": 0, "high": 1}  # H~([.9,.1,0]) = 0.296
    assert st["split_counts"] == {"train": 1, "validation": 1, "test": 1}
    assert st["subsets"]["s2"] == {"n_items": 2, "majority_counts": {"a": 0, "b": 1, "c": 1},
                                   "ambiguity_counts": {"low": 1, "medium": 0, "high": 1}}
