"""Registry of baseline methods run by ``evomp baseline SPEC --method NAME``.

A method is a function ``fn(ctx, objectives, opts) -> BaselineResult`` registered with
``@register_method("name")``. It returns the bit configurations it found (as genomes of
``ctx.space``); the caller then finishes them under the common final protocol
(:func:`evomp.run._protocol.finish_run`: final QAT, test accuracy, hardware metrics, front,
run directory), so every method is scored exactly like the search.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from evomp._errors import EvompError

if TYPE_CHECKING:
    from evomp.objectives import Objectives
    from evomp.run import RunContext

__all__ = ["BaselineOptions", "BaselineResult", "register_method", "get_method", "METHODS"]


@dataclass(frozen=True)
class BaselineOptions:
    """Command-line options of ``evomp baseline``.

    Attributes:
        points: number of trade-off points to produce (sweep length), method default if None.
        from_dir: a run directory whose front the method refines (``freebits``).
        budget: number of true evaluations (``random``; default: the spec's search budget).
        params: the spec's ``[baselines.<method>]`` table (method hyper-parameters); each
            method rejects keys it does not know, naming them.
        jobs: parallel evaluations.
    """

    points: int | None = None
    from_dir: Path | None = None
    budget: int | None = None
    params: dict[str, Any] = field(default_factory=dict)
    jobs: int = 1


@dataclass
class BaselineResult:
    """What a method found: ``genomes (n, n_genes)`` plus free-form information."""

    genomes: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)


MethodFn = Callable[["RunContext", "Objectives", BaselineOptions], BaselineResult]
METHODS: dict[str, MethodFn] = {}


def register_method(name: str) -> Callable[[MethodFn], MethodFn]:
    def deco(fn: MethodFn) -> MethodFn:
        if name in METHODS:
            raise ValueError(f"baseline method {name!r} is already registered")
        METHODS[name] = fn
        return fn

    return deco


def get_method(name: str) -> MethodFn:
    if name not in METHODS:
        raise EvompError(f"unknown baseline method {name!r}; available: {sorted(METHODS)}")
    return METHODS[name]


def check_params(method: str, params: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """Merge ``params`` over ``defaults``; unknown keys are an error naming them."""
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise EvompError(
            f"unknown key(s) {unknown} in [baselines.{method}]; valid keys are {sorted(defaults)}"
        )
    out = dict(defaults)
    for k, v in params.items():
        d = defaults[k]
        if isinstance(d, float) and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        if d is not None and type(v) is not type(d) and not isinstance(d, (list, tuple)):
            raise EvompError(
                f"[baselines.{method}] {k} must be {type(d).__name__}, got {v!r}"
            )
        out[k] = v
    return out
