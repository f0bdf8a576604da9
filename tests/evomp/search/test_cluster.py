"""The study as the queue: one controller, several worker processes, real kills.

The PostgreSQL tests start a throw-away server on loopback (``conftest.py``); a worker and
then the controller are killed with SIGKILL in the middle of the run.
"""

from __future__ import annotations

import collections
import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import pytest

from evomp.cli import main

FAST = {"EVOMP_HEARTBEAT_S": "1", "EVOMP_GRACE_S": "4", "PYTHONUNBUFFERED": "1"}


def _evomp(*args: str, log: Path) -> subprocess.Popen[bytes]:
    f = open(log, "ab")  # noqa: SIM115 - closed with the process
    return subprocess.Popen([sys.executable, "-m", "evomp", *args],
                            env={**os.environ, **FAST}, stdout=f, stderr=f)


def _results(study: optuna.Study) -> list[Any]:
    """Told trials (results), not queued ones nor those failed because a worker died."""
    return [t for t in study.trials if t.state.name in ("COMPLETE", "FAIL")
            and "seconds" in t.user_attrs]


def _wait(cond: Any, timeout: float, what: str, procs: list[subprocess.Popen[bytes]]) -> Any:
    end = time.time() + timeout
    while time.time() < end:
        got = cond()
        if got:
            return got
        for p in procs:
            assert p.poll() in (None, 0), f"a process died while waiting for {what}"
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _check_complete(study: optuna.Study, budget: int, run_dir: Path) -> None:
    states = collections.Counter(t.state.name for t in study.trials)
    assert states["RUNNING"] == 0 and states["WAITING"] == 0, states  # nothing left behind
    res = _results(study)
    keys = collections.Counter((t.user_attrs["genome_hash"], t.user_attrs["fidelity"])
                               for t in res)
    assert max(keys.values()) == 1, "a genome was recorded twice at one fidelity"
    assert sum(1 for k in keys if k[1] == "short") == budget  # the budget is reached
    queued = {(t.user_attrs["genome_hash"], t.user_attrs["fidelity"]) for t in study.trials
              if "genome" in t.user_attrs}
    assert queued == set(keys), "an enqueued genome was never evaluated"
    with (run_dir / "front.csv").open() as f:
        front = list(csv.DictReader(f))
    assert front and all(r["test_accuracy"] for r in front)  # the front is verified


