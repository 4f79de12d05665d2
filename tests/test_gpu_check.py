"""bench/gpu_check.sh --cpu-smoke: part (a) of the GPU check (tiny Omni
thinker, text and audio: 2 GRPO steps, save, reload, predict) on the CPU
without DeepSpeed, so the script a GPU machine runs keeps working."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_cpu_smoke_omni_audio(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    r = subprocess.run(["bash", "bench/gpu_check.sh", str(tmp_path), "--cpu-smoke"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    res = json.loads((tmp_path / "gpu_check_tiny.json").read_text())
    assert res["ok"] is True and set(res["runs"]) == {"chaosnli", "msp_podcast"}
    for name, run in res["runs"].items():
        assert run["checks"] == {"global_step": True, "audio": True, "predicted_every_item": True,
                                 "predict_audio": True, "weights_saved": True}, name
        assert run["world_size"] == 1
    # the audio run really heard audio, the text run did not
    audio = json.loads((tmp_path / "tiny" / "models" / "msp_podcast" / "run.json").read_text())
    text = json.loads((tmp_path / "tiny" / "models" / "chaosnli" / "run.json").read_text())
    assert audio["audio"] is True and text["audio"] is False
    assert not (tmp_path / "tiny" / "models" / "msp_podcast" / "checkpoints").exists()
    assert "(a) msp_podcast" in (tmp_path / "gpu_check_a.log").read_text()


def test_gpu_check_full_size_part_runs_at_toy_size(tmp_path):
    """Parts (b) and (c) (bench/gpu_check.py) on the same architecture at toy
    size: the script a GPU machine runs still builds, generates, trains a
    step and predicts, and freezes exactly the two towers."""
    r = subprocess.run([sys.executable, "bench/gpu_check.py", str(tmp_path), "--tiny"], cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    res = json.loads((tmp_path / "gpu_check.json").read_text())
    p = res["params"]
    assert p["total"] == p["trainable"] + p["frozen_towers"] and 0 < p["frozen_towers"] < p["total"]
    assert res["generation"]["rollouts"] == 16 and res["generation"]["tokens_per_s"] > 0
    assert [x["batch_size"] for x in res["predict"]] == [16, 64]
