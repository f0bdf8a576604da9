"""Objectives and constraints of a run: accuracy plus hardware metrics from any models."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

import hwmodels
from evomp._errors import EvompError
from hwmodels import LayerTable

__all__ = ["Constraint", "Objectives", "parse_constraint", "nondominated"]

_CON = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(<=|>=)\s*([-+0-9.eE]+)\s*$")


@dataclass(frozen=True)
class Constraint:
    """``metric <= bound`` or ``metric >= bound`` (accuracy included)."""

    metric: str
    op: str
    bound: float

    def violation(self, values: np.ndarray) -> np.ndarray:
        """``(n,)`` amount by which each value violates the constraint (0 when met)."""
        v = np.asarray(values, dtype=float)
        d = v - self.bound if self.op == "<=" else self.bound - v
        return np.maximum(d, 0.0)

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.bound:g}"


def parse_constraint(text: str) -> Constraint:
    m = _CON.match(text)
    if not m:
        raise EvompError(
            f"constraint {text!r} is not of the form 'metric <= number' or 'metric >= number'"
        )
    try:
        bound = float(m.group(3))
    except ValueError as e:
        raise EvompError(f"constraint {text!r}: {m.group(3)!r} is not a number") from e
    return Constraint(m.group(1), m.group(2), bound)


class Objectives:
    """Accuracy (maximised) and hardware metrics (minimised) with hard constraints.

    Args:
        table: the layer table the hardware models are bound to.
        objectives: e.g. ``("accuracy", "memory_bytes", "energy_uj")``.
        constraints: e.g. ``("memory_bytes <= 40000", "accuracy >= 0.95")``.
        hardware: names of the models to instantiate; models that provide objective or
            constraint metrics are added automatically.
        hw_params: model name -> constructor parameters.
    """

    def __init__(
        self,
        table: LayerTable,
        objectives: Sequence[str],
        constraints: Sequence[str] = (),
        hardware: Sequence[str] = (),
        hw_params: Mapping[str, Mapping] | None = None,
    ) -> None:
        self.table = table
        self.names = list(objectives)
        if "accuracy" not in self.names:
            raise EvompError("objectives must include 'accuracy'")
        if len(self.names) != len(set(self.names)):
            raise EvompError(f"objectives repeat a metric: {self.names}")
        self.constraints = [parse_constraint(c) for c in constraints]
        needed = [n for n in self.names if n != "accuracy"]
        needed += [c.metric for c in self.constraints if c.metric != "accuracy"]
        model_names = list(dict.fromkeys(hardware))
        for metric in needed:
            try:
                owner = hwmodels.metric_owner(metric)
            except (KeyError, ValueError) as e:
                raise EvompError(
                    f"no hardware model provides metric {metric!r}; see 'evomp hw list'"
                ) from e
            if owner not in model_names:
                model_names.append(owner)
        hw_params = dict(hw_params or {})
        self.models = {}
        for name in model_names:
            try:
                self.models[name] = hwmodels.get(name, table=table, **dict(hw_params.get(name, {})))
            except (KeyError, ValueError) as e:
                raise EvompError(f"hardware model {name!r}: {e}") from e
        self.hw_metrics = [n for n in self.names if n != "accuracy"]

    def costs(self, genomes: np.ndarray) -> dict[str, np.ndarray]:
        """Every metric of every model for a genome batch: ``{metric: (n,) float}``."""
        return dict(hwmodels.evaluate(list(self.models.values()), self.table, genomes))

    def matrix(self, accuracy: np.ndarray, costs: Mapping[str, np.ndarray]) -> np.ndarray:
        """``(n, n_objectives)`` values to minimise: ``1 - accuracy`` and the metrics."""
        cols = [1.0 - np.asarray(accuracy, float) if n == "accuracy" else costs[n]
                for n in self.names]
        return np.stack(cols, axis=1)

    def violation(self, accuracy: np.ndarray, costs: Mapping[str, np.ndarray]) -> np.ndarray:
        """``(n, n_constraints)`` violations (relative to each bound's magnitude)."""
        if not self.constraints:
            return np.zeros((len(accuracy), 0))
        cols = []
        for c in self.constraints:
            v = np.asarray(accuracy, float) if c.metric == "accuracy" else costs[c.metric]
            cols.append(c.violation(v) / max(abs(c.bound), 1e-12))
        return np.stack(cols, axis=1)


def nondominated(F: np.ndarray) -> np.ndarray:
    """``(n,)`` bool mask of the non-dominated rows of ``F (n, m)`` (all minimised).

    Duplicated rows are all kept once: the first of equal rows survives.
    """
    F = np.asarray(F, dtype=float)
    n = F.shape[0]
    if n == 0:
        return np.zeros(0, dtype=bool)
    le = np.all(F[:, None, :] <= F[None, :, :], axis=2)
    lt = np.any(F[:, None, :] < F[None, :, :], axis=2)
    dominated = np.any(le & lt, axis=0)
    same = np.all(F[:, None, :] == F[None, :, :], axis=2)
    dup = np.triu(same, 1).any(axis=0)
    return ~dominated & ~dup
