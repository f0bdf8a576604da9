"""The common final protocol and the run-directory format shared by search and baselines.

Every method (the search, each baseline) hands its candidate genomes to
:func:`finish_run`, which gives each the same final QAT (``qat.final_steps``, the run's
seed), scores validation and test accuracy, computes every hardware metric, keeps the
feasible non-dominated ones and writes the run directory:

``front.csv``
    one row per verified front member: ``id, val_accuracy, test_accuracy, ptq_accuracy,
    genome_hash`` and one column per hardware metric.
``front.json``
    ``{id: {"bits": BitConfig dict, "genome": hex, "genome_hash", "model": state-dict path}}``.
``evaluations.csv``
    every true evaluation of the run (search, baseline and final), one row each.
``run.json``
    method, objectives, constraints, CPU and wall seconds, evaluation counts, status.
``models/<hash>-final.pt``
    the fake-quant state dict of each final evaluation (for ``evomp export``).
"""

from __future__ import annotations

import csv
import io
import resource
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from evomp.evaluation import EvalResult, evaluate_parallel
from evomp.objectives import Objectives, nondominated
from evomp.run._rundir import RunDir, atomic_write_text
from evomp.space import genome_hash, genome_to_hex

__all__ = [
    "CpuClock",
    "FrontResult",
    "finish_run",
    "read_front",
    "write_evaluations",
    "EVAL_COLUMNS",
]

EVAL_COLUMNS = ["id", "method", "fidelity", "genome_hash", "val_accuracy", "ptq_accuracy",
                "test_accuracy", "failed", "reason", "seconds", "cpu_seconds"]


class CpuClock:
    """CPU seconds of this process (all threads) plus work reported by worker processes.

    Args:
        before: CPU seconds already spent by earlier sessions of the same run (resume).
    """

    def __init__(self, before: float = 0.0) -> None:
        self.before = before
        self.t0 = self._self_cpu()
        self.wall0 = time.perf_counter()
        self.workers = 0.0

    @staticmethod
    def _self_cpu() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    def add_workers(self, seconds: float) -> None:
        self.workers += seconds

    @property
    def seconds(self) -> float:
        return self.before + self._self_cpu() - self.t0 + self.workers

    @property
    def wall(self) -> float:
        return time.perf_counter() - self.wall0


@dataclass
class FrontResult:
    """The verified front of a run."""

    rows: list[dict[str, Any]]
    feasible: bool
    out: Path
    evaluations: list[dict[str, Any]] = field(default_factory=list)


def _result_row(r: EvalResult, method: str, gid: str, costs: dict[str, float]) -> dict[str, Any]:
    d = {"id": gid, "method": method, **{k: getattr(r, k) for k in EVAL_COLUMNS[2:]}}
    d.update(costs)
    return d


def write_evaluations(out: str | Path, rows: Sequence[dict[str, Any]]) -> None:
    """(Over)write ``evaluations.csv`` of the run directory ``out`` with ``rows`` (atomic)."""
    cols = list(EVAL_COLUMNS)
    for r in rows:
        cols += [k for k in r if k not in cols]
    _write_csv(RunDir(out).evaluations_csv, cols, rows)


def _write_csv(path: Path, cols: list[str], rows: Sequence[dict[str, Any]]) -> None:
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: _fmt(r.get(k)) for k in cols})
    atomic_write_text(path, buf.getvalue())


def _fmt(v: Any) -> Any:
    if isinstance(v, float):
        return f"{v:.6g}"
    if v is None:
        return ""
    return v


