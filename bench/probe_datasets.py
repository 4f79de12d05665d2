"""What can SmolLM2's representations support on each English real dataset?
(issue 29, item 2). For every dataset with per-annotator labels in
``../shared/data`` that SmolLM2 can read: prepare it into ``WORK/<dataset>/data``
(outside the repository), then run and score on the same 128 seeded test
items

- ``probe``: the capacity probe (:mod:`shala.evaluation.probe`);
- ``zs``: ``shala predict`` with the demo model and regime
  (config/demo.yaml: greedy, constrained, the compact prompt);
- ``ref_prior``: the train split's label prior (:mod:`shala.evaluation.reference`);
- ``ref_constant``: the single answer with the lowest mean JSD on train (the
  best a model that reads nothing scores; on skewed labels not the prior);

and print one table: n_train used, the three JSDs, probe - ref_prior with
its paired 95 % bootstrap interval, and the probe's pred_spread.

    nice python bench/probe_datasets.py --work /work/probe_runs
    python bench/probe_datasets.py --work /work/probe_runs --datasets md_agreement hs_brexit

Datasets (ArMIS is left out: Arabic; WHiSER has no text): ChaosNLI through
its adapter with the demo's prompt; MD-Agreement, HS-Brexit, ConvAbuse
(LeWiDi 2023) and VariErr (ACL 2024) through the generic adapter with the
options of config/byod.yaml and a compact prompt in the demo's style.
Steps already done under ``WORK`` are reused (delete a file to redo it).
Timings go to ``WORK/summary.json``. Asserts nothing.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from shala.evaluation.probe import MAX_TRAIN, MAX_VAL

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SHALA_SHARED_DATA") or ROOT.parent / "shared" / "data")
LIMIT = 128


def compact_prompt(system: str, target: str, task: str, labels: list[str]) -> dict[str, Any]:
    """A prompt in the demo's style: short, 100 annotators, constrained JSON answer."""
    schema = "{{" + ", ".join(f'"{lab}": n' for lab in labels) + "}}"
    return {"system": system, "background": "", "target": target, "task": task,
            "output": f"Answer in JSON: {schema}", "answer_scale": 100, "response_prefix": "auto",
            "constrained": True}


def lewidi(files: str, labels: list[str], label_map: dict[str, str], **extra) -> dict[str, Any]:
    return {"format": "lewidi", "files": [files], "labels": labels, "label_map": label_map,
            "keep_source_splits": True, **extra}


# name: (source folder under SHARED, config entry; None: config/demo.yaml's)
DATASETS: dict[str, tuple[str, dict[str, Any] | None]] = {
    "chaosnli": ("chaosnli", None),
    "md_agreement": ("lewidi2023/MD-Agreement", {
        "adapter": "generic", "split": {"train": 0.70, "validation": 0.15},
        "options": lewidi("MD-Agreement_*.json", ["not_offensive", "offensive"],
                          {"0": "not_offensive", "1": "offensive"}, text_fields={"text": "text"},
                          subset_field="other_info.domain"),
        "prompt": compact_prompt(
            "You estimate how people label tweets.", "Tweet: {text}",
            "100 annotators labelled this tweet as not_offensive or offensive. How many chose each label?",
            ["not_offensive", "offensive"])}),
    "hs_brexit": ("lewidi2023/HS-Brexit", {
        "adapter": "generic", "split": {"train": 0.70, "validation": 0.15},
        "options": lewidi("HS-Brexit_*.json", ["not_hateful", "hateful"],
                          {"0": "not_hateful", "1": "hateful"}, text_fields={"text": "text"}),
        "prompt": compact_prompt(
            "You estimate how people label tweets about Brexit.", "Tweet: {text}",
            "100 annotators labelled this tweet as not_hateful or hateful (hate speech against a group). "
            "How many chose each label?", ["not_hateful", "hateful"])}),
    "varierr": ("varierr", {
        "adapter": "generic", "split": {"train": 0.70, "validation": 0.15},
        "options": {"format": "counts", "files": ["varierr.json"],
                    "labels": ["entailment", "neutral", "contradiction"],
                    "counts_field": "label_count_round_1",
                    "text_fields": {"premise": "context", "hypothesis": "statement"}, "ambiguity": "entropy"},
        "prompt": compact_prompt(
            "You estimate how people label sentence pairs.", "Premise: {premise}\nHypothesis: {hypothesis}",
            "100 annotators labelled this pair as entailment, neutral or contradiction. "
            "How many chose each label?", ["entailment", "neutral", "contradiction"])}),
    "convabuse": ("lewidi2023/ConvAbuse", {
        "adapter": "generic", "split": {"train": 0.70, "validation": 0.15},
        "options": lewidi("ConvAbuse_*.json", ["not_abusive", "abusive"],
                          {"-3": "abusive", "-2": "abusive", "-1": "abusive", "0": "not_abusive",
                           "1": "not_abusive"}, text_fields={"agent": "text.agent", "user": "text.user"}),
        "prompt": compact_prompt(
            "You estimate how people label conversations with a chatbot.", "Bot: {agent}\nUser: {user}",
            "100 annotators labelled the user's last message as not_abusive or abusive. "
            "How many chose each label?", ["not_abusive", "abusive"])}),
}


