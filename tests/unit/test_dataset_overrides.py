"""Per-dataset method subsets (datasets.<name>.methods) and GRPO fields
(datasets.<name>.grpo): which runs exist, and which settings a run gets."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from shala.errors import ConfigError
from shala.launch.disk import training_runs
from shala.plan import dataset_methods, load_config, validate
from shala.train.grpo import grpo_settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def demo():
    return load_config([ROOT / "config.yaml", ROOT / "config/demo.yaml"])


def test_methods_narrow_run_methods_in_their_order(demo):
    assert dataset_methods(demo, "control") == ["zs", "mls", "shala", "probe"]
    assert dataset_methods(demo, "chaosnli") == ["zs", "probe"]
    cfg = copy.deepcopy(demo)
    cfg["datasets"]["chaosnli"]["methods"] = ["shala", "zs"]   # config order, not the list's
    assert dataset_methods(cfg, "chaosnli") == ["zs", "shala"]


def test_a_method_outside_run_methods_is_an_error_naming_the_field(demo):
    cfg = copy.deepcopy(demo)
    cfg["datasets"]["chaosnli"]["methods"] = ["zs", "sft_soft"]
    with pytest.raises(ConfigError, match=r"datasets\.chaosnli\.methods.*sft_soft.*not in run_methods"):
        validate(cfg)


def test_dataset_grpo_fields_sit_between_training_grpo_and_method_overrides(demo):
    control = grpo_settings(demo, "shala", dataset="control")
    chaos = grpo_settings(demo, "shala", dataset="chaosnli")
    assert (control["max_steps"], control["per_device_train_batch_size"]) == (16, 16)
    assert (chaos["max_steps"], chaos["per_device_train_batch_size"]) == (8, 8)
    assert chaos["learning_rate"] == control["learning_rate"] == 5e-5
    # a method's overrides win over the dataset's fields
    cfg = copy.deepcopy(demo)
    cfg["methods"]["shala"]["overrides"] = {"max_steps": 3}
    assert grpo_settings(cfg, "shala", dataset="chaosnli")["max_steps"] == 3
    # and --max-steps over both
    assert grpo_settings(cfg, "shala", max_steps=2, dataset="chaosnli")["max_steps"] == 2


def test_disk_grid_counts_only_the_dataset_methods(demo):
    runs = training_runs(demo)
    names = sorted(str(Path(r.path).relative_to(Path(demo["results"]) / "models")) for r in runs)
    assert names == ["control/mls/seed0", "control/shala/seed0"]
    cfg = copy.deepcopy(demo)
    cfg["datasets"]["chaosnli"]["methods"] = ["zs", "shala"]   # the header's overlay
    names = sorted(str(Path(r.path).relative_to(Path(cfg["results"]) / "models")) for r in training_runs(cfg))
    assert names == ["chaosnli/shala/seed0", "control/mls/seed0", "control/shala/seed0"]
