"""Free Bits' refinement as an engine-side repair: per layer and per precision group,
raise precision wherever the latency model says it does not get slower (Free Bits'
observation that sub-byte kernels can be slower than 8 bit on PULP-class cores)."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
from pymoo.core.repair import Repair

from evomp._errors import EvompError
from hwmodels import HardwareModel, LayerTable

__all__ = ["refine", "refine_bits", "latency_refiner", "FreeBitsRepair", "latency_metric"]


def _maps(n_levels: int, zero: int | None) -> np.ndarray:
    """``(m, n_levels)`` every map ``k -> t[k] >= k`` of level indices (``zero`` fixed)."""
    opts = [[zero] if k == zero else list(range(k, n_levels)) for k in range(n_levels)]
    return np.array(list(itertools.product(*opts)), dtype=np.int64).reshape(-1, n_levels)


def latency_metric(model: HardwareModel, metric: str | None = None) -> str:
    """The metric to refine for: ``metric``, else the model's first one."""
    if metric:
        if metric not in model.metrics:
            raise EvompError(f"hardware model {model.name!r} has no metric {metric!r}; it has "
                             f"{sorted(model.metrics)}")
        return metric
    return next(iter(model.metrics))


def refine_bits(table: LayerTable, w_bits: np.ndarray, a_bits: np.ndarray,
                latency_model: HardwareModel, metric: str | None = None, *, ties: bool = False
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`refine` on decoded bits.

    Args:
        table: the layer table.
        w_bits: ``(n, n_channels)`` weight bits (choices or pins).
        a_bits: ``(n, n_layers)`` activation bits.
        latency_model: the hardware model giving the latency.
        metric: its latency metric (default: the model's first metric).
        ties: also take equally fast candidates with more bits.

    Returns:
        ``(w_bits, a_bits, latency_before (n,), latency_after (n,))``.
    """
    metric = latency_metric(latency_model, metric)
    w = np.array(np.atleast_2d(w_bits), dtype=np.int64)
    a = np.array(np.atleast_2d(a_bits), dtype=np.int64)
    n = w.shape[0]
    if n == 0:
        return w, a, np.zeros(0), np.zeros(0)

    def lat_of(wb: np.ndarray, ab: np.ndarray) -> np.ndarray:
        try:
            return latency_model.cost_bits(table, wb, ab)[metric]
        except ValueError as e:
            raise EvompError(f"latency model {latency_model.name!r}: {e}") from e

    lat = lat_of(w, a)
    before = lat.copy()
    w_ch = np.asarray(table.w_choices, dtype=np.int64)
    zero = table.w_choices.index(0) if 0 in table.w_choices else None
    maps = _maps(len(w_ch), zero)
    lut = np.full(int(w_ch.max()) + 1, -1, dtype=np.int64)
    lut[w_ch] = np.arange(len(w_ch))
    rows = np.arange(n)
    for li, lay in enumerate(table.layers):
        sl = slice(int(table.layer_start[li]), int(table.layer_start[li + 1]))
        a_opts = np.asarray([lay.a_pinned] if lay.a_pinned is not None else table.a_choices)
        n_maps = 1 if lay.w_pinned is not None else len(maps)
        m = len(a_opts) * n_maps
        if m == 1:
            continue
        W = np.repeat(w[:, None, :], m, axis=1)  # (n, m, C)
        A = np.repeat(a[:, None, :], m, axis=1)  # (n, m, L)
        ai = np.repeat(np.arange(len(a_opts)), n_maps)
        A[:, :, li] = a_opts[ai][None, :]
        if lay.w_pinned is None:
            k = lut[w[:, sl]]  # (n, c)
            mi = np.tile(np.arange(n_maps), len(a_opts))
            W[:, :, sl] = w_ch[maps[mi][:, k].transpose(1, 0, 2)]  # (n, m, c)
        valid = A[:, :, li] >= a[:, li][:, None]
        cand = lat_of(W.reshape(n * m, -1), A.reshape(n * m, -1)).reshape(n, m)
        cand = np.where(valid, cand, np.inf)
        prec = W[:, :, sl].sum(axis=2) * 64 + A[:, :, li]  # more bits = higher precision
        order = np.lexsort((-prec, cand), axis=1)[:, 0]  # fastest, then most bits
        best = cand[rows, order]
        cur_prec = w[:, sl].sum(axis=1) * 64 + a[:, li]
        take = best < lat
        if ties:
            take |= (best == lat) & (prec[rows, order] > cur_prec)
        if take.any():
            t = np.nonzero(take)[0]
            w[t] = W[t, order[t]]
            a[t] = A[t, order[t]]
            lat[t] = best[t]
    return w, a, before, lat


def refine(table: LayerTable, genomes: np.ndarray, latency_model: HardwareModel,
           metric: str | None = None, *, ties: bool = False) -> np.ndarray:
    """Free Bits' refinement of a genome batch (see the module docstring).

    A plain vectorized function, independent of any engine: the search loop can apply it
    to the proposals of any engine before they are evaluated.

    Args:
        table: the layer table of the genomes.
        genomes: ``(n, n_genes)`` (or one ``(n_genes,)``) genomes, integers or floats
            holding integers (as an engine proposes them).
        latency_model: a hardware model whose ``metric`` is the latency to keep from
            growing (e.g. ``hwmodels.get("pulp")``, or a ``table`` model of measurements).
        metric: the latency metric (default: the model's first metric).
        ties: also raise precision where the latency stays exactly equal.

    Returns:
        int8 genomes of the same shape: no gene lower than in ``genomes``, and no latency
        higher. Refining a refined batch changes nothing.

    Raises:
        EvompError: genomes that do not fit ``table``, or a model without ``metric``.
    """
    one = np.ndim(genomes) == 1
    try:
        g = table.check_genomes(genomes)
    except ValueError as e:
        raise EvompError(f"freebits: {e}") from e
    if len(g) == 0:
        return np.zeros((0, table.n_genes), dtype=np.int8)
    w, a = table.decode(g)
    w2, a2, _, _ = refine_bits(table, w, a, latency_model, metric, ties=ties)
    out = table.encode(w2, a2).astype(np.int8)
    return out[0] if one else out


def latency_refiner(table: LayerTable, objectives: Any, *, ties: bool = False
                    ) -> FreeBitsRepair | None:
    """The Free Bits step for a run, or None when no objective is a latency.

    The first hardware objective whose name contains ``latency`` is the metric, and the
    run's own instance of the model providing it is the latency model.

    Args:
        table: the layer table of the genomes.
        objectives: the run's :class:`~evomp.objectives._objectives.Objectives` (anything with
            ``hw_metrics`` and ``model_for(metric)``).
        ties: also raise precision where the latency stays equal.

    Returns:
        A :class:`FreeBitsRepair`: a pymoo repair, and ``.apply(genomes)`` for any other
        engine's proposals.
    """
    for m in objectives.hw_metrics:
        if "latency" in m:
            return FreeBitsRepair(table, objectives.model_for(m), m, ties)
    return None


class FreeBitsRepair(Repair):
    """A pymoo repair that applies :func:`refine` to every offspring (the search's repair
    step when an objective is a latency): repaired genomes are never slower and never
    lower in precision. :meth:`apply` is the same step on a plain genome batch.

    Args:
        table: the layer table of the genomes.
        latency_model: the hardware model giving the latency.
        metric: its latency metric (default: the model's first metric).
        ties: also raise precision where the latency stays equal.
    """

    def __init__(self, table: LayerTable, latency_model: HardwareModel,
                 metric: str | None = None, ties: bool = False) -> None:
        super().__init__()
        self.table = table
        self.latency_model = latency_model
        self.metric = latency_metric(latency_model, metric)
        self.ties = ties

    def apply(self, genomes: np.ndarray) -> np.ndarray:
        """Refined ``(n, n_genes)`` genomes (see :func:`refine`)."""
        return refine(self.table, genomes, self.latency_model, self.metric, ties=self.ties)

    def _do(self, problem: Any, X: np.ndarray, **kwargs: Any) -> np.ndarray:
        return self.apply(np.rint(np.asarray(X, dtype=float)).astype(np.int64)).astype(float)
