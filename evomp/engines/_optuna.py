"""Optuna engine: samplers over the compact encoding (NSGA-II/III, TPE, GP)."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import optuna

from evomp._errors import EvompError
from evomp.engines._encoding import CompactEncoding

optuna.logging.set_verbosity(optuna.logging.WARNING)

__all__ = ["OptunaEngine", "SAMPLERS", "make_sampler", "distributions"]

SAMPLERS = ("nsga2", "nsga3", "tpe", "gp")

ObjFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def make_sampler(name: str, seed: int, population: int = 32) -> optuna.samplers.BaseSampler:
    """An Optuna sampler by name; constraints come from ``trial.set_constraint``."""
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=population, seed=seed)
    if name == "nsga3":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.NSGAIIISampler(population_size=population, seed=seed)
    if name == "tpe":
        return optuna.samplers.TPESampler(multivariate=True, seed=seed)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    raise EvompError(f"search.sampler must be one of {SAMPLERS}, got {name!r}")


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
                 trials: int = 400, population: int = 32, seed: int = 0) -> None:
        make_sampler(sampler, seed)  # validate the name early
        self.encoding = encoding
        self.n_obj = n_obj
        self.sampler = sampler
        self.trials = trials
        self.population = population
        self.seed = seed
        self.round = 0
        self.last_params: dict[bytes, dict[str, float]] = {}

    def propose(self, objective: ObjFn, generations: int, inject: np.ndarray | None = None
                ) -> np.ndarray:
        """Run ``trials`` cheap trials (``generations`` is ignored) and return genomes of
        the non-dominated feasible ones (at most ``population``; the least infeasible ones
        when no trial is feasible). ``inject`` genomes (e.g. the true front) are enqueued
        as the first trials, through their compact parameters."""
        self.round += 1
        study = optuna.create_study(
            directions=["minimize"] * self.n_obj,
            sampler=make_sampler(self.sampler, self.seed + self.round, self.population),
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
        return G
