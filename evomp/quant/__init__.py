"""Fake quantization (per-channel weight bits, 0 = pruned; per-tensor activation bits)
and the integer format a quantized model exports to, with its check.
"""

from __future__ import annotations

from evomp.quant._functional import (
    act_int_range,
    calibrate_alpha,
    fake_quant_act,
    fake_quant_weight,
    init_weight_scale,
    quantize_act,
    quantize_weight,
    round_ste,
    weight_levels,
    weight_quant_consts,
)
from evomp.quant._integer import (
    E2E_AGREEMENT,
    INTEGER_FORMAT,
    LAYER_RTOL,
    IntegerLayer,
    check_export,
    export_onnx,
    integer_arrays,
    rebuild_integer_model,
)
from evomp.quant._layer import QuantLayer
from evomp.quant._model import QuantModel, set_submodule

__all__ = [
    "E2E_AGREEMENT",
    "INTEGER_FORMAT",
    "IntegerLayer",
    "LAYER_RTOL",
    "QuantLayer",
    "QuantModel",
    "act_int_range",
    "calibrate_alpha",
    "check_export",
    "export_onnx",
    "fake_quant_act",
    "fake_quant_weight",
    "init_weight_scale",
    "integer_arrays",
    "quantize_act",
    "quantize_weight",
    "rebuild_integer_model",
    "round_ste",
    "set_submodule",
    "weight_levels",
    "weight_quant_consts",
]
