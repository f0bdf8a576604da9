"""RunDir: the one owner of a run directory's files; atomic writes, clear errors when a
write fails (real file-size limits, a real full tmpfs), the owner lock across two real
processes, the front reader against damaged fronts, the journal's torn tail, and password
masking of every URL form."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest

from evomp import EvompError, RunDir
from evomp.run import atomic_write_text, mask_url, open_storage
from evomp.run._storage import repair_journal

optuna.logging.set_verbosity(optuna.logging.WARNING)

FRONT_CSV = ("id,val_accuracy,test_accuracy,ptq_accuracy,genome_hash,memory_bytes\r\n"
             "p0,0.9,0.88,,aaaa,1200\r\n"
             "p1,0.8,0.79,0.5,bbbb,800\r\n")
FRONT_JSON = {"p0": {"bits": {}, "genome_hash": "aaaa"}, "p1": {"bits": {}, "genome_hash": "bbbb"}}


@contextlib.contextmanager
def file_size_limit(limit: int) -> Iterator[None]:
    """A real file-size limit (``RLIMIT_FSIZE``, as ``ulimit -f``) on this process for the
    block, with SIGXFSZ ignored (as the CLI does), so a write past it raises EFBIG."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old)


def _front(d: Path, csv_text: str = FRONT_CSV, members: object = FRONT_JSON) -> RunDir:
    rd = RunDir(d)
    d.mkdir(parents=True, exist_ok=True)
    rd.front_csv.write_text(csv_text, newline="")
    rd.front_json.write_text(members if isinstance(members, str) else json.dumps(members))
    return rd


# ------------------------------------------------------------------------------ names
def test_every_file_has_one_name_inside_the_directory(tmp_path: Path) -> None:
    rd = RunDir(tmp_path / "r")
    names = ["spec", "space", "journal", "storage_note", "progress", "sensitivity",
             "float_model", "evaluations_jsonl", "evaluations_csv", "front_csv", "front_json",
             "run_json", "run_log", "models", "quality_csv", "pymoo_state", "artifacts", "lock",
             "report"]
    paths = [getattr(rd, n) for n in names]
    assert all(p.parent == rd.path for p in paths)
    assert len({p.name for p in paths}) == len(paths)
    assert rd.model("abc").relative_to(rd.path).as_posix() == "models/abc-final.pt"
    assert not rd.path.exists()  # naming files creates nothing


def test_progress_merges_atomically_and_a_damaged_one_is_a_clear_error(tmp_path: Path) -> None:
    rd = RunDir(tmp_path / "r")
    assert rd.read_progress() == {}
    rd.update_progress(round=1)
    rd.update_progress(cpu_seconds=2.5)
    assert rd.read_progress() == {"round": 1, "cpu_seconds": 2.5}
    assert sorted(p.name for p in rd.path.iterdir()) == ["progress.json"]  # no temp left
    rd.progress.write_text('{"round": 1, "cpu_')
    with pytest.raises(EvompError, match="progress.json is damaged.*delete it to resume"):
        rd.read_progress()


def test_storage_note_round_trip_masks_the_password(tmp_path: Path) -> None:
    rd = RunDir(tmp_path)
    rd.write_storage_note("postgresql://me:s3cr#t@db:5432/evomp", "tiny")
    assert "s3cr" not in rd.storage_note.read_text()
    assert rd.read_storage_note() == ("postgresql://me:***@db:5432/evomp", "tiny")
    rd.write_storage_note(None, "other")
    assert rd.read_storage_note() == (None, "other")
    assert str(rd.journal) in rd.storage_note.read_text()


def test_quality_rows_follow_the_header_of_a_file_begun_by_another_version(
        tmp_path: Path) -> None:
    rd = RunDir(tmp_path)
    rd.append_quality({"round": 1, "kendall_tau": 0.5, "model": "rf"})
    # a newer version adds a column and drops one: the old header stays, no row is torn
    rd.append_quality({"round": 2, "model": "gp", "pooled_n_top": 3})
    assert rd.quality_csv.read_text().splitlines()[0] == "round,kendall_tau,model"
    assert rd.read_quality() == [{"round": 1.0, "kendall_tau": 0.5, "model": "rf"},
                                 {"round": 2.0, "kendall_tau": None, "model": "gp"}]


