"""Fake quantization: per-channel weight bits (0 = pruned) and per-tensor activation bits."""

from __future__ import annotations

from evomp.quant._functional import (
    calibrate_alpha,
    fake_quant_act,
    fake_quant_weight,
    init_weight_scale,
    quantize_act,
    quantize_weight,
    round_ste,
)
from evomp.quant._layer import QUANTIZABLE, QuantLayer
from evomp.quant._model import QuantModel

__all__ = [
    "QUANTIZABLE",
    "QuantLayer",
    "QuantModel",
    "calibrate_alpha",
    "fake_quant_act",
    "fake_quant_weight",
    "init_weight_scale",
    "quantize_act",
    "quantize_weight",
    "round_ste",
]
