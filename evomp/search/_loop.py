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

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from evomp._errors import EvompError
from evomp.engines import Proposals, initial_design
from evomp.evaluation import EvalResult, backend_context, evaluate_parallel
from evomp.objectives import nondominated
from evomp.run import FrontResult, RunContext, RunDir, finish_run
from evomp.search._parts import SearchParts
from evomp.search._store import Record
from evomp.search._surrogate import SelectionContext
from evomp.space import genome_hash, repair_all_pruned

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
    """

    budget: int | None = None
    jobs: int | None = None
    scheduler: str | None = None
    progress: bool = False


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
        self.jobs = opts.jobs or self.s.jobs
        self.scheduler = opts.scheduler
        self.progress = opts.progress
        self.run_dir = RunDir(ctx.out)
        self.table = ctx.space.table
        self.objectives = parts.objectives
        self.store = parts.store
        self.engine = parts.engine
        self.clock = parts.clock
        self.rng = np.random.default_rng(ctx.spec.seed)
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
    def _evaluate_and_record(self, props: Proposals, round_: int, source: str,
                             predicted: tuple[np.ndarray, np.ndarray] | None = None
                             ) -> tuple[np.ndarray, list[EvalResult]]:
        """Evaluate ``props`` (short QAT) and record each result in the study as it
        finishes, with its hardware costs.

        Returns ``(rows evaluated, their results)``: past the run's time limit, rows that
        had not started are skipped (they stay unevaluated; a resumed run may pick them
        again).
        """
        G = props.genomes
        if len(G) == 0:
            return np.zeros(0, np.int64), []
        costs = self.objectives.costs(G)
        dists = self.engine.distributions()
        ran: list[int] = []

        def record(i: int, r: EvalResult) -> None:  # as each evaluation finishes
            ran.append(i)
            p = props.params[i] if props.params else None
            extra: dict[str, Any] = {"slot": i}  # row in its batch: the canonical order
            if predicted is not None:
                extra.update(predicted_accuracy=float(predicted[0][i]),
                             predicted_std=float(predicted[1][i]))
            self.store.record(G[i], r, {k: v[i] for k, v in costs.items()}, round_=round_,
                              source=source, params=p, distributions=dists if p else None,
                              extra=extra)

        with backend_context(self.scheduler) as backend:
            results, wcpu = evaluate_parallel(
                self.ctx.evaluator, G, "short", jobs=self.jobs, backend=backend,
                on_result=record, progress=self.progress and f"{source} evaluations",
                deadline=self._deadline)
        self.clock.add_workers(wcpu)
        return np.array(sorted(ran), dtype=np.int64), results

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
        """Run (or resume) the search and verify the front. Returns the measured front."""
        ctx = self.ctx
        self._deadline = time.time() + self._limit if self._limit else None
        prev = self.run_dir.read_progress()
        records = self.store.records()
        self._seed_cache(records)
        if records:
            log.info("resuming: %d true evaluations in the study", len(records))
            self._say(f"resuming: {len(records)} true evaluations already stored")
        # 2. initial design
        need = min(self.s.initial, self.budget) - len(records)
        if need > 0:
            props = self._initial(min(self.s.initial, self.budget))
            done = {r.genome_hash for r in records}
            keep = []
            for i, g in enumerate(props.genomes):  # each genome once, none already stored
                h = genome_hash(g)
                if h not in done:
                    done.add(h)
                    keep.append(i)
            keep = keep[:need]
            self._say(f"initial design: {len(keep)} true evaluations (short QAT, "
                      f"{ctx.evaluator.qat.steps} steps)")
            self._evaluate_and_record(props.take(keep), 0, "initial")
            self.run_dir.update_progress(cpu_seconds=self.clock.seconds)
        # 3. rounds
        round_ = int(prev.get("round", 0))
        bar = tqdm(total=self.budget, initial=min(self.store.n_true(), self.budget),
                   desc="true evaluations", disable=not self.progress, leave=False)
        while self.store.n_true() < self.budget:
            if self._past_deadline():
                break
            round_ += 1
            n_new = self._round(round_)
            bar.update(n_new)
            self.run_dir.update_progress(round=round_, cpu_seconds=self.clock.seconds)
            if n_new == 0:
                if not self._past_deadline():
                    self._say("the engine proposed nothing new; stopping the rounds")
                break
        bar.close()
        # 5. verify
        return self._verify(round_)

    def _seed_cache(self, records: list[Record]) -> None:
        """Stored results answer the evaluator's cache: nothing stored is trained again."""
        ev = self.ctx.evaluator
        for r in records:
            ev.cache[(r.genome_hash, r.fidelity)] = r.result()

    def _round(self, round_: int) -> int:
        X, y, recs = self._true_data()
        if len(X) < 3:
            where = (f"in {self.run_dir.evaluations_csv}" if self.run_dir.evaluations_csv.is_file()
                     else f"in the study's failed trials ('evomp status {self.ctx.out}')")
            raise EvompError(
                f"only {len(X)} successful true evaluations: too few to fit a surrogate "
                f"(raise search.initial, or check why evaluations fail {where})"
            )
        model = self.parts.surrogate()
        model.fit(X, y)
        obj = self.objectives

        def cheap(G: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            mean = np.clip(model.predict(G), 0.0, 1.0)
            costs = obj.costs(G)
            return obj.matrix(mean, costs), obj.violation(mean, costs)

        costs_true = self.store.costs(recs)
        front = nondominated(obj.matrix(y, costs_true))
        props = self._repaired(self.engine.propose(cheap, self.s.generations, inject=X[front]))
        seen = {r.genome_hash for r in self.store.records()}
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
                return 0
            self._say(f"round {round_}: the engine proposed only evaluated genomes; "
                      "choosing among random ones")
        pool = props.genomes
        k = min(self.s.per_round, self.budget - self.store.n_true(), len(pool))
        mean, std = model.predict(pool, return_std=True)
        chosen = self.parts.selection(SelectionContext(
            pool=pool, mean=mean, std=std, pool_costs=obj.costs(pool), y=y,
            true_costs=costs_true, objectives=obj, rng=self.rng), k)
        ran, results = self._evaluate_and_record(props.take(chosen), round_, "round",
                                                 predicted=(mean[chosen], std[chosen]))
        if len(results):
            self._log_quality(round_, len(X), results, mean[chosen][ran], model)
        return len(results)

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
        import surrogates

        ok = np.array([not r.failed for r in results])
        meas = np.array([r.val_accuracy for r in results])[ok]
        pred = np.asarray(predicted)[ok]
        q = (surrogates.rank_quality(meas, pred, k=min(3, len(meas))) if len(meas) >= 2
             else {"kendall_tau": float("nan"), "spearman": float("nan"),
                   "mae": float(np.abs(meas - pred).mean()) if len(meas) else float("nan"),
                   "topk_overlap": float("nan")})
        est = model[-1]
        chosen = getattr(est, "best_name_", None) or type(est).__name__
        row = {"round": round_, "n_train": n_train, "n_new": int(ok.sum()),
               **{k: float(v) for k, v in q.items()}, "model": str(chosen),
               "best_new_accuracy": float(meas.max()) if len(meas) else float("nan")}
        self.run_dir.append_quality(row)
        self._say(f"round {round_}: {row['n_new']} new true evaluations, surrogate "
                  f"tau={row['kendall_tau']:.2f} spearman={row['spearman']:.2f} "
                  f"mae={row['mae']:.3f} ({row['model']})")

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
        # candidates below the accuracy floor are not worth a final QAT (unless none is above)
        floor = self.s.final_min_accuracy
        above = (viol == 0) & (y >= floor)
        feas = np.nonzero(above if above.any() else viol == 0)[0]
        cap = self.s.final_max
        if len(feas):
            # the front over every objective, plus the accuracy-against-first-metric front
            # (the trade-off users read first), so neither loses its members to the other
            F = obj.matrix(y[feas], {k: v[feas] for k, v in costs.items()})
            key_all = costs[obj.hw_metrics[0]][feas]
            nd2 = nondominated(np.stack([1.0 - y[feas], key_all], axis=1))
            nd = feas[nondominated(F) | nd2]
            key = costs[obj.hw_metrics[0]][nd]
            nd = nd[np.argsort(key, kind="stable")]
            if len(nd) > cap:
                pick = np.unique(np.rint(np.linspace(0, len(nd) - 1, cap)).astype(int))
                nd = nd[pick]
            cand = nd
        else:
            cand = np.argsort(viol, kind="stable")[:cap]
            self._say("no evaluated configuration meets the constraints; verifying the least "
                      "infeasible ones")
        self._say(f"verifying {len(cand)} front candidates with the final QAT "
                  f"({self.ctx.evaluator.qat.final_steps} steps) and the test split")
        all_recs = self.store.records()
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
        with backend_context(self.scheduler) as backend:
            front = finish_run(
                self.ctx, obj, X[cand], method=method, clock=self.clock,
                jobs=self.jobs, backend=backend, prior_evaluations=prior,
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

    def _say(self, msg: str) -> None:
        log.info(msg)
        if self.progress:
            print(msg, flush=True)

