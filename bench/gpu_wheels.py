"""The wheels a bare GPU machine (no network) needs for bench/gpu_check.sh,
chosen by pip's resolver from the project's pins; run it where PyPI is
reachable (bench/gpu_wheels.sh is its front).

1. deepspeed is a source distribution on PyPI: its wheel is built here
   (``pip wheel --no-deps``; no ops compiled ahead, DeepSpeed JIT-builds
   what it needs on the GPU machine) into a find-links folder.
2. pip's resolver (``pip install --dry-run --ignore-installed --report``,
   binary wheels only, for the target CPython on x86-64 Linux) resolves
   pyproject.toml's dependencies (less snakemake: the check runs no
   workflow) and its ``model`` and ``gpu`` extras, less torch: the machine's
   CUDA build stands in for the pin and constrains the resolution.
3. What to carry, from that resolution: starting at those requirements, a
   package is carried where the machine (--machine, bench/gpu_machine.txt)
   lacks it or its version there fails a requirement of the project or of a
   carried package, whose own requirements are then followed. Never carried:
   torch, triton, nvidia-*, cuda-* (the machine's CUDA stack, GBs). Where the
   machine has a package at a version not known here, it is carried when the
   project pins it (==), or when a requirement bounds it and its wheel is at
   most --unknown-max-mb (transformers checks regex's version at import);
   a larger one (pyarrow, pandas, scipy) is assumed to fit and listed as
   unverified: gpu_check.sh's probe records the version the machine has.
4. ``pip download --no-deps`` of each; DIR's old wheels go first (two
   versions of one package stop the install). Prints each wheel, the
   unverified assumptions and the total size, and writes DIR/wheels.json.

shala itself is not carried: gpu_check.sh puts the tree's src/ on PYTHONPATH.

    python bench/gpu_wheels.py DIR [--python-version 3.12] [--machine bench/gpu_machine.txt]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
NEVER = re.compile(r"^(torch|triton|nvidia-.*|cuda-.*)$")  # the machine's CUDA stack
NOT_NEEDED = {"snakemake"}  # the workflow engine: the check runs `python -m shala` only


def platforms(glibc: str) -> list[str]:
    """Every manylinux tag a machine with this glibc takes (pip matches tags exactly)."""
    top = int(glibc.split(".")[1])
    tags = [f"manylinux_2_{n}_x86_64" for n in range(top, 4, -1)]
    return tags + ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64", "linux_x86_64"]


def target_flags(py: str, glibc: str) -> list[str]:
    flags = ["--only-binary=:all:", "--python-version", py, "--implementation", "cp", "--abi",
             "cp" + py.replace(".", "")]
    for tag in platforms(glibc):
        flags += ["--platform", tag]
    return flags


def machine_packages(path: Path) -> dict[str, Version | None]:
    """name -> version (None: there, version unknown) from lines ``name`` or ``name==version``."""
    out: dict[str, Version | None] = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, ver = line.partition("==")
            out[canonicalize_name(name)] = Version(ver) if ver else None
    return out


def project_requirements() -> list[Requirement]:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in meta["dependencies"] + meta["optional-dependencies"]["model"]
            + meta["optional-dependencies"]["gpu"]]
    return [r for r in reqs if canonicalize_name(r.name) not in NOT_NEEDED]


def marker_env(py: str) -> dict[str, str]:
    return {"python_version": py, "python_full_version": py + ".0", "sys_platform": "linux",
            "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
            "implementation_name": "cpython", "platform_python_implementation": "CPython"}


def applies(req: Requirement, env: dict, extras: set[str]) -> bool:
    if req.marker is None:
        return True
    return any(req.marker.evaluate({**env, "extra": e}) for e in extras | {""})


def binding(spec: SpecifierSet) -> bool:
    """A specifier that can reject a released version (not only `!=` exclusions of old pre-releases)."""
    return any(s.operator != "!=" for s in spec)


def choose(root: list[Requirement], resolved: dict, machine: dict, env: dict, too_big: set[str]):
    """(carried names -> why, unverified requirements): module doc, step 3. Iterated to a fixed point
    because a package carried later can add a requirement (or an extra) an earlier decision missed."""
    carry: dict[str, str] = {}
    extras: dict[str, set[str]] = {}
    root = [r for r in root if applies(r, env, set())]
    while True:
        reqs: list[tuple[Requirement, str]] = [(r, "project") for r in root]
        for name in carry:
            deps = [Requirement(d) for d in resolved[name]["metadata"].get("requires_dist") or []]
            reqs += [(r, name) for r in deps if applies(r, env, extras.get(name, set()))]
        on: dict[str, list[tuple[Requirement, str]]] = {}
        for r, by in reqs:
            on.setdefault(canonicalize_name(r.name), []).append((r, by))
        new_extras = {n: {e for r, _ in rs for e in r.extras} for n, rs in on.items()}
        unverified: list[str] = []
        new = dict(carry)
        for name, rs in on.items():
            if NEVER.match(name) or name in new:
                continue
            if name not in resolved:
                raise SystemExit(f"gpu_wheels: {name} is required ({rs[0][1]}) but not in pip's resolution")
            have = machine.get(name, False)
            specs = [(r.specifier, by) for r, by in rs]
            if have is False:
                new[name] = f"not on the machine (needed by {rs[0][1]})"
            elif have is not None:
                bad = [f"{by}: {spec}" for spec, by in specs if not spec.contains(have, prereleases=True)]
                if bad:
                    new[name] = f"machine has {have}; {', '.join(bad)}"
            elif any(sp.operator in ("==", "===") for spec, by in specs if by == "project" for sp in spec):
                new[name] = "pinned by the project; machine's version unknown"
            elif any(binding(spec) for spec, _ in specs):
                bounds = [f"{by}: {spec}" for spec, by in specs if binding(spec)]
                if name in too_big:
                    unverified += [f"{name}{spec} ({by})" for spec, by in specs if binding(spec)]
                else:
                    new[name] = f"bounded ({', '.join(bounds)}); machine's version unknown"
        if new == carry and new_extras == extras:
            return carry, sorted(set(unverified))
        carry, extras = new, new_extras


def pip(py: str, *args: str) -> None:
    cmd = [py, "-m", "pip", *args]
    r = subprocess.run(cmd, text=True, capture_output=True)
    if r.returncode:
        noise = "is ignored: it is neither a file nor a directory"  # a pip.conf's absent extra index
        err = "\n".join(x for x in (r.stdout + r.stderr).splitlines() if noise not in x)
        raise SystemExit(f"gpu_wheels: pip failed ({r.returncode}): {' '.join(cmd)}\n{err[-3000:]}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir")
    ap.add_argument("--python-version", default="3.12", help="the GPU machine's Python (KINDS.md: 3.12.3)")
    ap.add_argument("--glibc", default="2.39", help="the machine's glibc: manylinux tags up to it (Ubuntu 24.04)")
    ap.add_argument("--machine", default=str(ROOT / "bench" / "gpu_machine.txt"),
                    help="the machine's packages, `name` or `name==version` a line")
    ap.add_argument("--unknown-max-mb", type=float, default=4.0,
                    help="carry a bounded package of unknown machine version when its wheel is at most this")
    ap.add_argument("--python", default=sys.executable, help="the Python whose pip resolves and builds")
    a = ap.parse_args()
    out = Path(a.dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.whl"):
        old.unlink()
    machine = machine_packages(Path(a.machine))
    root = project_requirements()
    ds = next(r for r in root if canonicalize_name(r.name) == "deepspeed")
    env = marker_env(a.python_version)
    flags = target_flags(a.python_version, a.glibc)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        build = tmp / "build"
        # setup.py imports torch: build against this venv's (ops are JIT-built on the machine anyway)
        pip(a.python, "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(build), str(ds))
        reqs = [str(r) for r in root if not NEVER.match(canonicalize_name(r.name))]
        (tmp / "req.txt").write_text("\n".join(reqs) + "\n")
        torch_v = machine.get("torch")
        (tmp / "con.txt").write_text(f"torch=={torch_v}\n" if torch_v else "")
        resolve = ["install", "-q", "--dry-run", "--ignore-installed", "--report", str(tmp / "report.json"),
                   *flags, "--find-links", str(build), "-r", str(tmp / "req.txt"), "-c", str(tmp / "con.txt")]
        pip(a.python, *resolve)
        report = json.loads((tmp / "report.json").read_text())
        resolved = {canonicalize_name(i["metadata"]["name"]): i for i in report["install"]}
        too_big: set[str] = set()
        while True:
            carry, unverified = choose(root, resolved, machine, env, too_big)
            have = {canonicalize_name(parse_wheel_filename(f.name)[0]): f for f in out.glob("*.whl")}
            want = [f"{n}=={resolved[n]['metadata']['version']}" for n in carry if n not in have]
            if want:
                pip(a.python, "download", "-q", "--no-deps", *flags, "--find-links", str(build), "-d", str(out),
                    *want)
            have = {canonicalize_name(parse_wheel_filename(f.name)[0]): f for f in out.glob("*.whl")}
            big = {n for n in carry if machine.get(n, False) is None and not carry[n].startswith("pinned")
                   and have[n].stat().st_size > a.unknown_max_mb * 2**20}
            if not big:
                break
            too_big |= big
        for n, f in have.items():
            if n not in carry:
                f.unlink()
    wheels = sorted(out.glob("*.whl"))
    total = sum(f.stat().st_size for f in wheels)
    rows = [{"name": n, "version": resolved[n]["metadata"]["version"], "file": have[n].name,
             "bytes": have[n].stat().st_size, "why": carry[n]} for n in sorted(carry)]
    manifest = {"python": a.python_version, "glibc": a.glibc, "machine": a.machine, "root": [str(r) for r in root],
                "torch_constraint": str(torch_v) if torch_v else None, "pip_resolve": " ".join(["pip", *resolve]),
                "wheels": rows, "unverified": unverified, "total_bytes": total}
    (out / "wheels.json").write_text(json.dumps(manifest, indent=2) + "\n")
    for r in rows:
        print(f"{r['bytes'] / 2**20:7.2f} MiB  {r['file']}  ({r['why']})")
    if unverified:
        print("assumed on the machine, version unverified (its probe records it): " + "; ".join(unverified))
    print(f"{len(wheels)} wheels, {total / 2**20:.1f} MiB in all, in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
