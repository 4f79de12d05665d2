"""Parts (b) and (c) of the GPU check, the paper's model architecture with
random weights (no download): Qwen2.5-Omni-7B's thinker built from the
config shipped in the package (src/shala/resources/qwen2_5_omni_7b_config.json),
bf16, audio and vision towers frozen (text-only data gives them no gradient).

Measures, and writes as JSON to OUTDIR/gpu_check_bc.json (after each
measurement, so a time-out keeps what was done):
- (b) GRPO generation tokens/s: 16 rollouts x 128 sampled tokens after a
  256-token prompt; one forward + backward over that GRPO batch (16 x 384
  tokens, gradient checkpointing on, as TRL's default), and peak memory;
- (c) `shala predict`-like greedy throughput, items/s at batch 16 and 64
  (256-token prompts, 128 new tokens forced), against the HBM-bandwidth
  bound of decoding: each decode step reads every weight once, so a step
  takes at least bytes(weights) / bandwidth; the arithmetic is printed;
- (c, engines) greedy decoding at the rollout shape (16 x 256 prompt tokens,
  128 new) under each engine of shala.model.engines: HF ``generate``,
  transformers' continuous batching (``generate_batch``) and vLLM
  (bench/gpu_check_vllm.py: the engine shala starts, the thinker served
  language-model-only from a temporary full-Omni folder, ``min_tokens`` =
  ``max_tokens``; its start timed apart; in this Python, or in the one
  ``GPU_CHECK_VLLM_PYTHON`` names, else the reason it cannot run),
  tokens/s and the fraction of the same bound. An engine that fails
  records its error and the check goes on.

Needs only torch and transformers (the engines section also shala, and
records its error without it; its vLLM row, vLLM). No DeepSpeed and no
optimizer here: the full GRPO step under ZeRO-3 is part (d),
bench/gpu_check_step.py, which builds its model with this module's build
and its tokenizer and items with write_inputs.

    python bench/gpu_check.py OUTDIR [--hbm-tbs 4.8] [--tiny]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "src" / "shala" / "resources" / "qwen2_5_omni_7b_config.json"
TOWERS = ("audio_tower", "visual")
NLI = ["entailment", "neutral", "contradiction"]
SENTENCES = [  # premises of part (d)'s ChaosNLI-like items (write_inputs)
    "A man in a blue shirt plays the guitar on a street corner while people walk by.",
    "Two children run across a wet field toward a small red house near the river.",
    "A woman holding a cup of coffee reads a newspaper at a crowded train station.",
    "Several workers in orange vests repair the road under a bright afternoon sun.",
    "An old dog sleeps on the porch as a cat watches it from the window above.",
]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def shrink(d: dict) -> dict:
    """The same architecture at toy size (``--tiny``: a CPU smoke run of this script); head_dim 32,
    the least vLLM's CPU attention takes (shala.model.tiny_omni.VLLM_SHAPES)."""
    t = d["text_config"]
    t.update(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
             num_key_value_heads=1, vocab_size=4096)
    t["rope_scaling"] = {**(t.get("rope_scaling") or {}), "mrope_section": [4, 6, 6]}
    d["audio_config"].update(d_model=32, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=64,
                             output_dim=64)
    d["vision_config"].update(hidden_size=32, depth=1, num_heads=2, intermediate_size=64, out_hidden_size=64,
                              fullatt_block_indexes=[0])
    return d


# the thinker config's special-token ids, as tokens of build_tokenizer's tokenizer
SPECIAL_IDS = {"pad_token_id": "<|endoftext|>", "eos_token_id": "<|im_end|>", "bos_token_id": "<|im_start|>",
               "audio_token_index": "<|AUDIO|>", "image_token_index": "<|IMAGE|>", "video_token_index": "<|VIDEO|>",
               "vision_token_id": "<|IMAGE|>", "audio_start_token_id": "<|audio_bos|>",
               "audio_end_token_id": "<|audio_eos|>", "vision_start_token_id": "<|vision_bos|>",
               "vision_end_token_id": "<|vision_eos|>"}


