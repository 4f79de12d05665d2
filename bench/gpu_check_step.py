"""Part (d) of the GPU check: one full GRPO step of the paper's full-size
thinker (Qwen2.5-Omni-7B's, from src/shala/resources/qwen2_5_omni_7b_config.json,
random weights) under DeepSpeed ZeRO-3 on one GPU, launched as a user's job
is: ``accelerate launch --config_file config/accelerate_zero3.yaml
--num_processes 1 --main_process_port <shala free-port> -m shala train ...``.

Why: parts (b)/(c) time generation and forward + backward without DeepSpeed
or an optimizer, and preflight's memory model has never met a real ZeRO-3
step. This runs the paper's per-device setting (batch 4, 4 rollouts,
gradient accumulation 2, 128 tokens at temperature 1.2, bf16, gradient
checkpointing, towers frozen, the AdamW step) and writes, side by side, into
OUTDIR/gpu_check_d.json: seconds per step (run.json), peak GPU memory three
ways (run.json ``peak_gpu_memory_gib``; torch's max reserved, from a
sitecustomize hook in the trainer; nvidia-smi), shala.launch.gpu_memory's estimate for
the same setting, and the time saving takes.

The checkpoint is built on the GPU in a child process (its memory is gone
before training) and saved in bf16 with a tokenizer trained here; the items
carry the paper's prompt, padded to about --prompt-tokens. ``save_only_model``:
the end-of-training checkpoint holds weights only (a user's run writes the
ZeRO-3 optimizer state there too, 91 GB, more than the check machine's disk),
and a watcher deletes them once written: ~36 GB of disk at most. The model
files go at the end (--keep keeps them). A time-out (GPU_CHECK_TIME_LIMIT,
from gpu_check.sh) or SIGTERM still writes what was measured. --cpu-smoke:
the same path at toy size on a CPU rank (the package sets DS_ACCELERATOR=cpu
and gloo), for tests/integration/test_gpu_check.py.

Memory gate, before anything is built: shala.launch.gpu_memory's estimate
for this setting (136.0 GiB at 256 prompt tokens: 118.9 static, bf16
weights, fp32 master weights and Adam moments, bf16 gradients, overhead,
plus the generation gather) against the GPU's total memory (nvidia-smi;
gpu_check.sh's probe gates with torch's reading and passes --force). Where
it does not fit (any 80 GB card) the JSON says "skipped" with the reason
and the part exits 0; --force runs it anyway.

    python bench/gpu_check_step.py OUTDIR [--cpu-smoke] [--steps 2] [--prompt-tokens 256] [--keep] [--force]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from gpu_check import CONFIG, SPECIAL_IDS, build, write_inputs  # bench/: the thinker of parts (b)/(c), its inputs

ROOT = Path(__file__).resolve().parents[1]
GIB = 2 ** 30
# On PYTHONPATH of the launch: each process that imported torch writes its
# peaks every second (a killed run still leaves them), then the
# sitecustomize this one shadows runs.
HOOK = r'''
import importlib.machinery, importlib.util, json, os, resource, sys, threading, time
def _snap(path):
    torch = sys.modules.get("torch")
    try:
        s = {"pid": os.getpid(), "max_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}
        if torch is None:
            return
        if torch.cuda.is_initialized():
            s.update(max_allocated_gib=torch.cuda.max_memory_allocated(0) / 2**30,
                     max_reserved_gib=torch.cuda.max_memory_reserved(0) / 2**30)
        with open(os.path.join(path, f".{os.getpid()}"), "w") as fh:
            json.dump(s, fh)
        os.replace(os.path.join(path, f".{os.getpid()}"), os.path.join(path, f"{os.getpid()}.json"))
    except Exception:  # torch half imported, a full disk: try again in a second
        pass
def _loop(path):
    while not time.sleep(1.0):
        _snap(path)
if os.environ.get("GPU_CHECK_MEM_DIR"):
    import atexit
    atexit.register(_snap, os.environ["GPU_CHECK_MEM_DIR"])
    threading.Thread(target=_loop, args=(os.environ["GPU_CHECK_MEM_DIR"],), daemon=True).start()
_here = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.machinery.PathFinder.find_spec(
    "sitecustomize", [p for p in sys.path if os.path.abspath(p or ".") != _here])
if _spec is not None and _spec.loader is not None:
    _spec.loader.exec_module(importlib.util.module_from_spec(_spec))
'''


# the paper's per-device setting (config.yaml), written out
PAPER_GRPO = {"per_device_train_batch_size": 4, "num_generations": 4, "gradient_accumulation_steps": 2,
              "max_completion_length": 128, "temperature": 1.2, "gradient_checkpointing": True}
# Stated fallbacks where shala.launch.gpu_memory cannot answer (its numbers for 8.93B parameters,
# 7.62B trainable, 256 prompt tokens): static = bf16 weights 16.6 + fp32 master weights and Adam
# m, v 85.1 + bf16 gradients 14.2 + CUDA overhead 3.0; need = static + generation gather 16.6 +
# activations 0.9 + KV cache 0.2.
STATIC_GIB, NEED_GIB = 118.9, 136.0


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] (d) {msg}", flush=True)


def _zero3_values():
    """The ZeRO-3 values of the repo's DeepSpeed json (sub_group_size, live
    parameters), read as preflight reads them, so the estimate is the run's."""
    from shala.launch.launch_check import check_launch_config

    root = Path(__file__).resolve().parents[1]
    return check_launch_config(str(root / "config" / "accelerate_zero3.yaml"), gpus=1, grpo=PAPER_GRPO).zero3


