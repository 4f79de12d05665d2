"""config/README.md's *demo* column states what the CPU demo runs with.

A reference page that states values the demo no longer uses (an old
learning rate, step count or dataset list) misleads whoever reads it to
understand or change the demo. This reads the hand-written tables (not the
generated trl-defaults block) and checks every demo cell against the merged
config of config.yaml + config/demo.yaml (``shala.config.load_config``, schema
defaults filled in):

- a table belongs to the section of the nearest ``##``/``###`` heading that is
  one dotted path in backticks (``training.grpo``; "Top level" is the root);
  tables without a ``demo`` fourth column (e.g. training.peft's one_gpu) and
  headings that are not a path are skipped;
- rows whose default cell links to their own section (``[below](...)``) are
  skipped (their keys are checked there), and so are ``files[]`` rows;
- an empty demo cell: the demo's value equals config.yaml's (missing in both
  counts as equal); a non-empty one must differ from config.yaml's and be
  exactly one backticked value, or, in ``<name>`` sections, ``name: `value```
  entries joined by ``; `` naming every entry whose value differs. Any other
  text (prose) fails, so no stale value can hide in it;
- a value compares to the cell as text when it is a string (```""``` is the
  empty string), numerically when it is a number, else as ``yaml.safe_load``.
"""

import math
import re
from pathlib import Path

import yaml

from shala.plan import load_config

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "config" / "README.md"
BASE = load_config([ROOT / "config.yaml"])
DEMO = load_config([ROOT / "config.yaml", ROOT / "config" / "demo.yaml"])
MISSING = type("Unset", (), {"__repr__": lambda self: "unset"})()
ENTRY = re.compile(r"(\w+): `([^`]*)`")


def _rows():
    """(section path, key, default cell, demo cell) of every hand-written row."""
    text = README.read_text(encoding="utf-8")
    head, rest = text.split("<!-- trl-defaults:begin", 1)
    text = head + rest.split("<!-- trl-defaults:end -->", 1)[1]
    section, demo_table = None, False
    for line in text.splitlines():
        if m := re.match(r"#{2,3} (.*)$", line):
            title = m.group(1).strip()
            path = re.fullmatch(r"`([^`\s]+)`", title)
            section = "" if title == "Top level" else (path.group(1) if path else None)
        elif line.startswith("| key |"):
            demo_table = [c.strip() for c in line.strip("|").split("|")][3] == "demo"
        elif section is not None and demo_table and (m := re.match(r"\| `([^`]+)` \|", line)):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
            yield section, m.group(1), cells[2], cells[3]


def _get(config, parts):
    for p in parts:
        if not isinstance(config, dict) or p not in config:
            return MISSING
        config = config[p]
    return config


def _same(raw, value):
    if isinstance(value, str):
        return raw == value or (raw == '""' and value == "")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return math.isclose(float(raw), value)
        except ValueError:
            return False
    return yaml.safe_load(raw) == value


def _check(where, cell, demo, base, errors):
    if not cell:
        if demo != base:
            errors.append(f"{where}: demo cell empty, but the demo has {demo!r} (config.yaml: {base!r})")
        return
    m = re.fullmatch(r"`([^`]*)`", cell)
    if demo is MISSING or demo == base or not m or not _same(m.group(1), demo):
        errors.append(f"{where}: demo cell {cell!r}, but the demo has {demo!r} (config.yaml: {base!r})")


def test_demo_column_matches_the_demo_config():
    errors, rows = [], list(_rows())
    assert {s for s, *_ in rows} >= {"", "model", "training.grpo", "evaluation", "datasets.<name>.prompt"}
    for section, key, default, cell in rows:
        if "[below](" in default or "[" in key:
            continue
        parts = (section.split(".") if section else []) + key.split(".")
        where = f"{section + '.' if section else ''}{key}"
        if "<name>" not in parts:
            _check(where, cell, _get(DEMO, parts), _get(BASE, parts), errors)
            continue
        i = parts.index("<name>")
        names = _get(DEMO, parts[:i])
        differ = [n for n in names
                  if _get(DEMO, parts[:i] + [n] + parts[i + 1:]) != _get(BASE, parts[:i] + [n] + parts[i + 1:])]
        entries = dict(ENTRY.findall(cell))
        if "; ".join(f"{n}: `{v}`" for n, v in entries.items()) != cell or sorted(entries) != sorted(differ):
            errors.append(f"{where}: demo cell {cell!r} must list exactly {differ} as `name: `value``")
        for n, raw in entries.items():
            _check(f"{where}[{n}]", f"`{raw}`", _get(DEMO, parts[:i] + [n] + parts[i + 1:]),
                   _get(BASE, parts[:i] + [n] + parts[i + 1:]), errors)
    assert not errors, "config/README.md demo column is stale:\n" + "\n".join(errors)
