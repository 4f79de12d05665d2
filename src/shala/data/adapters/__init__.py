"""Dataset adapters: raw files -> canonical items (docs/design.md §3).

Each adapter is a module with

- ``NAME``: the adapter name used in ``config.yaml`` (``datasets.X.adapter``);
- ``AMBIGUITY``: the ambiguity scheme, ``"entropy"`` or ``"active"``
  (see :mod:`shala.data.items`);
- ``LICENSED`` (optional, default False): the data cannot be downloaded and
  exists only where ``datasets.X.source`` names a local copy; without one
  the workflow leaves the dataset out (:func:`shala.config.available_datasets`);
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

Adding a dataset: write one module here and register it in :data:`ADAPTERS`.
"""

from __future__ import annotations

from types import ModuleType

from ...errors import ConfigError
from . import chaosnli, control, generic, goemotions, msp_podcast

ADAPTERS: dict[str, ModuleType] = {
    m.NAME: m for m in (chaosnli, goemotions, msp_podcast, generic, control)
}


def get_adapter(name: str) -> ModuleType:
    try:
        return ADAPTERS[name]
    except KeyError:
        raise ConfigError(f"unknown adapter {name!r}; known: {', '.join(ADAPTERS)}") from None


def item_text_fields(name: str, options: dict | None) -> list[str]:
    """The input names the items of adapter ``name`` carry, with these options."""
    adapter = get_adapter(name)
    derive = getattr(adapter, "text_fields", None)
    return list(derive(options) if derive is not None else adapter.TEXT_FIELDS)
