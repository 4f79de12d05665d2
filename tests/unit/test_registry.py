"""The one registry type (shala.registry) and the five registries built on it."""

from __future__ import annotations

import pytest

from shala.errors import ConfigError
from shala.registry import Registry


def test_an_unknown_name_is_one_line_naming_the_kind_and_the_known_names():
    reg: Registry[int] = Registry("colour")
    reg.add("red", 1)
    reg.add("blue", 2)
    with pytest.raises(ConfigError) as err:
        reg["green"]
    assert str(err.value) == "unknown colour 'green'; known: red, blue"
    with pytest.raises(ConfigError, match="unknown colour 'green'"):
        reg.meta("green")


def test_entries_keep_their_order_metadata_and_a_name_once():
    reg: Registry[object] = Registry("thing")

    @reg.register("f", adapters={"x"})
    def f():
        """An entry."""

    reg.add("g", len)
    assert reg["f"] is f and list(reg) == ["f", "g"] and len(reg) == 2
    assert "f" in reg and "h" not in reg and reg.get("h") is None
    assert reg.meta("f") == {"adapters": {"x"}} and reg.meta("g") == {}
    assert dict(reg.items()) == {"f": f, "g": len}
    with pytest.raises(ValueError, match="thing 'f' is already registered"):
        reg.add("f", f)
    assert reg.remove("f") is f and list(reg) == ["g"]


def test_each_kind_is_a_registry_declared_beside_its_entries():
    from shala.data import adapters
    from shala.evaluation import reference
    from shala.evaluation.metrics import REGISTRY
    from shala.report.figures import FIGURES, fig_training
    from shala.train.rewards import REWARDS, shala_reward

    ADAPTERS, REFERENCE_PREDICTORS, applies_to = adapters.ADAPTERS, reference.REFERENCE_PREDICTORS, reference.applies_to

    assert ADAPTERS["chaosnli"] is adapters.chaosnli  # found by its NAME, no list to edit
    assert REWARDS["shala"] is shala_reward and shala_reward.__name__ == "shala"  # TRL's log name
    assert REFERENCE_PREDICTORS["old_labels"] is reference.predict_old_labels
    assert not applies_to("old_labels", "goemotions") and applies_to("old_labels", "chaosnli")
    assert applies_to("prior", "goemotions")
    assert REGISTRY["jsd"].higher_is_better is False
    assert FIGURES["fig_training"] is fig_training and FIGURES.meta("fig_training")["caption"] == ""
    for reg, kind in ((ADAPTERS, "adapter"), (REWARDS, "reward"), (REFERENCE_PREDICTORS, "reference predictor"),
                      (REGISTRY, "metric"), (FIGURES, "figure")):
        with pytest.raises(ConfigError, match=f"^unknown {kind} 'nope'; known: "):
            reg["nope"]