def test_quality_header_once_and_a_torn_row_left_out(tmp_path: Path) -> None:
    rd = RunDir(tmp_path)
    assert rd.read_quality() == []
    rd.append_quality({"round": 1, "kendall_tau": 0.5, "model": "rf"})
    rd.append_quality({"round": 2, "kendall_tau": 0.75, "model": "rf"})
    with rd.quality_csv.open("a") as f:
        f.write("3,0.")  # a crash while appending
    assert rd.quality_csv.read_text().count("round") == 1
    assert rd.read_quality() == [{"round": 1.0, "kendall_tau": 0.5, "model": "rf"},
                                 {"round": 2.0, "kendall_tau": 0.75, "model": "rf"}]


# ------------------------------------------------------------------------------ front
def test_read_front_types_numbers(tmp_path: Path) -> None:
    rows, members = _front(tmp_path).read_front()
    assert rows[0] == {"id": "p0", "val_accuracy": 0.9, "test_accuracy": 0.88,
                       "ptq_accuracy": None, "genome_hash": "aaaa", "memory_bytes": 1200.0}
    assert members == FRONT_JSON
    assert _front(tmp_path).front_status() == 2


@pytest.mark.parametrize("csv_text, members, match", [
    (FRONT_CSV[:-9], FRONT_JSON, "front.csv is damaged: its last row is truncated"),
    (FRONT_CSV + "p2,0.7\r\n", FRONT_JSON, "front.csv is damaged: row 4 has 2 of 6 fields"),
    (FRONT_CSV.replace("800", "8x0"), FRONT_JSON, "row 3 holds '8x0' for memory_bytes"),
    ("", FRONT_JSON, "front.csv is damaged: it is empty"),
    (FRONT_CSV, '{"p0": {"bits"', "front.json is damaged \\(not valid JSON"),
    (FRONT_CSV, {"p0": FRONT_JSON["p0"]}, "front.json lacks p1 that front.csv lists"),
])
def test_a_damaged_front_is_one_clear_error(tmp_path: Path, csv_text: str, members: object,
                                            match: str) -> None:
    rd = _front(tmp_path, csv_text, members)
    with pytest.raises(EvompError, match=match):
        rd.read_front()
    status = rd.front_status()
    assert isinstance(status, str) and status.startswith("unreadable: ")


def test_no_front_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(EvompError, match="not a finished run directory \\(no front.csv\\)"):
        RunDir(tmp_path).read_front()
    assert RunDir(tmp_path).front_status() == "not verified yet"


# ------------------------------------------------------------------------ failed writes
def test_atomic_write_past_the_file_size_limit_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "front.json"
    target.write_text("old and whole")
    with pytest.raises(EvompError) as e, file_size_limit(4096):
        atomic_write_text(target, "x" * 100_000)
    assert str(e.value) == (f"the file-size limit (ulimit -f) was reached while writing "
                            f"{target}; raise the limit and run the same command again: "
                            "nothing recorded is lost")
    assert target.read_text() == "old and whole"
    assert [p.name for p in tmp_path.iterdir()] == ["front.json"]  # no temporary left


@pytest.fixture
def full_tmpfs(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A 64 KiB tmpfs (a real disk that fills), where this machine lets a test mount one."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
                       capture_output=True)
    if r.returncode != 0:
        pytest.skip("cannot mount a size-limited tmpfs here")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def test_disk_full_is_one_clear_error_and_the_old_file_stays(full_tmpfs: Path) -> None:
    target = full_tmpfs / "spec.toml"
    target.write_text('name = "old"\n')
    with pytest.raises(EvompError) as e:
        atomic_write_text(target, "x" * 200_000)
    assert str(e.value) == (f"no space left on device while writing {target}; free space and "
                            "run the same command again: nothing recorded is lost")
    assert target.read_text() == 'name = "old"\n'
    assert [p.name for p in full_tmpfs.iterdir()] == ["spec.toml"]


# ----------------------------------------------------------------------------- journal
def _journal_study(d: Path, n: int) -> None:
    study = optuna.create_study(storage=open_storage(None, d), study_name="s")
    study.optimize(lambda t: t.suggest_float("a", 0, 1), n_trials=n)


def _trials(d: Path) -> list[tuple[int, str, float | None]]:
    study = optuna.load_study(storage=open_storage(None, d), study_name="s")
    return [(t.number, t.state.name, t.value) for t in study.trials]


