"""Per-role environments: the light rules (fetch, prepare, reference
predictors, evaluate, report) run on the shala core alone, without torch or
any model library, so `--software-deployment-method conda` builds them a
small env (envs/light.yaml); the model rules get envs/model.yaml."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from conftest import SHARED_DATA, needs_shared_data

ROOT = Path(__file__).resolve().parents[2]
MODEL_LIBS = {"torch", "transformers", "trl", "datasets", "accelerate", "peft", "deepspeed", "gguf", "safetensors"}
MODEL_RULES = {"base_model", "fetch_model", "warmup_sft", "train", "predict", "probe"}
# runs `shala ARGS` with every model library unimportable, as in envs/light.yaml
BLOCKED = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {sorted(MODEL_LIBS)!r}:
            raise ImportError('not in the light env: ' + name)
sys.meta_path.insert(0, Block())
from shala.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _light(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCKED, *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)


def test_core_dependencies_hold_no_model_library():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    name = lambda req: re.match(r"[A-Za-z0-9_.-]+", req)[0].lower()  # noqa: E731
    core = {name(r) for r in meta["dependencies"]}
    assert not core & MODEL_LIBS
    assert {"torch", "transformers", "trl", "datasets", "accelerate"} <= {name(r) for r in
                                                                          meta["optional-dependencies"]["model"]}


def test_each_rule_names_the_env_of_its_role():
    seen = {}
    for f in (ROOT / "rules").glob("*.smk"):
        for block in re.split(r"(?=^\s*rule )", f.read_text(), flags=re.M):
            m = re.match(r"\s*rule (\w+):", block)
            if m:
                seen[m[1]] = re.search(r'conda:\s*\n\s*"\.\./envs/(\w+)\.yaml"', block)[1]
    assert {r for r, env in seen.items() if env == "model"} == MODEL_RULES
    assert set(seen.values()) == {"light", "model"} and len(seen) == 11  # base_model or fetch_model, by source
    assert "-e ..\n" in (ROOT / "envs" / "light.yaml").read_text()
    assert "-e ..[model,gpu]" in (ROOT / "envs" / "model.yaml").read_text()


@needs_shared_data("chaosnli")
def test_light_commands_run_without_model_libraries(tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"data_mirror: {SHARED_DATA}\n")
    cfgs = ["--config", str(ROOT / "config.yaml"), "--config", str(cfg)]
    steps = [
        ("fetch-data", "chaosnli", "--out", str(tmp_path / "raw"), *cfgs),
        ("prepare", "chaosnli", "--source", str(tmp_path / "raw"), "--out", str(tmp_path / "data"), *cfgs),
        ("reference", "prior", "--data", str(tmp_path / "data"), "--split", "test", "--out",
         str(tmp_path / "pred" / "chaosnli" / "ref_prior" / "seed0" / "test.jsonl"), "--source", str(tmp_path / "raw")),
        ("evaluate", "--predictions", str(tmp_path / "pred" / "chaosnli" / "ref_prior" / "seed0" / "test.jsonl"),
         "--out", str(tmp_path / "metrics" / "chaosnli" / "ref_prior" / "seed0" / "test.json")),
        ("report", "--metrics", str(tmp_path / "metrics" / "chaosnli" / "ref_prior" / "seed0" / "test.json"),
         "--out", str(tmp_path / "reports"), *cfgs),
    ]
    for args in steps:
        r = _light(*args)
        assert r.returncode == 0, (args[0], r.stderr[-3000:])
    metrics = json.loads((tmp_path / "metrics" / "chaosnli" / "ref_prior" / "seed0" / "test.json").read_text())
    assert metrics["n"] == 623 and metrics["parse_failure_rate"] == 0
    assert "ref_prior" in (tmp_path / "reports" / "table1.csv").read_text()
    # and the blocker does block: a model command fails on the missing library
    r = _light("predict", "--dataset", "chaosnli", "--data", str(tmp_path / "data"), "--model", str(tmp_path),
               "--out", str(tmp_path / "p.jsonl"), *cfgs)
    assert r.returncode != 0 and "not in the light env" in r.stderr
