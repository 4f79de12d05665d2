"""``shala preflight``: check the launch config and estimate per-GPU memory
before a GPU training job (SPEC §8).

Run it where the job will run (the repo root: accelerate resolves the
DeepSpeed json relative to the directory ``accelerate launch`` runs in)::

    shala preflight --config config.yaml [--config overlay.yaml] [--gpus N] [--gpu-mem GIB]

Exit status: 0 when the estimate fits (or the GPU memory is unknown: the
estimate is printed with a note), 3 when it does not fit (the report names
the settings that would make it fit), 2 when the launch config has problems
(each named by file and field) or the config cannot be read.

Launch config
-------------
``training.accelerate_config`` (and the DeepSpeed json it names) is checked
with accelerate's own code, without launching and without GPU, distributed
environment or the ``deepspeed`` package:

1. accelerate's ``load_config_from_file`` reads the YAML;
2. accelerate's launcher argument handling (``_validate_launch_command`` and
   ``prepare_deepspeed_cmd_env``, the two steps of ``accelerate launch
   --config_file F --num_processes N`` before it starts processes) gives
   the environment each training process would get;
3. in that environment ``DeepSpeedPlugin()`` is constructed, as
   ``TrainingArguments`` does in each process, which runs accelerate's checks
   (a ``zero_optimization`` section; no ``mixed_precision``, ZeRO stage,
   offload or gradient fields next to a ``deepspeed_config_file``: the
   ValueError a bad YAML gives at launch), then ``set_mixed_precision`` with
   the GRPOConfig's bf16 (an fp16/bf16 clash);
4. explicit (not ``"auto"``) DeepSpeed values are compared with
   ``training.grpo`` (batch sizes, gradient accumulation and clipping, lr,
   bf16/fp16), as transformers' ``HfTrainerDeepSpeedConfig`` does at train
   time; that class needs the ``deepspeed`` package, so the comparison is
   done here for the values it checks.

Not checked here: DeepSpeed's own config parser (``DeepSpeedConfig`` needs
``torch.distributed`` and the deepspeed package), CUDA/NCCL, and the ZeRO
stage and offload devices beyond their allowed values.

Memory model (per GPU)
----------------------
Counts come from the model's config alone: the model is instantiated on the
``meta`` device (no memory, no weights), so parameter counts are exact for
the config. The paper model's config, ``Qwen/Qwen2.5-Omni-7B``, ships as
``shala/data/qwen2_5_omni_7b_config.json`` (the hub's config.json fields;
written from the model card and transformers' Qwen2.5-Omni config classes,
and checked by its parameter counts: thinker 8.93B = text 7.62B + audio
encoder 0.64B + vision encoder 0.68B), so this works offline. Omni models
count their thinker (what :mod:`shala.models` loads).

P = all parameters, T = trainable ones (P minus the audio and vision towers
when ``training.freeze_unused_towers``, default true: text-only data gives
them no gradient, :func:`shala.models.freeze_unused_towers`), N = GPUs
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

The total is their sum. It counts activations on top of the generation
gather although the two are not live at the same time, so it errs high by
the smaller of them (with activation checkpointing, the activations:
about 1.5 GiB for the paper's setup); transient buffers of other phases (ZeRO-3's
fp32 gradient of one ``sub_group_size`` at the optimizer step, prefetch
buckets) are not counted. Allocator fragmentation is not modelled: a fit
with less than 10 % headroom is flagged as tight.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import os
import sys
import warnings
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, TextIO

from .errors import ConfigError, ShalaError

log = logging.getLogger(__name__)

GIB = 2 ** 30
EXIT_OK, EXIT_PROBLEMS, EXIT_DOES_NOT_FIT = 0, 2, 3
OVERHEAD_GIB = 3.0
PROMPT_TOKENS = 512
MAX_GPUS = 64          # the search range for "more GPUs"
TIGHT = 0.10           # headroom below this fraction of GPU memory is "tight"

# Hub ids whose config ships with the package (offline preflight).
SHIPPED_CONFIGS = {"qwen/qwen2.5-omni-7b": "qwen2_5_omni_7b_config.json"}

# accelerate config fields that accelerate refuses next to a
# deepspeed_config_file (DeepSpeedPlugin._deepspeed_config_checks, 1.15).
DS_FILE_EXCLUSIVE_FIELDS = (
    "gradient_accumulation_steps", "gradient_clipping", "zero_stage", "offload_optimizer_device",
    "offload_param_device", "offload_param_nvme_path", "offload_optimizer_nvme_path",
    "zero3_save_16bit_model", "mixed_precision",
)
OFFLOAD_DEVICES = ("none", "cpu", "nvme")


# ------------------------------------------------------------ launch config

@dataclass
class Problem:
    """A launch-config problem, located by file and field."""

    file: str
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: field '{self.field}': {self.message}"


@dataclass
class LaunchCheck:
    """What the launch config says, and what is wrong with it."""

    accelerate_config: str | None
    deepspeed: bool = False
    ds_config_file: str | None = None
    zero_stage: int = 0
    offload_optimizer: str = "none"
    offload_param: str = "none"
    checks: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


@contextlib.contextmanager
def _environ(values: dict[str, str]):
    """os.environ with ``values`` set (and every ACCELERATE_* variable of
    the caller removed), restored afterwards."""
    saved = dict(os.environ)
    try:
        for key in [k for k in os.environ if k.startswith("ACCELERATE_")]:
            del os.environ[key]
        os.environ.update(values)
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@contextlib.contextmanager
def _quiet():
    """accelerate's launcher logs and warns about defaults it fills in; keep
    them (and stdout chatter) out of the report."""
    loggers = [logging.getLogger(n) for n in ("accelerate", "accelerate.commands.launch",
                                               "accelerate.utils.launch")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("always")
            yield caught
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _get(d: dict[str, Any], dotted: str) -> Any:
    cur: Any = d
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def _load_ds_json(path: Path, check: LaunchCheck) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        check.problems.append(Problem(str(path), "(file)", f"invalid JSON at line {exc.lineno}: {exc.msg}"))
        return None
    if not isinstance(data, dict):
        check.problems.append(Problem(str(path), "(file)", "top level must be an object"))
        return None
    return data


def _check_ds_values(path: str, ds: dict[str, Any], check: LaunchCheck) -> None:
    """ZeRO stage and offload devices have allowed values and fit together."""
    zero = ds.get("zero_optimization")
    if not isinstance(zero, dict):
        check.problems.append(Problem(path, "zero_optimization",
                                      "missing: accelerate requires the ZeRO section in the DeepSpeed config"))
        return
    stage = zero.get("stage", 0)
    if stage not in (0, 1, 2, 3):
        check.problems.append(Problem(path, "zero_optimization.stage", f"must be 0, 1, 2 or 3, not {stage!r}"))
        return
    check.zero_stage = int(stage)
    for key in ("offload_optimizer", "offload_param"):
        dev = _get(zero, f"{key}.device") or "none"
        if dev not in OFFLOAD_DEVICES:
            check.problems.append(Problem(path, f"zero_optimization.{key}.device",
                                          f"must be one of {OFFLOAD_DEVICES}, not {dev!r}"))
            continue
        setattr(check, key, dev)
    if check.offload_param != "none" and check.zero_stage != 3:
        check.problems.append(Problem(path, "zero_optimization.offload_param.device",
                                      f"parameter offload needs ZeRO stage 3 (stage is {check.zero_stage})"))
    if check.offload_optimizer != "none" and check.zero_stage == 0:
        check.problems.append(Problem(path, "zero_optimization.offload_optimizer.device",
                                      "optimizer offload needs ZeRO stage 1, 2 or 3 (stage is 0)"))


def _check_against_grpo(path: str, ds: dict[str, Any], grpo: dict[str, Any], gpus: int,
                        check: LaunchCheck) -> None:
    """Explicit DeepSpeed values must equal what the GRPOConfig gives, as
    HfTrainerDeepSpeedConfig.trainer_config_process demands at train time."""
    b = grpo.get("per_device_train_batch_size")
    ga = grpo.get("gradient_accumulation_steps")
    wanted = [
        ("train_micro_batch_size_per_gpu", b, "training.grpo.per_device_train_batch_size"),
        ("gradient_accumulation_steps", ga, "training.grpo.gradient_accumulation_steps"),
        ("train_batch_size", gpus * b * ga if b and ga else None,
         "GPUs x per_device_train_batch_size x gradient_accumulation_steps"),
        ("gradient_clipping", grpo.get("max_grad_norm", 1.0), "training.grpo.max_grad_norm (TRL default 1.0)"),
        ("optimizer.params.lr", grpo.get("learning_rate"), "training.grpo.learning_rate"),
        ("bf16.enabled", bool(grpo.get("bf16", False)), "training.grpo.bf16"),
        ("fp16.enabled", bool(grpo.get("fp16", False)), "training.grpo.fp16"),
    ]
    for key, hf_value, source in wanted:
        value = _get(ds, key)
        if value is None or value == "auto" or hf_value is None:
            continue
        if isinstance(hf_value, bool):
            value = str(value).lower() == "true"
        if value != hf_value:
            check.problems.append(Problem(
                path, key, f"{_get(ds, key)!r}, but {source} gives {hf_value!r} (transformers refuses "
                "the mismatch when training starts); set it to \"auto\""))


def _accelerate_launch_env(acc_path: str, gpus: int) -> tuple[Any, dict[str, str], bool]:
    """(accelerate config, the ACCELERATE_* environment ``accelerate launch``
    would give each process, mixed_precision-from-config flag), by
    accelerate's own launcher code, without launching."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_deepspeed_cmd_env

    parser = launch_command_parser()
    args = parser.parse_args(["--config_file", acc_path, "--num_processes", str(max(gpus, 1)),
                              "-m", "shala", "train"])
    args, defaults, mp_from_config = _validate_launch_command(args)
    # accelerate.commands.launch.launch_command, DeepSpeed branch:
    fields = list(defaults.deepspeed_config.keys()) if defaults else []
    if mp_from_config:
        fields.append("mixed_precision")
    args.deepspeed_fields_from_accelerate_config = ",".join(fields)
    _, env = prepare_deepspeed_cmd_env(args)
    return defaults, {k: v for k, v in env.items() if k.startswith("ACCELERATE_")}, mp_from_config


