"""The hub model, fetched once (shala.model.hub): a tiny Omni checkpoint laid out
like the hub repo stands in for the hub (``model_mirror``), re-sharded so
that its weight map tells the thinker's shards from a talker-only one."""

from __future__ import annotations

import datetime
import hashlib
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from shala.errors import ShalaError
from shala.model.hub import INDEX, MANIFEST, select_files
from shala.model.loading import base_model_name, fetch_model, load_model_and_tokenizer, resolve_model_ref

REPO = "Qwen/Tiny-Omni"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
TALKER_SHARD = "model-talker.safetensors"
PICKLES = ("spk_dict.pt", "pytorch_model.bin")
SMALL = {"chat_template.json", "config.json", "generation_config.json", "preprocessor_config.json",
         "tokenizer.json", "tokenizer_config.json", INDEX}


def make_omni_repo(folder: Path, n_shards: int = 3) -> dict:
    """A tiny full Qwen2.5-Omni in the hub layout: the thinker in
    ``n_shards`` safetensors shards, one talker-only shard, an index over
    all of them, pickle files and a README (all of which a fetch of the
    thinker leaves behind), and snapshot_download's record of the commit.
    Returns the thinker's state dict as built."""
    import torch
    from safetensors.torch import load_file, save_file

    from shala.model.tiny_omni import build_tiny_omni

    _, state = build_tiny_omni(folder, full=True)
    weights = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    names = sorted(weights)
    weight_map = {}
    for i in range(n_shards):
        shard = f"model-{i + 1:05d}-of-{n_shards:05d}.safetensors"
        part = {k: weights[k].contiguous() for k in names[i::n_shards]}
        save_file(part, folder / shard, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, shard))
    talker = {"talker.model.embed_tokens.weight": torch.zeros(8, 4),
              "token2wav.code2wav_dit_model.proj.weight": torch.ones(4, 4)}
    save_file(talker, folder / TALKER_SHARD, metadata={"format": "pt"})
    weight_map.update(dict.fromkeys(talker, TALKER_SHARD))
    (folder / INDEX).write_text(json.dumps({"metadata": {"total_size": 1}, "weight_map": weight_map}))
    for name in PICKLES:
        (folder / name).write_bytes(b"\x80\x04not loaded")
    (folder / "README.md").write_text("# tiny omni\n")
    (folder / ".gitattributes").write_text("*.safetensors filter=lfs\n")
    meta = folder / ".cache" / "huggingface" / "download"
    meta.mkdir(parents=True)
    (meta / "config.json.metadata").write_text(f"{COMMIT}\netag\n1700000000.0\n")
    return state


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    """``model_mirror`` holding the tiny repo as ``Qwen--Tiny-Omni/``; returns (mirror, thinker state)."""
    root = tmp_path_factory.mktemp("model_mirror")
    state = make_omni_repo(root / REPO.replace("/", "--"))
    return root, state


def _cfg(**kw):
    return {"source": "hub", "id": REPO, "component": "thinker", **kw}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_names_and_refs(tmp_path):
    assert base_model_name(_cfg()) == "Qwen--Tiny-Omni-thinker"
    assert base_model_name(_cfg(component=None)) == "Qwen--Tiny-Omni"
    assert base_model_name(_cfg(name="omni")) == "omni"
    assert resolve_model_ref({"model": _cfg()}, tmp_path) == str(tmp_path / "models" / "base" / "Qwen--Tiny-Omni-thinker")


