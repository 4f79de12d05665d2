"""Shared test fixtures: a tiny local chat model (no downloads, ever), and
the development data beside the repository (``../shared/data``).

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
    from shala.config import load_config

    return load_config([Path(__file__).resolve().parents[1] / "config.yaml"])


@pytest.fixture(scope="module")
def omni_shape():
    """The paper model's parameter counts, from its shipped config.json."""
    import json

    from shala.launch.model_shape import count_parameters, shipped_config_path

    path = shipped_config_path("Qwen/Qwen2.5-Omni-7B")
    return count_parameters(json.loads(path.read_text()), name="omni", source=str(path))
