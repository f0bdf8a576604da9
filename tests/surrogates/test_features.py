from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sg_helpers import table_for
from sklearn.base import clone
from sklearn.pipeline import make_pipeline

import surrogates._features as feat
from surrogates import HAWQ_TOTAL, GenomeFeatures, HawqProxy


def _slow_features(table, prof, genome, per_layer=True, log_terms=True, eps=None,
                   widths=True):
    """Per-genome reference written from the definitions, with python loops."""
    wb = table.weight_bits(genome[None])[0]
    ab = table.act_bits(genome[None])[0]
    n_l = table.n_layers
    w_term, a_term = np.zeros(n_l), np.zeros(n_l)
    for c in range(table.n_channels):
        b = int(wb[c])
        if b in prof.w_choices:
            err = prof.w_err[c, prof.w_choices.index(b)]
        else:
            top = max(prof.w_choices)
            err = prof.w_err[c, prof.w_choices.index(top)] * 4.0 ** (top - b)
        h = 0.5 * max(prof.w_sens[c], 0.0) / prof.w_numel[c]
        w_term[table.channel_layer[c]] += h * err
    for i in range(n_l):
        b = int(ab[i])
        if b in prof.a_choices:
            noise = prof.a_noise[i, prof.a_choices.index(b)]
        else:
            top = max(prof.a_choices)
            noise = prof.a_noise[i, prof.a_choices.index(top)] * 4.0 ** (top - b)
        a_term[i] = 0.5 * prof.a_sens[i] * prof.a_numel[i] * noise
    if eps is None:
        return w_term, a_term
    tot_w, tot_a = w_term.sum(), a_term.sum()
    ew, ea = eps
    row = [tot_w + tot_a, tot_w, tot_a, np.log10(tot_w + tot_a + ew.sum() + ea.sum()),
           np.log10(tot_w + ew.sum()), np.log10(tot_a + ea.sum())]
    n_ch = table.n_channels
    row += [np.sum(wb == b) / n_ch for b in table.w_choices]
    fan = np.array([table.layers[table.channel_layer[c]].fan_in for c in range(n_ch)])
    row += [np.sum(fan * wb) / (fan.sum() * max(table.w_choices)), np.sum(wb == 0) / n_ch,
            ab.mean()]
    kept, pruned = [], []
    for i in range(n_l):  # channels with a nonzero bit-width, and the pruned share
        sl = slice(table.layer_start[i], table.layer_start[i + 1])
        kept.append(np.log2(1 + np.count_nonzero(wb[sl])))
        pruned.append(np.mean(wb[sl] == 0))
    if widths:
        row += [min(kept), max(pruned)]
    if per_layer:
        row += list(np.log10(w_term + ew) if log_terms else w_term)
        row += list(np.log10(a_term + ea) if log_terms else a_term)
        for i in range(n_l):
            sl = slice(table.layer_start[i], table.layer_start[i + 1])
            row.append(wb[sl].mean())
        for i in range(n_l):
            sl = slice(table.layer_start[i], table.layer_start[i + 1])
            row.append(np.mean(wb[sl] == 0))
        if widths:
            row += kept
    return np.array(row)


def _eps(table, prof):
    top = np.zeros(table.n_genes, dtype=np.int64)
    top[: table.n_w_genes] = len(table.w_choices) - 1
    top[table.n_w_genes:] = len(table.a_choices) - 1
    w, a = _slow_features(table, prof, top)
    return 0.1 * w + 1e-30, 0.1 * a + 1e-30


def _random_genomes(table, n, rng):
    hi = table.gene_n_levels
    return (rng.random((n, table.n_genes)) * hi).astype(np.int8)


TABLES = {
    "channel": {},
    "pinned": {"conv1": (8, 8), "fc": (None, 4)},
    "pinned-off-choices": {"conv1": (16, 16)},
}


@pytest.mark.parametrize("pins", list(TABLES))
@pytest.mark.parametrize("granularity", ["channel", "layer"])
@pytest.mark.parametrize("per_layer,log_terms,widths", [
    (True, True, True), (True, False, True), (False, True, True), (True, True, False),
    (False, True, False)])
def test_vectorized_equals_slow_reference(tanh_setup, tanh_profile, rng, pins, granularity,
                                          per_layer, log_terms, widths) -> None:
    model, data = tanh_setup
    table = table_for(model, data[0][0][:2], pins=TABLES[pins], granularity=granularity)
    g = _random_genomes(table, 150, rng)  # crosses the 64-genome lookup blocks
    tf = GenomeFeatures(table, tanh_profile, per_layer=per_layer, log_terms=log_terms,
                        widths=widths).fit(g)
    got = tf.transform(g)
    eps = _eps(table, tanh_profile)
    want = np.stack([_slow_features(table, tanh_profile, row, per_layer, log_terms, eps,
                                    widths) for row in g])
    assert got.shape == want.shape == (150, len(tf.get_feature_names_out()))
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-14)


