"""The documents stay true to the tree.

- README.md's Layout and config/README.md's file table list every config
  file (``config/*.yaml``, ``config/*.json``) and every profile
  (``profiles/<name>/``), and no config or profile that either document
  names anywhere is missing from the tree;
- README.md is a guide: at most 350 lines, linking the documents that hold
  what it leaves out (docs/measured.md, docs/design.md, docs/paper_run.md);
- no document cites a SPEC, a file no clone contains (README.md, config/,
  docs/).
"""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
CONFIG_README = ROOT / "config" / "README.md"
# `config/demo.yaml`, `profiles/one-gpu`; not `.config/config.yaml` or `src/.../config.schema.json`
CONFIG_REF = re.compile(r"(?<![\w./-])config/([\w.-]+\.(?:yaml|json))\b")
PROFILE_REF = re.compile(r"(?<![\w./-])profiles/([\w-]+)")
TEXT_SUFFIXES = {".md", ".yaml", ".yml", ".json", ".jsonl", ".csv", ".tex", ".txt", ".log"}


def _files():
    configs = {p.name for p in (ROOT / "config").iterdir() if p.suffix in (".yaml", ".json")}
    profiles = {p.name for p in (ROOT / "profiles").iterdir() if p.is_dir()}
    return configs, profiles


def _section(text: str, heading: str) -> str:
    """The text under ``heading`` (a ``## `` line) up to the next ``## `` heading."""
    start = text.index(f"\n{heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else len(text)]


def _refs(text: str):
    return set(CONFIG_REF.findall(text)), set(PROFILE_REF.findall(text))


@pytest.mark.parametrize("doc,heading", [
    (README, "## Layout"),
    (CONFIG_README, "## Files in `config/` and `profiles/`"),
])
def test_file_lists_match_the_tree(doc, heading):
    configs, profiles = _files()
    assert {"demo.yaml", "one_gpu.yaml", "byod_cpu.yaml", "ds_zero3.json"} <= configs
    assert {"demo", "one-gpu", "slurm"} <= profiles
    listed_configs, listed_profiles = _refs(_section(doc.read_text(encoding="utf-8"), heading))
    assert listed_configs == configs, (f"{doc.name} {heading}: not listed {sorted(configs - listed_configs)}, "
                                       f"listed but missing {sorted(listed_configs - configs)}")
    assert listed_profiles == profiles, (f"{doc.name} {heading}: not listed {sorted(profiles - listed_profiles)}, "
                                         f"listed but missing {sorted(listed_profiles - profiles)}")


@pytest.mark.parametrize("doc", [README, CONFIG_README], ids=["README.md", "config/README.md"])
def test_no_document_names_a_missing_config_or_profile(doc):
    configs, profiles = _files()
    named_configs, named_profiles = _refs(doc.read_text(encoding="utf-8"))
    assert not named_configs - configs, sorted(named_configs - configs)
    assert not named_profiles - profiles, sorted(named_profiles - profiles)


def test_readme_is_a_guide_that_links_the_rest():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 350
    for doc in ("docs/measured.md", "docs/design.md", "docs/paper_run.md"):
        assert f"]({doc}" in text, f"README.md does not link {doc}"
        assert (ROOT / doc).is_file(), doc


def test_no_document_cites_a_spec():
    docs = [README, *(p for d in ("config", "docs") for p in sorted((ROOT / d).rglob("*"))
                      if p.is_file() and p.suffix in TEXT_SUFFIXES)]
    assert len(docs) > 10
    citing = [str(p.relative_to(ROOT)) for p in docs
              if re.search(r"\bSPEC\b", p.read_text(encoding="utf-8", errors="replace"))]
    assert not citing, f"documents citing a SPEC: {citing}"
