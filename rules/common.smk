# Glue only: config in, paths out, input functions. The run matrix and the path
# layout are shala.plan's; what each job reads of the config is its step's
# declaration (shala.steps, beside each command in shala.cli).
import os
import shlex
import sys

from snakemake.utils import validate

import shala.cli  # its commands declare what they read (shala.steps.STEPS)
from shala.errors import ConfigError
from shala.launch.launcher import cluster_resources, launcher_command, on_own_gpus
from shala.overview import config_sources
from shala.plan import check_config, is_trained, make_plan, path, warmup_enabled
from shala.steps import HOW_ENV, how_values, job_slice_json

# fills the schema's defaults into config, as shala.plan.validate does for the CLI
validate(config, schema="../src/shala/schemas/config.schema.json")
try:  # registry names, run_* names, prompt placeholders: one line naming the field, no traceback
    check_config(config)
except ConfigError as exc:
    sys.exit(f"shala: {exc}")
# one line at every start: a profile's overlay that a --config replaced shows here
_SOURCES = config_sources(workflow.configfiles, workflow.overwrite_configfiles, list(workflow.config_settings.config))
print(f"shala: config = {_SOURCES}; results in {config['results']}/", file=sys.stderr)
PLAN = make_plan(config)
for _line in PLAN.left_out:
    print(_line, file=sys.stderr)
RES = PLAN.results
WARMUP = "warmup_sft"
# how-not-what values (mirrors, batch size, threads) reach the jobs through the environment: no rerun
os.environ[HOW_ENV] = how_values(config)


def base_model():
    """The folder rule base_model (pypi_gguf) or fetch_model (hub) makes, or model.path (local)."""
    from shala.model.loading import resolve_model_ref

    return resolve_model_ref(config, RES)


def _job_config():
    """config as jobs get it: a hub model's revision as its folder holds it (pinning it reruns nothing)."""
    if config["model"]["source"] != "hub":
        return config
    from shala.model.hub import revision_key

    return {**config, "model": {**config["model"], "revision": revision_key(config["model"], base_model())}}


JOB_CONFIG = _job_config()


def step_slice(name, **fixed):
    """A `params` value: the JSON of the config values step `name` reads for
    this job (its wildcards fill the declared paths). The job gets it as
    `--slice`, and, being params, it reruns the job when one of them changes."""
    return lambda w: job_slice_json(JOB_CONFIG, name, **{**dict(w.items()), **fixed})


def raw_dir(w):
    return config["datasets"][w.dataset]["source"] or f"{RES}/raw/{w.dataset}"


def raw_input(w):
    """Nothing to fetch for a dataset read in place from its `source`."""
    return [] if config["datasets"][w.dataset]["source"] else path("raw", results=RES, dataset=w.dataset)


def base_model_input():
    from shala.model.loading import fetched_by_workflow

    return [base_model()] if fetched_by_workflow(config["model"]) else []


def job_threads():
    """training.threads when set (CPU runs: two single-threaded jobs beat one two-threaded), else every core."""
    return int(config["training"].get("threads") or workflow.cores)


def gpus():
    return int(config["training"]["gpus"])


def job_resources(role, gpu=0):
    return cluster_resources(config["cluster"], role, gpu)


def preflight(method=None):
    """Before a GPU training job's launcher: `shala gpus` holds training.gpus
    devices of its own, and `shala preflight` checks its launch config, memory
    and disk from the job's own slice (exit 3/4 stops it); "" on CPU."""
    if gpus() == 0:
        return lambda w: ""

    def words(w):
        m = method or w.method
        s = job_slice_json(JOB_CONFIG, "preflight", dataset=w.dataset, method=m)
        disk = " --enforce-disk" if config["training"]["check_disk"] else ""
        check = (f"shala preflight --slice {shlex.quote(s)} --gpus {gpus()}{disk}"
                 f" --dataset {w.dataset} --method {m} --seed {w.seed}")
        return on_own_gpus(gpus(), first=check).rstrip()

    return words


def launcher():
    """`accelerate launch` with the ZeRO-3 config over training.gpus ranks, or plain `shala`."""
    return launcher_command(config["training"])


def warmup_input(w):
    return path("warmup", results=RES, dataset=w.dataset, seed=w.seed) if warmup_enabled(w.method, config) else []


def init_from_arg(w):
    return f"--init-from {os.path.dirname(warmup_input(w))}" if warmup_input(w) else ""


def predict_model_input(w):
    if is_trained(w.method, config["methods"]):
        return path("run", results=RES, dataset=w.dataset, method=w.method, seed=w.seed)
    return base_model_input()


def predict_model_ref(w):
    return os.path.dirname(predict_model_input(w)) if is_trained(w.method, config["methods"]) else base_model()


def limit_arg(w):
    lim = config["evaluation"]["limit"]
    return f"--limit {lim}" if lim else ""


def method_pattern(probe):
    """The `method` wildcard of rule probe (probe=True) or rule predict."""
    names = [m for m, spec in config["methods"].items() if (spec["trainer"] == "probe") == probe]
    return "|".join(sorted(names, key=len, reverse=True)) or "(?!)"


REPORT_METRICS = PLAN.metrics(PLAN.report_split)


wildcard_constraints:
    dataset="[A-Za-z0-9_]+",
    method="|".join(sorted(config["methods"], key=len, reverse=True)),
    seed=r"\d+",
    predictor="|".join(config["reference_predictors"]) or "(?!)",
    split="train|validation|test",
