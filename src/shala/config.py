"""Configuration: YAML files merged in order, validated against one JSON schema.

The Snakemake workflow (rules/common.smk) and the CLI validate against the
same schema file and fill its ``default`` values the same way, so a config
that runs under Snakemake runs by hand too, with the same values. The
schema is the one place a default lives: code reads ``config[...]``.
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


def _with_defaults(validator_class):
    """``validator_class`` extended to set each missing property that has a
    ``default`` before checking it, as ``snakemake.utils.validate`` (with
    ``set_default=True``) does: through ``properties`` only, so defaults are
    filled inside every object that is present or defaulted itself,
    ``additionalProperties`` entries (``datasets.<name>``) and array items
    included. Each default is copied, so no two configs share one."""
    check_properties = validator_class.VALIDATORS["properties"]

    def properties(validator, props, instance, sch):
        if validator.is_type(instance, "object"):
            for key, sub in props.items():
                if "default" in sub:
                    instance.setdefault(key, copy.deepcopy(sub["default"]))
        yield from check_properties(validator, props, instance, sch)

    return jsonschema.validators.extend(validator_class, {"properties": properties})


_FILLING_VALIDATOR = _with_defaults(jsonschema.Draft202012Validator)


def fill_defaults(config: dict[str, Any], at: str = "") -> dict[str, Any]:
    """Set, in place, every schema default ``config`` lacks, without judging
    it: for partial configs (the report's file, blocks built by hand in
    benchmarks and tests). ``at``: ``config`` is the block at this dotted
    path (``model``, ``datasets.x.prompt``), not a whole config. Returns
    ``config``."""
    root = config
    for key in reversed(at.split(".") if at else []):
        root = {key: root}
    for _ in _FILLING_VALIDATOR(schema()).iter_errors(root):
        pass
    return config


def check_schema(config: dict[str, Any], where: str = "config", *, partial: bool = False) -> dict[str, Any]:
    """Fill schema defaults into ``config`` (in place) and raise ConfigError
    naming the first offending field. ``partial``: the top-level required
    fields may be missing (the report reads a config holding only its own
    values)."""
    sch = schema()
    if partial:
        sch["required"] = []
    errors = sorted(_FILLING_VALIDATOR(sch).iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        field = ".".join(str(p) for p in err.absolute_path) or "(top level)"
        raise ConfigError(f"{where}: field '{field}': {err.message}")
    return config


def validate(config: dict[str, Any], where: str = "config") -> dict[str, Any]:
    """The one check of a whole config, by every command that reads one:
    :func:`check_schema` (defaults filled), then the names that must be
    keys of ``datasets``, ``methods`` and the code registries."""
    check_schema(config, where)
    check_registries(config, where)
    return config


def check_registries(config: dict[str, Any], where: str = "config") -> None:
    """Names that must be keys of a code registry (the schema leaves them
    open, so a new adapter, reward or reference predictor is added in code
    alone): datasets.*.adapter, methods.*.reward, reference_predictors; and
    the names in run_datasets / run_methods, which must be configured, so a
    typo stops the plan with the field named rather than a KeyError; split
    fractions that exceed 1 and options an adapter does not know (its own
    ``check_options``), caught here rather than in the prepare job; and a
    prompt placeholder that the adapter's items do not fill, caught here
    rather than in the first model job."""
    from .data.adapters import ADAPTERS, item_text_fields
    from .evaluation.reference import REFERENCE_PREDICTORS
    from .prompts import placeholder_problem
    from .train.rewards import REWARDS

    def check(field: str, name: Any, registry: dict[str, Any], what: str) -> None:
        if name not in registry:
            raise ConfigError(f"{where}: field '{field}': unknown {what} {name!r}; known: {', '.join(registry)}")

    for ds in config["run_datasets"]:
        check("run_datasets", ds, config["datasets"], "dataset")
    for m in config["run_methods"]:
        check("run_methods", m, config["methods"], "method")
    for ds in config["run_datasets"]:
        dataset_methods(config, ds, where)
    for ds, d in config["datasets"].items():
        check(f"datasets.{ds}.adapter", d["adapter"], ADAPTERS, "adapter")
        split = d["split"]
        if split["train"] + split["validation"] > 1:
            raise ConfigError(f"{where}: field 'datasets.{ds}.split': train {split['train']} + validation "
                              f"{split['validation']} exceed 1 (test gets the rest)")
        checker = getattr(ADAPTERS[d["adapter"]], "check_options", None)
        if checker is not None and ds in config["run_datasets"]:  # an adapter's own check of its options, at plan time rather than at prepare
            try:
                checker(d["options"])
            except ConfigError as exc:
                raise ConfigError(f"{where}: field 'datasets.{ds}.options': {exc}") from None
        if ds in config["run_datasets"]:
            problem = placeholder_problem(d["prompt"], item_text_fields(d["adapter"], d["options"]))
            if problem:
                raise ConfigError(f"{where}: field 'datasets.{ds}.prompt.{problem[0]}': {problem[1]}")
    for m, d in config["methods"].items():
        if d["trainer"] == "grpo":
            check(f"methods.{m}.reward", d["reward"], REWARDS, "reward")
    for i, name in enumerate(config["reference_predictors"]):
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
    from .data.adapters import get_adapter

    return bool(getattr(get_adapter(dataset_config["adapter"]), "LICENSED", False))


def available_datasets(config: dict[str, Any]) -> tuple[list[str], list[str]]:
    """``run_datasets`` split into those the workflow can run and, for each
    one left out, a line saying how to include it.

    A licensed dataset (MSP-Podcast) without ``source`` cannot be had from
    any public place; the paper's command then runs every other dataset
    rather than stopping at its fetch job.
    """
    kept, left_out = [], []
    for ds in config["run_datasets"]:
        d = config["datasets"][ds]
        if is_licensed(d) and not d["source"]:
            left_out.append(f"shala: {ds} left out: its data is licensed; set datasets.{ds}.source "
                            f"to your local copy to include it")
        else:
            kept.append(ds)
    return kept, left_out


def dataset_methods(config: dict[str, Any], dataset: str, where: str = "config") -> list[str]:
    """The methods run on ``dataset``: ``run_methods``, narrowed (in that
    order) by ``datasets.<dataset>.methods`` where it is set."""
    only = config["datasets"][dataset].get("methods")
    methods = list(config["run_methods"])
    if only is None:
        return methods
    stray = [m for m in only if m not in methods]
    if stray:
        raise ConfigError(f"{where}: field 'datasets.{dataset}.methods': {stray} not in run_methods {methods}")
    return [m for m in methods if m in only]


def dataset_cfg(config: dict[str, Any], dataset: str) -> dict[str, Any]:
    try:
        return config["datasets"][dataset]
    except KeyError:
        known = ", ".join(config["datasets"])
        raise ConfigError(f"unknown dataset {dataset!r}; configured: {known}") from None

