"""evomp: gradient-free multi-objective search of per-channel mixed precision."""

from __future__ import annotations

from evomp._bitconfig import BitConfig
from evomp._errors import EvompError, SpecError
from evomp._evaluate import EvalResult, Evaluator, genome_hash
from evomp._space import SearchSpace
from evomp._train import QATConfig, TrainConfig, pretrain
from evomp.quant import QuantModel
from evomp.tasks import Task, get_task

__version__ = "0.1.0"

__all__ = [
    "BitConfig",
    "EvalResult",
    "Evaluator",
    "EvompError",
    "QATConfig",
    "QuantModel",
    "SearchSpace",
    "SpecError",
    "Task",
    "TrainConfig",
    "get_task",
    "genome_hash",
    "pretrain",
]
