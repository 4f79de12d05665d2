"""`shala list`, `shala config show`, `shala prompt`: what a config will run,
shown by the real CLI; and the help and option names of every command."""

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from shala.cli import build_parser
from shala.plan import load_config

ROOT = Path(__file__).resolve().parents[2]


def _cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "shala", *args], capture_output=True, text=True, cwd=cwd)


def _section(text: str, title: str) -> list[str]:
    """The rows under the heading that starts with ``title`` (up to the blank line)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title))
    rows = []
    for line in lines[start + 1:]:
        if not line.strip():
            break
        rows.append(line.split())
    return rows


def test_list_names_the_registries_and_marks_run_datasets():
    from shala.data.adapters import ADAPTERS
    from shala.evaluation.metrics import REGISTRY
    from shala.evaluation.reference import REFERENCE_PREDICTORS
    from shala.train.rewards import REWARDS

    r = _cli("list", "--config", "config.yaml")
    assert r.returncode == 0, r.stderr
    config = load_config([ROOT / "config.yaml"])
    assert [row[0] for row in _section(r.stdout, "adapters")] == list(ADAPTERS)
    assert [row[0] for row in _section(r.stdout, "rewards")] == list(REWARDS)
    assert [row[0] for row in _section(r.stdout, "metrics")] == list(REGISTRY)
    refs = {row[0]: row[1] for row in _section(r.stdout, "reference predictors")}
    assert refs == {n: "yes" if n in config["reference_predictors"] else "no" for n in REFERENCE_PREDICTORS}
    datasets = {row[0]: row for row in _section(r.stdout, "datasets")[1:]}
    assert set(datasets) == set(config["datasets"])
    for name, row in datasets.items():
        assert row[1] == config["datasets"][name]["adapter"]
        # msp_podcast is in run_datasets but licensed without a source: left out, and said so
        expected = "no" if name not in config["run_datasets"] else "left" if name == "msp_podcast" else "yes"
        assert row[2] == expected, row
    methods = {row[0]: row for row in _section(r.stdout, "methods")[1:]}
    assert methods["sft_soft"][1:3] == ["sft", "-"] and methods["shala_batch"][1:3] == ["grpo", "shala"]


def test_list_of_an_overlay_lays_config_yaml_under_it():
    """config/demo.yaml alone fails validation; list reads it as the workflow does."""
    r = _cli("list", "--config", "config/demo.yaml")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("config: config.yaml + config/demo.yaml; results in results/demo/")
    run = {row[0] for row in _section(r.stdout, "datasets")[1:] if row[2] == "yes"}
    assert run == {"control", "chaosnli"}
    r = _cli("list", "--config", "config/demo.yaml", "--alone")
    assert r.returncode == 2 and "'seeds' is a required property" in r.stderr


def test_list_without_a_config_shows_the_registries(tmp_path):
    r = _cli("list", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "datasets (" not in r.stdout and "adapters" in r.stdout and "generic" in r.stdout


def test_config_show_prints_the_merged_validated_config_and_its_files():
    r = _cli("config", "show", "--config", "config.yaml", "--config", "config/demo.yaml")
    assert r.returncode == 0, r.stderr
    assert yaml.safe_load(r.stdout) == load_config([ROOT / "config.yaml", ROOT / "config/demo.yaml"])
    head = [line for line in r.stdout.splitlines() if line.startswith("#")]
    assert head[-2:] == ["#   1. config.yaml", "#   2. config/demo.yaml"]
    # schema defaults are filled (the demo's files set no evaluation.splits)
    assert yaml.safe_load(r.stdout)["evaluation"]["splits"]


def test_config_show_error_is_one_line(tmp_path):
    bad = tmp_path / "typo.yaml"
    bad.write_text("run_datasets: [contrl]\n")
    r = _cli("config", "show", "--config", str(bad))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "field 'run_datasets'" in r.stderr and "'contrl'" in r.stderr


@pytest.mark.slow
def test_prompt_of_the_demo_control_is_chat_templated(tmp_path, smollm2_dir):
    """The issue's literal command, run in a copy of the configs whose results
    folder already holds the demo model (a fresh checkout fetches it there)."""
    (tmp_path / "config").mkdir()
    shutil.copy(ROOT / "config.yaml", tmp_path / "config.yaml")
    shutil.copy(ROOT / "config/demo.yaml", tmp_path / "config/demo.yaml")
    base = tmp_path / "results/demo/models/base"
    base.mkdir(parents=True)
    (base / "smollm2").symlink_to(smollm2_dir)
    r = _cli("prompt", "--config", "config/demo.yaml", "--dataset", "control", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    item = next(it for it in _demo_split(tmp_path, "test"))
    assert f"item {item['id']} " in r.stdout
    assert item["inputs"]["text"] in r.stdout
    assert "<|im_start|>system\nYou count the colours people name.<|im_end|>" in r.stdout
    assert '<|im_start|>assistant\n{"red": \n' in r.stdout  # turn opened, response prefix written
    assert '# skeleton (constrained decoding; each N is 1 to 3 digits): {"red": N, "green": N, "blue": N}' in r.stdout
    assert not list(tmp_path.glob("results/demo/data"))  # nothing prepared on disk


def _demo_split(cwd, split):
    """The control's split as `shala prepare` writes it, for comparison."""
    out = cwd / "prepared"
    r = _cli("prepare", "control", "--source", str(cwd), "--out", str(out),
             "--config", "config.yaml", "--config", "config/demo.yaml", cwd=cwd)
    assert r.returncode == 0, r.stderr
    from shala.jsonio import read_jsonl

    return read_jsonl(out / f"{split}.jsonl")