def memory_need(prompt_tokens: int = 256) -> dict:
    """GiB this part needs on its one GPU: shala.launch.gpu_memory's estimate
    for the shipped thinker config in PAPER_GRPO's setting, ZeRO-3, 1 GPU
    (needs torch and transformers for the parameter count on the meta
    device, no GPU and no weights); the stated numbers above if that fails."""
    try:
        from shala.launch.gpu_memory import estimate_memory, setup_for
        from shala.launch.model_shape import count_parameters

        shape = count_parameters(json.loads(CONFIG.read_text()), name="thinker")
        est = estimate_memory(shape, setup_for(PAPER_GRPO, gpus=1, deepspeed=True, zero_stage=3,
                                               freeze_towers=True, prompt_tokens=prompt_tokens,
                                               zero3=_zero3_values()))
        return {"need_gib": round(est.total_gib, 1), "static_gib": round(est.static / GIB, 1),
                "source": "shala.launch.gpu_memory.estimate_memory", "params": shape.total,
                "lines": {x.label: round(x.bytes / GIB, 2) for x in est.lines}}
    except Exception as exc:  # noqa: BLE001 - the gate must answer even where the estimate breaks
        return {"need_gib": NEED_GIB, "static_gib": STATIC_GIB,
                "source": f"stated in gpu_check_step.py (the estimate failed: {type(exc).__name__}: {exc})"[:300]}


def memory_gate(have_gib: float | None, have_source: str, prompt_tokens: int = 256) -> tuple[bool, dict]:
    """(whether the need fits the GPU's total memory, the numbers and the reason).
    No headroom: the point is to measure how close the estimate comes."""
    need = memory_need(prompt_tokens)
    fits = have_gib is not None and need["need_gib"] <= have_gib
    need.update(have_gib=have_gib, have_source=have_source, fits=fits)
    if not fits:
        need["reason"] = (f"memory: needs about {need['need_gib']} GiB on one GPU ({need['source']}: "
                          f"{need['static_gib']} GiB static, bf16 weights, fp32 master weights and Adam moments, "
                          f"bf16 gradients, CUDA overhead, plus the generation gather, activations and KV cache); "
                          f"this GPU has {have_gib} GiB ({have_source}). It runs on a card with more, an H200 "
                          f"(139.8 GiB); --force-d tries anyway")
    return fits, need


def build_checkpoint(model_dir: Path, tiny: bool) -> dict:
    """The child process: the random thinker (gpu_check.build), on the GPU
    (CPU with --cpu-smoke) in bf16, its special-token ids our tokenizer's."""
    import torch
    from transformers import AutoTokenizer, GenerationConfig

    cuda, tok = not tiny, AutoTokenizer.from_pretrained(model_dir)
    ids = {key: tok.convert_tokens_to_ids(t) for key, t in SPECIAL_IDS.items()}
    t = [time.perf_counter()]
    model, cfg = build(torch, "cuda" if cuda else "cpu", tiny, ids)
    if cuda:
        torch.cuda.synchronize()
    t.append(time.perf_counter())
    model.generation_config = GenerationConfig(eos_token_id=ids["eos_token_id"], pad_token_id=ids["pad_token_id"],
                                               do_sample=False)
    model.to("cpu")
    t.append(time.perf_counter())
    model.save_pretrained(model_dir)
    t.append(time.perf_counter())
    size = sum(f.stat().st_size for f in model_dir.glob("*.safetensors"))
    return {"params": sum(p.numel() for p in model.parameters()), "vocab_size": cfg.get_text_config().vocab_size,
            "device": torch.cuda.get_device_name(0) if cuda else "cpu",
            "gpu_mem_gib": round(torch.cuda.get_device_properties(0).total_memory / GIB, 1) if cuda else None,
            "build_s": round(t[1] - t[0], 1), "to_cpu_s": round(t[2] - t[1], 1), "save_s": round(t[3] - t[2], 1),
            "bytes": size, "write_gb_per_s": round(size / 1e9 / (t[3] - t[2]), 2)}


