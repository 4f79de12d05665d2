"""``shala fetch-data``: put a dataset's raw files in a directory (docs/design.md §9).

A dataset with its own ``source`` directory (licensed data such as
MSP-Podcast) is read in place by ``prepare`` and never fetched. Otherwise
there are two routes, and the one taken is logged and recorded in
``MANIFEST.json`` (``origin``, ``route``, ``from``):

- mirror: when ``data_mirror`` is set *and* its sub-folder for the dataset
  (``datasets.<name>.mirror``, default the dataset name) exists, the files
  are copied from it (offline machines);
- download: otherwise the official URLs are downloaded. ``data_mirror``
  defaults to ``../shared/data`` (the development data beside the
  repository); on a machine without that folder this route runs. If the
  download fails, the error names the dataset, the URL, and both ways out:
  set ``data_mirror`` to a folder holding the files, or make the URL
  reachable.

A synthetic dataset (an adapter with ``SYNTHETIC = True``, e.g. the
``control`` positive control) has no files: its items come from its options
and seed alone, so the folder gets only a ``MANIFEST.json`` with route
``synthetic`` that records the adapter's resolved options and seed.

Every file with a known sha256 is verified, whichever the route; a file
whose sha256 is unknown (null in config) is accepted and its checksum
recorded in ``MANIFEST.json``, so the first online run pins it.
"""

from __future__ import annotations

import http.client
import io
import logging
import os
import shutil
import tempfile
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

from ..errors import ConfigError, InputError, ShalaError
from ..jsonio import sha256_file, write_json
from .adapters import get_adapter, is_licensed

log = logging.getLogger(__name__)


def _check(path: Path, expected: str | None) -> str:
    got = sha256_file(path)
    if expected and got != expected:
        raise InputError(f"sha256 mismatch: expected {expected}, got {got}", path=path)
    return got


class DownloadError(ShalaError):
    """An official download failed (no network, URL gone, bad archive)."""


def _urlopen(url: str):
    """Open ``url`` (the one network call; tests replace it)."""
    return urllib.request.urlopen(url, timeout=120)  # noqa: S310 (URL from config)


def _mirror_folder(config: dict[str, Any], dataset: str, dcfg: dict[str, Any]) -> Path | None:
    """The dataset's folder under ``data_mirror``, if that is set and the folder exists."""
    if not config["data_mirror"]:
        return None
    mirror = Path(config["data_mirror"]).expanduser() / dcfg.get("mirror", dataset)
    if mirror.is_dir():
        return mirror
    log.info("%s: data_mirror folder %s not found; using the official download", dataset,
             os.path.abspath(mirror))
    return None


def _from_mirror(mirror: Path, files: list[dict[str, Any]], out: Path) -> None:
    if files:
        for f in files:
            src = mirror / f["name"]
            if not src.is_file():
                raise InputError("file missing from the data mirror", path=src)
            shutil.copyfile(src, out / f["name"])
    else:  # no file list (bring-your-own data): copy the whole folder
        shutil.copytree(mirror, out, dirs_exist_ok=True)


def _urls(dl: dict[str, Any]) -> list[str]:
    if dl.get("archive"):
        return [dl["archive"]]
    return [f["url"] for f in dl.get("files", []) if f.get("url")]


