"""Memory footprint: packed weights, per-channel parameters, and the peak activation buffer."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from hwmodels._base import BitBatch, Costs, HardwareModel

__all__ = ["MemoryModel"]


def _geometry(batch: BitBatch) -> dict[str, np.ndarray]:
    layers = batch.table.layers
    return {
        "fan_in": np.array([lay.fan_in for lay in layers], dtype=np.float64),
        "bias": np.array([lay.has_bias for lay in layers], dtype=np.float64),
        "in_numel": np.array([lay.in_numel for lay in layers], dtype=np.float64),
        "out_numel": np.array([lay.out_numel for lay in layers], dtype=np.float64),
        "out_channels": np.array([max(lay.out_channels, 1) for lay in layers], dtype=np.float64),
    }


class MemoryModel(HardwareModel):
    """Bytes of packed weights with their per-channel parameters, plus the peak activation buffer.

    * Weights: ``fan_in x bits`` per output channel, packed (a pruned channel costs nothing).
    * Per kept channel: a quantization scale (``qparam_bits``) and, if the layer has one,
      a bias (``bias_bits``). Weights are symmetric, so there is no zero point.
    * Activations: while a layer runs, its input (at its activation bits) and its output
      (at the next layer's activation bits; the last layer's at ``last_output_bits``)
      are both live. Pruned output channels are not stored. The peak over layers is the
      buffer to reserve (tensors are not assumed to be shared across skip connections,
      and pruning is not assumed to shrink the next layer's input).
    """

    name: ClassVar[str] = "memory"
    metrics = {
        "memory_bytes": "bytes: weight_bytes + activation_bytes (flash + RAM footprint)",
        "weight_bytes": "bytes: packed weights + per-channel scale and bias of kept channels",
        "activation_bytes": "bytes: peak over layers of input + output activation buffer",
    }
    parameters: ClassVar[dict[str, str]] = {
        "qparam_bits": "bits per kept channel for its quantization scale (int32 multiplier "
        "or float32; CMSIS-NN/PULP-NN style per-channel requantization)",
        "bias_bits": "bits per kept channel's bias (int32 accumulator domain)",
        "last_output_bits": "bits of the last layer's output (int32 logits)",
    }
    monotone = frozenset(metrics)
    prune_monotone = frozenset(metrics)

    def __init__(self, qparam_bits: int = 32, bias_bits: int = 32,
                 last_output_bits: int = 32) -> None:
        for k, v in (("qparam_bits", qparam_bits), ("bias_bits", bias_bits),
                     ("last_output_bits", last_output_bits)):
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 0:
                raise ValueError(f"{k} must be a non-negative integer, got {v!r}")
        super().__init__(qparam_bits=qparam_bits, bias_bits=bias_bits,
                         last_output_bits=last_output_bits)
        self.qparam_bits = int(qparam_bits)
        self.bias_bits = int(bias_bits)
        self.last_output_bits = int(last_output_bits)

    def _layer_cost(self, batch: BitBatch) -> Costs:
        geo = _geometry(batch)
        per_channel = self.qparam_bits + self.bias_bits * geo["bias"]  # (L,)
        bits = batch.w_bit_sum * geo["fan_in"] + batch.kept * per_channel
        return {"weight_bytes": bits / 8.0}

    def _layer_extra(self, batch: BitBatch) -> Costs:
        geo = _geometry(batch)
        keep = batch.kept / geo["out_channels"]
        out_bits = batch.out_a_bits(self.last_output_bits)
        buf = geo["in_numel"] * batch.a_bits + geo["out_numel"] * keep * out_bits
        return {"activation_bytes": buf / 8.0}

    def _cost(self, batch: BitBatch) -> Costs:
        w = self._layer_cost(batch)["weight_bytes"].sum(axis=1)
        a = self._layer_extra(batch)["activation_bytes"]
        a = a.max(axis=1) if a.shape[1] else np.zeros(batch.n)
        return {"memory_bytes": w + a, "weight_bytes": w, "activation_bytes": a}
