"""Search engines over bit genomes: pymoo (ask and tell) and Optuna (compact encoding)."""

from __future__ import annotations

from evomp.engines._encoding import CompactEncoding, importance_rank
from evomp.engines._operators import (
    KeepChannelRepair,
    LayerBlockCrossover,
    LevelStepMutation,
    MixedSampling,
    initial_design,
    repair_all_pruned,
)
from evomp.engines._optuna import SAMPLERS, OptunaEngine, make_sampler
from evomp.engines._pymoo import ALGORITHMS, PymooEngine

__all__ = [
    "ALGORITHMS",
    "SAMPLERS",
    "CompactEncoding",
    "KeepChannelRepair",
    "LayerBlockCrossover",
    "LevelStepMutation",
    "MixedSampling",
    "OptunaEngine",
    "PymooEngine",
    "importance_rank",
    "initial_design",
    "make_sampler",
    "repair_all_pruned",
]
