"""The ZeRO-3 terms of the per-GPU memory estimate that depend on the
DeepSpeed json's own values (:mod:`shala.launch.gpu_memory` adds them up).

One job: from ``sub_group_size``, ``stage3_max_live_parameters`` and
``stage3_prefetch_bucket_size`` to bytes, so that a changed json changes
the estimate. Read from DeepSpeed 0.19 and torch 2.13 (the versions the
workflow pins); N = GPUs, T = trainable parameters, P = all parameters.

Optimizer step (``deepspeed/runtime/zero/stage3.py``)
----------------------------------------------------
``step()`` updates this rank's partition one sub-group at a time.
``_create_fp16_sub_groups`` cuts each optimizer parameter group into
sub-groups by this rank's partition sizes (ceil(numel / N) per parameter)
and closes a sub-group once it holds at least ``sub_group_size`` elements,
so a sub-group holds at most ``sub_group_size`` + the largest parameter / N
elements, and never more than T / N. For one sub-group, without optimizer
offload, ``_prepare_fp32_grad_for_sub_group`` flattens its bf16 gradients
(2 B each, freed at once) and casts them to an fp32 gradient (4 B each),
which lives until ``_release_sub_group``; torch's AdamW then steps it. With
``optim: adamw_torch`` (config.yaml) that is the foreach path, which
allocates one scratch tensor of the same size (``torch/optim/adam.py``,
``_multi_tensor_adam``: ``exp_avg_sq_sqrt = torch._foreach_sqrt(...)``,
4 B each); ``adamw_torch_fused`` and DeepSpeed's own optimizer (an
``optimizer`` section in the json) update in place. The step's peak is
therefore 8 B per sub-group element (foreach) or 6 B (fused: the
flatten's 2 B next to the fp32 copy). The gradient-norm pass before it
casts one gradient partition at a time to fp64 (``get_grad_norm_direct``,
8 B x the largest parameter / N); the estimate takes the larger. With
``offload_optimizer`` the fp32 gradients and the Adam step are on the CPU
and the GPU holds no step transient (nor the bf16 gradient partitions:
``self.device`` is the CPU then, so ``grad_partitions_flat_buffer`` is host
memory).

The json's ``sub_group_size`` was DeepSpeed's default, 1e9: 9.5 GiB per rank
for the 7B thinker on 2 GPUs (1e9 + the 545M-parameter LM head / 2, x 8 B),
about the whole headroom of an 80 GB card. ``config/ds_zero3.json`` sets
1e8: 2.8 GiB on 2 GPUs, 1.3 on 8. transformers' DeepSpeed guide says to
lower it when the optimizer step runs out of memory and to raise it only
when the step is slow from small buffers (which matters for NVMe offload);
here each sub-group step is a few bandwidth-bound kernels over 1e8
elements, so ~40 sub-groups instead of ~4 add milliseconds to a GRPO step
of seconds.

Live parameters (``partitioned_param_coordinator.py``)
-----------------------------------------------------
In forward and backward (and generation without the full gather) ZeRO-3
all-gathers each module's parameters before it runs, in bf16, 2 B each.
``fetch_sub_module`` prefetches the next ones only while fewer than
``stage3_max_live_parameters`` are gathered, at most
``stage3_prefetch_bucket_size`` at a time; the module being fetched is not
held back, so one parameter larger than the cap (the LM head) is gathered
anyway. ``__params_to_release`` keeps a parameter that comes back within
``stage3_max_reuse_distance`` elements (a checkpointed layer between its
recompute and its backward). The estimate counts 2 B x
min(P, max(max_live, the largest parameter + the prefetch bucket)); what
reuse keeps beyond max_live is not modelled, so shala's json sets
max_reuse_distance no higher than max_live.
``config/ds_zero3.json`` sets max_live and max_reuse_distance to 5e8 (the
default 1e9 counts 1.9 GiB): two of the 7B thinker's decoder layers (233M
parameters each), so the next layer is still prefetched while one runs and
a recomputed layer stays gathered for its backward; the 545M LM head and
embedding are fetched whole either way. ``"auto"`` prefetch is filled by
transformers (``HfTrainerDeepSpeedConfig.trainer_config_process``) with
0.9 x hidden^2 (11.6M elements for h = 3584); absent keys take DeepSpeed's
defaults (``deepspeed/runtime/zero/config.py``). Not counted, all under
0.1 GiB here: parameters under ``stage3_param_persistence_threshold``
("auto": 10 x hidden) that stay gathered, and the ``reduce_bucket_size``
buffer ("auto": hidden^2 bf16).
"""

