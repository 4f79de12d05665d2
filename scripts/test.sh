#!/usr/bin/env bash
# The test command (README, CI): set up .venv, then run the whole suite,
# the slow tests on the real SmolLM2 model included. Extra arguments go to
# pytest, e.g. `bash scripts/test.sh -m "not slow"` for the fast tests only,
# `bash scripts/test.sh tests/unit` for the unit tests (tests/integration: end to end).
#
# `bash scripts/test.sh --vllm [pytest args]`: set up .venv-vllm (vLLM; its
# CPU build without CUDA) and run the tests marked `vllm` there; the main
# suite skips them where vllm does not import.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if [ "${1:-}" = "--vllm" ]; then
    shift
    bash scripts/setup_venv.sh --vllm
    exec .venv-vllm/bin/python -m pytest -m vllm "$@"
fi
bash scripts/setup_venv.sh
exec .venv/bin/python -m pytest "$@"
