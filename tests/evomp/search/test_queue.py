"""The study as the queue: a trial is taken by exactly one process, and a trial whose taker
died goes back to the queue (at once when the dead process was on this host, after the
grace period otherwise)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from evomp import EvompError
from evomp.engines import Proposals
from evomp.objectives._objectives import Objectives
from evomp.run import open_storage
from evomp.search import _worker
from evomp.search._queue import Queue, open_queue_storage
from evomp.search._store import Store
from hwmodels import Layer, LayerTable

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _queue(tmp_path: Path, worker: str, grace_s: float = 30.0, storage: Any = None) -> Queue:
    t = LayerTable((Layer("c1", "conv1d", 1, 4, (3,), 1, 3, 48, (1, 16), (4, 16)),
                    Layer("fc", "linear", 64, 4, (), 1, 64, 64, (64,), (4,))),
                   (0, 2, 4, 8), (2, 4, 8), "channel")
    storage = storage or open_storage(None, tmp_path)
    store = Store(storage, "q", Objectives(t, ["accuracy", "memory_bytes"]))
    return Queue(store, storage, worker_id=worker, heartbeat_s=1.0, grace_s=grace_s)


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _genomes(n: int) -> Proposals:
    return Proposals(np.arange(n * 10, dtype=np.int8).reshape(n, 10) % 4)


def test_a_trial_is_taken_once(tmp_path: Path) -> None:
    q = _queue(tmp_path, "a")
    q.enqueue(_genomes(2), "short", round_=0, source="test")
    other = Queue(q.store, q.storage, worker_id="b")
    got = [q.take(), other.take(), q.take()]
    assert got[2] is None and {got[0].number, got[1].number} == {0, 1}  # type: ignore[union-attr]
    assert [t.user_attrs["worker"] for t in q.study.trials] == ["a", "b"]


def test_the_trial_of_a_dead_local_process_is_requeued_without_the_grace_period(
        tmp_path: Path) -> None:
    dead = f"{socket.gethostname()}:{_dead_pid()}"
    q = _queue(tmp_path, dead)  # the taker: a process of this host that has exited
    q.enqueue(_genomes(1), "short", round_=0, source="test")
    assert q.take() is not None
    controller = Queue(q.store, q.storage, worker_id="controller", heartbeat_s=5.0,
                       grace_s=30.0)
    assert controller.fail_stale() == 0  # just taken: the taker may still be writing its name
    time.sleep(2.1)
    assert controller.fail_stale() == 1  # well inside the 30 s grace period and 2 heartbeats
    states = [t.state for t in q.study.trials]
    assert states == [TrialState.FAIL, TrialState.WAITING]
    assert q.study.trials[0].user_attrs["requeued"] is True


def test_the_trial_of_a_live_or_remote_process_waits_for_the_grace_period(
        tmp_path: Path) -> None:
    me = f"{socket.gethostname()}:{os.getpid()}"
    for taker in (me, f"elsewhere:{_dead_pid()}"):  # alive here / unknown host
        q = _queue(tmp_path / taker.replace(":", "_"), taker, grace_s=3.0)
        q.enqueue(_genomes(1), "short", round_=0, source="test")
        assert q.take() is not None
        time.sleep(2.1)
        assert q.fail_stale() == 0, taker  # silent for 2 s, but nothing says it died
        time.sleep(1.0)
        assert q.fail_stale() == 1, taker  # past the grace period


@pytest.mark.postgres
def test_a_worker_rides_out_a_database_restart_and_gives_up_on_a_lost_one(
        pg_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real server is stopped under the worker's feet: a take retried with backoff
    gets its trial once the server is back; a server that stays away ends in one line."""
    url = pg_server()
    stop, restart = pg_server.control[url]
    q = _queue(tmp_path, "w", storage=open_queue_storage(url))
    q.enqueue(_genomes(2), "short", round_=0, source="test")
    stop()
    back = threading.Timer(2.0, restart)
    back.start()
    try:
        task = _worker._retrying("taking a trial", lambda: q.take())
    finally:
        back.join()
    assert task is not None and task.number == 0
    assert q.study.trials[0].state == TrialState.RUNNING
    stop()
    monkeypatch.setattr(_worker, "BACKOFF_S", (0.1, 0.1))
    with pytest.raises(EvompError, match="lost the study's database while taking a trial "
                       r"\(OperationalError\); gave up after 2 retries: this worker exits"):
        _worker._retrying("taking a trial", lambda: q.take())
