"""Every config knob is documented: a description in the schema, a row in config/README.md."""

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "src" / "shala" / "schemas" / "config.schema.json").read_text(encoding="utf-8"))
README = ROOT / "config" / "README.md"


def _is_object(node) -> bool:
    return isinstance(node, dict) and (node.get("type") == "object" or "properties" in node)


def _documented_nodes(node, path):
    """(dotted path, schema) of every property below ``node``, recursively,
    and of every object schema under ``additionalProperties`` (``<name>``) or
    ``items`` (``[]``) of an array."""
    for key, sub in (node.get("properties") or {}).items():
        yield f"{path}.{key}" if path else key, sub
        yield from _documented_nodes(sub, f"{path}.{key}" if path else key)
    extra = node.get("additionalProperties")
    if _is_object(extra):
        yield f"{path}.<name>", extra
        yield from _documented_nodes(extra, f"{path}.<name>")
    items = node.get("items")
    if _is_object(items):
        yield f"{path}[]", items
        yield from _documented_nodes(items, f"{path}[]")


def test_every_schema_property_has_a_description():
    nodes = list(_documented_nodes(SCHEMA, ""))
    # the walk reaches every level: top level, blocks, registries, nested objects
    paths = {p for p, _ in nodes}
    for expected in ("results", "model.source", "methods.<name>", "methods.<name>.overrides",
                     "training.grpo.scale_rewards", "training.warmup_sft", "evaluation.limit",
                     "report.min_pred_spread", "datasets.<name>", "datasets.<name>.split.train",
                     "datasets.<name>.download.files[]", "datasets.<name>.download.files[].sha256",
                     "datasets.<name>.prompt.response_prefix"):
        assert expected in paths, expected
    missing = [p for p, sub in nodes
               if not isinstance(sub.get("description"), str) or not sub["description"].strip()]
    assert not missing, f"schema properties without a description: {missing}"


def _second_level_keys(schema):
    """Top-level keys and the keys one level below them (through the
    ``<name>`` entries of the methods and datasets registries)."""
    keys = set()
    for top, sub in schema["properties"].items():
        keys.add(top)
        keys.update(sub.get("properties") or {})
        extra = sub.get("additionalProperties")
        if isinstance(extra, dict):
            keys.update(extra.get("properties") or {})
    return keys


def test_readme_lists_every_top_and_second_level_key():
    text = README.read_text(encoding="utf-8")
    # keys as the tables write them, in code spans (`key`) or in headings
    documented = set(re.findall(r"`([^`\s]+)`", text))
    keys = _second_level_keys(SCHEMA)
    assert {"results", "grpo", "trainer", "adapter", "on_parse_failure"} <= keys
    missing = sorted(k for k in keys if k not in documented)
    assert not missing, f"config/README.md does not mention: {missing}"


def test_readme_states_how_overlays_merge():
    head = README.read_text(encoding="utf-8").split("\n## ", 1)[0]
    assert "overlay" in head and "config.schema.json" in head


def _optional_properties(node, path=""):
    """(dotted path, schema) of every property its parent does not require,
    recursively (through ``<name>`` registry entries and array items)."""
    required = set(node.get("required") or [])
    for key, sub in (node.get("properties") or {}).items():
        p = f"{path}.{key}" if path else key
        if key not in required:
            yield p, sub
        yield from _optional_properties(sub, p)
    extra = node.get("additionalProperties")
    if _is_object(extra):
        yield from _optional_properties(extra, f"{path}.<name>")
    items = node.get("items")
    if _is_object(items):
        yield from _optional_properties(items, f"{path}[]")


def test_every_optional_property_has_a_default_or_says_what_unset_means():
    """Defaults live in the schema (Snakemake's validate and shala.config fill
    them alike); a property left without one says why in its description:
    what unset means that no single value does (derived from other fields,
    required by another field's value, machine-dependent)."""
    optional = dict(_optional_properties(SCHEMA))
    assert {"report.min_pred_spread", "datasets.<name>.prompt.task", "datasets.<name>.download.files[].sha256",
            "datasets.<name>.methods", "training.warmup_sft.enabled"} <= set(optional)
    silent = [p for p, sub in optional.items()
              if "default" not in sub and not re.search(r"\bunset\b", sub.get("description", ""))]
    assert not silent, f"optional schema properties with neither a default nor a stated reason: {silent}"


def test_every_default_is_valid_for_its_own_property():
    import jsonschema

    bad = [(p, err.message) for p, sub in _optional_properties(SCHEMA) if "default" in sub
           for err in jsonschema.Draft202012Validator(sub).iter_errors(sub["default"])]
    assert not bad, bad


def test_trl_defaults_tables_are_current():
    """config/README.md's generated block is what scripts/trl_defaults_table.py
    writes from the configs and the installed TRL now."""
    import subprocess
    import sys

    text = README.read_text(encoding="utf-8")
    assert text.count("<!-- trl-defaults:begin") == 1 and text.count("<!-- trl-defaults:end -->") == 1
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "trl_defaults_table.py"), "--check"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    block = text.split("<!-- trl-defaults:begin", 1)[1].split("<!-- trl-defaults:end -->", 1)[0]
    for field in SCHEMA["properties"]["training"]["properties"]["grpo"]["required"]:  # every setup sets them
        assert f"| `{field}` |" in block, field
