#!/usr/bin/env bash
# Does GRPO read the items? The known-answer control (datasets.control) on
# SmolLM2-135M with the demo's prompt and training regime (config/demo.yaml):
# train one method and seed, predict 90 test items, score them next to
# zero-shot and the label prior. PROBE_OVERLAY="a.yaml b.yaml" layers
# candidate settings on top (how the demo's regime was chosen); DATASET names
# another dataset of those overlays, whose `source` is read in place (e.g.
# the readable task of bench/readable_task.py).
#
#   bash bench/control_probe.sh OUTDIR SEED [METHOD]     # METHOD: shala (default), mls, ...; "-": baselines only
#   PROBE_OVERLAY=/tmp/rt/overlay.yaml DATASET=poll bash bench/control_probe.sh /tmp/rt 0 shala
#
# With WARMUP_STEPS=N the run starts from N steps of the soft-label SFT
# warm-up, which is scored alone too (warm-SEED).
# Prints each run's metrics line (shala evaluate); per-step entropy,
# zero-spread fraction and grad norm are in OUTDIR/m/METHOD-SEED/train_log.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(realpath -m "${1:?usage: control_probe.sh OUTDIR SEED [METHOD]}"); seed=${2:?seed}; method=${3:-shala}
ds=${DATASET:-control}; limit=${LIMIT:-90}
C=(--config config.yaml --config config/demo.yaml)
# PROBE_OVERLAY: extra overlays (space-separated paths) for a candidate regime
for o in ${PROBE_OVERLAY:-}; do C+=(--config "$o"); done
export HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false
sh=.venv/bin/shala
mkdir -p "$out"/{p,e}
[ -f "$out/model/config.json" ] || $sh fetch-model --out "$out/model" "${C[@]}" > "$out/fetch.log" 2>&1
if [ ! -f "$out/data/test.jsonl" ]; then
    if [ "$ds" = control ]; then
        $sh fetch-data control --out "$out/raw" "${C[@]}" > /dev/null
        $sh prepare control --source "$out/raw" --out "$out/data" "${C[@]}" > /dev/null
    else
        $sh prepare "$ds" --source "${SOURCE:-$out/raw}" --out "$out/data" "${C[@]}" > /dev/null
    fi
fi
score() {  # name predictions
    $sh evaluate --predictions "$2" --out "$out/e/$1.json" --items-out "$out/e/$1.items.csv" | sed "s/^/$1: /"
}
if [ ! -f "$out/e/zs.json" ]; then
    $sh predict --dataset "$ds" --data "$out/data" --model "$out/model" --split test --limit "$limit" \
        --out "$out/p/zs.jsonl" --threads 1 "${C[@]}" > "$out/pred-zs.log" 2>&1
    $sh reference prior --data "$out/data" --split test --limit "$limit" --out "$out/p/prior.jsonl" 2> /dev/null
    score zs "$out/p/zs.jsonl"; score ref_prior "$out/p/prior.jsonl"
fi
[ "$method" = - ] && exit 0
run="$method-$seed"
init=()
if [ -n "${WARMUP_STEPS:-}" ]; then
    $sh sft --dataset "$ds" --seed "$seed" --data "$out/data" --model "$out/model" --max-steps "$WARMUP_STEPS" \
        --out "$out/m/warm-$seed" --threads 1 "${C[@]}" > "$out/warm-$seed.log" 2>&1
    init=(--init-from "$out/m/warm-$seed")
    if [ ! -f "$out/e/warm-$seed.json" ]; then  # the warm-up alone, before GRPO
        $sh predict --dataset "$ds" --data "$out/data" --model "$out/m/warm-$seed" --split test --limit "$limit" \
            --out "$out/p/warm-$seed.jsonl" --threads 1 "${C[@]}" > "$out/pred-warm-$seed.log" 2>&1
        score "warm-$seed" "$out/p/warm-$seed.jsonl"
    fi
fi
$sh train --dataset "$ds" --method "$method" --seed "$seed" --data "$out/data" --model "$out/model" \
    --out "$out/m/$run" --threads 1 "${init[@]}" "${C[@]}" > "$out/train-$run.log" 2>&1
$sh predict --dataset "$ds" --data "$out/data" --model "$out/m/$run" --split test --limit "$limit" \
    --out "$out/p/$run.jsonl" --threads 1 "${C[@]}" > "$out/pred-$run.log" 2>&1
score "$run" "$out/p/$run.jsonl"
