"""The baselines' linear cost tables, built through the run's Objectives, equal the ones
the baselines derived by themselves before (reference computations written down from
that code), on the demo space: memory, bitops, MPIC energy/cycles and PULP latency."""

from __future__ import annotations

import functools
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import hwmodels
from evomp import SearchSpace
from evomp.baselines._diff_common import cost_lut, layer_options
from evomp.baselines._ilp import budget_cost, layer_table
from evomp.objectives import Objectives
from evomp.tasks import cnn1d
from hwmodels import BitBatch, HardwareModel, LayerTable


@functools.cache
def demo_space(pin: str = "none") -> SearchSpace:
    """The space of ``runs/demo.toml``: cnn1d on MNIST-1D, w {0,2,4,8}, a {2,4,8}
    (``pin="pinned"``: first layer 8/8, last layer 4-bit weights and 8-bit input)."""
    torch.manual_seed(0)
    return SearchSpace.from_model(cnn1d(), torch.zeros(1, 1, 40), w_bits=(0, 2, 4, 8),
                                  a_bits=(2, 4, 8), pin=PINS[pin])


# ------------------------------------------------- reference: the ILP's old probe
def old_ilp_table(table: LayerTable, model: HardwareModel, metric: str
                  ) -> tuple[np.ndarray, np.ndarray]:
    """``(w_coef, a_coef)`` as ``budget_cost`` computed them before (one breakdown per row)."""
    is_memory = isinstance(model, hwmodels.MemoryModel) and metric == "memory_bytes"
    probe = "weight_bytes" if is_memory else metric
    pins = {lay.a_pinned for lay in table.layers if lay.a_pinned is not None}
    a_lev = np.array(sorted(set(table.a_choices) | pins), dtype=np.int64)
    w_ch = list(table.w_choices)
    wpins = sorted({lay.w_pinned for lay in table.layers if lay.w_pinned is not None})
    w_lev = sorted(set(w_ch) | set(wpins) | {0})
    pairs = [(w, a) for w in w_lev for a in a_lev.tolist()]
    wb = np.array([[w] * table.n_channels for w, _ in pairs], dtype=np.int64)
    ab = np.array([[a] * table.n_layers for _, a in pairs], dtype=np.int64)
    batch = BitBatch.from_bits(table, wb, ab)
    rows = [model.breakdown_batch(batch, r) for r in range(len(pairs))]
    f = np.array([[row[probe] for row in r] for r in rows])
    f = f.reshape(len(w_lev), len(a_lev), table.n_layers).transpose(2, 0, 1)
    out_ch = np.array([max(lay.out_channels, 1) for lay in table.layers], dtype=np.float64)
    zero = w_lev.index(0)
    sel = [w_lev.index(w) for w in w_ch]
    w_coef = (f[:, sel, :] - f[:, zero:zero + 1, :]) / out_ch[:, None, None]
    a_coef = f[:, zero, :].copy()
    for i, lay in enumerate(table.layers):
        if lay.w_pinned is not None:
            a_coef[i] = f[i, w_lev.index(lay.w_pinned), :]
            w_coef[i] = 0.0
    return w_coef, a_coef


# ---------------------------------------- reference: the differentiable baselines' old LUTs
def old_cost_lut(table: LayerTable, kind: str, options: list, hw: dict,
                 run_models: list[str]) -> list[np.ndarray]:
    """The per-channel LUTs as ``cost_lut`` computed them before (its own formulas for
    ``size``/``bitops``/``mpic``, one breakdown per bit pair otherwise)."""
    luts = []
    if kind in ("size", "bitops", "mpic"):
        rates = hwmodels.get("mpic", **hw.get("mpic", {})).rates if kind == "mpic" else None
        for lay, (w_opts, a_opts) in zip(table.layers, options, strict=True):
            m = np.zeros((len(a_opts), len(w_opts)))
            for j, a in enumerate(a_opts):
                for i, w in enumerate(w_opts):
                    if w == 0:
                        continue
                    if kind == "size":
                        m[j, i] = lay.fan_in * w
                    elif kind == "bitops":
                        m[j, i] = lay.macs_per_channel * a * w
                    else:
                        m[j, i] = lay.macs_per_channel / rates[(a, w)]
            luts.append(m)
        return luts
    model_name, _, metric = kind.rpartition(":")
    model = None
    if not model_name:
        for h in run_models:
            cand = hwmodels.get(h, table=table, **hw.get(h, {}))
            if metric in cand.metrics:
                model, model_name = cand, h
                break
    if model is None:
        model_name = model_name or hwmodels.metric_owner(metric)
        model = hwmodels.get(model_name, table=table, **hw.get(model_name, {}))
    pairs = sorted({(a, w) for wo, ao in options for a in ao for w in wo if w > 0})
    wb = np.zeros((len(pairs), table.n_channels), dtype=np.int64)
    ab = np.zeros((len(pairs), table.n_layers), dtype=np.int64)
    for k, (a, w) in enumerate(pairs):
        for li, (wo, ao) in enumerate(options):
            wb[k, table.layer_start[li]:table.layer_start[li + 1]] = w if w in wo else max(wo)
            ab[k, li] = a if a in ao else max(ao)
    batch = BitBatch.from_bits(table, wb, ab)
    rows = [model.breakdown_batch(batch, k) for k in range(len(pairs))]
    for li, (lay, (wo, ao)) in enumerate(zip(table.layers, options, strict=True)):
        m = np.zeros((len(ao), len(wo)))
        for j, a in enumerate(ao):
            for i, w in enumerate(wo):
                if w > 0:
                    m[j, i] = rows[pairs.index((a, w))][li][metric] / max(lay.out_channels, 1)
        luts.append(m)
    return luts


