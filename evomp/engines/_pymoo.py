"""pymoo engine: NSGA-II (or NSGA-III, SMS-EMOA) on the integer genome, by ask and tell.

Algorithms are built by name from :data:`ALGORITHMS` (``search.algorithm``); a third party
adds one with ``ALGORITHMS.register(name, builder)``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from pymoo.core.algorithm import Algorithm
from pymoo.core.evaluator import Evaluator as PymooEvaluator
from pymoo.core.problem import Problem
from pymoo.core.repair import Repair
from pymoo.core.termination import NoTermination
from pymoo.problems.static import StaticProblem

from evomp._registry import Registry
from evomp.engines._base import ENGINES, EngineParts, Proposals
from evomp.engines._encoding import CompactEncoding
from evomp.engines._operators import (
    ChainRepair,
    KeepChannelRepair,
    LayerBlockCrossover,
    LevelStepMutation,
    MixedSampling,
)
from hwmodels import LayerTable

__all__ = ["PymooEngine", "ALGORITHMS"]

ObjFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]

#: ``(pop_size, n_obj, operators) -> pymoo algorithm``
AlgorithmBuilder = Callable[[int, int, dict[str, Any]], Algorithm]

#: algorithm name -> builder (``search.algorithm``)
ALGORITHMS: Registry[AlgorithmBuilder] = Registry("search.algorithm")


def _nsga2(pop_size: int, n_obj: int, ops: dict[str, Any]) -> Algorithm:
    from pymoo.algorithms.moo.nsga2 import NSGA2

    return NSGA2(pop_size=pop_size, **ops)


def _nsga3(pop_size: int, n_obj: int, ops: dict[str, Any]) -> Algorithm:
    from pymoo.algorithms.moo.nsga3 import NSGA3
    from pymoo.util.ref_dirs import get_reference_directions

    parts = {2: pop_size - 1, 3: 12}.get(n_obj, 6)
    ref = get_reference_directions("das-dennis", n_obj, n_partitions=parts)
    return NSGA3(ref_dirs=ref, pop_size=max(pop_size, len(ref)), **ops)


def _smsemoa(pop_size: int, n_obj: int, ops: dict[str, Any]) -> Algorithm:
    from pymoo.algorithms.moo.sms import SMSEMOA

    return SMSEMOA(pop_size=pop_size, **ops)


ALGORITHMS.register("nsga2", _nsga2)
ALGORITHMS.register("nsga3", _nsga3)
ALGORITHMS.register("smsemoa", _smsemoa)


class PymooEngine:
    """Runs a pymoo algorithm for some generations per round on cheap objectives.

    The population survives rounds and is checkpointed after every generation to
    ``checkpoint`` (an ``.npz`` with the population and counters), so a resumed run
    continues from it.

    Args:
        table: the layer table (genome bounds, operators).
        encoding: compact encoding, for the sensitivity-ordered initial population.
        n_obj / n_constr: objective and constraint counts of the cheap problem.
        algorithm: ``"nsga2"``, ``"nsga3"`` or ``"smsemoa"``.
        pop_size: population size.
        seed: random seed.
        checkpoint: path of the checkpoint file, or None.
        repair: an extra repair applied after keep-a-channel (e.g. Free Bits when an
            objective is a latency).
        budgeted: sensitivity-ordered genomes at several budgets for the initial
            population (see :func:`initial_design`).
    """

    name = "pymoo"

    def __init__(
        self,
        table: LayerTable,
        encoding: CompactEncoding,
        n_obj: int,
        n_constr: int = 0,
        algorithm: str = "nsga2",
        pop_size: int = 64,
        seed: int = 0,
        checkpoint: str | Path | None = None,
        repair: Repair | None = None,
        budgeted: np.ndarray | None = None,
    ) -> None:
        self._builder = ALGORITHMS.get(algorithm)  # an unknown name is an error here
        self.table = table
        self.encoding = encoding
        self.algorithm = algorithm
        self.pop_size = pop_size
        self.seed = seed
        self.n_obj = n_obj
        self.n_constr = n_constr
        self.checkpoint = Path(checkpoint) if checkpoint else None
        self.repair = repair
        self.budgeted = budgeted
        self.pop: np.ndarray | None = None
        self.generation = 0
        if self.checkpoint and self.checkpoint.is_file():
            with np.load(self.checkpoint) as z:
                if z["pop"].shape[1] == table.n_genes:
                    self.pop = z["pop"].astype(np.int8)
                    self.generation = int(z["generation"])
        self.problem = Problem(
            n_var=table.n_genes, n_obj=n_obj, n_ieq_constr=n_constr,
            xl=np.zeros(table.n_genes), xu=(table.gene_n_levels - 1).astype(float), vtype=int,
        )

    @classmethod
    def from_parts(cls, parts: EngineParts) -> PymooEngine:
        """The engine of a run (see :class:`~evomp.engines.EngineParts`)."""
        return cls(parts.table, parts.encoding, parts.n_obj, parts.n_constr, parts.algorithm,
                   parts.population, parts.seed, checkpoint=parts.checkpoint,
                   repair=parts.repair, budgeted=parts.anchors)

    def build_algorithm(self, seeds: np.ndarray | None, seed: int) -> Algorithm:
        """The pymoo algorithm of one round, its population seeded with ``seeds``."""
        common: dict[str, Any] = dict(
            sampling=MixedSampling(self.table, self.encoding, seeds, seed, self.budgeted),
            crossover=LayerBlockCrossover(self.table),
            mutation=LevelStepMutation(self.table),
            repair=KeepChannelRepair(self.table) if self.repair is None
            else ChainRepair(KeepChannelRepair(self.table), self.repair),
            eliminate_duplicates=True,
        )
        return self._builder(self.pop_size, self.n_obj, common)

    def initial(self, genomes: np.ndarray) -> Proposals:
        """The initial design as given (the pymoo engine records no parameters)."""
        return Proposals(np.asarray(genomes, dtype=np.int8))

    def distributions(self) -> None:
        return None

    def propose(self, objective: ObjFn, generations: int, inject: np.ndarray | None = None
                ) -> Proposals:
        """Run ``generations`` generations on ``objective`` and return the population.

        Args:
            objective: ``X (n, n_genes) int8 -> (F (n, n_obj), G (n, n_constr))`` to minimise.
            generations: generations this round.
            inject: genomes to place in the starting population (e.g. the true front).

        Returns:
            The ``(pop_size, n_genes)`` int8 genomes of the final population.
        """
        seeds = self.pop
        if inject is not None and len(inject):
            seeds = inject if seeds is None else np.concatenate([inject, seeds])
        if seeds is not None:
            _, first = np.unique(seeds, axis=0, return_index=True)
            seeds = seeds[np.sort(first)][: self.pop_size]
        algo = self.build_algorithm(seeds, self.seed + self.generation)
        algo.setup(self.problem, termination=NoTermination(), seed=self.seed + self.generation,
                   verbose=False)
        for _ in range(generations):
            pop = algo.ask()
            X = np.rint(pop.get("X")).astype(np.int8)
            F, G = objective(X)
            static = StaticProblem(self.problem, F=F, G=G) if self.n_constr else \
                StaticProblem(self.problem, F=F)
            PymooEvaluator().eval(static, pop)
            algo.tell(infills=pop)
            self.generation += 1
            self.pop = np.rint(algo.pop.get("X")).astype(np.int8)
            self._save()
        assert self.pop is not None
        return Proposals(self.pop.copy())

    def _save(self) -> None:
        if self.checkpoint is None or self.pop is None:
            return
        tmp = self.checkpoint.with_name(self.checkpoint.stem + ".tmp.npz")
        np.savez(tmp, pop=self.pop, generation=self.generation)
        tmp.replace(self.checkpoint)


ENGINES.register("pymoo", PymooEngine.from_parts)
