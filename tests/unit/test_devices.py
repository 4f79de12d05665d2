"""``shala gpus`` (shala.launch.devices) on simulated devices: jobs running at
once get disjoint GPUs, and a job frees its own however it ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from filelock import FileLock

from shala.errors import ShalaError
from shala.launch.devices import default_lock_dir, device_pool, lock_path
from shala.launch.launcher import on_own_gpus

pytestmark = pytest.mark.gpu_first_run

# the job: writes "<pid> <CUDA_VISIBLE_DEVICES> [<pid of a process it leaves behind>]" to argv[1],
# waits for argv[2] to exist (a minute at most: a failed test leaves nothing running), exits argv[3]
CHILD = """import os, subprocess, sys, time
out, go, rc = sys.argv[1:4]
left = [str(subprocess.Popen(["sleep", "60"]).pid)] if sys.argv[4:] == ["straggler"] else []
with open(out + ".tmp", "w") as f:
    f.write(" ".join([str(os.getpid()), os.environ.get("CUDA_VISIBLE_DEVICES", "unset"), *left]))
os.replace(out + ".tmp", out)
end = time.time() + 60
while not os.path.exists(go) and time.time() < end:
    time.sleep(0.02)
sys.exit(int(rc))
"""


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_") and k != "CUDA_VISIBLE_DEVICES"}
    return {**env, "SHALA_GPU_COUNT": "4", **extra}


def _wrap(tmp_path: Path, count: int, name: str, *, rc: int = 0, wait: float | None = None,
          env: dict | None = None, straggler: bool = False) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "shala", "gpus", "--count", str(count), "--lock-dir", str(tmp_path / "locks")]
    if wait is not None:
        cmd += ["--wait", str(wait)]
    cmd += ["--", sys.executable, "-c", CHILD, str(tmp_path / f"{name}.out"), str(tmp_path / f"{name}.go"), str(rc)]
    cmd += ["straggler"] if straggler else []
    return subprocess.Popen(cmd, env=env or _env(), stderr=subprocess.PIPE, text=True)


def _started(tmp_path: Path, name: str, proc: subprocess.Popen, timeout: float = 20) -> tuple[int, str]:
    """The job's pid and devices, once it runs."""
    out = tmp_path / f"{name}.out"
    deadline = time.monotonic() + timeout
    while not out.exists():
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, f"{name} did not start"
        time.sleep(0.02)
    pid, devices, *_ = out.read_text().split()
    return int(pid), devices


def _finish(tmp_path: Path, name: str, proc: subprocess.Popen) -> tuple[int, str]:
    (tmp_path / f"{name}.go").touch()
    _, err = proc.communicate(timeout=20)
    return proc.returncode, err


def _all_free(tmp_path: Path) -> None:
    """A new job gets all 4 devices at once (wait at most 5 s)."""
    proc = _wrap(tmp_path, 4, "next", wait=5)
    assert _started(tmp_path, "next", proc, timeout=10)[1] == "0,1,2,3"
    assert _finish(tmp_path, "next", proc)[0] == 0


