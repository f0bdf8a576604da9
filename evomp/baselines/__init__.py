"""Baseline methods, scored under the same final protocol as the search.

Each method lives in its own private module and registers itself; modules that are not
present are skipped.
"""

from __future__ import annotations

import importlib

from evomp.baselines._registry import (
    METHODS,
    BaselineOptions,
    BaselineResult,
    check_params,
    get_method,
    register_method,
)

__all__ = [
    "METHODS",
    "BaselineOptions",
    "BaselineResult",
    "check_params",
    "get_method",
    "register_method",
]

# non-differentiable (uniform, random, ilp, freebits) and differentiable baselines
for _mod in ("_uniform", "_random", "_ilp", "_freebits", "_edmips", "_dnas", "_bayesbits",
             "_learned"):
    try:
        importlib.import_module(f"evomp.baselines.{_mod}")
    except ModuleNotFoundError as _e:
        if _e.name != f"evomp.baselines.{_mod}":
            raise
