"""``evomp worker``: one of any number of processes that take the controller's queued
candidates from the shared study, evaluate them and tell the results.

A worker pretrains nothing and computes no profile: it fetches the run's resolved spec and
float weights from the study's artifact store (checking their SHA-256 against the study),
builds the task (a built-in one, or the spec's ``task.factory`` import path) and an
evaluator, and then loops: take a waiting trial (finals first), evaluate it while beating
its heartbeat, tell the result with the hash of the float weights it used. A worker given
float weights that differ from the study's refuses to evaluate.

A lost database connection is retried with backoff; after the last try the worker exits
with a clear message (its running trial returns to the queue when its heartbeat lapses).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import torch

from evomp._errors import EvompError
from evomp.evaluation import FIDELITIES, EvalResult, Evaluator
from evomp.objectives import Objectives
from evomp.run import RunContext, build_space, build_task, load_spec, qat_config
from evomp.search._artifacts import fetch_artifact, file_sha256, upload_file
from evomp.search._queue import Queue, QueuedTrial

__all__ = ["WorkerCounts", "evaluate_task", "worker_context", "run_worker", "worker_device"]

log = logging.getLogger("evomp")

#: seconds to wait before each retry of a lost storage connection
BACKOFF_S = (1.0, 2.0, 4.0, 8.0, 16.0)


@dataclass
class WorkerCounts:
    """What one worker did."""

    evaluated: int = 0
    failed: int = 0
    idle_s: float = 0.0
    busy_s: float = 0.0
    trials: list[int] = field(default_factory=list)


def worker_device(device: str | None, spec_device: str = "auto") -> torch.device:
    """The device of a worker: ``device`` if given (``cpu``, ``cuda``, ``cuda:N``); else on
    a machine with GPUs the one named by ``LOCAL_RANK`` (the first when unset), so several
    workers on a multi-GPU node each take their own; else the CPU."""
    want = device or spec_device
    if want == "cpu" or not torch.cuda.is_available():
        if want.startswith("cuda"):
            raise EvompError(f"--device {want}: no CUDA device is visible to this worker")
        return torch.device("cpu")
    if want in ("auto", "cuda"):
        rank = int(os.environ.get("LOCAL_RANK", "0") or 0)
        return torch.device(f"cuda:{rank % torch.cuda.device_count()}")
    dev = torch.device(want)
    if dev.index is not None and dev.index >= torch.cuda.device_count():
        raise EvompError(f"--device {want}: only {torch.cuda.device_count()} CUDA device(s)")
    return dev


def worker_context(study: optuna.Study, out: Path, device: torch.device,
                   float_path: Path | None = None, artifacts: str | Path | None = None
                   ) -> tuple[RunContext, str]:
    """The run context of a worker, from the study's artifacts.

    Args:
        study: the shared study.
        out: this worker's local directory (fetched artifacts go there).
        device: the worker's device.
        float_path: float weights this worker was given instead of fetching them.
        artifacts: the artifact store's path on this node (default: the study's).

    Returns:
        ``(context, sha256 of the float weights)``.

    Raises:
        EvompError: no artifacts published yet, or float weights that differ from the
            study's.
    """
    out.mkdir(parents=True, exist_ok=True)
    spec = load_spec(fetch_artifact(study, "spec", out / "spec.toml", artifacts))
    want = study.user_attrs.get("artifact:float", {}).get("sha256")
    if float_path is not None:
        sha = file_sha256(float_path)
        if want is not None and sha != want:
            raise EvompError(
                f"{float_path} holds other float weights than the study's (sha256 {sha[:12]}... "
                f"against {want[:12]}...): its evaluations would not be comparable, so this "
                "worker refuses to evaluate; leave out --float to fetch the study's weights")
    else:
        float_path = fetch_artifact(study, "float", out / "float.pt", artifacts)
        sha = file_sha256(float_path)
    task = build_task(spec)
    model = task.model_factory()
    state = torch.load(float_path, map_location="cpu", weights_only=True)
    model.load_state_dict(state["state_dict"])
    model.to(device)
    space = build_space(spec, model, task)
    evaluator = Evaluator(task, space, model, qat_config(spec), device=device)
    ctx = RunContext(spec, out, task, model, space, evaluator, device,
                     dict(state.get("info", {})))
    return ctx, sha


def evaluate_task(queue: Queue, evaluator: Evaluator, objectives: Objectives, task: QueuedTrial, *,
                  float_sha: str, save_dir: Path | None = None,
                  upload_to: str | Path | None = None) -> EvalResult:
    """Evaluate one taken trial while beating its heartbeat, then tell the result.

    Args:
        queue: the queue the task came from.
        evaluator: the evaluator (this process's quantized model).
        objectives: the run's objectives (hardware costs stored with the result).
        task: the trial.
        float_sha: hash of the float weights the evaluator uses (stored with the result).
        save_dir: where the trained state dict of a final evaluation is saved.
        upload_to: an artifact store path: the saved state dict is uploaded there, linked
            to the trial (workers on other nodes), else it stays in ``save_dir``.
    """
    g = task.genome[None]
    final = task.fidelity == "final"
    with queue.beating(task):
        r = evaluator.evaluate(g, task.fidelity, with_test=task.with_test,
                               save_dir=save_dir if final else None)[0]
        costs = {k: float(v[0]) for k, v in objectives.costs(g).items()}
        extra: dict[str, Any] = {"float_sha256": float_sha, "worker": queue.worker_id}
        if final:
            extra["start"] = r.start  # "short": it continued the genome's short-QAT state
        if final and save_dir is not None and upload_to is not None and not r.failed:
            path = Path(save_dir) / f"{r.genome_hash}-final.pt"
            extra["model_artifact"] = upload_file(
                queue.study, upload_to, path, optuna.trial.Trial(queue.study, task.trial_id))
    queue.tell(task, r, costs, extra)
    return r


_WORKER_GIVES_UP = ("this worker exits (a trial it was evaluating returns to the queue when "
                    "its heartbeat lapses)")


def _retrying(what: str, fn: Callable[[], Any], gives_up: str = _WORKER_GIVES_UP) -> Any:
    """``fn()``, retried with backoff (:data:`BACKOFF_S`) while the storage is unreachable;
    then an :class:`EvompError` of one line that ends in ``gives_up``."""
    lost: tuple[type[BaseException], ...] = (ConnectionError,)
    try:  # the cluster extra; without it there is no database to lose
        import sqlalchemy.exc

        lost += (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)
    except ImportError:
        pass
    # Optuna wraps a connection lost during a commit in StorageInternalError
    caught: tuple[type[BaseException], ...] = (*lost, optuna.exceptions.StorageInternalError)
    for i, wait in enumerate((*BACKOFF_S, None)):
        try:
            return fn()
        except caught as e:
            cause = e.__cause__ if isinstance(e, optuna.exceptions.StorageInternalError) else e
            if not isinstance(cause, lost):
                raise
            e = cause
            if wait is None:
                raise EvompError(
                    f"lost the study's database while {what} ({type(e).__name__}); gave up "
                    f"after {len(BACKOFF_S)} retries: {gives_up}") from None
            log.warning("storage unreachable while %s (try %d): %s", what, i + 1, e)
            time.sleep(wait)
    raise AssertionError("unreachable")  # pragma: no cover


def run_worker(queue: Queue, ctx: RunContext, objectives: Objectives, *, float_sha: str,
               upload_to: str | Path | None = None, max_trials: int | None = None,
               idle_exit_s: float | None = None, poll_s: float = 0.5,
               say: Callable[[str], None] | None = None) -> WorkerCounts:
    """Take, evaluate and tell queued trials until the controller says the study is done
    (study attribute ``state = "done"``), ``max_trials`` were evaluated, or nothing was
    waiting for ``idle_exit_s`` seconds.

    Past the controller's deadline (study attribute ``deadline``) no short evaluation
    starts; final QATs still do.
    """
    counts = WorkerCounts()
    save_dir = Path(ctx.out) / "models"
    info = {"pid": os.getpid(), "device": str(ctx.device), "float_sha256": float_sha}
    _retrying("announcing this worker", lambda: queue.announce(**info))
    last_seen = time.time()
    last_stale = 0.0
    idle_since = time.time()
    while max_trials is None or counts.evaluated + counts.failed < max_trials:
        ua = _retrying("reading the study", lambda: queue.study.user_attrs)
        if ua.get("state") == "done":
            break
        deadline = ua.get("deadline")
        fids = ("final",) if deadline and time.time() >= float(deadline) else FIDELITIES
        if time.time() - last_stale > queue.heartbeat_s:  # not on every poll of every worker
            _retrying("checking for stale trials", queue.fail_stale)
            last_stale = time.time()
        t0 = time.time()
        task = _retrying("taking a trial", lambda f=fids: queue.take(f))  # type: ignore[misc]
        if task is None:
            if idle_exit_s is not None and time.time() - idle_since > idle_exit_s:
                break
            time.sleep(poll_s)
            counts.idle_s += time.time() - t0
            if time.time() - last_seen > queue.heartbeat_s:
                _retrying("announcing this worker", lambda: queue.announce(**info))
                last_seen = time.time()
            continue
        r = _retrying("telling a result", lambda t=task: evaluate_task(  # type: ignore[misc]
            queue, ctx.evaluator, objectives, t, float_sha=float_sha, save_dir=save_dir,
            upload_to=upload_to))
        counts.busy_s += time.time() - t0
        counts.trials.append(task.number)
        idle_since = time.time()
        if r.failed:
            counts.failed += 1
        else:
            counts.evaluated += 1
        if say:
            say(f"trial {task.number} ({task.fidelity}): "
                + ("failed: " + r.reason if r.failed else
                   f"val accuracy {r.val_accuracy:.4f}") + f" ({r.seconds:.1f}s)")
    _retrying("announcing this worker", lambda: queue.announce(**info, stopped=True))
    return counts

