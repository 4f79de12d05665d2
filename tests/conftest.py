"""Shared test fixtures for tests/unit and tests/integration: a tiny local
chat model (no downloads, ever), the development data beside the repository
(``../shared/data``), and factories for the data tests build: items
(``item_factory``), prediction rows (``predictions_factory``) and training
runs (``training_runs_factory``).

tests/unit holds one file per module with logic, run in process; tests/integration
runs things end to end (the CLI, Snakemake, launchers, SLURM). Neither folder
has an ``__init__.py`` (pytest's default import mode puts each on sys.path), so
a test file's name must be unique across both.

Tests that read ``../shared/data`` skip, with a reason that says so, where it
is absent (a clean clone). Use the path and the marker from here, so that
``SHALA_SHARED_DATA=/elsewhere`` (or ``/nonexistent``, to check the skips)
points every such test at one folder::

    from conftest import SHARED_DATA, needs_shared_data

    @needs_shared_data("chaosnli")          # skip unless ../shared/data/chaosnli exists
    def test_x(): ...

    def test_y(shared_data): ...            # fixture: the folder, or skip
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

# Property tests draw the same examples on every run (the suite is CI's gate
# and must not flake); HYPOTHESIS_PROFILE=explore draws fresh ones.
settings.register_profile("repeatable", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

#: ../shared/data (development data beside the repository); $SHALA_SHARED_DATA overrides.
SHARED_DATA = Path(os.environ.get("SHALA_SHARED_DATA")
                   or Path(__file__).resolve().parents[2] / "shared" / "data")
SHARED_DATA_REASON = "../shared/data not found (development data beside the repository)"


def shared_data_missing(*parts: str) -> str | None:
    """Why a test needing ``SHARED_DATA/parts`` must skip, or None if it is there."""
    if not SHARED_DATA.is_dir():
        return f"{SHARED_DATA_REASON}: {SHARED_DATA}"
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        return f"{SHARED_DATA_REASON}: {path} missing"
    return None


def needs_shared_data(*parts: str) -> pytest.MarkDecorator:
    """A skipif marker: skip unless ``../shared/data/<parts>`` exists."""
    why = shared_data_missing(*parts)
    return pytest.mark.skipif(why is not None, reason=why or "")


def write_nli_train(d: Path, n: int = 8) -> Path:
    """``d/train.jsonl``: ``n`` ChaosNLI-like items with one annotator
    distribution (H~ = 0.94), so an SFT target is a single string the tiny
    model learns quickly. Returns ``d``."""
    from shala.data.items import make_item
    from shala.jsonio import write_jsonl

    items = [make_item(id=f"i{k}", dataset="chaosnli", subset="snli",
                       inputs={"premise": f"A man {k}", "hypothesis": "A person"},
                       labels=["entailment", "neutral", "contradiction"], counts=[5, 3, 2],
                       ambiguity="entropy") for k in range(n)]
    for it in items:
        it["split"] = "train"
    write_jsonl(d / "train.jsonl", items)
    return d


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The ``../shared/data`` folder; skips the test where it is absent."""
    why = shared_data_missing()
    if why:
        pytest.skip(why)
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny random Qwen2 chat model with a ChatML template (seed 0).

    Built once per session; tests must treat the directory as read-only.
    """
    from shala.model.tiny_models import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny", seed=0)


@pytest.fixture(scope="session")
def smollm2_dir():
    """SmolLM2-135M-Instruct converted from its PyPI GGUF wheel (slow tests).

    Cached across sessions in ``$SHALA_MODEL_CACHE`` (default ``.cache/models``
    at the repository root, git-ignored); converted on first use, which needs
    PyPI, or ``$SHALA_WHEEL_DIR`` holding the wheel.
    """
    from pathlib import Path

    from shala.model.loading import base_model_name, fetch_model

    cache = Path(os.environ.get("SHALA_MODEL_CACHE")
                 or Path(__file__).resolve().parents[1] / ".cache" / "models")
    cfg = {"source": "pypi_gguf"}
    return fetch_model(cfg, cache / base_model_name(cfg))


# ------------------------------------------- preflight, fit and disk tests

@pytest.fixture
def in_repo(monkeypatch):
    """accelerate resolves the DeepSpeed json from the directory it runs in."""
    monkeypatch.chdir(Path(__file__).resolve().parents[1])


@pytest.fixture(scope="module")
def paper_config():
    from shala.plan import load_config

    return load_config([Path(__file__).resolve().parents[1] / "config.yaml"])


@pytest.fixture(scope="module")
def omni_shape():
    """The paper model's parameter counts, from its shipped config.json."""
    import json

    from shala.launch.model_shape import count_parameters, shipped_config_path

    path = shipped_config_path("Qwen/Qwen2.5-Omni-7B")
    return count_parameters(json.loads(path.read_text()), name="omni", source=str(path))


