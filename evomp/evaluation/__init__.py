"""True evaluations: the evaluator (PTQ, short and final QAT on one quantized copy),
parallel evaluation, and the run's sensitivity profile.
"""

from __future__ import annotations

from evomp.evaluation._evaluator import FIDELITIES, EvalResult, Evaluator, evaluate_uniform
from evomp.evaluation._parallel import (
    SMALL_MODEL_MACS,
    backend_context,
    cgroup_cpu_limit,
    evaluate_parallel,
    macs_per_sample,
    oversubscribed,
    threads_per_worker,
    usable_cores,
    warn_oversubscribed,
)
from evomp.evaluation._sensitivity import channel_importance, run_profile

__all__ = [
    "SMALL_MODEL_MACS",
    "cgroup_cpu_limit",
    "macs_per_sample",
    "oversubscribed",
    "warn_oversubscribed",
    "EvalResult",
    "Evaluator",
    "FIDELITIES",
    "backend_context",
    "channel_importance",
    "evaluate_parallel",
    "evaluate_uniform",
    "run_profile",
    "threads_per_worker",
    "usable_cores",
]
