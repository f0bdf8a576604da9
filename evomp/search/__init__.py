"""The surrogate-assisted search: the loop, the surrogate, the study store, the worker.
"""

from __future__ import annotations

from evomp.search._artifacts import fetch_artifact, publish_artifacts, states_dir
from evomp.search._loop import AsyncState, Search, SearchOptions, promoted
from evomp.search._parts import SearchParts, anchor_genomes, build_parts
from evomp.search._queue import Queue, QueuedTrial, open_queue_storage
from evomp.search._store import Record, Store
from evomp.search._surrogate import (
    SELECTIONS,
    SURROGATES,
    SelectionContext,
    SelectionRule,
    build_surrogate,
)
from evomp.search._worker import (
    WorkerCounts,
    evaluate_task,
    run_worker,
    worker_context,
    worker_device,
)

__all__ = [
    "AsyncState",
    "promoted",
    "SELECTIONS",
    "SURROGATES",
    "SearchParts",
    "SelectionContext",
    "SelectionRule",
    "anchor_genomes",
    "build_parts",
    "Queue",
    "QueuedTrial",
    "WorkerCounts",
    "evaluate_task",
    "fetch_artifact",
    "open_queue_storage",
    "publish_artifacts",
    "states_dir",
    "worker_context",
    "worker_device",
    "Record",
    "Search",
    "SearchOptions",
    "Store",
    "build_surrogate",
    "run_worker",
]
