"""evomp: gradient-free multi-objective search of per-channel mixed precision."""

from __future__ import annotations

from evomp._bitconfig import BitConfig
from evomp._errors import EvompError, SpecError
from evomp._evaluate import EvalResult, Evaluator, genome_hash
from evomp._export import ExportResult, export_run
from evomp._objectives import Objectives
from evomp._protocol import read_front
from evomp._report import Report, write_report
from evomp._runner import RunContext, make_context, open_run
from evomp._search import Search, SearchOptions
from evomp._space import SearchSpace
from evomp._spec import RunSpec, load_spec, parse_spec
from evomp._train import QATConfig, TrainConfig, pretrain
from evomp.quant import QuantModel
from evomp.tasks import Task, get_task

__version__ = "0.1.0"

__all__ = [
    "BitConfig",
    "EvalResult",
    "Evaluator",
    "EvompError",
    "ExportResult",
    "Objectives",
    "RunContext",
    "RunSpec",
    "Search",
    "SearchOptions",
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
