#!/usr/bin/env bash
# Companion of bench/gpu_check.sh: run where PyPI is reachable, to fill DIR
# with the wheels a bare GPU machine (no network) needs for the check. The
# list comes from pip's resolver over pyproject.toml's pins (dependencies,
# `model` and `gpu` extras) for the machine's CPython (default 3.12, as
# /work/.library/device/KINDS.md says), less what bench/gpu_machine.txt says
# the machine already has; never torch or its CUDA packages. deepspeed (an
# sdist) is built into a wheel here. DIR's old wheels are removed first.
# Prints each wheel with the reason it is carried, the unverified
# assumptions, and the total size (the device's working tree, wheels
# included, is limited to 64 MiB); writes DIR/wheels.json. Details: the
# module doc of bench/gpu_wheels.py.
#
#   bash bench/gpu_wheels.sh .whl [--python-version 3.12] [--machine bench/gpu_machine.txt]
#   # then carry .whl (git-ignored) to the GPU machine: bench/gpu_check.sh installs it
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:?usage: gpu_wheels.sh DIR [--python-version X.Y] [--machine FILE] [--unknown-max-mb MB]}
shift
py=${PYTHON:-.venv/bin/python}
exec "$py" bench/gpu_wheels.py "$dir" --python "$py" "$@"
