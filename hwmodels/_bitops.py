"""Bit operations: the usual hardware-agnostic proxy (EdMIPS, Free Bits' regularizer)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from hwmodels._base import BitBatch, Costs, HardwareModel

__all__ = ["BitopsModel"]


class BitopsModel(HardwareModel):
    """Sum over layers and channels of MACs x weight bits x activation bits."""

    name: ClassVar[str] = "bitops"
    metrics = {"bitops": "bit operations per inference: sum of MACs x w bits x a bits"}
    parameters: ClassVar[dict[str, str]] = {}
    monotone = frozenset(metrics)
    prune_monotone = frozenset(metrics)

    def __init__(self) -> None:
        super().__init__()

    def _layer_cost(self, batch: BitBatch) -> Costs:
        mpc = np.array([lay.macs_per_channel for lay in batch.table.layers], dtype=np.float64)
        return {"bitops": batch.w_bit_sum * mpc * batch.a_bits}
