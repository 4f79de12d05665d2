#!/usr/bin/env bash
# Companion of bench/gpu_check.sh: run where the package index is reachable,
# to fill DIR with the wheels a bare GPU machine (no network; Python 3.12,
# torch, accelerate, pandas, scipy, pyarrow already there) needs for the
# check: trl, datasets, deepspeed, the pinned transformers, their missing
# dependencies, and shala itself. Prints the total size (the check's budget
# is 60 MB).
#
#   bash bench/gpu_wheels.sh .whl        # then carry .whl to the GPU machine
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:?usage: gpu_wheels.sh DIR}
mkdir -p "$dir"
py=${PYTHON:-.venv/bin/python}
plat=()
for n in 2_28 2_27 2_24 2_17 2014 1; do
    case $n in 2014|1) plat+=(--platform "manylinux${n}_x86_64") ;; *) plat+=(--platform "manylinux_${n}_x86_64") ;; esac
done
# pure-Python packages and compiled ones, for CPython 3.12 on x86-64 Linux
"$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${plat[@]}" \
    -d "$dir" \
    trl==1.16.0 datasets==5.2.0 transformers==5.23.0 \
    dill==0.4.0 multiprocess==0.70.18 hjson==3.1.0 \
    pydantic==2.12.5 pydantic-core==2.41.5 annotated-types==0.7.0 typing-inspection==0.4.2 \
    jsonschema==4.25.1 jsonschema-specifications==2025.9.1 referencing==0.37.0 rpds-py==0.30.0
# deepspeed is a source distribution on PyPI: build its wheel here (no ops
# compiled ahead; DeepSpeed JIT-builds what it needs on the GPU machine)
"$py" -m pip wheel -q --no-deps --no-build-isolation -w "$dir" deepspeed==0.19.8
"$py" -m pip wheel -q --no-deps --no-build-isolation -w "$dir" .
du -ch "$dir"/*.whl | tail -1
