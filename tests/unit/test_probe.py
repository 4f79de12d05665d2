"""The capacity probe (shala.evaluation.probe): the soft-label expansion fits
the soft cross-entropy, recovers known distributions, and its run writes
predictions that ``shala evaluate`` scores like any other; one slow test on
the real SmolLM2 and the known-answer control."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import log_loss

from shala.config import fill_defaults
from shala.data.items import subsample
from shala.evaluation.evaluate import REQUIRED_FIELDS, run_evaluate
from shala.evaluation.metrics import jsd
from shala.evaluation.predict import run_predict
from shala.evaluation.probe import (
    RUN_RECORD_KEYS,
    expand_soft_labels,
    fit_soft_logreg,
    predict_dists,
    probe_layer,
    prompt_features,
    run_probe,
    select_c,
    soft_cross_entropy,
)
from shala.jsonio import read_jsonl, write_jsonl
from shala.plan import load_config
from shala.prompts import encode_prompt

ROOT = Path(__file__).resolve().parents[2]
LABELS = ["a", "b", "c"]


def softmax(Z: np.ndarray) -> np.ndarray:
    E = np.exp(Z - Z.max(axis=1, keepdims=True))
    return E / E.sum(axis=1, keepdims=True)


def known_softmax_task(n: int, d: int = 6, C: int = 3, seed: int = 0, annotators: int | None = None):
    """Features X and distributions softmax(X W + b); with ``annotators``,
    the distributions of that many votes drawn from it (noisy soft labels)."""
    rng = np.random.default_rng(seed)
    W, b = rng.normal(size=(d, C)), rng.normal(size=C) * 0.5
    X = rng.normal(size=(n, d))
    P = softmax(X @ W + b)
    if annotators:
        P = np.array([rng.multinomial(annotators, p) for p in P]) / annotators
    return X, P


# ----------------------------------------------------------- the soft-label fit

def test_expansion_rows_and_weights():
    X = np.array([[1.0, 2.0], [3.0, 4.0]])
    P = np.array([[0.25, 0.0, 0.75], [0.0, 1.0, 0.0]])
    Xe, y, w = expand_soft_labels(X, P)
    assert y.tolist() == [0, 2, 1] and w.tolist() == [0.25, 0.75, 1.0]  # zero-probability rows dropped
    assert Xe.tolist() == [[1.0, 2.0], [1.0, 2.0], [3.0, 4.0]]


def test_expansion_loss_is_the_soft_cross_entropy():
    """A classifier's weighted log-loss on the expanded rows, for any given
    weights, equals -sum p log q over the items computed directly."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(40, 5))
    P = rng.dirichlet(np.full(4, 0.5), size=40)
    P[::5, 1] = 0.0  # some zero probabilities
    P /= P.sum(axis=1, keepdims=True)
    W, b = rng.normal(size=(5, 4)), rng.normal(size=4)
    Xe, y, w = expand_soft_labels(X, P)
    expanded = log_loss(y, softmax(Xe @ W + b), sample_weight=w, labels=range(4), normalize=False)
    direct = -np.sum(np.where(P > 0, P * np.log(softmax(X @ W + b)), 0.0))
    assert expanded == pytest.approx(direct, rel=1e-12)
    assert soft_cross_entropy(P, softmax(X @ W + b)) == pytest.approx(direct, rel=1e-12)
    # hard labels would score a different number
    hard = -np.sum(np.log(softmax(X @ W + b))[np.arange(40), P.argmax(axis=1)])
    assert abs(hard - direct) > 1.0


def test_fit_minimises_the_penalised_soft_cross_entropy():
    """At the fit, C * Xs^T (Q - P) + W = 0 and the intercept makes the mean
    prediction equal the train prior: the gradient of C * soft CE + |W|^2 / 2."""
    X, P = known_softmax_task(300, d=4, annotators=10)
    C = 0.05
    model = fit_soft_logreg(X, P, C)
    Q = predict_dists(model, X, 3)
    Xs, coef = model[0].transform(X), model[-1].coef_
    grad = C * Xs.T @ (Q - P) + coef.T
    assert np.abs(grad).max() < 1e-3 * np.abs(coef).max()
    np.testing.assert_allclose(Q.mean(axis=0), P.mean(axis=0), atol=1e-4)


