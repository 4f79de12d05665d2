"""The `shala` command line: exit codes and one-line errors."""

import json
import subprocess
import sys
from pathlib import Path

from conftest import SHARED_DATA, needs_shared_data

ROOT = Path(__file__).resolve().parents[2]


def _cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "shala", *args], capture_output=True, text=True, cwd=cwd)


def _row(i, completion):
    return {"id": f"i{i}", "dataset": "d", "subset": None, "inputs": {"text": "t"}, "labels": ["a", "b"],
            "counts": [1, 3], "dist": [0.25, 0.75], "n_annotators": 4, "majority": "b",
            "entropy_norm": 0.811278, "n_active": 2, "ambiguity": "high", "split": "test",
            "completion": completion}


def test_help_lists_every_step():
    r = _cli("--help")
    for cmd in ("prepare", "fetch-data", "reference", "evaluate", "fetch-model", "predict", "train", "sft", "report"):
        assert cmd in r.stdout


def test_evaluate_cli_round_trip_and_errors(tmp_path):
    pred = tmp_path / "p.jsonl"
    rows = [_row(0, '{"a": 0.25, "b": 0.75}'), _row(1, "no idea")]
    pred.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "m.json"
    r = _cli("evaluate", "--predictions", str(pred), "--out", str(out))
    assert r.returncode == 0, r.stderr
    m = json.loads(out.read_text())
    assert m["parse_failure_rate"] == 0.5 and m["on_parse_failure"] == "uniform"
    assert "parse_failure_rate=0.5000" in r.stdout

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(rows[0]) + "\n" + '{"id": "x", \n')
    out2 = tmp_path / "m2.json"
    r = _cli("evaluate", "--predictions", str(bad), "--out", str(out2))
    assert r.returncode == 2
    assert f"{bad}:2: malformed JSON" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not out2.exists()

    nocomp = tmp_path / "nocomp.jsonl"
    row = _row(0, "x")
    del row["completion"]
    nocomp.write_text(json.dumps(row) + "\n")
    r = _cli("evaluate", "--predictions", str(nocomp), "--out", str(out2))
    assert r.returncode == 2 and "field 'completion'" in r.stderr and f"{nocomp}:1" in r.stderr


def test_config_error_is_one_line(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("results: [1, 2\n")
    r = _cli("predict", "--dataset", "chaosnli", "--data", ".", "--model", ".", "--out", "x",
             "--config", str(cfg), cwd=tmp_path)
    assert r.returncode == 2 and "invalid YAML" in r.stderr and str(cfg) in r.stderr


def test_free_port_prints_distinct_bindable_ports():
    import socket

    ports = [int(_cli("free-port").stdout) for _ in range(2)]
    for port in ports:
        with socket.socket() as sock:
            sock.bind(("", port))  # free: it binds
    assert ports[0] != ports[1] and all(1024 <= p < 65536 for p in ports)


def test_fetch_data_msp_without_source_names_the_field(tmp_path):
    r = _cli("fetch-data", "msp_podcast", "--out", str(tmp_path / "raw"), "--config", str(ROOT / "config.yaml"))
    assert r.returncode == 2
    assert "datasets.msp_podcast.source: msp_podcast data is licensed" in r.stderr
    assert not (tmp_path / "raw").exists()


@needs_shared_data("chaosnli")
def test_fetch_data_from_mirror_checks_sha256(tmp_path):
    import yaml

    mirror = tmp_path / "mirror" / "chaosnli"
    mirror.mkdir(parents=True)
    src = SHARED_DATA / "chaosnli"
    for f in ("chaosNLI_snli.jsonl", "chaosNLI_mnli_m.jsonl"):
        (mirror / f).write_bytes((src / f).read_bytes())
    overlay = tmp_path / "o.yaml"
    overlay.write_text(yaml.safe_dump({"data_mirror": str(tmp_path / "mirror")}))
    out = tmp_path / "raw"
    r = _cli("fetch-data", "chaosnli", "--out", str(out), "--config", str(ROOT / "config.yaml"),
             "--config", str(overlay))
    assert r.returncode == 0, r.stderr
    manifest = json.loads((out / "MANIFEST.json").read_text())
    assert manifest["sha256"]["chaosNLI_snli.jsonl"].startswith("99f9015d")
    with (mirror / "chaosNLI_snli.jsonl").open("a") as fh:  # corrupt the mirror
        fh.write("\n")
    r = _cli("fetch-data", "chaosnli", "--out", str(tmp_path / "raw2"), "--config", str(ROOT / "config.yaml"),
             "--config", str(overlay))
    assert r.returncode == 2 and "sha256 mismatch" in r.stderr and "chaosNLI_snli.jsonl" in r.stderr
    assert not (tmp_path / "raw2").exists()
