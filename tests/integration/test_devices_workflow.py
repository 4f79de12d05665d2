"""The workflow's GPU jobs run under ``shala gpus`` (devices of their own in a
local run), its CPU jobs exactly as before (dry runs)."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SNAKEMAKE = shutil.which("snakemake", path=str(Path(sys.executable).parent)) or "snakemake"


def _shell_lines(tmp_path: Path, gpus: int) -> list[str]:
    overlay = tmp_path / f"gpus{gpus}.yaml"
    overlay.write_text(yaml.safe_dump({"results": str(tmp_path / f"res{gpus}"), "training": {"gpus": gpus}}))
    r = subprocess.run([SNAKEMAKE, "-n", "-p", "--configfile", "config/demo.yaml", str(overlay)],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return [line.removeprefix("Shell command: ") for line in r.stdout.splitlines()]


@pytest.mark.gpu_first_run
def test_gpu_jobs_hold_their_devices_cpu_jobs_unchanged(tmp_path):
    lines = _shell_lines(tmp_path, 2)
    res = tmp_path / "res2"
    train = [c for c in lines if " train --dataset " in c]
    predict = [c for c in lines if " predict --dataset " in c]
    assert train and predict
    # preflight and the launcher run inside one hold of training.gpus devices
    assert all(c.startswith("(shala gpus --count 2 -- bash -c 'shala preflight --slice ") for c in train)
    assert all(re.search(r" --gpus 2 --enforce-disk --dataset \w+ --method \w+ --seed \d+ && exec \"\$@\"' job shala train "
                         r"--dataset ", c) for c in train)
    assert all(f"{res}/models/" in c for c in train)
    assert all(c.startswith("HF_HUB_OFFLINE=1 shala gpus --count 1 -- shala predict --dataset ") for c in predict)
    assert all(c.endswith(".log 2>&1") for c in train + predict)  # the wrapper's line goes into the job's log
    cpu = _shell_lines(tmp_path, 0)
    assert not any("shala gpus" in c or "preflight" in c for c in cpu)
    assert any(c.startswith("( shala train --dataset ") for c in cpu)
    assert any(c.startswith("HF_HUB_OFFLINE=1 shala predict --dataset ") for c in cpu)
