"""The command prefixes a model job is launched with, for the workflow's
rules and the tests that run what the rules run.

One place so that the ZeRO-3 test executes exactly the launch a user's
``snakemake`` job does: ``accelerate launch`` with the repository's ZeRO-3
config over ``training.gpus`` ranks, each launch on a rendezvous port of its
own, or the plain CLI for a single-device run.
"""

from __future__ import annotations

import shlex
from typing import Any


def launcher_command(training: dict[str, Any], ranks: int | None = None) -> str:
    """A shell prefix to which ``train ...`` / ``sft ...`` arguments are added.

    ``ranks`` (default ``training.gpus``) is the number of processes; with
    more than one and an ``accelerate_config``, the job runs under
    ``accelerate launch``. ``$(shala free-port)`` gives each launch its own
    rendezvous port, so two jobs on one node do not both take accelerate's
    default 29500. On a machine without CUDA the same launch runs on CPU
    ranks (:func:`shala.train.device.adapt_to_device` picks gloo and DeepSpeed's
    CPU accelerator).
    """
    n = int(training["gpus"] if ranks is None else ranks)
    acc = training["accelerate_config"]
    if n > 1 and acc:
        return (f"accelerate launch --config_file {shlex.quote(str(acc))} --num_processes {n}"
                " --main_process_port $(shala free-port) -m shala")
    return "shala"


def on_own_gpus(count: int, first: str | None = None) -> str:
    """A shell prefix that runs the words after it on ``count`` GPUs of their
    own (``shala gpus``, :mod:`shala.launch.devices`); "" when ``count`` is 0,
    so a CPU job's command stays as it was.

    ``first``, a shell command (training's ``shala preflight``), runs on the
    same GPUs before the words, which run only when it succeeds. The words
    stay words of the rule's shell, never requoted, so the rule's command
    needs no quoting; only ``first`` is quoted, as the script of ``bash -c``,
    which then ``exec``s the words in its place.
    """
    if count <= 0:
        return ""
    prefix = f"shala gpus --count {count} -- "
    if first is None:
        return prefix
    script = first + ' && exec "$@"'
    return f"{prefix}bash -c {shlex.quote(script)} job "


def cluster_resources(cluster: dict[str, Any], role: str, gpu: int = 0) -> dict[str, Any]:
    """Snakemake resources of the jobs of one role, from config ``cluster``:
    memory and time, the partition (``gpu_partition`` when the job takes
    GPUs) and the account. The SLURM executor maps them to sbatch --mem,
    -t, -p, -A, and the ``gpu`` resource to --gpus; a local run constrains
    only ``gpu``."""
    job = cluster["jobs"][role]
    part = "gpu_partition" if gpu else "cpu_partition"
    res = {"gpu": gpu, "mem_mb": job["mem_mb"], "runtime": job["runtime"], "slurm_partition": cluster[part]}
    if cluster["account"]:
        res["slurm_account"] = cluster["account"]
    return res
