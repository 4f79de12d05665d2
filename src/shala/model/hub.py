"""The ``hub`` model source: a Hugging Face hub repo fetched once into
``results/models/base/<name>``, so that training and prediction read a
local folder with the hub offline (compute nodes of many clusters have no
internet; the workflow runs this on the submit node, rule ``fetch_model``).

Only what the run loads is taken: the top-level json/txt/jinja files
(config, tokenizer, chat template, preprocessor) and the safetensors
shards, never pickle files (.bin, .pt). With ``model.component: thinker``
and a ``model.safetensors.index.json`` whose weight map allows it, only the
shards holding ``thinker.`` weights (Qwen2.5-Omni-7B: the talker and
token2wav stay behind) and an index rewritten to them.

``model_mirror/<org>--<name>/``, a folder laid out like the hub repo (for
instance a ``snapshot_download(local_dir=...)`` or an earlier fetch), stands
in for the hub when it exists, with the same selection: that is how the
tests run this without a hub. Either way the folder is built beside its
destination and renamed into place, with a ``MANIFEST.json`` naming the
repo, the resolved revision (commit hash), each file's size and sha256,
and the date.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import re
import shutil
import struct
from pathlib import Path
from typing import Any

from ..errors import ConfigError, ShalaError
from ..jsonio import sha256_file

log = logging.getLogger(__name__)

INDEX = "model.safetensors.index.json"
MANIFEST = "MANIFEST.json"
# Small files the loaders read (config, generation config, tokenizer,
# chat template, preprocessor); weights come only from *.safetensors.
SMALL_SUFFIXES = (".json", ".txt", ".jinja", ".model", ".tiktoken")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
THINKER_PREFIX = "thinker."
_HASH = re.compile(r"^[0-9a-f]{40}$")


def hub_model_name(model_cfg: dict[str, Any]) -> str:
    """Folder name of a fetched hub model: ``model.name`` when set, else the
    id with ``/`` -> ``--`` (as the hub cache names repos), plus
    ``-thinker`` when only the thinker is wanted: ``Qwen--Qwen2.5-Omni-7B-thinker``."""
    if model_cfg.get("name"):
        return str(model_cfg["name"])
    repo = model_cfg.get("id")
    if not repo:
        raise ConfigError("model.id is required for model.source 'hub'")
    name = re.sub(r"[^A-Za-z0-9._-]", "_", str(repo).replace("/", "--"))
    return name + ("-thinker" if model_cfg["component"] == "thinker" else "")


def mirror_folder(model_cfg: dict[str, Any], model_mirror: str | Path | None) -> Path | None:
    """``model_mirror/<org>--<name>`` when ``model_mirror`` is set and that folder exists."""
    if not model_mirror or not model_cfg.get("id"):
        return None
    folder = Path(model_mirror).expanduser() / str(model_cfg["id"]).replace("/", "--")
    if folder.is_dir():
        return folder
    log.info("model_mirror folder %s not found; fetching from the hub", os.path.abspath(folder))
    return None


def select_files(names: list[str], index: dict[str, Any] | None,
                 component: str | None) -> dict[str, Any]:
    """Which repo files to take: ``{"files", "skipped", "thinker_only", "index"}``,
    ``index`` being the weight map to write (None: keep the repo's). Only
    top-level files; shards by the weight map when ``component`` is thinker."""
    top = [n for n in names if "/" not in n and n != MANIFEST and not n.startswith(".")]
    small = [n for n in top if n.endswith(SMALL_SUFFIXES)]
    shards = [n for n in top if n.endswith(".safetensors")]
    if not shards:
        pickles = [n for n in top if n.endswith(PICKLE_SUFFIXES)]
        raise ShalaError("the repo has no *.safetensors weights" + (
            f" (only {', '.join(pickles[:3])}: pickle files are never loaded)" if pickles else ""))
    keep, new_index = shards, None
    weight_map = (index or {}).get("weight_map") or {}
    if component == "thinker" and weight_map:
        wanted = {f for k, f in weight_map.items() if k.startswith(THINKER_PREFIX)}
        if wanted and wanted < set(weight_map.values()):
            keep = sorted(wanted)
            new_index = {"metadata": dict(index.get("metadata") or {}),
                         "weight_map": {k: f for k, f in weight_map.items() if f in wanted}}
        elif not wanted:
            log.info("no %s weights in the index (a thinker-only or plain model): taking every shard",
                     THINKER_PREFIX)
        else:
            log.info("every shard holds thinker weights: taking them all")
    elif component == "thinker":
        log.info("no %s weight map: the thinker's shards cannot be told apart, taking every shard", INDEX)
    files = sorted(set(small) | set(keep))
    missing = sorted(set(weight_map.values()) & set(keep) - set(shards))
    if missing:
        raise ShalaError(f"{INDEX} names shards the repo does not have: {', '.join(missing)}")
    return {"files": files, "skipped": sorted(set(top) - set(files)),
            "thinker_only": new_index is not None, "index": new_index}


def _tensor_bytes(path: Path) -> int:
    """Bytes of tensor data in a safetensors file, from its header."""
    with path.open("rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(n))
    return sum(v["data_offsets"][1] - v["data_offsets"][0] for k, v in header.items() if k != "__metadata__")


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE") not in (None, "", "0")


def _mirror_revision(folder: Path) -> str | None:
    """The commit a mirror holds, where it says: its own MANIFEST.json (an
    earlier fetch) or snapshot_download's local_dir metadata."""
    manifest = folder / MANIFEST
    if manifest.is_file():
        try:
            return json.loads(manifest.read_text(encoding="utf-8")).get("revision")
        except (OSError, json.JSONDecodeError):
            return None
    meta = folder / ".cache" / "huggingface" / "download" / "config.json.metadata"
    if meta.is_file():
        first = meta.read_text(encoding="utf-8").split("\n", 1)[0].strip()
        return first if _HASH.match(first) else None
    return None


def _from_mirror(folder: Path, model_cfg: dict[str, Any], build: Path) -> dict[str, Any]:
    names = [p.name for p in folder.iterdir() if p.is_file()]
    index = json.loads((folder / INDEX).read_text(encoding="utf-8")) if (folder / INDEX).is_file() else None
    plan = select_files(names, index, model_cfg["component"])
    wanted, have = model_cfg["revision"], _mirror_revision(folder)
    if wanted and _HASH.match(str(wanted)) and have and have != wanted:
        raise ShalaError(f"{folder}: the mirror holds revision {have}, model.revision pins {wanted}")
    for name in plan["files"]:
        shutil.copyfile(folder / name, build / name)
    return plan | {"source": f"mirror {os.path.abspath(folder)}", "revision": have, "hub_sha256": {}}


def _from_hub(model_cfg: dict[str, Any], build: Path) -> dict[str, Any]:
    from huggingface_hub import HfApi, hf_hub_download, snapshot_download

    repo, revision = str(model_cfg["id"]), model_cfg["revision"] or "main"
    try:
        info = HfApi().model_info(repo, revision=revision, files_metadata=True)
    except Exception as exc:  # noqa: BLE001 - no network, no such repo or revision, a gated repo
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ShalaError(f"{repo}@{revision}: the hub does not answer ({first}); run where the hub is "
                         "reachable (HF_TOKEN for a gated repo), or set model_mirror") from exc
    siblings = {s.rfilename: s for s in info.siblings or []}
    index = None
    if INDEX in siblings:
        index = json.loads(Path(hf_hub_download(repo, INDEX, revision=info.sha, local_dir=build))
                           .read_text(encoding="utf-8"))
    plan = select_files(list(siblings), index, model_cfg["component"])
    log.info("%s@%s: fetching %d files, skipping %s", repo, info.sha, len(plan["files"]),
             ", ".join(plan["skipped"]) or "none")
    snapshot_download(repo, revision=info.sha, allow_patterns=plan["files"], local_dir=build)
    shutil.rmtree(build / ".cache", ignore_errors=True)  # snapshot_download's own bookkeeping
    lfs = {n: getattr(s.lfs, "sha256", None) for n, s in siblings.items() if getattr(s, "lfs", None)}
    return plan | {"source": "hub", "revision": info.sha, "hub_sha256": lfs}


def _manifest(out_dir: Path) -> dict[str, Any] | None:
    try:
        rec = json.loads((Path(out_dir) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return rec if isinstance(rec, dict) else None


def _holds(rec: dict[str, Any], model_cfg: dict[str, Any]) -> bool:
    """The fetch ``rec`` describes is what ``model_cfg`` asks for: the same
    repo and component, and the revision asked for, either as it was asked
    then or as the commit it resolved to (pinning ``model.revision`` to the
    commit a folder already holds asks for nothing new)."""
    requested = model_cfg["revision"] or "main"
    return (rec.get("repo_id") == model_cfg.get("id") and rec.get("component") == model_cfg["component"]
            and requested in (rec.get("revision_requested"), rec.get("revision")))


def revision_key(model_cfg: dict[str, Any], out_dir: str | Path) -> str:
    """``model.revision`` as a rerun trigger (the workflow's params): the
    revision the folder was fetched with when it already holds what is
    asked for (:func:`_holds`), so that copying the MANIFEST's commit into
    ``model.revision`` neither fetches again nor reruns training and
    prediction; else the revision asked for."""
    requested = model_cfg.get("revision") or "main"
    rec = _manifest(Path(out_dir))
    if rec is not None and _holds(rec, model_cfg):
        return str(rec.get("revision_requested") or requested)
    return str(requested)


def _is_fetched(out_dir: Path, model_cfg: dict[str, Any]) -> bool:
    """``out_dir`` already holds this repo, revision and component, whole."""
    rec = _manifest(out_dir)
    if rec is None or not _holds(rec, model_cfg):
        return False
    return all((out_dir / f["name"]).is_file() and (out_dir / f["name"]).stat().st_size == f["size"]
               for f in rec.get("files", []))


def fetch_hub_model(model_cfg: dict[str, Any], out_dir: str | Path, *,
                    model_mirror: str | Path | None = None, force: bool = False) -> Path:
    """Fetch ``model.id`` at ``model.revision`` into ``out_dir`` (from
    ``model_mirror`` when it holds the repo); returns ``out_dir``. Skipped
    when ``out_dir`` already holds the same fetch, unless ``force``."""
    if not model_cfg.get("id"):
        raise ConfigError("model.id is required for model.source 'hub'")
    out_dir = Path(out_dir)
    if not force and _is_fetched(out_dir, model_cfg):
        log.info("%s already holds %s; nothing to fetch", out_dir, model_cfg["id"])
        return out_dir
    folder = mirror_folder(model_cfg, model_mirror)
    if folder is None and _offline():
        raise ShalaError(f"model.source 'hub' ({model_cfg['id']}) needs the Hugging Face hub, but "
                         "HF_HUB_OFFLINE is set; set model_mirror to a folder holding "
                         f"{str(model_cfg['id']).replace('/', '--')}/, or use source 'local'")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    build = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(build, ignore_errors=True)
    build.mkdir()
    try:
        plan = _from_mirror(folder, model_cfg, build) if folder else _from_hub(model_cfg, build)
        if plan["index"] is not None:
            plan["index"]["metadata"]["total_size"] = sum(
                _tensor_bytes(build / f) for f in set(plan["index"]["weight_map"].values()))
            (build / INDEX).write_text(json.dumps(plan["index"], indent=2) + "\n", encoding="utf-8")
        files = []
        for name in plan["files"]:
            digest = sha256_file(build / name)
            expected = None if name == INDEX and plan["index"] else plan["hub_sha256"].get(name)
            if expected and expected != digest:
                raise ShalaError(f"{name}: sha256 {digest} differs from the hub's {expected}")
            files.append({"name": name, "size": (build / name).stat().st_size, "sha256": digest})
        manifest = {
            "repo_id": model_cfg["id"], "revision": plan["revision"],
            "revision_requested": model_cfg["revision"] or "main",
            "component": model_cfg["component"], "thinker_only": plan["thinker_only"],
            "index_rewritten": plan["index"] is not None, "source": plan["source"],
            "files": files, "skipped": plan["skipped"],
            "total_bytes": sum(f["size"] for f in files),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        (build / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(build, out_dir)
    finally:
        shutil.rmtree(build, ignore_errors=True)
    log.info("fetched %s@%s into %s (%d files, %.1f GB; skipped %d)", model_cfg["id"], manifest["revision"],
             out_dir, len(files), manifest["total_bytes"] / 1e9, len(plan["skipped"]))
    return out_dir
