"""The paper's launch, run for real on the CPU: `shala train` through the very
prefix the workflow's `train` rule builds (``accelerate launch --config_file
config/accelerate_zero3.yaml --num_processes 2 --main_process_port $(shala
free-port) -m shala``), two ranks under DeepSpeed ZeRO-3 (partitioned init,
towers frozen, gradient checkpointing on), then save, reload in one process
and `shala predict`.

The CPU switches come from the package, not from this test: without CUDA,
training sets ``ddp_backend: gloo`` and ``DS_ACCELERATOR=cpu``
(:func:`shala.train.device.adapt_to_device`). Two launches run at once (GRPO and
the ``sft_soft`` SFT path), which also checks that each gets a rendezvous
port of its own. Marker ``zero3``: ``pytest -m zero3``. DeepSpeed builds its
shared-memory op once (g++, ninja; about a minute), cached in
~/.cache/torch_extensions.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from shala.data.items import make_item
from shala.jsonio import read_jsonl, write_jsonl
from shala.launch.launcher import launcher_command

pytest.importorskip("deepspeed", reason="deepspeed is not installed (the `gpu` extra; CI installs it)")
from safetensors.torch import load_file  # noqa: E402

from shala.model.tiny_omni import build_tiny_omni  # noqa: E402

pytestmark = [pytest.mark.zero3, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
NLI = ["entailment", "neutral", "contradiction"]
EMOTIONS = ["angry", "contempt", "disgust", "fear", "happy", "neutral", "sad", "surprise"]
UTTERANCES = ["I am so happy today", "no", "why would you do that to me"]
TOWERS_ON_DISK = ("audio_tower.", "visual.")  # a saved thinker's names (model.audio_tower in memory)


def _speech(path: Path, text: str, k: int) -> Path:
    """Real speech from espeak-ng where installed (CI installs it), else a tone."""
    if shutil.which("espeak-ng"):
        subprocess.run(["espeak-ng", "-w", str(path), text], check=True, capture_output=True)
        return path
    import wave

    import numpy as np

    t = np.arange(int(8000 * (0.4 + 0.2 * k))) / 8000
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes((0.4 * np.sin(2 * np.pi * (180 + 40 * k) * t) * 32767).astype("<i2").tobytes())
    return path


def _constrained_prompt(target: str, labels: list[str]) -> dict:
    keys = ", ".join(f'"{label}": n' for label in labels)
    return {"background": "", "target": target, "task": f"100 people chose among {', '.join(labels)}. How many each?",
            "output": "Answer in JSON: {{" + keys + "}}", "answer_scale": 100, "response_prefix": "auto",
            "constrained": True}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("zero3")
    model = build_tiny_omni(root / "omni", full=False)[0]
    nli = [make_item(id=f"n{k}", dataset="chaosnli", subset="snli",
                     inputs={"premise": f"A man plays {k} songs", "hypothesis": "A person makes music"},
                     labels=NLI, counts=[5 + k % 3, 3, 2 + k % 2], ambiguity="entropy") for k in range(8)]
    wavs = [_speech(root / f"u{k}.wav", UTTERANCES[k], k) for k in range(3)]
    msp = [make_item(id=f"MSP_{k}", dataset="msp_podcast", subset=None,
                     inputs={"text": UTTERANCES[k % 3], "audio": str(wavs[k % 3])},
                     labels=EMOTIONS, counts=[k % 2, 0, 0, 0, 2, 1, 0, 0], ambiguity="active") for k in range(6)]
    data = {}
    for name, items in (("chaosnli", nli), ("msp_podcast", msp)):
        d = root / "data" / name
        write_jsonl(d / "train.jsonl", [{**it, "split": "train"} for it in items])
        write_jsonl(d / "test.jsonl", [{**it, "split": "test"} for it in items[:3]])
        data[name] = d
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    cfg["model"] = {"source": "local", "path": str(model), "component": "thinker", "dtype": "float32"}
    cfg["datasets"]["chaosnli"]["prompt"] = _constrained_prompt("P: {premise}\nH: {hypothesis}", NLI)
    cfg["datasets"]["msp_podcast"]["prompt"] = _constrained_prompt("{text}", EMOTIONS)
    # the paper's launch: training.gpus 2 ranks, config/accelerate_zero3.yaml, bf16 asked for
    cfg["training"].update(gpus=2, threads=1, freeze_unused_towers=True)
    cfg["training"]["grpo"].update(max_steps=2, per_device_train_batch_size=2, num_generations=2,
                                   gradient_accumulation_steps=1, max_completion_length=24, save_steps=1,
                                   logging_steps=1, learning_rate=1e-3, gradient_checkpointing=True)
    cfg["training"]["warmup_sft"].update(gradient_checkpointing=True)
    cfg["evaluation"].update(batch_size=3, max_new_tokens=24)
    (root / "config.yaml").write_text(yaml.safe_dump(cfg))
    return root, model, data, cfg


def _env() -> dict:
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "OMP_NUM_THREADS": "1",
            "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}


def _train_cmd(setup, name: str, method: str, config: Path | None = None, tag: str = "",
               threads: int = 1) -> tuple[str, Path]:
    root, model, data, cfg = setup
    out = root / "models" / name / (method + tag)
    prefix = launcher_command(cfg["training"])
    assert prefix.startswith("accelerate launch --config_file config/accelerate_zero3.yaml --num_processes 2 ")
    cmd = (f"{prefix} train --dataset {name} --method {method} --seed 0 --data {data[name]}"
           f" --model {model} --out {out} --threads {threads} --config {config or root / 'config.yaml'}")
    return cmd, out


def _launch(cmd: str, log: Path) -> subprocess.Popen:
    fh = log.open("w")
    return subprocess.Popen(["bash", "-c", cmd], cwd=ROOT, env=_env(), stdout=fh, stderr=subprocess.STDOUT)


def _predict(setup, name: str, run_dir: Path) -> list[dict]:
    root, _, data, _ = setup
    preds = root / "predictions" / f"{name}-{run_dir.name}.jsonl"
    assert not preds.exists()
    r = subprocess.run([str(BIN / "shala"), "predict", "--dataset", name, "--data", str(data[name]),
                        "--model", str(run_dir), "--split", "test", "--out", str(preds),
                        "--config", str(root / "config.yaml"), "--threads", "1"],
                       cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return read_jsonl(preds)


def _check_saved(model: Path, run_dir: Path, *, trained: bool) -> None:
    """The 16-bit gather on save wrote whole tensors: every tensor of the
    initial thinker at its full shape, the frozen audio tower bit-identical,
    and (when the run had a gradient) some text weight moved."""
    before = load_file(str(model / "model.safetensors"))
    after = {}
    for f in run_dir.glob("*.safetensors"):
        after.update(load_file(str(f)))
    assert set(after) == set(before)
    assert all(after[k].shape == before[k].shape for k in before)
    tower = [k for k in before if k.startswith(TOWERS_ON_DISK)]
    assert tower and all((after[k].float() == before[k].float()).all() for k in tower)
    moved = [k for k in before if not k.startswith(TOWERS_ON_DISK)
             and not (after[k].float() == before[k].float()).all()]
    assert bool(moved) == trained


def _check_record(run_dir: Path, log: Path) -> dict:
    rec = json.loads((run_dir / "run.json").read_text())
    assert rec["world_size"] == 2
    z = rec["zero3"]
    assert z["partitioned_tensors"] == z["tensors"] > 0  # zero3_init_flag partitioned every tensor at load
    assert z["local_numel"] < z["partitioned_numel"]     # each rank holds a share, not the model
    text = log.read_text()
    assert "of world size 2" in text and "partitioned by ZeRO-3" in text
    return rec


def test_zero3_two_launches_at_once_grpo_and_sft(setup):
    """GRPO (text) and sft_soft, each 2 ranks under ZeRO-3, launched together."""
    root, model, _, _ = setup
    jobs = {}
    t0 = time.perf_counter()
    for method in ("shala", "sft_soft"):
        cmd, out = _train_cmd(setup, "chaosnli", method)
        log = root / f"train-{method}.log"
        jobs[method] = (_launch(cmd, log), out, log)
    for method, (proc, out, log) in jobs.items():
        assert proc.wait(timeout=900) == 0, log.read_text()[-4000:]
    print(f"two concurrent ZeRO-3 launches: {time.perf_counter() - t0:.1f} s")

    out, log = jobs["shala"][1:]
    rec = _check_record(out, log)
    assert rec["global_step"] == 2 and rec["kind"] == "grpo"
    assert rec["grpo_config"]["full"]["ddp_backend"] == "gloo"
    assert rec["audio_tower_calls"] == 0  # text items: the audio tower never runs
    steps = [r for r in read_jsonl(out / "train_log.jsonl") if r.get("event") == "log" and "grad_norm" in r]
    trained = any((r["grad_norm"] or 0) > 0 for r in steps)
    _check_saved(model, out, trained=trained)
    rows = _predict(setup, "chaosnli", out)
    assert len(rows) == 3 and all(r["dist"] is not None for r in rows)  # constrained: every answer parses

    out, log = jobs["sft_soft"][1:]
    rec = _check_record(out, log)
    assert rec["kind"] == "sft" and rec["global_step"] == 2
    _check_saved(model, out, trained=True)
    assert len(_predict(setup, "chaosnli", out)) == 3


def test_zero3_audio_grpo_two_ranks(setup):
    """Speech + text: MSP-format items, the audio tower runs on both ranks
    (in generation and in the loss forward), under ZeRO-3."""
    root, model, _, _ = setup
    cmd, out = _train_cmd(setup, "msp_podcast", "shala", threads=2)
    log = root / "train-audio.log"
    proc = _launch(cmd, log)
    assert proc.wait(timeout=900) == 0, log.read_text()[-4000:]
    rec = _check_record(out, log)
    assert rec["torch_threads"] == 1  # the job's 2 threads shared by its 2 ranks (issue 26)
    assert rec["audio"] is True and rec["global_step"] == 2
    assert rec["audio_tower_calls"] >= 2  # rank 0: generation and loss, each step
    assert log.read_text().count("audio tower ran") == 2  # one line per rank
    rows = _predict(setup, "msp_podcast", out)
    assert len(rows) == 3


def test_zero3_lora_audio_two_ranks(setup):
    """LoRA (training.peft) under the same 2-rank ZeRO-3 launch, on speech +
    text: adapters only train (the audio tower runs but gets none), the
    trainer's save gathers them whole, and `shala predict` applies them
    unmerged over the base in one process."""
    root, model, _, cfg = setup
    lora = copy.deepcopy(cfg)
    lora["training"]["peft"] = {"enabled": True, "r": 4, "lora_alpha": 8}
    path = root / "config-lora.yaml"
    path.write_text(yaml.safe_dump(lora))
    cmd, out = _train_cmd(setup, "msp_podcast", "shala", config=path, tag="-lora")
    log = root / "train-lora.log"
    assert _launch(cmd, log).wait(timeout=900) == 0, log.read_text()[-4000:]
    rec = _check_record(out, log)
    assert rec["audio"] is True and rec["global_step"] == 2 and rec["audio_tower_calls"] >= 2
    peft = rec["peft"]
    assert (peft["r"], peft["lora_alpha"]) == (4, 8) and 0 < peft["trainable_params"] < peft["total_params"]
    adapter = load_file(str(out / "adapter" / "adapter_model.safetensors"))
    assert adapter and all("lora_" in k for k in adapter)
    assert not any(t in k for k in adapter for t in ("audio_tower", "visual"))  # frozen towers: no adapters
    assert sum(t.numel() for t in adapter.values()) == peft["trainable_params"]  # whole, not one rank's shard
    assert not list(out.glob("*.safetensors"))  # no merged copy (shala.model.adapters)
    assert json.loads((out / "adapter_base.json").read_text()) == {"base_model": str(model)}
    rows = _predict(setup, "msp_podcast", out)
    assert [r["id"] for r in rows] == ["MSP_0", "MSP_1", "MSP_2"] and all(r["dist"] is not None for r in rows)