def write_config(work: Path, model_dir: Path, gpu: bool, steps: int, fit: str) -> Path:
    import yaml

    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    cfg["results"] = str(work / "results")
    cfg["model"] = {"source": "local", "path": str(model_dir), "component": "thinker", "dtype": "bfloat16"}
    cfg["training"].update(gpus=1, threads=os.cpu_count() if gpu else 1, freeze_unused_towers=True,
                           keep_checkpoints=False, fit_to_hardware=fit)
    # the paper's per-device setting; bf16 is asked for on the CPU too
    cfg["training"]["grpo"].update(max_steps=steps, **PAPER_GRPO, bf16=True, logging_steps=1, save_steps=10_000,
                                   save_only_model=True)
    path = work / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def nvidia_smi(query: str) -> float | None:
    try:
        r = subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader,nounits", "-i", "0"],
                           capture_output=True, text=True, timeout=10)
        return float(r.stdout.split()[0]) if r.returncode == 0 else None
    except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
        return None


class Watch(threading.Thread):
    """Polls the run folder (checkpoint, final weights, run.json, the steps
    of train_log.jsonl: seconds since the launch) and the device's memory in
    use; deletes a finished checkpoint's weights (module doc)."""

    def __init__(self, run_dir: Path, gpu: bool):
        super().__init__(daemon=True)
        self.run_dir, self.gpu, self.t0, self.t_smi = run_dir, gpu, time.perf_counter(), 0.0
        self.events: dict[str, float] = {}
        self.device_peak_mib: float | None = None
        self.deleted_bytes = 0
        self.done = threading.Event()

    def start(self) -> None:
        self.t0 = time.perf_counter()
        super().start()

    def mark(self, name: str) -> None:
        self.events.setdefault(name, round(time.perf_counter() - self.t0, 1))

    def poll(self) -> None:
        for ck in sorted((self.run_dir / "checkpoints").glob("checkpoint-*")):
            self.mark("checkpoint_started")
            if (ck / "trainer_state.json").exists():
                self.mark("checkpoint_written")
                for f in ck.glob("*.safetensors"):
                    self.deleted_bytes += f.stat().st_size
                    f.unlink(missing_ok=True)
        if any(self.run_dir.glob("*.safetensors")):
            self.mark("final_weights_started")
        if (self.run_dir / "run.json").exists():
            self.mark("run_json_written")
        tl = self.run_dir / "train_log.jsonl"
        for line in tl.read_text().splitlines() if tl.exists() else []:
            row = json.loads(line) if line.strip().endswith("}") else {}
            if row.get("event") in ("start", "step"):
                self.mark("model_loaded" if row["event"] == "start" else f"step_{row.get('step')}_done")
        if self.gpu and time.perf_counter() - self.t_smi >= 1.0:
            self.t_smi = time.perf_counter()
            used = nvidia_smi("memory.used")
            if used is not None:
                self.device_peak_mib = max(used, self.device_peak_mib or 0.0)

    def poll_safe(self) -> None:
        try:
            self.poll()
        except (OSError, ValueError):  # a file half written, the checkpoint folder going
            pass

    def run(self) -> None:
        while not self.done.wait(0.2):
            self.poll_safe()


def run_logged(cmd: list[str], log_path: Path, env: dict, timeout: float) -> int:
    """``cmd`` in a process group of its own, output to ``log_path``; on a
    time-out or an interrupt (SIGTERM: gpu_check.sh's limit) that group ends."""
    with log_path.open("a") as fh:
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            return proc.wait(timeout=max(timeout, 1))
        except BaseException as exc:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
            if isinstance(exc, subprocess.TimeoutExpired):
                raise TimeoutError(f"stopped at the part's time limit, after {timeout:.0f} s of "
                                   f"{' '.join(cmd[1:4])} ...") from None
            raise


