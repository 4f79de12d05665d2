#!/usr/bin/env bash
# The demo: SmolLM2-135M-Instruct (from its PyPI GGUF wheel) on CPU, on the
# known-answer control (zs, mls, shala) and 128 ChaosNLI test items (zs,
# shala): prepare, zero-shot, GRPO, evaluation, report
# (results/demo/reports/report.md). Prints the wall time, install included,
# then whether training learned, Table 1, the paired tests and what they say
# of the paper's claims.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
bash scripts/setup_venv.sh
export PATH="$PWD/.venv/bin:$PATH"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
installed=$(date +%s)
snakemake --profile profiles/demo "$@"
end=$(date +%s)
reports=results/demo/reports
cat "$reports/learning.md" "$reports/table1.md" "$reports/significance.md" "$reports/claims.md"
echo "demo finished in $((end - start)) s (install $((installed - start)) s, workflow $((end - installed)) s)"