def build(torch, device: str, tiny: bool, ids: dict | None = None):
    """The thinker, random, bf16, towers frozen; ``ids`` replaces config keys (:data:`SPECIAL_IDS`)."""
    import transformers
    from transformers import Qwen2_5OmniThinkerConfig, Qwen2_5OmniThinkerForConditionalGeneration

    d = json.loads(CONFIG.read_text())["thinker_config"]
    d = shrink(d) if tiny else d
    d.update(ids or {})
    cfg = Qwen2_5OmniThinkerConfig.from_dict(d)
    transformers.set_seed(0)
    with torch.device(device):
        model = Qwen2_5OmniThinkerForConditionalGeneration._from_config(cfg, dtype=torch.bfloat16)
    for name, p in model.named_parameters():
        if name.startswith(TOWERS) or ".audio_tower." in name or ".visual." in name:
            p.requires_grad_(False)
    return model, cfg


def build_tokenizer(texts: list[str]):
    """A tokenizer for the random thinker (part (d) saves one beside it):
    shala.model.tiny_models's byte-level BPE, trained on ``texts`` too (so a prompt made
    of them is about as many tokens as with Qwen's tokenizer), the Omni
    specials and chat template. Its ids are all below the model's vocabulary."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from shala.model.tiny_models import SPECIAL_TOKENS, tokenizer_corpus
    from shala.model.tiny_omni import OMNI_CHAT_TEMPLATE, OMNI_SPECIALS

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(tokenizer_corpus() + texts, trainer=trainers.BpeTrainer(
        vocab_size=3000, special_tokens=SPECIAL_TOKENS, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   additional_special_tokens=SPECIAL_TOKENS[1:], model_max_length=32768)
    fast.add_tokens(OMNI_SPECIALS, special_tokens=True)
    fast.chat_template = OMNI_CHAT_TEMPLATE
    return fast


def nli_item(k: int, sentences: int) -> dict:
    from shala.data.items import make_item

    premise = " ".join(SENTENCES[(k + j) % len(SENTENCES)] for j in range(sentences))
    return make_item(id=f"n{k}", dataset="chaosnli", subset="snli", labels=NLI, ambiguity="entropy",
                     inputs={"premise": premise, "hypothesis": "A person is outside making music for a crowd."},
                     counts=[5 + k % 3, 3, 2 + k % 2])


def write_inputs(work: Path, model_dir: Path, prompt_cfg: dict, target: int, mel_bins: int) -> dict:
    """Tokenizer files in model_dir (laid out as shala.model.tiny_omni's) and 8
    train items whose rendered prompt has at least ``target`` tokens."""
    from transformers import WhisperFeatureExtractor

    from shala.jsonio import write_jsonl
    from shala.prompts import render_prompt_string, render_prompt_text

    tok = build_tokenizer(SENTENCES + [render_prompt_text(nli_item(k, 2), prompt_cfg) for k in range(5)])

    def n_tokens(it: dict) -> int:
        return len(tok(render_prompt_string(tok, it, prompt_cfg), add_special_tokens=False)["input_ids"])

    n = 1
    while n < 60 and n_tokens(nli_item(0, n)) < target:
        n += 1
    items = [nli_item(k, n) for k in range(8)]
    lengths = [n_tokens(it) for it in items]
    data = work / "data" / "chaosnli"
    write_jsonl(data / "train.jsonl", [{**it, "split": "train"} for it in items])
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "chat_template.json").write_text(json.dumps({"chat_template": tok.chat_template}))
    tok.chat_template = None  # like the hub repo: the template is the processor's
    tok.save_pretrained(model_dir)
    WhisperFeatureExtractor(feature_size=mel_bins, sampling_rate=16000, hop_length=160, chunk_length=30,
                            n_fft=400, return_attention_mask=True).save_pretrained(model_dir)
    return {"data": str(data), "tokenizer_size": len(tok), "prompt_tokens": [min(lengths), max(lengths)]}


def sync_time(torch, fn):
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    sync()
    t = time.perf_counter()
    out = fn()
    sync()
    return out, time.perf_counter() - t


def engines(torch, model, res: dict, path: Path, device: str, vocab: int, new: int, text_bytes: int,
            hbm: float | None, g, tiny: bool) -> None:
    """(c, engines): module doc. The bound: 16 sequences share each decode step's weight read."""
    try:  # the part needs only torch and transformers: without shala, only this section is lost
        from shala.errors import ConfigError
        from shala.model.engines import continuous_batching_config, vllm, vllm_missing
    except Exception as exc:  # noqa: BLE001
        res["engines"] = [{"engine": "all", "error": f"shala does not import: {type(exc).__name__}: {exc}"[:500]}]
        log(f"(c) engines skipped: {res['engines'][0]['error']}")
        path.write_text(json.dumps(res, indent=2) + "\n")
        return

    prompts = torch.randint(1000, vocab - 1000, (16, 256), device=device, generator=g)
    ids = [row.tolist() for row in prompts.cpu()]

    def hf():
        kw = dict(attention_mask=torch.ones_like(prompts), max_new_tokens=new, min_new_tokens=new,
                  do_sample=False, pad_token_id=0, use_cache=True)
        return model.generate(prompts, **kw)

    def cb():
        from transformers import GenerationConfig

        gen = GenerationConfig(max_new_tokens=new, min_new_tokens=new, do_sample=False, pad_token_id=0)
        out = model.generate_batch(ids, generation_config=gen, progress_bar=False,
                                   continuous_batching_config=continuous_batching_config([256] * 16, new, 16))
        done = [r for r in out.values() if r.error is None]
        if len(done) != 16:
            raise RuntimeError(f"{16 - len(done)} of 16 requests failed")
        return done

    def bound(row: dict) -> dict:
        if hbm and row.get("seconds"):
            b = 16 / (text_bytes / (hbm * 1e12))
            row.update(bound_tokens_per_s=round(b, 1), fraction_of_bound=round(16 * new / row["seconds"] / b, 3))
        return row

    res["engines"] = []
    for name, fn in (("generate", hf), ("continuous_batching", cb)):
        row: dict = {"engine": name, "sequences": 16, "prompt_tokens": 256, "new_tokens": new}
        try:
            with torch.no_grad():
                _, secs = sync_time(torch, fn)
            row.update(seconds=round(secs, 2), tokens_per_s=round(16 * new / secs, 1))
            bound(row)
        except Exception as exc:  # noqa: BLE001 - one engine failing must not lose the others' numbers
            row["error"] = f"{type(exc).__name__}: {exc}"[:500]
        res["engines"].append(row)
        log(f"(c) engine: {row}")
        path.write_text(json.dumps(res, indent=2) + "\n")
    # vLLM (bench/gpu_check_vllm.py): in this process where it imports, else in the Python
    # gpu_check.sh found with it (GPU_CHECK_VLLM_PYTHON), else the engine's own reason
    from gpu_check_vllm import child_row, vllm_row  # bench/

    other = os.environ.get("GPU_CHECK_VLLM_PYTHON")
    row = {"engine": "vllm", "error": "started, did not finish (the part's time limit?)"}
    res["engines"].append(row)  # replaced below: a killed run still says where it stopped
    path.write_text(json.dumps(res, indent=2) + "\n")
    if not vllm_missing():
        row = vllm_row(torch, model, ids, new)
    elif other:
        row = child_row(other, tiny, new)
    else:
        try:
            vllm(model, None, ())
        except ConfigError as exc:  # the engine's own reason: not installed here
            row = {"engine": "vllm", "error": str(exc)}
    res["engines"][-1] = bound(row)
    log(f"(c) engine: {row}")
    path.write_text(json.dumps(res, indent=2) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("outdir")
    ap.add_argument("--hbm-tbs", type=float, default=None, help="HBM bandwidth in TB/s (default by GPU name)")
    ap.add_argument("--tiny", action="store_true", help="toy-size model on the CPU: a smoke run of this script")
    a = ap.parse_args()
    import torch
    import transformers

    out = Path(a.outdir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "gpu_check_bc.json"  # the printed lines: gpu_check.sh keeps them (gpu_check_bc.log)
    device = "cpu" if a.tiny else "cuda"
    cuda = device == "cuda"
    res: dict = {"python": platform.python_version(), "torch": torch.__version__,
                 "transformers": transformers.__version__, "tiny": a.tiny,
                 "gpu": torch.cuda.get_device_name(0) if cuda else None,
                 "gpu_mem_gib": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1) if cuda else None}
    log(f"{res}")
    gpu = res["gpu"] or ""
    hbm = a.hbm_tbs or (4.8 if "H200" in gpu else 3.35 if "H100" in gpu else None)
    t0 = time.perf_counter()
    model, cfg = build(torch, device, a.tiny)
    n_all = sum(p.numel() for p in model.parameters())
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    text = cfg.get_text_config()
    res["build_s"] = round(time.perf_counter() - t0, 1)
    res["params"] = {"total": n_all, "trainable": n_train, "frozen_towers": n_all - n_train}
    log(f"built thinker: {n_all / 1e9:.3f}B params, trainable {n_train / 1e9:.3f}B, in {res['build_s']} s")
    vocab = text.vocab_size
    g = torch.Generator(device=device).manual_seed(0)

    # (b) generation: 16 rollouts x 128 tokens after a 256-token prompt (--tiny: 16 tokens; a
    # decode step of the toy thinker costs the CPU ~0.15 s, and the test suite runs it)
    new = 16 if a.tiny else 128
    model.eval()
    prompt = torch.randint(1000, vocab - 1000, (16, 256), device=device, generator=g)
    gen_kw = dict(attention_mask=torch.ones_like(prompt), max_new_tokens=new, min_new_tokens=new, do_sample=True,
                  temperature=1.2, top_k=0, top_p=1.0, pad_token_id=0, use_cache=True)
    with torch.no_grad():
        model.generate(prompt[:2, :32], attention_mask=torch.ones_like(prompt[:2, :32]), max_new_tokens=4,
                       pad_token_id=0)  # warm-up
        seq, secs = sync_time(torch, lambda: model.generate(prompt, **gen_kw))
    res["generation"] = {"rollouts": 16, "new_tokens": new, "prompt_tokens": 256, "seconds": round(secs, 2),
                         "tokens_per_s": round(16 * new / secs, 1)}
    log(f"(b) generation: {res['generation']}")
    path.write_text(json.dumps(res, indent=2) + "\n")

    # (b) one forward + backward over the GRPO batch (16 x 384 tokens), checkpointing on
    model.train()
    model.gradient_checkpointing_enable()
    model.config.use_cache = False
    if cuda:
        torch.cuda.reset_peak_memory_stats()

    def fwd_bwd():
        logits = model(input_ids=seq, logits_to_keep=new + 1).logits
        logp = torch.log_softmax(logits[:, :-1].float(), -1)
        loss = -logp.gather(-1, seq[:, -new:].unsqueeze(-1)).mean()
        loss.backward()
        return float(loss)

    _, secs = sync_time(torch, fwd_bwd)
    model.zero_grad(set_to_none=True)
    _, secs2 = sync_time(torch, fwd_bwd)
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    tokens = seq.numel()
    res["forward_backward"] = {"tokens": tokens, "seconds_first": round(secs, 2), "seconds": round(secs2, 2),
                               "tokens_per_s": round(tokens / secs2, 1), "peak_mem_gib": round(peak, 1) if peak is not None else None,
                               "gradient_checkpointing": True}
    log(f"(b) forward+backward: {res['forward_backward']}")
    path.write_text(json.dumps(res, indent=2) + "\n")
    model.zero_grad(set_to_none=True)
    model.gradient_checkpointing_disable()
    model.config.use_cache = True
    model.eval()
    if cuda:
        torch.cuda.empty_cache()

    # (c) greedy prediction throughput at batch 16 and 64, against the HBM bound
    text_bytes = 2 * sum(p.numel() for n, p in model.named_parameters() if not n.startswith(TOWERS)
                         and ".audio_tower." not in n and ".visual." not in n)
    res["predict"] = []
    for bs in (16, 64):
        p = torch.randint(1000, vocab - 1000, (bs, 256), device=device, generator=g)
        kw = dict(attention_mask=torch.ones_like(p), max_new_tokens=new, min_new_tokens=new, do_sample=False,
                  pad_token_id=0, use_cache=True)
        with torch.no_grad():
            _, secs = sync_time(torch, lambda: model.generate(p, **kw))
        row = {"batch_size": bs, "seconds": round(secs, 2), "items_per_s": round(bs / secs, 2)}
        if hbm:
            step_s = text_bytes / (hbm * 1e12)
            bound = bs / (new * step_s)
            row.update(hbm_tb_s=hbm, weight_bytes=text_bytes, min_decode_step_ms=round(step_s * 1e3, 2),
                       bound_items_per_s=round(bound, 1), fraction_of_bound=round(row["items_per_s"] / bound, 3),
                       arithmetic=f"{text_bytes / 1e9:.1f} GB / {hbm} TB/s = {step_s * 1e3:.2f} ms per decode step; "
                                  f"{bs} items x {new} steps -> at most {bound:.1f} items/s (prefill ignored)")
        res["predict"].append(row)
        log(f"(c) predict: {row}")
        path.write_text(json.dumps(res, indent=2) + "\n")
    engines(torch, model, res, path, device, vocab, new, text_bytes, hbm, g, a.tiny)
    res["peak_mem_gib_overall"] = round(torch.cuda.max_memory_allocated() / 2**30, 1) if cuda else None
    path.write_text(json.dumps(res, indent=2) + "\n")
    log(f"done in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
