"""What a CUDA training run needs beyond Python packages (issue 26, item 4):
a C compiler for TRL's Triton kernels, and the driver library, checked
before the first step (shala.train.toolchain), and each rank's share of
the job's threads (item 7)."""

from __future__ import annotations

import os
import stat

import pytest

from shala.errors import ConfigError
from shala.train.device import threads_per_rank
from shala.train.toolchain import c_compiler, check_toolchain, toolchain_problems

pytestmark = pytest.mark.gpu_first_run


def _exe(folder, name):
    path = folder / name
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_no_compiler_on_a_cuda_machine_is_named_with_its_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing on it
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setenv("TRITON_LIBCUDA_PATH", str(tmp_path))
    (tmp_path / "libcuda.so.1").write_bytes(b"")
    assert c_compiler() is None
    [problem] = toolchain_problems(cuda=True, triton=True)
    assert problem.startswith("no C compiler (gcc or clang) on PATH") and "apt-get install gcc" in problem
    assert "set CC" in problem and "plain-torch" in problem
    # nothing to check without CUDA, or where TRL takes its torch path (no Triton)
    assert toolchain_problems(cuda=False, triton=True) == [] and toolchain_problems(cuda=True, triton=False) == []


def test_a_compiler_from_path_or_cc_satisfies_the_check(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setenv("TRITON_LIBCUDA_PATH", str(tmp_path))
    (tmp_path / "libcuda.so").write_bytes(b"")
    gcc = _exe(bin_dir, "gcc")
    assert c_compiler() == str(gcc) and toolchain_problems(cuda=True, triton=True) == []
    gcc.unlink()
    clang = _exe(bin_dir, "clang")
    assert c_compiler() == str(clang)
    monkeypatch.setenv("CC", "icx")  # CC names one that is not there: Triton would fail on it
    [problem] = toolchain_problems(cuda=True, triton=True)
    assert problem.startswith("CC=icx is not on PATH")


def test_missing_libcuda_is_named(tmp_path, monkeypatch):
    _exe(tmp_path, "gcc")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("TRITON_LIBCUDA_PATH", str(tmp_path / "empty"))
    [problem] = toolchain_problems(cuda=True, triton=True)
    assert problem.startswith("libcuda.so not found") and "TRITON_LIBCUDA_PATH" in problem


def test_training_refuses_before_the_model_loads(tmp_path, monkeypatch):
    import torch

    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    check_toolchain()  # no CUDA: nothing to check
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: object() if name == "triton" else None)
    with pytest.raises(ConfigError, match="no C compiler"):
        check_toolchain()


@pytest.mark.parametrize("ranks, threads, want", [(None, 8, 8), ("1", 8, 8), ("2", 8, 4), ("4", 6, 1),
                                                  ("8", 2, 1), ("2", None, "cores/2")])
def test_each_rank_takes_its_share_of_the_job_threads(monkeypatch, ranks, threads, want):
    if ranks is None:
        monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    else:
        monkeypatch.setenv("LOCAL_WORLD_SIZE", ranks)
    if want == "cores/2":
        want = max(1, len(os.sched_getaffinity(0)) // 2)
    assert threads_per_rank(threads) == want
