"""The study as the queue between one controller and any number of workers.

The controller puts candidates into the study as *waiting* trials (Optuna's
``enqueue_trial``; genome, fidelity and the controller's bookkeeping in the trial's user
attributes). A worker takes a waiting trial (the storage moves it to RUNNING for exactly one
taker), evaluates it, and tells the result: the trial becomes COMPLETE (or FAIL with the
reason) with its accuracy and hardware metrics as values. Nothing else sits between the
processes: only the Optuna storage (PostgreSQL on a cluster, the journal file on one
machine).

Faults: a worker beats a heartbeat while it evaluates. On an RDB storage that is Optuna's
own (``heartbeat_interval``, ``grace_period``,
:class:`optuna.storages.RetryHeartbeatStaleTrialCallback` and
:func:`optuna.storages.fail_stale_trials`); on the journal file, which has no heartbeat,
the equivalent: the worker stamps the trial's ``heartbeat`` attribute and
:meth:`Queue.fail_stale` fails a RUNNING trial whose stamp is older than the grace period
and enqueues it again through the same retry callback. Either way the trial of a worker
killed with SIGKILL goes back to the queue, and since only a told trial is a result, no
genome is recorded twice.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from evomp.engines import Proposals
from evomp.evaluation import FIDELITIES, EvalResult
from evomp.search._store import Store
from evomp.space import genome_from_hex, genome_hash, genome_to_hex

__all__ = ["Queue", "QueuedTrial", "open_queue_storage", "HEARTBEAT_S", "GRACE_S"]

log = logging.getLogger("evomp")

#: seconds between two heartbeats of a worker evaluating a trial ($EVOMP_HEARTBEAT_S)
HEARTBEAT_S = float(os.environ.get("EVOMP_HEARTBEAT_S", "5"))
#: seconds without a heartbeat after which a running trial is taken as dead and re-queued
#: ($EVOMP_GRACE_S; every process of a study should use the same value)
GRACE_S = float(os.environ.get("EVOMP_GRACE_S", "30"))

_PENDING = (TrialState.WAITING, TrialState.RUNNING)


def _retry_callback() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RetryHeartbeatStaleTrialCallback()


def open_queue_storage(storage: Any, heartbeat_s: float = HEARTBEAT_S,
                       grace_s: float = GRACE_S) -> Any:
    """The storage a queue runs on: an RDB URL becomes an :class:`optuna.storages.RDBStorage`
    with Optuna's heartbeat and the retry callback; a journal storage is used as it is."""
    if isinstance(storage, str):
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning,
                                message=".*heartbeat.*")
        return optuna.storages.RDBStorage(
            storage, heartbeat_interval=max(1, int(round(heartbeat_s))),
            grace_period=max(2, int(round(grace_s))),
            heartbeat_stale_trial_callback=_retry_callback())
    return storage


#: the order in which waiting trials are taken: final QATs first (a front waits on them),
#: then the cheap screening fidelities (a round waits on them), then short QATs
_TAKE_ORDER = {"final": 0, "ptq": 1, "tiny": 2, "short": 3}

#: seconds a take may need between setting RUNNING and writing the taker's name
_TAKING_S = 2.0


def _dead_here(worker: Any) -> bool:
    """Whether ``worker`` (``host:pid``) is a process of this host that no longer runs (its
    trial need not wait out the grace period)."""
    host, _, pid = str(worker or "").rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


@dataclass(frozen=True)
class QueuedTrial:
    """A trial a worker took: what to evaluate.

    Attributes:
        number: the trial number.
        trial_id: the storage's trial id.
        genome: ``(n_genes,)`` int8.
        fidelity: ``"ptq"``, ``"tiny"``, ``"short"`` or ``"final"``.
        with_test: also score the test split (final QAT of a front candidate).
        attrs: the trial's user attributes as enqueued.
    """

    number: int
    trial_id: int
    genome: np.ndarray
    fidelity: str
    with_test: bool
    attrs: Mapping[str, Any]


