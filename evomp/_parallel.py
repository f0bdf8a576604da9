"""Parallel true evaluations through joblib (loky by default, or a dask.distributed cluster)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from joblib import Parallel, delayed

from evomp._errors import EvompError
from evomp._evaluate import EvalResult, Evaluator, genome_hash

__all__ = ["evaluate_parallel", "backend_context", "threads_per_worker"]


def threads_per_worker(jobs: int) -> int:
    """Torch threads per worker so that ``jobs`` workers do not oversubscribe the cores."""
    return max(1, (os.cpu_count() or 1) // max(1, jobs))


def _worker_eval(
    evaluator: Evaluator, rows: np.ndarray, fidelity: str, with_test: bool, threads: int,
    save_dir: str | None,
) -> list[EvalResult]:
    import torch

    torch.set_num_threads(threads)
    return evaluator.evaluate(rows, fidelity, with_test=with_test, save_dir=save_dir)


@contextlib.contextmanager
def backend_context(scheduler: str | None) -> Iterator[str]:
    """Yield the joblib backend name: ``"loky"``, or ``"dask"`` connected to ``scheduler``.

    ``scheduler`` is a dask.distributed scheduler address (``tcp://host:8786``) or a
    ``distributed.Client``; ``None`` means local processes (loky).
    """
    if scheduler is None:
        yield "loky"
        return
    try:
        from distributed import Client
    except ImportError as e:  # pragma: no cover - cluster extra missing
        raise EvompError("the dask backend needs the cluster extra: pip install 'evomp[cluster]'") from e
    from joblib import parallel_config

    client = scheduler if isinstance(scheduler, Client) else Client(scheduler)
    try:
        with parallel_config(backend="dask"):  # registers joblib's dask backend
            yield "dask"
    finally:
        if client is not scheduler:
            client.close()


def evaluate_parallel(
    evaluator: Evaluator,
    genomes: np.ndarray,
    fidelity: str = "short",
    *,
    jobs: int = 1,
    backend: str = "loky",
    with_test: bool = False,
    save_dir: str | Path | None = None,
) -> tuple[list[EvalResult], float]:
    """Evaluate genomes, in parallel when ``jobs > 1``; cached results are not recomputed.

    Args:
        evaluator: the evaluator (pickled to the workers once per batch of rows).
        genomes: ``(n, n_genes)`` int.
        fidelity: ``"ptq"``, ``"short"`` or ``"final"``.
        jobs: number of parallel workers (1 = in this process).
        backend: joblib backend (``"loky"``, or ``"dask"`` inside :func:`backend_context`).
        with_test: also score the test split.
        save_dir: where trained state dicts go (a shared filesystem for a cluster).

    Returns:
        ``(results in row order, CPU seconds spent in worker processes)``; the latter is 0
        when everything ran in this process (whose own CPU time the caller measures).
    """
    g = evaluator.space.check(genomes)
    sd = None if save_dir is None else str(save_dir)
    todo = []
    for i, row in enumerate(g):
        hit = evaluator.cache.get((genome_hash(row), fidelity))
        fresh = hit is None or (with_test and hit.test_accuracy is None)
        if not fresh and sd is not None:
            fresh = not (Path(sd) / f"{hit.genome_hash}-{fidelity}.pt").is_file()
        if fresh:
            todo.append(i)
    if jobs <= 1 or len(todo) <= 1:
        return evaluator.evaluate(g, fidelity, with_test=with_test, save_dir=sd), 0.0
    threads = threads_per_worker(jobs) if backend == "loky" else 1
    chunks = np.array_split(np.array(todo), min(len(todo), jobs * 2))
    par = Parallel(n_jobs=jobs) if backend == "dask" else Parallel(n_jobs=jobs, backend=backend)
    parts = par(
        delayed(_worker_eval)(evaluator, g[c], fidelity, with_test, threads, sd)
        for c in chunks if len(c)
    )
    worker_cpu = 0.0
    for part in parts:
        for r in part:
            evaluator.cache[(r.genome_hash, r.fidelity)] = r
            worker_cpu += r.cpu_seconds
            if evaluator.cache_file:
                import json

                with evaluator.cache_file.open("a") as f:
                    f.write(json.dumps(r.to_dict()) + "\n")
    return evaluator.evaluate(g, fidelity, with_test=with_test), worker_cpu
