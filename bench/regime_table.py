"""The regime table of docs/results/probe/README.md (issue 29), from the
``bench/readable_check.py`` work folders under WORK: ``demo`` (the demo's
regime), ``kl01`` (training.grpo.beta 0.1) and ``warm40kl`` (40 warm-up steps,
then beta 0.04), each with one folder per dataset. Adds ``ref_constant`` on
the same test items where it is missing. Prints Markdown rows; asserts nothing.

    python bench/regime_table.py WORK
"""

from __future__ import annotations

import collections
import csv
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from readable_check import train_trace  # noqa: E402

from shala.evaluation.evaluate import run_evaluate  # noqa: E402
from shala.evaluation.reference import run_reference  # noqa: E402
from shala.evaluation.significance import paired_test  # noqa: E402
from shala.report.learning import MIN_SPREAD  # noqa: E402

DATASETS = ["convabuse", "hs_brexit", "md_agreement", "varierr"]
REGIMES = [("demo", "demo"), ("KL β 0.1", "kl01"), ("SFT warm-up 40 + KL β 0.04", "warm40kl")]
HEAD = ("| dataset | regime | seed | JSD | pred_spread | − ref_prior [95% CI] | − ref_constant [95% CI] | reads | "
        "entropy first/min/last | zero-spread | grad=0 steps | answers |")


def items(path: Path) -> dict[str, float]:
    with path.open(newline="") as fh:
        return {r["id"]: float(r["jsd"]) for r in csv.DictReader(fh) if r.get("scored", "True") == "True"}


def versus(a: dict[str, float], b: dict[str, float]) -> tuple[str, float]:
    ids = sorted(set(a) & set(b))
    r = paired_test([a[i] for i in ids], [b[i] for i in ids])
    return f"{r.mean_diff:+.3f} [{r.ci_lo:+.3f}, {r.ci_hi:+.3f}]", r.ci_hi


def answers(path: Path) -> str:
    with path.open() as fh:
        counts = collections.Counter(json.loads(line)["completion"] for line in fh)
    return f"{len(counts)} distinct; most: `{counts.most_common(1)[0][0]}`"


def references(d: Path) -> dict[str, dict[str, float]]:
    e = d / "e"
    if not (e / "ref_constant.items.csv").exists():
        run_reference("constant", d / "data", "test", d / "p" / "constant.jsonl", limit=90)
        run_evaluate(d / "p" / "constant.jsonl", e / "ref_constant.json", items_out=e / "ref_constant.items.csv")
    return {k: items(e / f"{k}.items.csv") for k in ("ref_prior", "ref_constant", "zs")}


def run_row(ds: str, name: str, d: Path, run: str, refs: dict, trace: str) -> str:
    m = json.loads((d / "e" / f"{run}.json").read_text())["overall"]
    own = items(d / "e" / f"{run}.items.csv")
    (vp, hp), (vc, _) = versus(own, refs["ref_prior"]), versus(own, refs["ref_constant"])
    reads = "yes" if m["pred_spread"] >= MIN_SPREAD and hp < 0 else "no"
    seed = run.rsplit("-", 1)[1]
    return (f"| {ds} | {name} | {seed} | {m['jsd']:.3f} | {m['pred_spread']:.3f} | {vp} | {vc} | {reads} | "
            f"{trace} | {answers(d / 'p' / f'{run}.jsonl')} |")


def main() -> None:
    work = Path(sys.argv[1])
    print(HEAD)
    print("|---|---|---:|---:|---:|---|---|---|---|---:|---:|---|")
    for ds in DATASETS:
        first = True
        for name, folder in REGIMES:
            d = work / folder / ds
            if not (d / "e").exists():
                continue
            refs = references(d)
            if first:
                for ref in ("zs", "ref_prior", "ref_constant"):
                    m = json.loads((d / "e" / f"{ref}.json").read_text())["overall"]
                    print(f"| {ds} | {ref} | – | {m['jsd']:.3f} | {m['pred_spread']:.3f} | | | | | | | |")
                first = False
            for seed in (0, 1, 2):
                if (d / "e" / f"shala-{seed}.json").exists():
                    t = train_trace(d / "m" / f"shala-{seed}" / "train_log.jsonl")
                    trace = (f"{t['entropy_first']:.2f}/{t['entropy_min']:.2f}/{t['entropy_last']:.2f} | "
                             f"{t['zero_spread_mean']:.2f} | {t['grad_zero_steps']}")
                    print(run_row(ds, name, d, f"shala-{seed}", refs, trace))
            if (d / "e" / "warm-0.json").exists():  # the warm-up alone, before GRPO
                print(run_row(ds, "the warm-up alone (SFT 40 × 8)", d, "warm-0", refs, "– | – | –"))


if __name__ == "__main__":
    main()
