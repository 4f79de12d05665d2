"""Defaults once: the schema holds them, and the CLI (shala.config) fills
them exactly as the workflow's snakemake.utils.validate does, so both read
the same config."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate as snakemake_validate

from shala.config import SCHEMA_PATH, deep_merge, fill_defaults, schema
from shala.plan import load_config
from shala.report.load import load_report_config, settings

ROOT = Path(__file__).resolve().parents[2]
SETUPS = [["config.yaml"], ["config.yaml", "config/demo.yaml"],
          ["config.yaml", "config/demo.yaml", "config/replication.yaml"],
          ["config.yaml", "config/demo.yaml", "config/replication.yaml", "config/replication_control16.yaml"],
          ["config.yaml", "config/demo.yaml", "bench/control_seeds.yaml"],
          ["config.yaml", "config/byod.yaml"]]


def _merged(files: list[str]) -> dict:
    out: dict = {}
    for f in files:
        out = deep_merge(out, yaml.safe_load((ROOT / f).read_text(encoding="utf-8")) or {})
    return out


def _plain(value):
    """Snakemake fills defaults as it read them from the schema (OrderedDicts)."""
    return json.loads(json.dumps(value))


@pytest.mark.parametrize("files", SETUPS, ids=["+".join(Path(f).stem for f in s) for s in SETUPS])
def test_cli_and_snakemake_fill_the_same_defaults(files):
    if not all((ROOT / f).is_file() for f in files):
        pytest.skip(f"not all of {files} exist")
    raw = _merged(files)
    by_snakemake = copy.deepcopy(raw)
    snakemake_validate(by_snakemake, str(SCHEMA_PATH))  # set_default=True, as rules/common.smk calls it
    by_cli = load_config([ROOT / f for f in files])
    assert by_cli == _plain(by_snakemake)
    assert by_cli != raw  # something was filled
    # inside present objects, defaulted objects and registry entries alike
    assert by_cli["report"]["max_parse_failure_rate"] == 0.5
    assert by_cli["cluster"]["jobs"]["train"]["mem_mb"] > 0
    assert all("task" in d["prompt"] and "text_only" in d for d in by_cli["datasets"].values())
    assert all("match_grpo" in m for m in by_cli["methods"].values())


def test_filling_is_idempotent_through_the_workflows_config_file(tmp_path):
    """The workflow hands the CLI its merged, filled config as one file
    (rules/common.smk); reading it again changes nothing."""
    filled = load_config([ROOT / "config.yaml"])
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(filled, sort_keys=True))
    assert load_config([path]) == filled


def test_unset_fields_without_a_default_stay_unset():
    cfg = load_config([ROOT / "config.yaml"])
    assert "methods" not in cfg["datasets"]["chaosnli"]  # every method of run_methods
    assert "grpo" not in cfg["datasets"]["chaosnli"]  # no per-dataset GRPO fields
    assert "warmup" not in cfg["methods"]["shala"]  # follows training.warmup_sft.enabled
    assert "threads" not in cfg["training"]  # every core


def test_blocks_built_by_hand_get_the_schema_defaults():
    prompt = fill_defaults({"target": "{text}"}, at="datasets.x.prompt")
    sch = schema()["properties"]["datasets"]["additionalProperties"]["properties"]["prompt"]["properties"]
    assert prompt["task"] == sch["task"]["default"] and prompt["constrained"] is False
    assert fill_defaults({}, at="model")["gguf_file"] == "SmolLM2-135M-Instruct.Q4_1.gguf"
    given = {"max_parse_failure_rate": 0.2}
    assert settings({"report": given}) == {"max_parse_failure_rate": 0.2, "min_pred_spread": 0.05}
    assert settings(None) == {"max_parse_failure_rate": 0.5, "min_pred_spread": 0.05}
    assert given == {"max_parse_failure_rate": 0.2}  # the caller's block is not changed


def test_the_reports_partial_config_gets_the_report_defaults(tmp_path):
    path = tmp_path / "report.yaml"
    path.write_text(yaml.safe_dump({"run_methods": ["zs", "shala"]}))
    cfg = load_report_config([path])
    assert cfg["report"] == {"max_parse_failure_rate": 0.5, "min_pred_spread": 0.05}
