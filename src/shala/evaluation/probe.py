"""Capacity probe: what the frozen base model's representation of a prompt
can support, as a soft-label linear model (issue 29).

Why: a trained run that answers every item alike (pred_spread near 0) may
have failed to learn, or the model may hold nothing about the items that a
linear read-out could use. The probe tells the two apart. It reads the
hidden states of the *same* model input that prediction and GRPO see
(:func:`shala.prompts.render_prompt_string`, response prefix included), with
no generation, and fits a multinomial logistic regression on the train
split's label distributions. Where the probe cannot beat ``ref_prior``, a
trained run that does not beat it either is a capacity result.

Choices (measured; docs/results/probe/README.md):

- features: the middle layer's hidden states (``hidden_states[n_layers // 2]``,
  layer 15 of SmolLM2-135M's 30) averaged over the prompt's tokens,
  standardised on the train items. On ChaosNLI and the control this beat
  the final layer and the last token at every train size tried, and the
  forward stops there, which halves its cost; ``layer`` and
  ``pooling='last'`` are options;
- soft labels by the standard expansion (:func:`expand_soft_labels`): each
  item once per class with ``sample_weight`` = its probability, so the
  weighted log-loss *is* the soft cross-entropy (scikit-learn's
  ``LogisticRegression``, lbfgs, L2 on the weights, not the intercept);
- the inverse regularisation C from :data:`C_GRID`, chosen by mean JSD on a
  seeded subset of the validation split (ties: the stronger penalty);
- train capped at a seeded subset of ``max_train`` items, so a demo dataset
  takes a minute or two on one CPU core.

Output: a predictions JSONL row per item, as ``shala predict`` writes it
(canonical item, ``completion`` = the distribution as JSON, ``response_prefix``,
``pred_dist``, ``parse_error``), on the seeded subset ``--limit`` keeps
(:func:`shala.data.items.subsample`), and a run record next to it
(``out.with_suffix('.run.json')``). Deterministic given config, seed and
thread count.
"""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..data.items import subsample
from ..errors import ConfigError, InputError
from ..jsonio import read_jsonl, write_json, write_jsonl
from ..parsing import parse_distribution
from ..prompts import encode_prompt, render_prompt_string
from . import metrics as M
from .reference import prediction_rows

log = logging.getLogger(__name__)

POOLINGS = ("last", "mean")
C_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)
MAX_TRAIN = 2000
MAX_VAL = 300
MAX_ITER = 5000
RUN_RECORD_KEYS = ("model_ref", "dataset", "split", "predictions", "n_items", "limit", "method", "layer",
                   "pooling", "n_features", "n_train", "n_train_available", "n_val", "c_grid", "val_jsd",
                   "C", "n_iter", "train_prior", "seconds", "items_per_s", "seed", "device", "dtype",
                   "threads", "versions")


# ----------------------------------------------------------- the soft-label fit

def expand_soft_labels(X: np.ndarray, P: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows ``(x_i, c)`` weighted ``p_ic`` for every class with ``p_ic > 0``.

    The weighted log-loss of a classifier on these rows equals its soft
    cross-entropy ``-sum_i sum_c p_ic log q_ic`` on the items, so any
    weighted multinomial classifier fits label distributions."""
    X, P = np.asarray(X, dtype=np.float64), np.asarray(P, dtype=np.float64)
    if X.shape[0] != P.shape[0]:
        raise ValueError(f"features have {X.shape[0]} rows but distributions {P.shape[0]}")
    rows, classes = np.nonzero(P > 0)  # item-major order: deterministic
    return X[rows], classes, P[rows, classes]


def soft_cross_entropy(P: np.ndarray, Q: np.ndarray) -> float:
    """``-sum_i sum_c p_ic log q_ic`` (nats; terms with ``p_ic = 0`` are 0)."""
    P, Q = np.asarray(P, dtype=np.float64), np.asarray(Q, dtype=np.float64)
    mask = P > 0
    return float(-(P[mask] * np.log(Q[mask])).sum())


def fit_soft_logreg(X: np.ndarray, P: np.ndarray, C: float):
    """Standardise, then fit a multinomial logistic regression to the
    distributions ``P`` through :func:`expand_soft_labels`. Returns the
    fitted scikit-learn pipeline."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    Xe, y, w = expand_soft_labels(X, P)
    if np.unique(y).size < 2:
        raise InputError("the train items give probability to only one class", field="dist")
    model = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=MAX_ITER))
    model.fit(Xe, y, logisticregression__sample_weight=w)
    return model


def predict_dists(model, X: np.ndarray, n_classes: int) -> np.ndarray:
    """Distributions over all ``n_classes`` (a class no train item gave any
    probability to gets 0)."""
    proba = model.predict_proba(np.asarray(X, dtype=np.float64))
    out = np.zeros((proba.shape[0], n_classes))
    out[:, model.classes_] = proba
    return out


