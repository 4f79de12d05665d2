"""The report's inputs, read from the files it is given (never a folder glob).

- metrics files ``.../{dataset}/{run}/seed{seed}/{split}.json``
  (:mod:`shala.evaluation.evaluate`); runs are methods (``zs``, ``mls``, ...) and
  ``ref_*`` model-free reference predictors;
- per-item scores ``{split}.items.csv`` beside each metrics file, when
  present (intervals, paired tests, box plots);
- training run records ``.../{dataset}/{method}/seed{seed}/run.json`` and the
  ``train_log.jsonl`` beside each (rows with ``"event": "step"``);
- the packaged published numbers: ``shala/resources/literature.yaml`` (Table 2)
  and ``shala/resources/paper_tables.yaml`` (the SHALA-LLM paper's own numbers);
- the config values the report reads: ``run_methods`` (row order),
  ``methods.*.trainer`` when present, and the ``report`` block.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import plan
from ..errors import ConfigError, InputError
from ..evaluation.metrics import REGISTRY

# the registry's metrics the report reads from each block, quality metrics first, then
# diagnostics (the column order of every table); value: True when higher is better (None: a
# diagnostic, never ranked)
METRICS = {m.name: m.higher_is_better for m in sorted((m for m in REGISTRY.values() if m.in_report),
                                                       key=lambda m: m.higher_is_better is None)}
# per-step fields of a training log: from "event": "step" rows (the project's
# callback) and from "event": "log" rows (TRL's logs: token entropy, gradient norm)
STEP_FIELDS = ("reward_mean", "parse_rate", "zero_spread_frac")
LOG_FIELDS = ("entropy", "grad_norm")
# below this, a pred_spread or a deviation from 1/C is rounding, not a choice
EXACT = 1e-6


def is_ref(run: str) -> bool:
    return run.startswith("ref_")


def is_trained(run: str, config: dict[str, Any] | None) -> bool:
    """A model run that was trained: its method's trainer changes the model
    (:func:`shala.plan.is_trained`); :func:`with_trainers` has named a
    trainer for every run of the report."""
    return plan.is_trained(run, (config or {}).get("methods") or {})


def with_trainers(config: dict[str, Any] | None, records: list[Record], runs: list[RunRecord]) -> dict[str, Any]:
    """``config`` with a ``methods`` entry for every run of the report: the
    config's own, else the trainer of the run record given for it, else
    ``none`` (a method with no run record was not trained)."""
    config = dict(config or {})
    methods = dict(config.get("methods") or {})
    recorded = {r.method: r.data.get("kind") or "grpo" for r in runs}  # run.json "kind": grpo | sft
    for rec in records:
        if not is_ref(rec.run) and rec.run not in methods:
            methods[rec.run] = {"trainer": recorded.get(rec.run, "none")}
    config["methods"] = methods
    return config


def run_order(runs: list[str], config: dict[str, Any] | None) -> list[str]:
    """Methods in config order first, then other runs (sorted: a config
    without ``run_methods`` gives no order), then reference predictors."""
    methods = list((config or {}).get("run_methods") or [])
    known = [r for r in methods if r in runs and not is_ref(r)]
    refs = sorted(r for r in runs if is_ref(r))
    rest = sorted(r for r in runs if r not in known and r not in refs)
    return known + rest + refs


def settings(config: dict[str, Any] | None) -> dict[str, Any]:
    """The ``report`` block of config, its schema defaults filled (a config
    built by hand, or none, gets them too)."""
    from ..config import fill_defaults

    return fill_defaults(dict((config or {}).get("report") or {}), at="report")


def load_report_config(paths: list[str | Path]) -> dict[str, Any]:
    """Merge YAML configs (later overlay earlier) and validate what is there,
    schema defaults filled.

    A full config is validated as every command does; a partial one (e.g.
    the workflow's file holding only the values the report reads) is checked
    against the same schema without its top-level required fields.
    """
    import yaml

    from ..config import check_schema, deep_merge, schema
    from ..plan import validate

    merged: dict[str, Any] = {}
    for p in map(Path, paths):
        if not p.is_file():
            raise ConfigError(f"{p}: config file not found")
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError:
            raise ConfigError(f"{p}: invalid YAML") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: top level must be a mapping")
        merged = deep_merge(merged, data)
    where = " + ".join(map(str, paths))
    if all(k in merged for k in schema()["required"]):
        return validate(merged, where=where)
    return check_schema(merged, where, partial=True)


# --------------------------------------------------------------------------- metrics

@dataclass
class Record:
    """One metrics file and its parsed content."""
    dataset: str
    run: str
    seed: int
    split: str
    path: Path
    data: dict[str, Any] = field(repr=False)

    @property
    def items_path(self) -> Path:
        return self.path.with_name(self.path.name[:-len(".json")] + ".items.csv")

    @property
    def answers_uniform(self) -> bool:
        """Every prediction is the uniform distribution: one answer for every
        item (``pred_spread`` 0) whose mean is 1/C in every class. Such a
        seed scores exactly as ``ref_uniform``: it answered nothing."""
        overall, classes = self.data["overall"], self.data.get("per_class") or {}
        spread = overall.get("pred_spread")
        means = [c.get("mean_pred") for c in classes.values()]
        if not isinstance(spread, (int, float)) or spread > EXACT or not means or None in means:
            return False
        return all(abs(m - 1 / len(means)) <= EXACT for m in means)


def _read_json(p: Path, what: str) -> dict[str, Any]:
    if not p.is_file():
        raise InputError(f"{what} not found", path=p)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"not a {what} ({exc})", path=p) from None
    if not isinstance(data, dict):
        raise InputError(f"not a {what} (expected an object)", path=p)
    return data


def load_records(paths: list[str | Path], split: str | None = None) -> list[Record]:
    """The given metrics files (all of one split), sorted by dataset, run, seed.

    ``split`` None: the split the files share (an error if they mix splits).
    """
    if not paths:
        raise InputError("no metrics files given")
    records, seen = [], {}
    for p in map(Path, paths):
        m = plan.parse("metrics", p.as_posix())
        if not m:
            raise InputError("not a metrics path (.../{dataset}/{run}/seed{seed}/{split}.json)", path=p)
        data = _read_json(p, "metrics file")
        if not isinstance(data.get("overall"), dict):
            raise InputError("not a metrics file (no 'overall' block)", path=p)
        rec = Record(m["dataset"], m["run"], int(m["seed"]), m["split"], p, data)
        key = (rec.dataset, rec.run, rec.seed, rec.split)
        if key in seen:
            raise InputError(f"the same dataset, run, seed and split as {seen[key]}", path=p)
        seen[key] = p
        records.append(rec)
    splits = sorted({r.split for r in records})
    if split is None:
        if len(splits) > 1:
            raise InputError(f"metrics files of several splits ({', '.join(splits)}); choose one with --split")
        split = splits[0]
    other = next((r for r in records if r.split != split), None)
    if other is not None:
        raise InputError(f"a {other.split} metrics file in a report of the {split} split", path=other.path)
    return sorted(records, key=lambda r: (r.dataset, r.run, r.seed))


def uniform_answers(records: list[Record]) -> list[tuple[str, str, int, float]]:
    """(dataset, run, seed, parse-failure rate) of every model run's seed
    that answered exactly uniformly (:attr:`Record.answers_uniform`)."""
    return [(r.dataset, r.run, r.seed, float(r.data["overall"].get("parse_failure_rate") or 0.0))
            for r in records if not is_ref(r.run) and r.answers_uniform]


def frame(records: list[Record]) -> pd.DataFrame:
    """One row per metrics file and scope: the dataset (``overall``) and each
    of its subsets, named ``dataset/subset`` (``by_subset``)."""
    rows = []
    for r in records:
        scopes = [(r.dataset, r.data["overall"])]
        scopes += [(f"{r.dataset}/{s}", b) for s, b in sorted((r.data.get("by_subset") or {}).items())]
        for name, block in scopes:
            row = {"dataset": name, "run": r.run, "seed": r.seed}
            row.update({k: (block or {}).get(k) for k in METRICS})
            rows.append(row)
    df = pd.DataFrame(rows, columns=["dataset", "run", "seed", *METRICS])
    for k in METRICS:
        df[k] = pd.to_numeric(df[k], errors="coerce")
    return df


ITEM_COLUMNS = ["dataset", "run", "seed", "id", "subset", "ambiguity", "jsd", "bc"]


def load_items(records: list[Record]) -> pd.DataFrame:
    """Per-item scores of every record that has an items file (one row per
    item and seed); columns :data:`ITEM_COLUMNS`."""
    frames = []
    for r in records:
        p = r.items_path
        if not p.is_file():
            continue
        try:
            df = pd.read_csv(p, dtype=str, keep_default_na=False)
            missing = {"id", "ambiguity", "jsd", "bc"} - set(df.columns)
            if missing:
                raise ValueError(f"missing columns {sorted(missing)}")
        except (ValueError, pd.errors.ParserError) as exc:
            raise InputError(f"not an items file ({exc})", path=p) from None
        if "subset" not in df:
            df["subset"] = ""
        df = df[["id", "subset", "ambiguity", "jsd", "bc"]].copy()
        for col in ("jsd", "bc"):
            df[col] = pd.to_numeric(df[col].replace("", np.nan), errors="coerce")
        frames.append(df.assign(dataset=r.dataset, run=r.run, seed=r.seed)[ITEM_COLUMNS])
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=ITEM_COLUMNS)


def item_means(items: pd.DataFrame) -> pd.DataFrame:
    """Per-item scores averaged over seeds (NaN-skipping); one row per
    dataset × run × item, sorted by item id (so intervals do not depend on
    the order of the files)."""
    cols = ["dataset", "run", "id", "subset", "ambiguity", "jsd", "bc", "n_seeds"]
    if items.empty:
        return pd.DataFrame(columns=cols)
    g = items.groupby(["dataset", "run", "id"], sort=True)
    out = g.agg(subset=("subset", "first"), ambiguity=("ambiguity", "first"),
                jsd=("jsd", "mean"), bc=("bc", "mean"), n_seeds=("seed", "nunique")).reset_index()
    return out[cols]


# --------------------------------------------------------------------------- training runs

@dataclass
class RunRecord:
    """A training run record and the step rows of its ``train_log.jsonl``."""
    dataset: str
    method: str
    seed: int
    path: Path
    data: dict[str, Any] = field(repr=False)
    steps: pd.DataFrame = field(repr=False)

    @property
    def log_path(self) -> Path:
        return self.path.with_name("train_log.jsonl")

    @property
    def scale_rewards(self) -> str | None:
        return ((self.data.get("grpo_config") or {}).get("recorded") or {}).get("scale_rewards")

    @property
    def prompts_per_batch(self) -> int | None:
        """Prompts per generation batch (TRL normalises batch-scaled rewards
        over it): with one, batch scaling is group scaling."""
        full = (self.data.get("grpo_config") or {}).get("full") or {}
        gen, k = full.get("generation_batch_size"), full.get("num_generations")
        return gen // k if gen and k else None


def read_steps(path: Path) -> pd.DataFrame:
    """One row per step of a training log: :data:`STEP_FIELDS` from its
    ``"event": "step"`` rows and :data:`LOG_FIELDS` from its ``"event": "log"``
    rows (per field, the last value logged for a step wins: a step repeated
    after a resume); empty when the file is missing."""
    cols = ["step", *STEP_FIELDS, *LOG_FIELDS]
    rows = []
    if path.is_file():
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"malformed JSON ({exc.msg})", path=path, line=i) from None
            if not isinstance(row, dict) or row.get("step") is None:
                continue
            if row.get("event") == "step":
                rows.append({k: row.get(k) for k in ("step", *STEP_FIELDS)})
            elif row.get("event") == "log" and any(row.get(k) is not None for k in LOG_FIELDS):
                rows.append({k: row.get(k) for k in ("step", *LOG_FIELDS)})
    df = pd.DataFrame(rows, columns=cols).apply(pd.to_numeric, errors="coerce")
    return df.groupby("step", sort=True).last().reset_index()[cols]


def load_runs(paths: list[str | Path] | None) -> list[RunRecord]:
    """The given run records, sorted by dataset, method, seed."""
    out = []
    for p in map(Path, paths or []):
        m = plan.parse("run", p.as_posix())
        if not m:
            raise InputError("not a run record path (.../{dataset}/{method}/seed{seed}/run.json)", path=p)
        data = _read_json(p, "run record")
        out.append(RunRecord(m["dataset"], m["method"], int(m["seed"]), p, data,
                             read_steps(p.with_name("train_log.jsonl"))))
    return sorted(out, key=lambda r: (r.dataset, r.method, r.seed))


# --------------------------------------------------------------------------- published numbers

def package_data(name: str) -> Path:
    from importlib.resources import files

    return Path(str(files("shala") / "resources" / name))


def _read_yaml(path: Path) -> Any:
    import yaml

    if not path.is_file():
        raise InputError("file not found", path=path)
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise InputError(f"malformed YAML ({exc})", path=path) from None


def load_paper(path: Path | None = None) -> dict[str, Any]:
    """The SHALA-LLM paper's numbers (``paper_tables.yaml``): ``table1``
    (dataset -> method -> metric), ``table2`` (list of systems) and the
    section numbers of the claims."""
    path = Path(path) if path is not None else package_data("paper_tables.yaml")
    doc = _read_yaml(path) or {}
    if not isinstance(doc, dict) or not isinstance(doc.get("table1", {}), dict) \
            or not isinstance(doc.get("table2", []), list):
        raise InputError("expected 'table1' (a mapping) and 'table2' (a list)", path=path)
    return {"table1": {}, "table2": []} | doc


LIT_REQUIRED = ("dataset", "model", "metric", "value", "source")


def load_literature(path: Path | None = None) -> list[dict[str, Any]]:
    """Entries of the literature file (``entries:`` list), validated."""
    path = Path(path) if path is not None else package_data("literature.yaml")
    doc = _read_yaml(path) or {}
    entries = (doc.get("entries") if isinstance(doc, dict) else doc) or []
    if not isinstance(entries, list):
        raise InputError("expected a list under 'entries'", path=path)
    out = []
    for i, e in enumerate(entries):
        where = f"entries[{i}]"
        if not isinstance(e, dict):
            raise InputError("expected a mapping", path=path, field=where)
        for key in LIT_REQUIRED:
            if e.get(key) is None:
                raise InputError("missing field", path=path, field=f"{where}.{key}")
        if e["metric"] not in REGISTRY:
            raise InputError(f"unknown metric {e['metric']!r} (one of {', '.join(REGISTRY)})",
                             path=path, field=f"{where}.metric")
        if isinstance(e["value"], bool) or not isinstance(e["value"], (int, float)):
            raise InputError("must be a number", path=path, field=f"{where}.value")
        entry = {"subset": None, "benchmark": None, "js_base": None, "convention": "", "url": "",
                 "origin": "literature"} | e
        entry["benchmark"] = entry["benchmark"] or (f"{e['dataset']}/{entry['subset']}" if entry["subset"]
                                                    else e["dataset"])
        out.append(entry)
    return out
