"""Part (a) of the GPU check: the paper's launch path on a tiny random
Qwen2.5-Omni thinker (built in seconds, no download), text and audio.

For each of a text dataset (ChaosNLI-like items) and a speech + text one
(MSP-Podcast-like items with WAV clips written here):
  1. 2 GRPO steps through `accelerate launch --num_processes 1` (a
     `shala free-port` rendezvous port) with the repo's ZeRO-3 config
     (config/accelerate_zero3.yaml) in bf16 — or, with --cpu-smoke, a plain
     single-process `shala train` in float32 on the CPU (no DeepSpeed), so
     the test suite keeps this script working (tests/integration/test_zero3.py runs the
     ZeRO-3 launch itself on 2 CPU ranks);
  2. save (the run's final weights), reload them with `shala predict`, and
     predict the test split.
It checks what each step left (run.json: 2 steps, audio on for the speech
data; one prediction per test item) and writes OUTDIR/gpu_check_a.json (the
runs' own output: OUTDIR/gpu_check_a.runs.log) at the start and after each
run, so a time-out keeps the text run's result; a run that fails records
its error and the next one still runs.

    python bench/gpu_check_tiny.py OUTDIR [--cpu-smoke]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import wave
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
NLI = ["entailment", "neutral", "contradiction"]
EMOTIONS = ["angry", "contempt", "disgust", "fear", "happy", "neutral", "sad", "surprise"]
UTTERANCES = ["I am so happy today", "no", "why would you do that to me"]


def write_tone(path: Path, seconds: float, freq: float, rate: int = 22050) -> Path:
    t = np.arange(int(seconds * rate)) / rate
    pcm = np.round(0.5 * np.sin(2 * np.pi * freq * t) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return path


def write_data(root: Path) -> dict[str, Path]:
    from shala.data.items import make_item
    from shala.jsonio import write_jsonl

    nli = [make_item(id=f"n{k}", dataset="chaosnli", subset="snli",
                     inputs={"premise": f"A man plays {k} songs", "hypothesis": "A person makes music"},
                     labels=NLI, counts=[5 + k % 3, 3, 2], ambiguity="entropy") for k in range(8)]
    wav_dir = root / "wav"
    wav_dir.mkdir(parents=True, exist_ok=True)
    wavs = [write_tone(wav_dir / f"u{k}.wav", 0.4 + 0.3 * k, 200.0 + 60 * k) for k in range(3)]
    msp = [make_item(id=f"MSP_{k}", dataset="msp_podcast", subset=None,
                     inputs={"text": UTTERANCES[k % 3], "audio": str(wavs[k % 3])},
                     labels=EMOTIONS, counts=[k % 2, 0, 0, 0, 2, 1, 0, 0], ambiguity="active") for k in range(6)]
    dirs = {}
    for name, items in (("chaosnli", nli), ("msp_podcast", msp)):
        d = root / "data" / name
        write_jsonl(d / "train.jsonl", [{**it, "split": "train"} for it in items])
        write_jsonl(d / "test.jsonl", [{**it, "split": "test"} for it in items[:3]])
        dirs[name] = d
    return dirs


def write_config(root: Path, model: Path, gpu: bool) -> Path:
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    cfg["model"] = {"source": "local", "path": str(model), "component": None,
                    "dtype": "bfloat16" if gpu else "float32"}
    cfg["datasets"]["chaosnli"]["prompt"] = {"target": "P: {premise}\nH: {hypothesis}", "task": "Classes:",
                                             "output": "JSON: {label_list}"}
    cfg["datasets"]["msp_podcast"]["prompt"] = {"target": "{text}", "task": "Classes:",
                                                "output": "JSON: {label_list}"}
    cfg["training"].update(gpus=1 if gpu else 0, threads=os.cpu_count() if gpu else 1)
    cfg["training"]["grpo"].update(max_steps=2, per_device_train_batch_size=2, num_generations=2,
                                   gradient_accumulation_steps=1, max_completion_length=8, save_steps=1,
                                   logging_steps=1, bf16=gpu, gradient_checkpointing=False)
    cfg["evaluation"].update(batch_size=3, max_new_tokens=6)
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def run(cmd: list[str], log) -> float:
    log.write("$ " + " ".join(cmd) + "\n")
    log.flush()
    t = time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    if r.returncode:
        raise RuntimeError(f"exit {r.returncode}: {' '.join(cmd[:8])} ...; see gpu_check_a.runs.log")
    return time.perf_counter() - t


def one_run(name: str, d: Path, launch: list[str], py: list[str], model: Path, config: Path, work: Path, log) -> dict:
    """Train, reload and predict one dataset; its checks."""
    run_dir = work / "models" / name
    t_train = run(launch + ["train", "--dataset", name, "--method", "shala", "--seed", "0", "--data", str(d),
                            "--model", str(model), "--out", str(run_dir), "--config", str(config)], log)
    record = json.loads((run_dir / "run.json").read_text())
    preds = work / "predictions" / f"{name}.jsonl"
    t_pred = run(py + ["predict", "--dataset", name, "--data", str(d), "--model", str(run_dir), "--split", "test",
                       "--out", str(preds), "--config", str(config)], log)
    rows = [json.loads(line) for line in preds.read_text().splitlines()]
    pred_record = json.loads(preds.with_suffix(".run.json").read_text())
    checks = {"global_step": record["global_step"] == 2, "audio": record["audio"] == (name == "msp_podcast"),
              "predicted_every_item": len(rows) == 3,
              "predict_audio": pred_record.get("audio") == (name == "msp_podcast"),
              "weights_saved": any(run_dir.glob("*.safetensors"))}
    return {"train_seconds": round(t_train, 1), "predict_seconds": round(t_pred, 1),
            "world_size": record["world_size"], "device": record["device"],
            "seconds_per_step": record["timing"]["seconds_per_step"], "checks": checks}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("outdir")
    ap.add_argument("--cpu-smoke", action="store_true", help="CPU, float32, no DeepSpeed (the test suite's run)")
    args = ap.parse_args()
    out = Path(args.outdir).resolve()
    work = out / "tiny"
    work.mkdir(parents=True, exist_ok=True)
    gpu = not args.cpu_smoke

    from shala.model.tiny_omni import build_tiny_omni

    model = build_tiny_omni(work / "omni", full=False)[0]
    data = write_data(work)
    config = write_config(work, model, gpu)
    py = [sys.executable, "-m", "shala"]
    launch = py
    if gpu:  # the workflow's ZeRO-3 launch at 1 rank (launcher_command gives plain `shala` for 1)
        port = subprocess.run(py + ["free-port"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
        launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", "config/accelerate_zero3.yaml",
                  "--num_processes", "1", "--main_process_port", port, "-m", "shala"]
    result = {"mode": "gpu: accelerate + ZeRO-3, bf16" if gpu else "cpu-smoke: single process, float32",
              "python": sys.version.split()[0], "ok": False, "pending": list(data), "runs": {}}
    path = out / "gpu_check_a.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    with open(out / "gpu_check_a.runs.log", "w") as log:
        for name, d in data.items():
            try:
                row = one_run(name, d, launch, py, model, config, work, log)
                print(f"(a) {name}: train {row['train_seconds']} s, predict {row['predict_seconds']} s, "
                      f"checks {row['checks']}", flush=True)
            except Exception as exc:  # noqa: BLE001 - the other dataset's run still runs
                row = {"error": f"{type(exc).__name__}: {exc}"[:500]}
                print(f"(a) {name}: FAILED {row['error']}", flush=True)
            result["runs"][name] = row
            result["pending"].remove(name)
            result["ok"] = not result["pending"] and all(
                "error" not in r and all(r["checks"].values()) for r in result["runs"].values())
            path.write_text(json.dumps(result, indent=2) + "\n")  # now: a time-out keeps this run
    if not result["ok"]:
        raise SystemExit("gpu_check_tiny: a run failed or a check did not hold; see gpu_check_a.json")


if __name__ == "__main__":
    main()
