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

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from evomp._errors import EvompError
from evomp.baselines._registry import (
    METHODS,
    BaselineOptions,
    BaselineResult,
    check_params,
    register_method,
)
from evomp.engines import refine_bits
from evomp.run import RunDir
from hwmodels import LayerTable

if TYPE_CHECKING:
    from evomp.objectives import Objectives
    from evomp.run import RunContext

__all__ = [
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
    try:
        v = RunDir(run_dir).read_run_json().get("cpu_seconds")
    except EvompError:
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
    from evomp.baselines._ilp import to_space
    from evomp.space import genome_from_hex

    rd = RunDir(run_dir)
    d = rd.path
    if not rd.front_json.is_file():
        raise EvompError(f"{d} has no front.json; pass a finished run directory to --from")
    _, members = rd.read_front()
    if not members:
        raise EvompError(f"the front of {d} is empty; nothing to refine")
    src = table
    if rd.space.is_file():
        src = LayerTable.from_dict(json.loads(rd.space.read_text()))
        if [x.name for x in src.layers] != [x.name for x in table.layers]:
            raise EvompError(f"{d} holds a run of another model (layers "
                             f"{[x.name for x in src.layers]}); refine runs of this spec")
    rows = [genome_from_hex(m["genome"]) for m in members.values()]
    if any(len(r) != src.n_genes for r in rows):
        raise EvompError(f"the genomes in {rd.front_json} do not fit its space")
    return to_space(src, table, np.stack(rows))


@register_method("freebits")
def freebits_method(ctx: RunContext, objectives: Objectives, opts: BaselineOptions
                    ) -> BaselineResult:
    """Refine ``--from DIR``'s front (or the uniform and ILP outputs) for latency."""
    from evomp.baselines._uniform import uniform_genomes

    p = check_params("freebits", opts.params, DEFAULTS)
    metric = p["metric"] or _default_metric(objectives)
    model = objectives.lookup(metric)
    table = ctx.space.table
    src_cpu: float | None = None
    ilp_params = None
    if opts.from_dir is not None:
        start = genomes_from_run(opts.from_dir, table)
        source = str(opts.from_dir)
        src_cpu = source_cpu_seconds(opts.from_dir)
        if src_cpu is None:
            log.warning("freebits: %s records no cpu_seconds; this run's CPU time leaves out "
                        "the cost of the front it refines", RunDir(opts.from_dir).run_json)
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

