"""What each pipeline step reads of the config, declared beside its entry point.

Each ``shala`` command that reads config is decorated with :func:`step` in
:mod:`shala.cli`, naming the dotted config paths it reads (``{dataset}``,
``{method}``: the job's own). Three things follow from that one
declaration:

- the command receives only that slice (:class:`shala.config.Slice`): a
  read of any other key fails, so a test catches a declaration that lags
  the code;
- the workflow passes each job its slice as JSON (``--slice``), and the
  slice is the rule's ``params``, so Snakemake reruns a job exactly when a
  value it reads changes (rules/common.smk ``job_slice``);
- ``shala list --reads`` prints the table of steps and paths.

``how`` paths say how a step runs, not what it computes (where to fetch
from, the batch size of greedy prediction, CPU threads): they reach the job
through the environment (``SHALA_HOW``), and no edit of them reruns
anything (a moved mirror holds the same files; greedy answers do not depend
on the batch size, tests/unit/test_predict.py).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .config import deep_merge, reads_for, restrict, take
from .errors import ConfigError

HOW_ENV = "SHALA_HOW"


@dataclass(frozen=True)
class Step:
    """One command's declared reads."""
    name: str
    reads: tuple[str, ...]
    how: tuple[str, ...] = ()


STEPS: dict[str, Step] = {}


def step(name: str, *reads: str, how: tuple[str, ...] = ()) -> Callable:
    """Declare the config paths command ``name`` reads (decorates its ``cmd_*``)."""
    def declare(fn: Callable) -> Callable:
        STEPS[name] = Step(name, tuple(reads), tuple(how))
        fn.step = name
        return fn
    return declare


def job_slice(config: dict[str, Any], name: str, /, **fields: Any) -> dict[str, Any]:
    """The values of ``config`` that step ``name`` reads for one job
    (``how`` paths left out): what the workflow passes, and its rerun trigger."""
    return take(config, reads_for(STEPS[name].reads, **fields))


def job_slice_json(config: dict[str, Any], name: str, /, **fields: Any) -> str:
    """:func:`job_slice` as the JSON text a job gets (``--slice``); keys sorted, so equal values give equal params."""
    return json.dumps(job_slice(config, name, **fields), sort_keys=True)


def how_values(config: dict[str, Any]) -> str:
    """Every step's ``how`` values, as the JSON the workflow exports in :data:`HOW_ENV`."""
    paths = sorted({p for s in STEPS.values() for p in s.how})
    return json.dumps(take(config, paths), sort_keys=True)


def step_config(name: str, config: dict[str, Any] | None, slice_json: str | None, known: bool = True, /,
                **fields: Any):
    """The config step ``name`` runs with: ``slice_json`` (a job of the
    workflow, its values validated there) plus the exported ``how``
    values, or the full ``config`` read from files; either way restricted to
    what the step declares. None when neither is given. ``known``: the
    ``dataset`` and ``method`` fields must be configured (prepare also takes
    a built-in adapter's name)."""
    s = STEPS[name]
    reads = reads_for(s.reads, **fields) + list(s.how)
    for key, where in (("dataset", "datasets"), ("method", "methods")):  # a name the config lacks, named
        if known and config is not None and key in fields and fields[key] not in config[where]:
            raise ConfigError(f"unknown {key} {fields[key]!r}; configured: {', '.join(config[where])}")
    if slice_json is not None:
        try:
            data = json.loads(slice_json)
            how = json.loads(os.environ.get(HOW_ENV) or "{}")
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--slice / {HOW_ENV}: not JSON ({exc.msg})") from None
        config = deep_merge(how, data)
    if config is None:
        return None
    return restrict(config, reads, name)
