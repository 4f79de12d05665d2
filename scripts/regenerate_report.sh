#!/usr/bin/env bash
# Rebuild a published report from its committed metrics and run records, with
# the report config the workflow hands `shala report` (run_methods, the
# methods' specs, report): after a change to the report code, the committed
# reports say what the new rules say of the same numbers.
#   bash scripts/regenerate_report.sh docs/results/cpu-smollm2   # rewrites its reports/
set -euo pipefail
src=${1:?usage: bash scripts/regenerate_report.sh RESULTS_DIR [OUT]}
out=${2:-$src/reports}
cd "$(dirname "$0")/.."
cfg=$(mktemp --suffix .yaml)
trap 'rm -f "$cfg"' EXIT
.venv/bin/python - "$src/config.yaml" "$cfg" <<'PY'
import sys, yaml
c = yaml.safe_load(open(sys.argv[1]))
methods = {m: c["methods"][m] for m in c["run_methods"]}
yaml.safe_dump({"run_methods": c["run_methods"], "methods": methods, "report": c["report"]},
               open(sys.argv[2], "w"), sort_keys=True)
PY
metrics=$(cd "$src" && find metrics -name 'test.json' | sort | sed "s|^|$src/|")
runs=$(cd "$src" && find models -name run.json | sort | sed "s|^|$src/|")
.venv/bin/shala report --metrics $metrics --runs $runs --split test --out "$out" --config "$cfg"
