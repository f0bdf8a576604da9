"""A run's Optuna storage: the journal file in its directory, or a database URL (masked
wherever it is written down).

The journal is the run's record. A write that fails (disk full, file-size limit) is undone
and reported as one clear error; a torn last record left by a crash in the middle of a
write is found when the journal is opened, moved aside to ``study.journal.torn`` and the
run goes on from the last complete record.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock, JournalStorage

from evomp._errors import EvompError
from evomp.run._rundir import RunDir, write_error

__all__ = ["open_storage", "mask_url", "check_storage_url", "load_run_study",
           "repair_journal", "PASSWORD_KEYS"]

log = logging.getLogger("evomp")

#: query parameters of a database URL that hold a password (masked like the password)
PASSWORD_KEYS = ("password", "passwd", "pwd", "sslpassword")

_MASK = "***"


class _JournalFile(JournalFileBackend):
    """Optuna's journal file whose failed append is undone (the file is cut back to the
    last complete record, under the journal's lock) and reported as one clear
    :class:`EvompError`."""

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        data = ("\n".join(json.dumps(x, separators=(",", ":")) for x in logs) + "\n").encode()
        path = self._file_path
        try:
            self._lock.acquire()
        except OSError as e:
            raise write_error(path, e) from e
        try:
            with open(path, "ab", buffering=0) as f:
                size = f.seek(0, os.SEEK_END)
                try:
                    view = memoryview(data)
                    while view:
                        n = f.write(view) or 0
                        view = view[n:]
                    os.fsync(f.fileno())
                except OSError as e:
                    with contextlib.suppress(OSError):
                        os.truncate(path, size)
                    raise write_error(path, e) from e
        finally:
            self._lock.release()


def repair_journal(path: Path, say: Callable[[str], None] | None = None) -> int:
    """Set aside a torn last record of an Optuna journal file.

    A record is one JSON line. A crash (or a full disk) in the middle of an append leaves a
    last line without its newline, or one that is not valid JSON; Optuna would then append
    the next record onto it and the journal could never be read again. The torn bytes are
    appended to ``<journal>.torn`` and the journal is cut back to its last complete record.

    Args:
        path: the journal file.
        say: where the message goes besides the log (the CLI prints it).

    Returns:
        The number of bytes set aside (0 when the journal was whole).

    Raises:
        EvompError: the backup cannot be written (the journal is left as it was).
    """
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return 0
    lock = JournalFileSymlinkLock(str(path))
    try:
        lock.acquire()
    except OSError as e:
        raise write_error(path, e) from e
    try:
        return _repair(path, say)
    finally:
        lock.release()


def _repair(path: Path, say: Callable[[str], None] | None) -> int:
    with path.open("rb") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return 0
        # read back far enough to hold the last two newlines (records are small, but a
        # trial with many attributes can be long)
        chunk = 1 << 16
        start = max(0, size - chunk)
        f.seek(start)
        tail = f.read()
        while start > 0 and tail.count(b"\n") < 2:
            start = max(0, start - chunk)
            f.seek(start)
            tail = f.read()
    keep = len(tail)
    if not tail.endswith(b"\n"):
        keep = tail.rfind(b"\n") + 1  # 0 when the journal holds no complete record
    last_start = tail.rfind(b"\n", 0, max(keep - 1, 0)) + 1
    if keep > 0 and (last_start > 0 or start == 0):
        try:
            json.loads(tail[last_start:keep])
        except ValueError:
            keep = last_start
    cut = len(tail) - keep
    if cut == 0:
        return 0
    backup = path.with_name(path.name + ".torn")
    try:
        with backup.open("ab") as b:
            b.write(tail[keep:] + b"\n")
            b.flush()
            os.fsync(b.fileno())
        os.truncate(path, size - cut)
    except OSError as e:
        raise write_error(backup, e) from e
    msg = (f"{path}: its last record was torn (a crash or a full disk while writing); "
           f"{cut} bytes set aside in {backup}, the run goes on from the last complete record")
    log.warning(msg)
    if say is not None:
        say(msg)
    return cut


def check_storage_url(url: str) -> str:
    """``url`` if it is a database URL SQLAlchemy can parse.

    Raises:
        EvompError: it is not (naming ``--storage``; the password is never shown).
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    if "://" not in url:
        raise EvompError(
            f"--storage {mask_url(url)!r} is not a database URL (e.g. "
            "postgresql://user@host/db); leave it out to use the run directory's journal file"
        )
    try:
        u = make_url(url)
        u.get_dialect()
    except (ArgumentError, ValueError) as e:
        raise EvompError(f"--storage {mask_url(url)!r} is not a usable database URL ({e}); "
                         "write it as dialect://user:password@host:port/database") from None
    except Exception as e:  # noqa: BLE001 - an unknown dialect or a missing driver
        raise EvompError(f"--storage {mask_url(url)!r}: {type(e).__name__}: {e}; install the "
                         "database's driver or fix the URL's dialect") from None
    return url