def check_launch_config(acc_path: str | Path | None, *, gpus: int, grpo: dict[str, Any]) -> LaunchCheck:
    """Check ``training.accelerate_config`` and its DeepSpeed json (module
    doc, "Launch config"). Relative paths are taken from the current
    directory, as ``accelerate launch`` does."""
    import accelerate

    check = LaunchCheck(accelerate_config=str(acc_path) if acc_path else None)
    if not acc_path:
        check.notes.append("training.accelerate_config is not set: plain single-process training")
        return check
    acc = Path(acc_path)
    acc_s = str(acc)
    if not acc.is_file():
        check.problems.append(Problem(acc_s, "(file)", "not found (config field training.accelerate_config, "
                                      f"relative to {Path.cwd()})"))
        return check
    version = accelerate.__version__
    try:
        from accelerate.commands.config.config_args import load_config_from_file
        with _quiet():
            acfg = load_config_from_file(acc_s)
    except Exception as exc:  # noqa: BLE001 - any parse error is the user's to fix
        check.problems.append(Problem(acc_s, "(file)", f"accelerate cannot read it: {_first_line(exc)}"))
        return check
    check.checks.append(f"read by accelerate {version} load_config_from_file")
    dist = str(getattr(acfg, "distributed_type", "") or "")
    check.deepspeed = dist.endswith("DEEPSPEED")
    if not check.deepspeed:
        check.notes.append(f"distributed_type is {dist or 'unset'}, not DEEPSPEED: no ZeRO sharding")
        return check

    ds_section = getattr(acfg, "deepspeed_config", None) or {}
    ds_file = ds_section.get("deepspeed_config_file")
    ds: dict[str, Any] | None = None
    if ds_file:
        check.ds_config_file = str(ds_file)
        ds_path = Path(ds_file)
        if not ds_path.is_file():
            check.problems.append(Problem(acc_s, "deepspeed_config.deepspeed_config_file",
                                          f"{ds_file} not found (relative to {Path.cwd()}, "
                                          "where accelerate launch runs)"))
            return check
        ds = _load_ds_json(ds_path, check)
        if ds is None:
            return check
        _check_ds_values(str(ds_path), ds, check)
        offending = ([f"deepspeed_config.{k}" for k in ds_section if k in DS_FILE_EXCLUSIVE_FIELDS]
                     + (["mixed_precision"] if getattr(acfg, "mixed_precision", None) is not None else []))
    else:
        offending = []
        check.notes.append("no deepspeed_config_file: ZeRO settings come from the accelerate config")

    # accelerate's own launcher processing and DeepSpeedPlugin checks.
    bf16 = bool(grpo.get("bf16", False))
    try:
        with _quiet():
            _, env, _ = _accelerate_launch_env(acc_s, gpus)
    except ValueError as exc:
        check.problems.append(Problem(acc_s, "(launch)", f"accelerate launch refuses it: {_first_line(exc)}"))
        return check
    except Exception as exc:  # noqa: BLE001 - private accelerate API changed: say so, go on
        check.notes.append(f"accelerate {version}'s launcher checks could not run here "
                           f"({type(exc).__name__}: {_first_line(exc)}); file checks only")
        env = None
    if env is not None:
        check.checks.append(f"accelerate {version} launcher argument checks "
                            f"(--num_processes {max(gpus, 1)})")
        try:
            from accelerate.utils import DeepSpeedPlugin
            with _environ(env), _quiet() as caught:
                plugin = DeepSpeedPlugin()
                plugin.set_mixed_precision("bf16" if bf16 else "no")
            check.checks.append("DeepSpeedPlugin built from the launcher's environment, "
                                f"set_mixed_precision({'bf16' if bf16 else 'no'})")
            check.notes.extend(f"accelerate: {w.message}" for w in caught
                               if "Zero3 Init" in str(w.message))
            check.zero_stage = int(plugin.zero_stage)
            check.offload_optimizer = str(plugin.offload_optimizer_device or "none")
            check.offload_param = str(plugin.offload_param_device or "none")
        except ValueError as exc:
            msg = _first_line(exc)
            if offending and "deepspeed_config_file" in str(exc):
                for name in offending:
                    check.problems.append(Problem(
                        acc_s, name, "not allowed next to deepspeed_config.deepspeed_config_file "
                        f"(accelerate: {msg}); remove it (DeepSpeed settings belong in "
                        f"{check.ds_config_file}; bf16 comes from training.grpo.bf16)"))
            else:
                where = check.ds_config_file or acc_s
                # set_mixed_precision: the other half precision is enabled in the json
                other = "fp16.enabled" if bf16 else "bf16.enabled"
                field_name = other if "mixed_precision" in str(exc) else "(DeepSpeedPlugin)"
                check.problems.append(Problem(where, field_name, f"accelerate: {msg}"))
    if ds is not None:
        _check_against_grpo(check.ds_config_file or "", ds, grpo, max(gpus, 1), check)
        check.checks.append("explicit DeepSpeed values against training.grpo")
    seen: set[tuple[str, str]] = set()
    check.problems = [p for p in check.problems
                      if (p.file, p.field) not in seen and not seen.add((p.file, p.field))]
    return check