def _download(dataset: str, dcfg: dict[str, Any], out: Path) -> None:
    dl = dcfg.get("download") or {}
    files = dl.get("files", [])
    sub = dcfg.get("mirror", dataset)
    names = ", ".join(f["name"] for f in files) or "its raw files"
    if not _urls(dl):
        raise ConfigError(f"datasets.{dataset}: no data_mirror folder and no download URL; "
                          f"set data_mirror to a folder whose {sub}/ sub-folder holds {names}")
    for f in files:
        if not dl.get("archive") and not f.get("url"):
            raise ConfigError(f"datasets.{dataset}.download.files: {f['name']} has no url and there is no archive")

    def fail(url: str, exc: BaseException) -> DownloadError:
        return DownloadError(
            f"{dataset}: download of {url} failed ({type(exc).__name__}: {exc}). Either set data_mirror "
            f"(config) to a folder whose {sub}/ sub-folder holds {names}, or make {url} reachable")

    if dl.get("archive"):
        url = dl["archive"]
        log.info("%s: downloading %s", dataset, url)
        try:
            with _urlopen(url) as resp:
                data = resp.read()
            zf = zipfile.ZipFile(io.BytesIO(data))
        except (OSError, http.client.HTTPException, ValueError, zipfile.BadZipFile) as exc:
            raise fail(url, exc) from exc
        with zf:
            by_base = {Path(n).name: n for n in zf.namelist() if not n.endswith("/")}
            for f in files:
                if f["name"] not in by_base:
                    raise InputError(f"{f['name']} not in archive", path=url)
                (out / f["name"]).write_bytes(zf.read(by_base[f["name"]]))
        return
    for f in files:
        log.info("%s: downloading %s", dataset, f["url"])
        try:
            with _urlopen(f["url"]) as resp, (out / f["name"]).open("wb") as fh:
                shutil.copyfileobj(resp, fh)
        except (OSError, http.client.HTTPException, ValueError) as exc:  # URLError is an OSError
            raise fail(f["url"], exc) from exc


def _write_synthetic(dataset: str, dcfg: dict[str, Any], adapter, out: Path) -> dict[str, Any]:
    """A generated dataset: no files, a MANIFEST of what generates it (options
    checked here, so a bad option fails at fetch, not later at prepare)."""
    options = adapter.check_options(dcfg["options"])
    manifest = {"dataset": dataset, "origin": f"synthetic:{adapter.NAME}", "route": "synthetic",
                "from": None, "adapter": adapter.NAME, "options": options, "seed": options.get("seed"),
                "sha256": {}}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        write_json(tmp / "MANIFEST.json", manifest)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    log.info("%s: synthetic (%s adapter): no files to fetch; MANIFEST.json written", dataset, adapter.NAME)
    return manifest


def fetch_data(dataset: str, config: dict[str, Any], out: str | Path) -> dict[str, Any]:
    """Fill ``out`` with the raw files of ``dataset`` and write ``MANIFEST.json``."""
    out = Path(out)
    dcfg = config["datasets"].get(dataset)
    if dcfg is None:
        raise ConfigError(f"unknown dataset {dataset!r}")
    if dcfg["source"]:
        raise ConfigError(f"datasets.{dataset}.source is set: prepare reads {dcfg['source']} in place")
    if is_licensed(dcfg):
        raise ConfigError(f"datasets.{dataset}.source: {dcfg['adapter']} data is licensed and cannot be "
                          "downloaded; set it to your local copy, or drop "
                          f"{dataset} from run_datasets")
    adapter = get_adapter(dcfg["adapter"])
    if getattr(adapter, "SYNTHETIC", False):
        return _write_synthetic(dataset, dcfg, adapter, out)
    dl = dcfg.get("download") or {}
    files = dl.get("files", [])
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        mirror = _mirror_folder(config, dataset, dcfg)
        if mirror is not None:
            origin, route, source = f"mirror:{mirror}", "mirror", os.path.abspath(mirror)
            log.info("%s: copying from the data mirror %s", dataset, source)
            _from_mirror(mirror, files, tmp)
        else:
            origin, route, source = "download", "download", _urls(dl)
            _download(dataset, dcfg, tmp)
        checks = {}
        if files:
            for f in files:
                checks[f["name"]] = _check(tmp / f["name"], f["sha256"])
                if not f["sha256"]:
                    log.warning("%s: no sha256 in config; recorded %s", f["name"], checks[f["name"]])
        else:
            for p in sorted(tmp.rglob("*")):
                if p.is_file():
                    checks[str(p.relative_to(tmp))] = sha256_file(p)
        manifest = {"dataset": dataset, "origin": origin, "route": route, "from": source, "sha256": checks}
        write_json(tmp / "MANIFEST.json", manifest)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
        return manifest
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
