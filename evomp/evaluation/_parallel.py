"""Parallel true evaluations through joblib (loky by default, or a dask.distributed cluster)."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from joblib import Parallel, delayed
from tqdm.auto import tqdm

from evomp._errors import EvompError
from evomp.evaluation._evaluator import EvalResult, Evaluator
from evomp.tasks import Task

__all__ = [
    "SMALL_MODEL_MACS",
    "backend_context",
    "cgroup_cpu_limit",
    "evaluate_parallel",
    "macs_per_sample",
    "oversubscribed",
    "threads_per_worker",
    "usable_cores",
    "warn_oversubscribed",
]


log = logging.getLogger("evomp")

SMALL_MODEL_MACS = 10_000_000
"""Multiply-accumulates per sample below which a model trains on one intra-op thread.

The zoo's models (cnn1d 0.38 M, DS-CNN 0.27 M, ResNet-8 0.76 M, MobileNet-v1 0.06 M per
sample) are far below it: their kernels are too small for torch's threads to pay for their
synchronisation, and threads that spin against another busy process make a QAT step ten
times slower (``benchmarks/bench_threads.py``)."""


def cgroup_cpu_limit(root: str | Path = "/sys/fs/cgroup",
                     proc_cgroup: str | Path = "/proc/self/cgroup") -> float | None:
    """CPUs the cgroup CPU quota grants this process (e.g. ``1.5``), or None if unlimited.

    Reads cgroup v2's ``cpu.max`` (``"<quota> <period>"`` or ``"max <period>"``) and
    cgroup v1's ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (quota ``-1``: unlimited), in
    the process's own cgroup (from ``proc_cgroup``) and each cgroup above it up to ``root``;
    the smallest quota wins.

    Args:
        root: where the cgroup file system is mounted.
        proc_cgroup: the process's cgroup membership file.
    """
    root = Path(root)
    rel_v2, rel_v1 = "/", "/"
    try:
        for line in Path(proc_cgroup).read_text().splitlines():
            hid, _, rest = line.partition(":")
            controllers, _, path = rest.partition(":")
            if hid == "0" and controllers == "":
                rel_v2 = path or "/"
            elif "cpu" in controllers.split(","):
                rel_v1 = path or "/"
    except OSError:
        pass
    limits: list[float] = []

    def ancestors(base: Path, rel: str) -> list[Path]:
        parts = [q for q in rel.split("/") if q and q != ".."]
        return [base.joinpath(*parts[:i]) for i in range(len(parts), -1, -1)]

    for d in ancestors(root, rel_v2):
        try:
            q2, per2 = (d / "cpu.max").read_text().split()[:2]
            if q2 != "max" and float(per2) > 0:
                limits.append(float(q2) / float(per2))
        except (OSError, ValueError):
            continue
    for v1 in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
        for d in ancestors(root / v1, rel_v1):
            try:
                q = float((d / "cpu.cfs_quota_us").read_text())
                per = float((d / "cpu.cfs_period_us").read_text())
            except (OSError, ValueError):
                continue
            if q > 0 and per > 0:
                limits.append(q / per)
    return min(limits) if limits else None


def usable_cores() -> int:
    """CPUs this process may use: its CPU affinity set, capped by its cgroup's CPU quota
    (rounded down, at least 1: a quota of 1.5 CPUs gives 1, so threads never exceed it)."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        n = os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    if limit is not None:
        n = min(n, int(limit))
    return max(1, n)


def macs_per_sample(task: Task) -> int:
    """Multiply-accumulates of one forward pass of a fresh ``task`` model on one sample
    (convolutions and linear layers; the global RNG state is left as it was)."""
    import torch
    from torch import nn

    total = 0
    convs = (nn.Conv1d, nn.Conv2d, nn.Conv3d)

    def hook(m: nn.Module, inp: tuple, out: torch.Tensor) -> None:
        nonlocal total
        per_out = out[0].numel() if out.dim() > 0 else 1
        if isinstance(m, convs):
            k = int(np.prod(m.kernel_size))
            total += per_out * (m.in_channels // m.groups) * k
        elif isinstance(m, nn.Linear):
            total += per_out * m.in_features

    with torch.random.fork_rng(devices=[]):
        model = task.model_factory()
    model.eval()
    hooks = [m.register_forward_hook(hook) for m in model.modules()
             if isinstance(m, (*convs, nn.Linear))]
    try:
        with torch.no_grad():
            model(task.example_input(1))
    finally:
        for h in hooks:
            h.remove()
    return int(total)


_warned = False


def oversubscribed(cores: int | None = None) -> float | None:
    """The 1-minute load average when it exceeds the usable CPUs (``cores``, default
    :func:`usable_cores`), else None: other processes already keep every CPU busy."""
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # not on Unix
        return None
    n = usable_cores() if cores is None else cores
    return load if load > n else None


def warn_oversubscribed(cores: int | None = None) -> bool:
    """Warn (in the log, and once per process on stderr) if the machine is oversubscribed.

    Returns:
        Whether it is.
    """
    global _warned
    n = usable_cores() if cores is None else cores
    load = oversubscribed(n)
    if load is None:
        return False
    msg = (f"the machine is oversubscribed: load average {load:.1f} over {n} usable CPU(s); "
           "evaluations use one torch thread each and will be slower than on an idle "
           "machine (set threads in the spec or --threads to override)")
    log.warning(msg)
    if not _warned:
        _warned = True
        if log.hasHandlers():  # else logging's last resort has just written it to stderr
            print(f"evomp: warning: {msg}", file=sys.stderr)
    return True


def threads_per_worker(jobs: int = 1, task: Task | None = None, requested: int = 0, *,
                       check_load: bool = False) -> int:
    """Torch intra-op threads for each of ``jobs`` parallel evaluations.

    ``requested > 0`` is used as given (the spec's ``threads``, ``--threads``). ``0`` is
    automatic, and never oversubscribes: the usable CPUs (:func:`usable_cores`: affinity
    and cgroup quota) split among the ``jobs`` evaluations; one thread for a small model
    (``task``'s model under :data:`SMALL_MODEL_MACS` per sample), and one when
    ``check_load`` finds the machine already oversubscribed (warned, see
    :func:`warn_oversubscribed`).

    Raises:
        EvompError: ``requested < 0``.
    """
    if isinstance(requested, bool) or not isinstance(requested, int) or requested < 0:
        raise EvompError(f"threads (the spec's threads, or --threads) must be >= 0 (0 = "
                         f"automatic: this process's share of the usable CPUs), got {requested!r}")
    if requested > 0:
        return requested
    cores = usable_cores()
    n = max(1, cores // max(1, jobs))
    if check_load and warn_oversubscribed(cores):
        n = 1
    if n > 1 and task is not None and macs_per_sample(task) < SMALL_MODEL_MACS:
        n = 1
    return n


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
            threads = threads_per_worker(jobs, evaluator.task) if backend == "loky" else 1
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
