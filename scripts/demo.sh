#!/usr/bin/env bash
# The demo: SmolLM2-135M-Instruct (from its PyPI GGUF wheel) on a ChaosNLI
# subset, on CPU: prepare, zero-shot, warm-up, three GRPO methods for a few
# steps, evaluation, results table (results/demo/reports/table1.md).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_venv.sh
export PATH="$PWD/.venv/bin:$PATH"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
start=$(date +%s)
snakemake --profile profiles/demo "$@"
echo "demo finished in $(( $(date +%s) - start )) s"
cat results/demo/reports/table1.md
