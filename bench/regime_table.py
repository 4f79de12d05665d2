"""The regime table of docs/results/probe/README.md (issue 29), from the
``bench/readable_check.py`` work folders under WORK: ``demo`` (the demo's
regime), ``kl01`` (training.grpo.beta 0.1), ``warm40kl`` (40 warm-up steps at
lr 5e-5, then beta 0.04) and ``warm80`` (80 warm-up steps at lr 1e-4, then
beta 0.1), ``lr1e5kl`` (lr 1e-5, beta 0.1), ``g8`` (2 prompts × 8 rollouts)
and ``groupscale`` (scale_rewards: group), each with one folder per dataset.
Adds ``ref_constant`` and ``ref_shala_constant`` on the same test items where
they are missing. Prints Markdown rows, then one summary
row per dataset: the capacity probe (from ``bench/probe_datasets.py``'s work
folder, its own 128 test items) against the best regime run on 3 seeds (the
lowest mean JSD), and the cause the report would name. Asserts nothing.

    python bench/regime_table.py WORK [PROBE_WORK]
"""

from __future__ import annotations

import collections
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from readable_check import per_item_jsd as items  # noqa: E402  (one reader of the per-item files)
from readable_check import train_trace  # noqa: E402

from shala.evaluation.evaluate import run_evaluate  # noqa: E402
from shala.evaluation.reference import run_reference  # noqa: E402
from shala.evaluation.significance import paired_test  # noqa: E402
from shala.report.learning import MIN_SPREAD  # noqa: E402

DATASETS = ["convabuse", "hs_brexit", "md_agreement", "varierr"]
REGIMES = [("demo", "demo"), ("KL β 0.1", "kl01"), ("SFT warm-up 40 + KL β 0.04", "warm40kl"),
           ("SFT warm-up 80 (lr 1e-4) + KL β 0.1", "warm80"), ("lr 1e-5 + KL β 0.1", "lr1e5kl"),
           ("group size 8 (2 prompts × 8)", "g8"), ("group reward scaling (the paper's)", "groupscale")]
SEEDS = (0, 1, 2)
HEAD = ("| dataset | regime | seed | JSD | pred_spread | − ref_prior [95% CI] | − ref_constant [95% CI] | reads | "
        "entropy first/min/last | zero-spread | grad=0 steps | answers |")


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
    for name in ("constant", "shala_constant"):
        if not (e / f"ref_{name}.items.csv").exists():
            run_reference(name, d / "data", "test", d / "p" / f"{name}.jsonl", limit=90)
            run_evaluate(d / "p" / f"{name}.jsonl", e / f"ref_{name}.json", items_out=e / f"ref_{name}.items.csv")
    return {k: items(e / f"{k}.items.csv") for k in ("ref_prior", "ref_constant", "zs")}


def run_row(ds: str, name: str, d: Path, run: str, refs: dict, trace: str) -> tuple[str, dict[str, float]]:
    """One Markdown row and its numbers (JSD, spread, reads) for the summary."""
    m = json.loads((d / "e" / f"{run}.json").read_text())["overall"]
    own = items(d / "e" / f"{run}.items.csv")
    (vp, hp), (vc, _) = versus(own, refs["ref_prior"]), versus(own, refs["ref_constant"])
    reads = m["pred_spread"] >= MIN_SPREAD and hp < 0
    seed = run.rsplit("-", 1)[1]
    row = (f"| {ds} | {name} | {seed} | {m['jsd']:.3f} | {m['pred_spread']:.3f} | {vp} | {vc} | "
           f"{'yes' if reads else 'no'} | {trace} | {answers(d / 'p' / f'{run}.jsonl')} |")
    return row, {"jsd": m["jsd"], "spread": m["pred_spread"], "reads": reads}


def trace_cells(d: Path, run: str) -> str:
    t = train_trace(d / "m" / run / "train_log.jsonl")
    return (f"{t['entropy_first']:.2f}/{t['entropy_min']:.2f}/{t['entropy_last']:.2f} | "
            f"{t['zero_spread_mean']:.2f} | {t['grad_zero_steps']}")


def warmup_name(d: Path, run: str) -> str:
    c = json.loads((d / "m" / run / "run.json").read_text())["sft_config"]["recorded"]
    return f"the warm-up alone (SFT {c['max_steps']} × {c['per_device_train_batch_size']}, lr {c['learning_rate']:g})"


def probe_cells(probe_work: Path | None, ds: str) -> str:
    """The probe's JSD and its paired difference to ref_constant, on the probe run's own test items."""
    e = probe_work / ds / "e" if probe_work else None
    if e is None or not (e / "probe.items.csv").exists():
        return "– | – | –"
    own, const = items(e / "probe.items.csv"), items(e / "ref_constant.items.csv")
    text, hi = versus(own, const)
    return f"{json.loads((e / 'probe.json').read_text())['overall']['jsd']:.3f} | {text} | " + (
        "training" if hi < 0 else "capacity")


def main() -> None:
    work = Path(sys.argv[1])
    probe_work = Path(sys.argv[2]) if len(sys.argv) > 2 else None
    print(HEAD)
    print("|---|---|---:|---:|---:|---|---|---|---|---:|---:|---|")
    summary = []
    for ds in DATASETS:
        first, best = True, None
        for name, folder in REGIMES:
            d = work / folder / ds
            if not (d / "e").exists():
                continue
            refs = references(d)
            if first:
                base = {}
                for ref in ("zs", "ref_prior", "ref_constant", "ref_shala_constant"):
                    m = json.loads((d / "e" / f"{ref}.json").read_text())["overall"]
                    base[ref] = m["jsd"]
                    print(f"| {ds} | {ref} | – | {m['jsd']:.3f} | {m['pred_spread']:.3f} | | | | | | | |")
                first = False
            done = [s for s in SEEDS if (d / "e" / f"shala-{s}.json").exists()]
            stats = [run_row(ds, name, d, f"shala-{s}", refs, trace_cells(d, f"shala-{s}")) for s in done]
            for row, _ in stats:
                print(row)
            for s in SEEDS:  # the warm-up alone, before GRPO
                if (d / "e" / f"warm-{s}.json").exists():
                    print(run_row(ds, warmup_name(d, f"warm-{s}"), d, f"warm-{s}", refs, "– | – | –")[0])
            if len(done) == len(SEEDS):
                mean = {k: float(np.mean([st[k] for _, st in stats])) for k in ("jsd", "spread")}
                cand = (mean["jsd"], name, mean["spread"], sum(st["reads"] for _, st in stats))
                best = cand if best is None or cand < best else best
        if best is not None:
            summary.append(f"| {ds} | {probe_cells(probe_work, ds)} | {base['zs']:.3f} | {base['ref_prior']:.3f} | "
                           f"{base['ref_constant']:.3f} | {base['ref_shala_constant']:.3f} | {best[1]} | {best[0]:.3f} | "
                           f"{best[2]:.3f} | "
                           f"{best[3]} of {len(SEEDS)} |")
    print()
    print("| dataset | probe JSD | probe − ref_constant [95% CI] | cause the report names | zs | ref_prior | "
          "ref_constant | ref_shala_constant | best regime (3 seeds) | its mean JSD | its mean pred_spread | reads on |")
    print("|---|---:|---|---|---:|---:|---:|---:|---|---:|---:|---|")
    print("\n".join(summary))


if __name__ == "__main__":
    main()
