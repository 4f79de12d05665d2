"""``shala gpus``: run one GPU job on devices of its own (docs/design.md §8).

Snakemake counts the ``gpu`` resource of a local run but assigns no device
(snakemake/snakemake#281), so without this every prediction job would use
``cuda:0`` and two 2-GPU training jobs would both start on GPUs 0 and 1::

    shala gpus --count N [--lock-dir DIR] [--wait S] -- CMD ARGS...

holds N devices of this machine for as long as CMD runs, sets
``CUDA_VISIBLE_DEVICES`` to them, runs CMD, releases them when CMD ends
(whatever its exit) and exits with CMD's status (128 + signal when a signal
ended it). With N = 0, or inside a SLURM job (``SLURM_JOB_ID``: the
scheduler assigned the devices; ``SHALA_GPU_LOCAL=1`` for a local run inside
one allocation), CMD runs as it is.

A device is held by an exclusive lock on ``<lock dir>/<host>-gpu<id>.lock``
(:class:`filelock.UnixFileLock`, ``flock(2)``): the kernel drops a flock when
its holder dies, so a job killed even by SIGKILL frees its devices, and no
stale lock file ever needs cleaning. The wrapper holds the locks itself (its
descriptors are not inherited) and runs CMD as a process group of its own:
it passes SIGTERM, SIGINT and SIGHUP on to the group, ends what CMD leaves
behind (a killed launcher's ranks) before letting the devices go, and on
Linux has CMD sent SIGTERM should the wrapper die first
(``PR_SET_PDEATHSIG``), so a job does not run on devices it no longer holds.

The pool: a ``CUDA_VISIBLE_DEVICES`` set outside SLURM (the user restricted
the run to those ids), else ``SHALA_GPU_COUNT`` (simulated devices: the tests,
a CPU rehearsal), else ``nvidia-smi -L``, else ``torch.cuda.device_count()``.
The lock dir must be shared by every job of one machine and local to it
(flock on network filesystems is not dependable, and two machines' GPU 0 are
different devices): ``--lock-dir``, else ``SHALA_GPU_LOCK_DIR``, else
``shala-gpus-<uid>`` in the system temp dir, one per user because filelock
refuses lock files another account owns in a shared sticky directory.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from filelock import FileLock, Timeout

from ..errors import ShalaError

#: signals the wrapper passes on to the job (Snakemake's and a terminal's cancel)
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
POLL_S = 0.5


def scheduler_assigned(env: dict[str, str]) -> bool:
    """Inside a SLURM job (the workflow's SLURM executor makes one per job)
    the scheduler has given the job its devices (``CUDA_VISIBLE_DEVICES``
    from its GRES), and nothing else runs on them. ``SHALA_GPU_LOCAL=1``
    says otherwise: a local run inside one allocation (``sbatch --wrap
    'snakemake ...'``), whose jobs share the allocation's devices."""
    return bool(env.get("SLURM_JOB_ID")) and env.get("SHALA_GPU_LOCAL") != "1"


def device_pool(env: dict[str, str]) -> tuple[list[str], str]:
    """The device ids jobs on this machine share, and where they came from
    (for messages)."""
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = [d.strip() for d in visible.split(",") if d.strip()]
        # CUDA stops at the first invalid id: "-1" (or "") hides every device
        ids = ids[:next((i for i, d in enumerate(ids) if d.startswith("-")), len(ids))]
        return ids, f"CUDA_VISIBLE_DEVICES={visible}"
    if env.get("SHALA_GPU_COUNT"):
        try:
            n = int(env["SHALA_GPU_COUNT"])
        except ValueError:
            raise ShalaError(f"SHALA_GPU_COUNT={env['SHALA_GPU_COUNT']!r} is not a whole number") from None
        return [str(i) for i in range(max(n, 0))], f"SHALA_GPU_COUNT={n}"
    n = _nvidia_smi_count()
    if n is not None:
        return [str(i) for i in range(n)], "nvidia-smi -L"
    return [str(i) for i in range(_torch_count())], "torch.cuda.device_count()"


def _nvidia_smi_count() -> int | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    return sum(line.startswith("GPU ") for line in out.stdout.splitlines())


def _torch_count() -> int:
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count()


def default_lock_dir(env: dict[str, str]) -> Path:
    """Per user; per allocation inside SLURM, where two allocations on one
    node may both call their different devices 0."""
    slurm = f"-slurm{env['SLURM_JOB_ID']}" if env.get("SLURM_JOB_ID") else ""
    return Path(env.get("SHALA_GPU_LOCK_DIR") or Path(tempfile.gettempdir()) / f"shala-gpus-{os.getuid()}{slurm}")


def lock_path(lock_dir: Path, device: str) -> Path:
    """One lock file per device; the host in its name keeps a lock dir on a
    filesystem several machines share from making their devices contend."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", device)
    return lock_dir / f"{socket.gethostname()}-gpu{safe}.lock"


def acquire(pool: list[str], count: int, lock_dir: Path, wait: float | None) -> list[tuple[str, FileLock]]:
    """Lock ``count`` devices of ``pool``: each attempt tries every device
    without blocking and keeps the first ``count`` it gets; short of that it
    lets go of all of them (holding some while waiting for more could
    deadlock two jobs) and tries again every half second, for at most
    ``wait`` seconds (None: until devices come free)."""
    try:
        lock_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise ShalaError(f"cannot make the GPU lock dir {lock_dir}: {exc.strerror}") from None
    deadline = None if wait is None else time.monotonic() + wait
    told = False
    while True:
        held: list[tuple[str, FileLock]] = []
        try:
            for dev in pool:
                # no soft-lock fallback: only a flock is released by the kernel when its holder dies
                lock = FileLock(lock_path(lock_dir, dev), fallback_to_soft=False)
                try:
                    lock.acquire(blocking=False)
                except Timeout:
                    continue
                except OSError as exc:  # not ours, or a filesystem without flock
                    raise ShalaError(f"cannot lock {lock.lock_file}: {exc} (set --lock-dir or "
                                     "SHALA_GPU_LOCK_DIR to a local directory of your own)") from None
                held.append((dev, lock))
                if len(held) == count:
                    return held
        finally:
            if len(held) < count:
                release(held)
        if deadline is not None and time.monotonic() >= deadline:
            raise ShalaError(f"no {count} free GPUs of {','.join(pool)} within {wait:g} s: other jobs hold them "
                             f"(locks in {lock_dir})")
        if not told:
            print(f"shala gpus: waiting for {count} free GPUs of {','.join(pool)} (locks in {lock_dir})",
                  file=sys.stderr, flush=True)
            told = True
        time.sleep(POLL_S)


def release(held: list[tuple[str, FileLock]]) -> None:
    for _, lock in held:
        lock.release()


def _die_with_parent(parent: int):
    """A preexec_fn: the job gets SIGTERM when the wrapper dies (Linux), so
    it stops rather than run on devices the wrapper no longer holds; SIGTERM
    lets ``accelerate launch`` stop its ranks."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1

    def preexec() -> None:
        libc.prctl(pr_set_pdeathsig, int(signal.SIGTERM))
        if os.getppid() != parent:  # the wrapper died before prctl took effect
            os._exit(128 + signal.SIGTERM)

    return preexec


def run_child(cmd: list[str], env: dict[str, str]) -> int:
    """Run ``cmd`` as a process group of its own, pass the signals that cancel
    a job on to the whole group (each of its processes gets one, as from a
    terminal), and once ``cmd`` has ended, end what it left behind (a killed
    launcher's ranks) before its devices are let go. Its exit status,
    shell-style (128 + N when signal N ended it)."""
    try:
        # stdin: a background process group reading the terminal would stop
        proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, process_group=0,
                                preexec_fn=_die_with_parent(os.getpid()))
    except OSError as exc:
        raise ShalaError(f"cannot run {cmd[0]}: {exc.strerror}") from None

    def to_group(signum, _frame=None):
        try:
            os.killpg(proc.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass

    previous = {sig: signal.signal(sig, to_group) for sig in FORWARDED}
    try:
        rc = proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    to_group(signal.SIGKILL)
    return 128 - rc if rc < 0 else rc


def _replace_with(cmd: list[str], env: dict[str, str]) -> None:
    """Nothing to hold: CMD takes this process's place (same pid, same signals)."""
    try:
        os.execvpe(cmd[0], cmd, env)
    except OSError as exc:
        raise ShalaError(f"cannot run {cmd[0]}: {exc.strerror}") from None


def run_on_gpus(count: int, cmd: list[str], lock_dir: str | Path | None = None, wait: float | None = None,
                env: dict[str, str] | None = None) -> int:
    """``shala gpus``: run ``cmd`` on ``count`` devices of its own (module
    docstring); returns its exit status, or does not return (CMD replaces
    this process) when there is nothing to assign."""
    if not cmd:
        raise ShalaError("no command given (shala gpus --count N -- CMD ARGS...)")
    env = dict(os.environ if env is None else env)
    if count <= 0:
        _replace_with(cmd, env)
    if scheduler_assigned(env):
        print(f"shala gpus: SLURM job {env['SLURM_JOB_ID']} keeps the scheduler's devices "
              f"(CUDA_VISIBLE_DEVICES={env.get('CUDA_VISIBLE_DEVICES', 'unset')})", file=sys.stderr, flush=True)
        _replace_with(cmd, env)
    pool, source = device_pool(env)
    if count > len(pool):
        fix = (f"set training.gpus to at most {len(pool)}" if pool else
               "set training.gpus to 0 to run on the CPU (SHALA_GPU_COUNT=N simulates N devices)")
        raise ShalaError(f"this job needs {count} GPU{'s' * (count > 1)} (config training.gpus; a prediction job "
                         f"needs 1) but this machine has {len(pool)} ({source}): {fix}")
    lock_dir = Path(lock_dir) if lock_dir else default_lock_dir(env)
    held = acquire(pool, count, lock_dir, wait)
    try:
        devices = ",".join(dev for dev, _ in held)
        env["CUDA_VISIBLE_DEVICES"] = devices
        print(f"shala gpus: process {os.getpid()} holds GPUs {devices} of {','.join(pool)} ({source}; "
              f"locks in {lock_dir})", file=sys.stderr, flush=True)
        return run_child(cmd, env)
    finally:
        release(held)


# ------------------------------------------------------------- the commands

def cmd_free_port(a) -> None:
    """Print a TCP port free on this host (the kernel picks it), for one
    launch's rendezvous: two launches at once then do not collide on
    accelerate's default port 29500."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        print(sock.getsockname()[1])


def cmd_gpus(a) -> None:
    """Run a command on GPUs of its own: a local run's GPU jobs then never
    share devices; exits with the command's status."""
    cmd = a.cmd[1:] if a.cmd[:1] == ["--"] else a.cmd
    try:
        rc = run_on_gpus(a.count, cmd, lock_dir=a.lock_dir, wait=a.wait)
    except KeyboardInterrupt:  # interrupted while waiting for devices
        rc = 128 + 2
    sys.exit(rc)


def add_device_commands(command) -> None:
    """Register gpus and free-port on the CLI's subparsers (``command(name, help)``)."""
    import argparse

    s = command("gpus", help="run CMD on GPUs of its own, held while it runs (CUDA_VISIBLE_DEVICES; "
                             "inside a SLURM job CMD keeps the scheduler's)")
    s.add_argument("--count", type=int, required=True, metavar="N", help="GPUs the command needs (0: run it as is)")
    s.add_argument("--lock-dir", metavar="DIR",
                   help="where the per-GPU locks live, shared by every job of this machine "
                        "(default: $SHALA_GPU_LOCK_DIR, else shala-gpus-<uid>[-slurm<job id>] in the temp dir)")
    s.add_argument("--wait", type=float, metavar="S",
                   help="give up (exit 2) after S seconds without N free GPUs (default: wait until they are)")
    s.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD ...", help="the command and its arguments")
    s.set_defaults(func=cmd_gpus)

    s = command("free-port", help="print a free TCP port (each training launch's rendezvous port)")
    s.set_defaults(func=cmd_free_port)