# ------------------------------------------- items, prediction rows, training runs
#
# Tests build their data with these factories (fixtures that return a
# function), not by hand: an item is what ``shala prepare`` writes, a
# prediction row is an item with the model's ``completion``, a training run is
# what ``shala train`` leaves for ``shala report``.

NLI = ["entailment", "neutral", "contradiction"]


def _make_item(counts, labels=("a", "b", "c"), *, id="x", dataset="toy", subset=None, inputs=None,
               ambiguity="entropy", **fields):
    """One canonical item (:func:`shala.data.items.make_item`) with these vote
    counts; ``inputs`` defaults to ``{"text": id}``. Further fields (``split``,
    ``completion``, ...) are set on it after, in the order given."""
    from shala.data.items import make_item

    item = make_item(id=id, dataset=dataset, subset=subset, inputs={"text": id} if inputs is None else inputs,
                     labels=labels, counts=counts, ambiguity=ambiguity)
    item.update(fields)
    return item


@pytest.fixture(scope="session")
def item_factory():
    """``item_factory(counts, labels=("a", "b", "c"), *, id="x", dataset="toy",
    subset=None, inputs={"text": id}, ambiguity="entropy", **fields)``: one item."""
    return _make_item


def _prediction_rows(n, seed=0, labels=NLI, subsets=("snli", "mnli"), *, dataset="toy", id_prefix="x",
                     ambiguity="entropy", predict=None, pred_seed=None, fail=None):
    """``n`` test-split items ``{id_prefix}{i}`` (input ``t{i}``, subsets in
    turn) with 20 votes each drawn from a random Dirichlet (numpy seed
    ``seed``), each with a completion ``Answer: {...}``: ``predict(dist, rng, i)``,
    by default a Dirichlet(0.8) draw, from the same generator unless
    ``pred_seed`` gives the predictions their own; ``no idea`` where ``fail(i)``."""
    import json

    import numpy as np

    rng = np.random.default_rng(seed)
    pred_rng = rng if pred_seed is None else np.random.default_rng(pred_seed)
    rows = []
    for i in range(n):
        counts = rng.multinomial(20, rng.dirichlet(np.full(len(labels), 0.7))).tolist()
        if sum(counts) == 0:
            counts[0] = 1
        item = _make_item(counts, labels, id=f"{id_prefix}{i}", dataset=dataset, subset=subsets[i % len(subsets)],
                          inputs={"text": f"t{i}"}, ambiguity=ambiguity, split="test")
        dist = np.asarray(item["dist"])
        pred = pred_rng.dirichlet(np.full(dist.size, 0.8)) if predict is None else predict(dist, pred_rng, i)
        item["completion"] = "no idea" if fail is not None and fail(i) else \
            "Answer: " + json.dumps(dict(zip(labels, pred.tolist())))
        rows.append(item)
    return rows


@pytest.fixture(scope="session")
def predictions_factory():
    """``predictions_factory(n, seed=0, labels=NLI, subsets=("snli", "mnli"), *,
    dataset="toy", id_prefix="x", ambiguity="entropy", predict=None,
    pred_seed=None, fail=None)``: rows of a predictions file (``shala evaluate``'s input)."""
    return _prediction_rows


def _training_runs(root, datasets, methods, seeds, *, record, log):
    """Run records ``models/{dataset}/{method}/seed{seed}/run.json`` (the dict
    ``record(method, seed)``) each with a ``train_log.jsonl`` (the records
    ``log(method, seed)``); returns the run.json paths."""
    import json

    paths = []
    for dataset in datasets:
        for method in methods:
            for seed in seeds:
                d = root / "models" / dataset / method / f"seed{seed}"
                d.mkdir(parents=True)
                (d / "run.json").write_text(json.dumps(record(method, seed)))
                (d / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log(method, seed)))
                paths.append(d / "run.json")
    return paths


@pytest.fixture(scope="session")
def training_runs_factory():
    """``training_runs_factory(root, datasets, methods, seeds, *, record, log)``:
    fake training runs for ``shala report``; returns their run.json paths."""
    return _training_runs