# ------------------------------------------------------------------------- tests
ILP_METRICS = ["memory_bytes", "weight_bytes", "bitops", "mpic_cycles", "energy_uj"]
PINS = {"none": None, "pinned": {"conv1": 8, "fc": [4, 8]}}


@pytest.mark.parametrize("pin", sorted(PINS))
@pytest.mark.parametrize("granularity", ["channel", "layer"])
@pytest.mark.parametrize("metric", ILP_METRICS)
def test_ilp_tables_through_objectives_equal_the_old_probe(metric: str, granularity: str,
                                                           pin: str) -> None:
    space = demo_space(pin)
    obj = Objectives(space.table, ("accuracy", "memory_bytes", "energy_uj"),
                     hardware=("memory", "bitops", "mpic", "pulp"))
    t = layer_table(space.table, granularity)
    model = obj.lookup(metric)
    cost = budget_cost(t, model, metric)
    w_ref, a_ref = old_ilp_table(t, model, metric)
    np.testing.assert_allclose(cost.w_coef, w_ref, rtol=1e-12, atol=0)
    np.testing.assert_allclose(cost.a_coef, a_ref, rtol=1e-12, atol=0)


def test_ilp_still_refuses_pulp_latency_on_the_demo_space() -> None:
    from evomp._errors import EvompError

    space = demo_space()
    obj = Objectives(space.table, ("accuracy", "latency_cycles"), hardware=("pulp",))
    with pytest.raises(EvompError, match="freebits"):
        budget_cost(space.table, obj.lookup("latency_cycles"), "latency_cycles")


LUT_KINDS = ["size", "bitops", "mpic", "energy_uj", "mpic_cycles", "latency_cycles",
             "latency_ms", "weight_bytes", "pulp:latency_cycles", "memory:weight_bytes"]
HW = {"mpic": {"power_mw": 6.0}, "pulp": {"preset": "xpulpnn", "launch_cycles": 300.0}}


@pytest.mark.parametrize("options", ["layerwise", "channelwise", "edmips", "bayesbits"])
@pytest.mark.parametrize("pin", sorted(PINS))
@pytest.mark.parametrize("kind", LUT_KINDS)
def test_cost_luts_through_objectives_equal_the_old_formulas(kind: str, pin: str,
                                                             options: str) -> None:
    space = demo_space(pin)
    ctx = SimpleNamespace(space=space)
    opts = {
        "layerwise": layer_options(ctx, drop_zero=True),
        "channelwise": layer_options(ctx),
        "edmips": layer_options(ctx, drop_zero=True, keep_first_last=True),
        "bayesbits": [(w if len(w) == 1 else (2, 4, 8), a if len(a) == 1 else (2, 4, 8))
                      for w, a in layer_options(ctx)],
    }[options]
    run_models = ["memory", "pulp"]
    obj = Objectives(space.table, ("accuracy", "memory_bytes"), hardware=run_models,
                     hw_params=HW)
    got = cost_lut(ctx, kind, opts, obj)
    want = old_cost_lut(space.table, kind, opts, HW, run_models)
    assert len(got) == len(want) == space.table.n_layers
    for g, w in zip(got, want, strict=True):
        assert g.dtype == torch.float32
        np.testing.assert_array_equal(g.numpy(), torch.tensor(w, dtype=torch.float32).numpy())


def test_cost_lut_without_objectives_builds_the_runs_own() -> None:
    """A caller that passes no Objectives gets the ones the CLI builds from the spec."""
    space = demo_space("pinned")
    spec = SimpleNamespace(hw=HW, search=SimpleNamespace(hardware=("memory", "pulp")))
    ctx = SimpleNamespace(space=space, spec=spec)
    opts = layer_options(ctx)
    obj = Objectives(space.table, ("accuracy", "memory_bytes"), hardware=("memory", "pulp"),
                     hw_params=HW)
    for kind in ("size", "mpic", "latency_cycles", "energy_uj"):
        for a, b in zip(cost_lut(ctx, kind, opts), cost_lut(ctx, kind, opts, obj),
                        strict=True):
            assert torch.equal(a, b)


def test_cost_lut_refuses_what_does_not_add_up() -> None:
    from evomp._errors import EvompError

    space = demo_space()
    ctx = SimpleNamespace(space=space)
    obj = Objectives(space.table, ("accuracy", "memory_bytes"), hardware=("memory",))
    with pytest.raises(EvompError, match="does not add up"):
        cost_lut(ctx, "activation_bytes", layer_options(ctx), obj)
    with pytest.raises(EvompError, match="evomp hw list"):
        cost_lut(ctx, "joules", layer_options(ctx), obj)
    cost_lut(ctx, "latency_cycles", layer_options(ctx), obj)  # a model kept aside
    assert list(obj.models) == ["memory"]
    g = np.zeros((1, space.table.n_genes), np.int8)
    assert set(obj.costs(g)) == {"memory_bytes", "weight_bytes", "activation_bytes"}
