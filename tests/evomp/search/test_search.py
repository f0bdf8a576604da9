"""End-to-end search tests on the session's tiny spec (``tests/conftest.py``):
reproducibility, resume after SIGKILL, the time limit, a database run."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest

from evomp.cli import main
from evomp.evaluation._parallel import evaluate_parallel
from evomp.run._context import open_run
from evomp.run._spec import load_spec


def _spec(tiny_runs: Any, tmp: Path, engine: str = "pymoo", budget: int = 10,
          objectives: tuple[str, ...] = ("accuracy", "memory_bytes")) -> Path:
    """The session's tiny spec (``tests/conftest.py``) with this engine, budget and objectives."""
    return tiny_runs.spec(tmp, engine=engine, budget=budget, objectives=list(objectives))


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def _study(run_dir: Path) -> optuna.Study:
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    storage = JournalStorage(JournalFileBackend(str(run_dir / "study.journal")))
    return optuna.load_study(study_name="tiny", storage=storage)


@pytest.mark.slow  # over ~10 s on 2 cores even from the session's float model
def test_seeded_run_is_reproducible_and_complete(tiny_runs: Any, tiny_tmp: Path, capsys) -> None:
    spec = _spec(tiny_runs, tiny_tmp)
    a, b = tiny_runs.out(tiny_tmp, "a"), tiny_runs.out(tiny_tmp, "b")
    assert main(["run", str(spec), "--out", str(a), "--quiet"]) == 0
    # the same run with two parallel workers: results arrive in another order, the search
    # must not care (its training data is ordered canonically)
    assert main(["run", str(spec), "--out", str(b), "--quiet", "--jobs", "2"]) == 0
    for name in ("front.csv", "front.json", "evaluations.csv", "surrogate_quality.csv",
                 "spec.toml", "run.json", "study.journal", "sensitivity.npz"):
        assert (a / name).is_file(), name
    ea, eb = _rows(a / "evaluations.csv"), _rows(b / "evaluations.csv")
    assert sorted((r["genome_hash"], r["val_accuracy"]) for r in ea) == \
        sorted((r["genome_hash"], r["val_accuracy"]) for r in eb)
    assert _rows(a / "front.csv") == _rows(b / "front.csv")
    short = [r for r in ea if r["fidelity"] == "short"]
    assert len(short) == 10 and len({r["genome_hash"] for r in short}) == 10
    front = _rows(a / "front.csv")
    assert front and all(r["test_accuracy"] for r in front)
    members = json.loads((a / "front.json").read_text())
    assert set(members) == {r["id"] for r in front}
    assert main(["status", str(a)]) == 0
    out = capsys.readouterr().out
    assert "true evaluations: 10" in out
    # the pooled rank quality, with how many candidates its frontier figure is over
    assert re.search(r"pooled out-of-sample over \d+ round candidates: .* \(over \d+\)", out)
    # running again resumes: nothing is trained again, the front is the same
    assert main(["run", str(spec), "--out", str(a), "--quiet"]) == 0
    assert len([t for t in _study(a).trials if t.user_attrs.get("fidelity") == "short"]) == 10


@pytest.mark.slow  # over ~10 s on 2 cores even from the session's float model
def test_optuna_engine_run(tiny_runs: Any, tiny_tmp: Path) -> None:
    """The Optuna engine with a latency objective: compact trials, Free Bits-refined rounds."""
    from evomp.engines._refine import latency_refiner
    from evomp.objectives._objectives import Objectives
    from evomp.space._genome import genome_from_hex

    spec = _spec(tiny_runs, tiny_tmp, "optuna", budget=8, objectives=("accuracy", "latency_cycles"))
    assert main(["run", str(spec), "--out", str(tiny_runs.out(tiny_tmp, "o")), "--sampler", "tpe",
                 "--quiet"]) == 0
    st = _study(tiny_tmp / "o")
    done = [t for t in st.trials if t.state.name == "COMPLETE"
            and t.user_attrs["fidelity"] == "short"]
    assert len(done) == 8
    assert all("genome" in t.user_attrs for t in done)
    assert sum(bool(t.params) for t in done) >= 6  # compact params (a repaired one has none)
    assert max(len(t.params) for t in done) < 40  # compact, not one param per channel
    ctx = open_run(load_spec(spec), tiny_tmp / "o", 1)
    s = ctx.spec.search
    refine = latency_refiner(ctx.space.table, Objectives(ctx.space.table, s.objectives,
                                                         s.constraints, s.hardware))
    rounds = np.stack([genome_from_hex(t.user_attrs["genome"]) for t in done
                       if t.user_attrs["source"] == "round"])
    assert refine is not None
    np.testing.assert_array_equal(refine.apply(rounds), rounds)  # round candidates are refined


