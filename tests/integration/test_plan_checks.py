"""Mistakes caught at plan time (issue 27, item 4): a prompt placeholder that
no text field of the items provides stops `snakemake -n` and `shala config
show` with one line naming the field, before any job runs."""

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SNAKEMAKE = shutil.which("snakemake", path=str(BIN)) or "snakemake"
SHALA = shutil.which("shala", path=str(BIN)) or "shala"
MESSAGE = "field 'datasets.mine.prompt.target': {txt} is not a text field of the items (they have: text)"


def _run(*cmd):
    return subprocess.run(list(cmd), capture_output=True, text=True, cwd=ROOT)


def _overlay(tmp_path: Path) -> Path:
    """A new generic dataset whose prompt target names a field its items lack."""
    f = tmp_path / "mine.yaml"
    f.write_text(yaml.safe_dump({
        "results": str(tmp_path / "res"), "run_datasets": ["mine"],
        "datasets": {"mine": {
            "adapter": "generic", "source": str(tmp_path), "split": {"train": 0.7, "validation": 0.15},
            "options": {"format": "long", "files": ["annotations.csv"], "labels": ["no", "yes"]},
            "prompt": {"target": "Text: {txt}"}}}}))
    return f


def test_a_bad_target_stops_the_dry_run_in_one_line(tmp_path):
    r = _run(SNAKEMAKE, "-n", "--configfile", str(_overlay(tmp_path)))
    out = r.stdout + r.stderr
    assert r.returncode != 0
    lines = [line for line in out.splitlines() if MESSAGE in line]
    assert len(lines) == 1 and lines[0].startswith("shala: "), out[-2000:]
    assert "Traceback" not in out and 'File "' not in out
    assert not (tmp_path / "res").exists()  # nothing planned, nothing written


def test_a_bad_target_stops_config_show(tmp_path):
    r = _run(SHALA, "config", "show", "--config", str(_overlay(tmp_path)))
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.startswith("shala config: error: ") and MESSAGE in r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
