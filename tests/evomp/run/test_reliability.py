"""A run directory survives what the field throws at it (issue 16): a file-size limit in the
middle of the journal, a torn journal tail, two owners, damaged or half-made directories,
bad input found before anything is written, damaged fronts, read-only outputs, and a
database password that is never written down but still found (PGPASSWORD).

Real processes, real rlimits, real file systems; the tiny spec and the session's pretrained
float model and profile come from ``tests/conftest.py`` (``tiny_runs``)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import pytest

from evomp import EvompError, RunDir
from evomp.cli import main
from evomp.run import load_run_study, load_spec, open_run

optuna.logging.set_verbosity(optuna.logging.WARNING)

#: a few trials, two of them in one round, two final QATs: seconds, not minutes
FAST = {"steps": 10, "final_steps": 20, "budget": 6, "initial": 4, "per_round": 2,
        "generations": 2, "population": 8, "final_max": 2}


def _cli(args: list[str], limit: int | None = None, timeout: float = 240
         ) -> subprocess.CompletedProcess[str]:
    """``python -m evomp ARGS`` in a fresh process, under a real file-size limit (bytes)."""
    import resource

    def pre() -> None:
        if limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run([sys.executable, "-m", "evomp", *args], preexec_fn=pre,
                          capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, PYTHONUNBUFFERED="1"))


def _complete(run_dir: Path) -> dict[str, tuple[float, ...]]:
    """``{genome_hash: values}`` of the complete short-QAT trials the run's record holds."""
    study = load_run_study(run_dir)
    assert study is not None
    return {t.user_attrs["genome_hash"]: tuple(t.values) for t in study.trials
            if t.state.name == "COMPLETE" and t.user_attrs.get("fidelity") == "short"}


