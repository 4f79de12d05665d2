"""Disk preflight (shala.launch.disk): the runs' need against free space under `results`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from shala.cli import main
from shala.launch.disk import check_disk, existing_parent, run_checkpoints, training_runs
from shala.launch.gpu_memory import GIB
from shala.launch.model_shape import count_parameters, shipped_config_path
from shala.plan import load_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def omni():
    path = shipped_config_path("Qwen/Qwen2.5-Omni-7B")
    return count_parameters(json.loads(path.read_text()), source=str(path))


@pytest.fixture
def paper(tmp_path, monkeypatch):
    """config.yaml with its results under tmp_path (MSP-Podcast has no
    source there: chaosnli and goemotions run)."""
    monkeypatch.chdir(ROOT)

    def make(**training):
        over = tmp_path / "over.yaml"
        over.write_text(yaml.safe_dump({"results": str(tmp_path / "res"), "training": training}))
        return load_config([ROOT / "config.yaml", over]), over
    return make


def sizes(shape):
    """By hand (shala.launch.disk doc): a ZeRO-3 checkpoint is fp32 master + Adam
    m, v of the trainable text model (12 B x T) + the bf16 16-bit gather of
    the whole thinker (2 B x P); the final weights 2 B x P."""
    P, T = shape.total, shape.groups["text"]
    return 12 * T + 2 * P, 2 * P


def test_checkpoint_counts():
    assert run_checkpoints({"save_total_limit": 2, "max_steps": -1, "save_steps": 200}, keep=False) == (3, 2, 0, False)
    assert run_checkpoints({"save_total_limit": 2, "max_steps": -1, "save_steps": 200}, keep=True) == (3, 2, 2, False)
    assert run_checkpoints({"save_total_limit": 2, "max_steps": 24, "save_steps": 1000}, keep=False) == (0, 0, 0, False)
    assert run_checkpoints({"save_total_limit": None, "max_steps": 1000, "save_steps": 200}, keep=True) == (5, 5, 5, False)
    assert run_checkpoints({"save_total_limit": None, "max_steps": -1}, keep=False)[3] is True
    assert run_checkpoints({"save_strategy": "no", "save_total_limit": 2}, keep=True) == (0, 0, 0, False)


def test_grid_of_the_paper_config(paper):
    config, _ = paper()
    runs = training_runs(config)
    # 2 datasets (msp_podcast has no source) x 5 trained methods x 1 seed
    assert len(runs) == 10
    assert sum(r.kind == "grpo" for r in runs) == 8 and sum(r.kind == "sft" for r in runs) == 2
    assert {r.path.parts[-3] for r in runs} == {"chaosnli", "goemotions"}
    config, _ = paper(warmup_sft={"enabled": True})
    assert len(training_runs(config)) == 12                    # + a warm-up per dataset and seed


def test_paper_need_by_hand(paper, omni):
    config, _ = paper()
    C, F = sizes(omni)
    disk = check_disk(config, omni, deepspeed=True, free_gib=1000)
    assert disk.checkpoint == C and disk.final == F
    assert C / GIB == pytest.approx(101.7, abs=0.05) and F / GIB == pytest.approx(16.6, abs=0.05)
    # every run leaves its final weights; the largest (GRPO) holds 3 checkpoints at its peak
    assert disk.need == pytest.approx(10 * F + 3 * C - F)
    assert disk.fits
    # keep_checkpoints: 8 GRPO runs leave 2 checkpoints each; the last one needs one more while it runs
    config, _ = paper(keep_checkpoints=True)
    disk = check_disk(config, omni, deepspeed=True, free_gib=1000)
    assert disk.need == pytest.approx(10 * F + 16 * C + (3 * C - F - 2 * C))
    config, _ = paper(grpo={**config["training"]["grpo"], "save_total_limit": 1})
    assert check_disk(config, omni, deepspeed=True, free_gib=1000).need == pytest.approx(10 * F + 2 * C - F)


def test_finished_and_interrupted_runs(paper, omni, tmp_path):
    config, _ = paper()
    C, F = sizes(omni)
    runs = training_runs(config)
    done = runs[0].path
    done.mkdir(parents=True)
    (done / "run.json").write_text("{}")
    partial = runs[1].path / "checkpoints" / "checkpoint-200"
    partial.mkdir(parents=True)
    with (partial / "state.bin").open("wb") as fh:      # sparse: 5 GiB by size, nothing on disk
        fh.truncate(5 * GIB)
    disk = check_disk(config, omni, deepspeed=True, free_gib=1000)
    assert len(disk.unfinished) == 9 and disk.existing == 5 * GIB
    assert disk.need == pytest.approx(9 * F + 3 * C - F - 5 * GIB)


def test_free_space_is_measured_under_the_nearest_existing_folder(tmp_path):
    assert existing_parent(tmp_path / "a" / "b" / "c") == tmp_path
    assert existing_parent(tmp_path) == tmp_path


def _preflight(capsys, *args):
    with pytest.raises(SystemExit) as exc:
        main(["preflight", "--config", str(ROOT / "config.yaml"), "--gpus", "2", "--gpu-mem", "139.8", *args])
        raise SystemExit(0)
    return exc.value.code or 0, capsys.readouterr().out


def test_cli_disk_section_and_error(paper, omni, capsys, tmp_path):
    _, over = paper()
    C, F = sizes(omni)
    need = (9 * F + 3 * C) / GIB
    rc, out = _preflight(capsys, "--config", str(over), "--free-disk", "1000")
    assert rc == 0, out
    assert f"disk: free 1000.0 GiB under {tmp_path} (--free-disk)" in out
    assert f"disk verdict: OK: {need:.1f} GiB needed" in out
    rc, out = _preflight(capsys, "--config", str(over), "--free-disk", "400")
    assert rc == 0 and "NOT ENOUGH (reported only; training jobs stop on it" in out  # by hand: reported
    rc, out = _preflight(capsys, "--config", str(over), "--free-disk", "400", "--enforce-disk")
    assert rc == 4, out
    verdict = next(line for line in out.splitlines() if line.startswith("disk verdict"))
    assert "NOT ENOUGH" in verdict and f"{need:.1f} GiB needed by 10 unfinished" in verdict
    assert "training.grpo.save_total_limit 1" in verdict and "training.keep_checkpoints" in verdict
    # a memory verdict of 3 wins over the disk's 4
    rc, _ = _preflight(capsys, "--config", str(over), "--free-disk", "400", "--gpu-mem", "4", "--enforce-disk")
    assert rc == 3


def test_cli_keep_checkpoints_and_report_only(paper, capsys):
    _, over = paper(keep_checkpoints=True)
    rc, out = _preflight(capsys, "--config", str(over), "--free-disk", "1000", "--enforce-disk")
    assert rc == 4 and "training.keep_checkpoints false (now true" in out
    _, over = paper(keep_checkpoints=True, check_disk=False)
    rc, out = _preflight(capsys, "--config", str(over), "--free-disk", "1000", "--enforce-disk")
    assert rc == 0 and "reported only; training.check_disk false" in out


def test_measured_free_space(paper, capsys, tmp_path):
    import shutil
    _, over = paper()
    rc, out = _preflight(capsys, "--config", str(over))
    free = shutil.disk_usage(tmp_path).free / GIB
    line = next(x for x in out.splitlines() if x.startswith("disk: free"))
    assert f"under {tmp_path} (shutil.disk_usage)" in line
    assert float(line.split()[2]) == pytest.approx(free, abs=1.0)