class Queue:
    """Enqueue, take, evaluate-and-tell and recover trials of one study.

    Args:
        store: the run's store (its study is the queue; its records the results).
        storage: the storage object the store's study was opened on
            (:func:`open_queue_storage`).
        worker_id: this process's name in the study (host:pid by default).
        heartbeat_s / grace_s: heartbeat period and the silence after which a running
            trial is re-queued.
        distributions: Optuna distributions under which the compact parameters of
            enqueued proposals are recorded (the engine's; None: no parameters).
    """

    def __init__(self, store: Store, storage: Any, worker_id: str | None = None,
                 heartbeat_s: float = HEARTBEAT_S, grace_s: float = GRACE_S,
                 distributions: dict[str, Any] | None = None) -> None:
        self.store = store
        self.study = store.study
        self.storage = storage
        self.study_id = self.storage.get_study_id_from_name(self.study.study_name)
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}"
        self.heartbeat_s = heartbeat_s
        self.grace_s = grace_s
        self._dists = distributions
        self._rdb_heartbeat = isinstance(self.storage, optuna.storages.RDBStorage) and \
            self.storage.get_heartbeat_interval() is not None

    # ------------------------------------------------------------ controller
    def enqueue(self, props: Proposals, fidelity: str, *, round_: int, source: str,
                predicted: tuple[np.ndarray, np.ndarray] | None = None,
                with_test: bool = False) -> list[str]:
        """Put ``props`` into the study as waiting trials (with their compact parameters
        when the queue has their distributions); returns their genome hashes."""
        hashes = []
        for i, g in enumerate(props.genomes):
            h = genome_hash(g)
            attrs: dict[str, Any] = {
                "genome": genome_to_hex(g), "genome_hash": h, "fidelity": fidelity,
                "round": round_, "slot": i, "source": source, "with_test": with_test,
                "queued_at": time.time(),
            }
            if predicted is not None:
                attrs.update(predicted_accuracy=float(predicted[0][i]),
                             predicted_std=float(predicted[1][i]))
            p = props.params[i] if props.params else None
            # a WAITING trial added whole (as Optuna's retry callback does), so the compact
            # parameters are recorded with their distributions
            self.study.add_trial(optuna.trial.create_trial(
                state=TrialState.WAITING, params=p or {},
                distributions={k: self._dists[k] for k in p} if p and self._dists else {},
                user_attrs=attrs))
            hashes.append(h)
        return hashes

    def pending(self, fidelity: str | None = None) -> list[FrozenTrial]:
        """Waiting and running trials (of ``fidelity``) that the controller enqueued."""
        trials = self.study.get_trials(deepcopy=False, states=_PENDING)
        return [t for t in trials if "genome" in t.user_attrs
                and (fidelity is None or t.user_attrs.get("fidelity") == fidelity)]

    def fail_stale(self) -> int:
        """Fail running trials whose worker stopped beating and queue them again.

        Returns:
            How many trials were failed and re-queued by this call.
        """
        if self._rdb_heartbeat:
            before = len(self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(self.study)
            after = len(self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
            return max(0, after - before)
        now = time.time()
        n = 0
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if "genome" not in t.user_attrs:
                continue
            # a re-queued copy carries its dead predecessor's stamps: the start counts too
            start = t.datetime_start.timestamp() if t.datetime_start else now
            last = max(float(t.user_attrs.get("heartbeat", 0.0)), start)
            # a dead process of this host needs no grace period; the short wait covers a take
            # in progress (RUNNING set, the taker's name not yet written over the copied one)
            dead = now - last > _TAKING_S and _dead_here(t.user_attrs.get("worker"))
            if now - last < self.grace_s and not dead:
                continue
            tid = self.storage.get_trial_id_from_study_id_trial_number(self.study_id, t.number)
            try:  # marked first: a finished trial takes no attribute
                self.storage.set_trial_user_attr(tid, "requeued", True)
                self.storage.set_trial_user_attr(tid, "reason", "worker stopped beating "
                                                 f"(no heartbeat for {now - last:.0f}s); "
                                                 "re-queued")
                if not self.storage.set_trial_state_values(tid, TrialState.FAIL):
                    continue
            except UpdateFinishedTrialError:
                continue  # another process failed (or finished) it first
            _retry_callback()(self.study, self.storage.get_trial(tid))
            log.info("trial %d: its worker stopped beating; queued again", t.number)
            n += 1
        return n

    def workers(self) -> dict[str, dict[str, Any]]:
        """The workers that announced themselves in the study, with when they were last
        seen (``seen``, seconds since the epoch)."""
        ua = self.study.user_attrs
        return {k[len("worker:"):]: v for k, v in ua.items()
                if k.startswith("worker:") and isinstance(v, dict)}

    def live_workers(self) -> int:
        """Workers seen within the grace period."""
        now = time.time()
        return sum(1 for w in self.workers().values()
                   if now - float(w.get("seen", 0)) < self.grace_s and not w.get("stopped"))

    # ---------------------------------------------------------------- worker
    def announce(self, **info: Any) -> None:
        """Say in the study that this worker is alive (``seen`` = now)."""
        self.study.set_user_attr(f"worker:{self.worker_id}", {**info, "seen": time.time()})

    def take(self, fidelities: tuple[str, ...] = FIDELITIES) -> QueuedTrial | None:
        """Take one waiting trial (finals first, then the cheapest fidelity, then the oldest),
        or None when none is waiting."""
        waiting = [t for t in self.study.get_trials(deepcopy=False,
                                                    states=(TrialState.WAITING,))
                   if "genome" in t.user_attrs and t.user_attrs.get("fidelity") in fidelities]
        waiting.sort(key=lambda t: (_TAKE_ORDER.get(str(t.user_attrs.get("fidelity")), 9),
                                    t.number))
        for t in waiting:
            tid = self.storage.get_trial_id_from_study_id_trial_number(self.study_id, t.number)
            try:
                if not self.storage.set_trial_state_values(tid, TrialState.RUNNING):
                    continue  # another worker took it
            except UpdateFinishedTrialError:
                continue
            ua = t.user_attrs
            self.storage.set_trial_user_attr(tid, "worker", self.worker_id)
            return QueuedTrial(t.number, tid, genome_from_hex(ua["genome"]), str(ua["fidelity"]),
                        bool(ua.get("with_test", False)), dict(ua))
        return None

    @contextmanager
    def beating(self, task: QueuedTrial) -> Iterator[None]:
        """Beat the heartbeat of ``task`` while the body runs (a daemon thread)."""
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(self.heartbeat_s):
                try:
                    self._beat(task)
                except Exception as e:  # a lost connection: the next beat retries
                    log.warning("heartbeat of trial %d failed: %s", task.number, e)

        self._beat(task)
        th = threading.Thread(target=beat, daemon=True, name=f"heartbeat-{task.number}")
        th.start()
        try:
            yield
        finally:
            stop.set()
            th.join(timeout=self.heartbeat_s + 1)

    def _beat(self, task: QueuedTrial) -> None:
        if self._rdb_heartbeat:
            self.storage.record_heartbeat(task.trial_id)
        else:
            self.storage.set_trial_user_attr(task.trial_id, "heartbeat", time.time())

    def tell(self, task: QueuedTrial, result: EvalResult, costs: Mapping[str, float],
             extra: Mapping[str, Any] | None = None) -> None:
        """Record the evaluation of ``task``: result attributes, constraints, then the state
        (COMPLETE with the values, or FAIL with the reason)."""
        attrs = self.store.user_attrs(task.genome, result, costs, int(task.attrs.get("round", -1)),
                                      str(task.attrs.get("source", "worker")))
        attrs["test_accuracy"] = result.test_accuracy
        attrs["requeued"] = False  # a re-queued copy inherits its predecessor's mark
        attrs.update(extra or {})
        # "seconds" marks a told result (Store.records): written last, right before the
        # state, so a worker killed while telling leaves a trial that is not a result
        seconds = attrs.pop("seconds")
        for k, v in attrs.items():
            self.storage.set_trial_user_attr(task.trial_id, k, v)
        self.storage.set_trial_user_attr(task.trial_id, "seconds", seconds)
        if result.failed:
            self.study.tell(task.number, state=TrialState.FAIL)
            return
        values, cons = self.store.values_and_constraints(result, costs)
        trial = optuna.trial.Trial(self.study, task.trial_id)
        for k, v in cons.items():
            trial.set_constraint(k, v)
        self.study.tell(task.number, values)
