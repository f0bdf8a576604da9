"""Objectives: metrics resolved from model instances (table, callable), hardware required."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from evomp import BitConfig, EvompError
from evomp.objectives._objectives import Objectives
from hwmodels import Layer, LayerTable


def _table() -> LayerTable:
    layers = (
        Layer("c1", "conv1d", 1, 8, (3,), 1, 3, 3 * 16, (1, 16), (8, 16)),
        Layer("c2", "conv1d", 8, 12, (3,), 1, 24, 24 * 8, (8, 16), (12, 8), a_signed=False),
        Layer("fc", "linear", 96, 4, (), 1, 96, 96, (96,), (4,), a_signed=False),
    )
    return LayerTable(layers, (0, 2, 4, 8), (2, 4, 8), "channel")


def _latency_csv(t: LayerTable, path: Path, metric: str = "latency_us") -> Path:
    """Measured per-layer latency: macs x w x a / 1000 microseconds, every reachable entry."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["layer", "a_bits", "w_bits", metric])
        for lay in t.layers:
            for a in t.a_choices:
                for b in t.w_choices:
                    if b:
                        w.writerow([lay.name, a, b, lay.macs * a * b / 1000.0])
    return path


def test_table_metric_as_objective_and_constraint(tmp_path: Path) -> None:
    t = _table()
    csv_path = _latency_csv(t, tmp_path / "lat.csv")
    o = Objectives(t, ["accuracy", "latency_us"], ["latency_us <= 50"], hardware=["table"],
                   hw_params={"table": {"path": str(csv_path)}})
    assert list(o.models) == ["table"] and o.owners == {"latency_us": "table"}
    assert o.model_for("latency_us") is o.models["table"]
    G = np.concatenate([t.uniform(8, 8), t.uniform(2, 2)])
    costs = o.costs(G)
    macs = sum(lay.macs for lay in t.layers)
    np.testing.assert_allclose(costs["latency_us"], [macs * 64 / 1000, macs * 4 / 1000])
    F = o.matrix(np.array([0.9, 0.8]), costs)
    np.testing.assert_allclose(F[:, 1], costs["latency_us"])
    v = o.violation(np.array([0.9, 0.8]), costs)
    assert v.shape == (2, 1) and v[0, 0] > 0 and v[1, 0] == 0
    # a measured metric as a constraint next to a registered objective
    o2 = Objectives(t, ["accuracy", "memory_bytes"], ["latency_us <= 50"], hardware=["table"],
                    hw_params={"table": {"path": str(csv_path)}})
    assert set(o2.models) == {"table", "memory"}
    assert set(o2.costs(G)) >= {"latency_us", "memory_bytes"}


def test_unlisted_or_clashing_measured_metrics(tmp_path: Path) -> None:
    t = _table()
    with pytest.raises(EvompError, match="no hardware model provides metric 'latency_us'"):
        Objectives(t, ["accuracy", "latency_us"])
    clash = _latency_csv(t, tmp_path / "mem.csv", metric="memory_bytes")
    with pytest.raises(EvompError, match="'memory_bytes' is provided by both hardware models "
                                         "'memory' and 'table'"):
        Objectives(t, ["accuracy", "memory_bytes"], hardware=["memory", "table"],
                   hw_params={"table": {"path": str(clash)}})


def test_accuracy_alone_is_rejected() -> None:
    t = _table()
    with pytest.raises(EvompError, match="at least one hardware metric besides 'accuracy'"):
        Objectives(t, ["accuracy"], hardware=["memory"])
    with pytest.raises(EvompError, match="must include 'accuracy'"):
        Objectives(t, ["memory_bytes"])


