"""The GPU check's probe (bench/gpu_check.sh runs it first): which packages
import, the GPU, and so which parts can run. A failed import is recorded
(its error's first line) and the probe goes on, so one missing package
disables only the parts that need it.

Writes OUTDIR/gpu_check_env.json (after each import, so a crash keeps what
came before): Python, each package's version and file or error, the GPU,
the wheels carried (DIR/wheels.json, install failures), every installed
distribution's version (to refresh bench/gpu_machine.txt), and the plan:
each part asked for, run or skipped with its reason. The plan also goes to
--plan as ``part<TAB>run|skip<TAB>kind<TAB>reason`` lines for the shell;
kind is "memory" (the card is too small: expected, not a failure),
"missing" (a package it needs does not import) or "gpu" (no CUDA device).

    python bench/gpu_probe.py OUTDIR [--cpu-smoke] [--parts a,d,bc] [--plan FILE] [--wheels DIR]
        [--wheel-failures FILE] [--force-d]
    python bench/gpu_probe.py OUTDIR --record PART STATUS [--reason TEXT] [--exit N] [--seconds S] [--limit S]

The second form (the shell, after each part) adds the part's outcome to
gpu_check_env.json's "parts"; for a skipped part it also writes
gpu_check_PART.json with the reason, where the part's own JSON would be.
Only the standard library is imported at module level: the probe must run
whatever is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
import warnings
from pathlib import Path

BENCH = Path(__file__).resolve().parent
# in import order (torch first: the others import it); "shala" also imports its config module (jsonschema, yaml)
PACKAGES = ("torch", "numpy", "yaml", "safetensors", "tokenizers", "huggingface_hub", "regex", "transformers",
            "accelerate", "pyarrow", "datasets", "trl", "deepspeed", "jsonschema", "shala")
# what each part imports (bench/gpu_check.py, gpu_check_tiny.py, gpu_check_step.py and the
# `python -m shala train/predict` they launch); (a) --cpu-smoke runs without DeepSpeed
NEEDS = {"a": ("torch", "transformers", "accelerate", "datasets", "trl", "deepspeed", "numpy", "yaml", "shala"),
         "d": ("torch", "transformers", "accelerate", "datasets", "trl", "deepspeed", "yaml", "safetensors", "shala"),
         "bc": ("torch", "transformers")}
SMOKE_NOT_NEEDED = {"a": {"deepspeed"}}
GIB = 2 ** 30


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}".strip()[:300]


def write(path: Path, res: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(res, indent=2) + "\n")
    os.replace(tmp, path)


def version_of(name: str, mod) -> str | None:
    """The installed distribution's version (what pip and wheels.json speak of), else __version__."""
    from importlib.metadata import PackageNotFoundError, packages_distributions, version

    for dist in packages_distributions().get(name, []):
        try:
            return version(dist)
        except PackageNotFoundError:
            pass
    with warnings.catch_warnings():  # jsonschema deprecates its __version__
        warnings.simplefilter("ignore")
        return getattr(mod, "__version__", None)


def probe_import(name: str) -> dict:
    import importlib

    t = time.perf_counter()
    try:
        mod = importlib.import_module(name)
        if name == "shala":
            importlib.import_module("shala.config")
        row = {"ok": True, "version": version_of(name, mod), "file": getattr(mod, "__file__", None)}
    except BaseException as exc:  # noqa: BLE001 - ImportError, a version check's ValueError, SystemExit: go on
        if isinstance(exc, KeyboardInterrupt):
            raise
        row = {"ok": False, "error": first_line(exc),
               "where": traceback.format_exception(exc)[-2].strip().splitlines()[0][:300]}
    row["seconds"] = round(time.perf_counter() - t, 1)
    return row


def distributions() -> dict[str, str]:
    from importlib.metadata import distributions as dists

    out = {}
    for d in dists():
        name = d.metadata.get("Name")
        if name:
            out.setdefault(name.lower(), d.version)  # the first on sys.path wins, as for an import
    return dict(sorted(out.items()))


def cuda_info() -> dict:
    try:
        import torch

        if not torch.cuda.is_available():
            return {"available": False, "torch_cuda": torch.version.cuda}
        p = torch.cuda.get_device_properties(0)
        return {"available": True, "device": p.name, "count": torch.cuda.device_count(),
                "total_memory_gib": round(p.total_memory / GIB, 1), "capability": f"{p.major}.{p.minor}",
                "torch_cuda": torch.version.cuda}
    except Exception as exc:  # noqa: BLE001
        return {"available": False, "error": first_line(exc)}


