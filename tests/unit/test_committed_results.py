"""The committed CPU runs (docs/results/) must reproduce from their commands:
every GRPO run record there asks for exactly the settings that its configs
give that run today. An edit to the demo's regime that a replication
inherits (the control's step count, say) fails here until the replication
is rerun or pins the old value.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shala.config import load_config
from shala.train.grpo import grpo_settings

ROOT = Path(__file__).resolve().parents[2]
BASE = ["config.yaml", "config/demo.yaml", "config/replication.yaml"]
# committed folder: (its configs, GRPO runs it holds: datasets x mls, shala_no_ambi, shala x 3 seeds)
COMMITTED = {
    "cpu-smollm2": (BASE, 18),
    "cpu-smollm2-control16": ([*BASE, "config/replication_control16.yaml"], 9),
}


def _grpo_runs(name: str) -> list[Path]:
    runs = sorted((ROOT / "docs" / "results" / name).glob("models/*/*/seed*/run.json"))
    return [r for r in runs if json.loads(r.read_text())["kind"] == "grpo"]


@pytest.mark.parametrize("name", COMMITTED)
def test_each_committed_run_holds_every_trained_run(name):
    assert len(_grpo_runs(name)) == COMMITTED[name][1]


@pytest.mark.parametrize("name,run", [(n, r) for n in COMMITTED for r in _grpo_runs(n)],
                         ids=lambda x: x if isinstance(x, str) else "/".join(x.parts[-4:-1]))
def test_each_committed_grpo_run_asked_for_what_the_config_gives_it(name, run):
    config = load_config([ROOT / f for f in COMMITTED[name][0]])
    rec = json.loads(run.read_text())
    want = grpo_settings(config, rec["method"], dataset=rec["dataset"])
    asked = rec["grpo_config"]["requested"]
    differ = {k: (asked.get(k), v) for k, v in want.items() if asked.get(k) != v}
    assert differ == {}, f"{run}: committed vs {COMMITTED[name][0]} today: {differ}"
