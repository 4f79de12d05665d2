"""What a CUDA training run needs from the machine besides Python packages,
checked before the first step rather than met at it.

TRL 1.16 computes GRPO's per-token log-probabilities and entropies with a
fused LM head (``trl/kernels/chunked_logprob.py``) that runs Triton kernels
whenever Triton is installed (it ships with CUDA builds of torch on Linux)
and the tensors are on CUDA. Triton compiles a small C launcher on first
use, with ``$CC`` or else ``gcc`` or ``clang`` from ``PATH``
(``triton/runtime/build.py``), and links it against the driver's
``libcuda.so``, found through ``TRITON_LIBCUDA_PATH``, ``ldconfig -p`` or
``LD_LIBRARY_PATH``. A compute node without a compiler therefore fails at
the first loss of every training job, after the model has loaded.

TRL offers no setting for its plain-torch path: it takes it only where
Triton is not importable (``_TRITON_AVAILABLE``, read once at import). So
the fix is the compiler (``apt-get install gcc``, ``module load gcc``, or
``CC`` naming one), not a shala switch. Without CUDA, or without Triton,
there is nothing to check.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import shutil
import subprocess

from ..errors import ConfigError


def c_compiler() -> str | None:
    """The compiler Triton would use: ``$CC`` when it resolves, else gcc, else clang."""
    cc = os.environ.get("CC")
    if cc:
        return shutil.which(cc)
    return shutil.which("gcc") or shutil.which("clang")


def libcuda_found() -> bool:
    """Whether Triton can find the driver library ``libcuda.so`` (its own search order)."""
    if os.environ.get("TRITON_LIBCUDA_PATH"):
        return bool(glob.glob(os.path.join(os.environ["TRITON_LIBCUDA_PATH"], "libcuda.so*")))
    try:
        listing = subprocess.run(["/sbin/ldconfig", "-p"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        listing = ""
    if "libcuda.so" in listing:
        return True
    dirs = [d for d in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if d]
    return any(glob.glob(os.path.join(d, "libcuda.so*")) for d in dirs)


def toolchain_problems(cuda: bool, triton: bool | None = None) -> list[str]:
    """What TRL's Triton kernels will miss on this machine, one line each
    (empty without CUDA or without Triton, whose absence TRL handles).
    ``triton`` None: whether the package is importable here."""
    if not cuda:
        return []
    if triton is None:
        triton = importlib.util.find_spec("triton") is not None
    if not triton:
        return []
    problems = []
    if c_compiler() is None:
        cc = os.environ.get("CC")
        problems.append(
            ("CC=" + cc + " is not on PATH" if cc else "no C compiler (gcc or clang) on PATH")
            + ": TRL computes GRPO log-probabilities with Triton kernels on CUDA, and Triton compiles its "
            "launcher with one at the first step; install gcc (apt-get install gcc, or module load gcc) or set CC "
            "(TRL 1.16 has no setting for its plain-torch path)")
    if not libcuda_found():
        problems.append("libcuda.so not found (ldconfig -p, LD_LIBRARY_PATH, TRITON_LIBCUDA_PATH): Triton "
                        "links its kernels' launcher against the driver library; set TRITON_LIBCUDA_PATH to "
                        "the folder holding it")
    return problems


def check_toolchain() -> None:
    """Training's own check (preflight prints the same): raise before the model loads."""
    import torch

    problems = toolchain_problems(torch.cuda.is_available())
    if problems:
        raise ConfigError("; ".join(problems))