def load(work: Path):
    """The demo config with every dataset of :data:`DATASETS` (sources read in place)."""
    import yaml

    from shala.plan import load_config

    overlay = {"datasets": {name: {**entry, "source": str(SHARED / src)}
                            for name, (src, entry) in DATASETS.items() if entry is not None}}
    path = work / "overlay.yaml"
    path.write_text(yaml.safe_dump(overlay, sort_keys=False), encoding="utf-8")
    return load_config([ROOT / "config.yaml", ROOT / "config" / "demo.yaml", path])


def timed(timings: dict[str, float], key: str, done: Path, fn) -> None:
    if done.exists():
        return
    t = time.perf_counter()
    fn()
    timings[key] = round(time.perf_counter() - t, 1)


def per_item_jsd(path: Path) -> dict[str, float]:
    with path.open(newline="") as fh:
        return {r["id"]: float(r["jsd"]) for r in csv.DictReader(fh)}


def run_dataset(name: str, work: Path, config, model: str, a) -> dict[str, Any]:
    from shala.data.prepare import prepare
    from shala.evaluation.evaluate import run_evaluate
    from shala.evaluation.predict import run_predict
    from shala.evaluation.probe import run_probe
    from shala.evaluation.reference import run_reference
    from shala.evaluation.significance import paired_test
    from shala.jsonio import read_json

    d = work / name
    data, pred, ev = d / "data", d / "p", d / "e"
    for p in (pred, ev):
        p.mkdir(parents=True, exist_ok=True)
    summary_path = d / "timings.json"
    timings = read_json(summary_path) if summary_path.exists() else {}
    timed(timings, "prepare", data / "test.jsonl",
          lambda: prepare(name, SHARED / DATASETS[name][0], data, config=config))
    timed(timings, "probe", pred / "probe.jsonl",
          lambda: run_probe(config, name, data, model, pred / "probe.jsonl", limit=LIMIT, max_train=a.max_train,
                            max_val=a.max_val, threads=a.threads, progress=a.progress))
    timed(timings, "zs", pred / "zs.jsonl",
          lambda: run_predict(config, name, data, model, "test", pred / "zs.jsonl", limit=LIMIT,
                              progress=a.progress))
    timed(timings, "ref_prior", pred / "ref_prior.jsonl",
          lambda: run_reference("prior", data, "test", pred / "ref_prior.jsonl", limit=LIMIT))
    timed(timings, "ref_constant", pred / "ref_constant.jsonl",
          lambda: run_reference("constant", data, "test", pred / "ref_constant.jsonl", limit=LIMIT))
    summary_path.write_text(json.dumps(timings, indent=2) + "\n")
    metrics = {m: run_evaluate(pred / f"{m}.jsonl", ev / f"{m}.json", items_out=ev / f"{m}.items.csv")
               for m in ("probe", "zs", "ref_prior", "ref_constant")}
    probe, prior = per_item_jsd(ev / "probe.items.csv"), per_item_jsd(ev / "ref_prior.items.csv")
    if set(probe) != set(prior):
        raise SystemExit(f"{name}: probe and ref_prior scored different items")
    ids = sorted(probe)
    diff = paired_test([probe[i] for i in ids], [prior[i] for i in ids])
    constant = per_item_jsd(ev / "ref_constant.items.csv")
    vs_constant = paired_test([probe[i] for i in ids], [constant[i] for i in ids])
    rec = read_json(pred / "probe.run.json")
    return {"dataset": name, "n_test": metrics["probe"]["n"], "n_train": rec["n_train"],
            "n_train_available": rec["n_train_available"], "C": rec["C"],
            **{f"{m}_jsd": metrics[m]["overall"]["jsd"] for m in metrics},
            "zs_parse_failure_rate": metrics["zs"]["parse_failure_rate"],
            "d_prior": diff.mean_diff, "d_prior_lo": diff.ci_lo, "d_prior_hi": diff.ci_hi,
            "d_constant": vs_constant.mean_diff, "d_constant_lo": vs_constant.ci_lo,
            "d_constant_hi": vs_constant.ci_hi,
            "probe_spread": metrics["probe"]["overall"]["pred_spread"],
            "zs_spread": metrics["zs"]["overall"]["pred_spread"],
            "probe_seconds": rec["seconds"], "probe_feature_items_per_s": rec["items_per_s"], "timings": timings}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True, help="work folder outside the repository")
    ap.add_argument("--datasets", nargs="+", choices=list(DATASETS), default=list(DATASETS))
    ap.add_argument("--max-train", type=int, default=MAX_TRAIN)
    ap.add_argument("--max-val", type=int, default=MAX_VAL)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--model", help="SmolLM2 model folder (default: the test cache, converted on first use)")
    ap.add_argument("--progress", action="store_true")
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import torch

    from shala.model.loading import base_model_name, fetch_model

    torch.set_num_threads(a.threads)
    work = a.work.resolve()
    if work.is_relative_to(ROOT):
        raise SystemExit(f"--work {work} is inside the repository; the data must not be copied there")
    work.mkdir(parents=True, exist_ok=True)
    config = load(work)
    model = a.model or str(fetch_model(config["model"], ROOT / ".cache" / "models" / base_model_name(config["model"])))
    rows = [run_dataset(name, work, config, model, a) for name in a.datasets]
    (work / "summary.json").write_text(json.dumps({"argv": sys.argv, "rows": rows}, indent=2) + "\n")
    print("| dataset | n_train used | probe JSD | zs JSD | ref_prior JSD | probe - prior [95% CI] | probe pred_spread |")
    print("|---|---:|---:|---:|---:|---|---:|")
    for r in rows:
        print(f"| {r['dataset']} | {r['n_train']} of {r['n_train_available']} | {r['probe_jsd']:.3f} | "
              f"{r['zs_jsd']:.3f} | {r['ref_prior_jsd']:.3f} | {r['d_prior']:+.3f} "
              f"[{r['d_prior_lo']:+.3f}, {r['d_prior_hi']:+.3f}] | {r['probe_spread']:.3f} |")
    print("\n| dataset | ref_constant JSD | probe - constant [95% CI] |")
    print("|---|---:|---|")
    for r in rows:
        print(f"| {r['dataset']} | {r['ref_constant_jsd']:.3f} | {r['d_constant']:+.3f} "
              f"[{r['d_constant_lo']:+.3f}, {r['d_constant_hi']:+.3f}] |")


if __name__ == "__main__":
    main()