# -------------------------------------------------------------------- model

@dataclass(frozen=True)
class ModelShape:
    """Parameter counts by group and the dimensions the activation estimate needs."""

    name: str
    source: str
    groups: dict[str, int]          # text / audio / vision
    towers: tuple[str, ...]         # groups that text-only data never reaches
    layers: int
    hidden: int
    intermediate: int
    kv_heads: int
    head_dim: int
    vocab: int

    @property
    def total(self) -> int:
        return sum(self.groups.values())

    def trainable(self, freeze_towers: bool) -> int:
        return self.total - (sum(self.groups[t] for t in self.towers) if freeze_towers else 0)


def shipped_config_path(model_id: str) -> Path | None:
    name = SHIPPED_CONFIGS.get(model_id.lower())
    return Path(str(resources.files("shala") / "data" / name)) if name else None


def model_config_dict(config: dict[str, Any], model_config: str | Path | None = None) -> tuple[dict[str, Any], str]:
    """(config.json content, where it came from) for ``config['model']``:
    ``model_config`` when given, the shipped config of a known hub id, a
    local model's config.json, or the hub's (where reachable)."""
    from .models import resolve_model_ref

    if model_config:
        path = Path(model_config)
    else:
        model_cfg = config.get("model") or {}
        source = model_cfg.get("source")
        path = None
        if source == "hub" and model_cfg.get("id"):
            path = shipped_config_path(str(model_cfg["id"]))
            if path is None:
                try:
                    from transformers import AutoConfig
                    cfg = AutoConfig.from_pretrained(str(model_cfg["id"]))
                    return cfg.to_dict(), f"hub {model_cfg['id']}"
                except (OSError, ValueError) as exc:
                    raise ShalaError(f"model.id {model_cfg['id']!r}: no shipped config and the hub "
                                     f"does not answer ({_first_line(exc)}); pass --model-config "
                                     "PATH/config.json") from None
        else:
            ref = Path(resolve_model_ref(config, config.get("results", "results")))
            path = ref / "config.json"
            if not path.is_file():
                hint = " (run shala fetch-model first)" if source == "pypi_gguf" else ""
                raise ShalaError(f"{path}: model config not found{hint}; or pass --model-config")
    if not path.is_file():
        raise ShalaError(f"{path}: model config not found")
    try:
        return json.loads(path.read_text(encoding="utf-8")), str(path)
    except json.JSONDecodeError as exc:
        raise ShalaError(f"{path}: invalid JSON at line {exc.lineno}: {exc.msg}") from None