def test_thinker_shards_only_from_the_mirror(tmp_path, mirror):
    root, state = mirror
    src = root / REPO.replace("/", "--")
    out = tmp_path / "base" / base_model_name(_cfg())
    assert fetch_model(_cfg(), out, model_mirror=root) == out
    shards = {f"model-{i:05d}-of-00003.safetensors" for i in (1, 2, 3)}
    assert {p.name for p in out.iterdir()} == SMALL | shards | {MANIFEST}
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]  # no temp folder left
    index = json.loads((out / INDEX).read_text())
    assert set(index["weight_map"].values()) == shards
    assert all(k.startswith("thinker.") for k in index["weight_map"])
    assert index["metadata"]["total_size"] == sum(v.numel() * v.element_size() for v in state.values())
    rec = json.loads((out / MANIFEST).read_text())
    assert rec["repo_id"] == REPO and rec["revision"] == COMMIT and rec["revision_requested"] == "main"
    assert rec["component"] == "thinker" and rec["thinker_only"] and rec["index_rewritten"]
    assert rec["source"] == f"mirror {src}"
    assert sorted(rec["skipped"]) == sorted(["README.md", TALKER_SHARD, *PICKLES])
    assert {f["name"] for f in rec["files"]} == SMALL | shards
    for f in rec["files"]:
        assert f["size"] == (out / f["name"]).stat().st_size and f["sha256"] == _sha(out / f["name"])
        if f["name"] != INDEX:
            assert f["sha256"] == _sha(src / f["name"])  # copied as is
    assert datetime.datetime.fromisoformat(rec["date"]).tzinfo is not None
    model, tok = load_model_and_tokenizer(out, component="thinker")
    assert type(model).__name__ == "Qwen2_5OmniThinkerForConditionalGeneration"
    loaded = model.state_dict()
    assert all(loaded[k].equal(v) for k, v in state.items())
    assert tok.chat_template  # from chat_template.json


def test_whole_model_takes_every_shard_and_the_index_as_is(tmp_path, mirror):
    root, _ = mirror
    out = tmp_path / "full"
    fetch_model(_cfg(component=None), out, model_mirror=root)
    names = {p.name for p in out.iterdir()}
    assert TALKER_SHARD in names and not names & set(PICKLES)
    assert (out / INDEX).read_bytes() == (root / REPO.replace("/", "--") / INDEX).read_bytes()
    rec = json.loads((out / MANIFEST).read_text())
    assert not rec["thinker_only"] and not rec["index_rewritten"]


def test_second_fetch_is_skipped_unless_forced(tmp_path, mirror):
    root, _ = mirror
    out = tmp_path / "m"
    fetch_model(_cfg(), out, model_mirror=root)
    stamp = (out / MANIFEST).stat().st_mtime_ns
    fetch_model(_cfg(), out, model_mirror=root)
    assert (out / MANIFEST).stat().st_mtime_ns == stamp
    fetch_model(_cfg(), out, model_mirror=root, force=True)
    assert (out / MANIFEST).stat().st_mtime_ns != stamp


def test_pinned_revision_is_checked_against_the_mirror(tmp_path, mirror):
    root, _ = mirror
    with pytest.raises(ShalaError, match="pins"):
        fetch_model(_cfg(revision="f" * 40), tmp_path / "m", model_mirror=root)
    fetch_model(_cfg(revision=COMMIT), tmp_path / "m", model_mirror=root)
    assert json.loads((tmp_path / "m" / MANIFEST).read_text())["revision_requested"] == COMMIT
    assert not (tmp_path / "nothing").exists()


def test_offline_without_the_mirror_folder_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ShalaError, match="model_mirror to a folder holding Qwen--Tiny-Omni/"):
        fetch_model(_cfg(), tmp_path / "m", model_mirror=tmp_path / "empty")
    assert not (tmp_path / "m").exists()


def test_select_files():
    with pytest.raises(ShalaError, match="pickle"):
        select_files(["config.json", "pytorch_model.bin"], None, "thinker")
    plan = select_files(["config.json", "model.safetensors", "sub/x.json"], None, "thinker")
    assert plan["files"] == ["config.json", "model.safetensors"] and not plan["thinker_only"]
    # a thinker saved alone (no thinker. prefix): every shard
    index = {"metadata": {}, "weight_map": {"model.a": "a.safetensors", "lm_head.w": "b.safetensors"}}
    plan = select_files(["a.safetensors", "b.safetensors", INDEX], index, "thinker")
    assert plan["files"] == ["a.safetensors", "b.safetensors", INDEX] and plan["index"] is None


