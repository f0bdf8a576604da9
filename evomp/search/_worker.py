"""``evomp worker``: one of many processes sharing a study (e.g. in PostgreSQL).

Each worker loops: ask the shared study's sampler for a candidate (compact encoding),
decode it, claim it, evaluate it with short QAT, tell the result. Claims are rows under a
primary key in the study's own database (:class:`Claims`), so a genome that another trial
already claimed or recorded (another worker drew the same decoded genome) is not trained
again: the later trial is marked PRUNED with ``duplicate_of`` set, so no trial is lost and
none is evaluated twice. Workers stop once the study holds ``budget``
completed evaluations (they may overshoot by at most the number of workers - 1).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from evomp.engines import CompactEncoding, distributions, make_sampler
from evomp.objectives import Objectives
from evomp.run import RunContext
from evomp.search._parts import SearchParts, build_parts
from evomp.search._store import Store
from evomp.space import genome_hash, repair_all_pruned

__all__ = ["run_worker", "Claims"]

log = logging.getLogger("evomp")


class Claims:
    """Atomic genome claims in the study's own database: one row per (study, genome hash),
    inserted under a primary key, so of any number of workers that draw the same genome
    exactly one inserts the row and trains it; the others read who owns it.

    Args:
        url: the RDB storage URL (PostgreSQL, MySQL, SQLite) the study lives in.
        study_name: the study's name.
    """

    def __init__(self, url: str, study_name: str) -> None:
        import sqlalchemy as sa

        self.sa = sa
        self.study_name = study_name
        self.engine = sa.create_engine(url)
        meta = sa.MetaData()
        self.table = sa.Table(
            "evomp_claims", meta,
            sa.Column("study_name", sa.String(512), primary_key=True),
            sa.Column("genome_hash", sa.String(64), primary_key=True),
            sa.Column("trial_number", sa.Integer, nullable=False),
        )
        for attempt in range(6):  # workers starting together race to create the table
            try:
                meta.create_all(self.engine, checkfirst=True)
                break
            except sa.exc.DBAPIError:
                if attempt == 5:
                    raise
                time.sleep(0.2 * (attempt + 1))

    def claim(self, genome_hash: str, trial_number: int) -> int | None:
        """Claim ``genome_hash`` for ``trial_number``; returns the owner's trial number when
        another trial claimed it first, None when this trial now owns it."""
        sa, t = self.sa, self.table
        try:
            with self.engine.begin() as conn:
                conn.execute(sa.insert(t).values(study_name=self.study_name,
                                                 genome_hash=genome_hash,
                                                 trial_number=trial_number))
            return None
        except sa.exc.IntegrityError:
            with self.engine.connect() as conn:
                owner = conn.execute(sa.select(t.c.trial_number).where(
                    t.c.study_name == self.study_name,
                    t.c.genome_hash == genome_hash)).scalar_one()
            return None if owner == trial_number else int(owner)

    def close(self) -> None:
        self.engine.dispose()


def _recorded(study: optuna.Study, h: str) -> int | None:
    """A finished trial already holding genome ``h`` (e.g. recorded by ``evomp run``)."""
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL)):
        if t.user_attrs.get("genome_hash") == h:
            return t.number
    return None


def run_worker(ctx: RunContext, storage_url: str, budget: int | None = None,
               sampler: str | None = None, max_trials: int | None = None,
               progress: bool = True, parts: SearchParts | None = None) -> dict[str, Any]:
    """Evaluate candidates of the shared study until it holds ``budget`` evaluations.

    Args:
        ctx: the run context of this worker.
        storage_url: the shared study's database URL.
        budget: stop once the study holds this many evaluations (default ``search.budget``).
        sampler: the Optuna sampler this worker asks (default ``search.sampler``).
        max_trials: stop after this many trials of this worker (None = no limit).
        progress: print a line per trial.
        parts: the search's parts (default: :func:`build_parts` on ``ctx``).

    Returns:
        Counts of what this worker did: ``evaluated``, ``duplicates``, ``failed``.
    """
    s = ctx.spec.search
    budget = budget or s.budget
    if parts is None:
        parts = build_parts(ctx, engine="optuna", sampler=sampler, storage=storage_url)
    # each worker seeds its sampler differently so they do not all propose the same points
    seed = ctx.spec.seed * 1000 + (hash((time.time_ns(), id(ctx))) % 1000)
    store = parts.store
    study = store.study
    study.sampler = make_sampler(sampler or s.sampler, seed, s.population)
    enc = parts.encoding
    dists = distributions(enc)
    claims = Claims(storage_url, ctx.spec.name)
    counts = {"evaluated": 0, "duplicates": 0, "failed": 0}
    try:
        _loop(ctx, study, store, parts.objectives, enc, dists, claims, budget, max_trials,
              counts, progress)
    finally:
        claims.close()
    return counts


def _loop(ctx: RunContext, study: optuna.Study, store: Store, objectives: Objectives,
          enc: CompactEncoding, dists: dict[str, Any], claims: Claims, budget: int,
          max_trials: int | None, counts: dict[str, int], progress: bool) -> None:
    while store.n_true() < budget and (max_trials is None or sum(counts.values()) < max_trials):
        trial = study.ask(dists)
        P = np.array([[trial.params[n] for n in enc.names]])
        g = repair_all_pruned(ctx.space.table, enc.decode(P).astype(np.int64)).astype(np.int8)[0]
        h = genome_hash(g)
        trial.set_user_attr("genome_hash", h)
        first = _recorded(study, h)
        if first is None:
            first = claims.claim(h, trial.number)
        if first is not None:
            trial.set_user_attr("duplicate_of", first)
            study.tell(trial, state=TrialState.PRUNED)
            counts["duplicates"] += 1
            continue
        r = ctx.evaluator.evaluate(g[None], "short")[0]
        costs = {k: float(v[0]) for k, v in objectives.costs(g[None]).items()}
        for k, v in store.user_attrs(g, r, costs, -1, "worker").items():
            trial.set_user_attr(k, v)
        if r.failed:
            study.tell(trial, state=TrialState.FAIL)
            counts["failed"] += 1
            continue
        values, cons = store.values_and_constraints(r, costs)
        for k, v in cons.items():
            trial.set_constraint(k, v)
        study.tell(trial, values)
        counts["evaluated"] += 1
        if progress:
            print(f"trial {trial.number}: val accuracy {r.val_accuracy:.4f} "
                  f"({r.seconds:.1f}s)", flush=True)
