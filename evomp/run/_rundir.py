"""The run directory: the one owner of every file name in it, and of their readers and
writers.

Rewritten files are written atomically (a temporary file in the same directory, flushed
and synced, then renamed over the old one), so a reader sees the old or the new file and
never a torn one. A write that fails for want of space (``ENOSPC``, a quota) or because the
process's file-size limit was reached (``EFBIG``, ``ulimit -f``) is one :class:`EvompError`
that says so; what was recorded before stays readable.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import os
import socket
import weakref
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from evomp._errors import EvompError

__all__ = [
    "RunDir",
    "RunLock",
    "atomic_write_text",
    "atomic_write_bytes",
    "os_error",
    "write_error",
    "writing",
]

_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
_READ_ONLY = {errno.EROFS, errno.EACCES, errno.EPERM}


def write_error(path: str | Path, e: OSError) -> EvompError:
    """The one clear error for a failed write of ``path``.

    Args:
        path: the file being written.
        e: the error the write raised.
    """
    if e.errno in _FULL:
        return EvompError(f"no space left on device while writing {path}; free space and run "
                          "the same command again: nothing recorded is lost")
    if e.errno == errno.EFBIG:
        return EvompError(f"the file-size limit (ulimit -f) was reached while writing {path}; "
                          "raise the limit and run the same command again: nothing recorded "
                          "is lost")
    if e.errno in _READ_ONLY:
        return EvompError(f"cannot write {path}: {e.strerror or e} (a read-only directory or "
                          "file system?); choose a writable place (nothing was changed)")
    return EvompError(f"cannot write {path}: {e.strerror or e}")


def os_error(e: OSError) -> EvompError:
    """One clear line for an ``OSError`` that reached the command line: a failed write
    (:func:`write_error`) or another file-system error, naming the file."""
    what = e.filename if e.filename is not None else "a file of the run"
    if e.errno in _FULL or e.errno == errno.EFBIG or e.errno in (errno.EROFS,):
        return write_error(what, e)
    if e.errno in (errno.EACCES, errno.EPERM):
        return EvompError(f"permission denied: {what}; choose a place you may write to (or "
                          "read from)")
    return EvompError(f"{what}: {e.strerror or e}")


@contextlib.contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """Turn an ``OSError`` raised inside the block into :func:`write_error` for ``path``."""
    try:
        yield
    except OSError as e:
        raise write_error(path, e) from e


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a reader sees the old or the new file, never a
    torn one (a temporary file in the same directory, fsync, ``os.replace``).

    Raises:
        EvompError: the write failed (disk full, file-size limit, read-only directory); the
            old file, if any, is unchanged.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with writing(path):
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def atomic_write_text(path: Path, text: str) -> None:
    """:func:`atomic_write_bytes` of UTF-8 ``text``."""
    atomic_write_bytes(path, text.encode())


#: CSV columns that hold text, never numbers
TEXT_COLUMNS = ("id", "genome_hash", "method", "fidelity", "source", "reason", "model")


def _cell(k: str | None, v: str | None) -> Any:
    """A CSV cell typed: text columns as they are, ``""`` as None, ``True``/``False`` as
    bools, numbers as floats, anything else as it is."""
    if k in TEXT_COLUMNS or v is None:
        return v
    if v == "":
        return None
    if v in ("True", "False"):
        return v == "True"
    try:
        return float(v)
    except ValueError:
        return v


class _Held:
    """An open, flock-ed lock file; closing it (when the last :class:`RunLock` sharing it
    is freed) gives the lock up."""

    def __init__(self, f: Any) -> None:
        self.f = f
        self.pid = os.getpid()

    def close(self) -> None:
        if self.pid == os.getpid():  # a forked child must not drop its parent's lock
            with contextlib.suppress(OSError):
                self.f.close()

    def __del__(self) -> None:
        self.close()


class RunLock:
    """The advisory lock (``fcntl.flock``) that makes one process the owner of a run
    directory; the lock file holds the owner's host and pid.

    Held until :meth:`release`, until every ``RunLock`` of the directory in this process
    is freed, or until the process ends (the kernel drops it then, even after SIGKILL).
    Opening the same directory again in the owning process (a resume from Python) shares
    the lock instead of refusing.

    Args:
        path: the lock file.

    Raises:
        EvompError: another process holds it (naming its host and pid).
    """

    _held: weakref.WeakValueDictionary[str, _Held] = weakref.WeakValueDictionary()

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        key = str(self.path.resolve())
        held = RunLock._held.get(key)
        if held is not None and held.pid == os.getpid() and not held.f.closed:
            self._h: _Held | None = held
            return
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: no lock
            self._h = None
            return
        with writing(self.path):
            f = open(self.path, "a+")
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            f.seek(0)
            owner = f.read().split()
            f.close()
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise write_error(self.path, e) from e
            host, pid = (owner + ["?", "?"])[:2]
            raise EvompError(
                f"{self.path.parent} is in use by another evomp run (host {host}, pid {pid}); "
                "wait for it to finish or stop it, or pass --out to run elsewhere (nothing was "
                "changed)") from None
        with writing(self.path):
            f.seek(0)
            f.truncate()
            f.write(f"{socket.gethostname()} {os.getpid()}\n")
            f.flush()
        self._h = _Held(f)
        RunLock._held[key] = self._h

    @property
    def held(self) -> bool:
        """Whether this process still holds the lock through this object."""
        return self._h is not None and not self._h.f.closed

    def release(self) -> None:
        """Give the directory up now (for every sharer in this process; idempotent)."""
        if self._h is not None:
            self._h.close()
            self._h = None


class RunDir:
    """A run directory and the files in it.

    Args:
        path: the directory (need not exist yet).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # ---------------------------------------------------------------- files
    @property
    def spec(self) -> Path:
        """The resolved run specification (TOML)."""
        return self.path / "spec.toml"

    @property
    def space(self) -> Path:
        """The traced layer table (JSON)."""
        return self.path / "space.json"

    @property
    def journal(self) -> Path:
        """The Optuna journal file (the record, unless a database holds it)."""
        return self.path / "study.journal"

    @property
    def journal_torn(self) -> Path:
        """Where a torn tail of the journal is set aside (appended, never overwritten)."""
        return self.path / "study.journal.torn"

    @property
    def storage_note(self) -> Path:
        """Where the record is: a masked database URL or the journal, and the study name."""
        return self.path / "storage.txt"

    @property
    def progress(self) -> Path:
        """The loop's progress (round, CPU seconds, verified)."""
        return self.path / "progress.json"

    @property
    def sensitivity(self) -> Path:
        """The sensitivity profile (npz)."""
        return self.path / "sensitivity.npz"

    @property
    def float_model(self) -> Path:
        """The float checkpoint the run starts from."""
        return self.path / "float.pt"

    @property
    def evaluations_jsonl(self) -> Path:
        """Every true evaluation, one JSON line each, appended as it finishes (what lets a
        killed run resume without retraining, the final QATs included)."""
        return self.path / "evaluations.jsonl"

    @property
    def evaluations_csv(self) -> Path:
        """Every true evaluation of the finished run (search and final)."""
        return self.path / "evaluations.csv"

    @property
    def front_csv(self) -> Path:
        """One row per verified front member (accuracies, genome hash, every metric)."""
        return self.path / "front.csv"

    @property
    def front_json(self) -> Path:
        """``{id: {"bits", "genome", "genome_hash", "model", ...}}`` per front member."""
        return self.path / "front.json"

    @property
    def run_json(self) -> Path:
        """The run's summary: method, objectives, CPU seconds, status."""
        return self.path / "run.json"

    @property
    def run_log(self) -> Path:
        """The run's log."""
        return self.path / "run.log"

    @property
    def models(self) -> Path:
        """Trained fake-quant state dicts (``<genome_hash>-<fidelity>.pt``)."""
        return self.path / "models"

    def model(self, genome_hash: str, fidelity: str = "final") -> Path:
        """The state dict of one evaluation (``models/<hash>-<fidelity>.pt``)."""
        return self.models / f"{genome_hash}-{fidelity}.pt"

    @property
    def quality_csv(self) -> Path:
        """The surrogate's rank quality, one row per round."""
        return self.path / "surrogate_quality.csv"

    @property
    def pymoo_state(self) -> Path:
        """The pymoo engine's population checkpoint."""
        return self.path / "pymoo_state.npz"

    @property
    def artifacts(self) -> Path:
        """The default Optuna artifact store (the spec, float weights and profile every
        worker loads)."""
        return self.path / "artifacts"

    @property
    def lock(self) -> Path:
        """The owner lock of the directory (host and pid of the owner)."""
        return self.path / ".lock"

    @property
    def report(self) -> Path:
        """Default folder of ``evomp report``."""
        return self.path / "report"

    # ----------------------------------------------------------------- owner
    def acquire(self) -> RunLock:
        """Become the directory's one owner (created if needed).

        Raises:
            EvompError: another process owns it (naming its host and pid).
        """
        with writing(self.path):
            self.path.mkdir(parents=True, exist_ok=True)
        return RunLock(self.lock)

    # ------------------------------------------------------------ json files
    def read_json(self, path: Path, default: Any = None, advice: str = "") -> Any:
        """A JSON object file of the directory; ``default`` when absent.

        Raises:
            EvompError: the file is not valid JSON or not an object (``advice`` says what
                to do about it).
        """
        if not path.is_file():
            return default
        tail = f"; {advice}" if advice else ""
        try:
            d = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise EvompError(f"{path} is damaged (not valid JSON: {e}){tail}") from e
        if not isinstance(d, dict):
            raise EvompError(f"{path} is damaged (not a JSON object){tail}")
        return d

    def write_json(self, path: Path, obj: Any) -> None:
        """Write ``obj`` as JSON to ``path`` (atomic)."""
        atomic_write_text(path, json.dumps(obj, indent=1))

    def read_run_json(self) -> dict[str, Any]:
        """``run.json`` (``{}`` when absent).

        Raises:
            EvompError: it is damaged.
        """
        return dict(self.read_json(self.run_json, {}))

    # -------------------------------------------------------------- progress
    def read_progress(self) -> dict[str, Any]:
        """The loop's progress; ``{}`` when there is none yet.

        Raises:
            EvompError: the file is damaged (what to do about it).
        """
        return dict(self.read_json(self.progress, {}, "delete it to resume (only the "
                                   "CPU-seconds count and the round number are lost)"))

    def update_progress(self, **kw: Any) -> None:
        """Merge ``kw`` into the progress file (atomic)."""
        d = self.read_progress()
        d.update(kw)
        with writing(self.path):
            self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.progress, json.dumps(d, indent=1))

    # --------------------------------------------------------------- storage
    def write_storage_note(self, url: str | None, study: str) -> None:
        """Say where the record is (``url`` masked; None = the journal file)."""
        from evomp.run._storage import mask_url

        with writing(self.path):
            self.path.mkdir(parents=True, exist_ok=True)
        first = mask_url(url) if url else f"journal file: {self.journal}"
        atomic_write_text(self.storage_note, f"{first}\nstudy: {study}\n")

    def read_storage_note(self) -> tuple[str | None, str | None]:
        """``(database URL or None for the journal, study name or None)``; the URL is as
        written, i.e. masked when it held a password."""
        p = self.storage_note
        lines = p.read_text().splitlines() if p.is_file() else []
        study = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("study:")),
                     None)
        url = lines[0].strip() if lines and "://" in lines[0] else None
        return url, study

    # --------------------------------------------------------------- quality
    def append_quality(self, row: Mapping[str, Any]) -> None:
        """Append one round's surrogate quality (header written once). A file begun by
        another version keeps its header: a column it lacks is left out of the row, one
        the row lacks is left empty, so every row stays readable."""
        path = self.quality_csv
        new = not path.is_file() or path.stat().st_size == 0
        fields = list(row)
        if not new:
            with path.open(newline="") as f:
                fields = next(csv.reader(f), []) or fields
        with writing(path), path.open("a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields, restval="", extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow(dict(row))

    def read_quality(self) -> list[dict[str, Any]]:
        """``surrogate_quality.csv`` rows, numbers parsed (``[]`` when absent); a torn last
        row (a crash while appending) is left out."""
        return _read_csv(self.quality_csv, drop_torn=True)

    def read_evaluations(self) -> list[dict[str, Any]]:
        """``evaluations.csv`` rows, numbers parsed (``[]`` when absent)."""
        return _read_csv(self.evaluations_csv)

    # ----------------------------------------------------------------- front
    def read_front(self, *, members: bool = True
                   ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """``front.csv`` rows (numbers as floats, empty cells as None) and ``front.json``
        members by id.

        Args:
            members: also read ``front.json`` (else ``{}`` is returned for it).

        Raises:
            EvompError: no front, or a damaged one: a truncated or malformed row, a
                ``front.json`` that is not valid JSON or lacks a member ``front.csv`` lists.
        """
        path = self.front_csv
        if not path.is_file():
            raise EvompError(f"{self.path} is not a finished run directory (no front.csv); "
                             "run `evomp run` or `evomp baseline` into it first")
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise EvompError(f"{path} is unreadable ({e})") from e
        damaged = (f"{path} is damaged: {{}}; run the same `evomp run` (or baseline) command "
                   "again to write the front anew")
        if not text.strip():
            raise EvompError(damaged.format("it is empty"))
        if not text.endswith("\n"):
            raise EvompError(damaged.format("its last row is truncated"))
        reader = csv.DictReader(io.StringIO(text, newline=""))
        cols = reader.fieldnames or []
        for need in ("id", "genome_hash"):
            if need not in cols:
                raise EvompError(damaged.format(f"it has no {need} column"))
        rows = []
        for n, r in enumerate(reader, start=2):
            if None in r or None in r.values():
                got = sum(v is not None for k, v in r.items() if k is not None)
                got += len(r.get(None) or [])
                raise EvompError(damaged.format(f"row {n} has {got} of {len(cols)} fields"))
            parsed = {k: _cell(k, v) for k, v in r.items()}
            bad = [k for k, v in parsed.items() if k not in TEXT_COLUMNS and isinstance(v, str)]
            if bad:
                raise EvompError(damaged.format(f"row {n} holds {r[bad[0]]!r} for {bad[0]}, "
                                                "not a number"))
            rows.append(parsed)
        if not members:
            return rows, {}
        jpath = self.front_json
        if not jpath.is_file():
            raise EvompError(f"{self.path} has front.csv but no front.json; run the same "
                             "`evomp run` (or baseline) command again to write the front anew")
        mem = self.read_json(jpath, {}, "run the same `evomp run` (or baseline) command "
                             "again to write the front anew")
        lacking = [r["id"] for r in rows if r["id"] not in mem]
        if lacking:
            raise EvompError(f"{jpath} lacks {', '.join(lacking)} that front.csv lists: the run "
                             "directory is inconsistent; run the same `evomp run` (or baseline) "
                             "command again to write the front anew")
        return rows, mem

    def front_status(self) -> str | int:
        """The front's size, ``"not verified yet"``, or ``"unreadable: <why>"`` (for
        ``evomp status``, which must not fail on a damaged front)."""
        if not self.front_csv.is_file():
            return "not verified yet"
        try:
            rows, _ = self.read_front()
        except EvompError as e:
            return f"unreadable: {e}"
        return len(rows)


def _read_csv(path: Path, drop_torn: bool = False) -> list[dict[str, Any]]:
    """Rows of a CSV file, cells typed by :func:`_cell` (``[]`` when absent).

    Args:
        path: the file.
        drop_torn: leave out rows with too few or too many fields (a torn append).
    """
    if not path.is_file():
        return []
    try:
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise EvompError(f"{path} is unreadable ({e})") from e
    return [{k: _cell(k, v) for k, v in r.items()} for r in rows
            if not drop_torn or (None not in r and None not in r.values())]
