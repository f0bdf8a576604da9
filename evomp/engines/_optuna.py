"""Optuna engine: samplers over the compact encoding (NSGA-II/III, TPE, GP).

Samplers are built by name from :data:`SAMPLERS` (``search.sampler``); a third party adds
one with ``SAMPLERS.register(name, builder)``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import optuna

from evomp._registry import Registry
from evomp.engines._base import ENGINES, EngineParts, Proposals
from evomp.engines._encoding import CompactEncoding
from evomp.engines._refine import FreeBitsRepair

optuna.logging.set_verbosity(optuna.logging.WARNING)

__all__ = ["OptunaEngine", "SAMPLERS", "make_sampler", "distributions"]

ObjFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]

#: ``(seed, population) -> Optuna sampler``
SamplerBuilder = Callable[[int, int], optuna.samplers.BaseSampler]

#: sampler name -> builder (``search.sampler``); constraints come from ``set_constraint``
SAMPLERS: Registry[SamplerBuilder] = Registry("search.sampler")


def _nsga3(seed: int, population: int) -> optuna.samplers.BaseSampler:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.NSGAIIISampler(population_size=population, seed=seed)


SAMPLERS.register("nsga2", lambda seed, population: optuna.samplers.NSGAIISampler(
    population_size=population, seed=seed))
SAMPLERS.register("nsga3", _nsga3)
SAMPLERS.register("tpe", lambda seed, population: optuna.samplers.TPESampler(
    multivariate=True, seed=seed))
SAMPLERS.register("gp", lambda seed, population: optuna.samplers.GPSampler(seed=seed))


def make_sampler(name: str, seed: int, population: int = 32) -> optuna.samplers.BaseSampler:
    """An Optuna sampler by name (see :data:`SAMPLERS`)."""
    return SAMPLERS.get(name)(seed, population)


def distributions(enc: CompactEncoding) -> dict[str, optuna.distributions.BaseDistribution]:
    """Optuna distributions of the compact parameters (shares float, levels int)."""
    t = enc.table
    out: dict[str, optuna.distributions.BaseDistribution] = {}
    for n in enc.names:
        if n.startswith("a."):
            out[n] = optuna.distributions.IntDistribution(0, len(t.a_choices) - 1)
        elif t.granularity == "layer":
            out[n] = optuna.distributions.IntDistribution(0, len(t.w_choices) - 1)
        else:
            out[n] = optuna.distributions.FloatDistribution(0.0, 1.0)
    return out


def suggest(trial: optuna.Trial, enc: CompactEncoding) -> np.ndarray:
    """Suggest every compact parameter; returns the ``(n_params,)`` vector."""
    dists = distributions(enc)
    vals: list[float] = []
    for n in enc.names:
        d = dists[n]
        if isinstance(d, optuna.distributions.IntDistribution):
            vals.append(trial.suggest_int(n, d.low, d.high))
        else:
            assert isinstance(d, optuna.distributions.FloatDistribution)  # see distributions()
            vals.append(trial.suggest_float(n, d.low, d.high))
    return np.array(vals, dtype=float)


class OptunaEngine:
    """Each round runs an in-memory Optuna study on the cheap objectives and returns the
    decoded genomes of its best trials. The persistent study (the run's record) holds the
    true evaluations with the same compact parameters.

    Args:
        encoding: the compact encoding.
        n_obj: number of objectives (all minimised here).
        sampler: ``"nsga2"``, ``"nsga3"``, ``"tpe"`` or ``"gp"``.
        trials: cheap trials per round.
        seed: random seed.
    """

    name = "optuna"

    def __init__(self, encoding: CompactEncoding, n_obj: int, sampler: str = "nsga2",
                 trials: int = 400, population: int = 32, seed: int = 0,
                 repair: FreeBitsRepair | None = None) -> None:
        make_sampler(sampler, seed)  # validate the name early
        self.repair = repair
        self.encoding = encoding
        self.n_obj = n_obj
        self.sampler = sampler
        self.trials = trials
        self.population = population
        self.seed = seed
        self.round = 0
        self.last_params: dict[bytes, dict[str, float]] = {}

    @classmethod
    def from_parts(cls, parts: EngineParts) -> OptunaEngine:
        """The engine of a run: ``population * generations // 4`` cheap trials a round."""
        return cls(parts.encoding, parts.n_obj, parts.sampler,
                   trials=parts.population * parts.generations // 4,
                   population=parts.population, seed=parts.seed, repair=parts.repair)

    def build_sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        """The sampler of one round's cheap study."""
        return make_sampler(self.sampler, seed, self.population)

    def initial(self, genomes: np.ndarray) -> Proposals:
        """The initial design through the compact encoding: each genome is replaced by the
        decoding of its encoding, so that every initial trial carries its parameters."""
        enc = self.encoding
        P = enc.encode(np.asarray(genomes))
        return Proposals(enc.decode(P), [dict(zip(enc.names, map(float, p))) for p in P])

    def distributions(self) -> dict[str, optuna.distributions.BaseDistribution]:
        return distributions(self.encoding)

    def propose(self, objective: ObjFn, generations: int, inject: np.ndarray | None = None
                ) -> Proposals:
        """Run ``trials`` cheap trials (``generations`` is ignored) and return genomes of
        the non-dominated feasible ones (at most ``population``; the least infeasible ones
        when no trial is feasible). ``inject`` genomes (e.g. the true front) are enqueued
        as the first trials, through their compact parameters. The engine's repair (Free
        Bits), if any, is applied to the proposals; a genome it changed keeps the
        parameters of a proposal that decoded to it, if any."""
        self.round += 1
        study = optuna.create_study(
            directions=["minimize"] * self.n_obj,
            sampler=self.build_sampler(self.seed + self.round),
        )
        enc = self.encoding
        dists = distributions(enc)
        if inject is not None and len(inject):
            for p in enc.encode(inject):
                study.enqueue_trial(
                    {n: int(round(v)) if isinstance(dists[n], optuna.distributions.IntDistribution)
                     else float(v) for n, v in zip(enc.names, p)}, skip_if_exists=True)
        n_trials = self.trials if self.sampler != "gp" else min(self.trials, 60)
        batch = self.population
        done = 0
        while done < n_trials:
            k = min(batch, n_trials - done)
            trials = [study.ask(dists) for _ in range(k)]
            P = np.array([[t.params[n] for n in enc.names] for t in trials], dtype=float)
            G = enc.decode(P)
            F, C = objective(G)
            for t, f, c in zip(trials, F, C):
                for j, v in enumerate(c):
                    t.set_constraint(f"c{j}", float(v))
                study.tell(t, [float(x) for x in f])
            done += k
        best = list(study.best_trials)[: self.population]
        if not best:  # nothing feasible: the least infeasible trials
            done_trials = study.get_trials(deepcopy=False)
            viol = [sum(max(0.0, v) for v in (t.constraints or {}).values())
                    for t in done_trials]
            order = np.argsort(viol, kind="stable")[: self.population]
            best = [done_trials[i] for i in order]
        P = np.array([[t.params[n] for n in enc.names] for t in best], dtype=float)
        G = enc.decode(P)
        self.last_params = {g.tobytes(): dict(zip(enc.names, p)) for g, p in zip(G, P)}
        if self.repair is not None:
            G = self.repair.apply(G)
        return Proposals(G, [self.last_params.get(g.tobytes()) for g in G])


ENGINES.register("optuna", OptunaEngine.from_parts)
