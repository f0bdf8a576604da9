"""Worker processes a controller starts itself: ``--jobs N`` local processes, or N workers
on a dask.distributed cluster (``--scheduler``). Either way they are ordinary
``evomp worker`` loops on the run's study: one code path serves a laptop and a cluster."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import TracebackType
from typing import Any

from evomp._errors import EvompError

__all__ = ["LocalWorkers", "DaskWorkers"]

log = logging.getLogger("evomp")


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: the child gets SIGTERM when the controller dies (even by SIGKILL)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def worker_args(run_dir: Path, study: str, threads: int, out: Path,
                artifacts: str | None = None) -> list[str]:
    """The ``evomp worker`` command line of a local worker."""
    args = ["worker", "--run-dir", str(run_dir), "--study", study, "--threads", str(threads),
            "--out", str(out), "--quiet"]
    if artifacts:
        args += ["--artifacts", str(artifacts)]
    return args


class LocalWorkers:
    """``n`` ``evomp worker`` processes on this machine, for the life of a ``with`` block.

    Args:
        n: how many.
        run_dir: the run directory (its study; each worker gets ``workers/w<i>/``).
        study: the study's name.
        threads: torch threads per worker.
        storage_url: the database URL when the study is not the journal file (passed in
            the environment, never on the command line).
        artifacts: the artifact store's path.
    """

    def __init__(self, n: int, run_dir: Path, study: str, threads: int,
                 storage_url: str | None = None, artifacts: str | None = None) -> None:
        self.n, self.run_dir, self.study, self.threads = n, Path(run_dir), study, threads
        self.storage_url, self.artifacts = storage_url, artifacts
        self.procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> LocalWorkers:
        env = dict(os.environ)
        if self.storage_url:
            env["EVOMP_STORAGE"] = self.storage_url
        env.setdefault("OMP_NUM_THREADS", str(self.threads))
        for i in range(self.n):
            out = self.run_dir / "workers" / f"w{i}"
            out.mkdir(parents=True, exist_ok=True)
            logf = open(out / "worker.log", "ab")  # noqa: SIM115 - lives with the process
            cmd = [sys.executable, "-m", "evomp",
                   *worker_args(self.run_dir, self.study, self.threads, out, self.artifacts)]
            self.procs.append(subprocess.Popen(cmd, env=env, stdout=logf, stderr=logf,
                                               stdin=subprocess.DEVNULL,
                                               preexec_fn=_die_with_parent))
            logf.close()
        log.info("started %d local workers (pids %s)", self.n, [p.pid for p in self.procs])
        return self

    def check(self) -> None:
        """Raise if every worker has exited with an error (nobody left to evaluate)."""
        codes = [p.poll() for p in self.procs]
        if self.procs and all(c is not None and c != 0 for c in codes):
            tail = (self.run_dir / "workers" / "w0" / "worker.log").read_text(
                errors="replace").strip().splitlines()[-3:]
            raise EvompError("every local worker exited with an error; the last lines of "
                             f"{self.run_dir}/workers/w0/worker.log: " + " | ".join(tail))

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def _dask_worker(args: list[str]) -> int:  # runs on a dask worker
    from evomp.cli import main

    return main(args)


class DaskWorkers:
    """``n`` ``evomp worker`` loops started as tasks on a dask.distributed cluster (the run
    directory and the artifact store must be on a filesystem the dask workers share).

    Args:
        scheduler: the scheduler's address (``tcp://host:8786``) or a ``distributed.Client``.
        n: how many workers.
        run_dir / study / threads / storage_url / artifacts: as for :class:`LocalWorkers`.
    """

    def __init__(self, scheduler: Any, n: int, run_dir: Path, study: str, threads: int,
                 storage_url: str | None = None, artifacts: str | None = None) -> None:
        self.scheduler, self.n, self.run_dir = scheduler, n, Path(run_dir)
        self.study, self.threads = study, threads
        self.storage_url, self.artifacts = storage_url, artifacts
        self.futures: list[Any] = []
        self.client: Any = None

    def __enter__(self) -> DaskWorkers:
        try:
            from distributed import Client
        except ImportError as e:  # pragma: no cover - cluster extra missing
            raise EvompError("the dask backend needs the cluster extra: "
                             "pip install 'evomp[cluster]'") from e
        own = not isinstance(self.scheduler, Client)
        self.client = Client(self.scheduler) if own else self.scheduler
        self._own = own
        for i in range(self.n):
            args = worker_args(self.run_dir, self.study, self.threads,
                               self.run_dir / "workers" / f"dask{i}", self.artifacts)
            if self.storage_url:
                args += ["--storage", self.storage_url]
            self.futures.append(self.client.submit(_dask_worker, args, pure=False,
                                                   key=f"evomp-worker-{i}-{os.getpid()}"))
        return self

    def check(self) -> None:
        errs = [f for f in self.futures if f.status == "error"]
        if self.futures and len(errs) == len(self.futures):
            raise EvompError(f"every dask worker failed: {errs[0].exception()}")

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        # the controller has set the study's state to done: the loops end on their own
        try:
            for f in self.futures:
                try:
                    f.result(timeout=60)
                except Exception as e:  # noqa: BLE001 - reported, not raised on the way out
                    log.warning("a dask worker ended with %s", e)
        finally:
            if self._own:
                self.client.close()
