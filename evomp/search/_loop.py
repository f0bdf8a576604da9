"""The surrogate-assisted search loop, shared by the pymoo and Optuna engines.

1. the sensitivity profile (computed once, reused on resume);
2. an initial design of true evaluations (short QAT), in parallel;
3. rounds: the engine searches on surrogate-predicted accuracy and hardware costs; the
   surrogate's selection helpers pick candidates; they are evaluated for real; the
   surrogate is refit; its rank quality on the new points is logged;
4. stop at the budget of true evaluations and/or the time limit;
5. verify: front candidates get the final QAT and a test score (``finish_run``).

Every true evaluation is recorded in the Optuna study (the run's record), so running the
same spec again resumes: stored genomes are never trained again.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
from tqdm.auto import tqdm

from evomp._errors import EvompError
from evomp.engines import (
    CompactEncoding,
    OptunaEngine,
    PymooEngine,
    distributions,
    initial_design,
    make_sampler,
)
from evomp.evaluation import (
    EvalResult,
    backend_context,
    channel_importance,
    evaluate_parallel,
    run_profile,
)
from evomp.objectives import Objectives, nondominated
from evomp.run import CpuClock, FrontResult, RunContext, finish_run, mask_url, open_storage
from evomp.search._store import Record, Store
from evomp.search._surrogate import build_surrogate
from evomp.space import genome_hash, repair_all_pruned

__all__ = ["Search", "SearchOptions"]

log = logging.getLogger("evomp")


@dataclass(frozen=True)
class SearchOptions:
    """Command-line overrides of the spec's ``[search]`` table."""

    engine: str | None = None
    sampler: str | None = None
    storage: str | None = None
    budget: int | None = None
    jobs: int | None = None
    scheduler: str | None = None
    progress: bool = True


def _canonical(r: Record) -> tuple[float, float, int]:
    rd, slot = r.attrs.get("round"), r.attrs.get("slot")
    return (float("inf") if rd is None or rd < 0 else float(rd),
            float(r.number) if slot is None else float(slot), r.number)


