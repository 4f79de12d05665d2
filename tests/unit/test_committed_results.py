"""The committed CPU replication (docs/results/cpu-smollm2) must reproduce
from its command: every GRPO run record there asks for exactly the settings
that config/demo.yaml + config/replication.yaml give that run today. An edit
to the demo's regime that the replication inherits (the control's step
count, say) fails here until the replication is rerun or pins the old value.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shala.config import load_config
from shala.train.grpo import grpo_settings

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "docs" / "results" / "cpu-smollm2"
RUNS = sorted(COMMITTED.glob("models/*/*/seed*/run.json"))


@pytest.fixture(scope="module")
def replication():
    return load_config([ROOT / "config.yaml", ROOT / "config/demo.yaml", ROOT / "config/replication.yaml"])


def test_the_committed_replication_holds_every_trained_run():
    grpo = [r for r in RUNS if json.loads(r.read_text())["kind"] == "grpo"]
    # control and ChaosNLI x mls, shala_no_ambi, shala x 3 seeds
    assert len(grpo) == 18


@pytest.mark.parametrize("run", [r for r in RUNS if json.loads(r.read_text())["kind"] == "grpo"],
                         ids=lambda p: str(p.parent.relative_to(COMMITTED / "models")))
def test_each_committed_grpo_run_asked_for_what_the_config_gives_it(run, replication):
    rec = json.loads(run.read_text())
    want = grpo_settings(replication, rec["method"], dataset=rec["dataset"])
    asked = rec["grpo_config"]["requested"]
    differ = {k: (asked.get(k), v) for k, v in want.items() if asked.get(k) != v}
    assert differ == {}, f"{run}: committed vs config/replication.yaml today: {differ}"