def _python() -> list[str]:
    return [sys.executable, "-m", "evomp"]


def _short_lines(run_dir: Path) -> list[str]:
    p = run_dir / "evaluations.jsonl"
    if not p.is_file():
        return []
    return [json.loads(ln)["genome_hash"] for ln in p.read_text().splitlines()
            if ln.strip() and json.loads(ln)["fidelity"] == "short"]


def _results(study: optuna.Study) -> list[Any]:
    """Told trials (results), not queued ones nor those failed because a worker died."""
    return [t for t in study.trials if t.state.name in ("COMPLETE", "FAIL")
            and "seconds" in t.user_attrs]


@pytest.mark.slow  # over ~10 s on 2 cores even from the session's float model
def test_resume_after_sigkill(tiny_runs: Any, tiny_tmp: Path) -> None:
    spec = _spec(tiny_runs, tiny_tmp, budget=12)
    # the session's float model and profile: the killed process gets to evaluations quickly
    run_dir = tiny_runs.out(tiny_tmp, "k")
    open_run(load_spec(spec), run_dir, 1)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(_python() + ["run", str(spec), "--out", str(run_dir), "--quiet"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    n_before = 0
    deadline = time.time() + 240
    try:  # kill in the middle of the initial design (6 evaluations), not between batches
        while time.time() < deadline:
            time.sleep(0.1)
            if (run_dir / "study.journal").is_file():
                try:
                    n_before = len(_results(_study(run_dir)))
                except Exception:
                    n_before = 0
                if n_before >= 2:
                    break
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert n_before >= 2, "the run did not record evaluations in time"
    before = {t.user_attrs["genome_hash"] for t in _results(_study(run_dir))}
    assert len(before) < 6, "killed too late to test a kill inside a batch"
    finished = set(_short_lines(run_dir))  # every evaluation that completed before the kill
    assert before <= finished and len(finished - before) <= 1  # at most the one in flight
    assert main(["run", str(spec), "--out", str(run_dir), "--quiet"]) == 0
    hashes = [t.user_attrs["genome_hash"] for t in _results(_study(run_dir))
              if t.user_attrs.get("fidelity") == "short"]
    assert len(hashes) == 12 and len(set(hashes)) == 12  # nothing lost, nothing recorded twice
    assert not [t for t in _study(run_dir).trials if t.state.name in ("RUNNING", "WAITING")]
    assert before <= set(hashes)
    trained = _short_lines(run_dir)
    assert len(trained) == len(set(trained)) == 12  # no completed evaluation trained again
    assert (run_dir / "front.csv").is_file()
    # the final QATs are cached too: running the finished spec again trains nothing
    n_lines = len((run_dir / "evaluations.jsonl").read_text().splitlines())
    front = _rows(run_dir / "front.csv")
    assert main(["run", str(spec), "--out", str(run_dir), "--quiet"]) == 0
    assert len((run_dir / "evaluations.jsonl").read_text().splitlines()) == n_lines
    assert _rows(run_dir / "front.csv") == front


def test_infeasible_never_on_the_front_and_none_feasible_is_said(
        tiny_runs: Any, tiny_tmp: Path, capsys) -> None:
    from evomp.cli._baseline import print_front
    from evomp.objectives._objectives import Objectives
    from evomp.run._protocol import CpuClock, finish_run

    ctx = open_run(load_spec(_spec(tiny_runs, tiny_tmp)), tiny_tmp / "c", 1)
    G = np.concatenate([ctx.space.uniform(w, 8) for w in (8, 4, 2)])
    t = ctx.space.table
    mem = Objectives(t, ["accuracy", "memory_bytes"], hardware=["memory"]).costs(G)[
        "memory_bytes"]
    bound = float(np.sort(mem)[1])  # the 2- and 4-bit ones fit, the 8-bit one does not
    obj = Objectives(t, ["accuracy", "memory_bytes"], [f"memory_bytes <= {bound}"], ["memory"])
    front = finish_run(ctx, obj, G, method="t", clock=CpuClock())
    assert front.feasible and front.rows
    assert all(r["memory_bytes"] <= bound for r in front.rows)  # infeasible never on it
    # nothing feasible: the run says so and shows the least infeasible ones
    obj = Objectives(t, ["accuracy", "memory_bytes"], ["memory_bytes <= 1"], ["memory"])
    front = finish_run(ctx, obj, G, method="t", clock=CpuClock())
    assert not front.feasible
    assert [r["memory_bytes"] for r in front.rows] == sorted(mem)  # least infeasible first
    assert all(r["violation"] > 0 for r in front.rows)
    meta = json.loads((tiny_tmp / "c" / "run.json").read_text())
    assert meta["feasible"] is False and "no feasible configuration" in meta["status"]
    print_front(front.rows, obj.hw_metrics, front.feasible)
    assert "no feasible configuration; the least infeasible ones" in capsys.readouterr().out


def test_status_of_a_database_run(tiny_runs: Any, tiny_tmp: Path, capsys) -> None:
    """`evomp status` reads a run whose study lives in a database (here SQLite), from the
    URL its storage.txt records; a password in a URL is never written down."""
    from evomp.run import mask_url

    spec = _spec(tiny_runs, tiny_tmp, budget=7)
    url = f"sqlite:///{tiny_tmp / 'study.db'}"
    run_dir = tiny_runs.out(tiny_tmp, "db")
    assert main(["run", str(spec), "--out", str(run_dir), "--storage", url, "--quiet"]) == 0
    assert not (run_dir / "study.journal").exists()
    capsys.readouterr()
    assert main(["status", str(run_dir)]) == 0
    assert "true evaluations: 7" in capsys.readouterr().out
    assert mask_url("postgresql://me:s3cret@db:5432/evomp") == "postgresql://me:***@db:5432/evomp"
    assert mask_url("postgresql://me@db/evomp") == "postgresql://me@db/evomp"


# --------------------------------------------------------------------------- time limit
def test_deadline_starts_no_new_evaluation(tiny_runs: Any, tiny_tmp: Path) -> None:
    """Past the deadline no evaluation starts (in this process or in a worker); one that
    started before it finishes and is reported."""
    ctx = open_run(load_spec(_spec(tiny_runs, tiny_tmp)), tiny_tmp / "t", 1)
    G = ctx.space.random(3, 5)
    seen: list[int] = []
    for jobs in (1, 2):
        res, _ = evaluate_parallel(ctx.evaluator, G, "short", jobs=jobs,
                                   deadline=time.time() - 1.0,
                                   on_result=lambda i, r: seen.append(i))
        assert res == [] and seen == []
    assert not any(fidelity == "short" for _, fidelity in ctx.evaluator.cache)
    deadline = time.time() + 2.0

    def slow_reader(i: int, r: object) -> None:  # the first result arrives; then time is up
        seen.append(i)
        time.sleep(max(0.0, deadline - time.time()) + 0.05)

    res, _ = evaluate_parallel(ctx.evaluator, G, "short", jobs=1, deadline=deadline,
                               on_result=slow_reader)
    assert seen == [0] and len(res) == 1 and not res[0].failed


@pytest.mark.slow  # over ~10 s on 2 cores even from the session's float model
def test_time_limit_stops_the_search_and_verifies_what_it_has(
        tiny_runs: Any, tiny_tmp: Path, capsys) -> None:
    spec = _spec(tiny_runs, tiny_tmp, budget=400)
    run_dir = tiny_runs.out(tiny_tmp, "tl")  # the float model and profile are ready
    open_run(load_spec(spec), run_dir, 1)
    spec.write_text(spec.read_text() + "time_limit_s = 8\n")
    assert main(["run", str(spec), "--out", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "time limit of 8s reached" in out
    short = [r for r in _rows(run_dir / "evaluations.csv") if r["fidelity"] == "short"]
    assert 1 <= len(short) < 400  # stopped long before the budget
    front = _rows(run_dir / "front.csv")
    assert front and all(r["test_accuracy"] for r in front)  # still verified
    # a limit that passes before any evaluation: a clear error, nothing stored is lost
    spec.write_text(spec.read_text().replace("time_limit_s = 8", "time_limit_s = 0.001"))
    fresh = tiny_tmp / "tl0"
    assert main(["run", str(spec), "--out", str(fresh), "--quiet"]) == 2
    assert "search.time_limit_s" in capsys.readouterr().err
    assert main(["run", str(spec), "--out", str(run_dir), "--quiet"]) == 0  # resumes, verifies
    assert len([r for r in _rows(run_dir / "evaluations.csv")
                if r["fidelity"] == "short"]) == len(short)
