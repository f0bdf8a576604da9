"""The hardware-model interface and the decoded bit batch every model reads.

A hardware model turns a batch of genomes (or of decoded bit-widths) into one ``(n,)``
array per metric. Channels of one layer share their geometry, so everything the
built-in models need is, per genome and layer, *how many channels sit at each weight
bit-width* plus the layer's activation bits. :class:`BitBatch` computes those counts
once for the whole batch (a few vectorized passes over the genes, no Python loop over
genomes) and hands them to every model; models that need the full per-channel bits
(e.g. a user's callable) read :attr:`BitBatch.w_bits`.

Channel-wise mixed precision is deployed as one sub-kernel per *precision group*: the
channels of a layer that share a non-zero weight bit-width. :attr:`BitBatch.groups`
counts them, so models can charge a per-group overhead.
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar

import numpy as np

from hwmodels._layers import MAX_BITS, LayerTable

__all__ = ["BitBatch", "HardwareModel", "Costs"]

Costs = dict[str, np.ndarray]
"""Metric name -> float64 array: ``(n,)`` per genome of the batch (totals), or
``(n, n_layers)`` per genome and layer (:meth:`HardwareModel.layer_cost`)."""


# --------------------------------------------------------------------------- decoding plan
@dataclass(frozen=True)
class _Plan:
    """Per-table index arrays for fast decoding (built once per LayerTable)."""

    levels: np.ndarray  # (K,) sorted union of weight choices and pinned weight bits
    choice_level: np.ndarray  # (Kw,) level index of each weight choice
    free_layers: np.ndarray  # (F,) layers with weight genes
    free_starts: np.ndarray  # (F,) first gene of each free layer (channel granularity)
    free_segments: _Segments  # the free layers with channels, as counting segments
    free_nonempty: np.ndarray  # (F,) bool: free layers with at least one channel
    pinned_layers: np.ndarray  # (P,) layers with pinned weights
    pinned_level: np.ndarray  # (P,) level index of each pinned layer's bits
    a_free_layers: np.ndarray  # layers with an activation gene
    a_genes: np.ndarray  # their gene indices
    a_fixed: np.ndarray  # (L,) pinned activation bits (0 where free)
    out_channels: np.ndarray  # (L,) int64


_PLANS: dict[int, tuple[weakref.ref[LayerTable], _Plan]] = {}


def _plan(table: LayerTable) -> _Plan:
    hit = _PLANS.get(id(table))
    if hit is not None and hit[0]() is table:
        return hit[1]
    layers = table.layers
    pinned_w = sorted({lay.w_pinned for lay in layers if lay.w_pinned is not None})
    levels = np.array(sorted(set(table.w_choices) | set(pinned_w)), dtype=np.int64)
    lut = {int(b): i for i, b in enumerate(levels)}
    free = np.array([i for i, lay in enumerate(layers) if lay.w_pinned is None], dtype=np.int64)
    pinned = np.array([i for i, lay in enumerate(layers) if lay.w_pinned is not None],
                      dtype=np.int64)
    starts = np.asarray(table._idx["layer_w_gene_start"], dtype=np.int64)[free]
    a_gene = table.a_gene_of_layer
    out_channels = np.array([lay.out_channels for lay in layers], dtype=np.int64)
    nonempty = out_channels[free] > 0  # a layer without channels holds no genes
    plan = _Plan(
        levels=levels,
        choice_level=np.array([lut[b] for b in table.w_choices], dtype=np.int64),
        free_layers=free,
        free_starts=starts,
        free_segments=_segments(starts[nonempty], out_channels[free][nonempty]),
        free_nonempty=nonempty,
        pinned_layers=pinned,
        pinned_level=np.array([lut[int(layers[i].w_pinned)] for i in pinned],
                              dtype=np.int64),
        a_free_layers=np.nonzero(a_gene >= 0)[0],
        a_genes=a_gene[a_gene >= 0],
        a_fixed=np.array([lay.a_pinned or 0 for lay in layers], dtype=np.int64),
        out_channels=out_channels,
    )
    tid = id(table)

    def _forget(_r: object, tid: int = tid) -> None:
        _PLANS.pop(tid, None)

    _PLANS[tid] = (weakref.ref(table, _forget), plan)
    return plan


@dataclass(frozen=True)
class _Segments:
    """Layout for counting per-segment levels with 64-bit words (see :func:`_count_levels`).

    Each segment (a layer's channels) is copied to an 8-byte aligned slot of a padded
    row; slots are cut into chunks of at most 255 words so that byte lanes cannot overflow.
    """

    starts: np.ndarray  # (S,) first column of each segment in the source
    sizes: np.ndarray  # (S,) columns per segment (>= 1)
    pstarts: np.ndarray  # (S,) first column of each segment in the padded row
    width: int  # padded row length, a multiple of 8
    chunk_starts: np.ndarray  # word index where each chunk starts
    layer_chunks: np.ndarray | None  # first chunk of each segment, None if one chunk each


def _segments(starts: np.ndarray, sizes: np.ndarray) -> _Segments:
    padded = (sizes + 7) // 8 * 8
    pstarts = (np.cumsum(padded) - padded).astype(np.int64)
    chunk_starts: list[int] = []
    first: list[int] = []
    for ps, pl in zip(pstarts.tolist(), padded.tolist(), strict=True):
        first.append(len(chunk_starts))
        chunk_starts += list(range(ps // 8, (ps + pl) // 8, 255))
    return _Segments(
        starts=np.asarray(starts, dtype=np.int64),
        sizes=np.asarray(sizes, dtype=np.int64),
        pstarts=pstarts,
        width=int(padded.sum()),
        chunk_starts=np.array(chunk_starts, dtype=np.int64),
        layer_chunks=None if len(chunk_starts) == len(first) else np.array(first),
    )


_LANES = np.uint64(0x00FF00FF00FF00FF)
_FOLD = np.uint64(0x0001000100010001)


def _count_levels(idx: np.ndarray, seg: _Segments, n_levels: int) -> np.ndarray:
    """Channels per (row, segment, level) from level indices laid out in segments.

    For each level, a boolean match array is laid out with 8-byte aligned segments and
    summed as uint64 words, so eight channels are added per operation (SWAR); the byte
    lanes of each sum are then folded. This is ~2x faster than ``np.add.reduceat`` over
    int8 and is the hot loop of every vectorized model.

    Args:
        idx: ``(n, C)`` small-int level index of every channel.
        seg: segment layout from :func:`_segments` (segments of ``idx`` columns).
        n_levels: number of levels ``K``.

    Returns:
        ``(n, S, K)`` int32 counts.
    """
    n, n_seg = idx.shape[0], seg.sizes.shape[0]
    out = np.zeros((n, n_seg, n_levels), dtype=np.int32)
    if n == 0 or n_seg == 0:
        return out
    buf = np.zeros((n, seg.width), dtype=bool)  # padding stays False: never counted
    spans = list(zip(seg.starts.tolist(), seg.pstarts.tolist(), seg.sizes.tolist(),
                     strict=True))
    for k in range(1, n_levels):
        for s, ps, c in spans:
            np.equal(idx[:, s:s + c], k, out=buf[:, ps:ps + c])
        acc = np.add.reduceat(buf.view(np.uint64), seg.chunk_starts, axis=1)
        acc = (acc & _LANES) + ((acc >> np.uint64(8)) & _LANES)  # 4 lanes of 16 bits
        tot = (acc * _FOLD) >> np.uint64(48)  # sum of the 4 lanes
        if seg.layer_chunks is not None:
            tot = np.add.reduceat(tot, seg.layer_chunks, axis=1)
        out[:, :, k] = tot
    out[:, :, 0] = seg.sizes[None, :] - out[:, :, 1:].sum(axis=2)
    return out


def _table_pairs(table: LayerTable) -> dict[int, set[tuple[int, int]]]:
    """Layer index -> every (activation bits, non-zero weight bits) it can take."""
    out = {}
    for i, lay in enumerate(table.layers):
        a_set = [lay.a_pinned] if lay.a_pinned is not None else table.a_choices
        w_set = [lay.w_pinned] if lay.w_pinned is not None else table.w_choices
        out[i] = {(int(a), int(w)) for a in a_set for w in w_set if w > 0}
    return out


def _batch_pairs(batch: BitBatch) -> dict[int, set[tuple[int, int]]]:
    """Layer index -> the (activation bits, non-zero weight bits) a batch uses."""
    n_i, l_i, k_i = np.nonzero((batch.counts > 0) & (batch.levels > 0))
    out: dict[int, set[tuple[int, int]]] = {}
    for i, a, w in zip(l_i.tolist(), batch.a_bits[n_i, l_i].tolist(),
                       batch.levels[k_i].tolist(), strict=True):
        out.setdefault(i, set()).add((a, w))
    return out


# ------------------------------------------------------------------------------ BitBatch
class BitBatch:
    """A batch of bit configurations over one layer table, decoded for cost models.

    Build it with :meth:`from_genomes` or :meth:`from_bits`; models read the attributes.

    Attributes:
        table: the layer table.
        levels: ``(K,)`` int64 weight bit-widths that ``counts`` refers to, increasing
            (may include 0 = pruned).
        counts: ``(n, n_layers, K)`` int32 channels of each layer at each level.
        a_bits: ``(n, n_layers)`` int64 input-activation bits of every layer.
    """

    def __init__(self, table: LayerTable, levels: np.ndarray, counts: np.ndarray,
                 a_bits: np.ndarray, *, genomes: np.ndarray | None = None,
                 w_bits: np.ndarray | None = None) -> None:
        self.table = table
        self.levels = levels
        self.counts = counts
        self.a_bits = a_bits
        self._genomes = genomes
        self._w_bits = w_bits

    # ----------------------------------------------------------------- constructors
    @classmethod
    def from_genomes(cls, table: LayerTable, genomes: np.ndarray) -> BitBatch:
        """Decode a genome batch (fully vectorized).

        Args:
            table: the layer table the genomes belong to.
            genomes: ``(n, n_genes)`` (or ``(n_genes,)``) integer gene indices.

        Raises:
            ValueError: wrong length, non-integer values or a gene out of range.
        """
        g = np.asarray(genomes)
        if g.ndim == 1:
            g = g[None, :]
        if g.ndim != 2 or g.shape[1] != table.n_genes or g.dtype.kind not in "iu":
            g = table.check_genomes(g)  # raises with a clear message, or converts
        p = _plan(table)
        nw = table.n_w_genes
        kw, ka = len(table.w_choices), len(table.a_choices)
        if g.size:
            gw, ga = g[:, :nw], g[:, nw:]
            if (gw.size and (gw.min() < 0 or gw.max() >= kw)) or (
                ga.size and (ga.min() < 0 or ga.max() >= ka)
            ):
                table.check_genomes(g)  # raises, naming the bad gene
        n, n_layers, k = g.shape[0], table.n_layers, p.levels.shape[0]
        counts = np.zeros((n, n_layers, k), dtype=np.int32)
        if p.free_layers.size:
            gw = g[:, :nw]
            if gw.dtype.itemsize != 1:
                gw = gw.astype(np.int8)
            oc = p.out_channels[p.free_layers]
            if table.granularity == "channel":
                c = _count_levels(gw, p.free_segments, kw)
                counts[:, p.free_layers[p.free_nonempty][:, None], p.choice_level[None, :]] = c
            else:
                lev = p.choice_level[gw]  # (n, F)
                onehot = lev[:, :, None] == np.arange(k)[None, None, :]
                counts[:, p.free_layers, :] = onehot * oc[None, :, None]
        if p.pinned_layers.size:
            counts[:, p.pinned_layers, p.pinned_level] = p.out_channels[p.pinned_layers]
        a_bits = np.broadcast_to(p.a_fixed, (n, n_layers)).copy()
        if p.a_free_layers.size:
            a_bits[:, p.a_free_layers] = np.asarray(table.a_choices, dtype=np.int64)[
                g[:, p.a_genes]]
        return cls(table, p.levels, counts, a_bits, genomes=g)

    @classmethod
    def from_bits(cls, table: LayerTable, w_bits: np.ndarray, a_bits: np.ndarray) -> BitBatch:
        """Wrap decoded bit-widths; they need not be among the table's choices.

        Args:
            table: the layer table.
            w_bits: ``(n, n_channels)`` (or ``(n_channels,)``) weight bits, 0 = pruned.
            a_bits: ``(n, n_layers)`` (or ``(n_layers,)``) input-activation bits.

        Raises:
            ValueError: wrong shapes, or bits outside 0..MAX_BITS (1..MAX_BITS for
                activations).
        """
        w = np.atleast_2d(np.asarray(w_bits))
        a = np.atleast_2d(np.asarray(a_bits))
        if w.ndim != 2 or a.ndim != 2 or w.shape != (a.shape[0], table.n_channels) or \
                a.shape[1] != table.n_layers:
            raise ValueError(
                f"expected weight bits (n, {table.n_channels}) and activation bits "
                f"(n, {table.n_layers}), got {w.shape} and {a.shape}"
            )
        for what, x, lo in (("weight", w, 0), ("activation", a, 1)):
            if x.size and (x.dtype.kind not in "iu" and not np.all(np.mod(x, 1) == 0)):
                raise ValueError(f"{what} bits must be integers, got dtype {x.dtype}")
            if x.size and (x.min() < lo or x.max() > MAX_BITS):
                raise ValueError(f"{what} bits must lie in {lo}..{MAX_BITS}, got "
                                 f"{int(x.min())}..{int(x.max())}")
        w = w.astype(np.int64)
        a = a.astype(np.int64)
        present = np.bincount(w.ravel(), minlength=MAX_BITS + 1) > 0
        present[0] = True  # level 0 always exists, so kept channels are counts[..., 1:]
        levels = np.flatnonzero(present).astype(np.int64)
        lut = np.zeros(MAX_BITS + 1, dtype=np.int8)
        lut[levels] = np.arange(levels.shape[0])
        sizes = np.array([lay.out_channels for lay in table.layers], dtype=np.int64)
        nz = sizes > 0
        counts = np.zeros((w.shape[0], table.n_layers, levels.shape[0]), dtype=np.int32)
        seg = _segments(table.layer_start[:-1][nz], sizes[nz])
        counts[:, nz] = _count_levels(lut[w], seg, levels.shape[0])
        return cls(table, levels, counts, a, w_bits=w)

    # --------------------------------------------------------------------- derived
    @property
    def n(self) -> int:
        """Number of configurations in the batch."""
        return int(self.counts.shape[0])

    @property
    def w_bits(self) -> np.ndarray:
        """``(n, n_channels)`` int64 weight bits of every channel (decoded on demand)."""
        if self._w_bits is None:
            self._w_bits = self.table.weight_bits(self._genomes)  # type: ignore[arg-type]
        return self._w_bits

    @cached_property
    def kept(self) -> np.ndarray:
        """``(n, n_layers)`` int: channels not pruned (weight bits > 0)."""
        return self.counts[:, :, self.levels > 0].sum(axis=2)

    @cached_property
    def groups(self) -> np.ndarray:
        """``(n, n_layers)`` int: precision groups (distinct non-zero weight bits)."""
        return (self.counts[:, :, self.levels > 0] > 0).sum(axis=2)

    @cached_property
    def w_bit_sum(self) -> np.ndarray:
        """``(n, n_layers)`` int64: sum of weight bits over each layer's channels."""
        return self.counts @ self.levels

    def out_a_bits(self, last: int) -> np.ndarray:
        """``(n, n_layers)`` bits at which each layer's output is stored.

        A layer's output is the next layer's input (execution order), so it is stored at
        the next layer's activation bits; the last layer's output at ``last`` bits.
        """
        out = np.empty_like(self.a_bits)
        out[:, :-1] = self.a_bits[:, 1:]
        out[:, -1] = last
        return out

    def row(self, i: int) -> BitBatch:
        """The ``i``-th configuration as a batch of one."""
        sl = slice(i, i + 1)
        return BitBatch(
            self.table, self.levels, self.counts[sl], self.a_bits[sl],
            genomes=None if self._genomes is None else self._genomes[sl],
            w_bits=None if self._w_bits is None else self._w_bits[sl],
        )

    def layer_bits_text(self, row: int = 0) -> list[str]:
        """Per layer, the weight-bit histogram of one row, e.g. ``"2x10 8x22"``."""
        out = []
        for c in self.counts[row]:
            parts = [f"{int(b)}x{int(m)}" for b, m in zip(self.levels, c, strict=True) if m > 0]
            out.append(" ".join(parts))
        return out


# ------------------------------------------------------------------------ HardwareModel
class HardwareModel:
    """Base class of every hardware cost model.

    Subclasses set the class attributes and implement :meth:`_layer_cost` (metrics that
    add up over layers) and/or :meth:`_cost`; the base class owns the public, validating
    methods (template methods as in pymoo).

    Class attributes:
        name: registry name.
        metrics: metric -> unit and meaning; metric names carry units and are unique
            across registered models (a search names objectives by metric alone).
        parameters: constructor keyword -> description with unit and source.
        monotone: metrics that never increase when any single bit-width decreases
            (weight or activation). Instances may narrow it depending on parameters.
        prune_monotone: metrics that never increase when a channel is pruned.
        vectorized: False for models that loop over genomes in Python.
    """

    name: ClassVar[str] = ""
    metrics: Mapping[str, str] = {}
    parameters: ClassVar[Mapping[str, str]] = {}
    monotone: frozenset[str] = frozenset()
    prune_monotone: frozenset[str] = frozenset()
    vectorized: ClassVar[bool] = True

    def __init__(self, **params: Any) -> None:
        unknown = set(params) - set(self.parameters)
        if unknown:
            raise ValueError(
                f"model {self.name!r} has no parameter(s) {sorted(unknown)}; "
                f"its parameters are {sorted(self.parameters)}"
            )
        self._params = dict(params)
        self._bound: weakref.ref[LayerTable] | None = None

    # ------------------------------------------------------------------ description
    @classmethod
    def describe(cls) -> dict[str, Any]:
        """Name, summary, metrics, parameters (with defaults) and flags, for listings."""
        sig = inspect.signature(cls.__init__)
        params = {}
        for p, doc in cls.parameters.items():
            d = sig.parameters.get(p)
            default = None if d is None or d.default is inspect.Parameter.empty else d.default
            params[p] = {"default": default, "description": doc}
        lines = (cls.__doc__ or "").strip().splitlines()
        return {
            "name": cls.name,
            "summary": lines[0] if lines else "",
            "metrics": dict(cls.metrics),
            "parameters": params,
            "vectorized": cls.vectorized,
        }

    def get_params(self) -> dict[str, Any]:
        """The keyword parameters this instance was built with."""
        return dict(self._params)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._params.items())
        return f"{type(self).__name__}({args})"

    # ------------------------------------------------------------------- validation
    def bind(self, table: LayerTable) -> HardwareModel:
        """Check that this model can cost every configuration of ``table``; returns self.

        Raises:
            ValueError: e.g. a bit choice the model has no figure for, naming the fix.
        """
        if self._bound is not None and self._bound() is table:
            return self
        self._check_table(table)
        self._bound = weakref.ref(table)
        return self

    def _check_table(self, table: LayerTable) -> None:  # noqa: B027 - optional hook
        """Raise ``ValueError`` if some configuration of ``table`` cannot be costed."""

    def _check_batch(self, batch: BitBatch) -> None:  # noqa: B027 - optional hook
        """Raise ``ValueError`` if some bit-width of ``batch`` cannot be costed.

        Called for every batch built from decoded bits (which may lie outside the
        table's choices); genome batches are covered by :meth:`bind`.
        """

    # ---------------------------------------------------------------------- costing
    def cost(self, table: LayerTable, genomes: np.ndarray) -> Costs:
        """Metrics of a genome batch.

        Args:
            table: the layer table.
            genomes: ``(n, n_genes)`` integer genomes.

        Returns:
            metric -> ``(n,)`` float64 array.
        """
        self.bind(table)
        batch = BitBatch.from_genomes(table, genomes)
        return self._finish(self._cost(batch), batch.n)

    def cost_bits(self, table: LayerTable, w_bits: np.ndarray, a_bits: np.ndarray) -> Costs:
        """Metrics of decoded bits: ``w_bits (n, n_channels)``, ``a_bits (n, n_layers)``."""
        return self.cost_batch(BitBatch.from_bits(table, w_bits, a_bits))

    def cost_batch(self, batch: BitBatch) -> Costs:
        """Metrics of an already decoded :class:`BitBatch` (share one across models)."""
        if batch._genomes is not None:
            self.bind(batch.table)
        else:
            self._check_batch(batch)
        return self._finish(self._cost(batch), batch.n)

    # ------------------------------------------------------------- per-layer costs
    def layer_cost(self, table: LayerTable, genomes: np.ndarray) -> Costs:
        """Per-layer figures of the metrics that add up over layers, for a genome batch.

        Additive metrics are those whose network total is the sum of the per-layer
        figures (``weight_bytes``, ``bitops``, ``mpic_cycles``, ``energy_uj``,
        ``latency_cycles``, ``latency_ms``, a ``table`` model's columns). Metrics that do
        not add up are left out: ``memory_bytes`` and ``activation_bytes`` of the memory
        model (they hold the *peak* activation buffer over layers), and every metric of a
        model without a per-layer breakdown (a ``callable`` model: the result is ``{}``).
        A layer's figure is the cost of running that layer; it may depend on the next
        layer's activation bits where the model charges the layer for storing or moving
        its output at them (the PULP model's transfer term).

        Args:
            table: the layer table.
            genomes: ``(n, n_genes)`` (or ``(n_genes,)``) integer genomes.

        Returns:
            metric -> ``(n, n_layers)`` float64 array in the metric's unit; summed over
            axis 1 it equals :meth:`cost`'s ``(n,)`` value.
        """
        self.bind(table)
        return self.layer_cost_batch(BitBatch.from_genomes(table, genomes))

    def layer_cost_bits(self, table: LayerTable, w_bits: np.ndarray, a_bits: np.ndarray
                        ) -> Costs:
        """:meth:`layer_cost` of decoded bits: ``w_bits (n, n_channels)`` (0 = pruned),
        ``a_bits (n, n_layers)``; they need not be among the table's choices.

        Raises:
            ValueError: bad shapes or bits, or bits the model has no figure for.
        """
        return self.layer_cost_batch(BitBatch.from_bits(table, w_bits, a_bits))

    def layer_cost_batch(self, batch: BitBatch) -> Costs:
        """:meth:`layer_cost` of an already decoded :class:`BitBatch`."""
        if batch._genomes is not None:
            self.bind(batch.table)
        else:
            self._check_batch(batch)
        try:
            per = self._layer_cost(batch)
        except NotImplementedError:
            return {}
        shape = (batch.n, batch.table.n_layers)
        out = {}
        for m in self.metrics:  # declared metrics only, in declaration order
            if m not in per:
                continue
            v = np.asarray(per[m], dtype=np.float64)
            if v.shape != shape:
                raise RuntimeError(f"model {self.name!r} returned per-layer shape {v.shape} "
                                   f"for {m!r}; expected {shape}")
            out[m] = v
        return out

    def _finish(self, out: Costs, n: int | None) -> Costs:
        res = {}
        for m in self.metrics:
            if m not in out:
                raise RuntimeError(f"model {self.name!r} did not compute its metric {m!r}")
            v = np.asarray(out[m], dtype=np.float64)
            if v.ndim != 1 or (n is not None and v.shape[0] != n):
                raise RuntimeError(
                    f"model {self.name!r} returned shape {v.shape} for {m!r}; expected (n,)"
                )
            res[m] = v
        return res

    def _cost(self, batch: BitBatch) -> Costs:
        """Whole-network metrics; by default the sum over layers of :meth:`_layer_cost`."""
        return {m: v.sum(axis=1) for m, v in self._layer_cost(batch).items()}

    def _layer_cost(self, batch: BitBatch) -> Costs:
        """Per-layer metrics ``(n, n_layers)`` that add up to the network's totals."""
        raise NotImplementedError(f"model {self.name!r} has no per-layer breakdown")

    def _layer_extra(self, batch: BitBatch) -> Costs:
        """Further per-layer figures ``(n, n_layers)`` shown in breakdowns (not additive)."""
        return {}

    # -------------------------------------------------------------------- breakdown
    def breakdown(self, table: LayerTable, genome: np.ndarray) -> list[dict[str, Any]]:
        """Per-layer figures of one configuration, for reports.

        Args:
            table: the layer table.
            genome: ``(n_genes,)`` or ``(1, n_genes)`` genome.

        Returns:
            one dict per layer: ``layer``, ``kind``, ``macs``, ``w_bits`` (histogram
            text, e.g. ``"2x10 8x22"``), ``a_bits``, ``groups``, then the additive
            per-layer metrics and model-specific figures. Additive metrics sum to
            :meth:`cost`; others (e.g. a peak buffer) are the layer's own value.
        """
        g = np.asarray(genome)
        if g.ndim == 2 and g.shape[0] != 1:
            raise ValueError(f"breakdown takes one genome, got a batch of {g.shape[0]}")
        self.bind(table)
        return self.breakdown_batch(BitBatch.from_genomes(table, g))

    def breakdown_batch(self, batch: BitBatch, row: int = 0) -> list[dict[str, Any]]:
        """Per-layer figures of row ``row`` of a decoded batch (see :meth:`breakdown`)."""
        one = batch.row(row)
        if one._genomes is None:
            self._check_batch(one)
        try:
            per = self._layer_cost(one)
        except NotImplementedError:
            per = {}
        per = {**per, **self._layer_extra(one)}
        text = one.layer_bits_text()
        rows = []
        for i, lay in enumerate(one.table.layers):
            r: dict[str, Any] = {
                "layer": lay.name,
                "kind": lay.kind,
                "macs": lay.macs,
                "w_bits": text[i],
                "a_bits": int(one.a_bits[0, i]),
                "groups": int(one.groups[0, i]),
            }
            for m, v in per.items():
                r[m] = float(v[0, i])
            rows.append(r)
        return rows
