"""BitBatch decoding: per-layer level counts against a brute-force reference."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from hwmodels import BitBatch, Layer, LayerTable


@st.composite
def tables(draw):  # type: ignore[no-untyped-def]
    n_layers = draw(st.integers(1, 4))
    w_choices = tuple(sorted(draw(st.sets(st.sampled_from([0, 1, 2, 3, 4, 6, 8]),
                                          min_size=1, max_size=5))))
    a_choices = tuple(sorted(draw(st.sets(st.sampled_from([2, 4, 8]), min_size=1))))
    layers = []
    for i in range(n_layers):
        c = draw(st.integers(1, 7))
        wp = draw(st.sampled_from([None, None, 8, 5]))
        ap = draw(st.sampled_from([None, None, 8]))
        layers.append(Layer(f"l{i}", "linear", 4, c, (), 1, 4, 4, (4,), (c,), True, wp, ap))
    gran = draw(st.sampled_from(["channel", "layer"]))
    return LayerTable(tuple(layers), w_choices, a_choices, gran)


def reference_counts(table: LayerTable, w: np.ndarray, levels: np.ndarray) -> np.ndarray:
    out = np.zeros((w.shape[0], table.n_layers, levels.shape[0]), dtype=np.int64)
    for r in range(w.shape[0]):
        for c in range(table.n_channels):
            out[r, table.channel_layer[c], np.searchsorted(levels, w[r, c])] += 1
    return out


@settings(max_examples=60, deadline=None)
@given(tables(), st.integers(0, 5), st.integers(0, 2**31))
def test_counts_match_reference(table: LayerTable, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    g = (rng.random((n, table.n_genes)) * table.gene_n_levels).astype(np.int8)
    b = BitBatch.from_genomes(table, g)
    w, a = table.decode(g)
    assert np.array_equal(b.counts, reference_counts(table, w, b.levels))
    assert np.array_equal(b.a_bits, a)
    assert np.array_equal(b.w_bits, w)
    bb = BitBatch.from_bits(table, w, a)
    assert np.array_equal(bb.counts, reference_counts(table, w, bb.levels))
    assert np.array_equal(b.w_bit_sum, bb.w_bit_sum)
    assert np.array_equal(b.groups, bb.groups)
    assert np.array_equal(b.kept, bb.kept)
    ref_groups = [[len(set(w[r, table.channel_layer == i]) - {0}) for i in range(table.n_layers)]
                  for r in range(n)]
    assert b.groups.tolist() == ref_groups


def test_genome_dtypes() -> None:
    lay = Layer("l", "linear", 4, 3, (), 1, 4, 4, (4,), (3,))
    t = LayerTable((lay,), (0, 2, 4, 8), (2, 8))
    g = np.array([[3, 1, 0, 1]])
    ref = BitBatch.from_genomes(t, g.astype(np.int8)).counts
    for dt in (np.int64, np.uint8, np.float64):
        assert np.array_equal(BitBatch.from_genomes(t, g.astype(dt)).counts, ref)
    assert np.array_equal(BitBatch.from_genomes(t, g[0]).counts, ref)


def test_counts_of_wide_layers() -> None:
    """Layers wider than one 255-word chunk (2040 channels) and of odd widths."""
    sizes = [2041, 5000, 3, 4096]
    layers = tuple(Layer(f"l{i}", "linear", 4, c, (), 1, 4, 4, (4,), (c,))
                   for i, c in enumerate(sizes))
    t = LayerTable(layers, (0, 2, 4, 8), (8,))
    rng = np.random.default_rng(0)
    g = (rng.random((5, t.n_genes)) * t.gene_n_levels).astype(np.int8)
    g[0, : t.n_w_genes] = 3  # every channel at the top level: largest lane sums
    b = BitBatch.from_genomes(t, g)
    w = t.weight_bits(g)
    ref = np.stack([np.stack([(w[:, t.channel_layer == i] == v).sum(1) for v in (0, 2, 4, 8)], 1)
                    for i in range(len(sizes))], 1)
    assert np.array_equal(b.counts, ref)
    assert np.array_equal(BitBatch.from_bits(t, w, t.act_bits(g)).counts, ref)
