"""One registry type for the names that config.yaml and the report pick from code.

Dataset adapters, rewards, reference predictors, metrics and report figures
are each a table ``name -> entry``. They share one type so that every entry
is declared next to its definition (``@REWARDS.register("mls")`` or
``REGISTRY.add(name, entry)``), a newcomer adds one in one place, and a name
that is not there fails the same way everywhere: a
:class:`~shala.errors.ConfigError` of one line naming the kind and the known
names, which the CLI prints as it is. An entry may carry small metadata
(which adapters a reference predictor applies to, a figure's caption), kept
beside it rather than in a side table that can fall out of step.

This module sits on the lowest floor: it imports nothing from shala but
:mod:`shala.errors`.
"""

from __future__ import annotations

from collections.abc import Callable, ItemsView, Iterator, KeysView, Mapping, ValuesView
from typing import Any, TypeVar

from .errors import ConfigError

T = TypeVar("T")


class Registry(Mapping[str, T]):
    """Entries by name, in the order they were added, each with its metadata.

    A read-only mapping to its users (``in``, iteration, ``[]``, ``items()``);
    only :meth:`add` (or :meth:`register`, its decorator form) and
    :meth:`remove` change it.
    """

    def __init__(self, kind: str):
        self.kind = kind  # what an entry is, for messages: "adapter", "reward", ...
        self._entries: dict[str, T] = {}
        self._meta: dict[str, dict[str, Any]] = {}

    def add(self, name: str, entry: T, **meta: Any) -> T:
        """Add ``entry`` under ``name``; a name is taken once (a second add is a
        programming error, so ValueError, not ConfigError)."""
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = entry
        self._meta[name] = meta
        return entry

    def register(self, name: str, **meta: Any) -> Callable[[T], T]:
        """Decorator form of :meth:`add`; returns the entry unchanged."""
        def decorate(entry: T) -> T:
            return self.add(name, entry, **meta)
        return decorate

    def remove(self, name: str) -> T:
        """Take an entry out again (a test's temporary entry)."""
        entry = self[name]
        del self._entries[name], self._meta[name]
        return entry

    def meta(self, name: str) -> dict[str, Any]:
        """The metadata ``name`` was added with (empty when none)."""
        self[name]  # an unknown name raises ConfigError
        return self._meta[name]

    def __getitem__(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise ConfigError(f"unknown {self.kind} {name!r}; known: {', '.join(self._entries)}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def get(self, name: str, default: Any = None) -> Any:
        return self._entries.get(name, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def keys(self) -> KeysView[str]:
        return self._entries.keys()

    def values(self) -> ValuesView[T]:
        return self._entries.values()

    def items(self) -> ItemsView[str, T]:
        return self._entries.items()

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._entries)})"
