"""Registry, entry-point plugins and metric ownership."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import types
import warnings

import pytest

import hwmodels
from hwmodels import _registry


class Dummy(hwmodels.HardwareModel):
    """A test model."""

    name = "dummy_test_model"
    metrics = {"dummy_units": "units"}
    prune_monotone = frozenset(metrics)
    monotone = frozenset(metrics)
    parameters = {"scale": "multiplier"}

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__(scale=scale)
        self.scale = scale

    def _layer_cost(self, batch):  # type: ignore[no-untyped-def]
        return {"dummy_units": self.scale * batch.w_bit_sum}


@pytest.fixture
def clean_registry():  # type: ignore[no-untyped-def]
    before = dict(_registry._REGISTRY)
    errors = dict(_registry._PLUGIN_ERRORS)
    yield
    _registry._REGISTRY.clear()
    _registry._REGISTRY.update(before)
    _registry._PLUGIN_ERRORS.clear()
    _registry._PLUGIN_ERRORS.update(errors)


def test_builtins_available() -> None:
    assert {"memory", "bitops", "mpic", "pulp", "table", "callable"} <= set(hwmodels.available())


def test_register_get_and_duplicates(clean_registry) -> None:  # type: ignore[no-untyped-def]
    assert hwmodels.register(Dummy) is Dummy
    assert isinstance(hwmodels.get("dummy_test_model", scale=2.0), Dummy)
    with pytest.raises(ValueError, match="already registered"):
        hwmodels.register(Dummy)
    with pytest.raises(ValueError, match="already provided by model 'dummy_test_model'"):
        hwmodels.register(Dummy, name="other")
    with pytest.raises(ValueError, match="not a hwmodels.HardwareModel"):
        hwmodels.register(object)  # type: ignore[arg-type]
    assert hwmodels.metric_owner("dummy_units") == "dummy_test_model"


def test_unknown_names() -> None:
    with pytest.raises(ValueError, match="available: .*memory"):
        hwmodels.get("nosuch")
    with pytest.raises(ValueError, match="known: .*latency_cycles"):
        hwmodels.metric_owner("nosuch_metric")


def test_metric_owner_builtins() -> None:
    owners = {m: hwmodels.metric_owner(m) for m in (
        "memory_bytes", "weight_bytes", "activation_bytes", "bitops", "mpic_cycles",
        "energy_uj", "latency_cycles", "latency_ms")}
    assert owners["energy_uj"] == "mpic" and owners["latency_ms"] == "pulp"
    assert owners["bitops"] == "bitops" and owners["activation_bytes"] == "memory"


def test_describe() -> None:
    d = hwmodels.model_class("pulp").describe()
    assert d["metrics"]["latency_cycles"].startswith("cluster cycles")
    assert d["parameters"]["cores"]["default"] == 8
    assert d["parameters"]["preset"]["default"] == "gap8"
    assert hwmodels.model_class("callable").describe()["vectorized"] is False


class _EP:
    def __init__(self, name: str, value: str, load) -> None:  # type: ignore[no-untyped-def]
        self.name, self.value, self._load = name, value, load

    def load(self):  # type: ignore[no-untyped-def]
        return self._load()


def test_plugins_broken_one_does_not_break_the_others(clean_registry, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    def boom():  # type: ignore[no-untyped-def]
        raise ImportError("No module named 'mychip_sdk'")

    eps = [
        _EP("good_chip", "good:Dummy", lambda: Dummy),
        _EP("broken_chip", "broken:Model", boom),
        _EP("not_a_model", "bad:thing", lambda: types.SimpleNamespace()),
        _EP("memory", "clash:Memory", lambda: Dummy),
    ]
    seen = {}

    def fake_entry_points(*, group: str):  # type: ignore[no-untyped-def]
        seen["group"] = group
        return eps

    monkeypatch.setattr(importlib.metadata, "entry_points", fake_entry_points)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        errors = hwmodels.load_plugins(reload=True)
    assert seen["group"] == "evomp.hwmodels"
    assert set(errors) == {"broken_chip", "not_a_model", "memory"}
    assert "mychip_sdk" in errors["broken_chip"]
    assert any("broken_chip" in str(x.message) for x in w)
    assert "good_chip" in hwmodels.available()
    assert hwmodels.get("good_chip").cost(hwmodels.testing.toy_table(),
                                          hwmodels.testing.toy_table().uniform(8, 8))
    with pytest.raises(ValueError, match="plugin 'broken_chip' failed to load: ImportError"):
        hwmodels.get("broken_chip")
    # the built-in is untouched by the clashing plugin
    assert hwmodels.model_class("memory") is hwmodels.MemoryModel
    assert hwmodels.plugin_errors() == errors


def test_no_torch_or_evomp_at_import() -> None:
    code = ("import sys, hwmodels, hwmodels.testing; "
            "assert 'torch' not in sys.modules and 'evomp' not in sys.modules, "
            "sorted(m for m in sys.modules if m.startswith(('torch', 'evomp')))")
    subprocess.run([sys.executable, "-c", code], check=True)
