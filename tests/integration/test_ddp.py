"""DDP without DeepSpeed (issue: unused parameters in an Omni thinker's idle
towers). `shala train` under torchrun on CPU trains with real DDP over
gloo: two ranks, a tiny random Qwen2.5-Omni thinker, two GRPO steps. With
gradient checkpointing on (DDP then does not look for unused parameters),
the unfrozen audio and vision towers break the second step; freezing them
(training.freeze_unused_towers, the default) fixes it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from shala.data.items import make_item
from shala.jsonio import write_jsonl
from shala.model.tiny_omni import build_tiny_omni

ROOT = Path(__file__).resolve().parents[2]
TORCHRUN = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"


@pytest.fixture(scope="module")
def ddp_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    build_tiny_omni(root / "omni", full=False)
    items = [make_item(id=f"i{k}", dataset="chaosnli", subset="snli",
                       inputs={"premise": f"A man {k}", "hypothesis": "A person"},
                       labels=["entailment", "neutral", "contradiction"], counts=[5, 3, 2], ambiguity="entropy")
             for k in range(8)]
    for it in items:
        it["split"] = "train"
    write_jsonl(root / "data" / "train.jsonl", items)
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    cfg["datasets"]["chaosnli"]["prompt"] = {"target": "P: {premise}\nH: {hypothesis}", "task": "Classes:",
                                             "output": "JSON: {label_list}"}
    cfg["training"].update(gpus=0, threads=1, accelerate_config=None)
    # 2 ranks x 2 completions = one prompt's 4 rollouts per step
    cfg["training"]["grpo"].update(max_steps=2, max_completion_length=8, bf16=False, per_device_train_batch_size=2,
                                   gradient_accumulation_steps=1, num_generations=4, save_steps=100,
                                   logging_steps=1, gradient_checkpointing=True)
    return root, cfg


def _torchrun(root: Path, cfg: dict, name: str) -> tuple[subprocess.CompletedProcess, Path]:
    (root / f"{name}.yaml").write_text(yaml.safe_dump(cfg))
    out = root / name
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([TORCHRUN, "--standalone", "--nproc_per_node", "2", "-m", "shala", "train",
                        "--dataset", "chaosnli", "--method", "shala", "--seed", "0", "--data", str(root / "data"),
                        "--model", str(root / "omni"), "--out", str(out), "--threads", "1",
                        "--config", str(root / f"{name}.yaml")],
                       capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    return r, out


def test_omni_ddp_two_steps_with_frozen_towers(ddp_setup):
    root, cfg = ddp_setup
    r, out = _torchrun(root, {**cfg, "training": {**cfg["training"], "freeze_unused_towers": True}}, "frozen")
    assert r.returncode == 0, r.stderr[-4000:]
    record = json.loads((out / "run.json").read_text())
    assert record["world_size"] == 2 and record["global_step"] == 2


def test_omni_ddp_fails_at_step_two_with_unfrozen_towers(ddp_setup):
    """Why the towers are frozen by default: the review's finding, reproduced."""
    root, cfg = ddp_setup
    r, out = _torchrun(root, {**cfg, "training": {**cfg["training"], "freeze_unused_towers": False}}, "unfrozen")
    assert r.returncode != 0
    assert "Expected to have finished reduction in the prior iteration" in r.stderr
    assert not (out / "run.json").exists()