def _gone(pid: int, timeout: float = 10) -> bool:
    """The process ended (an orphan's zombie counts: nothing may reap it here)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return True
            os.kill(pid, 0)
        except (ProcessLookupError, FileNotFoundError):
            return True
        except OSError:  # no /proc: the signal probe alone
            pass
        time.sleep(0.02)
    return False


def test_jobs_at_once_get_disjoint_devices(tmp_path):
    a, b = _wrap(tmp_path, 2, "a"), _wrap(tmp_path, 2, "b")
    got_a, got_b = _started(tmp_path, "a", a)[1], _started(tmp_path, "b", b)[1]
    assert len(set(got_a.split(","))) == len(set(got_b.split(","))) == 2
    assert not set(got_a.split(",")) & set(got_b.split(","))
    for name, proc, got in (("a", a, got_a), ("b", b, got_b)):
        rc, err = _finish(tmp_path, name, proc)
        assert rc == 0 and f"holds GPUs {got} of 0,1,2,3 (SHALA_GPU_COUNT=4" in err


def test_sigkilled_wrapper_frees_its_devices_and_stops_its_job(tmp_path):
    job = _wrap(tmp_path, 4, "job")
    child, _ = _started(tmp_path, "job", job)
    job.kill()
    job.wait()
    _all_free(tmp_path)  # the kernel dropped the wrapper's flocks
    if sys.platform.startswith("linux"):
        assert _gone(child), "the job outlived its wrapper (PR_SET_PDEATHSIG)"


def test_sigkilled_job_frees_its_devices_and_leaves_nothing_behind(tmp_path):
    job = _wrap(tmp_path, 4, "job", straggler=True)
    _started(tmp_path, "job", job)
    child, _, left = map(str, (tmp_path / "job.out").read_text().split())
    os.kill(int(child), signal.SIGKILL)  # a launcher killed: its ranks would go on using the GPUs
    assert job.wait(timeout=20) == 128 + signal.SIGKILL
    assert _gone(int(left)), "a process the job left behind still runs"
    _all_free(tmp_path)


def test_failing_job_frees_its_devices_and_passes_its_status(tmp_path):
    job = _wrap(tmp_path, 2, "job", rc=3)
    _started(tmp_path, "job", job)
    assert _finish(tmp_path, "job", job)[0] == 3
    _all_free(tmp_path)


def test_sigterm_reaches_the_job(tmp_path):
    """Snakemake's and a terminal's cancel: the job stops, its devices free."""
    job = _wrap(tmp_path, 2, "job")
    child, _ = _started(tmp_path, "job", job)
    job.send_signal(signal.SIGTERM)
    assert job.wait(timeout=20) == 128 + signal.SIGTERM
    assert _gone(child)
    _all_free(tmp_path)


def test_busy_devices_wait_or_time_out(tmp_path):
    (tmp_path / "locks").mkdir()
    held = [FileLock(lock_path(tmp_path / "locks", d)) for d in "012"]
    for lock in held:
        lock.acquire()
    late = _wrap(tmp_path, 2, "late", wait=0.3)
    _, err = late.communicate(timeout=20)
    assert late.returncode == 2 and err.strip().splitlines()[-1].startswith(
        "shala gpus: error: no 2 free GPUs of 0,1,2,3 within 0.3 s")
    one = _wrap(tmp_path, 1, "one")
    assert _started(tmp_path, "one", one)[1] == "3"
    assert _finish(tmp_path, "one", one)[0] == 0
    waiting = _wrap(tmp_path, 2, "waiting", wait=20)
    assert waiting.stderr.readline().startswith("shala gpus: waiting for 2 free GPUs of 0,1,2,3")
    held[0].release()
    assert _started(tmp_path, "waiting", waiting)[1] == "0,3"
    assert _finish(tmp_path, "waiting", waiting)[0] == 0
    for lock in held[1:]:
        lock.release()


def test_slurm_assignment_is_kept(tmp_path):
    (tmp_path / "locks").mkdir()
    held = [FileLock(lock_path(tmp_path / "locks", str(d))) for d in range(4)]
    for lock in held:
        lock.acquire()  # every local device busy: the SLURM job must not care
    job = _wrap(tmp_path, 2, "job", wait=0, env=_env(SLURM_JOB_ID="42", CUDA_VISIBLE_DEVICES="5,7"))
    pid, got = _started(tmp_path, "job", job)
    assert (pid, got) == (job.pid, "5,7")  # the command took the wrapper's place, devices untouched
    rc, err = _finish(tmp_path, "job", job)
    assert rc == 0 and "SLURM job 42 keeps the scheduler's devices (CUDA_VISIBLE_DEVICES=5,7)" in err
    for lock in held:
        lock.release()
    # a local run inside one allocation: its jobs share the allocation's devices
    local = _env(SLURM_JOB_ID="42", CUDA_VISIBLE_DEVICES="5,7", SHALA_GPU_LOCAL="1")
    a, b = _wrap(tmp_path, 1, "a", env=local), _wrap(tmp_path, 1, "b", env=local)
    assert {_started(tmp_path, "a", a)[1], _started(tmp_path, "b", b)[1]} == {"5", "7"}
    assert _finish(tmp_path, "a", a)[0] == _finish(tmp_path, "b", b)[0] == 0


def test_more_devices_than_exist_is_one_line(tmp_path):
    job = _wrap(tmp_path, 5, "job")
    _, err = job.communicate(timeout=20)
    assert job.returncode == 2
    assert err.strip() == ("shala gpus: error: this job needs 5 GPUs (config training.gpus; a prediction job "
                           "needs 1) but this machine has 4 (SHALA_GPU_COUNT=4): set training.gpus to at most 4")


def test_user_visible_devices_are_the_pool(tmp_path):
    job = _wrap(tmp_path, 2, "job", env=_env(CUDA_VISIBLE_DEVICES="2,3"))
    assert _started(tmp_path, "job", job)[1] == "2,3"
    assert _finish(tmp_path, "job", job)[0] == 0
    job = _wrap(tmp_path, 3, "three", env=_env(CUDA_VISIBLE_DEVICES="2,3"))
    _, err = job.communicate(timeout=20)
    assert job.returncode == 2 and "this machine has 2 (CUDA_VISIBLE_DEVICES=2,3)" in err


def test_no_gpus_asked_runs_the_command_as_is(tmp_path):
    job = _wrap(tmp_path, 0, "job")
    assert _started(tmp_path, "job", job) == (job.pid, "unset")
    rc, err = _finish(tmp_path, "job", job)
    assert rc == 0 and err == "" and not (tmp_path / "locks").exists()


def test_device_pool():
    assert device_pool({"SHALA_GPU_COUNT": "3"}) == (["0", "1", "2"], "SHALA_GPU_COUNT=3")
    assert device_pool({"CUDA_VISIBLE_DEVICES": "1,-1,2", "SHALA_GPU_COUNT": "3"})[0] == ["1"]
    assert device_pool({"CUDA_VISIBLE_DEVICES": ""})[0] == []
    with pytest.raises(ShalaError, match="SHALA_GPU_COUNT='two'"):
        device_pool({"SHALA_GPU_COUNT": "two"})


def test_lock_dir_is_per_user_and_per_allocation(tmp_path):
    assert default_lock_dir({}).name == f"shala-gpus-{os.getuid()}"
    assert default_lock_dir({"SLURM_JOB_ID": "9"}).name == f"shala-gpus-{os.getuid()}-slurm9"
    assert default_lock_dir({"SHALA_GPU_LOCK_DIR": str(tmp_path)}) == tmp_path


def test_training_prefix_runs_preflight_and_launcher_on_the_same_devices(tmp_path):
    """The rules' command shape: `(<preflight param> <launcher> train ...) > log 2>&1`."""
    assert on_own_gpus(0) == "" and on_own_gpus(0, first="true") == ""
    show = f"{sys.executable} -c 'import os; print(\"{{}}\", os.environ[\"CUDA_VISIBLE_DEVICES\"])'"
    env = _env(PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               SHALA_GPU_LOCK_DIR=str(tmp_path / "locks"))
    for check, rc in (("(exit 0)", 0), ("(exit 3)", 3)):  # preflight passes, or finds no fit
        prefix = on_own_gpus(2, first=f"{show.format('check')} && {check}").rstrip()
        log = tmp_path / f"{rc}.log"
        cmd = f"({prefix} {show.format('main')}) > {log} 2>&1"
        assert subprocess.run(["bash", "-c", cmd], env=env, timeout=60).returncode == rc
        lines = log.read_text().splitlines()
        assert lines[0].startswith("shala gpus: process ") and " holds GPUs 0,1 of 0,1,2,3 " in lines[0]
        assert lines[1:] == (["check 0,1", "main 0,1"] if rc == 0 else ["check 0,1"])
