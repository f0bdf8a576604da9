"""The surrogate-assisted search loop, shared by every engine.

1. the parts (objectives, store, sensitivity profile, encoding, engine, surrogate,
   selection; :func:`~evomp.search.build_parts`) are built once and passed in;
2. an initial design of true evaluations (short QAT), in parallel;
3. rounds: the engine searches on surrogate-predicted accuracy and hardware costs; the
   selection rule picks candidates; they are evaluated for real; the surrogate is refit;
   its rank quality on the new points is logged;
4. stop at the budget of true evaluations and/or the time limit;
5. verify: front candidates get the final QAT and a test score (``finish_run``).

Every true evaluation is recorded in the Optuna study (the run's record), so running the
same spec again resumes: stored genomes are never trained again.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from optuna.trial import FrozenTrial, TrialState
from tqdm.auto import tqdm

from evomp._errors import EvompError
from evomp.engines import Proposals, initial_design
from evomp.evaluation import FIDELITIES, EvalResult, threads_per_worker
from evomp.objectives import nondominated
from evomp.run import FrontResult, RunContext, RunDir, finish_run
from evomp.search._artifacts import artifact_store, file_sha256, publish_artifacts, states_dir
from evomp.search._local import DaskWorkers, LocalWorkers
from evomp.search._parts import SearchParts
from evomp.search._queue import QueuedTrial
from evomp.search._store import Record
from evomp.search._surrogate import SURROGATES, SelectionContext
from evomp.search._worker import _retrying, evaluate_task
from evomp.space import genome_from_hex, genome_hash, repair_all_pruned

__all__ = ["Search", "SearchOptions"]

log = logging.getLogger("evomp")


@dataclass(frozen=True)
class SearchOptions:
    """How one invocation runs (command-line overrides of the spec's ``[search]`` table).

    Attributes:
        budget: true evaluations (default ``search.budget``).
        jobs: parallel evaluations (default ``search.jobs``).
        scheduler: a dask.distributed scheduler address (the dask backend), or None.
        progress: print messages and progress bars (the CLI turns this on; the library is
            quiet by default and logs to ``run.log``).
        mode: ``rounds`` or ``async`` (default ``search.mode``).
        artifacts: the artifact store's path (default ``<run dir>/artifacts``; on a
            cluster, a path every node sees).
    """

    budget: int | None = None
    jobs: int | None = None
    scheduler: str | None = None
    progress: bool = False
    mode: str | None = None
    artifacts: str | None = None


def _spaced(idx: np.ndarray, metric: np.ndarray, acc: np.ndarray, spacing: float
            ) -> np.ndarray:
    """``idx`` (sorted by ``metric``) without near-duplicates: a candidate whose metric is
    within ``spacing`` (relative) of the last one kept is kept only if it is at least half
    a point more accurate (a trade-off worth a final QAT, not a near-copy)."""
    kept: list[int] = []
    for i in idx:
        if kept and metric[i] <= metric[kept[-1]] * (1 + spacing) \
                and acc[i] < acc[kept[-1]] + 0.005:
            continue
        kept.append(int(i))
    return np.array(kept, dtype=np.int64)


#: with ``surrogate = "auto"``: below this many evaluations every fit chooses its predictor
#: by cross-validation; from it on, the choice is made again only once the data grew by
#: RESELECT_GROWTH (a fit of the chosen predictor in between)
RESELECT_FROM = 100
RESELECT_GROWTH = 1.25
#: asynchronous mode refits once the results that landed since the last fit reach this
#: share of the data it was fitted on (at least one): every result at first, every 50th at
#: 1,000 evaluations; the candidates chosen at a refit fill the queue until the next one
REFIT_SHARE = 0.05


@dataclass
class AsyncState:
    """What the asynchronous loop carries from one look at the study to the next.

    Attributes:
        round_: refits so far (a round in the logs).
        model: the surrogate of the last refit (None before the first).
        n_fit: how many results it was fitted on.
        reserve: candidates chosen ahead (on this model or the one before) and not yet
            queued ``(proposals, mean, std)``.
        stuck: the engine proposed nothing new.
        every: the fewest results between two refits (the loop sets the live workers: a
            refit per result of each of them, not per result).
    """

    round_: int
    model: Any = None
    n_fit: int = -1
    reserve: tuple[Proposals, np.ndarray, np.ndarray] | None = None
    stuck: bool = False
    every: int = 1

    @property
    def ahead(self) -> int:
        """Results that land between two refits (:data:`REFIT_SHARE` of ``n_fit``, at least
        ``every``)."""
        return max(self.every, int(REFIT_SHARE * self.n_fit))


def promoted(n: int, eta: int, cap: int) -> int:
    """How many of ``n`` screened candidates a rung of successive halving promotes: the
    ``1/eta`` share (rounded up, at least one), at most ``cap``."""
    return min(cap, max(1, math.ceil(n / eta)))


def _canonical(r: Record) -> tuple[float, float, int]:
    """Training order of the surrogate: round, then row within its batch, then trial."""
    rd, slot = r.round, r.slot
    return (float("inf") if rd is None or rd < 0 else float(rd),
            float(r.number) if slot is None else float(slot), r.number)


class Search:
    """One search run over ``ctx`` with ``parts`` (see the module docstring).

    Args:
        ctx: the run context (spec, task, float model, space, evaluator, out dir).
        parts: the search's parts (:func:`~evomp.search.build_parts`).
        opts: how this invocation runs.
    """

    def __init__(self, ctx: RunContext, parts: SearchParts,
                 opts: SearchOptions = SearchOptions()) -> None:
        self.ctx = ctx
        self.parts = parts
        self.s = ctx.spec.search
        self.budget = opts.budget or self.s.budget
        self.jobs = opts.jobs if opts.jobs is not None else self.s.jobs
        self.scheduler = opts.scheduler
        self.progress = opts.progress
        self.run_dir = RunDir(ctx.out)
        self.table = ctx.space.table
        self.objectives = parts.objectives
        self.store = parts.store
        self.engine = parts.engine
        self.clock = parts.clock
        self.rng = np.random.default_rng(ctx.spec.seed)
        if parts.queue is None:
            raise EvompError("the search's parts hold no queue: build them with build_parts")
        self.queue = parts.queue
        mode = opts.mode or self.s.mode
        self.mode = mode if mode != "auto" else ("async" if parts.storage_url else "rounds")
        # rounds with one job evaluate in this process (deterministic, no worker to start);
        # asynchronous mode always has worker processes, so the controller's refits and
        # searches overlap an evaluation instead of idling its only evaluator
        self._evaluates_here = self.jobs == 1 and self.scheduler is None and self.mode == "rounds"
        self.artifacts = Path(opts.artifacts) if opts.artifacts else self.run_dir.path / "artifacts"
        self.poll_s = 0.2
        self._started: LocalWorkers | DaskWorkers | None = None
        self._float_sha = ""
        self._nudged = 0.0
        self._counted: set[int] = set()
        self._logged: set[int] = set()
        self._rung_models: dict[str, tuple[int, Any]] = {}  # fidelity -> (n fitted, model)
        self._picked: dict[int, tuple[str, int]] = {}  # n_extra -> (auto's choice, at n)
        limit = self.s.time_limit_s  # wall-clock seconds of this invocation
        self._limit = limit
        self._deadline: float | None = None  # set when run() starts
        self._said_deadline = False

    @classmethod
    def from_context(cls, ctx: RunContext, opts: SearchOptions = SearchOptions(), *,
                     engine: str | None = None, sampler: str | None = None,
                     storage: str | None = None) -> Search:
        """A search over ``ctx`` with the parts :func:`~evomp.search.build_parts` makes
        from its spec (``engine``, ``sampler`` and ``storage`` override the spec)."""
        from evomp.search._parts import build_parts

        say = None
        if opts.progress:
            def say(msg: str) -> None:
                log.info(msg)
                print(msg, flush=True)
        return cls(ctx, build_parts(ctx, engine=engine, sampler=sampler, storage=storage,
                                    say=say), opts)

    # ------------------------------------------------------------ evaluation
    def _evaluate(self, props: Proposals, round_: int, source: str,
                  predicted: tuple[np.ndarray, np.ndarray] | None = None
                  ) -> tuple[np.ndarray, list[EvalResult]]:
        """Queue ``props`` for a short QAT and wait until every one has landed (a rounds
        step). Returns ``(rows evaluated, their results)``: past the run's time limit, rows
        not started stay queued (a resumed run evaluates them)."""
        if len(props) == 0:
            return np.zeros(0, np.int64), []
        hashes = self.queue.enqueue(props, "short", round_=round_, source=source,
                                    predicted=predicted)
        self._drain("short")
        done = {r.genome_hash: r for r in self.store.records()}
        ran = [i for i, h in enumerate(hashes) if h in done]
        return np.array(ran, dtype=np.int64), [done[hashes[i]].result() for i in ran]

    def _drain(self, fidelity: str) -> None:
        """Wait until no trial of ``fidelity`` is pending, evaluating in this process when
        it has no worker processes. Past the deadline short trials that no one started are
        left queued."""
        bar = None
        while True:
            self.queue.fail_stale()
            pending = self.queue.pending(fidelity)
            if not pending:
                break
            late = fidelity == "short" and self._past_deadline()
            if late and all(t.state == TrialState.WAITING for t in pending):
                break
            if bar is None and self.progress:
                bar = tqdm(total=len(pending), desc=f"{fidelity} evaluations", leave=False)
            # screening trials are tens of milliseconds: the controller evaluates them
            # itself rather than wait for a worker to be free
            if (self._evaluates_here or fidelity in self.s.screen) and not late:
                task = self.queue.take((fidelity,))
                if task is not None:
                    self._evaluate_here(task)
                    if bar is not None:
                        bar.update(1)
                    continue
            if self._started is not None:
                self._started.check()
            self._nudge()
            time.sleep(self.poll_s)
        if bar is not None:
            bar.close()
        self._count_worker_cpu()

    def _nudge(self) -> None:
        """Say once a minute when candidates wait and no worker is alive."""
        if self._evaluates_here or time.time() - self._nudged < 60:
            return
        if self._nudged and self.queue.live_workers() == 0:
            self._say(f"{len(self.queue.pending())} candidates wait in study "
                      f"{self.queue.study.study_name!r} and no worker is alive: start "
                      "'evomp worker SPEC --storage URL' on the worker nodes")
        self._nudged = time.time()

    def _evaluate_here(self, task: QueuedTrial) -> EvalResult:
        """Evaluate a taken trial in this process (the controller is its own worker)."""
        final = task.fidelity == "final"
        return evaluate_task(self.queue, self.ctx.evaluator, self.objectives, task,
                             float_sha=self._float_sha,
                             save_dir=self.run_dir.models if final else None)

    def _count_worker_cpu(self) -> None:
        """Add the CPU seconds of evaluations other processes made in this session."""
        for fid in FIDELITIES:
            for r in self.store.records(fid):
                if r.number in self._counted:
                    continue
                self._counted.add(r.number)
                if r.worker and r.worker != self.queue.worker_id:
                    self.clock.add_workers(r.cpu_seconds)

    def _true_data(self) -> tuple[np.ndarray, np.ndarray, list[Record]]:
        """Successful true evaluations in a canonical order (round, then row within its
        batch), not completion order, so parallel runs fit the same surrogates."""
        recs = sorted((r for r in self.store.records() if not r.failed), key=_canonical)
        if not recs:
            return np.zeros((0, self.table.n_genes), np.int8), np.zeros(0), []
        return np.stack([r.genome for r in recs]), np.array([r.val_accuracy for r in recs]), recs

    def _repaired(self, props: Proposals) -> Proposals:
        """``props`` with no searched layer fully pruned."""
        G = repair_all_pruned(self.table, props.genomes.astype(np.int64)).astype(np.int8)
        return props.changed_to(G)

    def _initial(self, n: int) -> Proposals:
        """Uniform, anchor (sensitivity-ordered) and random genomes, as the engine records
        them."""
        G = initial_design(self.table, self.parts.encoding, n, self.rng, self.parts.anchors)
        return self._repaired(self.engine.initial(G))

    # ------------------------------------------------------------------ loop
    def run(self) -> FrontResult:
        """Run (or resume) the search and verify the front. Returns the measured front.

        A database lost mid-run (its server restarted, the network cut) is waited out with
        backoff, and the run goes on from the study as a restarted controller would (queued
        trials stay queued, nothing recorded is evaluated again); a database that stays
        away ends the run with one line.
        """
        if self._deadline is None and self._limit:
            self._deadline = time.time() + self._limit
        return _retrying("running the search", self._run_once,
                         gives_up="this controller stops; run the same command again once "
                         "the database is back: it resumes from the study")

    def _run_once(self) -> FrontResult:
        ctx = self.ctx
        prev = self.run_dir.read_progress()
        self._publish()
        records = self.store.records()
        self._counted = {r.number for fid in FIDELITIES for r in self.store.records(fid)}
        self._seed_cache([r for fid in FIDELITIES for r in self.store.records(fid)])
        if records:
            log.info("resuming: %d true evaluations in the study", len(records))
            self._say(f"resuming: {len(records)} true evaluations already stored")
        with self._workers():
            # evaluations queued by an earlier session (a killed controller) land first
            if self.queue.pending("short"):
                self._say(f"{len(self.queue.pending('short'))} queued evaluations of an "
                          "earlier session: evaluating them first")
                self._drain("short")
            for fid in self.s.screen:  # and screenings of a killed session's last round
                self._drain(fid)
            # 2. initial design
            records = self.store.records()
            need = min(self.s.initial, self.budget) - len(records)
            if need > 0:
                props = self._initial(min(self.s.initial, self.budget))
                done = {r.genome_hash for r in records}
                keep = []
                for i, g in enumerate(props.genomes):  # each genome once, none stored
                    h = genome_hash(g)
                    if h not in done:
                        done.add(h)
                        keep.append(i)
                keep = keep[:need]
                self._say(f"initial design: {len(keep)} true evaluations (short QAT, "
                          f"{ctx.evaluator.qat.steps} steps)")
                if self.mode == "rounds":
                    self._evaluate(props.take(keep), 0, "initial")
                else:
                    self.queue.enqueue(props.take(keep), "short", round_=0, source="initial")
                self.run_dir.update_progress(cpu_seconds=self.clock.seconds)
            # 3. rounds, or the asynchronous loop
            round_ = int(prev.get("round", 0))
            if self.mode == "async":
                round_ = self._run_async(round_)
            else:
                round_ = self._run_rounds(round_)
            # 5. verify (queued as well, so a cluster verifies in parallel)
            front = self._verify(round_)
            self.queue.study.set_user_attr("state", "done")
        return front

    def _publish(self) -> None:
        """Publish the run's artifacts once and tell the workers the deadline."""
        rd = self.run_dir
        files = {"spec": rd.spec, "float": rd.float_model, "sensitivity": rd.sensitivity}
        publish_artifacts(self.queue.study, self.artifacts,
                          {k: v for k, v in files.items() if v.is_file()})
        # short-QAT end states (a final QAT continues its member's) go where every worker
        # reaches them: beside the artifacts
        self.ctx.evaluator.states_dir = states_dir(self.artifacts)
        self._float_sha = file_sha256(rd.float_model) if rd.float_model.is_file() else ""
        self.queue.study.set_user_attr("deadline", self._deadline)
        self.queue.study.set_user_attr("state", "running")

    def _workers(self) -> contextlib.AbstractContextManager[Any]:
        """The worker processes this controller starts: ``jobs`` local ones (or on the
        dask cluster); none for ``jobs = 0`` (only external workers evaluate) or for one job
        in rounds mode (the controller evaluates)."""
        if self.scheduler is None and (self.jobs == 0 or self._evaluates_here):
            return contextlib.nullcontext()
        threads = threads_per_worker(max(1, self.jobs))
        args = (self.run_dir.path, self.queue.study.study_name, threads,
                self.parts.storage_url, str(self.artifacts))
        if self.scheduler is not None:
            self._started = DaskWorkers(self.scheduler, max(1, self.jobs), *args)
        else:
            self._started = LocalWorkers(self.jobs, *args)
        return self._started

    def _run_rounds(self, round_: int) -> int:
        bar = tqdm(total=self.budget, initial=min(self.store.n_true(), self.budget),
                   desc="true evaluations", disable=not self.progress, leave=False)
        while self.store.n_true() < self.budget:
            if self._past_deadline():
                break
            round_ += 1
            n_new = self._round(round_)
            bar.update(n_new)
            self.run_dir.update_progress(round=round_, cpu_seconds=self.clock.seconds)
            self._prune_states()
            if n_new == 0:
                if not self._past_deadline():
                    self._say("the engine proposed nothing new; stopping the rounds")
                break
        bar.close()
        return round_

    def _run_async(self, round_: int) -> int:
        """Keep the queue full (twice the live workers) and refit as results land; the
        pending candidates count in the selection (their predicted accuracy is believed,
        as a kriging believer), so the queue does not fill with near-duplicates."""
        st = AsyncState(round_)
        while True:
            self.queue.fail_stale()
            if self._started is not None:
                self._started.check()
            n_done = self.store.n_true()
            pending = self.queue.pending("short")
            if n_done >= self.budget or self._past_deadline() or (st.stuck and not pending):
                break
            live = self.queue.live_workers()
            room = min(2 * max(1, live) - len(pending), self.budget - n_done - len(pending))
            st.every = max(1, live)
            if self.look(st, room, pending):
                continue
            if not pending and st.model is None and n_done < 3:
                raise EvompError(self._too_few(n_done))
            self._nudge()
            time.sleep(self.poll_s)
        self._drain("short")
        X, _, _ = self._true_data()
        if len(X) != st.n_fit:
            self._log_landed(st.round_, len(X))
        return st.round_

    def refit_if_due(self, st: AsyncState) -> tuple[np.ndarray, np.ndarray, list[Record]]:
        """Asynchronous mode, on each look at the study: read the results (only new trials
        are decoded) and refit the surrogate once :data:`REFIT_SHARE` of new results
        landed. Returns the true data ``(X, y, records)``."""
        X, y, recs = self._true_data()
        if len(X) >= 3 and (st.model is None or len(X) - st.n_fit >= st.ahead):
            st.round_ += 1
            st.model = self._fit(X, y)
            st.n_fit = len(X)
            self._log_landed(st.round_, len(X))
            self.run_dir.update_progress(round=st.round_, cpu_seconds=self.clock.seconds)
            self._prune_states()
        return X, y, recs

    def look(self, st: AsyncState, room: int, pending: list[FrozenTrial]) -> bool:
        """Asynchronous mode, one look of the controller at the study, with ``room`` free
        places in the queue: a freed place is filled at once from the candidates chosen
        ahead (no refit or search between a worker's result and its next trial); otherwise
        the results are read, the surrogate refitted when due (:meth:`refit_if_due`), and
        candidates chosen for the room, or ahead whenever fewer than ``st.every`` (the live
        workers: the places that may free up while a refit runs) are in reserve; a refit
        keeps the reserve (chosen for the places until it, with the pending candidates
        believed). Nothing is refitted while more than twice ``st.every`` trials wait (the
        initial design). Returns whether any was queued (the caller looks again)."""
        if room > 0 and st.reserve is not None and len(st.reserve[0]):
            return self._queue_reserve(st, room)
        waiting = sum(t.state == TrialState.WAITING for t in pending)
        if room <= 0 and waiting > 2 * st.every and st.model is not None:
            return False  # a deep queue (the initial design): a model fitted now is stale
            # before it is needed; refit once it is down to two trials per live worker
            # (time for a refit and a search before the workers reach the last ones)
        data = self.refit_if_due(st)
        if room > 0:
            return self.fill(st, room, data, pending)
        if st.reserve is None or len(st.reserve[0]) < st.every:
            st.reserve = None  # chosen again, on the current model, for the next places
            self.fill(st, 0, data, pending)
        return False

    def fill(self, st: AsyncState, room: int,
             data: tuple[np.ndarray, np.ndarray, list[Record]],
             pending: list[FrozenTrial]) -> bool:
        """Asynchronous mode: queue up to ``room`` candidates (0: only choose ahead). A
        search and selection runs only when the candidates chosen at the last one are used
        up, and chooses enough for the room (at least ``st.every``, the live workers) and
        every place that frees up before the next refit. Returns whether any was queued."""
        if st.model is None or st.stuck:
            return False
        X, y, recs = data
        if st.reserve is None or len(st.reserve[0]) == 0:
            left = self.budget - self.store.n_true() - len(pending)
            if left <= 0:
                return False
            st.reserve = self._choose(st.round_, st.model, X, y, recs,
                                      min(max(room, st.every) + st.ahead - 1, left), pending)
        if st.reserve is None:
            st.stuck = True
            self._say("the engine proposed nothing new; finishing what is queued")
            return False
        return self._queue_reserve(st, room)

    def _queue_reserve(self, st: AsyncState, room: int) -> bool:
        """Queue up to ``room`` of the candidates chosen ahead; the rest stay in reserve."""
        assert st.reserve is not None
        props, mean, std = st.reserve
        now, later = np.arange(min(room, len(props))), np.arange(min(room, len(props)),
                                                                  len(props))
        if not len(now):
            return False
        self.queue.enqueue(props.take(now), "short", round_=st.round_, source="round",
                           predicted=(mean[now], std[now]))
        st.reserve = (props.take(later), mean[later], std[later])
        return len(now) > 0

    def _on_a_front(self, y: np.ndarray, costs: dict[str, np.ndarray], rows: np.ndarray
                    ) -> np.ndarray:
        """The ``rows`` on the front over every objective or on the accuracy against the
        first hardware metric (the trade-off users read first), so neither loses its
        members to the other."""
        obj = self.objectives
        F = obj.matrix(y[rows], {k: v[rows] for k, v in costs.items()})
        two = np.stack([1.0 - y[rows], costs[obj.hw_metrics[0]][rows]], axis=1)
        return rows[nondominated(F) | nondominated(two)]

    def _prune_states(self) -> None:
        """Delete the short-QAT states of evaluated genomes that cannot reach the front (on
        neither front, among all nor among feasible evaluations), so ``states/`` holds about
        a front's worth."""
        d = self.ctx.evaluator.states_dir
        saved = {p.name[:-len("-short.pt")]: p for p in d.glob("*-short.pt")} if d else {}
        if not saved:
            return
        recs = self.store.records()
        ok = [r for r in recs if not r.failed]
        keep: set[str] = set()
        if ok:
            y = np.array([r.val_accuracy for r in ok])
            costs = self.store.costs(ok)
            feasible = self.objectives.violation(y, costs).sum(axis=1) == 0
            for rows in (np.arange(len(ok)), np.nonzero(feasible)[0]):
                if len(rows):
                    keep |= {ok[i].genome_hash for i in self._on_a_front(y, costs, rows)}
        for h in ({r.genome_hash for r in recs} - keep) & saved.keys():
            saved[h].unlink(missing_ok=True)

    def _seed_cache(self, records: list[Record]) -> None:
        """Stored results answer the evaluator's cache: nothing stored is trained again."""
        ev = self.ctx.evaluator
        for r in records:
            ev.cache[(r.genome_hash, r.fidelity)] = r.result()

    def _too_few(self, n: int) -> str:
        where = (f"in {self.run_dir.evaluations_csv}" if self.run_dir.evaluations_csv.is_file()
                 else f"in the study's failed trials ('evomp status {self.ctx.out}')")
        return (f"only {n} successful true evaluations: too few to fit a surrogate (raise "
                f"search.initial, or check why evaluations fail {where})")

    def _fit(self, X: np.ndarray, y: np.ndarray, n_extra: int = 0) -> Any:
        """A surrogate fitted on ``X`` (genomes, then ``n_extra`` measured columns), ``y``.

        With ``surrogate = "auto"`` the predictor is chosen by cross-validation (several
        fits of every candidate), which grows with the data: from :data:`RESELECT_FROM`
        evaluations on, the choice is made again only once the data grew by
        :data:`RESELECT_GROWTH` since the last one, and in between only the chosen
        predictor is refitted (so the controller's work per result stays flat)."""
        picked = self._picked.get(n_extra)
        if self.s.surrogate == "auto" and picked is not None and len(X) >= RESELECT_FROM \
                and len(X) < RESELECT_GROWTH * picked[1] and picked[0] in SURROGATES.names():
            model = self.parts.surrogate(n_extra, name=picked[0])
            model.fit(X, y)
            return model
        model = self.parts.surrogate(n_extra)
        model.fit(X, y)
        best = getattr(model[-1], "best_name_", None)
        if best is not None:
            self._picked[n_extra] = (str(best), len(X))
        return model

    def _round(self, round_: int) -> int:
        """One synchronous round: fit, propose, select, evaluate, log. Returns how many
        candidates were evaluated."""
        X, y, recs = self._true_data()
        if len(X) < 3:
            raise EvompError(self._too_few(len(X)))
        model = self._fit(X, y)
        k = self.budget - self.store.n_true()
        got = self._choose(round_, model, X, y, recs, min(self.s.per_round, k), [])
        if got is None:
            return 0
        props, mean, std = got
        ran, results = self._evaluate(props, round_, "round", predicted=(mean, std))
        if len(results):
            self._log_quality(round_, len(X), results, mean[ran], model)
        return len(results)

    def _choose(self, round_: int, model: Any, X: np.ndarray, y: np.ndarray,
                recs: list[Record], k: int, pending: list[FrozenTrial]
                ) -> tuple[Proposals, np.ndarray, np.ndarray] | None:
        """Let the engine search on the surrogate and pick up to ``k`` fresh candidates
        (neither evaluated nor pending). Pending candidates count as observed at their
        predicted accuracy. Returns ``(chosen, predicted mean, predicted std)`` or None
        when nothing new is proposed."""
        obj = self.objectives

        def cheap(G: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            mean = np.clip(model.predict(G), 0.0, 1.0)
            costs = obj.costs(G)
            return obj.matrix(mean, costs), obj.violation(mean, costs)

        costs_true = self.store.costs(recs)
        front = nondominated(obj.matrix(y, costs_true))
        props = self._repaired(self.engine.propose(cheap, self.s.generations, inject=X[front]))
        seen = {r.genome_hash for r in self.store.records()}
        seen |= {str(t.user_attrs["genome_hash"]) for t in pending}
        props = self._fresh(props, seen)
        if len(props) == 0:
            # the engine converged onto evaluated genomes (e.g. a refinement that maps many
            # genomes onto few): explore sensitivity-ordered and random genomes instead
            n = 8 * self.s.per_round
            P = self.parts.encoding.random_params(n, self.rng, 0.5)
            R = np.concatenate([self.parts.encoding.decode(P), self.ctx.space.random(n, self.rng)])
            if self.parts.refiner is not None:
                R = self.parts.refiner.apply(R)
            props = self._fresh(self._repaired(Proposals(R.astype(np.int8))), seen)
            if len(props) == 0:
                return None
            self._say(f"round {round_}: the engine proposed only evaluated genomes; "
                      "choosing among random ones")
        pool = props.genomes
        k = min(k, len(pool))
        mean, std = model.predict(pool, return_std=True)
        y_sel, costs_sel = y, costs_true
        if pending:  # believed at their predicted accuracy
            P = np.stack([genome_from_hex(t.user_attrs["genome"]) for t in pending])
            y_sel = np.concatenate([y, np.clip(model.predict(P), 0.0, 1.0)])
            pc = obj.costs(P)
            costs_sel = {m: np.concatenate([costs_true[m], pc[m]]) for m in costs_true}

        def select(P: Proposals, mean: np.ndarray, std: np.ndarray, n: int) -> np.ndarray:
            G = P.genomes
            return np.asarray(self.parts.selection(SelectionContext(
                pool=G, mean=mean, std=std, pool_costs=obj.costs(G), y=y_sel,
                true_costs=costs_sel, objectives=obj, rng=self.rng), n))

        # successive halving over the screening fidelities: choose k * eta^R on the
        # genome-only surrogate, keep 1/eta at each rung on a surrogate that also sees the
        # rung's measured accuracy; the last rung's picks get the short QAT
        eta, rungs = self.s.screen_factor, self.s.screen
        chosen = select(props, mean, std, min(len(pool), k * eta ** len(rungs)))
        props, mean, std = props.take(chosen), mean[chosen], std[chosen]
        for r, fid in enumerate(rungs):
            acc = self._screen(props, fid, round_)
            got = self._rung_predict(fid, round_, props.genomes, acc, X, y)
            if got is not None:
                mean, std = got
            chosen = select(props, mean, std, promoted(len(props), eta,
                                                       k * eta ** (len(rungs) - r - 1)))
            props, mean, std = props.take(chosen), mean[chosen], std[chosen]
        return props, mean, std

    # ------------------------------------------------------------ screening
    def _screen(self, props: Proposals, fid: str, round_: int) -> np.ndarray:
        """The ``fid`` accuracy of every row of ``props`` (NaN where it failed): rows not yet
        evaluated at ``fid`` are queued as trials of that fidelity and evaluated (nothing
        stored is evaluated again)."""
        hashes = [genome_hash(g) for g in props.genomes]
        done = {r.genome_hash for r in self.store.records(fid)}
        done |= {str(t.user_attrs["genome_hash"]) for t in self.queue.pending(fid)}
        new = []
        for i, h in enumerate(hashes):  # each genome once
            if h not in done:
                done.add(h)
                new.append(i)
        if new:
            self.queue.enqueue(props.take(new), fid, round_=round_, source="screen")
        self._drain(fid)
        got = {r.genome_hash: r.val_accuracy for r in self.store.records(fid) if not r.failed}
        return np.array([got.get(h, np.nan) for h in hashes])

    def _rung_predict(self, fid: str, round_: int, G: np.ndarray, acc: np.ndarray,
                      X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """Predicted short-QAT accuracy (mean, std) of ``G`` from a surrogate over the genome
        and its measured ``fid`` accuracy ``acc``, fitted on the true data ``X, y`` (each
        also evaluated at ``fid``: the initial design's are, when first needed). A row whose
        screening failed is predicted 0. None: fewer than 3 pairs to fit on."""
        if self._rung_models.get(fid, (-1,))[0] != len(X):  # refit when results landed
            paired = self._screen(Proposals(X), fid, round_)
            ok = np.isfinite(paired) & np.isfinite(y)
            model = None
            if ok.sum() >= 3:
                model = self._fit(np.column_stack([X[ok], paired[ok]]), y[ok], n_extra=1)
            self._rung_models[fid] = (len(X), model)
        model = self._rung_models[fid][1]
        if model is None:
            return None
        ok = np.isfinite(acc)
        mean, std = np.zeros(len(G)), np.zeros(len(G))
        if ok.any():
            m, sd = model.predict(np.column_stack([G[ok], acc[ok]]), return_std=True)
            mean[ok], std[ok] = np.clip(m, 0.0, 1.0), sd
        return mean, std

    def _past_deadline(self) -> bool:
        """Whether the time limit has passed (and say so once)."""
        if self._deadline is None or time.time() < self._deadline:
            return False
        if not self._said_deadline:
            self._said_deadline = True
            self._say(f"time limit of {self.s.time_limit_s:g}s reached: no new true "
                      "evaluation starts; running the same command again resumes")
        return True

    @staticmethod
    def _fresh(props: Proposals, seen: set[str]) -> Proposals:
        """Proposals whose genomes are not in ``seen`` (hashes), first occurrences, in order."""
        hashes = [genome_hash(g) for g in props.genomes]
        _, first = np.unique(hashes, return_index=True)
        return props.take([i for i in sorted(first) if hashes[i] not in seen])

    def _log_quality(self, round_: int, n_train: int, results: list[EvalResult],
                     predicted: np.ndarray, model: Any) -> None:
        ok = np.array([not r.failed for r in results], dtype=bool)
        meas = np.array([r.val_accuracy for r in results])[ok]
        est = model[-1]
        name = getattr(est, "best_name_", None) or type(est).__name__
        self._quality_row(round_, n_train, meas, np.asarray(predicted)[ok], str(name))

    def _log_landed(self, round_: int, n_train: int) -> None:
        """Asynchronous mode: the quality of the round candidates that landed since the
        last refit, each predicted before it was trained."""
        new = [r for r in self.store.records() if r.source == "round" and not r.failed
               and r.predicted_accuracy is not None and r.number not in self._logged]
        self._logged |= {r.number for r in new}
        if new:
            self._quality_row(round_, n_train, np.array([r.val_accuracy for r in new]),
                              np.array([r.predicted_accuracy for r in new]), self.s.surrogate)

    def _pooled(self) -> dict[str, float]:
        """Pooled out-of-sample rank quality: every round candidate's prediction, made
        before it was trained, against its measurement; overall and among those within 5
        points of the best accuracy of the run (:func:`surrogates.pooled_rank_quality`)."""
        import surrogates

        ok = [r for r in self.store.records() if not r.failed]
        recs = [r for r in ok if r.source == "round" and r.predicted_accuracy is not None]
        q = surrogates.pooled_rank_quality(
            [r.val_accuracy for r in recs], [r.predicted_accuracy for r in recs],
            best=max((r.val_accuracy for r in ok), default=None))
        return {"pooled_n": float(q["n"]), "pooled_tau": float(q["pooled_tau"]),
                "pooled_tau_top": float(q["pooled_tau_top"]), "pooled_n_top": float(q["n_top"]),
                "pooled_mae": float(q["pooled_mae"])}

    def _quality_row(self, round_: int, n_train: int, meas: np.ndarray, pred: np.ndarray,
                     model: str) -> None:
        import surrogates

        q = (surrogates.rank_quality(meas, pred, k=min(3, len(meas))) if len(meas) >= 2
             else {"kendall_tau": float("nan"), "spearman": float("nan"),
                   "mae": float(np.abs(meas - pred).mean()) if len(meas) else float("nan"),
                   "topk_overlap": float("nan"), "n": float(len(meas))})
        row = {"round": round_, "n_train": n_train, "n_new": len(meas),
               **{k: float(v) for k, v in q.items()}, "model": model,
               "best_new_accuracy": float(meas.max()) if len(meas) else float("nan"),
               **self._pooled()}
        self.run_dir.append_quality(row)
        self._say(f"round {round_}: {row['n_new']} new true evaluations, surrogate "
                  f"tau={row['kendall_tau']:.2f} spearman={row['spearman']:.2f} "
                  f"mae={row['mae']:.3f} ({row['model']}); pooled tau "
                  f"{row['pooled_tau']:.2f}")

    def _verify(self, round_: int) -> FrontResult:
        X, y, recs = self._true_data()
        if len(X) == 0:
            if self._past_deadline():
                raise EvompError(
                    f"the time limit (search.time_limit_s = {self.s.time_limit_s:g}) passed "
                    "before any true evaluation finished; raise it (0 = none), or run the "
                    "same command again to resume")
            raise EvompError("no successful true evaluation to build a front from")
        obj = self.objectives
        costs = self.store.costs(recs)
        viol = obj.violation(y, costs).sum(axis=1)
        # candidates a user would never deploy are not worth a final QAT (unless none is
        # left): below the floor, or more than final_gap below the best short-QAT accuracy
        ok = viol == 0
        best = float(y[ok].max()) if ok.any() else float(y.max())
        floor = max(self.s.final_min_accuracy, best - self.s.final_gap)
        above = ok & (y >= floor)
        feas = np.nonzero(above if above.any() else viol == 0)[0]
        cap = self.s.final_max
        if len(feas):
            # the front over every objective, plus the accuracy-against-first-metric front
            # (the trade-off users read first), so neither loses its members to the other
            nd = self._on_a_front(y, costs, feas)
            key = costs[obj.hw_metrics[0]][nd]
            nd = nd[np.argsort(key, kind="stable")]
            nd = _spaced(nd, costs[obj.hw_metrics[0]], y, self.s.final_spacing)
            if len(nd) > cap:
                pick = np.unique(np.rint(np.linspace(0, len(nd) - 1, cap)).astype(int))
                nd = nd[pick]
            cand = nd
        else:
            cand = np.argsort(viol, kind="stable")[:cap]
            self._say("no evaluated configuration meets the constraints; verifying the least "
                      "infeasible ones")
        q = self.ctx.evaluator.qat
        how = (f"{q.final_added} steps on from each one's short-QAT state"
               if q.final_from == "short" else f"{q.final_steps} steps from the float weights")
        self._say(f"verifying {len(cand)} front candidates with the final QAT ({how}) and "
                  "the test split")
        # every evaluation of the search, screening fidelities included, in the CSV
        all_recs = [r for fid in (*self.s.screen, "short") for r in self.store.records(fid)]
        all_costs = self.store.costs(all_recs)
        method = f"evomp-{self.parts.engine_name}"
        prior = [{
            "id": f"t{r.number}", "method": method, "fidelity": r.fidelity,
            "genome_hash": r.genome_hash, "val_accuracy": r.val_accuracy,
            "ptq_accuracy": r.ptq_accuracy, "test_accuracy": None, "failed": r.failed,
            "reason": r.reason, "seconds": r.seconds, "cpu_seconds": r.cpu_seconds,
            "round": r.round, "source": r.source, "predicted_accuracy": r.predicted_accuracy,
            "predicted_std": r.predicted_std, **{k: float(v[i]) for k, v in all_costs.items()},
        } for i, r in enumerate(all_recs)]
        url, _ = self.run_dir.read_storage_note()
        self._final_through_queue(X[cand])
        # every candidate's final QAT already landed through the queue: finish_run only
        # scores, ranks and writes (its evaluations are cache hits)
        front = finish_run(
            self.ctx, obj, X[cand], method=method, clock=self.clock,
            prior_evaluations=prior,
            progress=self.progress,
            info={"engine": self.parts.engine_name,
                  "sampler": self.parts.sampler_name if self.parts.engine_name == "optuna"
                  else None,
                  "algorithm": self.s.algorithm if self.parts.engine_name == "pymoo"
                  else None,
                  "rounds": round_, "budget": self.budget, "surrogate": self.s.surrogate,
                  "storage": url or f"journal file: {self.run_dir.journal}"},
        )
        self.run_dir.update_progress(round=round_, cpu_seconds=self.clock.seconds,
                                     verified=True)
        return front

    def _final_through_queue(self, G: np.ndarray) -> None:
        """Queue the final QAT (with the test score) of every candidate not yet finally
        evaluated, wait for them, fetch the trained state dicts workers uploaded, and hand
        the results to the evaluator's cache, so the final protocol trains nothing again."""
        models = self.run_dir.models
        self._seed_final()
        ev = self.ctx.evaluator
        todo = [i for i, g in enumerate(G) if ev.cached(g, "final", True, models) is None]
        pend = {str(t.user_attrs["genome_hash"]) for t in self.queue.pending("final")}
        hashes = [genome_hash(G[i]) for i in todo]
        todo = [i for i, h in zip(todo, hashes) if h not in pend]
        _, first = np.unique([genome_hash(G[i]) for i in todo] or [""], return_index=True)
        todo = [todo[j] for j in sorted(first)] if todo else []
        if todo:
            self.queue.enqueue(Proposals(G[todo]), "final", round_=-2, source="final",
                               with_test=True)
        self._drain("final")
        self._seed_final()

    def _seed_final(self) -> None:
        """Final results from the study into the evaluator's cache (fetching the state
        dicts that workers on other nodes uploaded)."""
        models = self.run_dir.models
        for r in self.store.records("final"):
            path = models / f"{r.genome_hash}-final.pt"
            if not r.failed and not path.is_file() and r.model_artifact:
                from optuna.artifacts import download_artifact

                models.mkdir(parents=True, exist_ok=True)
                download_artifact(artifact_store=artifact_store(self.artifacts),
                                  file_path=str(path), artifact_id=r.model_artifact)
            if r.failed or path.is_file():
                self.ctx.evaluator.cache[(r.genome_hash, "final")] = r.result()

    def _say(self, msg: str) -> None:
        log.info(msg)
        if self.progress:
            print(msg, flush=True)

