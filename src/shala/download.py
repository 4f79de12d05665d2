"""``shala fetch-data``: put a dataset's raw files in a directory (SPEC §9).

A dataset with its own ``source`` directory (licensed data such as
MSP-Podcast) is read in place by ``prepare`` and never fetched. Otherwise
the ``data_mirror`` sub-folder is copied (offline machines), else the
official URLs are downloaded. Every file with a
known sha256 is verified; a file whose sha256 is unknown (null in config) is
accepted and its checksum recorded in ``MANIFEST.json``, so the first online
run pins it.
"""

from __future__ import annotations

import hashlib
import io
import logging
import shutil
import tempfile
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

from .errors import ConfigError, InputError
from .jsonio import write_json

log = logging.getLogger(__name__)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _check(path: Path, expected: str | None) -> str:
    got = sha256_file(path)
    if expected and got != expected:
        raise InputError(f"sha256 mismatch: expected {expected}, got {got}", path=path)
    return got


def _from_mirror(mirror: Path, files: list[dict[str, Any]], out: Path) -> None:
    if not mirror.is_dir():
        raise InputError("data mirror folder not found", path=mirror)
    if files:
        for f in files:
            src = mirror / f["name"]
            if not src.is_file():
                raise InputError("file missing from the data mirror", path=src)
            shutil.copyfile(src, out / f["name"])
    else:  # no file list (bring-your-own data): copy the whole folder
        shutil.copytree(mirror, out, dirs_exist_ok=True)


def _download(dl: dict[str, Any], out: Path) -> None:
    files = dl.get("files", [])
    if dl.get("archive"):
        log.info("downloading %s", dl["archive"])
        with urllib.request.urlopen(dl["archive"], timeout=120) as resp:  # noqa: S310 (config URL)
            data = resp.read()
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            by_base = {Path(n).name: n for n in zf.namelist() if not n.endswith("/")}
            for f in files:
                if f["name"] not in by_base:
                    raise InputError(f"{f['name']} not in archive", path=dl["archive"])
                (out / f["name"]).write_bytes(zf.read(by_base[f["name"]]))
        return
    for f in files:
        if not f.get("url"):
            raise ConfigError(f"download.files: {f['name']} has no url and there is no archive")
        log.info("downloading %s", f["url"])
        with urllib.request.urlopen(f["url"], timeout=120) as resp, (out / f["name"]).open("wb") as fh:  # noqa: S310
            shutil.copyfileobj(resp, fh)


def fetch_data(dataset: str, config: dict[str, Any], out: str | Path) -> dict[str, Any]:
    """Fill ``out`` with the raw files of ``dataset`` and write ``MANIFEST.json``."""
    out = Path(out)
    dcfg = config["datasets"].get(dataset)
    if dcfg is None:
        raise ConfigError(f"unknown dataset {dataset!r}")
    if dcfg.get("source"):
        raise ConfigError(f"datasets.{dataset}.source is set: prepare reads {dcfg['source']} in place")
    if dcfg["adapter"] == "msp_podcast":
        raise ConfigError(f"datasets.{dataset}.source: MSP-Podcast is licensed and cannot be downloaded; "
                          "set it to your local copy (v1.12 layout), or drop "
                          f"{dataset} from run_datasets")
    dl = dcfg.get("download") or {}
    files = dl.get("files", [])
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        if config.get("data_mirror"):
            mirror = Path(config["data_mirror"]).expanduser() / dcfg.get("mirror", dataset)
            origin = f"mirror:{mirror}"
            _from_mirror(mirror, files, tmp)
        else:
            origin = "download"
            _download(dl, tmp)
        checks = {}
        if files:
            for f in files:
                checks[f["name"]] = _check(tmp / f["name"], f.get("sha256"))
                if not f.get("sha256"):
                    log.warning("%s: no sha256 in config; recorded %s", f["name"], checks[f["name"]])
        else:
            for p in sorted(tmp.rglob("*")):
                if p.is_file():
                    checks[str(p.relative_to(tmp))] = sha256_file(p)
        manifest = {"dataset": dataset, "origin": origin, "sha256": checks}
        write_json(tmp / "MANIFEST.json", manifest)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
        return manifest
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
