"""A run's Optuna storage: the journal file in its directory, or a database URL (masked
wherever it is written down)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna

from evomp._errors import EvompError

__all__ = ["open_storage", "mask_url", "load_run_study"]


def open_storage(url: str | None, out: Path) -> optuna.storages.BaseStorage | str:
    """``url`` (an RDB URL) or a JournalStorage file in ``out``."""
    if url:
        if "://" not in url:
            raise EvompError(
                f"--storage {url!r} is not a database URL (e.g. postgresql://user@host/db); "
                "leave it out to use the run directory's journal file"
            )
        return url
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    out.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(out / "study.journal")))


def mask_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for files and logs)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    netloc = f"{parts.username or ''}:***@{host}"
    return urlunsplit(parts._replace(netloc=netloc))


def load_run_study(run_dir: Path, storage: str | None = None) -> optuna.Study | None:
    """The study of a run directory: from ``storage`` if given, else from the URL in its
    ``storage.txt`` (a database run) or its ``study.journal``; None when it has none yet.

    Raises:
        EvompError: the study's database cannot be reached (naming ``--storage``).
    """
    note = run_dir / "storage.txt"
    lines = note.read_text().splitlines() if note.is_file() else []
    name = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("study:")), None)
    url = storage or (lines[0] if lines and "://" in lines[0] else None)
    if url:
        if "***" in url:
            raise EvompError(f"{run_dir}/storage.txt holds a masked database URL; pass "
                             "--storage with the full URL (or set PGPASSWORD)")
        try:
            names = [s.study_name for s in optuna.get_all_study_summaries(url)]
        except Exception as e:
            raise EvompError(f"cannot open the run's database {mask_url(url)}: {e}; pass "
                             "--storage URL") from e
        storage_obj: Any = url
    else:
        journal = run_dir / "study.journal"
        if not journal.is_file():
            return None
        storage_obj = open_storage(None, run_dir)
        names = [s.study_name for s in optuna.get_all_study_summaries(storage_obj)]
    if name is None:
        name = names[0] if len(names) == 1 else None
    if name is None or name not in names:
        return None
    return optuna.load_study(study_name=name, storage=storage_obj)
