"""Free Bits' hardware-aware refinement: raise precision wherever latency does not grow.

Rutishauser et al. (2023) observe that on cores without sub-byte SIMD, lower precision
can be *slower* (weights are unpacked in software). Their second step takes the searched
configuration and, for each layer with bits ``(a, w)``, looks at every ``(a', w')`` with
``a' >= a`` and ``w' >= w`` whose latency is lower, and takes the fastest.

:func:`refine` does this for any latency model and any granularity, over a batch:

* layers are visited in execution order; for each, every candidate is costed on the
  *whole network* (so a layer whose cost depends on its neighbour's activation width, as
  in the PULP model, is handled exactly), and the fastest candidate that is strictly
  faster than the current configuration is taken (``ties=True``: also an equally fast
  one with more bits); among equally fast candidates the highest precision wins;
* in a channel-wise layer each *precision group* (the channels sharing a weight
  bit-width) may be raised on its own: candidates are all maps from the layer's weight
  choices to choices no lower (e.g. 2 -> 8 and 4 -> 4), together with every activation
  width no lower than the current one. Groups may merge (2 -> 4 joins the 4-bit group),
  which is how per-group launch costs are saved;
* pruned channels (0 bit) stay pruned: pruning is a structural choice, not a precision;
* pinned weights and activations stay as pinned.

So no precision is ever lowered and the latency of every configuration never grows.

For the search loop, :func:`refine` is a plain vectorized function on a genome batch of
any engine's proposals (``refine(table, genomes, latency_model, metric) -> genomes``), and
:func:`latency_refiner` builds that step from a run's objectives (None when no objective
is a latency) as a :class:`FreeBitsRepair`: a pymoo repair whose ``apply`` serves the
other engines.

As a baseline (``evomp baseline SPEC --method freebits --from DIR``) the refinement's cost
is only part of the cost of its front: the refined run's CPU seconds are recorded as
``source_cpu_seconds`` (:func:`source_cpu_seconds`) and included in the run's
``cpu_seconds``.
"""

from __future__ import annotations

import itertools
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pymoo.core.repair import Repair

from evomp._errors import EvompError
from evomp.baselines._registry import (
    METHODS,
    BaselineOptions,
    BaselineResult,
    check_params,
    register_method,
)
from hwmodels import HardwareModel, LayerTable

if TYPE_CHECKING:
    from evomp._objectives import Objectives
    from evomp._runner import RunContext

__all__ = [
    "refine",
    "refine_bits",
    "latency_refiner",
    "FreeBitsRepair",
    "latency_metric",
    "source_cpu_seconds",
    "DEFAULTS",
]

log = logging.getLogger("evomp")

#: ``[baselines.freebits]`` keys and their defaults.
DEFAULTS: dict[str, Any] = {
    "metric": "",  # latency metric; default: the run's first objective naming latency/cycles
    "ties": False,  # also raise precision where latency stays equal
    "start": ["uniform", "ilp"],  # what to refine when --from is not given
}


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
        objectives: the run's :class:`~evomp._objectives.Objectives` (anything with
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


# ------------------------------------------------------------------------- method
def _default_metric(objectives: Objectives) -> str:
    for m in objectives.hw_metrics:
        if "latency" in m:
            return m
    return "latency_cycles"


def source_cpu_seconds(run_dir: Path) -> float | None:
    """CPU seconds the run in ``run_dir`` spent (its ``run.json``), or None if unknown.

    A refinement's front costs what the refined run cost plus the refinement; this is
    the first part.
    """
    f = Path(run_dir) / "run.json"
    try:
        v = json.loads(f.read_text()).get("cpu_seconds")
    except (OSError, ValueError):
        return None
    try:
        return None if v is None else float(v)
    except (TypeError, ValueError):
        return None