def test_recovers_a_known_softmax_better_than_the_prior():
    X, P = known_softmax_task(1400, annotators=20)
    tr, va, te = slice(0, 1000), slice(1000, 1200), slice(1200, 1400)
    C, model, scores = select_c(X[tr], P[tr], X[va], P[va])
    Q = predict_dists(model, X[te], 3)
    truth = known_softmax_task(1400)[1][te]  # the noiseless distributions
    probe = jsd(truth, Q).mean()
    prior = jsd(truth, np.broadcast_to(P[tr].mean(axis=0), truth.shape)).mean()
    assert probe < 0.1 and probe < prior / 4
    assert scores[repr(C)] == min(scores.values()) and C > min(float(c) for c in scores)  # not the floor


def test_select_c_grid_order_and_empty_grid():
    from shala.errors import ConfigError

    X, P = known_softmax_task(80)
    a = select_c(X[:60], P[:60], X[60:], P[60:], grid=[1.0, 1e-3, 1e-3])
    b = select_c(X[:60], P[:60], X[60:], P[60:], grid=[1e-3, 1.0])
    assert a[0] == b[0] and a[2] == b[2] and list(a[2]) == ["0.001", "1.0"]
    with pytest.raises(ConfigError, match="grid"):
        select_c(X[:60], P[:60], X[60:], P[60:], grid=[])


def test_class_without_train_mass_gets_zero():
    X, P = known_softmax_task(50, C=3)
    P = np.column_stack([P[:, 0] + P[:, 1], np.zeros(50), P[:, 2]])
    Q = predict_dists(fit_soft_logreg(X, P, 1.0), X, 3)
    assert np.all(Q[:, 1] == 0) and np.allclose(Q.sum(axis=1), 1.0)


# ----------------------------------------------------------- the run (tiny model)

PROMPT = fill_defaults({"background": "", "target": "Text: {text}"}, at="datasets.toy.prompt")
CONFIG = fill_defaults({
    "model": {"source": "local", "dtype": "float32", "component": None},
    "evaluation": {"batch_size": 4, "max_new_tokens": 8},
    "datasets": {"toy": {"prompt": PROMPT}},
})


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, item_factory):
    """Items whose text names the majority class, so features can tell them apart."""
    d = tmp_path_factory.mktemp("probe_data")
    rng = np.random.default_rng(0)
    for split, n in (("train", 30), ("validation", 10), ("test", 12)):
        items = []
        for i in range(n):
            k = int(rng.integers(3))
            counts = [1, 1, 1]
            counts[k] = 6
            items.append(item_factory(counts, LABELS, id=f"{split}{i}", split=split,
                                      inputs={"text": f"mostly {LABELS[k]} " * (1 + i % 3)}))
        write_jsonl(d / f"{split}.jsonl", items)
    return d


@pytest.fixture(scope="module")
def probe_run(tmp_path_factory, data_dir, tiny_model_dir):
    out = tmp_path_factory.mktemp("probe") / "p.jsonl"
    rec = run_probe(CONFIG, "toy", data_dir, str(tiny_model_dir), out, limit=8, max_train=20, max_val=6,
                    c_grid=(0.01, 1.0), threads=1, progress=False)
    return out, rec


def test_predictions_have_predicts_fields_and_evaluate_scores_them(probe_run, data_dir, tiny_model_dir,
                                                                   tmp_path):
    out, rec = probe_run
    rows = read_jsonl(out)
    # the same fields, per row, as `shala predict` writes
    predicted = tmp_path / "zs.jsonl"
    run_predict(CONFIG, "toy", data_dir, str(tiny_model_dir), "test", predicted, limit=8, progress=False)
    assert [set(r) for r in rows] == [set(r) for r in read_jsonl(predicted)]
    expected = subsample(read_jsonl(data_dir / "test.jsonl"), 8)  # predict's and reference's subset
    assert [r["id"] for r in rows] == [it["id"] for it in expected]
    for r, it in zip(rows, expected):
        assert set(REQUIRED_FIELDS) <= set(r) and {k: r[k] for k in it} == it
        assert r["parse_error"] is None and r["response_prefix"] == ""
        assert sum(r["pred_dist"]) == pytest.approx(1.0) and len(r["pred_dist"]) == 3
        assert json.loads(r["completion"]) == pytest.approx(dict(zip(LABELS, r["pred_dist"])), abs=1e-6)
    metrics = run_evaluate(out, tmp_path / "m.json")
    assert metrics["n"] == 8 and metrics["parse_failure_rate"] == 0.0
    scored = np.mean([jsd(r["dist"], r["pred_dist"]) for r in rows])
    assert metrics["overall"]["jsd"] == pytest.approx(scored, abs=1e-5)


