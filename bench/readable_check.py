"""Does a training regime learn readable tasks beyond the one it was chosen
on? Runs ``bench/control_probe.sh`` for every (task, seed) and scores each
trained run the way issue 13 asks: it *reads* the items when its pred_spread
is at least 0.05 and its per-item JSD is below ``ref_prior``'s with the
paired 95 % interval of the difference below 0.

    python bench/readable_check.py --out /tmp/rc --tasks control poll-ordered poll4-ordered poll --seeds 0 1 2
    python bench/readable_check.py --out /tmp/rc --overlay /tmp/candidate.yaml ...   # a candidate regime

Tasks (all through the generic adapter but ``control``; ``bench/readable_task.py``
writes the poll items, none of them is shipped):

- ``control``: the built-in known-answer control (marbles, label order);
- ``poll-ordered``: poll results, 3 options, votes listed in label order;
- ``poll4-ordered``: 4 options (one more class, other counts), in label order;
- ``poll``: 3 options, half of the items listed in a shuffled order, so
  copying in order is not enough: each number must be bound to its label;
- the English real datasets of ``bench/probe_datasets.py`` (``chaosnli``,
  ``md_agreement``, ``hs_brexit``, ``varierr``, ``convabuse``), read in place
  from ``../shared/data`` with the same prompts the capacity probe used
  (issue 29: does a regime read real items?).

``--warmup-steps N`` starts each GRPO run from N steps of the soft-label SFT
warm-up (``shala sft``); ``--limit`` sets the scored test items (default 90).

Runs already done under ``--out`` are reused. ``--jobs 2`` runs two
single-threaded probes at a time (2 cores). Prints one row per run (JSD,
spread, paired differences against ``ref_prior`` and ``zs``, and the
training log: token entropy first / lowest / last, mean zero-spread
fraction, steps with grad norm 0) and, per task, on how many seeds it
reads; writes the same to ``OUT/summary.csv``. Asserts nothing.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from shala.evaluation.significance import paired_test
from shala.report.learning import MIN_SPREAD  # the report's "reads the items" bar, not a second copy

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))  # imported as a module by tests, run as a script by people
from probe_datasets import DATASETS, SHARED  # noqa: E402  (the real datasets and the probe's prompts)

# name: readable_task.py arguments (None: the built-in control)
POLLS = {
    "control": None,
    "poll-ordered": ["--seed", "3", "--classes", "3", "--shuffled", "0"],
    "poll4-ordered": ["--seed", "5", "--classes", "4", "--shuffled", "0"],
    "poll": ["--seed", "3", "--classes", "3", "--shuffled", "0.5"],
}
TASKS = [*POLLS, *DATASETS]


def task_env(out: Path, task: str, overlays: list[str]) -> dict[str, str]:
    """Environment for control_probe.sh: the task's overlay (written once) first, then the candidate's."""
    env = dict(os.environ)
    extra = list(overlays)
    if task in DATASETS:  # a real dataset, read in place with the probe's prompt
        folder, entry = DATASETS[task]
        if entry is not None:
            path = out / "tasks" / f"{task}.yaml"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"datasets": {task: {**entry, "source": str(SHARED / folder)}}}))
            extra = [str(path), *extra]
        env.update(DATASET=task, SOURCE=str(SHARED / folder))
    elif POLLS[task] is not None:
        src = out / "tasks" / task
        if not (src / "overlay.yaml").exists():
            subprocess.run([sys.executable, str(ROOT / "bench" / "readable_task.py"), "--out", str(src),
                            *POLLS[task]], check=True)
        extra = [str(src / "overlay.yaml"), *extra]
        env.update(DATASET="poll", SOURCE=str(src / "raw"))
    env["PROBE_OVERLAY"] = " ".join(extra)
    return env


def probe(out: Path, task: str, seed: int | None, overlays: list[str], method: str) -> None:
    """Baselines (seed None) or one trained run, unless already scored."""
    d = out / task
    done = d / "e" / ("zs.json" if seed is None else f"{method}-{seed}.json")
    if done.exists():
        return
    log = d / ("baselines.log" if seed is None else f"probe-{method}-{seed}.log")
    d.mkdir(parents=True, exist_ok=True)
    with log.open("w") as fh:
        subprocess.run(["nice", "-n", "5", "bash", str(ROOT / "bench" / "control_probe.sh"), str(d),
                        str(seed if seed is not None else 0), "-" if seed is None else method],
                       env=task_env(out, task, overlays), stdout=fh, stderr=subprocess.STDOUT, check=True)


def per_item_jsd(path: Path) -> dict[str, float]:
    with path.open(newline="") as fh:
        return {r["id"]: float(r["jsd"]) for r in csv.DictReader(fh) if r["scored"] == "True"}


def train_trace(log_path: Path) -> dict[str, float]:
    rows = [json.loads(line) for line in log_path.read_text().splitlines()]
    ent = [float(r["entropy"]) for r in rows if r.get("event") == "log" and "entropy" in r]
    gn = [float(r["grad_norm"]) for r in rows if r.get("event") == "log" and "grad_norm" in r]
    zsf = [r["zero_spread_frac"] for r in rows if r.get("event") == "step" and r.get("zero_spread_frac") is not None]
    nan = float("nan")
    if not ent:  # an SFT run logs no token entropy
        ent = [nan]
    return {"entropy_first": ent[0], "entropy_min": min(ent), "entropy_last": ent[-1],
            "zero_spread_mean": float(np.mean(zsf)) if zsf else float("nan"),
            "grad_zero_steps": sum(g == 0.0 for g in gn)}


def score(out: Path, task: str, seed: int, method: str) -> dict[str, object]:
    e = out / task / "e"
    run = per_item_jsd(e / f"{method}-{seed}.items.csv")
    row: dict[str, object] = {"task": task, "method": method, "seed": seed}
    overall = json.loads((e / f"{method}-{seed}.json").read_text())["overall"]
    row.update(jsd=overall["jsd"], pred_spread=overall["pred_spread"])
    for base in ("ref_prior", "zs"):
        ref = per_item_jsd(e / f"{base}.items.csv")
        ids = sorted(set(run) & set(ref))
        res = paired_test([run[i] for i in ids], [ref[i] for i in ids])
        row.update({f"{base}_jsd": res.mean_b, f"d_{base}": res.mean_diff, f"d_{base}_lo": res.ci_lo,
                    f"d_{base}_hi": res.ci_hi})
    row["reads"] = bool(row["pred_spread"] >= MIN_SPREAD and row["d_ref_prior_hi"] < 0)
    row.update(train_trace(out / task / "m" / f"{method}-{seed}" / "train_log.jsonl"))
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--tasks", nargs="+", choices=TASKS, default=list(POLLS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--overlay", action="append", default=[], help="candidate regime overlay (repeatable)")
    ap.add_argument("--method", default="shala", help="the trained method (shala, mls, sft_soft, ...)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--warmup-steps", type=int, help="soft-label SFT warm-up steps before GRPO")
    ap.add_argument("--limit", type=int, default=90, help="scored test items")
    a = ap.parse_args()
    os.environ["LIMIT"] = str(a.limit)
    if a.warmup_steps:
        os.environ["WARMUP_STEPS"] = str(a.warmup_steps)
    out = a.out.resolve()
    overlays = [str(Path(o).resolve()) for o in a.overlay]
    with ThreadPoolExecutor(a.jobs) as pool:  # baselines first: the runs reuse their model and data
        list(pool.map(lambda t: probe(out, t, None, overlays, a.method), a.tasks))
        list(pool.map(lambda ts: probe(out, ts[0], ts[1], overlays, a.method),
                      [(t, s) for t in a.tasks for s in a.seeds]))
    rows = [score(out, t, s, a.method) for t in a.tasks for s in a.seeds]
    print(f"{'task':14s} seed   JSD  spread  d vs ref_prior [95% CI]   d vs zs [95% CI]        reads  "
          "entropy first/min/last  zero-spread  grad=0")
    for r in rows:
        print(f"{r['task']:14s} {r['seed']:4d} {r['jsd']:.3f} {r['pred_spread']:6.3f}  "
              f"{r['d_ref_prior']:+.3f} [{r['d_ref_prior_lo']:+.3f}, {r['d_ref_prior_hi']:+.3f}]  "
              f"{r['d_zs']:+.3f} [{r['d_zs_lo']:+.3f}, {r['d_zs_hi']:+.3f}]  {'yes' if r['reads'] else 'no ':5s}  "
              f"{r['entropy_first']:.2f}/{r['entropy_min']:.2f}/{r['entropy_last']:.2f}        "
              f"{r['zero_spread_mean']:.2f}         {r['grad_zero_steps']}")
    for t in a.tasks:
        mine = [r for r in rows if r["task"] == t]
        print(f"{t} ({a.method}): reads on {sum(r['reads'] for r in mine)} of {len(mine)} seeds "
              f"(zs {mine[0]['zs_jsd']:.3f}, ref_prior {mine[0]['ref_prior_jsd']:.3f})")
    tmp = out / "summary.csv.tmp"
    with tmp.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    tmp.replace(out / "summary.csv")


if __name__ == "__main__":
    main()