def genomes_from_run(run_dir: Path, table: LayerTable) -> np.ndarray:
    """``(n, n_genes)`` genomes of a run directory's front, re-encoded for ``table``.

    The source run's ``space.json`` decodes its genomes (so a layer-wise run can be
    refined in a channel-wise space); without it the genomes must fit ``table``.
    """
    from evomp._protocol import genome_from_hex, read_front
    from evomp.baselines._ilp import to_space

    d = Path(run_dir)
    if not (d / "front.json").is_file():
        raise EvompError(f"{d} has no front.json; pass a finished run directory to --from")
    _, members = read_front(d)
    if not members:
        raise EvompError(f"the front of {d} is empty; nothing to refine")
    src = table
    if (d / "space.json").is_file():
        src = LayerTable.from_dict(json.loads((d / "space.json").read_text()))
        if [x.name for x in src.layers] != [x.name for x in table.layers]:
            raise EvompError(f"{d} holds a run of another model (layers "
                             f"{[x.name for x in src.layers]}); refine runs of this spec")
    rows = [genome_from_hex(m["genome"]) for m in members.values()]
    if any(len(r) != src.n_genes for r in rows):
        raise EvompError(f"the genomes in {d}/front.json do not fit its space")
    return to_space(src, table, np.stack(rows))


@register_method("freebits")
def freebits_method(ctx: RunContext, objectives: Objectives, opts: BaselineOptions
                    ) -> BaselineResult:
    """Refine ``--from DIR``'s front (or the uniform and ILP outputs) for latency."""
    from evomp.baselines._ilp import metric_model
    from evomp.baselines._uniform import uniform_genomes

    p = check_params("freebits", opts.params, DEFAULTS)
    metric = p["metric"] or _default_metric(objectives)
    model = metric_model(ctx, objectives, metric)
    table = ctx.space.table
    src_cpu: float | None = None
    ilp_params = None
    if opts.from_dir is not None:
        start = genomes_from_run(opts.from_dir, table)
        source = str(opts.from_dir)
        src_cpu = source_cpu_seconds(opts.from_dir)
        if src_cpu is None:
            log.warning("freebits: %s/run.json records no cpu_seconds; this run's CPU time "
                        "leaves out the cost of the front it refines", opts.from_dir)
    else:
        parts = []
        for name in p["start"]:
            if name == "uniform":
                parts.append(uniform_genomes(ctx.space)[0])
            elif name == "ilp":  # solved here: its CPU time is this run's own
                sub = BaselineOptions(points=opts.points,
                                      params=dict(ctx.spec.baselines.get("ilp", {})))
                ilp = METHODS["ilp"](ctx, objectives, sub)
                ilp_params = ilp.info.get("params")
                parts.append(ilp.genomes)
            else:
                raise EvompError(f"[baselines.freebits] start lists 'uniform' and/or 'ilp', "
                                 f"got {name!r}")
        if not parts:
            raise EvompError("[baselines.freebits] start is empty and no --from DIR was given")
        start = np.concatenate(parts, axis=0)
        source = "+".join(p["start"])
    w, a = table.decode(start)
    w2, a2, before, after = refine_bits(table, w, a, model, metric, ties=bool(p["ties"]))
    out = table.encode(w2, a2)
    changed = np.any(out != start.astype(np.int8), axis=1)
    log.info("freebits (%s): %d of %d configurations raised, latency %.4g -> %.4g (mean)",
             metric, int(changed.sum()), len(out), before.mean(), after.mean())
    info: dict[str, Any] = {
        "params": p,
        "metric": metric,
        "source": source,
        "n_start": int(len(start)),
        "n_changed": int(changed.sum()),
        "latency_before": before.tolist(),
        "latency_after": after.tolist(),
        "model": model.name,
    }
    if ilp_params is not None:
        info["ilp_params"] = ilp_params
    if opts.from_dir is not None:
        # the CLI adds this to the run's cpu_seconds (see evomp.cli._baseline)
        info["source_cpu_seconds"] = src_cpu
    return BaselineResult(out, info)

