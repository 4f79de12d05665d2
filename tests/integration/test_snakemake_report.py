"""Snakemake's HTML report (`snakemake --report report.html`): after a
complete run on the tiny model, one self-contained page with every output of
the report stage (figures, tables, claims), each with its caption from
rules/report/, and the workflow's description on top.

The page is a JavaScript app: headless Chromium renders it (screenshot and
DOM). Without Chromium those checks skip, unless SHALA_REQUIRE_CHROMIUM=1
(CI installs Debian's `chromium`), where they fail."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import needs_shared_data
from test_rerun import complete_run, smk  # noqa: F401  (complete_run: a module fixture, the whole DAG)

ROOT = Path(__file__).resolve().parents[2]
CAPTIONS = ROOT / "rules" / "report"
FIGURES = ("fig_ambiguity.png", "fig_per_class.png", "fig_training.png")
CHROMIUM_MISSING = "headless Chromium not found on PATH (Debian package `chromium`)"


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    if os.environ.get("SHALA_REQUIRE_CHROMIUM") == "1":
        pytest.fail(f"SHALA_REQUIRE_CHROMIUM=1, but {CHROMIUM_MISSING}")
    pytest.skip(f"{CHROMIUM_MISSING}; SHALA_REQUIRE_CHROMIUM=1 makes this a failure")


def _script_var(page: str, script_id: str) -> object:
    """The JSON a report's `<script id=...>var x = {...};</script>` holds."""
    m = re.search(rf'<script id="{script_id}">\s*var \w+ = (.*?);\s*</script>', page, flags=re.S)
    assert m, f"no <script id={script_id}> in the report"
    return json.loads(m[1])


@pytest.fixture(scope="module")
def html_report(complete_run):  # noqa: F811
    work, _ = complete_run
    out = work / "html"
    out.mkdir()
    r = smk("--report", str(out / "report.html"), "--configfile", str(work / "base.yaml"))
    assert r.returncode == 0, r.stderr[-4000:]
    assert "Report created" in r.stdout + r.stderr
    return out


def test_every_caption_is_plain_project_wording():
    """One caption per report output (no "Other" fallback in use), no spec citations."""
    from shala.report import OUTPUTS

    text = (ROOT / "rules" / "report.smk").read_text()
    listed = set(re.findall(r'^\s+"([\w.]+)": \(', text, flags=re.M))
    assert set(OUTPUTS) <= listed, f"outputs without a caption in rules/report.smk: {set(OUTPUTS) - listed}"
    for caption in set(re.findall(r'"(\w+\.rst)"', text)):
        assert (CAPTIONS / caption).is_file(), caption
    for f in CAPTIONS.glob("*.rst"):
        assert "SPEC" not in f.read_text() and "§" not in f.read_text(), f


@needs_shared_data("chaosnli")
def test_report_is_one_self_contained_page(html_report):
    from shala.report import OUTPUTS

    assert [p.name for p in html_report.iterdir()] == ["report.html"]
    page = (html_report / "report.html").read_text(encoding="utf-8")
    assert len(page) > 500_000  # the JS app, the figures and tables embedded
    # nothing fetched from elsewhere: no remote scripts, styles or images
    assert not re.findall(r'''<(?:script|img|link|iframe)[^>]+(?:src|href)=["']?(?:https?:)?//''', page)
    results = _script_var(page, "results")
    by_name = {r["name"]: r for r in results.values()}
    assert set(by_name) == set(OUTPUTS)
    for name, r in by_name.items():
        assert r["data_uri"].startswith("data:"), name  # embedded, not linked
        assert len(r["caption"]) > 100, f"{name}: no caption"
    for fig in FIGURES:
        uri = by_name[fig]["data_uri"]
        assert uri.startswith("data:image/png;") and ";base64,iVBORw0KGgo" in uri  # a PNG, inline
        assert by_name[fig.replace(".png", ".pdf")]["mime_type"] == "application/pdf"
    assert "Table 1" in by_name["table1.csv"]["caption"]
    # the claims' verdicts are in the claims caption, read from claims.csv
    assert "<table" in by_name["claims.md"]["caption"] and "verdict" in by_name["claims.md"]["caption"]
    categories = _script_var(page, "categories")
    assert sorted(categories) == ["1. Tables", "2. Claims", "3. Figures", "4. Report page"]
    assert "Table 1: datasets × methods" in categories["1. Tables"]
    desc = _script_var(page, "workflow-desc")
    assert "SHALA-LLM" in desc and "chaosnli" in desc


@needs_shared_data("chaosnli")
def test_report_renders_in_headless_chromium(html_report, tmp_path):
    chromium = _chromium()
    url = (html_report / "report.html").as_uri()
    base = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--hide-scrollbars", f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000"]
    shot = tmp_path / "report.png"
    r = subprocess.run([*base, f"--screenshot={shot}", "--window-size=1280,2000", url],
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0 and shot.is_file(), r.stderr[-3000:]
    r = subprocess.run([*base, "--dump-dom", url], capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]

    # the page drew something: many colours, not one background
    try:
        from PIL import Image
    except ImportError:
        assert shot.stat().st_size > 50_000
    else:
        with Image.open(shot) as im:
            rgb = im.convert("RGB")
            colours = rgb.getcolors(1 << 24)
            assert len(colours) > 300, f"{len(colours)} colours: a blank page?"
            assert max(colours)[0] < 0.99 * rgb.width * rgb.height  # one background colour is not the whole page

    # what the app rendered (scripts and styles left out): its menu and the
    # workflow description with the result names
    visible = re.sub(r"<(script|style)\b.*?</\1>", " ", r.stdout, flags=re.S)
    visible = html.unescape(re.sub(r"<[^>]+>", " ", visible))
    for text in ("Results", "1. Tables", "2. Claims", "3. Figures", "Table 1", "table1.csv", "claims.md", *FIGURES):
        assert text in visible, f"{text!r} not on the rendered page"