def test_callable_model_receives_a_bitconfig() -> None:
    t = _table()
    seen: list[object] = []

    def measure(cfg: BitConfig) -> dict[str, float]:
        seen.append(cfg)
        return {"device_ms": float(sum(sum(b) for b in cfg.weights.values()))}

    o = Objectives(t, ["accuracy", "device_ms"], hardware=["callable"],
                   hw_params={"callable": {"fn": measure, "metrics": ["device_ms"]}})
    costs = o.costs(t.uniform(4, 8))
    assert seen and all(isinstance(c, BitConfig) for c in seen)
    cfg = seen[0]
    assert isinstance(cfg, BitConfig)
    assert cfg.weights["c1"] == (4,) * 8 and cfg.activations["fc"] == 8
    assert costs["device_ms"][0] == 4 * t.n_channels
    # a user's own config_factory is kept
    o2 = Objectives(t, ["accuracy", "device_ms"], hardware=["callable"],
                    hw_params={"callable": {"fn": lambda d: {"device_ms": len(d["weights"])},
                                            "metrics": ["device_ms"],
                                            "config_factory": dict}})
    assert o2.costs(t.uniform(8, 8))["device_ms"][0] == 3


# ------------------------------------------------------------ model look-up, per layer
def test_lookup_prefers_the_runs_models_and_keeps_others_aside() -> None:
    t = _table()
    o = Objectives(t, ["accuracy", "energy_uj"], hardware=["memory"],
                   hw_params={"mpic": {"power_mw": 10.0}, "pulp": {"preset": "xpulpnn"}})
    assert o.lookup("energy_uj") is o.models["mpic"] is o.model_for("mpic_cycles")
    lat = o.lookup("latency_cycles")  # no objective: built from its [hw.pulp] parameters
    assert lat.name == "pulp" and lat.get_params()["preset"] == "xpulpnn"
    assert o.lookup("latency_ms") is lat and o.model_named("pulp") is lat  # built once
    assert "pulp" not in o.models and "latency_cycles" not in o.costs(t.uniform(8, 8))
    proxy = o.lookup("weight_bytes", "memory", {"qparam_bits": 0, "bias_bits": 0})
    assert proxy is not o.models["memory"] and proxy.get_params()["qparam_bits"] == 0
    assert o.lookup("weight_bytes", "memory", {"qparam_bits": 0, "bias_bits": 0}) is proxy
    with pytest.raises(EvompError, match="no hardware model provides metric 'joules'"):
        o.lookup("joules")
    with pytest.raises(EvompError, match="has no metric 'bitops'"):
        o.lookup("bitops", "memory")
    with pytest.raises(EvompError, match="no hardware model named"):
        o.model_named("nosuchmodel")


def test_layer_costs_and_uniform_layer_costs() -> None:
    t = _table()
    o = Objectives(t, ["accuracy", "memory_bytes", "bitops"], hardware=["memory", "bitops"])
    G = np.concatenate([t.uniform(8, 8), t.uniform(2, 4)])
    per = o.layer_costs(G)
    assert set(per) == {"weight_bytes", "bitops"}  # the peak buffer does not add up
    costs = o.costs(G)
    for m, v in per.items():
        assert v.shape == (2, t.n_layers)
        np.testing.assert_allclose(v.sum(axis=1), costs[m], rtol=1e-12)
    mpc = np.array([lay.macs_per_channel for lay in t.layers])
    oc = np.array([lay.out_channels for lay in t.layers])
    np.testing.assert_array_equal(per["bitops"][1], oc * 2 * mpc * 4)
    assert list(o.layer_costs(G, ["bitops"])) == ["bitops"]
    with pytest.raises(EvompError, match="per layer"):
        o.layer_costs(G, ["memory_bytes"])
    # layer by layer bits, also outside the choices (3-bit weights) and pruned layers
    w = np.array([[8, 3, 0], [2, 2, 2]])
    a = np.array([[8, 5, 8], [2, 4, 8]])
    u = o.uniform_layer_costs("bitops", w, a)
    np.testing.assert_array_equal(u, oc * mpc * w * a)
    assert o.uniform_layer_costs("weight_bytes", w, a)[0, 2] == 0.0
    with pytest.raises(EvompError, match="does not add up"):
        o.uniform_layer_costs("activation_bytes", w, a)
    with pytest.raises(EvompError, match="no MACs-per-cycle figure"):
        o.uniform_layer_costs("mpic_cycles", w, a)
