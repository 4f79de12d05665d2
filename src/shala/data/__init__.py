"""Data: raw files in, canonical items out (docs/design.md §3).

Fetching a dataset's raw files (``download``), the dataset adapters that
read them (``adapters/``), the canonical item with its ambiguity levels and
seeded splits (``items``), and ``shala prepare`` (``prepare``). Nothing here
needs a model library: the light rules run it.
"""
