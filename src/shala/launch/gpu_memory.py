"""Per-GPU memory estimate of a GRPO training job, for ``shala preflight``.

One job: the arithmetic from a :class:`~shala.launch.model_shape.ModelShape` and
the launch :class:`Setup` to bytes per GPU (:mod:`shala.launch.fit` turns
it into a decision and the settings that would fit). It needs no GPU, accelerate or model weights, so it can be
checked (and tested) on its own; :mod:`shala.launch.preflight` gathers its inputs
and prints the result.

Memory model (per GPU)
----------------------
P = all parameters, T = trainable ones (P minus the audio and vision towers
when ``training.freeze_unused_towers``, default true: text-only data gives
them no gradient, :func:`shala.model.loading.freeze_unused_towers`), N = GPUs
(processes), s = ZeRO stage from the DeepSpeed json, GiB = 2^30 bytes.

The estimate is a peak: what stays allocated through the whole step
(*static*) plus the largest of three phases that follow one another and
free their tensors before the next begins: **generation** (TRL's
``generate``: the gathered weights are released when
``unwrap_model_for_generation`` exits, the KV cache when ``generate``
returns), **forward/backward** (activations are freed by the backward) and
the **optimizer step** (its transients are freed before the next forward).
The caching allocator hands the freed blocks of one phase to the next;
what it cannot reuse (fragmentation) is what the 10 % :data:`HEADROOM` is
for. A plain sum of every term would count the 16.6 GiB generation gather
of the 7B thinker and the activations at once, which never happens.

With DeepSpeed (``training.gpus`` > 1 and an accelerate config, as
``rules/common.smk`` launches); static:

- weights, bf16: 2 B x P, divided by N under ZeRO-3 (0 with
  ``offload_param`` on cpu/nvme);
- optimizer, fp32 master weights + Adam m and v: 12 B x T, divided by N
  under ZeRO-1/2/3; 0 on the GPU when ``offload_optimizer.device`` is
  cpu/nvme (then it is host memory, 12 B x T / N per process);
- gradients, bf16: 2 B x T, divided by N under ZeRO-2/3 (ZeRO-3 with
  optimizer offload keeps them in host memory too);
- CUDA context, allocator and NCCL overhead of one rank: 3 GiB.

Phases, on top (the ZeRO-3 terms and their sources:
:mod:`shala.launch.zero3_memory`):

- generation: the gather (ZeRO-3 with TRL's ``ds3_gather_for_generation``,
  the default), a full bf16 copy, 2 B x P; without it the live gathered
  parameters (below); the KV cache of B·G sequences (G = generation steps
  per batch = ``steps_per_generation``, else ``gradient_accumulation_steps``)
  of S tokens: B·G·S x L x 2 (k, v) x kv_heads x head_dim x 2 B; the
  prefill of B·G prompts through one layer: 2 B x (2h + 3i) per prompt
  token (the layer's input and output, the MLP's gate, up and product
  outputs; not measured);
- forward/backward: activations, bf16, of one micro-batch of B =
  ``per_device_train_batch_size`` sequences of S = prompt (``--prompt-tokens``,
  512) + ``max_completion_length`` tokens, with L layers, hidden size h, MLP
  size i. One layer saves about 2 B·(12h + 4i) per token for backward
  (measured on an H200 with a bf16 Qwen2 of the paper's widths and SDPA
  attention: 2 B·(11.5h + 4.0i)). With activation checkpointing (TRL's
  default; ``activation_checkpointing``, or its alias
  ``gradient_checkpointing``, in ``training.grpo``) each layer keeps 4 B·h
  per token (measured) and one layer is recomputed in backward:
  B·S·2 B·(2L·h + 12h + 4i); without it B·S·2 B·L·(12h + 4i). TRL's fused
  LM head never materialises the B·S·vocab logits. Under ZeRO-3, plus the
  live gathered parameters: 2 B x min(P, max(``stage3_max_live_parameters``,
  the largest parameter + ``stage3_prefetch_bucket_size``));
- optimizer step: under ZeRO-3 the fp32 gradient copy of one sub-group and
  torch AdamW's scratch of the same size, 8 B per element of the largest
  sub-group, min(T / N, ``sub_group_size`` + the largest parameter / N)
  (6 B with a fused AdamW; 0 with optimizer offload); ZeRO-1/2 the same for
  the whole partition.

Without DeepSpeed (one process, plain Trainer): static fp32 weights 4 B x P,
Adam m and v 8 B x T and the overhead of one process (below); fp32
gradients 4 B x T in the forward/backward and step phases (the Trainer
frees them after each step, before the next generation); at the step
also the 4 B x T scratch that torch's foreach AdamW allocates
(``optim: adamw_torch``; none with ``adamw_torch_fused``; measured on an
H200: step peak = static + gradients + 4 B x P); no gather.

With LoRA (``training.peft.enabled``, one process; A = adapter parameters,
r x (in + out) of every adapted linear layer of the language model: q, k,
v, o, gate, up, down with "all-linear", the query width taken as h): static
the frozen base in bf16, 2 B x P, and the adapters in fp32 with their fp32
gradients, Adam m and v and the step's scratch, 20 B x A; activations as
above plus the adapters' dropout copies of their inputs, 2 B·(7h + i) per
token for one layer with checkpointing (L layers without; not measured);
KV cache and prefill as above. No optimizer state for the base, which is
why a model whose full fine-tune needs two 141 GB GPUs trains on one.

With vLLM rollouts (``training.grpo.use_vllm``, colocate mode: the engine
lives in each training process, :mod:`shala.train.vllm_rollouts`): the
engine takes ``vllm_gpu_memory_utilization`` x the GPU's memory for its
weights, KV cache and activations (vLLM's own budget: the share of the whole
card one instance may use), static, or, with ``vllm_enable_sleep_mode``, in
the generation phase only (level 2 frees weights and KV cache while the
policy trains). The policy then generates nothing itself: no generation
gather, KV cache or prefill; the weight push gathers one parameter at a time
under ZeRO-3 (2 B x the largest, in the generation phase). Server mode (a
separate vLLM process) and CPU runs count no reserve.

Overhead outside the tensors: a rank of a multi-process launch (DeepSpeed,
or any N > 1) counts 3 GiB for its CUDA context, allocator slack and NCCL's
buffers. One plain process has no NCCL: :data:`ONE_PROCESS_OVERHEAD_GIB`,
1 GiB, for the CUDA context (about 0.3 GiB at start with lazy module
loading, the default since CUDA 12.2 and set by torch since 1.13, pytorch
PR 86509: 287 MB lazy vs 667 MB eager; it grows as kernels load), cuBLAS
and cuBLASLt workspaces (tens of MiB) and the allocator's partly used blocks.

Allocator fragmentation is not modelled, so a setup *fits* only with at
least :data:`HEADROOM` (10 %) of the GPU's memory left over (:func:`fits`):
with 0.6 GiB to spare on an 80 GB card, fragmentation and a longer prompt
use it up.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .model_shape import ModelShape
from .zero3_memory import Zero3Config, live_parameters, step_transient

GIB = 2 ** 30
OVERHEAD_GIB = 3.0              # one rank of a multi-process launch (NCCL)
ONE_PROCESS_OVERHEAD_GIB = 1.0  # one plain process (module doc)
PROMPT_TOKENS = 512
MAX_GPUS = 64          # the search range for "more GPUs"
HEADROOM = 0.10        # fraction of GPU memory a fitting setup leaves free
GENERATION, FORWARD, STEP = "generation", "forward/backward", "optimizer step"
PHASES = (GENERATION, FORWARD, STEP)


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
    overhead_gib: float | None = None   # None: by launch (module doc, "Overhead")
    lora_r: int | None = None           # training.peft.r when LoRA is enabled, else None (full fine-tune)
    lora_targets: str | tuple[str, ...] = "all-linear"
    zero3: Zero3Config = Zero3Config()  # the DeepSpeed json's sub_group_size, max live parameters, prefetch
    foreach_adam: bool = True           # torch AdamW's foreach path (adamw_torch), not fused
    vllm_utilization: float = 0.0       # vllm_gpu_memory_utilization of colocated vLLM rollouts; 0: no vLLM
    vllm_sleep: bool = False            # vllm_enable_sleep_mode: the reserve in the generation phase only
    gpu_mem_gib: float | None = None    # the card's memory, which vLLM's reserve is a share of

    @property
    def vllm(self) -> bool:
        return self.vllm_utilization > 0

    @property
    def multi_process(self) -> bool:
        return self.deepspeed or self.gpus > 1

    @property
    def overhead(self) -> float:
        """GiB outside the tensors (module doc)."""
        if self.overhead_gib is not None:
            return self.overhead_gib
        return OVERHEAD_GIB if self.multi_process else ONE_PROCESS_OVERHEAD_GIB


@dataclass
class Line:
    label: str
    bytes: float
    formula: str
    phases: tuple[str, ...] = ()        # () = static, live throughout; else the phases it is live in


@dataclass
class Estimate:
    lines: list[Line]
    host_bytes: float = 0.0            # optimizer state (and ZeRO-3 gradients) offloaded to CPU, per process

    @property
    def static(self) -> float:
        return sum(line.bytes for line in self.lines if not line.phases)

    def phase_bytes(self) -> dict[str, float]:
        """Bytes of each phase on top of the static part."""
        return {ph: sum(line.bytes for line in self.lines if ph in line.phases) for ph in PHASES}

    @property
    def peak_phase(self) -> str:
        phases = self.phase_bytes()
        return max(PHASES, key=lambda ph: phases[ph])

    @property
    def total(self) -> float:
        """The peak: static + the largest phase (module doc)."""
        return self.static + self.phase_bytes()[self.peak_phase]

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


def _sharded(b: int, n: float, over: int) -> tuple[float, str]:
    return b * n / over, f"{b} B x {billions(n)}" + (f" / {over}" if over > 1 else "")


def _deepspeed_lines(shape: ModelShape, setup: Setup, t: int, n: int) -> tuple[list[Line], float]:
    """Static and phase lines of a DeepSpeed rank, and its host bytes."""
    p, s, lines, host = shape.total, setup.zero_stage, [], 0.0
    wn = n if s == 3 else 1
    if s == 3 and setup.offload_param:
        lines.append(Line("weights (bf16, offloaded to CPU)", 0, "0 (offload_param)"))
    else:
        lines.append(Line(f"weights (bf16{', ZeRO-3 sharded' if wn > 1 else ''})", *_sharded(2, p, wn)))
    on = n if s >= 1 else 1
    if setup.offload_optimizer:
        host = 12 * t / on
        lines.append(Line("optimizer (fp32 master + Adam m, v; on CPU)", 0,
                          f"0 (offload_optimizer; host {_sharded(12, t, on)[1]} = {host / GIB:.2f} GiB per process)"))
    else:
        lines.append(Line(f"optimizer (fp32 master + Adam m, v{', sharded' if on > 1 else ''})", *_sharded(12, t, on)))
    gn = n if s >= 2 else 1
    if s == 3 and setup.offload_optimizer:
        host += 2 * t / gn
        lines.append(Line("gradients (bf16, sharded; on CPU)", 0, f"0 (offload_optimizer: host "
                          f"{_sharded(2, t, gn)[1]} = {2 * t / gn / GIB:.2f} GiB per process)"))
    else:
        lines.append(Line(f"gradients (bf16{', sharded' if gn > 1 else ''})", *_sharded(2, t, gn)))
    generates = setup.generation_steps > 0
    if s == 3:
        gather = generates and setup.gather_for_generation and not setup.vllm
        if gather:
            lines.append(Line("generation gather (ds3_gather_for_generation)", 2 * p,
                              f"2 B x {billions(p)} (full bf16 copy)", (GENERATION,)))
        live, formula = live_parameters(p, shape.largest, shape.hidden, setup.zero3)
        lines.append(Line("ZeRO-3 live gathered parameters (bf16)", live, formula,
                          (FORWARD,) if gather or not generates or setup.vllm else (GENERATION, FORWARD)))
    if setup.offload_optimizer or s == 0:
        return lines, host
    b, formula = step_transient(t, shape.largest, n, setup.zero3 if s == 3 else None, setup.foreach_adam)
    lines.append(Line(f"optimizer step transient (ZeRO-{s}, one {'sub-group' if s == 3 else 'partition'})",
                      b, formula, (STEP,)))
    return lines, host


def estimate_memory(shape: ModelShape, setup: Setup) -> Estimate:
    """Per-GPU bytes by component and phase (module doc, "Memory model")."""
    p, t, n = shape.total, shape.trainable(setup.freeze_towers), max(setup.gpus, 1)
    h, i, L = shape.hidden, shape.intermediate, shape.layers
    lines: list[Line] = []
    host = 0.0
    lora = setup.lora_r is not None
    if lora:
        a = lora_params(shape, setup.lora_r, setup.lora_targets)
        lines.append(Line("weights (bf16, frozen base)", 2 * p, f"2 B x {billions(p)}"))
        lines.append(Line(f"LoRA adapters r={setup.lora_r} (fp32 weights, grads, Adam m, v, scratch)", 20 * a,
                          f"20 B x {billions(a)}"))
    elif setup.deepspeed:
        lines, host = _deepspeed_lines(shape, setup, t, n)
    else:
        lines.append(Line("weights (fp32, no DeepSpeed)", 4 * p, f"4 B x {billions(p)}"))
        lines.append(Line("optimizer (Adam m, v, fp32)", 8 * t, f"8 B x {billions(t)}"))
        lines.append(Line("gradients (fp32)", 4 * t, f"4 B x {billions(t)}", (FORWARD, STEP)))
        scratch = 4 * t if setup.foreach_adam else 0
        lines.append(Line("optimizer step scratch (AdamW foreach)", scratch,
                          f"4 B x {billions(t)}" if scratch else "0 (adamw_torch_fused updates in place)", (STEP,)))
    seq = setup.prompt_tokens + setup.completion_tokens
    tokens = setup.batch * seq
    if setup.gradient_checkpointing:
        per_token = 2 * (2 * L * h + 12 * h + 4 * i)
        formula = (f"{setup.batch} x {seq} tok x 2 B x (2L*h + 12h + 4i) = {tokens} x 2 x "
                   f"(2*{L}*{h} + 12*{h} + 4*{i}), checkpointing")
    else:
        per_token = 2 * L * (12 * h + 4 * i)
        formula = (f"{setup.batch} x {seq} tok x 2 B x L*(12h + 4i) = {tokens} x 2 x "
                   f"{L}*(12*{h} + 4*{i}), no checkpointing")
    lines.append(Line("activations (bf16, one micro-batch)", tokens * per_token, formula, (FORWARD,)))
    if lora:
        per_layer = 2 * (7 * h + i)
        k = 1 if setup.gradient_checkpointing else L
        lines.append(Line("LoRA dropout copies of adapter inputs (bf16)", tokens * per_layer * k,
                          f"{tokens} tok x 2 B x (7h + i) x {k} layer(s)", (FORWARD,)))
    if setup.vllm:
        lines += vllm_lines(shape, setup)
    else:
        gen_seqs = setup.batch * setup.generation_steps
        kv = gen_seqs * seq * L * 2 * shape.kv_heads * shape.head_dim * 2
        lines.append(Line("generation KV cache (bf16)", kv,
                          f"{gen_seqs} seq x {seq} tok x {L} L x 2 x {shape.kv_heads} kv x {shape.head_dim} x 2 B",
                          (GENERATION,)))
        prefill = gen_seqs * setup.prompt_tokens
        lines.append(Line("generation prefill (bf16, one layer)", prefill * 2 * (2 * h + 3 * i),
                          f"{gen_seqs} seq x {setup.prompt_tokens} tok x 2 B x (2h + 3i)", (GENERATION,)))
    label = "CUDA context / allocator / NCCL" if setup.multi_process else "CUDA context / cuBLAS / allocator"
    lines.append(Line(label, setup.overhead * GIB,
                      "fixed, one rank of a multi-process launch" if setup.multi_process else
                      "fixed, one process (no NCCL)"))
    return Estimate(lines, host_bytes=host)


def vllm_lines(shape: ModelShape, setup: Setup) -> list[Line]:
    """vLLM's reserve and the weight push (module doc, "With vLLM rollouts")."""
    mem = setup.gpu_mem_gib
    reserve = setup.vllm_utilization * mem * GIB if mem else 0.0
    formula = (f"vllm_gpu_memory_utilization {setup.vllm_utilization:g} x {mem:.1f} GiB" if mem
               else "unknown: no GPU memory given (--gpu-mem)")
    phases = (GENERATION,) if setup.vllm_sleep else ()
    label = "vLLM reserve (weights, KV cache; colocate" + (", asleep while training)" if setup.vllm_sleep else ")")
    push = 2 * shape.largest if setup.deepspeed and setup.zero_stage == 3 else 0
    return [Line(label, reserve, formula, phases),
            Line("vLLM weight push (one gathered parameter)", push,
                 f"2 B x {billions(shape.largest)}" if push else "0 (nothing to gather)", (GENERATION,))]


