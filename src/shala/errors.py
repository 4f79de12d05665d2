"""Error types whose messages name the file, line or field at fault.

The CLI turns a :class:`ShalaError` into one line on stderr and exit code 2,
so every message must stand on its own.
"""

from __future__ import annotations

from pathlib import Path


class ShalaError(Exception):
    """Any error the user can fix (bad input, bad config, missing file)."""


class InputError(ShalaError):
    """Bad input data, located as precisely as we can: ``file:line: field: why``."""

    def __init__(self, message: str, *, path: str | Path | None = None,
                 line: int | None = None, field: str | None = None):
        self.path = str(path) if path is not None else None
        self.line = line
        self.field = field
        self.reason = message
        where = ""
        if self.path is not None:
            where = self.path
            if line is not None:
                where += f":{line}"
        parts = [p for p in (where, f"field '{field}'" if field else "") if p]
        super().__init__(": ".join(parts + [message]) if parts else message)


class ConfigError(ShalaError):
    """Invalid configuration (schema violation, unknown dataset or method)."""