def test_run_record(probe_run):
    out, rec = probe_run
    assert json.loads(out.with_suffix(".run.json").read_text()) == rec
    assert set(RUN_RECORD_KEYS) <= set(rec)
    assert rec["n_items"] == 8 and rec["n_train"] == 20 and rec["n_train_available"] == 30 and rec["n_val"] == 6
    assert rec["C"] in (0.01, 1.0) and rec["val_jsd"][repr(rec["C"])] == min(rec["val_jsd"].values())
    assert rec["pooling"] == "mean" and rec["layer"] == rec["n_layers"] // 2 and rec["threads"] == 1
    assert rec["versions"]["scikit-learn"] and rec["versions"]["torch"]


def test_deterministic(probe_run, data_dir, tiny_model_dir, tmp_path):
    out, _ = probe_run
    again = tmp_path / "again.jsonl"
    run_probe(CONFIG, "toy", data_dir, str(tiny_model_dir), again, limit=8, max_train=20, max_val=6,
              c_grid=(0.01, 1.0), threads=1, progress=False)
    assert again.read_bytes() == out.read_bytes()


def test_features_read_the_named_layer_and_ignore_padding(tiny_model_dir):
    """The early exit returns hidden_states[k] of a full pass (not k - 1 or
    k + 1), and a prompt's features do not depend on its batch's padding."""
    import torch

    from shala.model.loading import load_model_and_tokenizer

    model, tok = load_model_and_tokenizer(tiny_model_dir)
    prompts = [f"<|im_start|>user\nText: {'word ' * (1 + 3 * i)}<|im_end|>" for i in range(5)]
    n = model.config.num_hidden_layers
    for layer in range(n + 1):
        with torch.inference_mode():
            full = [model(input_ids=torch.tensor([encode_prompt(tok, p)]), output_hidden_states=True)
                    .hidden_states[layer][0] for p in prompts]
        mean = prompt_features(model, tok, prompts, layer=layer, batch_size=5, progress=False)
        last = prompt_features(model, tok, prompts, layer=layer, pooling="last", batch_size=5, progress=False)
        np.testing.assert_allclose(mean, np.stack([h.mean(0).numpy() for h in full]), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(last, np.stack([h[-1].numpy() for h in full]), rtol=1e-4, atol=1e-5)
    assert probe_layer(model, None) == n // 2 and probe_layer(model, -1) == n


def test_bad_pooling_and_layer(data_dir, tiny_model_dir, tmp_path):
    from shala.errors import ConfigError

    with pytest.raises(ConfigError, match="pooling"):
        run_probe(CONFIG, "toy", data_dir, str(tiny_model_dir), tmp_path / "x.jsonl", pooling="max",
                  progress=False)
    with pytest.raises(ConfigError, match="layer 99"):
        run_probe(CONFIG, "toy", data_dir, str(tiny_model_dir), tmp_path / "x.jsonl", layer=99, progress=False)


# ----------------------------------------------------------- the real model

@pytest.mark.slow
def test_smollm2_probe_reads_the_control(smollm2_dir, tmp_path):
    """On the known-answer control (the text states the counts) SmolLM2's
    last-token state supports far better distributions than the prior."""
    from shala.data.prepare import prepare
    from shala.evaluation.reference import run_reference
    from shala.evaluation.significance import paired_test

    config = load_config([ROOT / "config.yaml", ROOT / "config" / "demo.yaml"])
    (tmp_path / "raw").mkdir()
    prepare("control", tmp_path / "raw", tmp_path / "data", config=config)
    rec = run_probe(config, "control", tmp_path / "data", str(smollm2_dir), tmp_path / "probe.jsonl",
                    limit=40, max_train=150, max_val=40, threads=1, progress=False)
    run_reference("prior", tmp_path / "data", "test", tmp_path / "prior.jsonl", limit=40)
    scores = {}
    for name in ("probe", "prior"):
        run_evaluate(tmp_path / f"{name}.jsonl", tmp_path / f"{name}.json", items_out=tmp_path / f"{name}.csv")
        with (tmp_path / f"{name}.csv").open(newline="") as fh:
            scores[name] = [float(r["jsd"]) for r in csv.DictReader(fh)]
    res = paired_test(scores["probe"], scores["prior"])
    assert rec["n_train"] == 150 and res.n == 40
    assert res.ci_hi < 0 and res.mean_a < 0.2 < res.mean_b
