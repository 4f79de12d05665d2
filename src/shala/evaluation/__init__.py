"""Evaluation: predictions and their scores (docs/design.md §6).

Batched greedy prediction of a model (``predict``), the model-free
reference predictors (``reference``), the metrics registry (``metrics``),
``shala evaluate`` (``evaluate``) and the paired tests and intervals the
report uses (``significance``). Only ``predict`` needs a model library.
"""