def finish_run(
    ctx: Any,
    objectives: Objectives,
    genomes: np.ndarray,
    *,
    method: str,
    clock: CpuClock,
    jobs: int = 1,
    backend: str = "loky",
    prior_evaluations: Sequence[dict[str, Any]] = (),
    info: dict[str, Any] | None = None,
    max_infeasible_shown: int = 5,
    progress: bool = False,
) -> FrontResult:
    """Final QAT + test for ``genomes``, then the front, written into ``ctx.out``.

    Args:
        ctx: the :class:`~evomp.run._context.RunContext` (space, evaluator, out).
        objectives: objectives and constraints of the run.
        genomes: ``(n, n_genes)`` candidates (duplicates are evaluated once).
        method: name recorded in ``run.json`` and ``evaluations.csv``.
        clock: the run's CPU clock (worker CPU time is added to it).
        jobs / backend: parallel final evaluations.
        prior_evaluations: rows of the method's earlier true evaluations (for the CSV).
        info: extra fields for ``run.json``.
        progress: show a progress bar over the final evaluations.

    Returns:
        The front. If no candidate is feasible the front holds the least infeasible ones
        and ``feasible`` is False (``run.json`` says so).
    """
    rd = RunDir(ctx.out)
    out = rd.path
    g = ctx.space.check(genomes)
    _, first = np.unique([genome_hash(r) for r in g], return_index=True)
    g = g[np.sort(first)]
    results, wcpu = evaluate_parallel(
        ctx.evaluator, g, "final", jobs=jobs, backend=backend, with_test=True,
        save_dir=rd.models, progress=progress and "final QAT",
    )
    clock.add_workers(wcpu)
    costs = objectives.costs(g)
    acc = np.array([np.nan if r.failed else r.val_accuracy for r in results])
    failed = np.isnan(acc)
    viol = objectives.violation(np.nan_to_num(acc), costs).sum(axis=1)
    feasible = (viol == 0) & ~failed
    idx = np.nonzero(feasible)[0]
    if len(idx):
        F = objectives.matrix(acc[idx], {k: v[idx] for k, v in costs.items()})
        chosen = idx[nondominated(F)]
        ok = True
    else:
        order = np.argsort(np.where(failed, np.inf, viol), kind="stable")
        chosen = order[: max_infeasible_shown]
        chosen = chosen[~failed[chosen]]
        ok = False
    key = objectives.hw_metrics[0]
    chosen = chosen[np.argsort(costs[key][chosen], kind="stable")]
    configs = ctx.space.to_configs(g[chosen]) if len(chosen) else []
    rows, members = [], {}
    metric_names = sorted(costs)
    for j, (i, cfg) in enumerate(zip(chosen, configs)):
        r = results[i]
        gid = f"p{j}"
        row = {
            "id": gid,
            "val_accuracy": r.val_accuracy,
            "test_accuracy": r.test_accuracy,
            "ptq_accuracy": r.ptq_accuracy,
            "genome_hash": r.genome_hash,
        }
        row.update({m: float(costs[m][i]) for m in metric_names})
        if not ok:
            row["violation"] = float(viol[i])
        rows.append(row)
        members[gid] = {
            "bits": cfg.to_dict(),
            "genome": genome_to_hex(g[i]),
            "genome_hash": r.genome_hash,
            "model": rd.model(r.genome_hash, "final").relative_to(out).as_posix(),
            "val_accuracy": r.val_accuracy,
            "test_accuracy": r.test_accuracy,
            **{m: float(costs[m][i]) for m in metric_names},
        }
    cols = ["id", "val_accuracy", "test_accuracy", "ptq_accuracy", "genome_hash"] + metric_names
    if not ok:
        cols.append("violation")
    _write_csv(rd.front_csv, cols, rows)
    rd.write_json(rd.front_json, members)
    final_rows = [
        _result_row(r, method, f"final-{k}", {m: float(costs[m][k]) for m in metric_names})
        for k, r in enumerate(results)
    ]
    evaluations = list(prior_evaluations) + final_rows
    write_evaluations(out, evaluations)
    meta = {
        "method": method,
        "objectives": objectives.names,
        "constraints": [str(c) for c in objectives.constraints],
        "hardware": list(objectives.models),
        "cpu_seconds": clock.seconds,
        "wall_seconds": clock.wall,
        "n_true_evaluations": sum(1 for e in prior_evaluations if e.get("fidelity") == "short"),
        "n_final_evaluations": len(results),
        "front_size": len(rows),
        "feasible": ok,
        "status": "done" if ok else "no feasible configuration; front shows the least infeasible",
        "spec": ctx.spec.name,
        "final_steps": ctx.evaluator.qat.final_steps,
        "seed": ctx.spec.seed,
    }
    meta.update(info or {})
    rd.write_json(rd.run_json, meta)
    return FrontResult(rows, ok, out, evaluations)


def read_front(run_dir: str | Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``(front.csv rows with numbers parsed, front.json members)`` of a run directory
    (:meth:`RunDir.read_front`: a damaged front is one clear error)."""
    return RunDir(run_dir).read_front()