def estimate(config_path: Path, prompt_tokens: int, mem_gib: float) -> dict:
    """shala.launch.gpu_memory's per-GPU estimate for the setting that ran, Setup(gpus=1,
    deepspeed=True, ZeRO-3): the function preflight prints and training's fit
    decides with, called directly because `shala preflight --gpus 1`
    estimates plain training (a 1-GPU workflow job runs without DeepSpeed)."""
    import yaml

    from shala.launch.gpu_memory import estimate_memory, fits_in, setup_for
    from shala.launch.model_shape import count_parameters, model_config_dict

    cfg = yaml.safe_load(config_path.read_text())
    shape = count_parameters(*model_config_dict(cfg)[:1], name="thinker")
    out: dict = {"source": "shala.launch.gpu_memory.estimate_memory(Setup(gpus=1, deepspeed=True, zero_stage=3, ...))"}
    for key, tokens in (("as_run", prompt_tokens), ("preflight_default_prompt", None)):
        setup = setup_for(cfg["training"]["grpo"], gpus=1, deepspeed=True, zero_stage=3, freeze_towers=True,
                          zero3=_zero3_values(), **({"prompt_tokens": tokens} if tokens else {}))
        est = estimate_memory(shape, setup)
        out[key] = {"prompt_tokens": setup.prompt_tokens, "total_gib": round(est.total_gib, 2),
                    "fits_with_headroom": fits_in(est.total_gib, mem_gib),
                    "lines": {line.label: round(line.bytes / GIB, 2) for line in est.lines}}
        if key == "as_run":
            try:
                from shala.launch.fit import choose
                c = choose(shape, setup, mem_gib)
                out["fit_would_apply"] = c.fallback.name if c.fallback else "none" if c.fits else "nothing fits"
                out["fit_estimate_gib"] = round(c.estimate.total_gib, 2)
            except Exception as exc:  # noqa: BLE001 - shala.launch.fit is new; the estimate stands without it
                out["fit_would_apply"] = f"unknown ({type(exc).__name__}: {exc})"
    return out


def tower_unchanged(model_dir: Path, run_dir: Path) -> bool:
    """The first audio-tower tensor saved bit-identical (towers frozen)."""
    from safetensors import safe_open

    def tensor(d: Path, name: str | None):
        for f in sorted(d.glob("*.safetensors")):
            with safe_open(str(f), "pt") as fh:
                keys = sorted(k for k in fh.keys() if k.startswith("audio_tower.") and name in (None, k))
                if keys:
                    return keys[0], fh.get_tensor(keys[0])
        return name, None

    name, a = tensor(model_dir, None)
    b = tensor(run_dir, name)[1] if name else None
    return a is not None and b is not None and a.shape == b.shape and bool((a.float() == b.float()).all())


# GRPO steps per method of the paper's grid: one epoch of each train split at
# 4 prompts per optimizer step (issue 15's count from this project's splits).
PAPER_STEPS = {"chaosnli": 506, "goemotions": 1225, "msp_podcast": 1940}


def grid_estimate(step_s: float | None) -> dict:
    """Hours of config.yaml's GRPO runs at ``step_s`` per step. The step here
    is one rank's per-device work (4 x 2 completions); on the paper's 2 GPUs
    each rank does the same per step, so the step time carries over
    (gradient all-reduce aside)."""
    from shala.plan import load_config

    cfg = load_config([Path(__file__).resolve().parents[1] / "config.yaml"])
    grpo = [m for m in cfg["run_methods"] if cfg["methods"][m]["trainer"] == "grpo"]
    steps = sum(PAPER_STEPS.values()) * len(grpo) * len(cfg["seeds"])
    return {"grpo_methods": grpo, "seeds": len(cfg["seeds"]), "steps_per_method": PAPER_STEPS,
            "total_steps": steps, "seconds_per_step": step_s,
            "hours": round(steps * step_s / 3600, 1) if step_s else None,
            "note": "GRPO runs only (SFT, prediction and evaluation not counted); step time: the median of "
                    "this run's steps after the first"}


