"""CPU learning check (issue 3): does GRPO with the `shala` reward, started
from the supervised warm-up, raise the training reward and lower validation
JSD on ChaosNLI?

    python bench/learning_check.py --work /tmp/lc --sft-steps 8 --grpo-steps 20 --val 64

Steps already done in ``--work`` (a ``run.json`` present) are reused, so the
check can be extended. Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--source", type=Path, default=ROOT.parent / "shared" / "data" / "chaosnli")
    ap.add_argument("--model", default=str(ROOT / ".cache" / "models" / "smollm2"))
    ap.add_argument("--sft-steps", type=int, default=8)
    ap.add_argument("--grpo-steps", type=int, default=20)
    ap.add_argument("--val", type=int, default=64, help="validation items (seeded subset)")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()

    import torch

    from shala.data.prepare import prepare
    from shala.evaluation.evaluate import run_evaluate
    from shala.evaluation.predict import run_predict
    from shala.model.loading import fetch_model
    from shala.plan import load_config
    from shala.train.grpo import run_train
    from shala.train.sft import run_sft

    torch.set_num_threads(a.threads)
    cfg = load_config([ROOT / "config.yaml", ROOT / "config" / "demo.yaml"])
    cfg["training"]["threads"] = a.threads
    cfg["training"]["grpo"].update(save_steps=1000, max_steps=a.grpo_steps)
    work, data = a.work, a.work / "data"
    model = a.model if Path(a.model).is_dir() else str(fetch_model(cfg["model"], work / "base"))
    t0 = time.time()
    if not (data / "train.jsonl").exists():
        prepare("chaosnli", a.source, data, config=cfg)
    if not (work / "sft" / "run.json").exists():
        run_sft(cfg, "chaosnli", 0, data, model, work / "sft", max_steps=a.sft_steps)
    if not (work / "grpo" / "run.json").exists():
        run_train(cfg, "chaosnli", "shala", 0, data, model, work / "grpo", max_steps=a.grpo_steps,
                  init_from=work / "sft")
    rows = {}
    for name in ("sft", "grpo"):
        pred = work / f"val_{name}.jsonl"
        if not pred.exists():
            run_predict(cfg, "chaosnli", data, str(work / name), "validation", pred, limit=a.val,
                        batch_size=16, max_new_tokens=48)
        rows[name] = run_evaluate(pred, work / f"val_{name}.metrics.json")["overall"]
    rec = json.loads((work / "grpo" / "run.json").read_text())
    steps = [json.loads(line) for line in (work / "grpo" / "train_log.jsonl").read_text().splitlines()]
    rewards = [s["reward_mean"] for s in steps if s.get("event") == "step"]
    half = len(rewards) // 2
    print(f"GRPO steps N = {len(rewards)} (SFT warm-up steps = {a.sft_steps})")
    print(f"train reward: first step {rewards[0]:.4f}, last step {rewards[-1]:.4f}; "
          f"mean of first half {sum(rewards[:half]) / half:.4f}, second half {sum(rewards[half:]) / (len(rewards) - half):.4f}")
    print(f"validation JSD (n={a.val}): warm-up {rows['sft']['jsd']:.4f} -> after GRPO {rows['grpo']['jsd']:.4f}; "
          f"parse failure {rows['sft']['parse_failure_rate']:.3f} -> {rows['grpo']['parse_failure_rate']:.3f}")
    print(f"seconds per GRPO step {rec['timing']['seconds_per_step']:.1f}; wall {time.time() - t0:.0f} s this run")


if __name__ == "__main__":
    main()
