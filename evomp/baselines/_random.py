"""Random search: as many true (short-QAT) evaluations as the search, on random genomes.

Uniformly random genes put every genome near the same cost (each channel's bits are an
average of the choices, and there are hundreds of channels), which would make random
search a strawman. The default sampler therefore draws, for every genome, its own
distribution over the weight levels and over the activation levels (flat Dirichlet) and
then the genes from it, so that the sample spans the whole cost range, from heavily
pruned to all 8 bit. ``sampler = "uniform"`` gives the plain version.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from evomp._errors import EvompError
from evomp.baselines._registry import BaselineOptions, BaselineResult, check_params, register_method
from evomp.evaluation import evaluate_parallel
from evomp.objectives import nondominated
from hwmodels import LayerTable

if TYPE_CHECKING:
    from evomp.objectives import Objectives
    from evomp.run import RunContext

__all__ = ["sample_genomes", "evaluation_rows", "front_candidates", "DEFAULTS"]

log = logging.getLogger("evomp")

#: ``[baselines.random]`` keys and their defaults.
DEFAULTS: dict[str, Any] = {
    "sampler": "dirichlet",  # "dirichlet" (spans the cost range) or "uniform"
    "seed": -1,  # -1: the spec's seed
}


def sample_genomes(table: LayerTable, n: int, rng: np.random.Generator,
                   sampler: str = "dirichlet") -> np.ndarray:
    """``(n, n_genes)`` int8 random genomes.

    Args:
        table: the layer table.
        n: number of genomes.
        rng: random generator.
        sampler: ``"dirichlet"``: per genome, level probabilities drawn from a flat
            Dirichlet (separately for weight and activation genes), genes drawn from
            them; ``"uniform"``: every gene uniform over its choices.

    Raises:
        EvompError: an unknown sampler.
    """
    kw, ka = len(table.w_choices), len(table.a_choices)
    nw, na = table.n_w_genes, table.n_a_genes
    if sampler == "uniform":
        hi = table.gene_n_levels
        return (rng.random((n, table.n_genes)) * hi[None, :]).astype(np.int8)
    if sampler != "dirichlet":
        raise EvompError(f"[baselines.random] sampler must be 'dirichlet' or 'uniform', "
                         f"got {sampler!r}")
    pw = np.cumsum(rng.dirichlet(np.ones(kw), size=n), axis=1)  # (n, Kw)
    pa = np.cumsum(rng.dirichlet(np.ones(ka), size=n), axis=1)
    uw = rng.random((n, nw))
    ua = rng.random((n, na))
    gw = (uw[:, :, None] > pw[:, None, :-1]).sum(axis=2)
    ga = (ua[:, :, None] > pa[:, None, :-1]).sum(axis=2)
    return np.concatenate([gw, ga], axis=1).astype(np.int8)


def evaluation_rows(results: list[Any], method: str, costs: dict[str, np.ndarray],
                    prefix: str = "random") -> list[dict[str, Any]]:
    """Rows for ``evaluations.csv`` (the protocol's columns plus every metric)."""
    rows = []
    for i, r in enumerate(results):
        row = {"id": f"{prefix}-{i}", "method": method, "fidelity": r.fidelity,
               "genome_hash": r.genome_hash, "val_accuracy": r.val_accuracy,
               "ptq_accuracy": r.ptq_accuracy, "test_accuracy": r.test_accuracy,
               "failed": r.failed, "reason": r.reason, "seconds": r.seconds,
               "cpu_seconds": r.cpu_seconds}
        row.update({m: float(v[i]) for m, v in costs.items()})
        rows.append(row)
    return rows


def front_candidates(objectives: Objectives, genomes: np.ndarray, accuracy: np.ndarray,
                     cap: int) -> np.ndarray:
    """Indices of the non-dominated genomes (accuracy and hardware objectives, feasible
    first), at most ``cap``, spread evenly along the first hardware metric.

    Args:
        objectives: the run's objectives.
        genomes: ``(n, n_genes)``.
        accuracy: ``(n,)`` short-QAT validation accuracy (NaN = failed).
        cap: most candidates to return.

    Returns:
        ``(m,)`` int indices into ``genomes``, sorted by the first hardware metric.
    """
    acc = np.asarray(accuracy, dtype=float)
    ok = ~np.isnan(acc)
    if not ok.any():
        return np.zeros(0, dtype=np.int64)
    costs = objectives.costs(genomes)
    viol = objectives.violation(np.nan_to_num(acc), costs).sum(axis=1)
    idx = np.nonzero(ok & (viol == 0))[0]
    if len(idx) == 0:  # nothing feasible: the least infeasible
        idx = np.nonzero(ok)[0]
        idx = idx[np.argsort(viol[idx], kind="stable")][: max(cap, 1)]
    F = objectives.matrix(acc[idx], {k: v[idx] for k, v in costs.items()})
    nd = idx[nondominated(F)]
    key = costs[objectives.hw_metrics[0]] if objectives.hw_metrics else -acc
    nd = nd[np.argsort(key[nd], kind="stable")]
    if len(nd) > cap:
        nd = nd[np.unique(np.round(np.linspace(0, len(nd) - 1, cap)).astype(int))]
    return nd


@register_method("random")
def random_method(ctx: RunContext, objectives: Objectives, opts: BaselineOptions
                  ) -> BaselineResult:
    """``budget`` random genomes with the search's short QAT; the non-dominated ones go on."""
    from evomp.space import repair_all_pruned

    p = check_params("random", opts.params, DEFAULTS)
    budget = opts.budget or ctx.spec.search.budget
    if budget < 1:
        raise EvompError(f"--budget must be at least 1, got {budget}")
    seed = ctx.spec.seed if p["seed"] < 0 else int(p["seed"])
    table = ctx.space.table
    g = sample_genomes(table, budget, np.random.default_rng(seed), p["sampler"])
    g = repair_all_pruned(table, g.astype(np.int64)).astype(np.int8)  # as the search does
    results, worker_cpu = evaluate_parallel(ctx.evaluator, g, "short", jobs=opts.jobs)
    acc = np.array([np.nan if r.failed else r.val_accuracy for r in results])
    costs = objectives.costs(g)
    rows = evaluation_rows(results, "random", costs)
    chosen = front_candidates(objectives, g, acc, ctx.spec.search.final_max)
    log.info("random: %d short evaluations, %d front candidates", budget, len(chosen))
    info = {
        "params": p,  # defaults merged with [baselines.random]
        "sampler": p["sampler"],
        "seed": seed,
        "n_short_evaluations": int(budget),
        "evaluations": rows,
        "worker_cpu_seconds": float(worker_cpu),
    }
    return BaselineResult(g[chosen], info)