class _FakeHub:
    """huggingface_hub's model_info / hf_hub_download / snapshot_download
    answered from a folder, recording what was asked."""

    def __init__(self, folder: Path, sha: str, lfs: dict[str, str]):
        self.folder, self.sha, self.lfs, self.calls = folder, sha, lfs, []

    def model_info(self, repo_id, revision=None, files_metadata=False):
        self.calls.append(("model_info", repo_id, revision))
        siblings = [SimpleNamespace(rfilename=p.relative_to(self.folder).as_posix(),
                                    lfs=SimpleNamespace(sha256=self.lfs[p.name]) if p.name in self.lfs else None)
                    for p in sorted(self.folder.rglob("*")) if p.is_file()]
        return SimpleNamespace(sha=self.sha, siblings=siblings)

    def hf_hub_download(self, repo_id, filename, revision=None, local_dir=None):
        self.calls.append(("hf_hub_download", filename, revision))
        return shutil.copyfile(self.folder / filename, Path(local_dir) / filename)

    def snapshot_download(self, repo_id, revision=None, allow_patterns=None, local_dir=None):
        self.calls.append(("snapshot_download", tuple(allow_patterns), revision))
        for name in allow_patterns:
            shutil.copyfile(self.folder / name, Path(local_dir) / name)
        (Path(local_dir) / ".cache").mkdir(exist_ok=True)
        return str(local_dir)


@pytest.mark.parametrize("good_sha", [True, False])
def test_hub_route_downloads_the_selection_at_the_resolved_commit(tmp_path, mirror, monkeypatch, good_sha):
    import huggingface_hub

    root, _ = mirror
    src = root / REPO.replace("/", "--")
    shard = "model-00001-of-00003.safetensors"
    hub = _FakeHub(src, "c" * 40, {shard: _sha(src / shard) if good_sha else "0" * 64})
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", hub.model_info)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hub.hf_hub_download)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", hub.snapshot_download)
    out = tmp_path / "m"
    if not good_sha:
        with pytest.raises(ShalaError, match="differs from the hub's"):
            fetch_model(_cfg(revision="v1"), out, model_mirror=tmp_path / "no-mirror")
        assert not out.exists() and list(tmp_path.iterdir()) == []
        return
    fetch_model(_cfg(revision="v1"), out, model_mirror=tmp_path / "no-mirror")
    assert hub.calls[0] == ("model_info", REPO, "v1")
    assert hub.calls[1] == ("hf_hub_download", INDEX, "c" * 40)
    kind, patterns, revision = hub.calls[2]
    assert kind == "snapshot_download" and revision == "c" * 40
    assert TALKER_SHARD not in patterns and not set(patterns) & set(PICKLES) and shard in patterns
    assert not (out / ".cache").exists()
    rec = json.loads((out / MANIFEST).read_text())
    assert rec["revision"] == "c" * 40 and rec["source"] == "hub" and rec["revision_requested"] == "v1"
    load_model_and_tokenizer(out, component="thinker")


def test_cli_fetch_model(tmp_path, mirror, capsys):
    import yaml

    from shala.cli import main

    root, _ = mirror
    base = yaml.safe_load((Path(__file__).resolve().parents[2] / "config.yaml").read_text())
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(base | {"model_mirror": str(root), "model": _cfg(dtype="float32")}))
    out = tmp_path / "base" / "Qwen--Tiny-Omni-thinker"
    assert main(["fetch-model", "--out", str(out), "--config", str(cfg)]) in (None, 0)
    assert capsys.readouterr().out.strip() == str(out)
    assert json.loads((out / MANIFEST).read_text())["revision"] == COMMIT


