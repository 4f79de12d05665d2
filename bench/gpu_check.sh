#!/usr/bin/env bash
# The project's GPU check, for a bare machine with no network. One 10-minute
# device call on an 80 GB H100: the default --budget, 540 s, covers set-up
# and every part (each stopped at its limit, +20 s grace at most).
#
#   bash bench/gpu_wheels.sh .whl            # first, where PyPI is reachable
#   bash bench/gpu_check.sh OUTDIR [--wheels .whl] [--parts a,d,bc] [--budget 540] [--d-budget 420] [--force-d]
#                              [--vllm-python PY]
#   bash bench/gpu_check.sh OUTDIR --cpu-smoke [--parts a,d]   # the test suite: CPU, toy sizes
#
# Set-up: the wheels of --wheels go into a temporary site folder (one at a
# time where the batch fails, so a bad wheel loses only itself), the tree's
# src/ goes on PYTHONPATH (shala as checked out). Then bench/gpu_probe.py
# imports each package, records its version or its error's first line in
# OUTDIR/gpu_check_env.json and goes on, and plans the parts: each runs, or
# is skipped with its reason when something it needs is missing. Each part
# writes its own log and JSON to OUTDIR; a skipped part's JSON holds
# "skipped" and the reason; a part that fails or times out does not stop
# the next. Outcomes: gpu_check_env.json's "parts".
#
# (a) bench/gpu_check_tiny.py -> gpu_check_a.{log,json}: a tiny random
#     Qwen2.5-Omni thinker, text and audio, 2 GRPO steps through `accelerate
#     launch --num_processes 1` with config/accelerate_zero3.yaml in bf16,
#     save, reload, predict; JSON after each run (--cpu-smoke: one process,
#     no DeepSpeed). Needs torch, transformers, accelerate, datasets, trl,
#     deepspeed, shala.
# (d) bench/gpu_check_step.py -> gpu_check_d.{log,json}: the full-size 7B
#     thinker (random weights), 2 GRPO steps of the paper's per-device
#     setting under ZeRO-3 on one GPU through the same launch: seconds per
#     step, peak memory, shala.launch.gpu_memory's estimate, save time
#     (--cpu-smoke: toy size, ZeRO-3 on a CPU rank). Needs what (a) needs
#     and a GPU with the estimate's 136.0 GiB: skipped on an 80 GB card
#     (the probe compares before the 17.9 GB checkpoint is built), so its
#     time goes to the others; --force-d runs it anyway.
# (bc) bench/gpu_check.py -> gpu_check_bc.{log,json}: the full-size thinker
#     without DeepSpeed: generation tokens/s, forward + backward and its peak
#     memory; prediction items/s against the HBM bound; greedy decoding at
#     the rollout shape per engine: generate, continuous batching, vLLM
#     (bench/gpu_check_vllm.py: tokens/s, the bound, engine start apart)
#     (--cpu-smoke: --tiny). Needs torch and transformers only; the vLLM row
#     runs in the Python that has vLLM: $py itself, else --vllm-python (or
#     $VLLM_PYTHON; without --cpu-smoke also .venv-vllm/bin/python) as a
#     child of the part, else records why not. vLLM's CUDA wheel (306 MiB)
#     is more than a device call carries (64 MiB): on the lent machines the
#     row runs only where their image gains vLLM.
# Time: --budget counts from the start, set-up included. A part gets
# min(its cap, what is left less the floors of the planned parts after it):
# caps a 240, d --d-budget (420), bc 240; floors a 90, d 300, bc 90. A part
# whose share is under its floor is skipped ("time"). Where (d) fits (an
# H200) it gets 300-330 s of the default budget: run `--parts d` in a call
# of its own for its full 420 s, and `--parts a,bc` in another.
# Exit status 0 when every part asked for passed or was skipped for memory.
set -euo pipefail
cd "$(dirname "$0")/.."
usage="gpu_check.sh OUTDIR [--wheels DIR] [--cpu-smoke] [--parts a,d,bc] [--budget S] [--d-budget S] [--force-d]"
usage+=" [--vllm-python PY]"
out=${1:?usage: $usage}
shift
wheels=.whl smoke=0 parts= budget= d_budget=420 force_d=0 vllm_py=${VLLM_PYTHON:-}
while [ $# -gt 0 ]; do
    case $1 in
        --cpu-smoke) smoke=1 ;;
        --wheels) wheels=$2; shift ;;
        --parts) parts=$2; shift ;;
        --budget) budget=$2; shift ;;
        --d-budget) d_budget=$2; shift ;;
        --force-d) force_d=1 ;;
        --vllm-python) vllm_py=$2; shift ;;
        *) echo "gpu_check: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
