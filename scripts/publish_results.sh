#!/usr/bin/env bash
# Copy a finished run's report, metrics and run records (no weights, no raw
# data, no predictions) into a folder to commit, e.g. docs/results/cpu-smollm2.
#
#   bash scripts/publish_results.sh results/cpu-smollm2 docs/results/cpu-smollm2
set -euo pipefail
src=${1:?usage: publish_results.sh RESULTS DEST}
dest=${2:?usage: publish_results.sh RESULTS DEST}
[ -f "$src/reports/table1.csv" ] || { echo "publish_results: $src/reports/table1.csv not found (run not finished?)" >&2; exit 2; }
# replace what this script writes; a README.md written by hand beside it stays
rm -rf "$dest/reports" "$dest/metrics" "$dest/models" "$dest/predictions" "$dest/data" "$dest/config.yaml"
mkdir -p "$dest"
cp -r "$src/reports" "$dest/reports"
cp "$src/.config/config.yaml" "$dest/config.yaml"
# the metrics and the per-item scores behind every table and paired test
(cd "$src" && find metrics -name '*.json' -o -name '*.items.csv') | while read -r f; do
    mkdir -p "$dest/$(dirname "$f")" && cp "$src/$f" "$dest/$f"
done
# run records: training (run.json, train_log.jsonl), prediction (*.run.json), data (stats, prepare)
(cd "$src" && find models predictions data \( -name run.json -o -name train_log.jsonl -o -name '*.run.json' \
    -o -name stats.json -o -name prepare.json \)) | while read -r f; do
    mkdir -p "$dest/$(dirname "$f")" && cp "$src/$f" "$dest/$f"
done
du -sh "$dest"