_SHAPES: dict[str, ModelShape] = {}


def count_parameters(cfg_dict: dict[str, Any], name: str = "model", source: str = "") -> ModelShape:
    """Exact parameter counts of the model ``cfg_dict`` describes, from a
    ``meta``-device instance (no memory, no weights). Omni configs count
    their thinker, grouped into text / audio / vision. Cached per config."""
    key = json.dumps([cfg_dict, name, source], sort_keys=True, default=str)
    if key not in _SHAPES:
        _SHAPES[key] = _count_parameters(cfg_dict, name, source)
    return _SHAPES[key]


def _count_parameters(cfg_dict: dict[str, Any], name: str, source: str) -> ModelShape:
    import torch
    import transformers
    from transformers import AutoModelForCausalLM
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    from .models import OMNI_TOWER_PREFIXES, is_omni, omni_thinker_class

    model_type = cfg_dict.get("model_type")
    if model_type not in CONFIG_MAPPING:
        raise ShalaError(f"{source or 'model config'}: unknown model_type {model_type!r} "
                         f"(transformers {transformers.__version__})")
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        cfg = CONFIG_MAPPING[model_type].from_dict(dict(cfg_dict))
        omni = is_omni(model_type)
        if omni and hasattr(cfg, "thinker_config"):
            cfg = cfg.thinker_config
        with torch.device("meta"):
            if omni:
                model = omni_thinker_class(model_type)(cfg)
            else:
                model = AutoModelForCausalLM.from_config(cfg)
    except (ValueError, TypeError, KeyError) as exc:
        raise ShalaError(f"{source or 'model config'}: cannot build the model: {_first_line(exc)}") from None
    finally:
        transformers.logging.set_verbosity(verbosity)
    groups = {"text": 0}
    towers = tuple(OMNI_TOWER_PREFIXES) if omni else ()
    for t in towers:
        groups[t] = 0
    for pname, param in model.named_parameters():  # shared (tied) weights count once
        group = next((t for t in towers if pname.startswith(OMNI_TOWER_PREFIXES[t])), "text")
        groups[group] += param.numel()
    text = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    heads = int(text.num_attention_heads)
    hidden = int(text.hidden_size)
    return ModelShape(
        name=name, source=source, groups=groups, towers=towers,
        layers=int(text.num_hidden_layers), hidden=hidden, intermediate=int(text.intermediate_size),
        kv_heads=int(getattr(text, "num_key_value_heads", None) or heads),
        head_dim=int(getattr(text, "head_dim", None) or hidden // heads),
        vocab=int(text.vocab_size))


# ------------------------------------------------------------------- memory

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


def _b(n: float) -> str:
    """A parameter count in billions (or millions)."""
    return f"{n / 1e9:.3f}B" if n >= 1e8 else f"{n / 1e6:.3f}M"


def estimate_memory(shape: ModelShape, setup: Setup) -> Estimate:
    """Per-GPU bytes by component (module doc, "Memory model")."""
    p, t, n = shape.total, shape.trainable(setup.freeze_towers), max(setup.gpus, 1)
    s = setup.zero_stage if setup.deepspeed else 0
    lines: list[Line] = []
    host = 0.0
    if setup.deepspeed:
        wn = n if s == 3 else 1
        if s == 3 and setup.offload_param:
            lines.append(Line("weights (bf16, offloaded to CPU)", 0, "0 (offload_param)"))
        else:
            lines.append(Line(f"weights (bf16{', ZeRO-3 sharded' if wn > 1 else ''})", 2 * p / wn,
                              f"2 B x {_b(p)}" + (f" / {wn}" if wn > 1 else "")))
        on = n if s >= 1 else 1
        if setup.offload_optimizer:
            host = 12 * t / on
            lines.append(Line("optimizer (fp32 master + Adam m, v; on CPU)", 0,
                              f"0 (offload_optimizer; host 12 B x {_b(t)}" + (f" / {on}" if on > 1 else "")
                              + f" = {host / GIB:.2f} GiB per process)"))
        else:
            lines.append(Line(f"optimizer (fp32 master + Adam m, v{', sharded' if on > 1 else ''})",
                              12 * t / on, f"12 B x {_b(t)}" + (f" / {on}" if on > 1 else "")))
        gn = n if s >= 2 else 1
        lines.append(Line(f"gradients (bf16{', sharded' if gn > 1 else ''})", 2 * t / gn,
                          f"2 B x {_b(t)}" + (f" / {gn}" if gn > 1 else "")))
        if s == 3 and setup.gather_for_generation:
            lines.append(Line("generation gather (ds3_gather_for_generation)", 2 * p,
                              f"2 B x {_b(p)} (full bf16 copy)"))
    else:
        lines.append(Line("weights (fp32, no DeepSpeed)", 4 * p, f"4 B x {_b(p)}"))
        lines.append(Line("optimizer (Adam m, v, fp32)", 8 * t, f"8 B x {_b(t)}"))
        lines.append(Line("gradients (fp32)", 4 * t, f"4 B x {_b(t)}"))
        lines.append(Line("optimizer step scratch (AdamW foreach)", 4 * t, f"4 B x {_b(t)}"))
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
    gen_seqs = setup.batch * setup.generation_steps
    kv = gen_seqs * seq * L * 2 * shape.kv_heads * shape.head_dim * 2
    lines.append(Line("generation KV cache (bf16)", kv,
                      f"{gen_seqs} seq x {seq} tok x {L} L x 2 x {shape.kv_heads} kv x {shape.head_dim} x 2 B"))
    lines.append(Line("CUDA context / allocator / NCCL", setup.overhead_gib * GIB, "fixed"))
    return Estimate(lines, host_bytes=host)


def fits(shape: ModelShape, setup: Setup, mem_gib: float) -> bool:
    return estimate_memory(shape, setup).total_gib <= mem_gib


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
        return f"{est:.1f} GiB ({'fits' if est <= mem_gib else 'does not fit'})"

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


# --------------------------------------------------------------- preflight

def detect_gpus() -> tuple[int, float | None, str | None]:
    """(visible CUDA devices, smallest total memory in GiB, name), or (0, None, None)."""
    try:
        import torch
        if not torch.cuda.is_available():
            return 0, None, None
        count = torch.cuda.device_count()
        props = [torch.cuda.get_device_properties(i) for i in range(count)]
        return count, min(p.total_memory for p in props) / GIB, props[0].name
    except Exception:  # noqa: BLE001 - a broken CUDA setup means "no GPU here"
        return 0, None, None


def run_preflight(config: dict[str, Any], *, gpus: int | None = None, gpu_mem: float | None = None,
                  model_config: str | Path | None = None, prompt_tokens: int = PROMPT_TOKENS,
                  out: TextIO | None = None) -> int:
    """Print the launch-config check and the per-GPU memory estimate; return
    the exit status (module doc)."""
    out = out or sys.stdout

    def say(text: str = "") -> None:
        print(text, file=out)

    training = config.get("training") or {}
    grpo = dict(training.get("grpo") or {})
    n_seen, mem_seen, gpu_name = detect_gpus()
    notes: list[str] = []
    if gpus is not None:
        n, n_from = gpus, "--gpus"
    elif int(training.get("gpus") or 0) > 0:
        n, n_from = int(training["gpus"]), "training.gpus"
    elif n_seen:
        n, n_from = n_seen, "visible CUDA devices"
    else:
        n, n_from = 1, "default"
    if n < 1:
        raise ConfigError(f"--gpus must be at least 1, not {n}")
    if n_seen and n_seen < n:
        notes.append(f"only {n_seen} CUDA device(s) visible here, the job asks for {n}")
    if gpu_mem is not None:
        mem, mem_from = float(gpu_mem), "--gpu-mem"
    elif mem_seen is not None:
        mem, mem_from = mem_seen, f"detected: {gpu_name}"
    elif training.get("gpu_mem_gb"):
        mem, mem_from = float(training["gpu_mem_gb"]), "training.gpu_mem_gb"
    else:
        mem, mem_from = None, "unknown"
    if mem is not None and mem <= 0:
        raise ConfigError(f"--gpu-mem must be positive, not {mem}")

    acc = training.get("accelerate_config")
    launch = check_launch_config(acc, gpus=n, grpo=grpo)
    if acc and n <= 1:
        launch.notes.append("1 GPU: the workflow runs plain `shala` (no accelerate launch, no DeepSpeed), "
                            "so the estimate is for plain training")

    cfg_dict, cfg_source = model_config_dict(config, model_config)
    model_cfg = config.get("model") or {}
    name = str(model_cfg.get("id") or model_cfg.get("path") or model_cfg.get("name") or "model")
    shape = count_parameters(cfg_dict, name=name, source=cfg_source)
    freeze = bool(training.get("freeze_unused_towers", True))
    setup = Setup(
        gpus=n, deepspeed=launch.deepspeed and n > 1, zero_stage=launch.zero_stage,
        offload_optimizer=launch.offload_optimizer != "none", offload_param=launch.offload_param != "none",
        freeze_towers=freeze, batch=int(grpo.get("per_device_train_batch_size", 1)),
        generation_steps=int(grpo.get("steps_per_generation") or grpo.get("gradient_accumulation_steps", 1)),
        prompt_tokens=prompt_tokens, completion_tokens=int(grpo.get("max_completion_length", 128)),
        gradient_checkpointing=bool(grpo["activation_checkpointing"] if grpo.get("activation_checkpointing")
                                    is not None else grpo.get("gradient_checkpointing", True)),
        gather_for_generation=bool(grpo.get("ds3_gather_for_generation", True)))
    est = estimate_memory(shape, setup)

    say(f"shala preflight: {n} GPU(s) ({n_from}), "
        + (f"{mem:.1f} GiB each ({mem_from})" if mem is not None else "GPU memory unknown"))
    say()
    say(f"launch config: {launch.accelerate_config or '(none)'}"
        + (f" -> {launch.ds_config_file}" if launch.ds_config_file else ""))
    for c in launch.checks:
        say(f"  checked: {c}")
    if setup.deepspeed:
        say(f"  DeepSpeed ZeRO stage {setup.zero_stage}, offload_optimizer {launch.offload_optimizer}, "
            f"offload_param {launch.offload_param}")
    for note in launch.notes:
        say(f"  note: {note}")
    for prob in launch.problems:
        say(f"  PROBLEM: {prob}")
    if launch.accelerate_config and not launch.problems:
        say("  launch config OK")
    say()
    t = shape.trainable(freeze)
    parts = " + ".join(f"{g} {_b(c)}" for g, c in shape.groups.items())
    say(f"model: {shape.name} ({'thinker, ' if shape.towers else ''}config {shape.source})")
    say(f"  parameters: {parts} = {_b(shape.total)} (counted on the meta device)")
    if shape.towers:
        say(f"  trainable: {_b(t)} ("
            + (f"{' and '.join(shape.towers)} towers frozen: training.freeze_unused_towers true"
               if freeze else "nothing frozen: training.freeze_unused_towers false") + ")")
    say(f"  GRPO: per-device batch {setup.batch} x ({setup.prompt_tokens} prompt + "
        f"{setup.completion_tokens} completion) tokens, {setup.generation_steps} micro-batch(es) per "
        f"generation, activation checkpointing {'on' if setup.gradient_checkpointing else 'off'}")
    say()
    say("per-GPU memory estimate (GiB = 2^30 bytes):")
    width = max(len(line.label) for line in est.lines)
    for line in est.lines:
        say(f"  {line.label:<{width}}  {line.bytes / GIB:7.2f}   {line.formula}")
    say(f"  {'total':<{width}}  {est.total_gib:7.2f}"
        + (f"   of {mem:.1f} GiB" if mem is not None else ""))
    for note in notes:
        say(f"note: {note}")
    say()

    if mem is None:
        say(f"verdict: UNKNOWN: {est.total_gib:.1f} GiB per GPU needed; no GPU visible and no --gpu-mem "
            "(or training.gpu_mem_gb) given, so nothing to compare with")
        rc = EXIT_OK
    elif est.total_gib <= mem:
        headroom = mem - est.total_gib
        tight = headroom < TIGHT * mem
        say(f"verdict: FITS: {est.total_gib:.1f} of {mem:.1f} GiB per GPU, {headroom:.1f} GiB headroom"
            + (" (tight: under 10 %; allocator fragmentation and longer prompts can use that up)"
               if tight else ""))
        rc = EXIT_OK
    else:
        say(f"verdict: DOES NOT FIT: {est.total_gib:.1f} GiB per GPU needed, {mem:.1f} GiB available. "
            "Settings that would change that:")
        for s in suggestions(shape, setup, mem, launch.ds_config_file):
            say(f"  - {s}")
        rc = EXIT_DOES_NOT_FIT
    if launch.problems:
        say(f"launch config: {len(launch.problems)} problem(s), see above")
        rc = EXIT_PROBLEMS
    return rc
