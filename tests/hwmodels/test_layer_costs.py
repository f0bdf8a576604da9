"""Public per-layer costs: HardwareModel.layer_cost and hwmodels.evaluate_layers."""

from __future__ import annotations

import numpy as np
import pytest

import hwmodels
from hwmodels import BitBatch, testing


def _extremes(t: hwmodels.LayerTable) -> np.ndarray:
    return np.stack([np.zeros(t.n_genes, np.int8), (t.gene_n_levels - 1).astype(np.int8)])


def test_layer_cost_by_hand_on_the_toy() -> None:
    """conv: 4 channels, fan-in 6, 48 MACs/channel, bias; fc: 3 channels, fan-in 32, 32."""
    t = testing.toy_table()
    g = _extremes(t)  # all pruned at 2-bit inputs; all 8-bit
    bit = hwmodels.get("bitops", table=t).layer_cost(t, g)
    np.testing.assert_array_equal(bit["bitops"], [[0, 0], [4 * 8 * 48 * 8, 3 * 8 * 32 * 8]])
    mem = hwmodels.get("memory", table=t).layer_cost(t, g)
    assert set(mem) == {"weight_bytes"}  # the peak activation buffer does not add up
    np.testing.assert_array_equal(mem["weight_bytes"],
                                  [[0, 0], [(4 * 8 * 6 + 4 * 64) / 8, (3 * 8 * 32 + 3 * 32) / 8]])
    mp = hwmodels.get("mpic", table=t).layer_cost(t, g)
    np.testing.assert_allclose(mp["mpic_cycles"][1], [4 * 48 / 2.1, 3 * 32 / 2.1], rtol=1e-12)
    np.testing.assert_allclose(mp["energy_uj"], mp["mpic_cycles"] * 5.38 / 250e3, rtol=1e-12)
    assert mp["mpic_cycles"].dtype == np.float64 and mp["mpic_cycles"].shape == (2, 2)


def test_evaluate_layers_over_several_models() -> None:
    t = testing.toy_table()
    g = testing.random_genomes(t, 12)
    models = [hwmodels.get(n, table=t) for n in ("memory", "bitops", "mpic", "pulp")]
    models.append(testing.example_model("callable", t))
    per = hwmodels.evaluate_layers(models, t, g)
    assert set(per) == {"weight_bytes", "bitops", "mpic_cycles", "energy_uj",
                        "latency_cycles", "latency_ms"}  # no peak, nothing from callable
    tot = hwmodels.evaluate(models, t, g)
    for m, v in per.items():
        assert v.shape == (12, t.n_layers)
        np.testing.assert_allclose(v.sum(axis=1), tot[m], rtol=1e-12)
    # an already decoded batch (bits outside the choices, e.g. 3-bit weights)
    w = np.full((1, t.n_channels), 3)
    a = np.full((1, t.n_layers), 5)
    b = hwmodels.evaluate_layers([models[1]], BitBatch.from_bits(t, w, a))
    np.testing.assert_array_equal(b["bitops"], [[4 * 3 * 48 * 5, 3 * 3 * 32 * 5]])


def test_evaluate_layers_refuses_clashes_and_bad_arguments() -> None:
    t = testing.toy_table()
    g = testing.random_genomes(t, 2)
    mem = hwmodels.get("memory", table=t)
    with pytest.raises(ValueError, match="provided by both"):
        hwmodels.evaluate_layers([mem, hwmodels.get("memory")], t, g)
    with pytest.raises(ValueError, match="needs genomes"):
        hwmodels.evaluate_layers([mem], t)
    with pytest.raises(ValueError, match="BitBatch alone"):
        hwmodels.evaluate_layers([mem], BitBatch.from_genomes(t, g), g)
    with pytest.raises(ValueError, match="no MACs-per-cycle figure"):  # bits checked
        hwmodels.get("mpic", table=t).layer_cost_bits(
            t, np.full((1, t.n_channels), 3), np.full((1, t.n_layers), 8))
    assert "evaluate_layers" in hwmodels.__all__


def test_contract_catches_per_layer_costs_that_do_not_add_up() -> None:
    class Drifts(hwmodels.HardwareModel):
        name = "drifts"
        metrics = {"drifts_cost": "made up"}

        def _layer_cost(self, batch):  # type: ignore[no-untyped-def]
            return {"drifts_cost": batch.w_bit_sum * 1.0}

        def _cost(self, batch):  # type: ignore[no-untyped-def]
            return {"drifts_cost": batch.w_bit_sum.sum(axis=1) + 1.0}  # not the layer sum

    t = testing.toy_table()
    with pytest.raises(AssertionError, match="sums to"):
        testing.check_layer_costs(Drifts(), t)
    testing.check_layer_costs(hwmodels.get("bitops", table=t), t)
