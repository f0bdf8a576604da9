"""The pooled out-of-sample rank quality, AutoSurrogate's focus, and the width features."""

from __future__ import annotations

import numpy as np
import pytest
from sg_helpers import table_for

from surrogates import AutoSurrogate, GenomeFeatures, HawqProxy, pooled_rank_quality


def test_pooled_rank_quality_overall_and_frontier_band() -> None:
    measured = np.array([0.97, 0.95, 0.93, 0.90, 0.60, 0.30])
    q = pooled_rank_quality(measured, measured - 0.02, best_margin=0.05)
    assert q["pooled_tau"] == pytest.approx(1.0) and q["pooled_tau_top"] == pytest.approx(1.0)
    assert q["pooled_mae"] == pytest.approx(0.02)
    assert q["n"] == 6 and q["n_top"] == 3  # 0.97, 0.95 and 0.93 are within 5 points
    # right between the bands, wrong inside the top one: the overall tau hides it
    pred = np.array([0.93, 0.95, 0.97, 0.90, 0.60, 0.30])
    r = pooled_rank_quality(measured, pred)
    assert r["pooled_tau_top"] == pytest.approx(-1.0) and r["pooled_tau"] > 0.5
    # the band is measured from the run's best, which may be no round candidate
    s = pooled_rank_quality(measured, pred, best=0.99)
    assert s["n_top"] == 2 and s["pooled_tau_top"] == pytest.approx(-1.0)
    assert pooled_rank_quality(measured, pred, best=0.99, best_margin=0.0)["n_top"] == 0


def test_pooled_rank_quality_degenerate_inputs() -> None:
    e = pooled_rank_quality([], [])
    assert e["n"] == 0 and np.isnan(e["pooled_tau"]) and np.isnan(e["pooled_mae"])
    one = pooled_rank_quality([0.9], [0.8])
    assert np.isnan(one["pooled_tau"]) and one["pooled_mae"] == pytest.approx(0.1)
    assert np.isnan(pooled_rank_quality([0.9, 0.8], [0.5, 0.5])["pooled_tau"])
    with pytest.raises(ValueError, match="length"):
        pooled_rank_quality([0.9, 0.8], [0.9])
    with pytest.raises(ValueError, match="best_margin"):
        pooled_rank_quality([0.9, 0.8], [0.9, 0.8], best_margin=-0.1)


def test_auto_focus_prefers_the_candidate_that_ranks_the_best_points() -> None:
    # column 0 ranks the 30 worst points perfectly and the 10 best backwards; column 1
    # ranks the 10 best perfectly and the rest backwards
    y = np.arange(40) / 40.0
    x0 = np.where(y < 0.75, y, 1.75 - y)
    x1 = np.where(y < 0.75, 0.75 - y, y)
    X = np.column_stack([x0, x1])
    cands = [("col0", HawqProxy(column=0, increasing=True)),
             ("col1", HawqProxy(column=1, increasing=True))]
    plain = AutoSurrogate(candidates=cands, cv=4).fit(X, y)
    focus = AutoSurrogate(candidates=cands, cv=4, focus=0.25).fit(X, y)
    assert plain.best_name_ == "col0"
    assert focus.best_name_ == "col1"
    assert focus.cv_scores_["col1"] > focus.cv_scores_["col0"]
    with pytest.raises(ValueError, match="focus"):
        AutoSurrogate(candidates=cands, focus=1.5).fit(X, y)


def test_width_features_see_a_layer_cut_to_one_channel(tanh_setup, tanh_profile) -> None:
    model, data = tanh_setup
    table = table_for(model, data[0][0][:2])
    top = len(table.w_choices) - 1
    g = np.full((2, table.n_genes), 0, dtype=np.int8)
    g[:, : table.n_w_genes] = top
    g[:, table.n_w_genes:] = len(table.a_choices) - 1
    first = slice(table.layer_start[0], table.layer_start[1])
    n0 = first.stop - first.start
    g[1, first.start + 1 : first.stop] = 0  # all but one channel of layer 0 pruned
    tf = GenomeFeatures(table, tanh_profile).fit(g)
    names = list(tf.get_feature_names_out())
    f = tf.transform(g)
    col = {n: f[:, names.index(n)] for n in names}
    widths = np.diff(table.layer_start)
    assert col["min_log_kept"][0] == pytest.approx(np.log2(1 + widths.min()))
    assert col["min_log_kept"][1] == pytest.approx(1.0)  # log2(1 + 1 kept channel)
    assert col["max_pruned_share"].tolist() == pytest.approx([0.0, (n0 - 1) / n0])
    name0 = table.layers[0].name
    assert col[f"log_kept[{name0}]"].tolist() == pytest.approx([np.log2(1 + n0), 1.0])
    off = GenomeFeatures(table, tanh_profile, widths=False).fit(g)
    assert not any("kept" in n for n in off.get_feature_names_out())
    assert off.transform(g).shape[1] == f.shape[1] - 2 - table.n_layers
