"""Launch-config check for ``shala preflight``: does accelerate (and the
DeepSpeed json it names) accept ``training.accelerate_config``, and do its
explicit values agree with ``training.grpo``?

One job: find the launch-config problems a GPU job would only hit after it
was queued and started, each named by file and field. It lives apart from
the memory estimate (:mod:`shala.launch.gpu_memory`) because it needs accelerate's
launcher code and nothing of the model; :mod:`shala.launch.preflight` reports both.

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

The json's ``sub_group_size``, ``stage3_max_live_parameters`` and
``stage3_prefetch_bucket_size`` are read for the memory estimate
(:class:`~shala.launch.zero3_memory.Zero3Config`; DeepSpeed's defaults where
absent) and must be whole numbers >= 0, or ``"auto"`` where transformers
fills it in (the prefetch bucket).

Not checked here: DeepSpeed's own config parser (``DeepSpeedConfig`` needs
``torch.distributed`` and the deepspeed package), CUDA/NCCL, and the ZeRO
stage and offload devices beyond their allowed values.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .zero3_memory import AUTO, Zero3Config

# accelerate config fields that accelerate refuses next to a
# deepspeed_config_file (DeepSpeedPlugin._deepspeed_config_checks, 1.15).
DS_FILE_EXCLUSIVE_FIELDS = (
    "gradient_accumulation_steps", "gradient_clipping", "zero_stage", "offload_optimizer_device",
    "offload_param_device", "offload_param_nvme_path", "offload_optimizer_nvme_path",
    "zero3_save_16bit_model", "mixed_precision",
)
OFFLOAD_DEVICES = ("none", "cpu", "nvme")


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
    save_16bit: bool = True            # stage3_gather_16bit_weights_on_model_save (ZeRO-3)
    zero3: Zero3Config = field(default_factory=Zero3Config)   # the json's values that size ZeRO-3's transients
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


def first_line(exc: BaseException) -> str:
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


def check_ds_values(path: str, ds: dict[str, Any], check: LaunchCheck) -> None:
    """ZeRO stage and offload devices have allowed values and fit together;
    ``check`` gets them (and the 16-bit gather on save) or the problems."""
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
    check.save_16bit = check.zero_stage != 3 or bool(zero.get("stage3_gather_16bit_weights_on_model_save",
                                                               False))
    for key in ("offload_optimizer", "offload_param"):
        dev = _get(zero, f"{key}.device") or "none"
        if dev not in OFFLOAD_DEVICES:
            check.problems.append(Problem(path, f"zero_optimization.{key}.device",
                                          f"must be one of {OFFLOAD_DEVICES}, not {dev!r}"))
            continue
        setattr(check, key, dev)
    check.zero3 = _zero3_values(path, zero, "optimizer" in ds, check)
    if check.offload_param != "none" and check.zero_stage != 3:
        check.problems.append(Problem(path, "zero_optimization.offload_param.device",
                                      f"parameter offload needs ZeRO stage 3 (stage is {check.zero_stage})"))
    if check.offload_optimizer != "none" and check.zero_stage == 0:
        check.problems.append(Problem(path, "zero_optimization.offload_optimizer.device",
                                      "optimizer offload needs ZeRO stage 1, 2 or 3 (stage is 0)"))


# (json key, Zero3Config field, whether transformers fills "auto")
ZERO3_KEYS = (("sub_group_size", "sub_group_size", False),
              ("stage3_max_live_parameters", "max_live_parameters", False),
              ("stage3_prefetch_bucket_size", "prefetch_bucket_size", True))


def _zero3_values(path: str, zero: dict[str, Any], ds_optimizer: bool, check: LaunchCheck) -> Zero3Config:
    """The ZeRO-3 values the memory estimate needs (shala.launch.zero3_memory);
    a key the json leaves out keeps DeepSpeed's default. DeepSpeed wants a
    number >= 0; "auto" only where transformers fills it in."""
    values: dict[str, Any] = {"ds_optimizer": ds_optimizer}
    for key, name, auto_ok in ZERO3_KEYS:
        value = zero.get(key)
        if value is None:
            continue
        if auto_ok and value == AUTO:
            values[name] = AUTO
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0 and value == int(value):
            values[name] = int(value)
        else:
            allowed = 'a whole number >= 0 or "auto"' if auto_ok else \
                "a whole number >= 0 (transformers does not fill \"auto\" here)"
            check.problems.append(Problem(path, f"zero_optimization.{key}", f"must be {allowed}, not {value!r}"))
    return Zero3Config(**values)


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


def accelerate_launch_env(acc_path: str, gpus: int) -> tuple[Any, dict[str, str], bool]:
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
        check.problems.append(Problem(acc_s, "(file)", f"accelerate cannot read it: {first_line(exc)}"))
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
        check_ds_values(str(ds_path), ds, check)
        offending = ([f"deepspeed_config.{k}" for k in ds_section if k in DS_FILE_EXCLUSIVE_FIELDS]
                     + (["mixed_precision"] if getattr(acfg, "mixed_precision", None) is not None else []))
    else:
        offending = []
        check.notes.append("no deepspeed_config_file: ZeRO settings come from the accelerate config")

    # accelerate's own launcher processing and DeepSpeedPlugin checks.
    bf16 = bool(grpo.get("bf16", False))
    try:
        with _quiet():
            _, env, _ = accelerate_launch_env(acc_s, gpus)
    except ValueError as exc:
        check.problems.append(Problem(acc_s, "(launch)", f"accelerate launch refuses it: {first_line(exc)}"))
        return check
    except Exception as exc:  # noqa: BLE001 - private accelerate API changed: say so, go on
        check.notes.append(f"accelerate {version}'s launcher checks could not run here "
                           f"({type(exc).__name__}: {first_line(exc)}); file checks only")
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
            msg = first_line(exc)
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