def _snapshot(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("evomp: error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture(scope="module")
def finished(tiny_runs: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``(spec, run directory)`` of one finished fast run (copied by the tests that damage
    it)."""
    where = tmp_path_factory.mktemp("finished")
    spec = tiny_runs.spec(where, **FAST)
    out = tiny_runs.out(where, "done")
    assert main(["run", str(spec), "--out", str(out), "--quiet"]) == 0
    return spec, out


def _copy(finished: tuple[Path, Path], to: Path) -> Path:
    dest = to / "copy"
    shutil.copytree(finished[1], dest, symlinks=True)
    (dest.parent / ".cache").symlink_to(finished[1].parent / ".cache", target_is_directory=True)
    return dest


# ------------------------------------------------------------------ full disk, torn tail
def test_file_size_limit_mid_journal_then_resume(finished: tuple[Path, Path],
                                                 tmp_path: Path) -> None:
    """The run hits ``ulimit -f`` while it appends to its record: one clear line, the record
    up to the last complete trial readable, and a fresh process completes the run.

    It starts from a finished run (its float model, profile and artifacts, all larger than
    the limit, are in place) whose budget is raised, so the journal is the file that grows
    past the limit."""
    spec, _ = finished
    out = _copy(finished, tmp_path)
    rd = RunDir(out)
    size = rd.journal.stat().st_size
    limit = size + int(1.5 * size / len(_complete(out)))  # room for one more trial, not two
    budget = str(FAST["budget"] + FAST["per_round"])  # one more round
    first = _cli(["run", str(spec), "--out", str(out), "--quiet", "--budget", budget],
                 limit=limit)
    assert first.returncode == 2, first.stderr
    lines = first.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in first.stderr, first.stderr
    assert lines[0] == (
        f"evomp: error: the file-size limit (ulimit -f) was reached while writing {rd.journal}; "
        "raise the limit and run the same command again: nothing recorded is lost")
    journal = rd.journal.read_bytes()
    assert journal.endswith(b"\n") and len(journal) <= limit
    for line in journal.splitlines():
        json.loads(line)  # every record whole: the failed append was undone
    before = _complete(out)
    assert FAST["budget"] < len(before) < int(budget)  # it got some way, then stopped
    # the same command again, without the limit (in this process: the second start costs
    # no interpreter and torch import)
    assert main(["run", str(spec), "--out", str(out), "--quiet", "--budget", budget]) == 0
    after = _complete(out)
    assert {h: after[h] for h in before} == before  # nothing recorded was lost or redone
    assert len(after) == int(budget)  # the search reached its budget (the cut trial redone)
    assert rd.read_front()[0]


def test_a_torn_journal_tail_is_set_aside_and_the_run_completes(
        finished: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec, _ = finished
    out = _copy(finished, tmp_path)
    rd = RunDir(out)
    whole = rd.journal.read_bytes()
    before = _complete(out)
    rd.journal.write_bytes(whole[:-25])  # killed in the middle of writing the last record
    torn = len(whole) - 25 - (whole[:-25].rfind(b"\n") + 1)
    capsys.readouterr()
    assert main(["status", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"{torn} bytes set aside in {rd.journal_torn}" in err
    assert rd.journal_torn.read_bytes().rstrip(b"\n") == whole[-25 - torn:-25]
    assert main(["run", str(spec), "--out", str(out), "--quiet", "--budget", "8"]) == 0
    after = _complete(out)
    assert len(after) == 8
    lost = set(before) - set(after)
    assert len(lost) <= 1  # at most the torn record's trial, evaluated again
    assert all(after[h] == v for h, v in before.items() if h in after)
    for line in rd.journal.read_bytes().splitlines():
        json.loads(line)


# --------------------------------------------------------------------------- two owners
def test_a_second_run_on_the_same_directory_is_refused(
        tiny_runs: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The owner is a real ``evomp run`` process; the second start is made in this process
    (another process all the same, as far as the lock goes)."""
    spec = tiny_runs.spec(tmp_path, **{**FAST, "budget": 400})
    out = tiny_runs.out(tmp_path, "shared")
    lock = RunDir(out).lock
    owner = subprocess.Popen([sys.executable, "-m", "evomp", "run", str(spec), "--out",
                              str(out), "--quiet"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 180
        journal = RunDir(out).journal
        while not (lock.is_file() and lock.read_text().split()[1:] == [str(owner.pid)]
                   and journal.is_file()):  # the owner holds the lock and has started
            assert owner.poll() is None and time.time() < deadline
            time.sleep(0.1)
        size = journal.stat().st_size
        capsys.readouterr()
        second = main(["run", str(spec), "--out", str(out), "--quiet"])
        line = _one_error_line(capsys)
        assert owner.poll() is None  # the owner ran all along
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait()
    assert second == 2
    assert line == (
        f"evomp: error: {out} is in use by another evomp run (host {socket.gethostname()}, "
        f"pid {owner.pid}); wait for it to finish or stop it, or pass --out to run elsewhere "
        "(nothing was changed)")
    assert journal.stat().st_size >= size  # the owner's record, untouched by the refusal
    RunDir(out).acquire().release()  # the killed owner's lock went with it


# ---------------------------------------------------------------- damaged, half-made dirs
@pytest.mark.parametrize("saved", [b"", b"name = [not toml", b"\xff\xfe\x00binary"])
def test_a_damaged_saved_spec_is_refused(finished: tuple[Path, Path], tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str], saved: bytes
                                         ) -> None:
    spec, _ = finished
    out = _copy(finished, tmp_path)
    RunDir(out).spec.write_bytes(saved)
    before = _snapshot(out)
    assert main(["run", str(spec), "--out", str(out), "--quiet"]) == 2
    line = _one_error_line(capsys)
    assert f"{RunDir(out).spec} is damaged" in line
    assert "no longer says which settings made the evaluations" in line
    assert _snapshot(out) == before  # no spec.toml rewrite, no journal append


@pytest.mark.parametrize("change, match", [
    ({"name": "renamed"}, "holds the run 'tiny'; a spec named 'renamed' would start a second "
                          "study in its record: set name = 'tiny' to resume it"),
    ({"objectives": ["accuracy", "mpic_cycles"]},
     "holds a run with objectives \\['accuracy', 'memory_bytes'\\], not \\['accuracy', "
     "'mpic_cycles'\\]"),
    ({"steps": 11}, "holds a run made with other qat settings"),
])
def test_another_run_is_refused_and_writes_nothing(
        tiny_runs: Any, finished: tuple[Path, Path], tmp_path: Path,
        capsys: pytest.CaptureFixture[str], change: dict[str, Any], match: str) -> None:
    out = _copy(finished, tmp_path)
    other = tiny_runs.spec(tmp_path, file="other.toml", **{**FAST, **change})
    before = _snapshot(out)
    assert main(["run", str(other), "--out", str(out), "--quiet"]) == 2
    line = _one_error_line(capsys)
    assert re.search(match, line), line
    assert line.endswith("pass --out to write this run elsewhere (nothing was changed)")
    assert _snapshot(out) == before


@pytest.mark.parametrize("extra, match", [
    ({"extra": "[space]\npin = { nope = 8 }\n"}, "nope"),
    ({"extra": "[space]\nexclude = [\"nope\"]\n"}, "nope"),
    ({"extra": "[hw.pulp]\nnokey = 3\n"}, "nokey"),
])
def test_bad_values_are_found_before_anything_is_written(
        tiny_runs: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        extra: dict[str, str], match: str) -> None:
    spec = tiny_runs.spec(tiny_runs.share(tmp_path), **FAST, **extra)
    out = tmp_path / "never"
    assert main(["run", str(spec), "--out", str(out), "--quiet"]) == 2
    assert match in _one_error_line(capsys)
    assert not out.exists()


@pytest.mark.parametrize("url", ["not-a-url", "postgresql://me@db:notaport/evomp",
                                 "nosuchdialect://me@db/evomp"])
def test_a_malformed_storage_url_is_found_before_anything_is_written(
        tiny_runs: Any, tmp_path: Path, url: str) -> None:
    spec = load_spec(tiny_runs.spec(tiny_runs.share(tmp_path), **FAST))
    out = tmp_path / "never"
    with pytest.raises(EvompError, match="--storage"):
        open_run(spec, out, 1, storage=url)
    assert not out.exists()


# ------------------------------------------------------------------------ damaged fronts
def _tear_csv(rd: RunDir) -> None:
    rd.front_csv.write_bytes(rd.front_csv.read_bytes()[:-7])


def _short_row(rd: RunDir) -> None:
    rows = rd.front_csv.read_text().splitlines()
    rd.front_csv.write_text("\n".join(rows[:-1] + [rows[-1].split(",", 2)[0] + ",0.5"]) + "\n")


def _bad_json(rd: RunDir) -> None:
    rd.front_json.write_bytes(rd.front_json.read_bytes()[:40])


def _lacking_id(rd: RunDir) -> None:
    members = json.loads(rd.front_json.read_text())
    members.pop(sorted(members)[-1])
    rd.front_json.write_text(json.dumps(members))


@pytest.mark.parametrize("damage, match", [
    (_tear_csv, "front.csv is damaged: its last row is truncated"),
    (_short_row, "front.csv is damaged: row "),
    (_bad_json, "front.json is damaged (not valid JSON"),
    (_lacking_id, "that front.csv lists: the run directory is inconsistent"),
])
def test_a_damaged_front_is_one_line_for_every_reader(
        finished: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
        damage: Any, match: str) -> None:
    out = _copy(finished, tmp_path)
    rd = RunDir(out)
    damage(rd)
    before = _snapshot(out)
    for args in (["report", str(out)], ["export", str(out), "--pick", "p0", "--out",
                                        str(tmp_path / "exp")],
                 ["compare", str(out), str(finished[1]), "--out", str(tmp_path)]):
        assert main(args) == 2, args
        line = _one_error_line(capsys)
        assert match in line, (args, line)
    assert _snapshot(out) == before
    assert not (tmp_path / "exp").exists() and not (tmp_path / "compare.png").exists()
    assert main(["status", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "front:            unreadable: " in shown and match in shown


# ----------------------------------------------------------------------- read-only places
@pytest.fixture
def read_only(tmp_path: Path, finished: tuple[Path, Path]):  # type: ignore[no-untyped-def]
    """A read-only file system (a tmpfs remounted read-only: read-only even for root)
    holding a copy of the finished run, where this machine lets a test mount one."""
    mnt = tmp_path / "ro"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        shutil.copytree(finished[1], mnt / "run", symlinks=True)
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def test_read_only_outputs_are_one_line(read_only: Path, finished: tuple[Path, Path],
                                        capsys: pytest.CaptureFixture[str]) -> None:
    run = read_only / "run"
    before = _snapshot(run)
    assert main(["report", str(run)]) == 2
    assert _one_error_line(capsys) == (
        f"evomp: error: cannot write the report into {run / 'report'}: Read-only file system; "
        "pass --out to write it elsewhere (nothing was changed)")
    assert main(["report", str(finished[1]), "--out", str(read_only / "rep")]) == 2
    assert "cannot write the report into" in _one_error_line(capsys)
    assert main(["export", str(finished[1]), "--pick", "p0", "--out",
                 str(read_only / "exp")]) == 2
    assert _one_error_line(capsys) == (
        f"evomp: error: cannot write {read_only / 'exp'}: Read-only file system (a read-only "
        "directory or file system?); choose a writable place (nothing was changed)")
    assert main(["compare", str(finished[1]), "--out", str(read_only)]) == 2
    assert f"cannot write {read_only / 'compare.png'}" in _one_error_line(capsys)
    assert main(["run", str(finished[0]), "--out", str(read_only / "new"), "--quiet"]) == 2
    assert f"cannot write {read_only / 'new'}" in _one_error_line(capsys)
    assert _snapshot(run) == before


# ------------------------------------------------------------------ evaluations.jsonl tail
def test_evaluations_jsonl_tolerates_a_torn_line_and_reports_a_failed_append(
        tmp_path: Path) -> None:
    import resource

    from evomp.evaluation._evaluator import _append_line

    p = tmp_path / "evaluations.jsonl"
    p.write_text('{"a": 1}\n{"a": 2, "b')  # a crash in the middle of a line
    _append_line(p, '{"a": 3}')
    assert p.read_text().splitlines()[-1] == '{"a": 3}'  # on a line of its own
    size = p.stat().st_size
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size + 10, hard))
    try:
        with pytest.raises(OSError) as e:
            _append_line(p, json.dumps({"x": "y" * 100}))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old)
    assert e.value.filename == str(p)
    assert p.stat().st_size == size  # the torn part was cut back off
    from evomp.run import os_error

    assert str(os_error(e.value)).startswith(
        f"the file-size limit (ulimit -f) was reached while writing {p}")


# ---------------------------------------------------------------- PGPASSWORD, ~/.pgpass
@pytest.fixture
def pg_with_password(pg_server: Any) -> tuple[str, str]:
    """``(url with password, password)`` of a PostgreSQL server on loopback that asks for a
    password (scram-sha-256)."""
    password = "p#ss/w?rd@x"
    return pg_server(password), password


@pytest.mark.postgres
def test_a_masked_url_is_opened_with_pgpassword(
        pg_with_password: tuple[str, str], tmp_path: Path,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    url, password = pg_with_password
    study = optuna.create_study(storage=url, study_name="tiny")
    trial = study.ask()
    trial.set_user_attr("fidelity", "short")
    trial.set_user_attr("seconds", 1.0)  # a told result (status counts those)
    study.tell(trial, 0.5)
    rd = RunDir(tmp_path / "db")
    rd.write_storage_note(url, "tiny")
    rd.spec.write_text('name = "tiny"\n')
    assert password not in rd.storage_note.read_text()
    assert "postgres:***@127.0.0.1" in rd.storage_note.read_text()
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "no-pgpass"))
    assert main(["status", str(rd.path)]) == 2
    line = _one_error_line(capsys)
    assert "its password is not written down: pass --storage with the full URL, or give the " \
           "password where the database client finds it (PGPASSWORD or ~/.pgpass" in line
    assert password not in line
    monkeypatch.setenv("PGPASSWORD", password)
    assert main(["status", str(rd.path)]) == 0
    assert "true evaluations: 1" in capsys.readouterr().out
    monkeypatch.delenv("PGPASSWORD")
    assert main(["status", str(rd.path), "--storage", url]) == 0  # the full URL still works
    assert "true evaluations: 1" in capsys.readouterr().out
