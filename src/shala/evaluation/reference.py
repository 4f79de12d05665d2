"""Reference predictors that need no model: floors and ceilings for Table 1.

Each predictor maps ``(items, train_items, source)`` to one distribution per
item. :func:`run_reference` writes them as a predictions JSONL (canonical item
plus ``"completion"``, the JSON text :func:`shala.parsing.format_distribution`
would ask a model for), so they go through exactly the same parser and
``shala evaluate`` as model output.

- ``uniform``: 1/C everywhere (the score of a model that always fails to
  parse, under the default failure policy).
- ``prior``: the class prior of the training split, the unweighted mean of
  the train items' ``dist`` (each item counts once, whatever its number of
  annotators), not pooled vote counts.
- ``constant``: the one distribution with the lowest mean JSD to the train
  items' ``dist``, for every item: the best a model that reads nothing can
  score under JSD. On a skewed dataset it is not the prior (ConvAbuse: the
  prior is 0.84/0.16, the best constant nearly all "not abusive"), so a run
  that beats ``prior`` may still read nothing (docs/design.md §6.3a).
- ``shala_constant``: the one distribution with the highest mean ``shala``
  reward on train, for every item: the answer the paper's reward favours
  in a policy that reads nothing. A run that ends there has optimised its
  reward without reading the items (docs/design.md §6.3b).
- ``majority``: one-hot on the item's own human majority; an oracle, so an
  upper bound for accuracy/F1, not a fair baseline.
- ``old_labels``: ChaosNLI only; each item's 5 original (SNLI/MNLI)
  annotator votes, normalised: how well a small crowd predicts a large one.

Adding a predictor: a function with this signature under
``@REFERENCE_PREDICTORS.register("name")``, with ``adapters={...}`` when it
exists for some dataset adapters only (:func:`applies_to`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..data.items import subsample, validate_item
from ..errors import ConfigError, InputError
from ..jsonio import write_jsonl
from ..parsing import format_distribution
from ..registry import Registry
from .evaluate import read_located

DIGITS = 6

Predictor = Callable[[Sequence[dict[str, Any]], Sequence[dict[str, Any]], Path | None], list[list[float]]]
# metadata ``adapters``: the dataset adapters a predictor exists for (the
# workflow skips it elsewhere); without it, a predictor applies to every dataset
REFERENCE_PREDICTORS: Registry[Predictor] = Registry("reference predictor")


def _n_classes(items: Sequence[dict[str, Any]]) -> int:
    return len(items[0]["labels"]) if items else 0


@REFERENCE_PREDICTORS.register("uniform")
def predict_uniform(items, train_items, source=None) -> list[list[float]]:
    """1/C for every class."""
    C = _n_classes(items)
    return [[1.0 / C] * C for _ in items]


def train_dists(name: str, items, train_items) -> np.ndarray:
    """The train items' ``dist`` as an (n, C) array, for a predictor fitted on train."""
    if not train_items:
        raise InputError(f"the {name} reference predictor needs a non-empty training split", field="split")
    if items and train_items[0]["labels"] != items[0]["labels"]:
        raise InputError("train labels differ from the evaluated split's labels", field="labels")
    return np.array([it["dist"] for it in train_items], dtype=np.float64)


@REFERENCE_PREDICTORS.register("prior")
def predict_prior(items, train_items, source=None) -> list[list[float]]:
    """Mean of the train items' ``dist`` (item-level prior), for every item."""
    prior = train_dists("prior", items, train_items).mean(axis=0)
    return [prior.tolist() for _ in items]


