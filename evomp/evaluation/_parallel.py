"""Parallel true evaluations through joblib (loky by default, or a dask.distributed cluster)."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from joblib import Parallel, delayed
from tqdm.auto import tqdm

from evomp._errors import EvompError
from evomp.evaluation._evaluator import EvalResult, Evaluator

__all__ = ["evaluate_parallel", "backend_context", "threads_per_worker", "usable_cores"]


def usable_cores() -> int:
    """Cores this process may run on (CPU affinity and cgroup-limited sets included)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def threads_per_worker(jobs: int) -> int:
    """Torch threads per worker so that ``jobs`` workers do not oversubscribe the cores."""
    return max(1, usable_cores() // max(1, jobs))


def _worker_eval(
    evaluator: Evaluator, i: int, row: np.ndarray, fidelity: str, with_test: bool, threads: int,
    save_dir: str | None, deadline: float | None = None,
) -> tuple[int, EvalResult | None]:
    if deadline is not None and time.time() >= deadline:
        return i, None  # started after the deadline: not evaluated
    import torch

    torch.set_num_threads(threads)
    return i, evaluator.evaluate(row[None], fidelity, with_test=with_test, save_dir=save_dir)[0]


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
        raise EvompError("the dask backend needs the cluster extra: "
                         "pip install 'evomp[cluster]'") from e
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
    on_result: Callable[[int, EvalResult], None] | None = None,
    progress: bool | str = False,
    deadline: float | None = None,
) -> tuple[list[EvalResult], float]:
    """Evaluate genomes, in parallel when ``jobs > 1``; cached results are not recomputed.

    Each genome is its own task and ``on_result`` is called as soon as it finishes (in
    completion order), so a caller that records results there loses at most the
    evaluations in flight if the process is killed.

    Args:
        evaluator: the evaluator (pickled to the workers with each task).
        genomes: ``(n, n_genes)`` int.
        fidelity: ``"ptq"``, ``"short"`` or ``"final"``.
        jobs: number of parallel workers (1 = in this process).
        backend: joblib backend (``"loky"``, or ``"dask"`` inside :func:`backend_context`).
        with_test: also score the test split.
        save_dir: where trained state dicts go (a shared filesystem for a cluster).
        on_result: ``on_result(row_index, result)`` for every row, as results arrive
            (cache hits first).
        progress: show a progress bar (a string is its description).
        deadline: wall-clock time (``time.time()``) after which no evaluation starts;
            those already running finish and count. Rows never started are left out of
            the results (``on_result`` says which rows ran). ``None``: no deadline.

    Returns:
        ``(results in row order, CPU seconds spent in worker processes)``; the latter is 0
        when everything ran in this process (whose own CPU time the caller measures).
    """
    g = evaluator.space.check(genomes)
    sd = None if save_dir is None else str(save_dir)
    results: dict[int, EvalResult] = {}
    todo = []
    for i, row in enumerate(g):
        hit = evaluator.cached(row, fidelity, with_test=with_test, save_dir=sd)
        if hit is None:
            todo.append(i)
        else:
            results[i] = hit
            if on_result:
                on_result(i, hit)
    bar = tqdm(total=len(todo), desc=progress if isinstance(progress, str) else fidelity,
               disable=not progress or not todo, leave=False)
    worker_cpu = 0.0

    def done(i: int, r: EvalResult) -> None:
        results[i] = r
        bar.update(1)
        if on_result:
            on_result(i, r)

    try:
        if jobs <= 1 or len(todo) <= 1:
            for i in todo:
                if deadline is not None and time.time() >= deadline:
                    break
                done(i, evaluator.evaluate(g[i : i + 1], fidelity, with_test=with_test,
                                           save_dir=sd)[0])
        else:
            threads = threads_per_worker(jobs) if backend == "loky" else 1
            # dask's joblib backend yields in submission order; loky as results complete
            order = "generator" if backend == "dask" else "generator_unordered"
            par = (Parallel(n_jobs=jobs, return_as=order) if backend == "dask"
                   else Parallel(n_jobs=jobs, backend=backend, return_as=order))
            # the deadline is checked by each task as it starts, in its worker: tasks
            # queued behind it return at once, those running finish and are recorded
            for i, r in par(delayed(_worker_eval)(evaluator, i, g[i], fidelity, with_test,
                                                  threads, sd, deadline) for i in todo):
                if r is None:
                    continue
                evaluator.remember(r)
                worker_cpu += r.cpu_seconds
                done(i, r)
    finally:
        bar.close()
    return [results[i] for i in sorted(results)], worker_cpu
