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


def read_config(paths: Iterable[str | Path]) -> dict[str, Any]:
    """Load and merge YAML files (later ones overlay earlier ones), then check
    them against the schema (defaults filled). The names the registries
    decide are checked a floor up (:func:`shala.plan.load_config`)."""
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
    return check_schema(merged, where=" + ".join(names) or "config")


def dataset_cfg(config: dict[str, Any], dataset: str) -> dict[str, Any]:
    try:
        return config["datasets"][dataset]
    except KeyError:
        known = ", ".join(config["datasets"])
        raise ConfigError(f"unknown dataset {dataset!r}; configured: {known}") from None



# --------------------------------------------------------------- declared reads

def reads_for(reads: Iterable[str], **fields: Any) -> list[str]:
    """A step's declared config paths with its wildcards filled
    (``datasets.{dataset}.prompt`` -> ``datasets.chaosnli.prompt``)."""
    try:
        return [r.format(**fields) for r in reads]
    except KeyError as exc:
        raise ConfigError(f"a declared config path needs {exc.args[0]!r}, which this step does not have") from None


def take(config: dict[str, Any], reads: Iterable[str]) -> dict[str, Any]:
    """The part of ``config`` at the declared paths, as plain nested dicts
    (a path the config does not hold is left out, its existing parents kept;
    ``*`` stands for every key at its level): what a job is given."""
    def pick(node: Any, keys: list[str]) -> Any:
        if not keys:
            return copy.deepcopy(node)
        if not isinstance(node, dict):
            return {}
        names = list(node) if keys[0] == "*" else [keys[0]] if keys[0] in node else []
        return {k: pick(node[k], keys[1:]) for k in names}

    out: dict[str, Any] = {}
    for r in reads:
        out = deep_merge(out, copy.deepcopy(config) if r == "*" else pick(config, r.split(".")))
    return out


def _covers(read: str, path: str) -> str | None:
    """"leaf" when ``path`` is at or under the declared ``read``, "node" when
    it leads to it, else None (``*`` matches any one key)."""
    if read == "*":
        return "leaf"
    r, p = read.split("."), path.split(".")
    if any(a != "*" and a != b for a, b in zip(r, p)):
        return None
    return "leaf" if len(p) >= len(r) else "node"


class UndeclaredRead(ConfigError):
    """A step read a config value it does not declare: its rerun trigger
    (derived from the declaration) would miss an edit of that value."""


class Slice(dict):
    """A config restricted to a step's declared paths. Reading any other key
    raises :class:`UndeclaredRead` instead of answering None or KeyError,
    so a step that reads more than it declares fails in its tests, not
    silently in a rerun that should have happened. Iteration and copies
    see only the declared values."""

    def __init__(self, data: dict[str, Any], reads: Iterable[str], step: str, at: str = "") -> None:
        self._reads, self._step, self._at = tuple(reads), step, at
        super().__init__()
        for key, val in data.items():
            if isinstance(val, dict) and self._cover(key) == "node":
                val = Slice(val, self._reads, step, self._path(key))
            super().__setitem__(key, val)

    def _path(self, key: Any) -> str:
        return f"{self._at}.{key}" if self._at else str(key)

    def _cover(self, key: Any) -> str | None:
        found = {_covers(r, self._path(key)) for r in self._reads}
        return "leaf" if "leaf" in found else "node" if "node" in found else None

    def _check(self, key: Any) -> None:
        if self._cover(key) is None:
            raise UndeclaredRead(f"step {self._step!r} reads config '{self._path(key)}', which it does not "
                                 f"declare (shala.cli STEPS)")

    def __getitem__(self, key: Any) -> Any:
        self._check(key)
        return super().__getitem__(key)

    def get(self, key: Any, default: Any = None) -> Any:
        self._check(key)
        return super().get(key, default)

    def __contains__(self, key: object) -> bool:
        self._check(key)
        return super().__contains__(key)


def restrict(config: dict[str, Any], reads: Iterable[str], step: str) -> Slice:
    """``config`` as ``step`` may read it (:class:`Slice` over :func:`take`)."""
    reads = list(reads)
    return Slice(take(config, reads), reads, step)
