from __future__ import annotations

import numpy as np
import pytest
from sg_helpers import table_for

from surrogates import SensitivityProfile, sensitivity_order_genome


def _memory_share(table, genomes, ref_bits=8):
    wb = table.weight_bits(genomes)
    fan = np.array([lay.fan_in for lay in table.layers])[table.channel_layer]
    return (wb * fan).sum(1) / (fan.sum() * ref_bits)


@pytest.mark.parametrize("granularity", ["channel", "layer"])
def test_budgets_are_met_and_nested(tanh_setup, tanh_profile, granularity) -> None:
    model, data = tanh_setup
    table = table_for(model, data[0][0][:2], pins={"fc": (8, 8)}, granularity=granularity)
    budgets = np.linspace(0.0, 1.0, 21)
    g = sensitivity_order_genome(table, tanh_profile, budgets)
    assert g.shape == (21, table.n_genes) and g.dtype == np.int8
    table.check_genomes(g)
    mem = _memory_share(table, g)
    floor = _memory_share(table, sensitivity_order_genome(table, tanh_profile, 0.0))[0]
    assert np.all(mem <= np.maximum(budgets, floor) + 1e-12)
    # a larger budget never lowers a gene (the greedy order is a prefix)
    assert np.all(np.diff(g[:, : table.n_w_genes].astype(int), axis=0) >= 0)
    assert np.all(g[-1, : table.n_w_genes] == len(table.w_choices) - 1)
    assert np.all(g[:, table.n_w_genes:] == len(table.a_choices) - 1)


def test_least_sensitive_channels_go_first(tanh_table, tanh_profile) -> None:
    w_sens = np.ones(tanh_profile.n_channels)
    w_sens[[1, 6]] = 1e-6
    prof = SensitivityProfile(
        w_sens=w_sens, layer_trace=tanh_profile.layer_trace,
        w_err=np.ones_like(tanh_profile.w_err) * [100.0, 10.0, 1.0, 0.1],
        a_sens=tanh_profile.a_sens, a_noise=tanh_profile.a_noise,
        layer_names=tanh_profile.layer_names, w_choices=tanh_profile.w_choices,
        a_choices=tanh_profile.a_choices, w_numel=tanh_profile.w_numel,
        a_numel=tanh_profile.a_numel, a_signed=tanh_profile.a_signed, meta=tanh_profile.meta,
    )
    g = sensitivity_order_genome(tanh_table, prof, 0.97, a_bits=4)
    lowered = np.nonzero(g[0, : tanh_table.n_w_genes] < 3)[0]
    assert set(lowered.tolist()) <= {1, 6} and lowered.size >= 1
    assert np.all(g[0, tanh_table.n_w_genes:] == 1)
    no_prune = sensitivity_order_genome(tanh_table, prof, 0.0, allow_prune=False)
    assert no_prune[0, : tanh_table.n_w_genes].min() == 1
    with pytest.raises(ValueError, match="a_bits"):
        sensitivity_order_genome(tanh_table, prof, 0.5, a_bits=3)
    with pytest.raises(ValueError, match="budget"):
        sensitivity_order_genome(tanh_table, prof, -1.0)


def test_pruning_is_capped_per_layer(tanh_table, tanh_profile) -> None:
    t = tanh_table
    for share, allowed in ((0.75, [3, 3, 2]), (0.5, [2, 2, 1]), (1.0, [4, 5, 3])):
        g = sensitivity_order_genome(t, tanh_profile, 0.0, max_prune_share=share)
        wb = t.weight_bits(g)[0]
        pruned = [int((wb[t.layer_start[i]:t.layer_start[i + 1]] == 0).sum())
                  for i in range(t.n_layers)]
        assert pruned == allowed, (share, pruned)
