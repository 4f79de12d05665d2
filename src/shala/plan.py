"""The run matrix and the path layout, defined once.

From a validated config, :func:`make_plan` derives which datasets run (and
why any is left out), the methods per dataset, the seeds per method, the
warm-ups, and the reference predictors per dataset. :data:`TEMPLATES` is the
one path layout; :func:`path` fills a template and :func:`parse` reads a
path back into its fields. The workflow (rules/common.smk), the disk
estimate (:mod:`shala.launch.disk`), the report (:mod:`shala.report.load`)
and ``shala list`` all read the grid from here, so they cannot disagree.

This module sits above the registries (adapters, rewards, reference
predictors) it checks names against in :func:`check_config`, and below
launch/, report/ and the CLI, which use it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .config import check_schema, read_config
from .errors import ConfigError

#: the warm-up's folder beside the methods' folders (not a method name)
WARMUP = "warmup_sft"
#: trainers that change the model's weights (zs: none; probe: a read-out of the frozen model)
TRAINING_TRAINERS = ("grpo", "sft")

#: every file the workflow writes, by kind; {results} is config `results`
TEMPLATES = {
    "raw": "{results}/raw/{dataset}/MANIFEST.json",
    "items": "{results}/data/{dataset}/items.jsonl",
    "split": "{results}/data/{dataset}/{split}.jsonl",
    "stats": "{results}/data/{dataset}/stats.json",
    "prepared": "{results}/data/{dataset}/prepare.json",
    "base_model": "{results}/models/base/{name}",
    "run": "{results}/models/{dataset}/{method}/seed{seed}/run.json",
    "warmup": "{results}/models/{dataset}/" + WARMUP + "/seed{seed}/run.json",
    "predictions": "{results}/predictions/{dataset}/{run}/seed{seed}/{split}.jsonl",
    "metrics": "{results}/metrics/{dataset}/{run}/seed{seed}/{split}.json",
    "per_item": "{results}/metrics/{dataset}/{run}/seed{seed}/{split}.items.csv",
    "report": "{results}/reports/{name}",
}
_FIELD = re.compile(r"\{(\w+)\}")
_FIELD_PATTERN = {"seed": r"\d+", "split": r"[^/.]+"}  # what a field may hold when a path is read back


def path(kind: str, **fields: Any) -> str:
    """A template filled: ``path("run", results="r", dataset="d", method="m", seed=0)``.
    A field left out stays a Snakemake wildcard (``{dataset}``)."""
    return _FIELD.sub(lambda m: str(fields.get(m.group(1), m.group(0))), TEMPLATES[kind])


def parse(kind: str, text: str) -> dict[str, str] | None:
    """A path back into its template's fields; None if it does not fit.
    Only the part below the kind's folder is matched (``{dataset}/{run}/
    seed{seed}/{split}.json`` for metrics), so a file copied under any folder
    (a committed result, a test's tmp dir) reads the same."""
    tail = TEMPLATES[kind].split("/", 2)[2]  # below {results}/<folder>/
    regex = re.escape(tail).replace(r"\{", "{").replace(r"\}", "}")
    regex = _FIELD.sub(lambda m: f"(?P<{m.group(1)}>{_FIELD_PATTERN.get(m.group(1), '[^/]+')})", regex)
    m = re.search("(?:^|/)" + regex + "$", text.replace("\\", "/"))
    return m.groupdict() if m else None


def is_trained(method: str, methods: dict[str, Any]) -> bool:
    """Whether ``method``'s trainer changes the model (its entry in config
    ``methods``); a reference predictor (``ref_*``) or an unknown name is not."""
    spec = methods.get(method)
    return spec is not None and spec["trainer"] in TRAINING_TRAINERS


def warmup_enabled(method: str, config: dict[str, Any]) -> bool:
    """A GRPO method starts from the supervised warm-up: its own ``warmup``
    when set, else ``training.warmup_sft.enabled``."""
    spec = config["methods"][method]
    if spec["trainer"] != "grpo":
        return False
    return bool(spec.get("warmup", config["training"]["warmup_sft"]["enabled"]))


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


@dataclass(frozen=True)
class TrainingRun:
    """One training job of the grid: a method's run, or the warm-up (``method`` :data:`WARMUP`)."""
    dataset: str
    method: str
    seed: int
    trainer: str
    settings: dict[str, Any] = field(compare=False, repr=False)  # the trainer's settings block, overrides laid


@dataclass(frozen=True)
class Plan:
    """The run matrix of one config (:func:`make_plan`)."""
    results: str
    datasets: list[str]                  # kept, in run_datasets order
    left_out: list[str]                  # one line per dataset left out, saying how to include it
    methods: dict[str, list[str]]        # dataset -> methods run on it
    seeds: dict[str, list[int]]          # method -> seeds (one for an untrained method: greedy is deterministic)
    references: dict[str, list[str]]     # dataset -> reference predictors that apply to it
    warmups: list[tuple[str, int]]       # (dataset, seed) with a warm-up run
    split_seed: int
    splits: list[str]
    report_split: str                    # test when evaluated, else the first evaluated split
    training: list[TrainingRun]

    def metrics(self, split: str | None = None, kind: str = "metrics") -> list[str]:
        """Metrics files (``kind`` "per_item": the per-item scores beside them) of every run and
        reference predictor, of ``split`` (default: every split)."""
        out = []
        for ds in self.datasets:
            for sp in [split] if split else self.splits:
                out += [path(kind, results=self.results, dataset=ds, run=m, seed=s, split=sp)
                        for m in self.methods[ds] for s in self.seeds[m]]
                out += [path(kind, results=self.results, dataset=ds, run=f"ref_{r}", seed=self.split_seed, split=sp)
                        for r in self.references[ds]]
        return out

    def run_records(self) -> list[str]:
        """run.json of every trained method's run (the report reads the logs beside them)."""
        return [path("run", results=self.results, dataset=r.dataset, method=r.method, seed=r.seed)
                for r in self.training if r.method != WARMUP]

    def final_outputs(self) -> list[str]:
        """What a whole run makes: data stats, every split's metrics and the report."""
        stats = [path("stats", results=self.results, dataset=ds) for ds in self.datasets]
        return stats + self.metrics() + [path("report", results=self.results, name="table1.md")]


def run_dir(results: str, run: TrainingRun) -> str:
    """The folder a training run writes (its run.json inside)."""
    kind, method = ("warmup", {}) if run.method == WARMUP else ("run", {"method": run.method})
    return path(kind, results=results, dataset=run.dataset, seed=run.seed, **method).rsplit("/", 1)[0]


def _references(config: dict[str, Any], dataset: str) -> list[str]:
    from .evaluation.reference import applies_to

    adapter = config["datasets"][dataset]["adapter"]
    return [r for r in config["reference_predictors"] if applies_to(r, adapter)]


def training_run(config: dict[str, Any], dataset: str, method: str, seed: int) -> TrainingRun:
    """One training job (``method`` :data:`WARMUP`: the warm-up), reading
    only that job's config: the trainer's block, the dataset's ``grpo`` and
    the method's ``overrides`` laid over it."""
    training = config["training"]
    if method == WARMUP:
        return TrainingRun(dataset, WARMUP, seed, "sft", dict(training["warmup_sft"]))
    spec = config["methods"][method]
    if spec["trainer"] == "grpo":
        base = {**training["grpo"], **(config["datasets"][dataset].get("grpo") or {})}
    else:
        base = training["warmup_sft"]
    return TrainingRun(dataset, method, seed, spec["trainer"], {**base, **(spec.get("overrides") or {})})


def _training_runs(config: dict[str, Any], datasets: list[str], methods: dict[str, list[str]]) -> Iterator[TrainingRun]:
    for ds in datasets:
        for seed in config["seeds"]:
            trained = [m for m in methods[ds] if is_trained(m, config["methods"])]
            yield from (training_run(config, ds, m, seed) for m in trained)
            if any(warmup_enabled(m, config) for m in trained):
                yield training_run(config, ds, WARMUP, seed)


def make_plan(config: dict[str, Any]) -> Plan:
    """The run matrix of a validated config.

    A licensed dataset (MSP-Podcast) without ``source`` cannot be had from
    any public place; the plan leaves it out with a line saying how to
    include it, so the paper's command runs every other dataset rather than
    stopping at its fetch job.
    """
    from .data.adapters import is_licensed

    kept, left_out = [], []
    for ds in config["run_datasets"]:
        d = config["datasets"][ds]
        if is_licensed(d) and not d["source"]:
            left_out.append(f"shala: {ds} left out: its data is licensed; set datasets.{ds}.source "
                            f"to your local copy to include it")
        else:
            kept.append(ds)
    methods = {ds: dataset_methods(config, ds) for ds in kept}
    seeds = {m: list(config["seeds"]) if is_trained(m, config["methods"]) else list(config["seeds"][:1])
             for m in config["run_methods"]}
    training = list(_training_runs(config, kept, methods))
    splits = list(config["evaluation"]["splits"])
    return Plan(results=str(config["results"]), datasets=kept, left_out=left_out, methods=methods, seeds=seeds,
                references={ds: _references(config, ds) for ds in kept},
                warmups=[(r.dataset, r.seed) for r in training if r.method == WARMUP],
                split_seed=int(config["split_seed"]), splits=splits,
                report_split="test" if "test" in splits else splits[0], training=training)


# ------------------------------------------------------------------ checks

def check_config(config: dict[str, Any], where: str = "config") -> None:
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

    def check(field: str, name: Any, registry, what: str) -> None:
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
        if ds not in config["run_datasets"]:
            continue
        checker = getattr(ADAPTERS[d["adapter"]], "check_options", None)
        if checker is not None:  # an adapter's own check of its options, at plan time rather than at prepare
            try:
                checker(d["options"])
            except ConfigError as exc:
                raise ConfigError(f"{where}: field 'datasets.{ds}.options': {exc}") from None
        problem = placeholder_problem(d["prompt"], item_text_fields(d["adapter"], d["options"]))
        if problem:
            raise ConfigError(f"{where}: field 'datasets.{ds}.prompt.{problem[0]}': {problem[1]}")
    for m, d in config["methods"].items():
        if d["trainer"] == "grpo":
            check(f"methods.{m}.reward", d["reward"], REWARDS, "reward")
    for i, name in enumerate(config["reference_predictors"]):
        check(f"reference_predictors.{i}", name, REFERENCE_PREDICTORS, "reference predictor")


def validate(config: dict[str, Any], where: str = "config") -> dict[str, Any]:
    """The one check of a whole config: the schema (defaults filled), then
    the names the registries and the config's own keys decide."""
    check_schema(config, where)
    check_config(config, where)
    return config


def load_config(paths) -> dict[str, Any]:
    """Read YAML files (later ones overlay earlier ones) and :func:`validate` the result."""
    config = read_config(paths)
    check_config(config, " + ".join(map(str, paths)) or "config")
    return config
