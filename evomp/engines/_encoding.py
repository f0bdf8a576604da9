"""Compact genome encoding: per layer, the share of channels at each bit level.

Channels are assigned in importance order (the most sensitive channels get the highest
bits), so a layer of any width costs ``len(w_choices)`` numbers, and the encoding stays
small however many channels there are. Used by the Optuna engine and by the
sensitivity-ordered initial designs of both engines.
"""

from __future__ import annotations

import numpy as np

from hwmodels import LayerTable

__all__ = ["CompactEncoding", "importance_rank"]


def importance_rank(table: LayerTable, importance: np.ndarray) -> np.ndarray:
    """Rank of each channel inside its layer, 0 = most important.

    Args:
        table: the layer table.
        importance: ``(n_channels,)`` higher = more important.

    Returns:
        ``(n_channels,)`` int ranks.
    """
    imp = np.asarray(importance, dtype=float)
    if imp.shape != (table.n_channels,):
        raise ValueError(f"importance must be ({table.n_channels},), got {imp.shape}")
    # sort by (layer, -importance); stable so ties keep channel order
    order = np.lexsort((-imp, table.channel_layer))
    rank = np.empty(table.n_channels, dtype=np.int64)
    pos = np.arange(table.n_channels) - table.layer_start[table.channel_layer[order]]
    rank[order] = pos
    return rank


class CompactEncoding:
    """Per-layer bit-level shares plus activation bits, decoded to full genomes.

    Parameters (per searched layer ``L``): ``w.L.<bits>`` in ``[0, 1]`` for each weight
    choice (channel-wise spaces; normalised to shares) or one ordinal ``w.L`` (layer-wise
    spaces), and ``a.L`` (an index into the activation choices).

    Args:
        table: the layer table.
        importance: ``(n_channels,)`` channel importance (e.g. Hessian x error); the
            weight norm is a fine fallback.
    """

    def __init__(self, table: LayerTable, importance: np.ndarray) -> None:
        self.table = table
        self.rank = importance_rank(table, importance)
        self.w_layers = [i for i, lay in enumerate(table.layers) if lay.w_pinned is None]
        self.a_layers = [i for i, lay in enumerate(table.layers) if lay.a_pinned is None]
        self.K = len(table.w_choices)
        names: list[str] = []
        for i in self.w_layers:
            n = table.layers[i].name
            if table.granularity == "channel":
                names += [f"w.{n}.{b}" for b in table.w_choices]
            else:
                names.append(f"w.{n}")
        names += [f"a.{table.layers[i].name}" for i in self.a_layers]
        self.names = names

    @property
    def n_params(self) -> int:
        return len(self.names)

    def decode(self, P: np.ndarray) -> np.ndarray:
        """Genomes of a batch of parameter vectors.

        Args:
            P: ``(n, n_params)`` floats: shares in ``[0, 1]`` (channel-wise) or level
                indices (layer-wise and activations), in the order of :attr:`names`.

        Returns:
            ``(n, n_genes)`` int8 genomes.
        """
        P = np.atleast_2d(np.asarray(P, dtype=float))
        t = self.table
        n = P.shape[0]
        g = np.zeros((n, t.n_genes), dtype=np.int8)
        col = 0
        wg = t.w_gene_of_channel
        for i in self.w_layers:
            s, e = t.layer_start[i], t.layer_start[i + 1]
            C = e - s
            genes = wg[s:e]
            if t.granularity == "layer":
                g[:, genes[0]] = np.clip(np.rint(P[:, col]), 0, self.K - 1)
                col += 1
                continue
            shares = np.clip(P[:, col : col + self.K], 0, None) + 1e-9
            col += self.K
            shares = shares / shares.sum(axis=1, keepdims=True)
            counts = _largest_remainder(shares, C)  # (n, K), level 0 = lowest bits
            # highest level first: channels of rank < counts[K-1] get level K-1, ...
            cum_top = np.cumsum(counts[:, ::-1], axis=1)  # (n, K)
            r = self.rank[s:e]  # (C,)
            k_from_top = (r[None, :, None] >= cum_top[:, None, :]).sum(axis=2)  # (n, C)
            g[:, genes] = (self.K - 1 - np.minimum(k_from_top, self.K - 1)).astype(np.int8)
        ka = len(t.a_choices)
        for i in self.a_layers:
            g[:, t.a_gene_of_layer[i]] = np.clip(np.rint(P[:, col]), 0, ka - 1)
            col += 1
        return g

    def encode(self, genomes: np.ndarray) -> np.ndarray:
        """``(n, n_params)`` parameters holding each genome's share of channels per bit level
        (channel-wise), its level (layer-wise) and its activation levels.

        ``decode(encode(g))`` has the same per-layer bit mix as ``g``, with the bits given
        in importance order (equal to ``g`` when ``g`` itself is importance-ordered).
        """
        G = np.atleast_2d(np.asarray(genomes)).astype(np.int64)
        t = self.table
        cols = []
        wg = t.w_gene_of_channel
        for i in self.w_layers:
            genes = wg[t.layer_start[i] : t.layer_start[i + 1]]
            if t.granularity == "layer":
                cols.append(G[:, genes[:1]].astype(float))
                continue
            lv = G[:, genes]  # (n, C)
            cols.append((lv[:, :, None] == np.arange(self.K)[None, None, :]).mean(axis=1))
        for i in self.a_layers:
            cols.append(G[:, [t.a_gene_of_layer[i]]].astype(float))
        return np.concatenate(cols, axis=1) if cols else np.zeros((len(G), 0))

    def random_params(self, n: int, rng: np.random.Generator, concentration: float = 1.0
                      ) -> np.ndarray:
        """``(n, n_params)`` random parameters: Dirichlet shares, uniform levels."""
        t = self.table
        cols = []
        for _ in self.w_layers:
            if t.granularity == "channel":
                cols.append(rng.dirichlet(np.full(self.K, concentration), size=n))
            else:
                cols.append(rng.integers(0, self.K, (n, 1)).astype(float))
        ka = len(t.a_choices)
        for _ in self.a_layers:
            cols.append(rng.integers(0, ka, (n, 1)).astype(float))
        return np.concatenate(cols, axis=1) if cols else np.zeros((n, 0))


def _largest_remainder(shares: np.ndarray, total: int) -> np.ndarray:
    """Integer counts ``(n, K)`` summing to ``total`` closest to ``shares * total``."""
    raw = shares * total
    base = np.floor(raw).astype(np.int64)
    left = total - base.sum(axis=1)
    frac = raw - base
    order = np.argsort(-frac, axis=1, kind="stable")
    bump = np.arange(shares.shape[1])[None, :] < left[:, None]
    add = np.zeros_like(base)
    np.put_along_axis(add, order, bump.astype(np.int64), axis=1)
    return base + add