@pytest.mark.slow
@pytest.mark.postgres
def test_controller_and_three_workers_survive_sigkills(
        tiny_runs: Any, tiny_tmp: Path, postgres_url: str) -> None:
    """SIGKILL one worker in the middle of a trial, then the controller; restart the
    controller: every enqueued genome is evaluated exactly once, the dead worker's trial
    by another worker, the budget is reached and the front verified."""
    budget = 8
    spec = tiny_runs.spec(tiny_tmp, budget=budget, initial=4, per_round=2, steps=60,
                          final_max=2, search='mode = "async"')
    run_dir = tiny_runs.out(tiny_tmp, "c")
    logs = tiny_tmp / "logs"
    logs.mkdir()
    ctl = _evomp("run", str(spec), "--storage", postgres_url, "--out", str(run_dir),
                 "--jobs", "0", "--quiet", "--no-reference", log=logs / "controller.log")
    workers = [_evomp("worker", str(spec), "--storage", postgres_url, "--out",
                      str(tiny_tmp / f"w{i}"), "--threads", "1", "--quiet",
                      log=logs / f"w{i}.log") for i in range(3)]
    try:
        study = _wait(lambda: _load(postgres_url), 120, "the study", [ctl])
        # a worker in the middle of a trial: kill it
        running = _wait(lambda: [t for t in study.trials if t.state.name == "RUNNING"
                                 and "worker" in t.user_attrs], 180, "a running trial",
                        [ctl, *workers])
        victim_trial = running[0]
        pid = int(victim_trial.user_attrs["worker"].rpartition(":")[2])
        victim = next(w for w in workers if w.pid == pid)
        os.kill(pid, signal.SIGKILL)
        victim.wait()
        # then the controller, once a few results landed
        _wait(lambda: len(_results(study)) >= 3, 240, "three results", [ctl])
        ctl.send_signal(signal.SIGKILL)
        ctl.wait()
        ctl = _evomp("run", str(spec), "--storage", postgres_url, "--out", str(run_dir),
                     "--jobs", "0", "--quiet", "--no-reference",
                     log=logs / "controller2.log")
        assert ctl.wait(timeout=480) == 0, (logs / "controller2.log").read_text()[-3000:]
        for i, w in enumerate(workers):
            if w is not victim:
                assert w.wait(timeout=60) == 0, \
                    (logs / f"w{i}.log").read_text()[-3000:]  # ends when the study is done
    finally:
        for p in [ctl, *workers]:
            if p.poll() is None:
                p.kill()
    study = _load(postgres_url)
    _check_complete(study, budget, run_dir)
    h = victim_trial.user_attrs["genome_hash"]
    fid = victim_trial.user_attrs["fidelity"]
    again = [t for t in _results(study) if t.user_attrs["genome_hash"] == h
             and t.user_attrs["fidelity"] == fid]
    assert len(again) == 1 and again[0].user_attrs["worker"] != victim_trial.user_attrs["worker"]
    stale = study.trials[victim_trial.number]
    assert stale.state.name == "FAIL" and "seconds" not in stale.user_attrs  # not a result
    retried = [t for t in study.trials
               if t.system_attrs.get("failed_trial") == victim_trial.number]
    assert retried  # Optuna's heartbeat failed it and its retry callback queued it again
    shas = {t.user_attrs["float_sha256"] for t in _results(study)}
    assert len(shas) == 1  # every result scored against the same float weights


def _load(url: str) -> optuna.Study | None:
    try:
        return optuna.load_study(study_name="tiny", storage=url)
    except KeyError:
        return None


def test_local_workers_share_the_journal_and_match_rounds(tiny_runs: Any, tiny_tmp: Path
                                                          ) -> None:
    """``--jobs 2`` runs two 'evomp worker' processes on the journal file; in rounds mode
    the front is the one the controller alone finds."""
    spec = tiny_runs.spec(tiny_tmp, budget=6, initial=4, per_round=2, final_max=2)
    a, b = tiny_runs.out(tiny_tmp, "a"), tiny_runs.out(tiny_tmp, "b")
    assert main(["run", str(spec), "--out", str(a), "--quiet", "--no-reference"]) == 0
    assert main(["run", str(spec), "--out", str(b), "--quiet", "--no-reference",
                 "--jobs", "2"]) == 0
    fa, fb = (list(csv.DictReader((d / "front.csv").open())) for d in (a, b))
    assert fa == fb
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    study = optuna.load_study(study_name="tiny", storage=JournalStorage(
        JournalFileBackend(str(b / "study.journal"))))
    who = {t.user_attrs["worker"] for t in _results(study)}
    assert len(who) == 2 and str(os.getpid()) not in {w.rpartition(":")[2] for w in who}
    _check_complete(study, 6, b)


def test_one_job_in_async_mode_evaluates_in_a_worker_process(tiny_runs: Any, tiny_tmp: Path
                                                              ) -> None:
    """``--jobs 1 --mode async``: one 'evomp worker' process evaluates every trial, so the
    controller's refits overlap its evaluations (in rounds mode the controller evaluates)."""
    spec = tiny_runs.spec(tiny_tmp, budget=5, initial=4, per_round=2, final_max=1)
    b = tiny_runs.out(tiny_tmp, "b")
    assert main(["run", str(spec), "--out", str(b), "--quiet", "--no-reference",
                 "--jobs", "1", "--mode", "async"]) == 0
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    study = optuna.load_study(study_name="tiny", storage=JournalStorage(
        JournalFileBackend(str(b / "study.journal"))))
    who = {t.user_attrs["worker"] for t in _results(study)}
    assert len(who) == 1 and str(os.getpid()) not in {w.rpartition(":")[2] for w in who}
    _check_complete(study, 5, b)