def best_constant(dists: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """The distribution q minimising the (``weights``-weighted) mean
    Jensen–Shannon distance to the rows of ``dists``: L-BFGS-B over softmax
    logits from three starts (the weighted mean, it sharpened toward its
    mode, uniform), the best kept. Where every weight is 0 any q scores the
    same, and the plain mean is returned."""
    from scipy.optimize import minimize
    from scipy.special import softmax

    from ..distributions import jsd

    P = np.asarray(dists, dtype=np.float64)
    w = np.ones(len(P)) if weights is None else np.asarray(weights, dtype=np.float64)
    if not w.sum() > 0:
        return P.mean(axis=0)
    mean = (w[:, None] * P).sum(axis=0) / w.sum()

    def loss(z: np.ndarray) -> float:
        return float(np.mean(w * jsd(P, np.broadcast_to(softmax(z), P.shape))))

    starts = [np.log(np.clip(mean, 1e-6, None)), np.log(np.clip(mean, 1e-6, None)) * 4, np.zeros(len(mean))]
    best = min((minimize(loss, z0, method="L-BFGS-B") for z0 in starts), key=lambda r: r.fun)
    return softmax(best.x)  # never worse than the weighted mean: the first start is that mean itself


@REFERENCE_PREDICTORS.register("constant")
def predict_constant(items, train_items, source=None) -> list[list[float]]:
    """The one answer closest in mean JSD to the train items (:func:`best_constant`), for every item."""
    q = best_constant(train_dists("constant", items, train_items))
    return [q.tolist() for _ in items]


@REFERENCE_PREDICTORS.register("shala_constant")
def predict_shala_constant(items, train_items, source=None) -> list[list[float]]:
    """The one answer with the highest mean ``shala`` reward H~(p)·(1 − JSD)
    on train, for every item: where a policy that reads nothing is pushed by
    the paper's reward. Unanimous items (H~ = 0) pay nothing for any answer,
    so on a dataset with many of them it lies far from ``constant``, toward
    uniform, and scores worse than the prior under JSD (docs/design.md §6.3b)."""
    P = train_dists("shala_constant", items, train_items)
    q = best_constant(P, np.array([it["entropy_norm"] for it in train_items], dtype=np.float64))
    return [q.tolist() for _ in items]


@REFERENCE_PREDICTORS.register("majority")
def predict_majority(items, train_items, source=None) -> list[list[float]]:
    """One-hot on the human argmax (ties -> first class, like ``majority``)."""
    C = _n_classes(items)
    return [np.eye(C)[int(np.argmax(it["dist"]))].tolist() for it in items]


@REFERENCE_PREDICTORS.register("old_labels", adapters={"chaosnli"})
def predict_old_labels(items, train_items, source: Path | None = None) -> list[list[float]]:
    """ChaosNLI's 5 original votes per item, normalised (needs the source dir)."""
    from ..data.adapters import chaosnli  # lazy: only this predictor reads raw files

    for it in items:
        if it["dataset"] != chaosnli.NAME:
            raise InputError(f"old_labels exists only for ChaosNLI, not {it['dataset']!r}", field="dataset")
        if it["labels"] != chaosnli.LABELS:
            raise InputError(f"expected labels {chaosnli.LABELS}", field="labels")
    if source is None:
        raise ConfigError("the old_labels reference predictor needs the ChaosNLI source directory (--source)")
    counts = chaosnli.old_label_counts(Path(source))
    out = []
    for it in items:
        if it["id"] not in counts:
            raise InputError(f"item {it['id']!r} has no old_labels in {source}", field="id")
        c = np.asarray(counts[it["id"]], dtype=np.float64)
        out.append((c / c.sum()).tolist())
    return out


def applies_to(name: str, adapter: str) -> bool:
    """Whether reference predictor `name` can run on a dataset of this adapter."""
    only = REFERENCE_PREDICTORS.meta(name).get("adapters")
    return only is None or adapter in only


def _read_items(path: Path) -> list[dict[str, Any]]:
    located = read_located(path)
    for line, item in located:
        validate_item(item, path=str(path), line=line)
    return [item for _, item in located]


def prediction_rows(items: Sequence[dict[str, Any]], dists: Sequence[Sequence[float]]) -> list[dict[str, Any]]:
    """Canonical item + ``completion`` (the distribution as JSON, 6 digits)."""
    rows = []
    for it, d in zip(items, dists, strict=True):
        if len(d) != len(it["labels"]) or not all(math.isfinite(x) and x >= 0 for x in d) \
                or abs(sum(d) - 1.0) > 1e-9:
            raise ValueError(f"predictor returned an invalid distribution {d!r} for {it['id']!r}")
        rows.append({**it, "completion": format_distribution(it["labels"], d, digits=DIGITS)})
    return rows


def run_reference(name: str, data_dir: Path, split: str, out: Path, source: Path | None = None,
                  limit: int | None = None) -> int:
    """Write ``out`` (predictions JSONL) for ``data_dir/{split}.jsonl``;
    ``data_dir/train.jsonl`` supplies the prior. ``limit`` keeps a seeded
    subset of N items, the same as ``shala predict --limit``, so that a demo compares models
    and references on the same items. Returns the number of rows."""
    predictor = REFERENCE_PREDICTORS[name]  # an unknown name: ConfigError, before any file is read
    data_dir = Path(data_dir)
    items = _read_items(data_dir / f"{split}.jsonl")
    items = subsample(items, limit)
    train = _read_items(data_dir / "train.jsonl")
    rows = prediction_rows(items, predictor(items, train, source))
    write_jsonl(out, rows)
    return len(rows)
