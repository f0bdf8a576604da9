"""evomp: gradient-free multi-objective search of per-channel mixed precision."""

from __future__ import annotations

from evomp._errors import EvompError, SpecError
from evomp.evaluation import EvalResult, Evaluator
from evomp.objectives import Objectives
from evomp.quant import QuantModel
from evomp.reports import ExportResult, Report, export_run, write_report
from evomp.run import (
    RunContext,
    RunDir,
    RunSpec,
    load_spec,
    make_context,
    open_run,
    parse_spec,
    read_front,
)
from evomp.search import Search, SearchOptions, SearchParts, build_parts
from evomp.space import BitConfig, SearchSpace, genome_hash
from evomp.tasks import QATConfig, Task, TrainConfig, get_task, pretrain

__version__ = "0.1.0"

__all__ = [
    "BitConfig",
    "EvalResult",
    "Evaluator",
    "EvompError",
    "ExportResult",
    "Objectives",
    "RunContext",
    "RunDir",
    "RunSpec",
    "Search",
    "SearchOptions",
    "SearchParts",
    "build_parts",
    "QATConfig",
    "QuantModel",
    "Report",
    "SearchSpace",
    "SpecError",
    "Task",
    "TrainConfig",
    "get_task",
    "export_run",
    "genome_hash",
    "load_spec",
    "make_context",
    "open_run",
    "parse_spec",
    "pretrain",
    "read_front",
    "write_report",
]
