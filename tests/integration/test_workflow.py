"""The Snakemake workflow: schema validation, lint, and the job matrix (dry runs)."""

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from shala.errors import ConfigError
from shala.plan import load_config, validate

ROOT = Path(__file__).resolve().parents[2]
SNAKEMAKE = shutil.which("snakemake", path=str(Path(sys.executable).parent)) or "snakemake"


def _smk(*args, cwd=ROOT):
    return subprocess.run([SNAKEMAKE, *args], capture_output=True, text=True, cwd=cwd)


def _jobs(out: str) -> dict[str, int]:
    table = out.split("Job stats:")[1]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, flags=re.M)}


def _results_at(root: Path) -> str:
    """An overlay that only moves the results root (a `--config` would replace a profile's overlays)."""
    f = root.parent / f"{root.name}-results.yaml"
    f.write_text(yaml.safe_dump({"results": str(root)}))
    return str(f)


def test_profile_overlay_composes_with_the_users(tmp_path):
    """`--profile profiles/demo --configfile X` is the demo plus X: the demo's
    model stays (no hub fetch), and the run says which files are in force."""
    mine = tmp_path / "mine.yaml"
    mine.write_text(yaml.safe_dump({
        "results": str(tmp_path / "res"), "run_datasets": ["control", "chaosnli", "varierr"],
        "datasets": {"varierr": {
            "adapter": "generic", "mirror": "varierr", "split": {"train": 0.7, "validation": 0.15},
            "options": {"format": "counts", "files": ["varierr.json"],
                        "labels": ["entailment", "neutral", "contradiction"],
                        "counts_field": "label_count_round_1",
                        "text_fields": {"premise": "context", "hypothesis": "statement"}},
            "prompt": {"target": "Context: {premise}\nStatement: {hypothesis}"}}}}))
    r = _smk("-n", "--profile", "profiles/demo", "--configfile", str(mine))
    assert r.returncode == 0, r.stderr[-2000:]
    jobs = _jobs(r.stdout)
    assert "fetch_model" not in jobs and jobs["base_model"] == 1   # SmolLM2 from its PyPI GGUF
    assert jobs["prepare"] == 3 and jobs["train"] == 4   # mls and shala on control and on varierr (run_methods)
    assert f"shala: config = config.yaml + config/demo.yaml + {mine} (--configfile); results in {tmp_path}/res/" \
        in r.stderr
    r = _smk("-n", "-p", "--profile", "profiles/one-gpu", "--configfile", _results_at(tmp_path / "one"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "config.yaml + config/one_gpu.yaml + " in r.stderr
    train = [line for line in r.stdout.splitlines() if " train --dataset " in line]
    assert train and all(line.removeprefix("Shell command: ").startswith("(shala gpus --count 1 -- ") for line in train)


def _planned_outputs(stdout: str) -> list[str]:
    return [p.strip() for line in stdout.splitlines() if line.strip().startswith("output: ")
            for p in line.strip().removeprefix("output: ").split(",")]


@pytest.mark.parametrize("route,root", [
    (["--profile", "profiles/demo", "--configfile", "config/byod.yaml", "config/byod_cpu.yaml"], "results/byod-cpu/"),
    (["--profile", "profiles/one-gpu", "--configfile", "config/byod.yaml", "--resources", "gpu=1"], "results/byod/"),
])
def test_byod_routes_stay_in_their_lane(route, root):
    """The README's two bring-your-own-data commands: every planned file lies
    under the route's own root, never the paper's results/; the GPU route's
    training holds one GPU of its own."""
    r = _smk("-n", "-p", *route)
    assert r.returncode == 0, r.stderr[-2000:]
    outputs = _planned_outputs(r.stdout)
    assert len(outputs) > 30 and all(o.startswith(root) for o in outputs), \
        [o for o in outputs if not o.startswith(root)][:5]
    train = [line for line in r.stdout.splitlines() if " train --dataset " in line]
    assert len(train) == len(set(train)) and train
    if "gpu=1" in route:
        assert "fetch_model" in r.stdout and all("shala gpus --count 1 -- " in line for line in train)
    else:
        assert "fetch_model" not in r.stdout and not any("shala gpus" in line for line in train)


def test_missing_overlay_is_one_line(tmp_path):
    r = _smk("-n", "--configfile", _results_at(tmp_path / "res"), "--config", "overlays=[config/nope.yaml]")
    assert r.returncode != 0
    assert "shala: overlays: config/nope.yaml does not exist" in r.stderr and "Traceback" not in r.stderr


def test_all_configs_validate():
    base = load_config([ROOT / "config.yaml"])
    assert base["model"]["id"] == "Qwen/Qwen2.5-Omni-7B"
    for overlay in ("demo.yaml", "byod.yaml"):
        cfg = load_config([ROOT / "config.yaml", ROOT / "config" / overlay])
        assert cfg["run_datasets"]


def test_schema_errors_name_the_field():
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    cfg["training"]["grpo"]["scale_rewards"] = "items"
    with pytest.raises(ConfigError, match=r"field 'training.grpo.scale_rewards'"):
        validate(cfg)
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    cfg["methods"]["new"] = {"trainer": "grpo"}  # a GRPO method needs a reward
    with pytest.raises(ConfigError, match=r"field 'methods.new'.*'reward' is a required property"):
        validate(cfg)
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    cfg["run_methods"] = ["zs", "nope"]
    with pytest.raises(ConfigError, match="unknown method 'nope'"):
        validate(cfg)


@pytest.mark.parametrize("field,value,msg", [
    ("datasets.chaosnli.adapter", "chaos", "field 'datasets.chaosnli.adapter': unknown adapter 'chaos'; known: chaosnli"),
    ("methods.mls.reward", "mlss", "field 'methods.mls.reward': unknown reward 'mlss'; known: mls"),
    ("reference_predictors", ["uniform", "oracle"], "field 'reference_predictors.1': unknown reference predictor"),
    ("run_datasets", ["my_dta"], "field 'run_datasets': unknown dataset 'my_dta'; known: "),
    ("run_methods", ["zs", "shalla"], "field 'run_methods': unknown method 'shalla'; known: "),
    ("datasets.chaosnli.split", {"train": 0.9, "validation": 0.2},
     "field 'datasets.chaosnli.split': train 0.9 + validation 0.2 exceed 1"),
    ("datasets.goemotions.options", {"max_per_clas": 10},
     "field 'datasets.goemotions.options': goemotions adapter: unknown option(s) ['max_per_clas']"),
])
def test_registry_names_are_checked_by_cli_and_workflow(tmp_path, field, value, msg):
    """Adapter, reward and reference-predictor names are keys of code
    registries (not schema enums): both the CLI and the DAG refuse a typo,
    naming the field and the known names."""
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    node = cfg
    *parents, last = field.split(".")
    for key in parents:
        node = node[key]
    node[last] = value
    with pytest.raises(ConfigError, match=re.escape(msg)):
        validate(cfg)
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(cfg))
    r = _smk("-n", "--configfile", str(f), "--config", f"results={tmp_path}/res")
    assert r.returncode != 0 and msg in r.stdout + r.stderr
    assert "Traceback" not in r.stdout + r.stderr and 'File "' not in r.stdout + r.stderr  # one line, no trace


def test_reference_predictors_and_their_datasets():
    from shala.evaluation.reference import REFERENCE_PREDICTORS, applies_to

    assert [n for n in REFERENCE_PREDICTORS if applies_to(n, "goemotions")] == ["uniform", "prior", "constant", "shala_constant", "majority"]
    assert all(applies_to(n, "chaosnli") for n in REFERENCE_PREDICTORS)


def test_lint_is_clean():
    r = _smk("--lint")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Congratulations" in r.stdout + r.stderr


def test_paper_dry_run_lists_every_dataset_method_seed(tmp_path):
    r = _smk("-n", "--cores", "all", "--resources", "gpu=2", "--config", f"results={tmp_path}/res")
    assert r.returncode == 0, r.stderr[-2000:]
    jobs = _jobs(r.stdout)
    # MSP-Podcast is licensed and has no source: left out, with one line saying how to include it
    assert ("shala: msp_podcast left out: its data is licensed; set datasets.msp_podcast.source "
            "to your local copy to include it") in r.stderr
    assert "msp_podcast" not in r.stdout
    # 2 public datasets x 5 trained methods (4 GRPO + sft_soft) x 1 seed
    assert jobs["train"] == 2 * 5
    assert jobs["predict"] == 2 * 6          # zs + 5 trained, test split
    assert jobs["reference_predictor"] == 6 + 5  # uniform, prior, constant, shala_constant, majority; old_labels only for ChaosNLI
    assert "probe" not in jobs               # the capacity probe reads text only: not in the paper's run_methods
    assert jobs["evaluate"] == jobs["predict"] + jobs["reference_predictor"]
    assert jobs["fetch_data"] == 2 and jobs["prepare"] == 2
    for m in ("mls", "shala_no_ambi", "shala", "shala_batch", "sft_soft"):
        for ds in ("chaosnli", "goemotions"):
            assert f"{tmp_path}/res/models/{ds}/{m}/seed0/run.json" in r.stdout
            assert f"{tmp_path}/res/metrics/{ds}/{m}/seed0/test.json" in r.stdout


def test_gpu_training_runs_preflight_first(tmp_path):
    """On GPUs each training job checks launch config and memory before
    `accelerate launch` (a run that cannot fit stops in seconds, not after
    loading 8.9 B parameters); CPU training has nothing to check."""
    r = _smk("-n", "-p", "--config", f"results={tmp_path}/res")
    cmds = [line.removeprefix("Shell command: ") for line in r.stdout.splitlines()
            if " train --dataset " in line or " sft --dataset " in line]
    # each job's own check, from its own config slice (its dataset, method and seed)
    assert cmds and all(re.match(r"\(shala gpus --count 2 -- bash -c 'shala preflight --slice .* --gpus 2 "
                                 r"--enforce-disk --dataset \w+ --method \w+ --seed \d+ && exec \"\$@\"' job "
                                 r"accelerate launch --config_file config/accelerate_zero3\.yaml --num_processes 2"
                                 r" --main_process_port \$\(shala free-port\) -m shala ", c)
                        for c in cmds)
    assert not (tmp_path / "res" / ".config").exists(), "nothing is written while the DAG is built"
    r = _smk("-n", "-p", "--profile", "profiles/demo", "--configfile", _results_at(tmp_path / "demo"))
    cmds = [line for line in r.stdout.splitlines() if " train --dataset " in line]
    assert len(cmds) == 2 and all(c.startswith("( shala train --dataset ") for c in cmds)


def test_seeds_and_msp_source_extend_the_matrix(tmp_path):
    overlay = tmp_path / "more.yaml"
    overlay.write_text(yaml.safe_dump({
        "results": str(tmp_path / "res"), "seeds": [0, 1, 2],
        "datasets": {"msp_podcast": {"source": str(tmp_path / "msp")}}}))
    r = _smk("-n", "--configfile", str(overlay))
    assert r.returncode == 0, r.stderr[-2000:]
    jobs = _jobs(r.stdout)
    assert jobs["train"] == 3 * 5 * 3
    assert jobs["predict"] == 3 * (1 + 5 * 3)   # zs runs once (greedy, deterministic)
    assert "fetch_data" in jobs and jobs["fetch_data"] == 2  # MSP is read in place


def test_demo_profile_dry_run(tmp_path):
    r = _smk("-n", "-p", "--profile", "profiles/demo", "--configfile", _results_at(tmp_path / "demo"))
    assert r.returncode == 0, r.stderr[-2000:]
    jobs = _jobs(r.stdout)
    # no warm-up: with the response prefix the base model answers on format.
    # control: zs, mls, shala, probe; chaosnli (datasets.chaosnli.methods): zs and probe;
    # references: uniform, prior, constant, shala_constant on both, old_labels on chaosnli only
    assert jobs == {"base_model": 1, "fetch_data": 2, "prepare": 2, "train": 2, "predict": 4, "probe": 2,
                    "reference_predictor": 9, "evaluate": 15, "report": 1, "all": 1, "total": 39}
    probes = sorted(re.findall(r"predictions/(\w+)/probe/seed0/test.jsonl", r.stdout))
    assert sorted(set(probes)) == ["chaosnli", "control"]
    # the report gets each run method's trainer (trained or not, the probe or not) in its slice
    (report,) = [j for j in _dry_run_jobs(r.stdout) if j["rule"] == "report"]
    methods = json.loads(shlex.split(report["shell"].split(" --slice ", 1)[1])[0])["methods"]
    assert {m: methods[m]["trainer"] for m in ("zs", "mls", "shala", "probe")} == {
        "zs": "none", "mls": "grpo", "shala": "grpo", "probe": "probe"}
    assert all(set(spec) == {"trainer"} for spec in methods.values())  # its trainers alone
    trained = sorted(re.findall(r"models/(\w+)/(\w+)/seed0/run.json", r.stdout))
    assert sorted(set(trained)) == [("control", "mls"), ("control", "shala")]


def _dry_run_jobs(out: str) -> list[dict[str, str]]:
    """The jobs of a `snakemake -n -p` output: rule, input, output, shell command."""
    jobs = []
    for block in re.split(r"^\[[^\]\n]+\]\n", out, flags=re.M)[1:]:
        head = re.match(r"(?:local)?rule (\w+):\n", block)
        if not head:
            continue
        job = {"rule": head[1], "input": "", "output": "", "shell": ""}
        for key in ("input", "output"):
            m = re.search(rf"^    {key}: (.*)$", block, flags=re.M)
            job[key] = m[1] if m else ""
        m = re.search(r"^Shell command: (.*?)(?:\n\n|\Z)", block, flags=re.M | re.S)
        job["shell"] = m[1] if m else ""
        jobs.append(job)
    return jobs


def test_paper_dag_fetches_the_hub_model_once_before_any_gpu_job(tmp_path):
    """Compute nodes often have no internet: one local job (rule
    fetch_model) fetches the hub model into results/models/base; every
    warm-up, training and zero-shot prediction job takes that folder as its
    input (so it runs after the fetch) and as --model, with the hub offline."""
    res = tmp_path / "res"
    overlay = tmp_path / "warmup.yaml"
    overlay.write_text(yaml.safe_dump({"results": str(res), "training": {"warmup_sft": {"enabled": True}}}))
    model = f"{res}/models/base/Qwen--Qwen2.5-Omni-7B-thinker"
    r = _smk("-n", "-p", "--cores", "all", "--resources", "gpu=2", "--configfile", str(overlay))
    assert r.returncode == 0, r.stderr[-2000:]
    jobs = _dry_run_jobs(r.stdout)
    assert _jobs(r.stdout)["fetch_model"] == 1
    fetch = [j for j in jobs if j["rule"] == "fetch_model"]
    assert [j["output"] for j in fetch] == [model]
    assert fetch[0]["shell"].startswith(f"shala fetch-model --out {model} --slice ")
    assert "model_mirror" not in fetch[0]["shell"]  # where from, not what: no rerun trigger
    gpu_jobs = [j for j in jobs if j["rule"] in ("warmup_sft", "train")]
    assert {j["rule"] for j in gpu_jobs} == {"warmup_sft", "train"}
    for j in gpu_jobs:
        assert model in j["input"].split(", "), j
        assert j["shell"].startswith("export HF_HUB_OFFLINE=1\n(shala gpus --count 2 -- bash -c 'shala preflight") and f"--model {model} " in j["shell"]
    predict = [j for j in jobs if j["rule"] == "predict"]
    assert predict and all(j["shell"].startswith("HF_HUB_OFFLINE=1 shala gpus --count 1 -- shala predict ") for j in predict)
    zs = [j for j in predict if "/zs/" in j["output"]]
    assert zs and all(model in j["input"].split(", ") and f"--model {model} " in j["shell"] for j in zs)
    # the rule graph: fetch_model feeds training and prediction, and nothing feeds it
    r = _smk("--rulegraph", "--cores", "1", "--configfile", str(overlay))
    ids = dict(re.findall(r"^\s*(\d+)\[label = \"(\w+)\"", r.stdout, flags=re.M))
    edges = {(ids[a], ids[b]) for a, b in re.findall(r"^\s*(\d+) -> (\d+)$", r.stdout, flags=re.M)}
    assert {("fetch_model", "train"), ("fetch_model", "warmup_sft"), ("fetch_model", "predict")} <= edges
    assert not [e for e in edges if e[1] == "fetch_model"]
    # a local model needs no fetch; the demo's GGUF conversion is rule base_model
    overlay.write_text(yaml.safe_dump({"results": str(res), "model": {"source": "local", "path": str(tmp_path / "m")}}))
    r = _smk("-n", "--configfile", str(overlay))
    assert r.returncode == 0 and not {"fetch_model", "base_model"} & set(_jobs(r.stdout))
