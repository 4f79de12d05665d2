#!/usr/bin/env bash
# The project's GPU check, for a bare machine with no network: one H200 (part
# (d) needs its 141 GB; on an 80 GB card run --parts a,bc). About 7 minutes
# expected, at most the budget plus ~40 s of set-up.
# Each part writes its own log and JSON to OUTDIR, the most valuable first, so
# a time-out still leaves them; a failed part does not stop the next one.
#
#   bash bench/gpu_wheels.sh .whl            # first, where the package index is reachable
#   bash bench/gpu_check.sh OUTDIR [--wheels .whl] [--parts a,d,bc] [--budget 480]
#   bash bench/gpu_check.sh OUTDIR --cpu-smoke [--parts a,d]   # the test suite: CPU, toy sizes
#
# (a) bench/gpu_check_tiny.py -> gpu_check_a.{log,json}: a tiny random
#     Qwen2.5-Omni thinker, text and audio, 2 GRPO steps through `accelerate
#     launch --num_processes 1` with config/accelerate_zero3.yaml in bf16,
#     save, reload, predict (--cpu-smoke: one process, no DeepSpeed);
# (d) bench/gpu_check_step.py -> gpu_check_d.{log,json}: the full-size 7B
#     thinker (random weights), 2 GRPO steps of the paper's per-device
#     setting under ZeRO-3 on one GPU through the same launch: seconds per
#     step, peak memory, shala.launch.gpu_memory's estimate, save time (--cpu-smoke:
#     toy size, ZeRO-3 on a CPU rank);
# (bc) bench/gpu_check.py -> gpu_check_bc.{log,json}: the full-size thinker
#     without DeepSpeed: generation tokens/s, forward + backward and its peak
#     memory; prediction items/s against the HBM bound (--cpu-smoke: --tiny).
# --budget: seconds for all parts together (default 480); each part gets at
# most its own cap (a 180, d 420, bc 150) and what is left, and is stopped
# with SIGTERM at its limit (part (d) then writes what it measured).
# The machine is expected to hold torch, transformers and accelerate; trl,
# datasets, deepspeed (and the pinned transformers) come from the wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: gpu_check.sh OUTDIR [--wheels DIR] [--cpu-smoke] [--parts a,d,bc] [--budget SECONDS]}
shift
wheels=.whl
smoke=0
parts=
budget=480
while [ $# -gt 0 ]; do
    case $1 in
        --cpu-smoke) smoke=1 ;;
        --wheels) wheels=$2; shift ;;
        --parts) parts=$2; shift ;;
        --budget) budget=$2; shift ;;
        *) echo "gpu_check: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
mkdir -p "$out"
out=$(cd "$out" && pwd)
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
smoke_flag=() bc_flag=()
[ "$smoke" = 1 ] && smoke_flag=(--cpu-smoke) bc_flag=(--tiny)
[ -n "$parts" ] || { [ "$smoke" = 1 ] && parts=a,d || parts=a,d,bc; }

if [ "$smoke" = 0 ]; then
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
    df -h "$out" | tee -a "$out/gpu_check_env.log"
fi

status=0
deadline=$((SECONDS + budget))
# run_part NAME CAP COMMAND...: run it when NAME is in --parts, within
# min(CAP, what is left of the budget), its output in gpu_check_NAME.log
run_part() {
    local name=$1 cap=$2 left limit t0 rc
    shift 2
    case ",$parts," in *",$name,"*) ;; *) return 0 ;; esac
    left=$((deadline - SECONDS))
    if [ "$left" -lt 45 ]; then
        echo "gpu_check: part ($name) skipped: ${left} s left of the ${budget} s budget" | tee "$out/gpu_check_$name.log"
        status=1
        return 0
    fi
    limit=$((cap < left ? cap : left))
    echo "gpu_check: part ($name), at most ${limit} s: $*"
    t0=$SECONDS
    set +e
    GPU_CHECK_TIME_LIMIT=$limit timeout --kill-after=20 "$limit" "$@" 2>&1 | tee "$out/gpu_check_$name.log"
    rc=${PIPESTATUS[0]}
    set -e
    echo "gpu_check: part ($name) exit $rc after $((SECONDS - t0)) s" | tee -a "$out/gpu_check_$name.log"
    [ "$rc" = 0 ] || status=1
}

run_part a 180 "$py" bench/gpu_check_tiny.py "$out" "${smoke_flag[@]}"
run_part d 420 "$py" bench/gpu_check_step.py "$out" "${smoke_flag[@]}"
run_part bc 150 "$py" bench/gpu_check.py "$out" "${bc_flag[@]}"
echo "gpu_check: done in $SECONDS s, status $status; results in $out"
exit $status
