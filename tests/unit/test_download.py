"""``shala fetch-data`` routes (docs/design.md §9): the data mirror when its folder
exists, else the official download; sha256 checked either way. No test
touches the network: URLs are ``file://`` or the opener is replaced."""

import hashlib
import io
import json
import subprocess
import sys
import urllib.error
import zipfile
from pathlib import Path

import pytest
import yaml

from shala.data import download
from shala.errors import ConfigError, InputError, ShalaError
from shala.plan import load_config

ROOT = Path(__file__).resolve().parents[2]
CHAOS_URL = "https://www.dropbox.com/s/h4j7dqszmpt2679/chaosNLI_v1.0.zip?dl=1"
GOEMO_URL = "https://storage.googleapis.com/gresearch/goemotions/data/full_dataset/goemotions_1.csv"


def _config(tmp_path, overlay: dict) -> dict:
    o = tmp_path / "overlay.yaml"
    o.write_text(yaml.safe_dump(overlay))
    return load_config([ROOT / "config.yaml", o])


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


@pytest.fixture
def offline(monkeypatch):
    """The network is down: every URL opened is recorded, then fails."""
    calls = []

    def urlopen(url):
        calls.append(url)
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(download, "_urlopen", urlopen)
    return calls


def test_missing_mirror_falls_back_to_download_and_error_names_both_ways_out(tmp_path, offline):
    config = _config(tmp_path, {"data_mirror": str(tmp_path / "no-such-mirror")})
    out = tmp_path / "raw"
    with pytest.raises(ShalaError) as ei:
        download.fetch_data("chaosnli", config, out)
    assert offline == [CHAOS_URL]  # the official download was tried
    msg = str(ei.value)
    assert "data_mirror" in msg and CHAOS_URL in msg and "chaosnli" in msg and "reachable" in msg
    assert "chaosNLI_snli.jsonl" in msg  # the files the mirror folder must hold
    assert not out.exists() and list(tmp_path.glob(".raw.*")) == []


def test_per_file_download_error_names_the_failing_url(tmp_path, offline):
    config = _config(tmp_path, {"data_mirror": None})
    with pytest.raises(ShalaError, match="data_mirror") as ei:
        download.fetch_data("goemotions", config, tmp_path / "raw")
    assert offline == [GOEMO_URL] and GOEMO_URL in str(ei.value) and "goemotions" in str(ei.value)


def test_download_route_checks_sha256_and_records_the_route(tmp_path, monkeypatch):
    snli, mnli = b'{"uid": "s"}\n', b'{"uid": "m"}\n'
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("chaosNLI_v1.0/chaosNLI_snli.jsonl", snli)
        zf.writestr("chaosNLI_v1.0/chaosNLI_mnli_m.jsonl", mnli)
    calls = []

    def urlopen(url):
        calls.append(url)
        return io.BytesIO(buf.getvalue())

    monkeypatch.setattr(download, "_urlopen", urlopen)
    files = [{"name": "chaosNLI_snli.jsonl", "sha256": _sha(snli)}, {"name": "chaosNLI_mnli_m.jsonl", "sha256": None}]
    config = _config(tmp_path, {"data_mirror": str(tmp_path / "absent"),
                                "datasets": {"chaosnli": {"download": {"archive": CHAOS_URL, "files": files}}}})
    out = tmp_path / "raw"
    manifest = download.fetch_data("chaosnli", config, out)
    assert calls == [CHAOS_URL]
    assert manifest["origin"] == "download" and manifest["route"] == "download" and manifest["from"] == [CHAOS_URL]
    assert manifest["sha256"] == {"chaosNLI_snli.jsonl": _sha(snli), "chaosNLI_mnli_m.jsonl": _sha(mnli)}
    assert json.loads((out / "MANIFEST.json").read_text()) == manifest
    assert (out / "chaosNLI_snli.jsonl").read_bytes() == snli

    files[0]["sha256"] = "0" * 64  # a pinned checksum that does not match
    config = _config(tmp_path, {"data_mirror": None,
                                "datasets": {"chaosnli": {"download": {"archive": CHAOS_URL, "files": files}}}})
    with pytest.raises(InputError, match="sha256 mismatch"):
        download.fetch_data("chaosnli", config, tmp_path / "raw2")
    assert not (tmp_path / "raw2").exists()


def test_present_mirror_is_copied_without_network(tmp_path, offline):
    mirror = tmp_path / "mirror" / "chaosnli"
    mirror.mkdir(parents=True)
    files = []
    for name in ("chaosNLI_snli.jsonl", "chaosNLI_mnli_m.jsonl"):
        (mirror / name).write_bytes(name.encode())
        files.append({"name": name, "sha256": _sha(name.encode())})
    config = _config(tmp_path, {"data_mirror": str(tmp_path / "mirror"),
                                "datasets": {"chaosnli": {"download": {"archive": CHAOS_URL, "files": files}}}})
    manifest = download.fetch_data("chaosnli", config, tmp_path / "raw")
    assert offline == []
    assert manifest["route"] == "mirror" and manifest["origin"].startswith("mirror:")
    assert manifest["from"] == str(mirror)
    assert manifest["sha256"]["chaosNLI_snli.jsonl"] == files[0]["sha256"]


def test_no_mirror_and_no_url_is_a_config_error_naming_data_mirror(tmp_path, offline):
    config = load_config([ROOT / "config.yaml", ROOT / "config" / "byod.yaml"])
    config["data_mirror"] = str(tmp_path / "absent")
    del config["datasets"]["varierr"]["download"]   # a dataset of your own: no official URL
    with pytest.raises(ConfigError, match="data_mirror") as ei:
        download.fetch_data("varierr", config, tmp_path / "raw")
    assert "varierr/" in str(ei.value) and offline == []


def test_cli_unreachable_url_exits_2_naming_data_mirror_and_url(tmp_path):
    url = (tmp_path / "gone" / "chaosNLI_v1.0.zip").as_uri()  # fails at once, no network needed
    overlay = tmp_path / "o.yaml"
    overlay.write_text(yaml.safe_dump({"data_mirror": str(tmp_path / "absent"),
                                       "datasets": {"chaosnli": {"download": {"archive": url}}}}))
    out = tmp_path / "raw"
    r = subprocess.run([sys.executable, "-m", "shala", "fetch-data", "chaosnli", "--out", str(out),
                        "--config", str(ROOT / "config.yaml"), "--config", str(overlay)],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 2
    err = [ln for ln in r.stderr.splitlines() if "error:" in ln]
    assert len(err) == 1 and "data_mirror" in err[0] and url in err[0] and "chaosnli" in err[0]
    assert "not found; using the official download" in r.stderr  # the route is logged
    assert not out.exists()
