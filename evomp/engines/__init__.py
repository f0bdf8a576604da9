"""Search engines over bit genomes: pymoo (ask and tell) and Optuna (compact encoding),
their genome operators, the compact encoding, and the engine-side Free Bits repair."""

from __future__ import annotations

from evomp.engines._base import ENGINES, CheapFn, Engine, EngineParts, Proposals, make_engine
from evomp.engines._encoding import CompactEncoding, importance_rank
from evomp.engines._operators import (
    ChainRepair,
    KeepChannelRepair,
    LayerBlockCrossover,
    LevelStepMutation,
    MixedSampling,
    initial_design,
)
from evomp.engines._optuna import SAMPLERS, OptunaEngine, distributions, make_sampler
from evomp.engines._pymoo import ALGORITHMS, PymooEngine
from evomp.engines._refine import (
    FreeBitsRepair,
    latency_metric,
    latency_refiner,
    refine,
    refine_bits,
)

__all__ = [
    "ALGORITHMS",
    "ENGINES",
    "CheapFn",
    "Engine",
    "EngineParts",
    "Proposals",
    "make_engine",
    "SAMPLERS",
    "ChainRepair",
    "CompactEncoding",
    "FreeBitsRepair",
    "KeepChannelRepair",
    "LayerBlockCrossover",
    "LevelStepMutation",
    "MixedSampling",
    "OptunaEngine",
    "PymooEngine",
    "distributions",
    "importance_rank",
    "initial_design",
    "latency_metric",
    "latency_refiner",
    "make_sampler",
    "refine",
    "refine_bits",
]