def test_a_worker_with_other_float_weights_refuses(tiny_runs: Any, tiny_tmp: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    spec = tiny_runs.spec(tiny_tmp, budget=4, initial=4, final_max=1)
    run_dir = tiny_runs.out(tiny_tmp, "r")
    assert main(["run", str(spec), "--out", str(run_dir), "--quiet", "--no-reference"]) == 0
    capsys.readouterr()
    # the study's own weights: accepted (nothing is queued, so it leaves at once)
    assert main(["worker", "--run-dir", str(run_dir), "--out", str(tiny_tmp / "ok"),
                 "--idle-exit", "0", "--quiet"]) == 0
    state = torch.load(run_dir / "float.pt", weights_only=True)
    sd = state["state_dict"]
    k = next(k for k, v in sd.items() if v.dtype.is_floating_point)
    sd[k] = sd[k] + 1e-3
    other = tiny_tmp / "other.pt"
    torch.save(state, other)
    assert main(["worker", "--run-dir", str(run_dir), "--out", str(tiny_tmp / "no"),
                 "--float", str(other), "--idle-exit", "0"]) == 2
    err = capsys.readouterr().err
    assert "other float weights" in err and "refuses" in err


def test_dask_cluster_starts_the_workers(tiny_runs: Any, tiny_tmp: Path) -> None:
    distributed = pytest.importorskip("distributed")
    spec = tiny_runs.spec(tiny_tmp, budget=5, initial=4, per_round=1, final_max=1)
    run_dir = tiny_runs.out(tiny_tmp, "d")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        assert main(["run", str(spec), "--out", str(run_dir), "--quiet", "--no-reference",
                     "--jobs", "2", "--scheduler", cluster.scheduler_address]) == 0
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    study = optuna.load_study(study_name="tiny", storage=JournalStorage(
        JournalFileBackend(str(run_dir / "study.journal"))))
    pids = {t.user_attrs["worker"].rpartition(":")[2] for t in _results(study)}
    assert str(os.getpid()) not in pids  # evaluated in the dask workers' processes
    _check_complete(study, 5, run_dir)


@pytest.mark.postgres
def test_the_controller_rides_out_a_database_restart(
        tiny_runs: Any, tiny_tmp: Path, pg_server: Any) -> None:
    """The real server is stopped under the controller's feet once results have landed
    and started again 2 s later: the controller waits it out and goes on from the study
    (the budget is reached, nothing is recorded twice, the front is verified)."""
    import threading

    from evomp.run import load_spec, open_run
    from evomp.search import Search, SearchOptions

    url = pg_server()
    stop, restart = pg_server.control[url]
    budget = 6
    spec = load_spec(tiny_runs.spec(tiny_tmp, budget=budget, initial=4, per_round=2,
                                    steps=5, final_max=1))
    run_dir = tiny_runs.out(tiny_tmp, "lost")
    ctx = open_run(spec, run_dir, 1)
    try:
        search = Search.from_context(ctx, SearchOptions(mode="rounds"), storage=url)
        real = search._round
        cut: list[float] = []

        def round_with_a_cut(round_: int) -> int:
            if not cut:  # the initial design has landed: the server goes away
                cut.append(time.time())
                stop()
                threading.Timer(2.0, restart).start()
            return real(round_)

        search._round = round_with_a_cut  # type: ignore[method-assign]
        search.run()
    finally:
        ctx.close()
    assert cut and time.time() - cut[0] > 2.0
    _check_complete(optuna.load_study(study_name="tiny", storage=url), budget, run_dir)