def plan_parts(res: dict, parts: list[str], smoke: bool, force_d: bool) -> dict:
    plan = {}
    pk, cuda = res["packages"], res["cuda"]
    for part in parts:
        needs = [n for n in NEEDS.get(part, ()) if not (smoke and n in SMOKE_NOT_NEEDED.get(part, ()))]
        broken = [n for n in needs if not pk.get(n, {}).get("ok")]
        row: dict = {"needs": needs, "run": True}
        if broken:
            row.update(run=False, kind="missing", reason="missing: " + "; ".join(
                f"{n} does not import ({pk.get(n, {}).get('error', 'not probed')})" for n in broken))
        elif not smoke and not cuda.get("available"):
            row.update(run=False, kind="gpu", reason=f"gpu: no CUDA device ({cuda.get('error', 'torch sees none')})")
        elif part == "d" and not smoke:
            # before the 17.9 GB checkpoint is built: the full-size thinker under ZeRO-3 on this one GPU
            sys.path.insert(0, str(BENCH))
            from gpu_check_step import memory_gate

            fits, row["memory"] = memory_gate(cuda["total_memory_gib"], "torch.cuda.get_device_properties(0)")
            if not fits and not force_d:
                row.update(run=False, kind="memory", reason=row["memory"]["reason"])
        plan[part] = row
    return plan


def probe(a) -> int:
    out = Path(a.outdir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "gpu_check_env.json"
    res: dict = {"mode": "cpu-smoke" if a.cpu_smoke else "gpu", "python": platform.python_version(),
                 "executable": sys.executable, "platform": platform.platform(),
                 "pythonpath": os.environ.get("PYTHONPATH", ""), "wheels": None, "packages": {}}
    if a.wheels and (Path(a.wheels) / "wheels.json").exists():
        w = json.loads((Path(a.wheels) / "wheels.json").read_text())
        res["wheels"] = {"dir": a.wheels, "carried": [f"{r['name']}=={r['version']}" for r in w["wheels"]],
                         "unverified": w.get("unverified"), "total_bytes": w.get("total_bytes")}
    if a.wheel_failures and Path(a.wheel_failures).exists():
        res["wheels"] = {**(res["wheels"] or {}), "install_failed": Path(a.wheel_failures).read_text().splitlines()}
    write(path, res)
    for name in PACKAGES:
        row = res["packages"][name] = probe_import(name)
        print(f"probe: {name:16s} " + (f"{row['version']}  {row['file']}" if row["ok"] else f"FAILED {row['error']}"),
              flush=True)
        write(path, res)
    res["cuda"] = cuda_info()
    print(f"probe: cuda {res['cuda']}", flush=True)
    res["distributions"] = distributions()
    parts = [p for p in a.parts.split(",") if p]
    try:
        res["plan"] = plan_parts(res, parts, a.cpu_smoke, a.force_d)
    except Exception as exc:  # noqa: BLE001 - no plan: the shell runs every part asked for
        res["plan_error"] = first_line(exc)
        write(path, res)
        raise
    write(path, res)
    lines = []
    for part, row in res["plan"].items():
        lines.append("\t".join([part, "run" if row["run"] else "skip", row.get("kind", ""),
                                row.get("reason", "").replace("\t", " ").replace("\n", " ")]))
        print(f"probe: part ({part}) " + ("runs" if row["run"] else f"skipped: {row['reason']}"), flush=True)
    if a.plan:
        Path(a.plan).write_text("\n".join(lines) + "\n")
    return 0


def record(a) -> int:
    """A part's outcome (the shell, after it): gpu_check_env.json's "parts"; a skip's own JSON."""
    out = Path(a.outdir)
    path = out / "gpu_check_env.json"
    res = json.loads(path.read_text()) if path.exists() else {}
    part, status = a.record
    row = {"status": status, "exit": a.exit, "seconds": a.seconds, "limit_s": a.limit, "reason": a.reason or None}
    res.setdefault("parts", {})[part] = {k: v for k, v in row.items() if v is not None}
    write(path, res)
    if status == "skipped":
        write(out / f"gpu_check_{part}.json", {"part": part, "ok": None, "skipped": a.reason})
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("outdir")
    ap.add_argument("--cpu-smoke", action="store_true")
    ap.add_argument("--parts", default="a,d,bc")
    ap.add_argument("--plan", help="write the plan here, a line a part")
    ap.add_argument("--wheels", help="the wheel folder (its wheels.json is recorded)")
    ap.add_argument("--wheel-failures", help="a file of wheels that did not install, a line each")
    ap.add_argument("--force-d", action="store_true", help="plan (d) whatever the memory estimate says")
    ap.add_argument("--record", nargs=2, metavar=("PART", "STATUS"))
    ap.add_argument("--reason")
    ap.add_argument("--exit", type=int)
    ap.add_argument("--seconds", type=int)
    ap.add_argument("--limit", type=int)
    a = ap.parse_args()
    return record(a) if a.record else probe(a)


if __name__ == "__main__":
    sys.exit(main())
