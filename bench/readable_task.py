"""A readable task that is not the built-in control, through the generic
adapter: does the demo's training regime learn beyond the one task it was
chosen on?

Writes ``OUT/raw/poll.csv`` (format ``counts``: one row per item, one vote
column per class) and ``OUT/overlay.yaml`` (the dataset entry and a compact
prompt in the demo's style). Each item's text states the votes in a
different surface form from the control's marbles, with other label names
and, with ``--classes 4``, another number of classes; the words are drawn
per item. Half of the items (``--shuffled``) list the votes in a shuffled
order, so a model must find each number and bind it to its label; with
``--shuffled 0`` copying the numbers in order reads every item, as on the
control.

    python bench/readable_task.py --out /tmp/rt --seed 3
    PROBE_OVERLAY=/tmp/rt/overlay.yaml DATASET=poll bash bench/control_probe.sh /tmp/rt 0 shala

Prints the label prior of the items; asserts nothing.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
import yaml

LABELS = {3: ["yes", "no", "maybe"], 4: ["yes", "no", "maybe", "abstain"]}
TOPICS = ["the new park", "a later school start", "the bike lane", "a four-day week", "the town library",
          "a bigger market", "the night bus", "a car-free centre"]
GROUPS = ["neighbours", "students", "workers", "parents", "members"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--n", type=int, default=600)
    ap.add_argument("--voters", type=int, default=10)
    ap.add_argument("--classes", type=int, choices=sorted(LABELS), default=3)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--shuffled", type=float, default=0.5,
                    help="fraction of items whose votes are listed in a shuffled label order (0: always in "
                         "label order, so copying the numbers in order reads every item)")
    a = ap.parse_args()
    labels = LABELS[a.classes]
    rng = np.random.default_rng(a.seed)
    raw = a.out / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(a.n):
        conc = float(rng.choice([0.3, 1.0, 5.0]))          # low / medium / high ambiguity
        counts = rng.multinomial(a.voters, rng.dirichlet(np.full(len(labels), conc)))
        order = rng.permutation(len(labels)) if rng.random() < a.shuffled else np.arange(len(labels))
        said = ", ".join(f"{counts[j]} {labels[j]}" for j in order)
        text = (f"Poll of {a.voters} {GROUPS[i % len(GROUPS)]} on {TOPICS[int(rng.integers(len(TOPICS)))]}: "
                f"{said}.")
        rows.append({"id": f"poll-{i:04d}", "text": text, **{lab: int(c) for lab, c in zip(labels, counts)}})
    with (raw / "poll.csv").open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["id", "text", *labels])
        w.writeheader()
        w.writerows(rows)
    schema = "{" + ", ".join(f'"{lab}": n' for lab in labels) + "}"
    overlay = {"datasets": {"poll": {
        "adapter": "generic", "source": str(raw), "split": {"train": 0.6, "validation": 0.1},
        "options": {"format": "counts", "files": ["poll.csv"], "labels": labels, "text_fields": {"text": "text"}},
        "prompt": {"system": "You count the votes in a poll.", "background": "", "target": "{text}",
                   "task": f"How many of the {a.voters} people voted for each option?",
                   "output": "Answer in JSON: " + schema.replace("{", "{{").replace("}", "}}"),
                   "answer_scale": 100, "response_prefix": "auto", "constrained": True}}}}
    (a.out / "overlay.yaml").write_text(yaml.safe_dump(overlay, sort_keys=False), encoding="utf-8")
    prior = np.sum([[r[lab] for lab in labels] for r in rows], axis=0)
    print(f"wrote {len(rows)} items to {raw / 'poll.csv'}; label prior "
          + ", ".join(f"{lab} {p:.3f}" for lab, p in zip(labels, prior / prior.sum())))


if __name__ == "__main__":
    main()