class Search:
    """One search run over ``ctx`` (see the module docstring).

    Args:
        ctx: the run context (spec, task, float model, space, evaluator, out dir).
        opts: command-line overrides.
    """

    def __init__(self, ctx: RunContext, opts: SearchOptions = SearchOptions()) -> None:
        self.ctx = ctx
        s = ctx.spec.search
        self.s = s
        self._deadline: float | None = None  # wall clock (time.time()) set by run()
        self._said_deadline = False
        self._budgeted_cache: np.ndarray | None = None  # _budgeted() fills it once
        self.engine_name = opts.engine or s.engine
        self.sampler_name = opts.sampler or s.sampler
        self.budget = opts.budget or s.budget
        self.jobs = opts.jobs or s.jobs
        self.scheduler = opts.scheduler
        self.progress = opts.progress
        self.out = Path(ctx.out)
        self.table = ctx.space.table
        self.objectives = Objectives(self.table, s.objectives, s.constraints, s.hardware,
                                     ctx.spec.hw)
        if self.engine_name not in ("pymoo", "optuna"):
            raise EvompError(f"--engine must be 'pymoo' or 'optuna', got {self.engine_name!r}")
        self.rng = np.random.default_rng(ctx.spec.seed)
        self.storage = open_storage(opts.storage, self.out)
        persistent_sampler = (make_sampler(self.sampler_name, ctx.spec.seed, s.population)
                              if self.engine_name == "optuna" else None)
        self.store = Store(self.storage, ctx.spec.name, self.objectives, persistent_sampler)
        self._write_storage_note(opts.storage)

    # ------------------------------------------------------------------ state
    def _progress_file(self) -> Path:
        return self.out / "progress.json"

    def _load_progress(self) -> dict[str, Any]:
        p = self._progress_file()
        return json.loads(p.read_text()) if p.is_file() else {}

    def _save_progress(self, **kw: Any) -> None:
        d = self._load_progress()
        d.update(kw)
        tmp = self._progress_file().with_suffix(".tmp")
        tmp.write_text(json.dumps(d, indent=1))
        tmp.replace(self._progress_file())

    def _write_storage_note(self, url: str | None) -> None:
        (self.out / "storage.txt").write_text(
            (mask_url(url) if url else f"journal file: {self.out / 'study.journal'}") + "\n"
            + f"study: {self.ctx.spec.name}\n"
        )

    def _seed_cache(self, records: list[Record]) -> None:
        ev = self.ctx.evaluator
        for r in records:
            ev.cache[(r.genome_hash, r.fidelity)] = EvalResult(
                r.genome_hash, r.fidelity, r.val_accuracy, r.ptq_accuracy, None, float("nan"),
                float(r.attrs.get("seconds", 0.0)), r.failed, str(r.attrs.get("reason", "")),
                float(r.attrs.get("cpu_seconds", 0.0)),
            )

    # ------------------------------------------------------------ evaluation
    def _evaluate_and_record(self, G: np.ndarray, round_: int, source: str,
                             params: list[dict[str, float] | None] | None = None,
                             predicted: tuple[np.ndarray, np.ndarray] | None = None
                             ) -> tuple[np.ndarray, list[EvalResult]]:
        """Evaluate ``G`` (short QAT) and record each result in the study as it finishes.

        Returns ``(rows of G evaluated, their results)``: past the run's time limit, rows
        that had not started are skipped (they stay unevaluated; a resumed run may pick
        them again).
        """
        if len(G) == 0:
            return np.zeros(0, np.int64), []
        costs = self.objectives.costs(G)
        dists = distributions(self.encoding) if self.engine_name == "optuna" else None

        ran: list[int] = []

        def record(i: int, r: EvalResult) -> None:  # as each evaluation finishes
            ran.append(i)
            p = params[i] if params else None
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

    def _budgeted(self) -> np.ndarray:
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
        """
        import surrogates

        if self._budgeted_cache is not None:
            return self._budgeted_cache
        t, enc = self.table, self.encoding
        parts = []
        if t.granularity == "channel" and 0 in t.w_choices and 2 in t.w_choices:
            top_a = float(len(t.a_choices) - 1)
            for prune in (0.7, 0.55, 0.35):
                p = [top_a if n.startswith("a.") else prune if n.endswith(".0")
                     else 1.0 - prune if n.endswith(".2") else 0.0 for n in enc.names]
                parts.append(enc.decode(np.array([p])))
        parts.append(surrogates.sensitivity_order_genome(t, self.profile,
                                                         np.geomspace(0.25, 0.6, 4),
                                                         allow_prune=False))
        G = repair_all_pruned(t, np.concatenate(parts).astype(np.int64)).astype(np.int8)
        self._budgeted_cache = G
        return G

    def _initial_genomes(self, n: int) -> tuple[np.ndarray, list[dict[str, float] | None] | None]:
        """Uniform, budgeted sensitivity-ordered and random genomes (the Optuna engine gets
        them through its compact parameters, so every initial trial carries them)."""
        G = initial_design(self.table, self.encoding, n, self.rng, self._budgeted())
        if self.engine_name == "pymoo":
            return repair_all_pruned(self.table, G.astype(np.int64)).astype(np.int8), None
        enc = self.encoding
        P = enc.encode(G)
        D = enc.decode(P)
        G = repair_all_pruned(self.table, D.astype(np.int64)).astype(np.int8)
        changed = (G != D).any(axis=1)
        return G, [None if c else dict(zip(enc.names, map(float, p)))
                   for c, p in zip(changed, P)]

    # ------------------------------------------------------------------ loop
    def run(self) -> FrontResult:
        """Run (or resume) the search and verify the front. Returns the measured front."""
        ctx = self.ctx
        limit = self.s.time_limit_s  # wall-clock seconds of this invocation
        self._deadline = time.time() + limit if limit else None
        prev = self._load_progress()
        self.clock = CpuClock(before=float(prev.get("cpu_seconds", 0.0)))
        if not (self.out / "sensitivity.npz").is_file():
            self._say(f"sensitivity profile ({self.s.sensitivity}, {self.s.probes} probes)...")
        profile = run_profile(ctx, self.s.sensitivity, self.s.probes)
        self.profile = profile
        self.encoding = CompactEncoding(self.table, channel_importance(profile, self.table))
        records = self.store.records()
        self._seed_cache(records)
        if records:
            log.info("resuming: %d true evaluations in the study", len(records))
            self._say(f"resuming: {len(records)} true evaluations already stored")
        # 2. initial design
        need = min(self.s.initial, self.budget) - len(records)
        if need > 0:
            G, params = self._initial_genomes(min(self.s.initial, self.budget))
            done = {r.genome_hash for r in records}
            keep = []
            for i, g in enumerate(G):  # each genome once, none already stored
                h = genome_hash(g)
                if h not in done:
                    done.add(h)
                    keep.append(i)
            keep = keep[:need]
            self._say(f"initial design: {len(keep)} true evaluations (short QAT, "
                      f"{ctx.evaluator.qat.steps} steps)")
            self._evaluate_and_record(G[keep], 0, "initial",
                                      [params[i] for i in keep] if params else None)
            self._save_progress(cpu_seconds=self.clock.seconds)
        # 3. rounds
        self.engine = self._make_engine()
        round_ = int(prev.get("round", 0))
        bar = tqdm(total=self.budget, initial=min(self.store.n_true(), self.budget),
                   desc="true evaluations", disable=not self.progress, leave=False)
        while self.store.n_true() < self.budget:
            if self._past_deadline():
                break
            round_ += 1
            n_new = self._round(round_)
            bar.update(n_new)
            self._save_progress(round=round_, cpu_seconds=self.clock.seconds)
            if n_new == 0:
                if not self._past_deadline():
                    self._say("the engine proposed nothing new; stopping the rounds")
                break
        bar.close()
        # 5. verify
        return self._verify(round_)

    def _make_engine(self) -> PymooEngine | OptunaEngine:
        from evomp.engines import latency_refiner

        # Free Bits' refinement when an objective is a latency: pymoo's repair; the Optuna
        # engine's proposals get it in _round
        self._refiner = latency_refiner(self.table, self.objectives)
        if self._refiner is not None:
            self._say("Free Bits refinement on: precision is raised wherever that lowers "
                      f"{self._refiner.metric}")
        n_obj = len(self.objectives.names)
        n_con = len(self.objectives.constraints)
        if self.engine_name == "pymoo":
            return PymooEngine(self.table, self.encoding, n_obj, n_con, self.s.algorithm,
                               self.s.population, self.ctx.spec.seed,
                               checkpoint=self.out / "pymoo_state.npz",
                               repair=self._refiner, budgeted=self._budgeted())
        return OptunaEngine(self.encoding, n_obj, self.sampler_name,
                            trials=self.s.population * self.s.generations // 4,
                            population=self.s.population, seed=self.ctx.spec.seed)

    def _round(self, round_: int) -> int:
        X, y, recs = self._true_data()
        if len(X) < 3:
            raise EvompError(
                f"only {len(X)} successful true evaluations: too few to fit a surrogate "
                "(raise search.initial, or check why evaluations fail in evaluations.csv)"
            )
        model = build_surrogate(self.s.surrogate, self.table, self.profile, self.ctx.spec.seed)
        model.fit(X, y)
        obj = self.objectives

        def cheap(G: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            mean = np.clip(model.predict(G), 0.0, 1.0)
            costs = obj.costs(G)
            return obj.matrix(mean, costs), obj.violation(mean, costs)

        costs_true = obj.costs(X)
        front = nondominated(obj.matrix(y, costs_true))
        pool = self.engine.propose(cheap, self.s.generations, inject=X[front])
        if self.engine_name == "optuna" and self._refiner is not None:
            pool = self._refiner.apply(pool)  # pymoo applies it as a repair already
        pool = repair_all_pruned(self.table, pool.astype(np.int64)).astype(np.int8)
        seen = {r.genome_hash for r in self.store.records()}
        pool = self._fresh(pool, seen)
        if len(pool) == 0:
            # the engine converged onto evaluated genomes (e.g. a refinement that maps many
            # genomes onto few): explore sensitivity-ordered and random genomes instead
            n = 8 * self.s.per_round
            P = self.encoding.random_params(n, self.rng, 0.5)
            R = np.concatenate([self.encoding.decode(P), self.ctx.space.random(n, self.rng)])
            if self._refiner is not None:
                R = self._refiner.apply(R)
            pool = self._fresh(repair_all_pruned(self.table, R.astype(np.int64)
                                                 ).astype(np.int8), seen)
            if len(pool) == 0:
                return 0
            self._say(f"round {round_}: the engine proposed only evaluated genomes; "
                      "choosing among random ones")
        k = min(self.s.per_round, self.budget - self.store.n_true(), len(pool))
        mean, std = model.predict(pool, return_std=True)
        chosen = self._select(pool, mean, std, y, costs_true, k)
        G = pool[chosen]
        params = None
        if self.engine_name == "optuna":
            # a genome changed by a repair has no compact parameters: it is recorded
            # without them (the others keep theirs)
            engine = cast(OptunaEngine, self.engine)  # _make_engine built one for "optuna"
            params = [engine.last_params.get(g.tobytes()) for g in G]
        ran, results = self._evaluate_and_record(G, round_, "round", params,
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
    def _fresh(pool: np.ndarray, seen: set[str]) -> np.ndarray:
        """Rows of ``pool`` not in ``seen`` (hashes), first occurrences, in order."""
        hashes = [genome_hash(g) for g in pool]
        _, first = np.unique(hashes, return_index=True)
        return pool[[i for i in sorted(first) if hashes[i] not in seen]]

    def _select(self, pool: np.ndarray, mean: np.ndarray, std: np.ndarray, y: np.ndarray,
                costs_true: dict[str, np.ndarray], k: int) -> np.ndarray:
        import surrogates

        obj = self.objectives
        how = self.s.selection
        if how == "uncertainty":
            return np.asarray(surrogates.select_uncertain(mean, std, k))
        if how == "diverse":
            return np.asarray(surrogates.select_diverse(pool.astype(float), k, self.rng))
        if how != "ehvi":
            raise EvompError(f"search.selection must be ehvi, uncertainty or diverse, got {how!r}")
        costs_pool = obj.costs(pool)
        hw = obj.hw_metrics
        C = np.stack([costs_pool[m] for m in hw], axis=1)
        Ct = np.stack([costs_true[m] for m in hw], axis=1)
        front_mask = nondominated(obj.matrix(y, costs_true))
        front_pts = np.concatenate([y[front_mask, None], Ct[front_mask]], axis=1)
        ref = np.concatenate([[0.0], 1.1 * np.maximum(C.max(0), Ct.max(0))])
        viol = obj.violation(mean, costs_pool).sum(axis=1)
        feasible = np.nonzero(viol == 0)[0]
        if len(feasible) < k:
            feasible = np.argsort(viol, kind="stable")[: max(k, len(feasible))]
        idx = surrogates.select_ehvi(mean[feasible], std[feasible], C[feasible], front_pts, ref,
                                     k, self.rng)
        return feasible[np.asarray(idx)]

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
        path = self.out / "surrogate_quality.csv"
        new = not path.is_file()
        with path.open("a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(row))
            if new:
                w.writeheader()
            w.writerow(row)
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
        costs = obj.costs(X)
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
        all_costs = obj.costs(np.stack([r.genome for r in all_recs])) if all_recs else {}
        prior = []
        for i, r in enumerate(all_recs):
            prior.append({
                "id": f"t{r.number}", "method": f"evomp-{self.engine_name}",
                "fidelity": r.fidelity, "genome_hash": r.genome_hash,
                "val_accuracy": r.val_accuracy, "ptq_accuracy": r.ptq_accuracy,
                "test_accuracy": None, "failed": r.failed, "reason": r.attrs.get("reason", ""),
                "seconds": r.attrs.get("seconds"), "cpu_seconds": r.attrs.get("cpu_seconds"),
                "round": r.attrs.get("round"), "source": r.attrs.get("source"),
                "predicted_accuracy": r.attrs.get("predicted_accuracy"),
                "predicted_std": r.attrs.get("predicted_std"),
                **{k: float(v[i]) for k, v in all_costs.items()},
            })
        with backend_context(self.scheduler) as backend:
            front = finish_run(
                self.ctx, obj, X[cand], method=f"evomp-{self.engine_name}", clock=self.clock,
                jobs=self.jobs, backend=backend, prior_evaluations=prior,
                progress=self.progress,
                info={"engine": self.engine_name,
                      "sampler": self.sampler_name if self.engine_name == "optuna" else None,
                      "algorithm": self.s.algorithm if self.engine_name == "pymoo" else None,
                      "rounds": round_, "budget": self.budget, "surrogate": self.s.surrogate,
                      "storage": (self.out / "storage.txt").read_text().splitlines()[0]},
            )
        self._save_progress(round=round_, cpu_seconds=self.clock.seconds, verified=True)
        return front

    def _say(self, msg: str) -> None:
        log.info(msg)
        if self.progress:
            print(msg, flush=True)