def select_c(X_train: np.ndarray, P_train: np.ndarray, X_val: np.ndarray, P_val: np.ndarray,
             grid: Sequence[float] = C_GRID) -> tuple[float, Any, dict[str, float]]:
    """The C of ``grid`` with the lowest mean JSD (base 2) on the validation
    items, its model, and every C's validation JSD. Ties go to the earlier
    (smaller, more regularised) C."""
    if not grid:
        raise ConfigError("the probe's C grid is empty")
    scores: dict[str, float] = {}
    best = None
    for C in sorted({float(c) for c in grid}):
        model = fit_soft_logreg(X_train, P_train, C)
        score = float(np.mean(M.jsd(P_val, predict_dists(model, X_val, P_val.shape[1]), base=2.0)))
        scores[repr(C)] = score
        if best is None or score < best[2]:
            best = (C, model, score)
    return best[0], best[1], scores


# ----------------------------------------------------------- features

class _Reached(Exception):
    """Raised by the hook on the probed layer: the layers above it are not run."""


def probe_layer(model, layer: int | None) -> int:
    """The ``hidden_states`` index the probe reads: 0 is the embeddings, k
    the output of decoder layer k, the last one the final (normed) state;
    negative counts from the end; None is the middle, ``n_layers // 2``."""
    n = int(model.config.get_text_config().num_hidden_layers)
    if layer is None:
        return n // 2
    if not -(n + 1) <= layer <= n:
        raise ConfigError(f"probe layer {layer} is outside the model's hidden states 0..{n}")
    return layer % (n + 1)


