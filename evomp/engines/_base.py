"""The engine protocol: what the search loop asks of any engine, and the engine registry.

An engine searches the genome space on *cheap* objectives (surrogate-predicted accuracy and
hardware costs) and proposes genomes; the loop picks among them what to evaluate for real.
Engines are built by name from :data:`ENGINES` with the parts of a run passed in
(:class:`EngineParts`); none builds its own encoding, objectives or repair.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from evomp._registry import Registry
from evomp.engines._encoding import CompactEncoding
from evomp.engines._refine import FreeBitsRepair
from hwmodels import LayerTable

__all__ = ["CheapFn", "Proposals", "Engine", "EngineParts", "ENGINES", "make_engine"]

#: ``genomes (n, n_genes) int8 -> (F (n, n_obj) minimised, G (n, n_constr) <= 0 feasible)``
CheapFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]

Params = dict[str, float]


@dataclass(frozen=True)
class Proposals:
    """Genomes an engine proposes, with their compact parameters where the engine has them.

    Attributes:
        genomes: ``(n, n_genes)`` int8.
        params: per row, the compact parameters that decode to it (the Optuna engine), or
            None for a row without them; None altogether for engines without parameters.
    """

    genomes: np.ndarray
    params: list[Params | None] | None = None

    def __len__(self) -> int:
        return len(self.genomes)

    def take(self, rows: Sequence[int] | np.ndarray) -> Proposals:
        """The proposals at ``rows`` (in that order)."""
        idx = np.asarray(rows, dtype=np.int64)
        params = None if self.params is None else [self.params[i] for i in idx]
        return Proposals(self.genomes[idx], params)

    def changed_to(self, genomes: np.ndarray) -> Proposals:
        """These proposals after a repair changed some genomes: each row keeps the
        parameters that decode to it, if any of these proposals' rows had them."""
        if self.params is None:
            return Proposals(genomes, None)
        lookup = {g.tobytes(): p for g, p in zip(self.genomes, self.params) if p is not None}
        return Proposals(genomes, [lookup.get(g.tobytes()) for g in genomes])


@runtime_checkable
class Engine(Protocol):
    """What the search loop needs of an engine."""

    name: str

    def propose(self, cheap: CheapFn, generations: int,
                inject: np.ndarray | None = None) -> Proposals:
        """Search ``generations`` generations (or the engine's equivalent) on ``cheap`` and
        return candidate genomes; ``inject`` genomes (the true front) seed the search."""
        ...

    def initial(self, genomes: np.ndarray) -> Proposals:
        """The initial design as this engine records it (the Optuna engine round-trips it
        through its compact encoding, so every initial trial carries parameters)."""
        ...

    def distributions(self) -> dict[str, Any] | None:
        """Optuna distributions of the compact parameters a trial records, or None."""
        ...


@dataclass(frozen=True)
class EngineParts:
    """What a run hands an engine.

    Attributes:
        table: the layer table (genome bounds).
        encoding: the compact encoding (sensitivity order).
        n_obj / n_constr: objective and constraint counts of the cheap problem.
        seed: the run's seed.
        population: population (pymoo) or sampler population / proposals per round.
        generations: cheap generations per round (the Optuna engine runs
            ``population * generations // 4`` cheap trials).
        algorithm: the pymoo algorithm's name (``search.algorithm``).
        sampler: the Optuna sampler's name (``search.sampler``).
        checkpoint: where an engine with state between rounds keeps it (or None).
        repair: an engine-side repair (Free Bits when an objective is a latency), or None.
        anchors: sensitivity-ordered genomes for the initial population.
    """

    table: LayerTable
    encoding: CompactEncoding
    n_obj: int
    n_constr: int = 0
    seed: int = 0
    population: int = 64
    generations: int = 30
    algorithm: str = "nsga2"
    sampler: str = "nsga2"
    checkpoint: Path | None = None
    repair: FreeBitsRepair | None = None
    anchors: np.ndarray | None = field(default=None, repr=False)


#: engine name -> factory ``EngineParts -> Engine``
ENGINES: Registry[Callable[[EngineParts], Engine]] = Registry("search.engine")


def make_engine(name: str, parts: EngineParts) -> Engine:
    """The engine registered as ``name``, built from ``parts``."""
    return ENGINES.get(name)(parts)
