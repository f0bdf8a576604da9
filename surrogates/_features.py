"""Genome batches to accuracy features: HAWQ-style sensitivity terms and bit statistics."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from hwmodels import LayerTable
from surrogates._sensitivity import SensitivityProfile

__all__ = ["GenomeFeatures", "channel_terms", "HAWQ_TOTAL"]

HAWQ_TOTAL = "hawq_total"
"""Name (and column 0) of the scalar HAWQ-style total: weight plus activation terms."""

_CHUNK = 2048  # genomes per feature block
_SUB = 64  # genomes per lookup block: the (64, n_genes) intp temporaries stay in cache


def channel_terms(table: LayerTable, profile: SensitivityProfile, bits: int | None = None
                  ) -> np.ndarray:
    """Second-order loss increase of quantizing each channel at each weight choice.

    ``term[c, j] = 0.5 * max(w_sens[c], 0) / w_numel[c] * w_err[c, j]``: HAWQ's
    ``Tr(H)/n * ||Q(W) - W||^2`` at channel granularity (negative Hutchinson estimates
    are clipped to 0).

    Args:
        table: the layer table the genomes belong to.
        profile: its sensitivity profile.
        bits: if given, return only the ``(n_channels,)`` column of that bit-width
            (bits above the largest choice extrapolate its error by ``4^-(b - b_max)``).

    Returns:
        ``(n_channels, len(table.w_choices))`` float64, or ``(n_channels,)`` with ``bits``.
    """
    _check_match(table, profile)
    h = 0.5 * np.maximum(profile.w_sens, 0.0) / np.maximum(profile.w_numel, 1)
    err = _err_columns(profile, table.w_choices)
    t = h[:, None] * err
    if bits is None:
        return t
    return h * _err_columns(profile, (int(bits),))[:, 0]


def _err_columns(profile: SensitivityProfile, bits: tuple[int, ...]) -> np.ndarray:
    """``(n_channels, len(bits))`` error-table columns for ``bits`` (extrapolated above)."""
    ch = profile.w_choices
    cols = []
    for b in bits:
        if b in ch:
            cols.append(profile.w_err[:, ch.index(b)])
        elif b > max(ch) and max(ch) > 0:
            cols.append(profile.w_err[:, ch.index(max(ch))] * 4.0 ** (max(ch) - b))
        else:
            raise ValueError(
                f"the sensitivity profile has no error column for {b}-bit weights (it has "
                f"{ch}); recompute it with these bits among w_choices"
            )
    return np.stack(cols, axis=1)


def _check_match(table: LayerTable, profile: SensitivityProfile) -> None:
    names = [lay.name for lay in table.layers]
    if names != list(profile.layer_names):
        raise ValueError(
            f"the sensitivity profile's layers {list(profile.layer_names)} differ from the "
            f"layer table's {names}: compute the profile for this search space"
        )
    if profile.n_channels != table.n_channels or not np.array_equal(
        profile.layer_start, table.layer_start
    ):
        raise ValueError(
            f"the sensitivity profile has {profile.n_channels} channels, the layer table "
            f"{table.n_channels}: compute the profile for this search space"
        )
    if tuple(profile.a_choices) != tuple(table.a_choices):
        missing = [b for b in table.a_choices if b not in profile.a_choices]
        if missing:
            raise ValueError(
                f"the sensitivity profile has activation choices {profile.a_choices}, the "
                f"space {table.a_choices}: recompute it with the space's choices"
            )


class GenomeFeatures(TransformerMixin, BaseEstimator):
    """Map genome batches to accuracy features (a scikit-learn transformer).

    Columns, in order (see :meth:`get_feature_names_out`):

    * ``hawq_total`` (always column 0), ``w_total``, ``a_total``: second-order loss
      increase summed over weight channels, over activations, and both;
    * ``log_hawq_total``, ``log_w_total``, ``log_a_total``: their ``log10``;
    * ``w_share[b]`` for each weight choice ``b``: share of channels at ``b`` bits;
      ``w_mem_share``: weight memory (``fan_in * bits``) over its value at the largest
      choice; ``pruned_share``: share of channels at 0 bit; ``a_mean_bits``;
    * with ``widths=True``: ``min_log_kept``, the smallest ``log2(1 + kept channels)``
      over layers (the network's narrowest point), and ``max_pruned_share``, the largest
      share of a layer's channels pruned;
    * with ``per_layer=True``, per layer: ``w_term[name]``, ``a_term[name]`` (``log10``
      if ``log_terms``), ``w_mean_bits[name]``, ``pruned_share[name]``, and with
      ``widths=True`` ``log_kept[name]``: ``log2(1 + kept channels)`` of the layer;
    * the ``n_extra`` pass-through columns, ``extra_0`` ...

    Pinned layers hold no genes but their fixed bits still contribute error terms.

    **Why widths.** The sensitivity terms are second-order estimates around the float
    weights: they rate pruning a channel as costing its own small ``H * ||W||^2``, which
    holds for a few channels but not when a layer is cut down to a handful of channels,
    where accuracy collapses (a short QAT cannot route the information through two
    channels). The search pushes into exactly that corner, so the width of each layer in
    channels, on a log scale (halving a layer costs alike at any width), and the
    narrowest layer are given directly. A kept channel is one with a nonzero bit-width.

    **Multi-fidelity.** To give the predictors the cheap PTQ accuracy of each genome,
    append it as a last column to the genome batch and set ``n_extra=1``::

        X = np.column_stack([genomes, ptq_accuracy])
        model = make_pipeline(GenomeFeatures(table, profile, n_extra=1), AutoSurrogate())

    Args:
        table: the layer table of the search space.
        profile: the model's :class:`SensitivityProfile` (same layers and channels).
        per_layer: add the per-layer columns.
        log_terms: per-layer terms as ``log10(term + eps)``, ``eps`` a tenth of the
            layer's term at the highest precision (scale-free inputs for GPs).
        n_extra: trailing input columns passed through unchanged (e.g. PTQ accuracy).
        widths: add the layer-width columns (kept channels per layer, narrowest layer).

    Attributes:
        n_features_in_: ``table.n_genes + n_extra``.
        feature_names_out_: the output column names.
    """

    def __init__(
        self,
        table: LayerTable,
        profile: SensitivityProfile,
        per_layer: bool = True,
        log_terms: bool = True,
        n_extra: int = 0,
        widths: bool = True,
    ) -> None:
        self.table = table
        self.profile = profile
        self.per_layer = per_layer
        self.log_terms = log_terms
        self.n_extra = n_extra
        self.widths = widths

    # ------------------------------------------------------------------ fit
    def fit(self, X: Any, y: Any = None) -> GenomeFeatures:
        """Precompute the lookup tables (``X`` is only checked for its width)."""
        if int(self.n_extra) < 0:
            raise ValueError(f"n_extra must be >= 0, got {self.n_extra}")
        validate_data(self, X, dtype=None, reset=True)
        if self.n_features_in_ != self.table.n_genes + int(self.n_extra):
            raise ValueError(
                f"X has {self.n_features_in_} columns; expected the {self.table.n_genes} "
                f"genes of this space plus n_extra={self.n_extra}"
            )
        self._build()
        return self

    def _build(self) -> None:
        t, p = self.table, self.profile
        _check_match(t, p)
        n_l, n_wg = t.n_layers, t.n_w_genes
        w_ch = np.asarray(t.w_choices, dtype=np.int64)
        a_ch = np.asarray(t.a_choices, dtype=np.int64)
        j_w = len(w_ch)
        term = channel_terms(t, p)  # (C, J)
        wg = t.w_gene_of_channel
        free = wg >= 0
        fan_in = np.array([lay.fan_in for lay in t.layers], dtype=np.float64)
        cl = t.channel_layer
        # per weight gene: summed term per choice, number of channels, layer
        gene_term = np.zeros((n_wg, j_w))
        np.add.at(gene_term, wg[free], term[free])
        gene_nch = np.bincount(wg[free], minlength=n_wg).astype(np.int64)
        gene_layer = np.zeros(n_wg, dtype=np.int64)
        gene_layer[wg[free]] = cl[free]
        # genes are laid out in layer order: one contiguous segment per free layer
        seg_layers = np.unique(gene_layer) if n_wg else np.zeros(0, dtype=np.int64)
        seg_start = np.searchsorted(gene_layer, seg_layers) if n_wg else seg_layers
        # pinned channels: constant per-layer contributions
        pin_term = np.zeros(n_l)
        pin_count = np.zeros((n_l, j_w))
        pin_bits = np.zeros(n_l)
        for i, lay in enumerate(t.layers):
            if lay.w_pinned is None:
                continue
            sl = slice(t.layer_start[i], t.layer_start[i + 1])
            pin_term[i] = channel_terms(t, p, bits=lay.w_pinned)[sl].sum()
            pin_bits[i] = lay.w_pinned * lay.out_channels
            if lay.w_pinned in t.w_choices:
                pin_count[i, t.w_choices.index(lay.w_pinned)] = lay.out_channels
        # activation terms per layer and choice (pinned layers: a constant)
        a_scale = 0.5 * p.a_sens * p.a_numel
        a_cols = [p.a_choices.index(int(b)) for b in a_ch]
        a_term = a_scale[:, None] * p.a_noise[:, a_cols]  # (L, Ja)
        a_pin = np.zeros(n_l)
        for i, lay in enumerate(t.layers):
            if lay.a_pinned is not None:
                b = lay.a_pinned
                if b in p.a_choices:
                    a_pin[i] = a_scale[i] * p.a_noise[i, p.a_choices.index(b)]
                else:  # noise power scales as 4^-bits
                    top = max(p.a_choices)
                    a_pin[i] = a_scale[i] * p.a_noise[i, p.a_choices.index(top)] * 4.0 ** (
                        top - b
                    )
        n_ch_layer = np.diff(t.layer_start).astype(np.float64)
        top_w = float(w_ch.max()) if w_ch.max() > 0 else 1.0
        top_idx = np.full((1, t.n_genes), 0, dtype=np.int64)
        top_idx[0, :n_wg] = j_w - 1
        top_idx[0, n_wg:] = len(a_ch) - 1
        self._lut = {
            "gene_term": gene_term,
            "gene_term_flat": gene_term.ravel(),
            "gene_off": np.arange(n_wg, dtype=np.int64) * j_w,
            "gene_nch": gene_nch,
            "packed_lut": self._packed_lut(gene_term, gene_nch, t),
            "a_pin_bits": np.array([lay.a_pinned or 0 for lay in t.layers], dtype=np.float64),
            "seg_layers": seg_layers,
            "seg_start": seg_start,
            "pin_term": pin_term,
            "pin_count": pin_count,
            "pin_bits": pin_bits,
            "a_term": a_term,
            "a_pin": a_pin,
            "a_gene": t.a_gene_of_layer,
            "n_ch_layer": n_ch_layer,
            "fan_in": fan_in,
            "w_ch": w_ch.astype(np.float64),
            "a_ch": a_ch.astype(np.float64),
            "mem_top": float((fan_in * n_ch_layer).sum() * top_w),
        }
        # eps of the logs: a tenth of the value at the highest precision
        raw_top = self._raw(top_idx)
        self._eps = {k: 0.1 * v[0] + 1e-30 for k, v in raw_top.items()}
        self.feature_names_out_ = np.asarray(self._names(), dtype=object)

    @staticmethod
    def _packed_lut(gene_term: np.ndarray, gene_nch: np.ndarray, t: LayerTable
                    ) -> np.ndarray | None:
        """Complex lookup table: term + 1j * (channel count << 16 * (level - 1)).

        ``None`` (two lookups instead) when the counts would not fit: more than 4 choices
        or a layer with 2^16 channels or more.
        """
        j_w = gene_term.shape[1]
        if j_w > 4 or int(np.diff(t.layer_start).max()) >= 2**16:
            return None
        shift = np.concatenate([[0.0], 2.0 ** (16 * np.arange(j_w - 1))])
        packed = gene_nch[:, None].astype(np.float64) * shift[None, :]
        packed[:, 0] = 0.0
        return (gene_term + 1j * packed).ravel()

    def _names(self) -> list[str]:
        t = self.table
        names = [HAWQ_TOTAL, "w_total", "a_total", "log_hawq_total", "log_w_total",
                 "log_a_total"]
        names += [f"w_share[{b}]" for b in t.w_choices]
        names += ["w_mem_share", "pruned_share", "a_mean_bits"]
        if self.widths:
            names += ["min_log_kept", "max_pruned_share"]
        if self.per_layer:
            keys = ["w_term", "a_term", "w_mean_bits", "pruned_share"]
            keys += ["log_kept"] if self.widths else []
            for key in keys:
                names += [f"{key}[{lay.name}]" for lay in t.layers]
        names += [f"extra_{i}" for i in range(int(self.n_extra))]
        return names

    # ------------------------------------------------------------ transform
    def transform(self, X: Any) -> np.ndarray:
        """Features of a genome batch.

        Args:
            X: ``(n, n_genes + n_extra)``: genomes (gene values are indices into the bit
                choices), then the ``n_extra`` pass-through columns.

        Returns:
            ``(n, n_features)`` float64 (names from :meth:`get_feature_names_out`).
        """
        check_is_fitted(self, "feature_names_out_")
        X = validate_data(self, X, dtype=None, reset=False)
        n_g = self.table.n_genes
        genomes = self._genomes(X[:, :n_g])
        extra = np.asarray(X[:, n_g:], dtype=np.float64)
        out = np.empty((genomes.shape[0], len(self.feature_names_out_)))
        for lo in range(0, genomes.shape[0], _CHUNK):
            raw = self._raw(genomes[lo : lo + _CHUNK])
            out[lo : lo + _CHUNK, : out.shape[1] - extra.shape[1]] = self._assemble(raw)
        out[:, out.shape[1] - extra.shape[1] :] = extra
        return out

    def _genomes(self, g: np.ndarray) -> np.ndarray:
        """Checked small-int genomes (a cheap range check; the table explains failures)."""
        t = self.table
        if g.dtype.kind not in "iu":
            if g.size and not np.all(np.mod(g, 1) == 0):
                t.check_genomes(g)  # raises with the table's message
            g = g.astype(np.int64)
        if g.size:
            n_wg = t.n_w_genes
            w, a = g[:, :n_wg], g[:, n_wg:]
            if (w.size and (w.min() < 0 or w.max() >= len(t.w_choices))) or (
                a.size and (a.min() < 0 or a.max() >= len(t.a_choices))
            ):
                t.check_genomes(g)
        if g.dtype != np.int8:
            g = g.astype(np.int8)
        return g

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        check_is_fitted(self, "feature_names_out_")
        return self.feature_names_out_.copy()

    def _raw(self, g: np.ndarray) -> dict[str, np.ndarray]:
        """Per-layer weight/act terms and channel counts per choice of a genome block."""
        lut = self._lut
        t = self.table
        n, n_wg, n_l = g.shape[0], t.n_w_genes, t.n_layers
        j_w = len(t.w_choices)
        w_term = np.broadcast_to(lut["pin_term"], (n, n_l)).copy()
        counts = np.broadcast_to(lut["pin_count"], (n, n_l, j_w)).copy()
        if n_wg:
            seg, lay = lut["seg_start"], lut["seg_layers"]
            nch = lut["gene_nch"]
            seg_nch = np.add.reduceat(nch, seg)
            packed_lut = lut["packed_lut"]
            for lo in range(0, n, _SUB):  # small blocks: the intp temporaries stay in cache
                sl = slice(lo, lo + _SUB)
                gw = g[sl, :n_wg]
                idx = gw.astype(np.intp)
                idx += lut["gene_off"]
                if packed_lut is not None:
                    # one lookup: real part the term, imaginary part the channel counts
                    # of levels 1.. packed 16 bits each (exact integers below 2^53)
                    v = np.add.reduceat(packed_lut.take(idx), seg, axis=1)
                    w_term[sl, lay] += v.real
                    pk = np.rint(v.imag).astype(np.int64)
                    rest = np.broadcast_to(seg_nch, pk.shape).astype(np.int64)
                    for j in range(1, j_w):
                        c = (pk >> (16 * (j - 1))) & 0xFFFF
                        counts[sl, lay, j] += c
                        rest = rest - c
                else:
                    w_term[sl, lay] += np.add.reduceat(
                        lut["gene_term_flat"].take(idx), seg, axis=1
                    )
                    rest = np.broadcast_to(seg_nch, (gw.shape[0], seg.size)).astype(np.int64)
                    for j in range(1, j_w):
                        c = np.add.reduceat((gw == j) * nch, seg, axis=1, dtype=np.int64)
                        counts[sl, lay, j] += c
                        rest = rest - c
                counts[sl, lay, 0] += rest
        ag = lut["a_gene"]
        free = ag >= 0
        a_term = np.broadcast_to(lut["a_pin"], (n, n_l)).copy()
        a_bits = np.broadcast_to(lut["a_pin_bits"], (n, n_l)).astype(np.float64)
        if free.any():
            ai = g[:, ag[free]].astype(np.intp)
            a_term[:, free] = lut["a_term"][np.nonzero(free)[0][None, :], ai]
            a_bits[:, free] = lut["a_ch"][ai]
        return {"w_term": w_term, "a_term": a_term, "counts": counts, "a_bits": a_bits}

    def _assemble(self, raw: dict[str, np.ndarray]) -> np.ndarray:
        lut, eps = self._lut, self._eps
        w_term, a_term, counts = raw["w_term"], raw["a_term"], raw["counts"]
        w_tot, a_tot = w_term.sum(1), a_term.sum(1)
        tot = w_tot + a_tot
        n_ch = lut["n_ch_layer"]
        # bits summed per layer: free counts times choice bits, plus pinned bits
        bits_sum = counts @ lut["w_ch"]  # (n, L)
        pinned_other = lut["pin_bits"] * (lut["pin_count"].sum(1) == 0)
        bits_sum = bits_sum + pinned_other
        ch_share = counts.sum(1) / n_ch.sum()  # (n, J)
        mem = (bits_sum * lut["fan_in"]).sum(1) / lut["mem_top"]
        zero = list(self.table.w_choices).index(0) if 0 in self.table.w_choices else None
        pruned_n = counts[:, :, zero] if zero is not None else np.zeros_like(w_term)
        pruned_l = pruned_n / n_ch
        pruned = pruned_n.sum(1) / n_ch.sum()
        cols = [
            tot, w_tot, a_tot,
            np.log10(tot + eps["w_term"].sum() + eps["a_term"].sum()),
            np.log10(w_tot + eps["w_term"].sum()),
            np.log10(a_tot + eps["a_term"].sum()),
        ]
        cols += list(ch_share.T)
        cols += [mem, pruned, raw["a_bits"].mean(1)]
        if self.widths:
            log_kept = np.log2(1.0 + (n_ch - pruned_n))
            cols += [log_kept.min(1), pruned_l.max(1)]
        blocks = [np.column_stack(cols)]
        if self.per_layer:
            if self.log_terms:
                blocks += [np.log10(w_term + eps["w_term"]), np.log10(a_term + eps["a_term"])]
            else:
                blocks += [w_term, a_term]
            blocks += [bits_sum / n_ch, pruned_l]
            if self.widths:
                blocks += [log_kept]
        return np.concatenate(blocks, axis=1)

    def __sklearn_tags__(self):  # type: ignore[no-untyped-def]
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        return tags
