"""A user's Python function as a hardware model (e.g. latency measured on a device).

Not vectorized: the function is called once per configuration, in a Python loop over
the batch. Use it for costs that cannot be tabulated; for a search over thousands of
candidates prefer the ``table`` model with measured per-layer figures.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from numbers import Real
from typing import Any, ClassVar

import numpy as np

from hwmodels._base import BitBatch, Costs, HardwareModel

__all__ = ["CallableModel", "bit_config_dict"]


def bit_config_dict(batch: BitBatch, row: int) -> dict[str, Any]:
    """The JSON form of one configuration (as ``evomp.BitConfig.to_dict`` writes it).

    Returns:
        ``{"weights": {layer: [bits per output channel]}, "activations": {layer: bits}}``.
    """
    table = batch.table
    w = batch.w_bits[row]
    a = batch.a_bits[row]
    starts = table.layer_start
    return {
        "weights": {lay.name: w[starts[i]:starts[i + 1]].tolist()
                    for i, lay in enumerate(table.layers)},
        "activations": {lay.name: int(a[i]) for i, lay in enumerate(table.layers)},
    }


class CallableModel(HardwareModel):
    """A Python function of one bit configuration, e.g. a cost measured on a device.

    The function receives the configuration in its JSON form
    ``{"weights": {layer: [bits, ...]}, "activations": {layer: bits}}``, or whatever
    ``config_factory`` builds from that dict (evomp passes ``evomp.BitConfig.from_dict``
    so the function gets a ``BitConfig``). It returns ``{metric: value}``, or a number
    when the model has a single metric.
    """

    name: ClassVar[str] = "callable"
    metrics: Mapping[str, str] = {}
    parameters: ClassVar[dict[str, str]] = {
        "fn": "function(config) -> {metric: value} or a number (single metric)",
        "metrics": "metric names, or {metric: unit}",
        "config_factory": "builds the function's argument from the JSON-form dict "
        "(e.g. evomp.BitConfig.from_dict); default: pass the dict",
        "monotone": "metrics the function guarantees never increase when a bit-width drops",
        "prune_monotone": "metrics the function guarantees never increase when a channel "
        "is pruned",
    }
    vectorized: ClassVar[bool] = False

    def __init__(self, fn: Callable[[Any], Any] | None = None,
                 metrics: Iterable[str] | Mapping[str, str] = ("cost",),
                 config_factory: Callable[[dict[str, Any]], Any] | None = None,
                 monotone: Iterable[str] = (), prune_monotone: Iterable[str] = ()) -> None:
        if fn is None or not callable(fn):
            raise ValueError("the callable model needs fn=, a function of one bit config "
                             "returning {metric: value}")
        if config_factory is not None and not callable(config_factory):
            raise ValueError("config_factory must be callable, e.g. evomp.BitConfig.from_dict")
        if isinstance(metrics, str):
            metrics = (metrics,)
        mets = dict(metrics) if isinstance(metrics, Mapping) else {
            str(m): "from a user function" for m in metrics}
        if not mets:
            raise ValueError("the callable model needs at least one metric name")
        mono, pmono = frozenset(monotone), frozenset(prune_monotone)
        for what, s in (("monotone", mono), ("prune_monotone", pmono)):
            if s - set(mets):
                raise ValueError(f"{what} names {sorted(s - set(mets))}, not among the "
                                 f"metrics {sorted(mets)}")
        super().__init__(fn=fn, metrics=metrics, config_factory=config_factory,
                         monotone=monotone, prune_monotone=prune_monotone)
        self.fn = fn
        self.config_factory = config_factory
        self.metrics = mets
        self.monotone = mono
        self.prune_monotone = pmono

    def _cost(self, batch: BitBatch) -> Costs:
        out = {m: np.empty(batch.n) for m in self.metrics}
        for i in range(batch.n):  # by design: a user's function sees one config at a time
            cfg: Any = bit_config_dict(batch, i)
            if self.config_factory is not None:
                cfg = self.config_factory(cfg)
            res = self.fn(cfg)
            if isinstance(res, Real) and len(self.metrics) == 1:
                res = {next(iter(self.metrics)): res}
            if not isinstance(res, Mapping):
                raise ValueError(
                    f"the cost function {getattr(self.fn, '__name__', self.fn)!r} returned "
                    f"{res!r}; return a dict {{metric: value}} for {sorted(self.metrics)}"
                )
            for m in self.metrics:
                if m not in res:
                    raise ValueError(f"the cost function returned no value for metric {m!r} "
                                     f"(got keys {sorted(res)})")
                v = float(res[m])
                if not math.isfinite(v):
                    raise ValueError(f"the cost function returned {m}={v}; costs must be finite")
                out[m][i] = v
        return out