from __future__ import annotations

from dataclasses import dataclass

# DeepSpeed 0.19's defaults for keys the json leaves out (zero/config.py).
DS_SUB_GROUP_SIZE = 1_000_000_000
DS_MAX_LIVE_PARAMETERS = 1_000_000_000
DS_PREFETCH_BUCKET_SIZE = 50_000_000
AUTO = "auto"


@dataclass(frozen=True)
class Zero3Config:
    """The DeepSpeed json's values that size ZeRO-3's transient memory
    (module doc); DeepSpeed's defaults where the json has none."""

    sub_group_size: int = DS_SUB_GROUP_SIZE
    max_live_parameters: int = DS_MAX_LIVE_PARAMETERS
    prefetch_bucket_size: int | str = DS_PREFETCH_BUCKET_SIZE   # "auto": 0.9 x hidden^2 (transformers)
    ds_optimizer: bool = False                                  # the json has an ``optimizer`` section


def prefetch_numel(cfg: Zero3Config, hidden: int) -> int:
    """``stage3_prefetch_bucket_size`` in elements, "auto" filled as transformers does."""
    return int(0.9 * hidden * hidden) if cfg.prefetch_bucket_size == AUTO else int(cfg.prefetch_bucket_size)


def sub_group_numel(trainable: int, largest: int, gpus: int, sub_group_size: int) -> float:
    """The largest sub-group of one rank's partition (module doc)."""
    n = max(gpus, 1)
    return min(trainable / n, sub_group_size + largest / n)


def step_transient(trainable: int, largest: int, gpus: int, cfg: Zero3Config | None,
                   foreach_adam: bool) -> tuple[float, str]:
    """(bytes, formula) of the optimizer step's peak above the static state,
    without optimizer offload (module doc). ``cfg`` None: ZeRO-1/2, which
    casts the whole partition of a parameter group at once (no sub-groups,
    ``stage_1_and_2.py`` ``step``)."""
    n = max(gpus, 1)
    if cfg is None:
        sg, which = trainable / n, f"the whole partition T/N = {trainable / n / 1e6:.1f}M"
    else:
        sg = sub_group_numel(trainable, largest, n, cfg.sub_group_size)
        which = (f"sub-group = min(T/N = {trainable / n / 1e6:.1f}M, sub_group_size "
                 f"{cfg.sub_group_size:.3g} + largest parameter / N = {largest / n / 1e6:.1f}M)")
    foreach = foreach_adam and not (cfg is not None and cfg.ds_optimizer)
    per = 8 if foreach else 6
    what = "fp32 gradient copy + AdamW foreach scratch" if foreach else "fp32 gradient copy + bf16 flatten"
    step, norm = per * sg, 8 * largest / n
    formula = f"{per} B x {sg / 1e6:.1f}M ({what}; {which})"
    if norm > step:
        return norm, f"8 B x {largest / n / 1e6:.1f}M (fp64 norm of the largest gradient partition; > {formula})"
    return step, formula


def live_parameters(total: int, largest: int, hidden: int, cfg: Zero3Config) -> tuple[float, str]:
    """(bytes, formula) of the bf16 parameters ZeRO-3 holds gathered while
    modules run (module doc)."""
    prefetch = prefetch_numel(cfg, hidden)
    numel = min(total, max(cfg.max_live_parameters, largest + prefetch))
    auto = " auto = 0.9 h^2" if cfg.prefetch_bucket_size == AUTO else ""
    return 2 * numel, (f"2 B x {numel / 1e6:.1f}M = max(stage3_max_live_parameters {cfg.max_live_parameters:.3g}, "
                       f"largest parameter {largest / 1e6:.1f}M + prefetch bucket {prefetch / 1e6:.1f}M{auto})")
