#!/usr/bin/env bash
# The project's GPU check, for a bare machine with no network (one H100 80 GB
# or larger; about 10 minutes). Writes JSON and a log per part to OUTDIR.
#
#   bash bench/gpu_wheels.sh .whl            # first, where the package index is reachable
#   bash bench/gpu_check.sh OUTDIR [--wheels .whl]
#   bash bench/gpu_check.sh OUTDIR --cpu-smoke   # part (a) on the CPU, no DeepSpeed (the test suite)
#
# (a) bench/gpu_check_tiny.py: a tiny random Qwen2.5-Omni thinker, text and
#     audio, 2 GRPO steps through `accelerate launch --num_processes 1` with
#     config/accelerate_zero3.yaml in bf16, save, reload, predict;
# (b), (c) bench/gpu_check.py: the full-size 7B thinker architecture with
#     random weights, towers frozen: GRPO generation tokens/s, one forward +
#     backward over a GRPO batch and its peak memory; `shala predict`-like
#     items/s at batch 16 and 64 against the HBM-bandwidth bound.
# The machine is expected to hold torch, transformers and accelerate; trl,
# datasets, deepspeed (and the pinned transformers) come from the wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: gpu_check.sh OUTDIR [--wheels DIR] [--cpu-smoke]}
shift
wheels=.whl
smoke=0
while [ $# -gt 0 ]; do
    case $1 in
        --cpu-smoke) smoke=1 ;;
        --wheels) wheels=$2; shift ;;
        *) echo "gpu_check: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
mkdir -p "$out"
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

if [ "$smoke" = 1 ]; then
    "$py" bench/gpu_check_tiny.py "$out" --cpu-smoke 2>&1 | tee "$out/gpu_check_a.log"
    exit "${PIPESTATUS[0]}"
fi

if [ -d "$wheels" ]; then
    site=$(mktemp -d)/site
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" "$wheels"/*.whl
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
    export PATH="$site/bin:$PATH"
fi
"$py" - <<'EOF' 2>&1 | tee "$out/gpu_check_env.log"
import importlib
for name in ("torch", "transformers", "accelerate", "trl", "datasets", "deepspeed", "shala"):
    m = importlib.import_module(name)
    print(f"{name} {getattr(m, '__version__', '?')} {m.__file__}")
import torch
print("cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-")
EOF
status=0
"$py" bench/gpu_check_tiny.py "$out" 2>&1 | tee "$out/gpu_check_a.log" || status=1
"$py" bench/gpu_check.py "$out" 2>&1 | tee "$out/gpu_check_bc.log" || status=1
exit $status