def test_a_torn_journal_tail_is_set_aside_and_the_record_goes_on(tmp_path: Path) -> None:
    _journal_study(tmp_path, 3)
    rd = RunDir(tmp_path)
    whole = rd.journal.read_bytes()
    before = _trials(tmp_path)
    assert repair_journal(rd.journal) == 0  # a whole journal is left alone
    rd.journal.write_bytes(whole[:-9])  # a crash in the middle of the last record
    cut = whole[whole.rstrip(b"\n").rfind(b"\n") + 1:]
    said: list[str] = []
    assert repair_journal(rd.journal, said.append) == len(cut) - 9
    assert f"{len(cut) - 9} bytes set aside in {rd.journal_torn}" in said[0]
    assert rd.journal_torn.read_bytes() == cut[:-9] + b"\n"
    assert rd.journal.read_bytes() == whole[:len(whole) - len(cut)]
    # the record up to the last complete one is intact and the study goes on
    after = _trials(tmp_path)
    assert after[:2] == before[:2]
    study = optuna.load_study(storage=open_storage(None, tmp_path), study_name="s")
    study.optimize(lambda t: t.suggest_float("a", 0, 1), n_trials=2)
    assert len(_trials(tmp_path)) == 5
    # a complete last line that is not JSON (a zero-filled block after a crash)
    with rd.journal.open("ab") as f:
        f.write(b"\0\0\0\0\n")
    assert open_storage(None, tmp_path) is not None
    assert len(_trials(tmp_path)) == 5


def test_a_journal_append_past_the_limit_is_undone(tmp_path: Path) -> None:
    _journal_study(tmp_path, 2)
    size = RunDir(tmp_path).journal.stat().st_size
    study = optuna.load_study(storage=open_storage(None, tmp_path), study_name="s")
    with pytest.raises(EvompError) as e, file_size_limit(size + 1500):
        for _ in range(50):  # ask and tell, as the search's store does
            t = study.ask()
            study.tell(t, t.suggest_float("a", 0, 1))
    assert str(e.value).startswith("the file-size limit (ulimit -f) was reached while writing "
                                   f"{RunDir(tmp_path).journal}")
    data = RunDir(tmp_path).journal.read_bytes()
    assert data.endswith(b"\n")
    for line in data.splitlines():
        json.loads(line)  # every record whole: nothing torn was left behind
    n = len(_trials(tmp_path))
    assert n > 2


# --------------------------------------------------------------------------------- lock
def test_one_owner_per_directory_across_two_processes(tmp_path: Path) -> None:
    d = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom evomp.run import RunDir\n"
         f"lock = RunDir({str(d)!r}).acquire()\nprint('held', flush=True)\ntime.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(EvompError) as e:
            RunDir(d).acquire()
        assert str(e.value).startswith(
            f"{d} is in use by another evomp run (host {socket.gethostname()}, "
            f"pid {holder.pid})")
    finally:
        holder.kill()
        holder.wait()
    lock = RunDir(d).acquire()  # the kernel dropped the dead owner's lock
    again = RunDir(d).acquire()  # the owning process may open it again
    assert lock.held and again.held
    assert RunDir(d).lock.read_text().split() == [socket.gethostname(), str(os.getpid())]
    lock.release()
    assert not again.held


# ------------------------------------------------------------------------------ masking
@pytest.mark.parametrize("url, masked", [
    ("postgresql://me:s3cret@db:5432/evomp", "postgresql://me:***@db:5432/evomp"),
    ("postgresql://me@db/evomp", "postgresql://me@db/evomp"),
    ("sqlite:////tmp/study.db", "sqlite:////tmp/study.db"),
    ("postgresql://me:pa#ss@db/evomp", "postgresql://me:***@db/evomp"),
    ("postgresql://me:pa/ss@db/evomp", "postgresql://me:***@db/evomp"),
    ("postgresql://me:pa?ss@db/evomp", "postgresql://me:***@db/evomp"),
    ("postgresql://me:pa@ss@db/evomp", "postgresql://me:***@db/evomp"),
    ("postgresql://me:pa%40ss@db/evomp", "postgresql://me:***@db/evomp"),
    ("postgresql://me:a#b/c?d@e@db:5432/evomp?sslmode=require",
     "postgresql://me:***@db:5432/evomp?sslmode=require"),
    ("postgresql://me@db/evomp?password=s3cret&sslmode=require",
     "postgresql://me@db/evomp?password=***&sslmode=require"),
    ("postgresql://me:pw@[::1]:5432/evomp", "postgresql://me:***@[::1]:5432/evomp"),
    ("postgresql://me:pw@[2001:db8::7]/evomp", "postgresql://me:***@[2001:db8::7]/evomp"),
    ("postgresql+psycopg://me:pw@db/evomp", "postgresql+psycopg://me:***@db/evomp"),
])
def test_mask_url_hides_every_password_form(url: str, masked: str) -> None:
    assert mask_url(url) == masked
    for secret in ("s3cret", "pa#ss", "pa/ss", "pa?ss", "pa@ss", "pa%40ss", "a#b", "pw@"):
        if secret in url:
            assert secret not in mask_url(url)
