"""Which library versions produced a result, for the run records of
training, prediction and the probe.

Why on the lowest floor: every stage that writes a record names the same
libraries the same way, so records of different stages compare, and no
stage imports another stage to do it.
"""

from __future__ import annotations

LIBRARIES = ("torch", "transformers", "trl", "datasets", "accelerate", "peft", "shala")


def library_versions() -> dict[str, str | None]:
    """The installed version of each of :data:`LIBRARIES` (None: not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in LIBRARIES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out
