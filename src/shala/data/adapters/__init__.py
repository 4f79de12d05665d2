"""Dataset adapters: raw files -> canonical items (docs/design.md §3).

Each adapter is a module with

- ``NAME``: the adapter name used in ``config.yaml`` (``datasets.X.adapter``);
- ``AMBIGUITY``: the ambiguity scheme, ``"entropy"`` or ``"active"``
  (see :mod:`shala.data.items`);
- ``LICENSED`` (optional, default False): the data cannot be downloaded and
  exists only where ``datasets.X.source`` names a local copy; without one
  the workflow leaves the dataset out (:func:`shala.plan.make_plan`);
- ``SYNTHETIC`` (optional, default False): the items are generated from the
  options alone (no raw files; ``source`` is ignored). Such an adapter also
  has ``check_options(options) -> dict`` (resolved options, with ``seed``),
  which ``shala fetch-data`` records in a file-less MANIFEST.json;
- ``TEXT_FIELDS``: the input names every item carries (``premise``,
  ``hypothesis``), the placeholders a prompt ``target`` may use; an adapter
  whose items' inputs depend on its options has ``text_fields(options)``
  instead (generic). Both are read through :func:`item_text_fields`, so a
  typo in a prompt stops the plan, not the first model job;
- ``load(source: Path, options: dict, seed: int) -> list[dict]``: canonical
  items built with :func:`shala.data.items.make_item`, ``split`` left as None
  (or set, for an adapter told to keep the source's own splits).

Adding a dataset: write one module here. Its ``NAME`` is its declaration:
every module of this package that has one is in :data:`ADAPTERS` (helper
modules such as ``generic_readers`` have none), so there is no list to edit.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType
from typing import Any

from ...registry import Registry


def discover() -> Registry[ModuleType]:
    """The adapter modules of this package, by module name: an adapter is
    declared by its own ``NAME``, in its own file."""
    found: Registry[ModuleType] = Registry("adapter")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "NAME"):
            found.add(module.NAME, module)
    return found


ADAPTERS = discover()


def get_adapter(name: str) -> ModuleType:
    """The adapter a dataset config names; an unknown name raises ConfigError (one line)."""
    return ADAPTERS[name]


def is_licensed(dataset_config: dict[str, Any]) -> bool:
    """Whether a dataset has no download route: its adapter declares
    ``LICENSED``, so the data exists only where ``source`` names a local copy."""
    return bool(getattr(get_adapter(dataset_config["adapter"]), "LICENSED", False))


def item_text_fields(name: str, options: dict | None) -> list[str]:
    """The input names the items of adapter ``name`` carry, with these options."""
    adapter = get_adapter(name)
    derive = getattr(adapter, "text_fields", None)
    return list(derive(options) if derive is not None else adapter.TEXT_FIELDS)