mkdir -p "$out"
out=$(cd "$out" && pwd)
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
declare -A cap floor
if [ "$smoke" = 1 ]; then
    # the CPU of CI is slow and unmeasured: wide limits, nothing reserved
    smoke_flag=(--cpu-smoke) bc_flag=(--tiny) parts=${parts:-a,d} budget=${budget:-1800}
    cap=([a]=900 [d]=900 [bc]=600) floor=([a]=0 [d]=0 [bc]=0)
else
    smoke_flag=() bc_flag=() parts=${parts:-a,d,bc} budget=${budget:-540}
    cap=([a]=240 [d]=$d_budget [bc]=240) floor=([a]=90 [d]=300 [bc]=90)
fi
rm -f "$out"/gpu_check_{env,a,d,bc}.json  # a stale result must not pass for this run's

pp="$PWD/src"  # shala as checked out, never a stale wheel
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failures=$tmp/wheels_failed plan=$tmp/plan
touch "$failures"
probe=(--parts "$parts")
if [ "$smoke" = 0 ]; then
    if compgen -G "$wheels/*.whl" >/dev/null; then
        site=$tmp/site
        pipi=("$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site")
        echo "gpu_check: installing $(ls "$wheels"/*.whl | wc -l) wheels from $wheels"
        if ! "${pipi[@]}" "$wheels"/*.whl >"$out/gpu_check_wheels.log" 2>&1; then
            for w in "$wheels"/*.whl; do
                "${pipi[@]}" "$w" >>"$out/gpu_check_wheels.log" 2>&1 || basename "$w" >>"$failures"
            done
            echo "gpu_check: wheels that did not install: $(tr '\n' ' ' <"$failures")"
        fi
        pp="$site:$pp"
        probe+=(--wheels "$wheels" --wheel-failures "$failures")
        export PATH="$site/bin:$PATH"
    else
        echo "gpu_check: no wheels in $wheels: the machine's packages only"
    fi
fi
export PYTHONPATH="$pp${PYTHONPATH:+:$PYTHONPATH}"

status=0
probe+=(--plan "$plan")
[ "$smoke" = 1 ] && probe+=(--cpu-smoke)
[ "$force_d" = 1 ] && probe+=(--force-d)
set +e
timeout --kill-after=10 240 "$py" bench/gpu_probe.py "$out" "${probe[@]}" 2>&1 | tee "$out/gpu_check_env.log"
rc=${PIPESTATUS[0]}
set -e
if [ ! -s "$plan" ]; then
    echo "gpu_check: the probe gave no plan (exit $rc): every part runs, and fails on its own" |
        tee -a "$out/gpu_check_env.log"
    status=1
fi
[ "$smoke" = 1 ] || df -h "$out" | tee -a "$out/gpu_check_env.log"

# the probe's plan for a part: field 2 run|skip, 3 kind, 4 reason; empty where it has none
plan_field() { awk -F'\t' -v p="$1" -v f="$2" '$1 == p { print $f; exit }' "$plan"; }
asked() { case ",$parts," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }
# the floors of the planned parts after $1: time this part must leave them
reserve_after() {
    local p after=0 sum=0
    for p in a d bc; do
        if [ "$after" = 1 ] && asked "$p" && [ "$(plan_field "$p" 2)" != skip ]; then sum=$((sum + ${floor[$p]})); fi
        [ "$p" = "$1" ] && after=1
    done
    echo "$sum"
}
record() {  # PART STATUS [gpu_probe.py --record options]
    "$py" bench/gpu_probe.py "$out" --record "$@" >/dev/null 2>&1 || echo "gpu_check: could not record part ($1)" >&2
}
# run_part NAME COMMAND...: per the plan and the time left, output in gpu_check_NAME.log
run_part() {
    local name=$1 left share limit t0 rc state reason kind
    shift
    asked "$name" || return 0
    if [ "$(plan_field "$name" 2)" = skip ]; then
        reason=$(plan_field "$name" 4) kind=$(plan_field "$name" 3)
        echo "gpu_check: part ($name) skipped: $reason" | tee "$out/gpu_check_$name.log"
        record "$name" skipped --reason "$reason"
        [ "$kind" = memory ] || status=1
        return 0
    fi
    left=$((budget - SECONDS))
    share=$((left - $(reserve_after "$name")))
    limit=$((${cap[$name]} < share ? ${cap[$name]} : share))
    if [ "$limit" -lt "${floor[$name]}" ] || [ "$limit" -lt 20 ]; then
        reason="time: ${share} s of the ${budget} s budget left for it, under its ${floor[$name]} s floor;"
        reason+=" run it alone (--parts $name)"
        echo "gpu_check: part ($name) skipped: $reason" | tee "$out/gpu_check_$name.log"
        record "$name" skipped --reason "$reason"
        status=1
        return 0
    fi
    echo "gpu_check: part ($name), at most ${limit} s: $*"
    t0=$SECONDS
    set +e
    GPU_CHECK_TIME_LIMIT=$limit timeout --kill-after=20 "$limit" "$@" 2>&1 | tee "$out/gpu_check_$name.log"
    rc=${PIPESTATUS[0]}
    set -e
    case $rc in 0) state=passed ;; 124|137) state="timed out" ;; *) state=failed ;; esac
    echo "gpu_check: part ($name) exit $rc ($state) after $((SECONDS - t0)) s" | tee -a "$out/gpu_check_$name.log"
    record "$name" "$state" --exit "$rc" --seconds $((SECONDS - t0)) --limit "$limit"
    [ "$rc" = 0 ] || status=1
}

# the vLLM row of part (bc) (header): in $py where vLLM is there, else in the first Python that has it
has_vllm() { PYTHONPATH=${2:-$PYTHONPATH} timeout 60 "$1" -c \
    'import importlib.util, sys; sys.exit(importlib.util.find_spec("vllm") is None)' >/dev/null 2>&1; }
if asked bc && ! has_vllm "$py"; then
    [ -z "$vllm_py" ] && [ "$smoke" = 0 ] && [ -x .venv-vllm/bin/python ] && vllm_py=$PWD/.venv-vllm/bin/python
    if [ -n "$vllm_py" ] && has_vllm "$vllm_py" "$PWD/src"; then
        export GPU_CHECK_VLLM_PYTHON=$vllm_py
        echo "gpu_check: part (bc)'s vLLM row runs in $vllm_py (vLLM does not import in $py)"
    else
        echo "gpu_check: vLLM is not in $py${vllm_py:+ nor in $vllm_py}: part (bc) records why"
    fi
fi
d_flag=()
[ "$(plan_field d 2)" = run ] && d_flag=(--force)  # the probe gated it already, with torch's reading
run_part a "$py" bench/gpu_check_tiny.py "$out" "${smoke_flag[@]}"
run_part d "$py" bench/gpu_check_step.py "$out" "${smoke_flag[@]}" "${d_flag[@]}"
run_part bc "$py" bench/gpu_check.py "$out" "${bc_flag[@]}"
echo "gpu_check: done in $SECONDS s, status $status; results in $out (outcomes: gpu_check_env.json \"parts\")"
exit $status