def open_storage(url: str | None, out: Path, say: Callable[[str], None] | None = None
                 ) -> optuna.storages.BaseStorage | str:
    """``url`` (an RDB URL) or a JournalStorage file in ``out``.

    A torn last record of the journal is set aside first (:func:`repair_journal`).

    Args:
        url: a database URL, or None for the run directory's journal file.
        out: the run directory.
        say: where a message about a repaired journal goes besides the log.

    Raises:
        EvompError: a malformed URL, or a journal that cannot be opened.
    """
    if url:
        return check_storage_url(url)
    rd = RunDir(out)
    try:
        rd.path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise write_error(rd.path, e) from e
    repair_journal(rd.journal, say)
    try:
        return JournalStorage(_JournalFile(str(rd.journal)))
    except OSError as e:
        raise write_error(rd.journal, e) from e


def mask_url(url: str) -> str:
    """``url`` with its password (and any ``?password=`` query value) replaced by ``***``
    (for files and logs). Parsed as SQLAlchemy parses it, so a password holding ``#``,
    ``/``, ``?`` or even a raw ``@`` is masked whole, and IPv6 hosts keep their brackets.
    """
    from sqlalchemy.engine import make_url

    try:
        u = make_url(url)
    except Exception:  # noqa: BLE001 - not a URL SQLAlchemy can read: mask all user info
        scheme, sep, rest = url.partition("://")
        if not sep or "@" not in rest:
            return url
        return f"{scheme}://{_MASK}@{rest.rpartition('@')[2]}"
    changed = False
    if u.host and "@" in u.host:  # a raw "@" in the password: the host is after the last one
        extra, _, host = u.host.rpartition("@")
        u = u.set(password=f"{u.password or ''}@{extra}", host=host)
    if u.password is not None:
        changed = True
    query = dict(u.query)
    for k in query:
        if k.lower() in PASSWORD_KEYS:
            query[k] = _MASK
            changed = True
    if not changed:
        return url
    return u.set(query=query).render_as_string(hide_password=True).replace("%2A%2A%2A", _MASK)


def _one_line(e: BaseException) -> str:
    """A database error on one line (the driver's message, without SQLAlchemy's pointer to
    its documentation)."""
    text = str(getattr(e, "orig", None) or e)
    lines = [ln.strip() for ln in text.splitlines()
             if ln.strip() and not ln.strip().startswith("(Background on this error")]
    return " ".join(lines)


def _without_password(url: str) -> str:
    """A masked URL with the password left out (libpq then reads ``PGPASSWORD`` or
    ``~/.pgpass``)."""
    from sqlalchemy.engine import URL, make_url

    u = make_url(url)
    query = {k: v for k, v in u.query.items() if k.lower() not in PASSWORD_KEYS}
    bare = URL.create(u.drivername, username=u.username, password=None, host=u.host,
                      port=u.port, database=u.database, query=query)
    return bare.render_as_string(hide_password=False)


def load_run_study(run_dir: Path, storage: str | None = None,
                   say: Callable[[str], None] | None = None) -> optuna.Study | None:
    """The study of a run directory: from ``storage`` if given, else from the URL in its
    ``storage.txt`` (a database run) or its ``study.journal``; None when it has none yet.

    A URL written down masked is tried without its password, so that the database client
    finds it where it looks for one (``PGPASSWORD``, ``~/.pgpass``).

    Raises:
        EvompError: the study's database cannot be reached (naming ``--storage``).
    """
    rd = RunDir(run_dir)
    noted, name = rd.read_storage_note()
    url = storage or noted
    if url:
        masked = _MASK in url and storage is None
        target = _without_password(url) if masked else check_storage_url(url)
        try:
            names = [s.study_name for s in optuna.get_all_study_summaries(target)]
        except Exception as e:
            if masked:
                raise EvompError(
                    f"cannot open the run's database {url}: {_one_line(e)}; its password is "
                    "not written "
                    "down: pass --storage with the full URL, or give the password where the "
                    "database client finds it (PGPASSWORD or ~/.pgpass for PostgreSQL)") from e
            raise EvompError(f"cannot open the run's database {mask_url(url)}: "
                             f"{_one_line(e)}; pass --storage URL") from e
        storage_obj: Any = target
    else:
        if not rd.journal.is_file():
            return None
        try:
            repair_journal(rd.journal, say)
        except EvompError as e:  # a reader may go on: Optuna skips a torn last record
            log.warning("%s", e)
        storage_obj = JournalStorage(_JournalFile(str(rd.journal)))
        names = [s.study_name for s in optuna.get_all_study_summaries(storage_obj)]
    if name is None:
        name = names[0] if len(names) == 1 else None
    if name is None or name not in names:
        return None
    return optuna.load_study(study_name=name, storage=storage_obj)