def setup_for(settings: dict[str, Any], *, gpus: int, deepspeed: bool, zero_stage: int = 3,
              offload_optimizer: bool = False, offload_param: bool = False, freeze_towers: bool = True,
              prompt_tokens: int = PROMPT_TOKENS, generation: bool = True,
              zero3: Zero3Config | None = None, gpu_mem_gib: float | None = None) -> Setup:
    """The :class:`Setup` of a job from its TRL settings (GRPOConfig, or
    SFTConfig with ``generation`` false: no rollouts, so no gather and no KV
    cache) and the DeepSpeed json's ZeRO-3 values (``zero3``; None:
    DeepSpeed's defaults), so preflight and training estimate the same thing.
    An unset ``optim`` counts as ``adamw_torch`` (foreach, with scratch).
    Colocated vLLM rollouts reserve TRL's ``vllm_gpu_memory_utilization``
    (default 0.3) of ``gpu_mem_gib``."""
    colocated = generation and settings.get("use_vllm") and settings.get("vllm_mode", "colocate") == "colocate"
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
        gather_for_generation=generation and bool(settings.get("ds3_gather_for_generation", True)),
        zero3=zero3 or Zero3Config(), foreach_adam=str(settings.get("optim", "adamw_torch")) != "adamw_torch_fused",
        vllm_utilization=float(settings.get("vllm_gpu_memory_utilization", 0.3)) if colocated else 0.0,
        vllm_sleep=bool(colocated and settings.get("vllm_enable_sleep_mode")), gpu_mem_gib=gpu_mem_gib)


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