def _hidden(model, input_ids, mask, layer: int):
    """Hidden states ``layer`` of a batch. Below the final layer the forward
    stops at that layer (a hook on it), so a middle layer costs half a pass."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    blocks = getattr(decoder, "layers", None)
    if layer == 0 or blocks is None or layer >= len(blocks):
        out = model(input_ids=input_ids, attention_mask=mask, output_hidden_states=True, logits_to_keep=1)
        return out.hidden_states[layer]
    seen = []

    def hook(module, args, output):
        seen.append(output[0] if isinstance(output, tuple) else output)
        raise _Reached

    handle = blocks[layer - 1].register_forward_hook(hook)
    try:
        model(input_ids=input_ids, attention_mask=mask, logits_to_keep=1)
    except _Reached:
        pass
    finally:
        handle.remove()
    return seen[0]


def prompt_features(model, tokenizer, prompts: Sequence[str], *, layer: int | None = None,
                    pooling: str = "mean", batch_size: int = 16, progress: bool = True) -> np.ndarray:
    """One vector per prompt: hidden states ``layer`` (:func:`probe_layer`)
    averaged over the prompt's tokens (``mean``) or at its last token
    (``last``). Prompts are tokenised exactly as prediction tokenises them
    (:func:`shala.prompts.encode_prompt`) and run in batches of similar
    length (the output keeps the input order)."""
    import torch
    from tqdm.auto import tqdm

    if pooling not in POOLINGS:
        raise ConfigError(f"probe pooling must be one of {', '.join(POOLINGS)}, not {pooling!r}")
    index = probe_layer(model, layer)
    ids = [encode_prompt(tokenizer, p) for p in prompts]
    order = sorted(range(len(ids)), key=lambda i: (len(ids[i]), i))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    feats: list[np.ndarray | None] = [None] * len(ids)
    bar = tqdm(total=len(ids), desc="probe features", unit="item", disable=not progress)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            width = max(len(ids[i]) for i in batch)
            # right padding: a causal model's real tokens never see the pads after them
            input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):
                input_ids[row, :len(ids[i])] = torch.tensor(ids[i])
                mask[row, :len(ids[i])] = 1
            hidden = _hidden(model, input_ids.to(device), mask.to(device), index).float()
            m = mask.to(hidden.device)
            if pooling == "last":
                pooled = hidden[torch.arange(len(batch)), m.sum(1) - 1]
            else:
                pooled = (hidden * m[..., None]).sum(1) / m.sum(1, keepdim=True)
            for row, i in enumerate(batch):
                feats[i] = pooled[row].cpu().numpy().astype(np.float64)
            bar.update(len(batch))
    bar.close()
    return np.stack(feats)


# ----------------------------------------------------------- the run

def _dists(items: Sequence[dict[str, Any]]) -> np.ndarray:
    return np.array([it["dist"] for it in items], dtype=np.float64)


def _versions() -> dict[str, str | None]:
    from importlib.metadata import version

    from ..provenance import library_versions

    return {**library_versions(), "scikit-learn": version("scikit-learn"), "python": platform.python_version()}


def _read_split(data_dir: Path, split: str) -> list[dict[str, Any]]:
    path = data_dir / f"{split}.jsonl"
    if not path.is_file():
        raise InputError("split file not found", path=path)
    items = read_jsonl(path)
    if not items:
        raise InputError(f"no items in split {split!r}", path=path)
    return items


def run_probe(config: dict[str, Any], dataset: str, data_dir: str | Path, model_ref: str, out: str | Path, *,
              split: str = "test", limit: int | None = None, max_train: int | None = MAX_TRAIN,
              max_val: int | None = MAX_VAL, layer: int | None = None, pooling: str = "mean",
              c_grid: Sequence[float] = C_GRID, batch_size: int | None = None, seed: int = 0,
              threads: int | None = None, device: str | None = None, progress: bool = True) -> dict[str, Any]:
    """Fit the probe on ``data_dir/train.jsonl`` (at most ``max_train``
    items, a subset seeded by ``seed``), choose C on ``validation.jsonl``
    (at most ``max_val``), predict ``{split}.jsonl`` (``limit``: the seeded
    subset ``shala predict --limit`` keeps) into ``out``; write the run
    record to ``out.with_suffix('.run.json')`` and return it."""
    import torch

    from ..model.audio import audio_in_play
    from ..model.loading import load_model_and_tokenizer

    if dataset not in config["datasets"]:
        raise ConfigError(f"unknown dataset {dataset!r} (config datasets: {sorted(config['datasets'])})")
    dataset_cfg = config["datasets"][dataset]
    prompt_cfg = dataset_cfg["prompt"]
    data_dir, out = Path(data_dir), Path(out)
    items = subsample(_read_split(data_dir, split), limit)
    train_all = _read_split(data_dir, "train")
    train = subsample(train_all, max_train, seed=seed)
    val = subsample(_read_split(data_dir, "validation"), max_val, seed=seed)
    labels = items[0]["labels"]
    for name, group in (("train", train), ("validation", val)):
        if group[0]["labels"] != labels:
            raise InputError(f"{name} labels {group[0]['labels']} differ from {split}'s {labels}", field="labels")
    if threads:
        torch.set_num_threads(int(threads))
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    batch_size = int(batch_size or config["evaluation"]["batch_size"])
    model_cfg = config["model"]

    t0 = time.perf_counter()
    model, tokenizer = load_model_and_tokenizer(model_ref, dtype=model_cfg["dtype"],
                                                component=model_cfg["component"], device=device)
    model.eval()
    if audio_in_play(dataset_cfg, model, items):
        raise ConfigError(f"datasets.{dataset}: the probe reads text prompts only; set text_only")
    load_s = time.perf_counter() - t0

    layer = probe_layer(model, layer)

    def features(group: Sequence[dict[str, Any]]) -> np.ndarray:
        prompts = [render_prompt_string(tokenizer, it, prompt_cfg) for it in group]
        return prompt_features(model, tokenizer, prompts, layer=layer, pooling=pooling,
                               batch_size=batch_size, progress=progress)

    t1 = time.perf_counter()
    X_train, X_val, X_test = features(train), features(val), features(items)
    feature_s = time.perf_counter() - t1
    t2 = time.perf_counter()
    C, clf, val_jsd = select_c(X_train, _dists(train), X_val, _dists(val), c_grid)
    dists = predict_dists(clf, X_test, len(labels))
    fit_s = time.perf_counter() - t2

    rows = []
    for row in prediction_rows(items, dists.tolist()):
        res = parse_distribution(row["completion"], labels)  # the evaluator's reading of it
        rows.append({**row, "response_prefix": "",
                     "pred_dist": [float(x) for x in res.dist] if res.ok else None,
                     "parse_error": res.error})
    if not all(r["parse_error"] is None for r in rows):
        raise RuntimeError("a probe distribution did not parse back")  # prediction_rows' format: a bug
    write_jsonl(out, rows)
    n_feat = sum(len(g) for g in (train, val, items))
    seconds = time.perf_counter() - t0
    record = {
        "model_ref": str(model_ref), "dataset": dataset, "split": split, "predictions": str(out),
        "n_items": len(rows), "limit": limit, "method": "probe", "layer": layer,
        "n_layers": int(model.config.get_text_config().num_hidden_layers), "pooling": pooling,
        "n_features": int(X_train.shape[1]), "n_train": len(train), "n_train_available": len(train_all),
        "max_train": max_train, "n_val": len(val), "max_val": max_val, "c_grid": [float(c) for c in c_grid],
        "val_jsd": val_jsd, "C": C, "n_iter": int(clf[-1].n_iter_.max()),
        "train_prior": _dists(train).mean(axis=0).tolist(), "prompt": prompt_cfg, "batch_size": batch_size,
        "seconds": round(seconds, 3), "load_seconds": round(load_s, 3),
        "feature_seconds": round(feature_s, 3), "fit_seconds": round(fit_s, 3),
        "items_per_s": round(n_feat / feature_s, 4) if feature_s > 0 else None,
        "seed": seed, "device": str(device), "dtype": str(model_cfg["dtype"]),
        "threads": torch.get_num_threads(), "versions": _versions(),
    }
    write_json(out.with_suffix(".run.json"), record)
    log.info("probe %s/%s: %d train items (C=%g, val JSD %.4f), %d features of %d items in %.1fs "
             "(%.1f items/s), fit %.1fs", dataset, split, len(train), C, val_jsd[repr(C)], X_train.shape[1],
             n_feat, feature_s, record["items_per_s"] or 0.0, fit_s)
    return record
