"""Hardware cost models for mixed-precision networks (pure numpy, no torch at import).

A model turns a layer table plus a batch of genomes into one ``(n,)`` array per metric::

    import hwmodels
    mem = hwmodels.get("memory", table=table)
    costs = mem.cost(table, genomes)          # {"memory_bytes": (n,), ...}
    per_layer = mem.layer_cost(table, genomes)  # {"weight_bytes": (n, n_layers)}

``hwmodels.evaluate`` / ``hwmodels.evaluate_layers`` do the same for several models at
once, decoding the batch once; per-layer figures exist for metrics that add up over
layers (not for the peak activation buffer of ``memory_bytes``).

Built-in models: ``memory``, ``bitops``, ``mpic``, ``pulp``, ``table``, ``callable``.
Third-party models register through the ``evomp.hwmodels`` entry-point group.
"""

from __future__ import annotations

from hwmodels._base import BitBatch, Costs, HardwareModel
from hwmodels._bitops import BitopsModel
from hwmodels._callable import CallableModel, bit_config_dict
from hwmodels._layers import MAX_BITS, Layer, LayerTable
from hwmodels._memory import MemoryModel
from hwmodels._mpic import MPIC_MACS_PER_CYCLE, MpicModel
from hwmodels._pulp import PULP_PRESETS, PulpModel
from hwmodels._registry import (
    ENTRY_POINT_GROUP,
    available,
    evaluate,
    evaluate_layers,
    get,
    load_plugins,
    metric_owner,
    model_class,
    plugin_errors,
    register,
)
from hwmodels._table import TableModel, geometry_key

__all__ = [
    "Layer",
    "LayerTable",
    "MAX_BITS",
    "BitBatch",
    "Costs",
    "HardwareModel",
    "MemoryModel",
    "BitopsModel",
    "MpicModel",
    "PulpModel",
    "TableModel",
    "CallableModel",
    "MPIC_MACS_PER_CYCLE",
    "PULP_PRESETS",
    "ENTRY_POINT_GROUP",
    "register",
    "get",
    "available",
    "model_class",
    "metric_owner",
    "plugin_errors",
    "load_plugins",
    "evaluate",
    "evaluate_layers",
    "geometry_key",
    "bit_config_dict",
]

for _cls in (MemoryModel, BitopsModel, MpicModel, PulpModel, TableModel, CallableModel):
    register(_cls)
del _cls
