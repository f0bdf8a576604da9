"""Build a search's parts once from the run's spec and hand them to the loop and the worker.

One factory, :func:`build_parts`, turns a :class:`~evomp.run.RunContext` (spec, task, float
model, space, evaluator, run directory) into the parts a search works with: objectives,
the study store, the sensitivity profile, the compact encoding, the initial-design
anchors, the engine-side latency repair, the engine, the surrogate factory and the
selection rule. The loop (:class:`~evomp.search.Search`) and the worker receive them;
neither builds its own.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from evomp.engines import (
    CompactEncoding,
    Engine,
    EngineParts,
    FreeBitsRepair,
    latency_refiner,
    make_engine,
)
from evomp.evaluation import channel_importance, run_profile
from evomp.objectives import Objectives
from evomp.run import CpuClock, RunContext, RunDir, open_storage
from evomp.search._queue import Queue, open_queue_storage
from evomp.search._store import Store
from evomp.search._surrogate import SELECTIONS, SURROGATES, SelectionRule, build_surrogate
from evomp.space import repair_all_pruned

__all__ = ["SearchParts", "build_parts", "anchor_genomes"]

log = logging.getLogger("evomp")


@dataclass
class SearchParts:
    """The parts of one search, built once (see :func:`build_parts`).

    Attributes:
        objectives: accuracy, hardware metrics and constraints.
        store: the Optuna study that records every true evaluation.
        profile: the run's sensitivity profile (``surrogates.SensitivityProfile``).
        encoding: the compact encoding, in channel-importance order.
        anchors: ``(m, n_genes)`` int8 sensitivity-ordered genomes for the initial design.
        refiner: Free Bits' repair when an objective is a latency, else None.
        engine: the search engine (``search.engine``).
        surrogate: ``(n_extra=0, name=None) -> unfitted pipeline`` (genome features, then
            the predictor ``name``, default ``search.surrogate``; with ``n_extra`` measured
            columns after the genes, e.g. a screening fidelity's accuracy).
        selection: the rule that picks each round's candidates (``search.selection``).
        clock: the run's CPU clock (started when the parts are built, so the profile
            counts).
        storage_url: the database URL, or None for the run directory's journal file.
        engine_name / sampler_name: the engine and Optuna sampler in use.
        queue: the study as the queue between this controller and its workers.
    """

    objectives: Objectives
    store: Store
    profile: Any
    encoding: CompactEncoding
    anchors: np.ndarray
    refiner: FreeBitsRepair | None
    engine: Engine
    surrogate: Callable[..., Any]
    selection: SelectionRule
    clock: CpuClock
    storage_url: str | None = None
    engine_name: str = "pymoo"
    sampler_name: str = "nsga2"
    queue: Queue | None = None


def anchor_genomes(table: Any, encoding: CompactEncoding, profile: Any) -> np.ndarray:
    """Sensitivity-ordered genomes at several memory budgets for the initial design,
    from the smallest to the largest:

    * pruned anchors (channel-wise spaces with 0 and 2 bit): in every layer the least
      important 35%, 55% or 70% of the channels pruned and the rest at 2 bit, by
      channel importance, so the first surrogate sees working networks in the
      low-memory corner;
    * the greedy HAWQ-style 2/4/8-bit assignments at 25% to 60% of the 8-bit weight
      memory, without pruning: the Hessian proxy rates pruning cheap, and its greedy
      pruned genomes trained to near chance on the demo (0.33-0.38 validation
      accuracy), which misled the first rounds.

    Returns:
        ``(m, n_genes)`` int8 genomes.
    """
    import surrogates

    t, enc = table, encoding
    parts = []
    if t.granularity == "channel" and 0 in t.w_choices and 2 in t.w_choices:
        top_a = float(len(t.a_choices) - 1)
        for prune in (0.7, 0.55, 0.35):
            p = [top_a if n.startswith("a.") else prune if n.endswith(".0")
                 else 1.0 - prune if n.endswith(".2") else 0.0 for n in enc.names]
            parts.append(enc.decode(np.array([p])))
    parts.append(surrogates.sensitivity_order_genome(t, profile, np.geomspace(0.25, 0.6, 4),
                                                     allow_prune=False))
    return repair_all_pruned(t, np.concatenate(parts).astype(np.int64)).astype(np.int8)


def build_parts(
    ctx: RunContext,
    *,
    engine: str | None = None,
    sampler: str | None = None,
    storage: str | None = None,
    say: Callable[[str], None] | None = None,
) -> SearchParts:
    """The parts of a search over ``ctx``.

    Args:
        ctx: the run context.
        engine / sampler: overrides of ``search.engine`` / ``search.sampler``.
        storage: a database URL (default: the run directory's journal file).
        say: where messages go (the CLI prints them; default: the log only).

    Raises:
        EvompError: an unknown engine, sampler, algorithm, surrogate or selection rule, an
            unusable storage, or objectives the study was not made for.
    """
    s = ctx.spec.search
    engine_name = engine or s.engine
    sampler_name = sampler or s.sampler
    tell = say or log.info
    rd = RunDir(ctx.out)
    clock = CpuClock(before=float(rd.read_progress().get("cpu_seconds", 0.0)))
    table = ctx.space.table
    objectives = Objectives(table, s.objectives, s.constraints, s.hardware, ctx.spec.hw)
    selection = SELECTIONS.get(s.selection)
    SURROGATES.get(s.surrogate)  # an unknown name fails before anything is computed
    storage_obj = open_queue_storage(open_storage(storage, ctx.out, tell))
    store = Store(storage_obj, ctx.spec.name, objectives)
    rd.write_storage_note(storage, ctx.spec.name)
    if not rd.sensitivity.is_file():
        tell(f"sensitivity profile ({s.sensitivity}, {s.probes} probes)...")
    profile = run_profile(ctx, s.sensitivity, s.probes)
    encoding = CompactEncoding(table, channel_importance(profile, table))
    anchors = anchor_genomes(table, encoding, profile)
    refiner = latency_refiner(table, objectives)
    if refiner is not None:
        tell("Free Bits refinement on: precision is raised wherever that lowers "
             f"{refiner.metric}")
    eng = make_engine(engine_name, EngineParts(
        table=table, encoding=encoding, n_obj=len(objectives.names),
        n_constr=len(objectives.constraints), seed=ctx.spec.seed, population=s.population,
        generations=s.generations, algorithm=s.algorithm, sampler=sampler_name,
        checkpoint=rd.pymoo_state, repair=refiner, anchors=anchors))
    # the engine's compact parameters are recorded with the candidates it queues
    queue = Queue(store, storage_obj, distributions=eng.distributions())
    seed = ctx.spec.seed

    def surrogate(n_extra: int = 0, name: str | None = None) -> Any:
        return build_surrogate(name or s.surrogate, table, profile, seed, n_extra)

    return SearchParts(objectives=objectives, store=store, profile=profile, encoding=encoding,
                       anchors=anchors, refiner=refiner, engine=eng, surrogate=surrogate,
                       selection=selection, clock=clock, storage_url=storage,
                       engine_name=engine_name, sampler_name=sampler_name, queue=queue)