@pytest.mark.slow
def test_prompt_reads_a_prepared_folder_and_picks_the_item(tmp_path, smollm2_dir):
    out = tmp_path / "data"
    r = _cli("prepare", "control", "--source", str(tmp_path), "--out", str(out), "--split-seed", "7",
             "--config", "config.yaml", "--config", "config/demo.yaml")
    assert r.returncode == 0, r.stderr
    from shala.jsonio import read_jsonl

    item = read_jsonl(out / "train.jsonl")[3]
    r = _cli("prompt", "--config", "config/demo.yaml", "--dataset", "control", "--data", str(out),
             "--split", "train", "--item", item["id"], "--model", str(smollm2_dir))
    assert r.returncode == 0, r.stderr
    assert item["inputs"]["text"] in r.stdout and f"split train, item {item['id']} " in r.stdout
    r = _cli("prompt", "--config", "config/demo.yaml", "--dataset", "control", "--data", str(out),
             "--item", "no-such-id", "--model", str(smollm2_dir))
    assert r.returncode == 2 and "no item with id 'no-such-id'" in r.stderr


def test_prompt_of_an_unknown_dataset_is_one_line():
    r = _cli("prompt", "--config", "config/demo.yaml", "--dataset", "contrl")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [r.stderr.strip()] and "'contrl'" in r.stderr


def test_prepare_split_seed_is_the_split_seed(tmp_path):
    runs = {}
    for seed in ("0", "1"):
        out = tmp_path / f"s{seed}"
        r = _cli("prepare", "control", "--source", str(tmp_path), "--out", str(out), "--split-seed", seed,
                 "--config", "config.yaml", "--config", "config/demo.yaml")
        assert r.returncode == 0, r.stderr
        runs[seed] = (out / "test.jsonl").read_text()
        assert f'"split_seed": {seed}' in (out / "prepare.json").read_text()
    assert runs["0"] != runs["1"]
    assert _cli("prepare", "control", "--source", ".", "--out", "x", "--seed", "1").returncode == 2


def _parsers(parser, name="shala"):
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _parsers(sub, f"{name} {sub_name}")


def test_every_option_of_every_command_has_help():
    missing = [f"{name}: {action.option_strings or action.dest}"
               for name, parser in _parsers(build_parser()) for action in parser._actions
               if not (action.help or "").strip() or action.help == argparse.SUPPRESS]
    assert not missing, missing


def test_seed_options_say_which_seed():
    helps = {name: {a.dest: a.help for a in p._actions} for name, p in _parsers(build_parser())}
    assert "seed" not in helps["shala prepare"] and "split" in helps["shala prepare"]["split_seed"]
    for cmd in ("shala train", "shala sft"):
        assert helps[cmd]["seed"].startswith("training seed")


def test_help_lists_commands_in_pipeline_order():
    out = _cli("--help").stdout
    order = ["fetch-data", "prepare", "fetch-model", "sft", "train", "predict", "reference", "evaluate",
             "report", "list", "config", "prompt", "preflight", "gpus", "free-port"]
    listed = [line.split()[0] for line in out.splitlines() if line.startswith("    ") and line.split()
              and line.split()[0] in order]
    assert listed == order
    train = _cli("train", "--help").stdout
    assert "GRPO training of one method" not in train and "trainer decides" in train
