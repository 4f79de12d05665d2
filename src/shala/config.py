"""Configuration: YAML files merged in order, validated against one JSON schema.

The Snakemake workflow (rules/common.smk) and the CLI validate against the
same schema file, so a config that runs under Snakemake runs by hand too.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from .errors import ConfigError

SCHEMA_PATH = Path(str(resources.files("shala") / "schemas" / "config.schema.json"))


def schema() -> dict[str, Any]:
    import json

    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Snakemake's overlay semantics: nested dicts merge, anything else replaces."""
    out = copy.deepcopy(base)
    for key, val in over.items():
        if isinstance(val, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], val)
        else:
            out[key] = copy.deepcopy(val)
    return out


def validate(config: dict[str, Any], where: str = "config") -> dict[str, Any]:
    """Raise ConfigError naming the first offending field."""
    validator = jsonschema.Draft202012Validator(schema())
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        field = ".".join(str(p) for p in err.absolute_path) or "(top level)"
        raise ConfigError(f"{where}: field '{field}': {err.message}")
    for name in config.get("run_datasets", []):
        if name not in config["datasets"]:
            raise ConfigError(f"{where}: field 'run_datasets': unknown dataset {name!r}")
    for name in config.get("run_methods", []):
        if name not in config["methods"]:
            raise ConfigError(f"{where}: field 'run_methods': unknown method {name!r}")
    check_registries(config, where)
    return config


def check_registries(config: dict[str, Any], where: str = "config") -> None:
    """Names that must be keys of a code registry (the schema leaves them
    open, so a new adapter, reward or reference predictor is added in code
    alone): datasets.*.adapter, methods.*.reward, reference_predictors."""
    from .adapters import ADAPTERS
    from .baselines import REFERENCE_PREDICTORS
    from .rewards import REWARDS

    def check(field: str, name: Any, registry: dict[str, Any], what: str) -> None:
        if name not in registry:
            raise ConfigError(f"{where}: field '{field}': unknown {what} {name!r}; known: {', '.join(registry)}")

    for ds, d in (config.get("datasets") or {}).items():
        check(f"datasets.{ds}.adapter", d.get("adapter"), ADAPTERS, "adapter")
    for m, d in (config.get("methods") or {}).items():
        if d.get("trainer") == "grpo":
            check(f"methods.{m}.reward", d.get("reward"), REWARDS, "reward")
    for i, name in enumerate(config.get("reference_predictors") or []):
        check(f"reference_predictors.{i}", name, REFERENCE_PREDICTORS, "reference predictor")


def load_config(paths: Iterable[str | Path]) -> dict[str, Any]:
    """Load and merge YAML files (later ones overlay earlier ones), then validate."""
    merged: dict[str, Any] = {}
    names = []
    for p in paths:
        p = Path(p)
        if not p.is_file():
            raise ConfigError(f"{p}: config file not found")
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            line = getattr(getattr(exc, "problem_mark", None), "line", None)
            raise ConfigError(f"{p}{':' + str(line + 1) if line is not None else ''}: invalid YAML") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: top level must be a mapping")
        merged = deep_merge(merged, data)
        names.append(str(p))
    return validate(merged, where=" + ".join(names) or "config")


def is_licensed(dataset_config: dict[str, Any]) -> bool:
    """Whether a dataset's adapter has no download route (``LICENSED``)."""
    from .adapters import get_adapter

    return bool(getattr(get_adapter(dataset_config["adapter"]), "LICENSED", False))


def available_datasets(config: dict[str, Any]) -> tuple[list[str], list[str]]:
    """``run_datasets`` split into those the workflow can run and, for each
    one left out, a line saying how to include it.

    A licensed dataset (MSP-Podcast) without ``source`` cannot be had from
    any public place; the paper's command then runs every other dataset
    rather than stopping at its fetch job.
    """
    kept, left_out = [], []
    for ds in config.get("run_datasets", []):
        d = config["datasets"][ds]
        if is_licensed(d) and not d.get("source"):
            left_out.append(f"shala: {ds} left out: its data is licensed; set datasets.{ds}.source "
                            f"to your local copy to include it")
        else:
            kept.append(ds)
    return kept, left_out


def dataset_cfg(config: dict[str, Any], dataset: str) -> dict[str, Any]:
    try:
        return config["datasets"][dataset]
    except KeyError:
        known = ", ".join(config.get("datasets", {}))
        raise ConfigError(f"unknown dataset {dataset!r}; configured: {known}") from None

