#!/usr/bin/env bash
# The test command (README, CI): set up .venv, then run the whole suite,
# the slow tests on the real SmolLM2 model included. Extra arguments go to
# pytest, e.g. `bash scripts/test.sh -m "not slow"` for the fast tests only,
# `bash scripts/test.sh tests/unit` for the unit tests (tests/integration: end to end).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_venv.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/python -m pytest "$@"