def test_fetch_model_rule_runs_locally_under_the_slurm_executor(tmp_path, mirror):
    """The workflow's fetch_model job is a local rule: under the SLURM
    executor (with no SLURM here, so any submitted job would fail) Snakemake
    runs it itself, as on a cluster's login node, and it fetches from the mirror."""
    import os
    import subprocess
    import sys

    import yaml

    pytest.importorskip("snakemake_executor_plugin_slurm")
    root, _ = mirror
    repo_root = Path(__file__).resolve().parents[2]
    bin_dir = Path(sys.executable).parent
    res = tmp_path / "res"
    overlay = tmp_path / "o.yaml"
    overlay.write_text(yaml.safe_dump({"results": str(res), "model_mirror": str(root),
                                       "model": _cfg(dtype="float32")}))
    target = res / "models" / "base" / "Qwen--Tiny-Omni-thinker"
    r = subprocess.run(
        [str(bin_dir / "snakemake"), str(target), "--executor", "slurm", "--jobs", "1", "--cores", "1",
         "--nolock", "--slurm-init-seconds-before-status-checks", "1", "--slurm-logdir", str(tmp_path / "slurm"),
         "--configfile", str(overlay)],
        cwd=repo_root, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "localrule fetch_model:" in r.stdout + r.stderr
    rec = json.loads((target / MANIFEST).read_text())
    assert rec["revision"] == COMMIT and rec["thinker_only"]


def test_hub_errors_are_one_line(tmp_path, monkeypatch):
    import huggingface_hub

    def no_hub(self, repo_id, **kw):
        raise OSError("Connection refused\nmore")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", no_hub)
    with pytest.raises(ShalaError, match=r"Qwen/Tiny-Omni@main: the hub does not answer \(Connection refused\)"):
        fetch_model(_cfg(), tmp_path / "m")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.gpu_first_run
def test_pinning_the_fetched_commit_fetches_nothing(tmp_path, mirror):
    """README: copy the MANIFEST's commit into model.revision to pin the run.
    Pinning the commit the folder already holds neither fetches again (the
    mirror is gone by then) nor gives the workflow anything to rerun; a
    different commit would."""
    import os
    import shutil
    import subprocess
    import sys

    import yaml

    from shala.model.hub import revision_key

    root, _ = mirror
    own = tmp_path / "mirror"
    shutil.copytree(root, own)
    repo_root = Path(__file__).resolve().parents[2]
    bin_dir = Path(sys.executable).parent
    res = tmp_path / "res"
    target = res / "models" / "base" / "Qwen--Tiny-Omni-thinker"
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "HF_HUB_OFFLINE": "1"}

    def snakemake(revision, *args):
        overlay = tmp_path / "o.yaml"
        overlay.write_text(yaml.safe_dump({"results": str(res), "model_mirror": str(own),
                                           "model": _cfg(dtype="float32", revision=revision)}))
        r = subprocess.run([str(bin_dir / "snakemake"), str(target), "--cores", "1", "--nolock",
                            "--configfile", str(overlay), *args],
                           cwd=repo_root, capture_output=True, text=True, timeout=300, env=env)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        return r.stdout + r.stderr

    snakemake(None)  # fetched from the mirror at its commit
    rec = json.loads((target / MANIFEST).read_text())
    assert (rec["revision"], rec["revision_requested"]) == (COMMIT, "main")
    stamp = (target / MANIFEST).stat().st_mtime_ns
    shutil.rmtree(own)  # from here on, a fetch would fail
    assert revision_key(_cfg(revision=COMMIT), target) == revision_key(_cfg(revision=None), target) == "main"
    assert revision_key(_cfg(revision="f" * 40), target) == "f" * 40
    out = snakemake(COMMIT, "-n")
    assert "Nothing to be done" in out and "fetch_model" not in out, out
    assert fetch_model(_cfg(revision=COMMIT), target, model_mirror=own) == target  # by hand: nothing fetched
    assert (target / MANIFEST).stat().st_mtime_ns == stamp
    assert "fetch_model" in snakemake("f" * 40, "-n")  # another commit is a change
