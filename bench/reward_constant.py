"""Where the paper's reward pushes a policy that reads nothing (docs/design.md
§6.3b): per prepared dataset folder (``train.jsonl``, ``test.jsonl``, as
``shala prepare`` writes them), the best single answer under mean JSD
(``constant``), the one with the highest mean ``shala`` reward H~(p)·(1 − JSD)
(``shala_constant``), and the prior, each scored by mean JSD on the whole
test split; and the share of train items that are unanimous (H~ = 0, no
reward signal). Prints one Markdown row per folder; asserts nothing.

    python bench/reward_constant.py /work/regime/demo/convabuse/data /work/probe_runs/chaosnli/data
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from shala.distributions import jsd
from shala.evaluation.reference import best_constant


def read(path: Path) -> tuple[np.ndarray, np.ndarray]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return (np.array([r["dist"] for r in rows], dtype=np.float64),
            np.array([r["entropy_norm"] for r in rows], dtype=np.float64))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", nargs="+", type=Path, help="prepared dataset folders")
    a = ap.parse_args()
    print("| data | unanimous | constant (JSD) | shala_constant (JSD) | prior (JSD) | reward of each (train mean) |")
    print("|---|---:|---|---|---:|---|")
    for d in a.data:
        P, h = read(d / "train.jsonl")
        T, _ = read(d / "test.jsonl")
        answers = {"constant": best_constant(P), "shala_constant": best_constant(P, h), "prior": P.mean(axis=0)}
        score = {k: float(np.mean(jsd(T, np.broadcast_to(q, T.shape)))) for k, q in answers.items()}
        reward = {k: float(np.mean(h * (1 - jsd(P, np.broadcast_to(q, P.shape))))) for k, q in answers.items()}
        fmt = {k: "/".join(f"{x:.2f}" for x in q) for k, q in answers.items()}
        print(f"| {d} | {np.mean(h == 0):.2f} | {fmt['constant']} ({score['constant']:.3f}) | "
              f"{fmt['shala_constant']} ({score['shala_constant']:.3f}) | {score['prior']:.3f} | "
              + " / ".join(f"{reward[k]:.3f}" for k in answers) + " |")


if __name__ == "__main__":
    main()
