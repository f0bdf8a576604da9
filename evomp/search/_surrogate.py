"""The search's accuracy surrogate (genome features, then a named predictor) and the
selection rules that choose which candidates are evaluated for real.

Both are registries (``search.surrogate``, ``search.selection``): a third party adds a
predictor with ``SURROGATES.register(name, factory)`` or a rule with
``SELECTIONS.register(name, rule)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

import surrogates
from evomp._registry import Registry
from evomp.objectives import Objectives, nondominated
from hwmodels import LayerTable

__all__ = [
    "SURROGATES",
    "SELECTIONS",
    "SelectionContext",
    "SelectionRule",
    "build_surrogate",
]

#: predictor name -> factory ``seed -> unfitted scikit-learn regressor`` with ``return_std``
SURROGATES: Registry[Callable[[int], Any]] = Registry("search.surrogate")
SURROGATES.register("auto", lambda seed: surrogates.AutoSurrogate())
SURROGATES.register("gp", lambda seed: surrogates.GPSurrogate())
SURROGATES.register("forest", lambda seed: surrogates.ForestSurrogate(random_state=seed))
SURROGATES.register("boosting", lambda seed: surrogates.BoostingSurrogate(random_state=seed))
SURROGATES.register("hawq", lambda seed: surrogates.HawqProxy())
SURROGATES.register("ensemble",
                    lambda seed: surrogates.EnsembleSurrogate(random_state=seed))


def build_surrogate(name: str, table: LayerTable, profile: Any, seed: int, n_extra: int = 0
                    ) -> Any:
    """A scikit-learn pipeline: genome features, then the predictor registered as ``name``.
    With ``n_extra``, the inputs are genomes followed by that many measured columns (e.g. a
    cheap fidelity's accuracy), passed through as features."""
    from sklearn.pipeline import make_pipeline

    predictor = SURROGATES.get(name)(seed)
    return make_pipeline(surrogates.GenomeFeatures(table, profile, n_extra=n_extra), predictor)


@dataclass(frozen=True)
class SelectionContext:
    """What a selection rule sees of one round.

    Attributes:
        pool: ``(n, n_genes)`` int8 candidate genomes (fresh: none evaluated yet).
        mean / std: ``(n,)`` surrogate-predicted accuracy and its uncertainty.
        pool_costs: ``{metric: (n,)}`` hardware costs of the pool.
        y: ``(m,)`` measured accuracy of the true evaluations so far.
        true_costs: ``{metric: (m,)}`` their hardware costs (read back from the study).
        objectives: the run's objectives and constraints.
        rng: the run's random generator.
    """

    pool: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    pool_costs: dict[str, np.ndarray]
    y: np.ndarray
    true_costs: dict[str, np.ndarray]
    objectives: Objectives
    rng: np.random.Generator


class SelectionRule(Protocol):
    def __call__(self, c: SelectionContext, k: int) -> np.ndarray:
        """``(k,)`` rows of ``c.pool`` to evaluate for real."""
        ...


def _uncertainty(c: SelectionContext, k: int) -> np.ndarray:
    return np.asarray(surrogates.select_uncertain(c.mean, c.std, k))


def _diverse(c: SelectionContext, k: int) -> np.ndarray:
    return np.asarray(surrogates.select_diverse(c.pool.astype(float), k, c.rng))


def _ehvi(c: SelectionContext, k: int) -> np.ndarray:
    """Expected hypervolume improvement over the true front, among the candidates that
    are predicted feasible (the least infeasible ones when fewer than ``k`` are)."""
    obj = c.objectives
    hw = obj.hw_metrics
    C = np.stack([c.pool_costs[m] for m in hw], axis=1)
    Ct = np.stack([c.true_costs[m] for m in hw], axis=1)
    front_mask = nondominated(obj.matrix(c.y, c.true_costs))
    front_pts = np.concatenate([c.y[front_mask, None], Ct[front_mask]], axis=1)
    ref = np.concatenate([[0.0], 1.1 * np.maximum(C.max(0), Ct.max(0))])
    viol = obj.violation(c.mean, c.pool_costs).sum(axis=1)
    feasible = np.nonzero(viol == 0)[0]
    if len(feasible) < k:
        feasible = np.argsort(viol, kind="stable")[: max(k, len(feasible))]
    idx = surrogates.select_ehvi(c.mean[feasible], c.std[feasible], C[feasible], front_pts,
                                 ref, k, c.rng)
    return feasible[np.asarray(idx)]


#: selection rule name -> rule (``search.selection``)
SELECTIONS: Registry[SelectionRule] = Registry("search.selection")
SELECTIONS.register("ehvi", _ehvi)
SELECTIONS.register("uncertainty", _uncertainty)
SELECTIONS.register("diverse", _diverse)