def summarise(res: dict, run_dir: Path, watch: Watch, mem_dir: Path) -> None:
    """Fold run.json (after a time-out: train_log.jsonl), the hook's and the watcher's numbers into ``res``."""
    rec = json.loads((run_dir / "run.json").read_text()) if (run_dir / "run.json").exists() else {}
    tl = run_dir / "train_log.jsonl"
    rows = [json.loads(x) for x in tl.read_text().splitlines()] if tl.exists() else []
    timing = rec.get("timing") or {}
    steps = timing.get("step_seconds") or [r["seconds"] for r in rows if r.get("event") == "step"]
    ev = res["events_s_since_launch"] = watch.events

    def between(a: str, b: str) -> float | None:
        return round(ev[b] - ev[a], 1) if a in ev and b in ev else None

    res["timing"] = {"step_seconds": [round(s, 2) for s in steps if s is not None],
                     **{k: timing.get(k) for k in ("seconds_per_step", "train_seconds", "total_seconds")},
                     "saving_s": between(f"step_{len(steps)}_done", "run_json_written"),
                     "checkpoint_s": between(f"step_{len(steps)}_done", "checkpoint_written"),
                     "final_save_s": between("checkpoint_written", "run_json_written"),
                     "note": "seconds_per_step (train_seconds / steps) includes the final checkpoint; saving_s: "
                             "last step -> run.json = checkpoint_s (-> checkpoint written) + final_save_s"}
    timed = [x for x in steps if x is not None]
    later = sorted(timed[1:] or timed)
    res["grid_estimate"] = grid_estimate(round(later[len(later) // 2], 2) if later else None)
    snaps = [json.loads(f.read_text()) for f in mem_dir.glob("*.json")]
    hook = max(snaps, key=lambda s: (s.get("max_reserved_gib") or 0, s["max_rss_gib"]), default={})
    res["memory"] = {"peak_allocated_gib_run_json": rec.get("peak_gpu_memory_gib"),
                     "peak_reserved_gib_torch": hook.get("max_reserved_gib"),
                     "peak_allocated_gib_torch": hook.get("max_allocated_gib"),
                     "device_peak_used_gib_nvidia_smi": (round(watch.device_peak_mib / 1024, 2)
                                                         if watch.device_peak_mib else None),
                     "trainer_max_rss_gib": hook.get("max_rss_gib")}
    res["run"] = {k: rec.get(k) for k in ("global_step", "world_size", "device", "zero3", "notes", "fit",
                                          "versions")}
    logs = [r for r in rows if r.get("event") == "log" and "loss" in r]
    res["last_log"] = {k: v for k, v in (logs[-1] if logs else {}).items() if not isinstance(v, (list, dict))}
    res["saved_bytes"] = sum(f.stat().st_size for f in run_dir.glob("*.safetensors"))
    res["checkpoint_bytes_deleted"] = watch.deleted_bytes


def side_by_side(res: dict) -> list[str]:
    m, t, e = res.get("memory") or {}, res.get("timing") or {}, res.get("estimate") or {}
    run, applied = e.get("as_run") or {}, ((res.get("run") or {}).get("fit") or {}).get("fallback")

    def gib(v):
        return f"{v:7.2f} GiB" if isinstance(v, (int, float)) else "    n/a    "

    return [f"measured vs estimated: 1 GPU, ZeRO-3, per-device batch 4 (4 rollouts), gradient accumulation 2, "
            f"{run.get('prompt_tokens')} prompt + 128 completion tokens",
            f"  seconds per step (run.json step_seconds)        {t.get('step_seconds')}",
            f"  peak allocated, torch (run.json)                {gib(m.get('peak_allocated_gib_run_json'))}",
            f"  peak reserved, torch (trainer process)          {gib(m.get('peak_reserved_gib_torch'))}",
            f"  peak used, device (nvidia-smi)                  {gib(m.get('device_peak_used_gib_nvidia_smi'))}",
            f"  estimate, shala.launch.gpu_memory (configured)  {gib(run.get('total_gib'))}  "
            f"(fits with 10 % headroom: {run.get('fits_with_headroom')})",
            f"  shala.launch.fit's fallback for this GPU: {e.get('fit_would_apply')}, "
            f"{gib(e.get('fit_estimate_gib'))}; training applied (--fit {res.get('fit_mode')}): {applied}",
            f"  the same at preflight's 512 prompt tokens       "
            f"{gib((e.get('preflight_default_prompt') or {}).get('total_gib'))}",
            f"  saving after the last step {t.get('saving_s')} s: checkpoint (weights only) {t.get('checkpoint_s')} s, "
            f"final weights {t.get('final_save_s')} s"]


def _sigterm(*_) -> None:
    raise KeyboardInterrupt("SIGTERM (gpu_check.sh's time limit)")


def prepare(res: dict, work: Path, gpu: bool, a, log_path: Path, env: dict, deadline: float) -> Path:
    """Tokenizer, items, config, then the random checkpoint (module doc, 1-2); returns the config."""
    from shala.plan import load_config

    prompt_cfg = load_config([ROOT / "config.yaml"])["datasets"]["chaosnli"]["prompt"]  # defaults filled
    mel = json.loads(CONFIG.read_text())["thinker_config"]["audio_config"]["num_mel_bins"]
    res["inputs"] = write_inputs(work, work / "model", prompt_cfg, a.prompt_tokens, mel)
    config = write_config(work, work / "model", gpu, a.steps, a.fit)
    res["disk_free_gib"] = round(shutil.disk_usage(work).free / GIB, 1)
    if gpu and res["disk_free_gib"] < 36:
        raise RuntimeError(f"{res['disk_free_gib']} GiB free under {work}: two 16.6 GiB copies need ~36")
    log(f"inputs: {res['inputs']}; building the random checkpoint ({'GPU' if gpu else 'CPU, toy size'})")
    cmd = [sys.executable, str(Path(__file__).resolve()), "-", "--build", str(work / "model")]
    rc = run_logged(cmd + ([] if gpu else ["--cpu-smoke"]), log_path, env, deadline - time.perf_counter())
    built = [x for x in log_path.read_text().splitlines() if x.startswith("BUILD ")]
    if rc or not built:
        raise RuntimeError(f"building the checkpoint failed (exit {rc}); see {log_path.name}")
    res["checkpoint"] = json.loads(built[-1][6:])
    log(f"checkpoint: {res['checkpoint']}")
    return config


def checks(res: dict, steps: int, gpu: bool, model_dir: Path, run_dir: Path) -> dict:
    run = res["run"]
    return {"global_step": run["global_step"] == steps, "world_size_1": run["world_size"] == 1,
            "zero3_partitioned": (run["zero3"] or {}).get("partitioned_tensors", 0) > 0,
            "step_seconds": len(res["timing"]["step_seconds"]) == steps,
            "weights_saved": res["saved_bytes"] >= 0.95 * res["checkpoint"]["bytes"],
            "tower_unchanged": tower_unchanged(model_dir, run_dir),
            "peak_memory_recorded": (res["memory"]["peak_allocated_gib_run_json"] is not None) == gpu}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("outdir")
    ap.add_argument("--cpu-smoke", action="store_true", help="toy size on the CPU (the test suite's run)")
    ap.add_argument("--steps", type=int, default=2, help="optimizer steps (max_steps; default 2)")
    ap.add_argument("--prompt-tokens", type=int, default=256, help="pad the prompt to about this many tokens")
    ap.add_argument("--keep", action="store_true", help="keep the model files (~36 GB at full size)")
    ap.add_argument("--fit", choices=("off", "fallback", "strict"), default="off",
                    help="training.fit_to_hardware: off (default) runs the configured setting, the paper's "
                         "generation with the gather; fallback, what a 1-GPU user's job applies")
    ap.add_argument("--force", action="store_true",
                    help="run without the memory gate (gpu_check.sh passes it where its probe already gated)")
    ap.add_argument("--build", metavar="DIR", help=argparse.SUPPRESS)  # the child process
    a = ap.parse_args()
    if a.build:
        print("BUILD " + json.dumps(build_checkpoint(Path(a.build), a.cpu_smoke)), flush=True)
        return 0
    t_start = time.perf_counter()
    deadline = t_start + float(os.environ.get("GPU_CHECK_TIME_LIMIT") or 1e9) - 25  # 25 s to write up
    signal.signal(signal.SIGTERM, _sigterm)
    gpu, out = not a.cpu_smoke, Path(a.outdir).resolve()
    work = out / "step"
    shutil.rmtree(work, ignore_errors=True)
    model_dir, run_dir, mem_dir, hook_dir = work / "model", work / "run", work / "mem", work / "hook"
    for d in (mem_dir, hook_dir):
        d.mkdir(parents=True, exist_ok=True)
    (hook_dir / "sitecustomize.py").write_text(HOOK)
    log_path, json_path = out / "gpu_check_d.train.log", out / "gpu_check_d.json"
    log_path.write_text("")
    from importlib.metadata import PackageNotFoundError, version

    try:
        ds_version = version("deepspeed")
    except PackageNotFoundError:
        ds_version = None
    res: dict = {"part": "d", "ok": False, "mode": "gpu" if gpu else "cpu-smoke (toy size, float32, CPU rank)",
                 "steps": a.steps, "fit_mode": a.fit, "deepspeed": ds_version, "error": None}
    mem = nvidia_smi("memory.total") if gpu else None  # MiB; not torch's: this process keeps no CUDA context
    if mem is not None and not a.force:  # before the 17.9 GB checkpoint: does the full-size step fit this GPU?
        fits, res["memory_gate"] = memory_gate(round(mem / 1024, 1), "nvidia-smi memory.total")
        if not fits:
            res.update(ok=None, skipped=res["memory_gate"]["reason"],
                       part_wall_s=round(time.perf_counter() - t_start, 1))
            json_path.write_text(json.dumps(res, indent=2) + "\n")
            log(f"skipped: {res['skipped']}")
            return 0
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    watch = Watch(run_dir, gpu)
    try:
        config = prepare(res, work, gpu, a, log_path, env, deadline)
        res["gpu_mem_gib"] = res["checkpoint"]["gpu_mem_gib"] or (round(mem / 1024, 1) if mem else None)  # torch's
        try:  # shala.launch.gpu_memory is changing: a failure there does not stop the measurement
            res["estimate"] = estimate(config, res["inputs"]["prompt_tokens"][1], res["gpu_mem_gib"] or 139.8)
        except Exception as exc:  # noqa: BLE001
            res["estimate"] = {"error": f"{type(exc).__name__}: {exc}"}
        json_path.write_text(json.dumps(res, indent=2) + "\n")
        port = subprocess.run([sys.executable, "-m", "shala", "free-port"], cwd=ROOT, env=env, capture_output=True,
                              text=True, check=True).stdout.strip()
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", "config/accelerate_zero3.yaml",
               "--num_processes", "1", "--main_process_port", port, "-m", "shala", "train", "--dataset",
               "chaosnli", "--method", "shala", "--seed", "0", "--data", res["inputs"]["data"], "--model",
               str(model_dir), "--out", str(run_dir), "--config", str(config)]
        res["launch"] = "python " + " ".join(cmd[1:])
        log(f"launch: {res['launch']}")
        paths = os.pathsep.join([str(hook_dir)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        watch.start()
        rc = run_logged(cmd, log_path, {**env, "GPU_CHECK_MEM_DIR": str(mem_dir), "PYTHONPATH": paths},
                        deadline - time.perf_counter())
        res["launch_wall_s"] = round(time.perf_counter() - watch.t0, 1)
        watch.done.set()
        watch.poll_safe()
        if rc:
            raise RuntimeError(f"shala train exited {rc}; see {log_path.name}")
        summarise(res, run_dir, watch, mem_dir)
        res["checks"] = checks(res, a.steps, gpu, model_dir, run_dir)
        res["ok"] = all(res["checks"].values())
    except BaseException as exc:  # noqa: BLE001 - a failed or killed part still writes what it measured
        res["error"] = f"{type(exc).__name__}: {exc}"
        res["train_log_tail"] = log_path.read_text(errors="replace").splitlines()[-40:]
        watch.done.set()
        try:
            summarise(res, run_dir, watch, mem_dir)
        except (OSError, ValueError, KeyError, TypeError) as exc2:
            res["summary_error"] = repr(exc2)
    finally:
        res["part_wall_s"] = round(time.perf_counter() - t_start, 1)
        json_path.write_text(json.dumps(res, indent=2) + "\n")
        for line in side_by_side(res):
            log(line)
        grid = res.get("grid_estimate") or {}
        if grid.get("hours") is not None:
            log(f"paper grid: {grid['total_steps']} GRPO steps x {grid['seconds_per_step']} s = {grid['hours']} h")
        log(f"checks {res.get('checks')}; ok {res['ok']}" + (f"; error {res['error']}" if res["error"] else ""))
        if not a.keep:  # ~36 GB at full size: the parts after this one need the disk
            shutil.rmtree(model_dir, ignore_errors=True)
            for f in run_dir.glob("*.safetensors"):
                f.unlink(missing_ok=True)
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
