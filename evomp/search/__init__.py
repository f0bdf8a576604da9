"""The surrogate-assisted search: the loop, the surrogate, the study store, the worker.
"""

from __future__ import annotations

from evomp.search._loop import Search, SearchOptions
from evomp.search._parts import SearchParts, anchor_genomes, build_parts
from evomp.search._store import Record, Store
from evomp.search._surrogate import (
    SELECTIONS,
    SURROGATES,
    SelectionContext,
    SelectionRule,
    build_surrogate,
)
from evomp.search._worker import Claims, run_worker

__all__ = [
    "SELECTIONS",
    "SURROGATES",
    "SearchParts",
    "SelectionContext",
    "SelectionRule",
    "anchor_genomes",
    "build_parts",
    "Claims",
    "Record",
    "Search",
    "SearchOptions",
    "Store",
    "build_surrogate",
    "run_worker",
]
