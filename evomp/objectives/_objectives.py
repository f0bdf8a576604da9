"""Objectives and constraints of a run: accuracy plus hardware metrics from any models."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

import hwmodels
from evomp._errors import EvompError
from evomp.space import BitConfig
from hwmodels import HardwareModel, LayerTable

__all__ = ["Constraint", "Objectives", "parse_constraint"]

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
    """Parse ``"metric <= number"`` or ``"metric >= number"``.

    Raises:
        EvompError: any other form.
    """
    if not isinstance(text, str):
        raise EvompError(
            f"constraint {text!r} must be a string such as 'memory_bytes <= 40000'"
        )
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

    The models named in ``hardware`` are built first and their *instances* say which
    metrics they provide, so metrics that depend on a model's parameters (the columns of
    a ``table`` model's measurements, a ``callable`` model's ``metrics``) can be
    objectives and constraints. A metric no listed model provides is resolved through the
    registry (:func:`hwmodels.metric_owner`) and its model added.

    A ``callable`` model built here receives ``config_factory=evomp.BitConfig.from_dict``
    (unless ``hw_params`` gives one), so the user's function gets a :class:`BitConfig`.

    Args:
        table: the layer table the hardware models are bound to.
        objectives: e.g. ``("accuracy", "memory_bytes", "energy_uj")``: ``accuracy`` and
            at least one hardware metric.
        constraints: e.g. ``("memory_bytes <= 40000", "accuracy >= 0.95")``.
        hardware: names of the models to instantiate; models that provide objective or
            constraint metrics are added automatically.
        hw_params: model name -> constructor parameters.

    Every hardware-model look-up of a run goes through these objectives: the baselines
    find the model of a budget or regularizer metric with :meth:`lookup` (a metric no
    listed model provides is built from ``hw_params`` and kept aside, out of
    :meth:`costs`), and build their linear cost tables from :meth:`layer_costs` and
    :meth:`uniform_layer_costs` (per-layer figures, one vectorized call per batch).

    Attributes:
        models: model name -> the bound model instance.
        hw_params: model name -> the constructor parameters given.
        owners: metric -> name of the model in :attr:`models` that provides it.
        hw_metrics: the hardware objectives, in order.

    Raises:
        EvompError: no accuracy or no hardware objective, a repeated objective, a metric
            no model provides, two models providing one metric, or a model that cannot be
            built.
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
        if isinstance(objectives, str):
            objectives = [objectives]
        self.names = list(objectives)
        if "accuracy" not in self.names:
            raise EvompError("objectives must include 'accuracy'")
        if len(self.names) != len(set(self.names)):
            raise EvompError(f"objectives repeat a metric: {self.names}")
        self.hw_metrics = [n for n in self.names if n != "accuracy"]
        if not self.hw_metrics:
            raise EvompError(
                "objectives need at least one hardware metric besides 'accuracy' (e.g. "
                "'memory_bytes', see 'evomp hw list'): a search over accuracy alone has no "
                "trade-off to explore"
            )
        self.constraints = [parse_constraint(c) for c in constraints]
        hw_params = dict(hw_params or {})
        self.hw_params: dict[str, dict[str, Any]] = {k: dict(v) for k, v in hw_params.items()}
        self.models: dict[str, HardwareModel] = {}
        self.owners: dict[str, str] = {}
        self._aside: dict[str, HardwareModel] = {}  # built by lookup(), never in costs()
        for name in dict.fromkeys(hardware):
            self._add(name, hw_params)
        needed = list(self.hw_metrics)
        needed += [c.metric for c in self.constraints if c.metric != "accuracy"]
        for metric in dict.fromkeys(needed):
            if metric in self.owners:
                continue
            try:
                owner = hwmodels.metric_owner(metric)
            except (KeyError, ValueError) as e:
                listed = sorted(self.owners)
                raise EvompError(
                    f"no hardware model provides metric {metric!r}"
                    + (f" (the listed models give {listed})" if listed else "")
                    + "; see 'evomp hw list', or add the model that measures it (e.g. "
                    "a 'table' model of measured figures) to the hardware models"
                ) from e
            if owner in self.models:  # pragma: no cover - an instance narrowed its metrics
                raise EvompError(
                    f"hardware model {owner!r} does not provide metric {metric!r} with the "
                    "parameters given; check its parameters"
                )
            self._add(owner, hw_params)

    def _build(self, name: str, params: Mapping[str, Any]) -> HardwareModel:
        """Model ``name`` with ``params``, bound to the table."""
        params = dict(params)
        try:
            cls = hwmodels.model_class(name)
            if "config_factory" in cls.parameters and params.get("config_factory") is None:
                params["config_factory"] = BitConfig.from_dict  # hand the user a BitConfig
            return hwmodels.get(name, table=self.table, **params)
        except (KeyError, ValueError, TypeError) as e:
            raise EvompError(f"hardware model {name!r}: {e}") from e

    def _add(self, name: str, hw_params: Mapping[str, Mapping]) -> None:
        """Build model ``name`` bound to the table and record the metrics it provides."""
        model = self._build(name, hw_params.get(name, {}))
        for metric in model.metrics:
            if metric in self.owners:
                raise EvompError(
                    f"metric {metric!r} is provided by both hardware models "
                    f"{self.owners[metric]!r} and {name!r}; keep one of them or rename the "
                    "metric (e.g. the column of a measurement table)"
                )
        self.models[name] = model
        for metric in model.metrics:
            self.owners[metric] = name

    def model_for(self, metric: str) -> HardwareModel:
        """The model instance that provides ``metric``.

        Raises:
            EvompError: no model of these objectives provides it.
        """
        if metric not in self.owners:
            raise EvompError(
                f"no hardware model of this run provides metric {metric!r}; "
                f"available: {sorted(self.owners)}"
            )
        return self.models[self.owners[metric]]

    # ----------------------------------------------------------- model look-up
    def model_named(self, name: str, params: Mapping[str, Any] | None = None
                    ) -> HardwareModel:
        """This run's instance of hardware model ``name``, for a baseline's cost.

        The run's own instance when it has one (and ``params`` is None); otherwise the
        model built from this run's parameters for it (``hw_params[name]``, the spec's
        ``[hw.<name>]``) updated by ``params``, bound to the table and kept aside: it
        never joins :attr:`models` nor :meth:`costs`. Built once per name and params.

        Raises:
            EvompError: an unknown model, bad parameters, or a table it cannot cost.
        """
        if params is None and name in self.models:
            return self.models[name]
        key = name if params is None else f"{name}:{sorted(params.items())!r}"
        if key not in self._aside:
            self._aside[key] = self._build(name, {**self.hw_params.get(name, {}),
                                                  **dict(params or {})})
        return self._aside[key]

    def lookup(self, metric: str, model: str | None = None,
               params: Mapping[str, Any] | None = None) -> HardwareModel:
        """The model instance that gives ``metric`` in this run: the one every baseline's
        budget, regularizer or refinement costs with.

        The run's own model providing ``metric`` (:meth:`model_for`) first; a metric
        none of them provides (a baseline's budget that is no objective) comes from the
        registry's owner of the metric, built by :meth:`model_named`. ``model`` names the
        model instead; ``params`` overrides some of its parameters (e.g. a proxy without
        per-channel parameters).

        Raises:
            EvompError: no model provides ``metric``, or ``model`` does not.
        """
        if model is None and params is None and metric in self.owners:
            return self.model_for(metric)
        if model is None:
            model = self.owners.get(metric)
        if model is None:
            try:
                model = hwmodels.metric_owner(metric)
            except (KeyError, ValueError) as e:
                raise EvompError(f"no hardware model provides metric {metric!r}; see "
                                 "'evomp hw list'") from e
        inst = self.model_named(model, params)
        if metric not in inst.metrics:
            raise EvompError(f"hardware model {model!r} has no metric {metric!r}; it has "
                             f"{sorted(inst.metrics)}")
        return inst

    # -------------------------------------------------------- per-layer costs
    def layer_costs(self, genomes: np.ndarray, metrics: Sequence[str] | None = None
                    ) -> dict[str, np.ndarray]:
        """Per-layer figures of this run's additive metrics: ``{metric: (n, n_layers)}``.

        One vectorized call over the batch (:func:`hwmodels.evaluate_layers`); summed over
        layers each equals :meth:`costs`. Metrics that do not add up over layers
        (``memory_bytes`` and ``activation_bytes``: a peak buffer; a ``callable`` model's)
        are absent unless asked for, which raises.

        Args:
            genomes: ``(n, n_genes)`` integer genomes of the run's table.
            metrics: the metrics wanted (default: every additive one).

        Raises:
            EvompError: a wanted metric that no model of the run gives per layer.
        """
        per = hwmodels.evaluate_layers(list(self.models.values()), self.table, genomes)
        if metrics is None:
            return dict(per)
        missing = [m for m in metrics if m not in per]
        if missing:
            raise EvompError(f"no hardware model of this run gives {missing} per layer (they "
                             f"do not add up over layers); per-layer metrics: {sorted(per)}")
        return {m: per[m] for m in metrics}

    def uniform_layer_costs(self, metric: str, w_bits: np.ndarray, a_bits: np.ndarray, *,
                            model: HardwareModel | None = None) -> np.ndarray:
        """Per-layer ``metric`` of configurations given layer by layer (one vectorized call).

        The rows of the baselines' linear cost tables: configuration ``p`` has every
        channel of layer ``l`` at ``w_bits[p, l]`` weight bits (0 = pruned) and layer
        ``l``'s input at ``a_bits[p, l]`` bits; the bits need not be the space's
        choices (pinned layers may be probed at other bits).

        Args:
            metric: an additive metric (see :meth:`layer_costs`).
            w_bits: ``(P, n_layers)`` int weight bits per layer.
            a_bits: ``(P, n_layers)`` int input-activation bits per layer.
            model: the instance to cost with (from :meth:`lookup`); default
                ``lookup(metric)``.

        Returns:
            ``(P, n_layers)`` float64, in the metric's unit.

        Raises:
            EvompError: the metric does not add up over layers, or bits the model has no
                figure for.
        """
        hw = self.lookup(metric) if model is None else model
        t = self.table
        w = np.asarray(w_bits, dtype=np.int64)
        a = np.asarray(a_bits, dtype=np.int64)
        if w.ndim != 2 or w.shape[1] != t.n_layers or a.shape != w.shape:
            raise ValueError(f"w_bits and a_bits must both be (P, {t.n_layers}), got "
                             f"{w.shape} and {a.shape}")
        sizes = np.array([lay.out_channels for lay in t.layers], dtype=np.int64)
        try:
            per = hw.layer_cost_bits(t, np.repeat(w, sizes, axis=1), a)
        except ValueError as e:
            raise EvompError(f"cannot cost {metric!r} with hardware model {hw.name!r}: {e}"
                             ) from e
        if metric not in per:
            raise EvompError(f"{metric!r} of hardware model {hw.name!r} does not add up over "
                             "layers (it has no per-layer figure)")
        return per[metric]

    @property
    def metrics(self) -> list[str]:
        """Every metric the models provide, in the order :meth:`costs` returns them."""
        return list(self.owners)

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


