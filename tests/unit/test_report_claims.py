"""Claim 4's rule on BC by ambiguity level: a run whose BC rises has not degraded."""

from shala.report.claims import degradation_against


def _against(bc):
    deg = {r: d["low"] - d["high"] for r, d in bc.items()}
    return degradation_against(bc, "low", "high", deg, [r for r in bc if r.startswith("shala")])


def test_the_papers_pattern_supports():
    # the paper's ChaosNLI shape: every run drops, shala least, mls most
    assert _against({"zs": {"low": 0.90, "high": 0.85}, "mls": {"low": 0.97, "high": 0.69},
                     "shala": {"low": 0.98, "high": 0.95}}) == []


def test_a_shala_run_at_the_ceiling_ties_runs_that_improve():
    # the control's shape: zs and mls answer flat, so their BC rises with
    # ambiguity; shala is 1.000 at both ends. shala is not "beaten" by the
    # rising runs, and mls does not degrade at all
    got = _against({"zs": {"low": 0.668, "high": 0.945}, "mls": {"low": 0.727, "high": 0.860},
                    "shala": {"low": 1.000, "high": 0.9995}})
    assert got == ["mls does not degrade (BC 0.727 → 0.860)"]


def test_another_run_degrading_least_or_most_refutes():
    got = _against({"zs": {"low": 0.90, "high": 0.89}, "mls": {"low": 0.95, "high": 0.80},
                    "shala": {"low": 0.99, "high": 0.90}, "sft_soft": {"low": 0.99, "high": 0.70}})
    assert got == ["zs degrades least, not a SHALA run", "sft_soft degrades most, not mls"]


def test_drops_within_the_tie_tolerance_count_as_equal():
    # shala drops 0.004 more than zs: within BC_TIE (0.005), so still among the least
    assert _against({"zs": {"low": 0.900, "high": 0.880}, "shala": {"low": 0.900, "high": 0.876},
                     "mls": {"low": 0.95, "high": 0.60}}) == []
