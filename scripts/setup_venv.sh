#!/usr/bin/env bash
# Create .venv (once) and install shala with its pinned dependencies.
# torch is pinned to 2.13.0 (CPU wheel where available) so CPU machines do
# not pull several GB of CUDA packages.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
"$PY" -c 'import sys; assert sys.version_info >= (3, 11), "shala needs Python >= 3.11"'
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
stamp=.venv/.shala-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet "torch==2.13.0"
    # the `gpu` extra is DeepSpeed: the paper's ZeRO-3 launch, which the test
    # suite runs on CPU ranks (tests/integration/test_zero3.py); no CUDA ops are built
    # at install (DS_BUILD_OPS=0), the CPU shared-memory op builds on first use
    DS_BUILD_OPS=0 .venv/bin/python -m pip install --quiet -e ".[model,test,gpu]"
    touch "$stamp"
fi