def test_chunking_and_unpacked_counts_agree(tanh_setup, tanh_profile, rng, monkeypatch) -> None:
    model, data = tanh_setup
    table = table_for(model, data[0][0][:2])
    g = _random_genomes(table, 300, rng)
    want = GenomeFeatures(table, tanh_profile).fit(g).transform(g)
    monkeypatch.setattr(feat, "_CHUNK", 7)
    monkeypatch.setattr(feat, "_SUB", 3)
    np.testing.assert_allclose(GenomeFeatures(table, tanh_profile).fit(g).transform(g), want)
    monkeypatch.setattr(GenomeFeatures, "_packed_lut", staticmethod(lambda *a: None))
    np.testing.assert_allclose(GenomeFeatures(table, tanh_profile).fit(g).transform(g), want)


@settings(max_examples=25, deadline=None)
@given(st.data())
def test_property_random_genomes(tanh_setup, tanh_profile, data) -> None:
    model, batches = tanh_setup
    table = table_for(model, batches[0][0][:2], pins={"fc": (8, None)})
    n = data.draw(st.integers(1, 5))
    rows = [[data.draw(st.integers(0, int(h) - 1)) for h in table.gene_n_levels]
            for _ in range(n)]
    g = np.array(rows, dtype=np.int64)
    tf = GenomeFeatures(table, tanh_profile).fit(g)
    eps = _eps(table, tanh_profile)
    want = np.stack([_slow_features(table, tanh_profile, r, True, True, eps) for r in g])
    np.testing.assert_allclose(tf.transform(g), want, rtol=1e-10, atol=1e-14)


def test_names_extra_columns_and_errors(tanh_table, tanh_profile, rng) -> None:
    g = _random_genomes(tanh_table, 10, rng)
    ptq = rng.random(10)
    X = np.column_stack([g, ptq])
    tf = GenomeFeatures(tanh_table, tanh_profile, n_extra=1).fit(X)
    out = tf.transform(X)
    names = tf.get_feature_names_out()
    assert names[0] == HAWQ_TOTAL and names[-1] == "extra_0"
    np.testing.assert_array_equal(out[:, -1], ptq)
    base = GenomeFeatures(tanh_table, tanh_profile).fit(g).transform(g)
    np.testing.assert_allclose(out[:, :-1], base)
    with pytest.raises(ValueError, match="genes of this space"):
        GenomeFeatures(tanh_table, tanh_profile).fit(X)
    bad = g.copy()
    bad[0, 0] = 4
    with pytest.raises(ValueError, match="outside"):
        GenomeFeatures(tanh_table, tanh_profile).fit(g).transform(bad)
    with pytest.raises(ValueError, match="integers"):
        GenomeFeatures(tanh_table, tanh_profile).fit(g).transform(g + 0.5)
    with pytest.raises(ValueError, match="features"):
        GenomeFeatures(tanh_table, tanh_profile).fit(g).transform(g[:, :-1])


def test_profile_mismatch_is_an_error(tanh_profile, rng) -> None:
    import torch
    from sg_helpers import TanhNet

    other = table_for(TanhNet(c1=3), torch.randn(2, 2, 6))
    g = _random_genomes(other, 3, rng)
    with pytest.raises(ValueError, match="compute the profile for this search space"):
        GenomeFeatures(other, tanh_profile).fit(g)


def test_transformer_contract(tanh_table, tanh_profile, rng) -> None:
    g = _random_genomes(tanh_table, 40, rng)
    tf = GenomeFeatures(tanh_table, tanh_profile)
    c = clone(tf)
    assert c.get_params()["table"] is not None and c.per_layer
    y = rng.random(40)
    pipe = make_pipeline(GenomeFeatures(tanh_table, tanh_profile), HawqProxy()).fit(g, y)
    mean, std = pipe.predict(g, return_std=True)
    assert mean.shape == std.shape == (40,)
    # the HAWQ total grows when every gene steps down one level
    lower = np.maximum(g.astype(np.int64) - 1, 0)
    f_hi, f_lo = tf.fit(g).transform(g)[:, 0], tf.transform(lower)[:, 0]
    assert np.all(f_lo >= f_hi - 1e-15)
    out = GenomeFeatures(tanh_table, tanh_profile).set_output(transform="pandas") \
        if _has_pandas() else None
    if out is not None:
        df = out.fit(g).transform(g)
        assert list(df.columns) == list(tf.get_feature_names_out())


def _has_pandas() -> bool:
    try:
        import pandas  # noqa: F401
    except ImportError:
        return False
    return True
