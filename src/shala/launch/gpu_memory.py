"""Per-GPU memory estimate of a GRPO training job, for ``shala preflight``.

One job: the arithmetic from a :class:`~shala.launch.model_shape.ModelShape` and
the launch :class:`Setup` to bytes per GPU, and the settings that would
make a job fit. It needs no GPU, accelerate or model weights, so it can be
checked (and tested) on its own; :mod:`shala.launch.preflight` gathers its inputs
and prints the result.

Memory model (per GPU)
----------------------
P = all parameters, T = trainable ones (P minus the audio and vision towers
when ``training.freeze_unused_towers``, default true: text-only data gives
them no gradient, :func:`shala.model.loading.freeze_unused_towers`), N = GPUs
(processes), s = ZeRO stage from the DeepSpeed json, GiB = 2^30 bytes.

With DeepSpeed (``training.gpus`` > 1 and an accelerate config, as
``rules/common.smk`` launches):

- weights, bf16: 2 B × P, divided by N under ZeRO-3 (0 with
  ``offload_param`` on cpu/nvme);
- optimizer, fp32 master weights + Adam m and v: 12 B × T, divided by N
  under ZeRO-1/2/3; 0 on the GPU when ``offload_optimizer.device`` is
  cpu/nvme (then it is host memory, 12 B × T / N per process);
- gradients, bf16: 2 B × T, divided by N under ZeRO-2/3;
- generation gather (ZeRO-3 with TRL's ``ds3_gather_for_generation``, the
  default): a full bf16 copy for ``generate``, 2 B × P on each GPU;
- activations, bf16, for one micro-batch of B = ``per_device_train_batch_size``
  sequences of S = prompt (``--prompt-tokens``, 512) + ``max_completion_length``
  tokens, with L layers, hidden size h, MLP size i. One layer saves about
  2 B·(12h + 4i) per token for backward (12 tensors of size h for norms,
  attention and residuals, 4 of size i for the MLP; measured on an H200
  with a bf16 Qwen2 of the paper's widths and SDPA attention: 2 B·(11.5h +
  4.0i)). With activation checkpointing (TRL's default;
  ``activation_checkpointing``, or its alias ``gradient_checkpointing``, in
  ``training.grpo``) each layer keeps 4 B·h per token (measured) and one
  layer is recomputed in backward: B·S·2 B·(2L·h + 12h + 4i); without it
  B·S·2 B·L·(12h + 4i). TRL's fused LM head never materialises the
  B·S·vocab logits;
- generation KV cache: B·G·S tokens (G = generation steps per batch =
  ``gradient_accumulation_steps``) × L × 2 (k, v) × kv_heads × head_dim × 2 B;
- CUDA context, allocator and NCCL overhead: 3 GiB.

Without DeepSpeed (one process, plain Trainer): fp32 weights 4 B × P, fp32
gradients 4 B × T, Adam m and v 8 B × T, plus 4 B × T of scratch that
torch's foreach AdamW allocates at the step, when everything else is live
(measured on an H200: step peak = static + gradients + 4 B × P); no gather;
activations, KV cache and overhead as above.

With LoRA (``training.peft.enabled``, one process; A = adapter parameters,
r × (in + out) of every adapted linear layer of the language model: q, k,
v, o, gate, up, down with "all-linear", the query width taken as h): the
frozen base in bf16, 2 B × P; the adapters in fp32 with their fp32
gradients, Adam m and v and the step's scratch, 20 B × A; activations as
above plus the adapters' dropout copies of their inputs, 2 B·(7h + i) per
token for one layer with checkpointing (L layers without; not measured);
KV cache and overhead as above. No optimizer state for the base, which is
why a model whose full fine-tune needs two 141 GB GPUs trains on one.

The total is their sum. It counts activations on top of the generation
gather although the two are not live at the same time, so it errs high by
the smaller of them (with activation checkpointing, the activations:
about 1.5 GiB for the paper's setup); transient buffers of other phases (ZeRO-3's
fp32 gradient of one ``sub_group_size`` at the optimizer step, prefetch
buckets) are not counted. Allocator fragmentation is not modelled, so a
setup *fits* only with at least :data:`HEADROOM` (10 %) of the GPU's memory
left over (:func:`fits`): with 0.6 GiB to spare on an 80 GB card,
fragmentation and a longer prompt use it up.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .model_shape import ModelShape

GIB = 2 ** 30
OVERHEAD_GIB = 3.0
PROMPT_TOKENS = 512
MAX_GPUS = 64          # the search range for "more GPUs"
HEADROOM = 0.10        # fraction of GPU memory a fitting setup leaves free


@dataclass(frozen=True)
class Setup:
    """Everything the estimate depends on besides the model."""

    gpus: int
    deepspeed: bool = True
    zero_stage: int = 3
    offload_optimizer: bool = False
    offload_param: bool = False
    freeze_towers: bool = True
    batch: int = 1                      # per_device_train_batch_size (completions)
    generation_steps: int = 1           # steps_per_generation = gradient_accumulation_steps
    prompt_tokens: int = PROMPT_TOKENS
    completion_tokens: int = 128
    gradient_checkpointing: bool = True
    gather_for_generation: bool = True  # TRL ds3_gather_for_generation
    overhead_gib: float = OVERHEAD_GIB
    lora_r: int | None = None           # training.peft.r when LoRA is enabled, else None (full fine-tune)
    lora_targets: str | tuple[str, ...] = "all-linear"


@dataclass
class Line:
    label: str
    bytes: float
    formula: str


@dataclass
class Estimate:
    lines: list[Line]
    host_bytes: float = 0.0            # optimizer state offloaded to CPU, per process

    @property
    def total(self) -> float:
        return sum(line.bytes for line in self.lines)

    @property
    def total_gib(self) -> float:
        return self.total / GIB


def billions(n: float) -> str:
    """A parameter count in billions (or millions)."""
    return f"{n / 1e9:.3f}B" if n >= 1e8 else f"{n / 1e6:.3f}M"


LORA_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def lora_params(shape: ModelShape, r: int, targets: str | tuple[str, ...] = "all-linear") -> int:
    """Adapter parameters of rank ``r`` on the language model's linear layers
    (module doc; a target list counts the names of :data:`LORA_LINEARS` in it)."""
    h, i, kv = shape.hidden, shape.intermediate, shape.kv_heads * shape.head_dim
    sizes = {"q_proj": h + h, "k_proj": h + kv, "v_proj": h + kv, "o_proj": h + h,
             "gate_proj": h + i, "up_proj": h + i, "down_proj": i + h}
    names = LORA_LINEARS if targets == "all-linear" else [t for t in targets if t in sizes]
    return shape.layers * r * sum(sizes[n] for n in names)


def with_lora(setup: Setup, r: int, targets: str | tuple[str, ...] = "all-linear") -> Setup:
    """``setup`` with LoRA adapters of rank ``r`` (one plain process: LoRA's point is not to need DeepSpeed)."""
    return dataclasses.replace(setup, lora_r=r, lora_targets=targets, deepspeed=False)


def peft_setup(setup: Setup, peft: dict[str, Any], enabled: bool | None = None) -> Setup:
    """``setup`` as config ``training.peft`` trains it: with LoRA when
    ``enabled`` (default: ``peft['enabled']``), unchanged otherwise."""
    if not (peft["enabled"] if enabled is None else enabled):
        return setup
    target = peft["target_modules"]
    return with_lora(setup, int(peft["r"]), target if isinstance(target, str) else tuple(target))


def estimate_memory(shape: ModelShape, setup: Setup) -> Estimate:
    """Per-GPU bytes by component (module doc, "Memory model")."""
    p, t, n = shape.total, shape.trainable(setup.freeze_towers), max(setup.gpus, 1)
    s = setup.zero_stage if setup.deepspeed else 0
    lines: list[Line] = []
    host = 0.0
    lora = setup.lora_r is not None
    if lora:
        a = lora_params(shape, setup.lora_r, setup.lora_targets)
        lines.append(Line("weights (bf16, frozen base)", 2 * p, f"2 B x {billions(p)}"))
        lines.append(Line(f"LoRA adapters r={setup.lora_r} (fp32 weights, grads, Adam m, v, scratch)", 20 * a,
                          f"20 B x {billions(a)}"))
    elif setup.deepspeed:
        wn = n if s == 3 else 1
        if s == 3 and setup.offload_param:
            lines.append(Line("weights (bf16, offloaded to CPU)", 0, "0 (offload_param)"))
        else:
            lines.append(Line(f"weights (bf16{', ZeRO-3 sharded' if wn > 1 else ''})", 2 * p / wn,
                              f"2 B x {billions(p)}" + (f" / {wn}" if wn > 1 else "")))
        on = n if s >= 1 else 1
        if setup.offload_optimizer:
            host = 12 * t / on
            lines.append(Line("optimizer (fp32 master + Adam m, v; on CPU)", 0,
                              f"0 (offload_optimizer; host 12 B x {billions(t)}" + (f" / {on}" if on > 1 else "")
                              + f" = {host / GIB:.2f} GiB per process)"))
        else:
            lines.append(Line(f"optimizer (fp32 master + Adam m, v{', sharded' if on > 1 else ''})",
                              12 * t / on, f"12 B x {billions(t)}" + (f" / {on}" if on > 1 else "")))
        gn = n if s >= 2 else 1
        lines.append(Line(f"gradients (bf16{', sharded' if gn > 1 else ''})", 2 * t / gn,
                          f"2 B x {billions(t)}" + (f" / {gn}" if gn > 1 else "")))
        if s == 3 and setup.gather_for_generation:
            lines.append(Line("generation gather (ds3_gather_for_generation)", 2 * p,
                              f"2 B x {billions(p)} (full bf16 copy)"))
    else:
        lines.append(Line("weights (fp32, no DeepSpeed)", 4 * p, f"4 B x {billions(p)}"))
        lines.append(Line("optimizer (Adam m, v, fp32)", 8 * t, f"8 B x {billions(t)}"))
        lines.append(Line("gradients (fp32)", 4 * t, f"4 B x {billions(t)}"))
        lines.append(Line("optimizer step scratch (AdamW foreach)", 4 * t, f"4 B x {billions(t)}"))
    seq = setup.prompt_tokens + setup.completion_tokens
    tokens = setup.batch * seq
    h, i, L = shape.hidden, shape.intermediate, shape.layers
    if setup.gradient_checkpointing:
        per_token = 2 * (2 * L * h + 12 * h + 4 * i)
        formula = (f"{setup.batch} x {seq} tok x 2 B x (2L*h + 12h + 4i) = {tokens} x 2 x "
                   f"(2*{L}*{h} + 12*{h} + 4*{i}), checkpointing")
    else:
        per_token = 2 * L * (12 * h + 4 * i)
        formula = (f"{setup.batch} x {seq} tok x 2 B x L*(12h + 4i) = {tokens} x 2 x "
                   f"{L}*(12*{h} + 4*{i}), no checkpointing")
    lines.append(Line("activations (bf16, one micro-batch)", tokens * per_token, formula))
    if lora:
        per_layer = 2 * (7 * h + i)
        k = 1 if setup.gradient_checkpointing else L
        lines.append(Line("LoRA dropout copies of adapter inputs (bf16)", tokens * per_layer * k,
                          f"{tokens} tok x 2 B x (7h + i) x {k} layer(s)"))
    gen_seqs = setup.batch * setup.generation_steps
    kv = gen_seqs * seq * L * 2 * shape.kv_heads * shape.head_dim * 2
    lines.append(Line("generation KV cache (bf16)", kv,
                      f"{gen_seqs} seq x {seq} tok x {L} L x 2 x {shape.kv_heads} kv x {shape.head_dim} x 2 B"))
    lines.append(Line("CUDA context / allocator / NCCL", setup.overhead_gib * GIB, "fixed"))
    return Estimate(lines, host_bytes=host)


def setup_for(settings: dict[str, Any], *, gpus: int, deepspeed: bool, zero_stage: int = 3,
              offload_optimizer: bool = False, offload_param: bool = False, freeze_towers: bool = True,
              prompt_tokens: int = PROMPT_TOKENS, generation: bool = True) -> Setup:
    """The :class:`Setup` of a job from its TRL settings (GRPOConfig, or
    SFTConfig with ``generation`` false: no rollouts, so no gather and no KV
    cache), so preflight and training estimate the same thing."""
    ckpt = settings.get("activation_checkpointing")
    if ckpt is None:
        ckpt = settings.get("gradient_checkpointing", True)
    steps = settings.get("steps_per_generation") or settings.get("gradient_accumulation_steps", 1)
    return Setup(
        gpus=gpus, deepspeed=deepspeed, zero_stage=zero_stage, offload_optimizer=offload_optimizer,
        offload_param=offload_param, freeze_towers=freeze_towers,
        batch=int(settings.get("per_device_train_batch_size", 1)),
        generation_steps=int(steps) if generation else 0, prompt_tokens=prompt_tokens,
        completion_tokens=int(settings.get("max_completion_length", 128)), gradient_checkpointing=bool(ckpt),
        gather_for_generation=generation and bool(settings.get("ds3_gather_for_generation", True)))


def fits_in(total_gib: float, mem_gib: float, headroom: float = HEADROOM) -> bool:
    """An estimate fits when it leaves ``headroom`` of the GPU's memory free."""
    return total_gib <= mem_gib * (1 - headroom)


def fits(shape: ModelShape, setup: Setup, mem_gib: float, headroom: float = HEADROOM) -> bool:
    return fits_in(estimate_memory(shape, setup).total_gib, mem_gib, headroom)


def smallest_gpus(shape: ModelShape, setup: Setup, mem_gib: float, max_gpus: int = MAX_GPUS) -> int | None:
    """The fewest GPUs (2..max_gpus, data parallel under the same ZeRO
    settings) whose per-GPU estimate fits; None when none does."""
    if not setup.deepspeed:
        return None
    for n in range(max(2, setup.gpus), max_gpus + 1):
        if fits(shape, dataclasses.replace(setup, gpus=n), mem_gib):
            return n
    return None


def suggestions(shape: ModelShape, setup: Setup, mem_gib: float, ds_file: str | None) -> list[str]:
    """Settings that would make the estimate fit, each with its estimate."""
    ds = ds_file or "the DeepSpeed json"
    options: list[tuple[str, Setup]] = []
    if setup.deepspeed and not setup.offload_optimizer and setup.zero_stage >= 1:
        options.append((f"optimizer offload: {ds} zero_optimization.offload_optimizer.device \"cpu\" "
                        "(needs host RAM, slower steps)", dataclasses.replace(setup, offload_optimizer=True)))
    if shape.towers and not setup.freeze_towers:
        options.append(("freeze the unused towers: training.freeze_unused_towers true",
                        dataclasses.replace(setup, freeze_towers=True)))
    if not setup.gradient_checkpointing:
        options.append(("activation (gradient) checkpointing: training.grpo.activation_checkpointing true",
                        dataclasses.replace(setup, gradient_checkpointing=True)))
    if setup.deepspeed and setup.zero_stage == 3 and setup.gather_for_generation:
        options.append(("no full-model gather for generation: training.grpo.ds3_gather_for_generation "
                        "false (much slower generation)",
                        dataclasses.replace(setup, gather_for_generation=False)))
    def verdict(alt: Setup) -> str:
        est = estimate_memory(shape, alt).total_gib
        return f"{est:.1f} GiB ({'fits' if fits_in(est, mem_gib) else 'does not fit'})"

    out = [f"{text}: {verdict(alt)}" for text, alt in options]
    combo = setup
    for _, alt in options:
        combo = dataclasses.replace(combo, **{f.name: getattr(alt, f.name) for f in dataclasses.fields(Setup)
                                              if getattr(alt, f.name) != getattr(setup, f.name)})
    if len(options) > 1:
        out.append(f"all of the above: {verdict(combo)}")
    if setup.deepspeed:
        n = smallest_gpus(shape, setup, mem_gib)
        if n:
            out.append(f"more GPUs: training.gpus {n}, the smallest count that fits with the current "
                       f"settings: {verdict(dataclasses.replace(setup, gpus=n))}")
        else:
            out.append(f"more GPUs alone: no count up to {MAX_GPUS} fits (the unsharded part, generation "
                       "gather + activations + KV cache + overhead, stays on every GPU)")
        others = [(label, alt) for label, alt in
                  [("optimizer offload", dataclasses.replace(setup, offload_optimizer=True)),
                   ("all of the above", combo)] if alt != setup]
        seen = set()
        for label, alt in others:
            n = smallest_gpus(shape, alt, mem_gib)
            if n and n > setup.gpus and alt not in seen:
                out.append(f"more GPUs with {label}: training.gpus {n}")
            seen.add(alt)
    return out

