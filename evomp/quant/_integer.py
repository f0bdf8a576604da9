"""The integer format of a quantized model, its integer rebuild and the check.

A layer whose channels hold several precisions runs as one sub-kernel per precision
group. The check rebuilds every layer from the integers *that* way (one integer
convolution per group, outputs scattered back to the channels' original positions) and
compares it with the fake-quant model, layer by layer on the inputs the layer really sees
and end to end, on real validation data.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from evomp._errors import EvompError
from evomp.quant._functional import act_int_range, weight_levels, weight_quant_consts
from evomp.quant._layer import QuantLayer
from evomp.quant._model import QuantModel, set_submodule

__all__ = [
    "INTEGER_FORMAT",
    "integer_arrays",
    "IntegerLayer",
    "rebuild_integer_model",
    "check_export",
    "export_onnx",
    "LAYER_RTOL",
    "E2E_AGREEMENT",
]

#: the integer format, as written into an export's manifest
INTEGER_FORMAT = """Symmetric, zero-points 0, per quantized layer ``L``:

* weights: ``L.w_int`` (int8 up to 8 bits, int16 above) with ``L.w_scale`` per output
  channel: ``W[c] = w_int[c] * w_scale[c]``; ``L.w_bits[c]`` is the channel's bit-width,
  0 for a pruned channel (all-zero integers: its output is the bias alone);
* input activation: ``x_int = clamp(round(x / a_scale), a_qmin, a_qmax)`` with
  ``a_qmin = 0, a_qmax = 2^b - 1`` for a non-negative input and
  ``a_qmin = -a_qmax = -(2^(b-1) - 1)`` for a signed one;
* output: ``y[c] = (sum x_int * w_int[c]) * (a_scale * w_scale[c]) + bias[c]`` (the bias
  stays float; BatchNorm and every other layer stay float in ``fakequant_state.pt``)."""


#: per-layer tolerance: max |integer rebuild - fake-quant| <= LAYER_RTOL * max |fake-quant|
LAYER_RTOL = 1e-4


#: end to end: the rebuilt model's predictions agree with the fake-quant model's on at
#: least this share of the inputs (a one-step rounding flip deep in a network may move a
#: borderline sample; anything else is a wrong export)
E2E_AGREEMENT = 0.995


# ------------------------------------------------------------------------ integers
def _act_range(q: QuantLayer) -> tuple[float, int, int]:
    """``(a_scale, a_qmin, a_qmax)`` exactly as :func:`evomp.quant.quantize_act` uses."""
    qmin, qmax = act_int_range(int(q.a_bits), bool(q.a_signed))
    step = (q.a_alpha.detach().abs() + 1e-8) / qmax  # float32, as in the forward
    return float(step), qmin, qmax


def integer_arrays(qmodel: QuantModel) -> dict[str, np.ndarray]:
    """The integer weights, scales and ranges of every quantized layer (see module doc).

    Returns:
        ``{"<layer>.<field>": array}`` for fields ``w_int, w_scale, w_zero_point, w_bits,
        bias (if any), a_scale, a_zero_point, a_bits, a_qmin, a_qmax, a_signed``.
    """
    out: dict[str, Any] = {}  # arrays, and numpy scalars for the per-tensor fields
    for name, q in zip(qmodel.layer_names, qmodel.qlayers):
        w = q.module.weight.detach().float().cpu()
        bits = q.w_bits.detach().cpu()
        s = (q.w_scale.detach().float().cpu().abs() + 1e-12)
        qmax, keep, binary = weight_quant_consts(bits, w.dim(), w.dtype)
        _, wi = weight_levels(w, s.reshape((-1,) + (1,) * (w.dim() - 1)), qmax, binary)
        wi = wi * keep
        dtype = np.int8 if int(bits.max()) <= 8 else np.int16
        step, qmin, qmax_a = _act_range(q)
        out[f"{name}.w_int"] = wi.numpy().astype(dtype)
        out[f"{name}.w_scale"] = s.numpy().astype(np.float32)
        out[f"{name}.w_zero_point"] = np.zeros(len(s), dtype=np.int32)
        out[f"{name}.w_bits"] = bits.numpy().astype(np.int8)
        if q.module.bias is not None:
            out[f"{name}.bias"] = q.module.bias.detach().float().cpu().numpy()
        out[f"{name}.a_scale"] = np.float32(step)
        out[f"{name}.a_zero_point"] = np.int32(0)
        out[f"{name}.a_bits"] = np.int8(int(q.a_bits))
        out[f"{name}.a_qmin"] = np.int32(qmin)
        out[f"{name}.a_qmax"] = np.int32(qmax_a)
        out[f"{name}.a_signed"] = np.bool_(bool(q.a_signed))
    return out


class IntegerLayer(nn.Module):
    """A Conv1d/Conv2d/Linear executed from exported integers, one sub-kernel per
    precision group (see the module docstring). Knows nothing of the fake-quant layer it
    replaces but its geometry.

    Args:
        module: the original layer (only its geometry is used: stride, padding, groups).
        arrays: the layer's fields from :func:`integer_arrays` (without the name prefix).
    """

    w_int: torch.Tensor
    w_scale: torch.Tensor
    w_bits: torch.Tensor
    bias: torch.Tensor | None

    def __init__(self, module: nn.Module, arrays: dict[str, np.ndarray]) -> None:
        super().__init__()
        self.kind = ("linear" if isinstance(module, nn.Linear)
                     else "conv1d" if isinstance(module, nn.Conv1d) else "conv2d")
        # the convolution's geometry: stride, padding, dilation (ints, tuples, a string)
        self.geom: dict[str, Any] = {} if self.kind == "linear" else {
            "stride": module.stride, "padding": module.padding, "dilation": module.dilation,
            "groups": module.groups}
        if self.kind != "linear" and module.padding_mode != "zeros":
            raise EvompError(f"export supports zero padding only, not {module.padding_mode!r}")
        self.register_buffer("w_int", torch.as_tensor(arrays["w_int"].astype(np.float64)))
        self.register_buffer("w_scale", torch.as_tensor(arrays["w_scale"]))
        self.register_buffer("w_bits", torch.as_tensor(arrays["w_bits"].astype(np.int64)))
        bias = arrays.get("bias")
        self.register_buffer("bias", None if bias is None else torch.as_tensor(bias))
        self.a_scale = torch.tensor(float(arrays["a_scale"]), dtype=torch.float32)
        self.a_qmin = int(arrays["a_qmin"])
        self.a_qmax = int(arrays["a_qmax"])

    def _op(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        if self.kind == "linear":
            return F.linear(x, w)
        fn = F.conv1d if self.kind == "conv1d" else F.conv2d
        return fn(x, w, None, **self.geom)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the same float32 division and rounding as the fake-quant forward, then exact
        # integer arithmetic (float64 holds every product sum exactly)
        xi = torch.round(x / self.a_scale.to(x.device)).clamp_(self.a_qmin, self.a_qmax)
        xi = xi.double()
        ch = 1 if self.kind != "linear" else -1
        out: torch.Tensor | None = None
        # a sub-kernel holds only its group's rows of the weights; in a grouped convolution
        # an output channel's inputs depend on its position, so there the other rows are
        # zeroed instead of dropped
        sliced = self.geom.get("groups", 1) == 1
        for b in torch.unique(self.w_bits).tolist():
            if b == 0:
                continue  # pruned channels: no kernel, bias only
            idx = torch.nonzero(self.w_bits == b).reshape(-1).to(xi.device)
            if sliced:
                acc = self._op(xi, self.w_int.index_select(0, idx))
            else:
                keep = torch.zeros(self.w_int.shape[0], dtype=self.w_int.dtype,
                                   device=idx.device).index_fill_(0, idx, 1.0)
                rows = keep.reshape((-1,) + (1,) * (self.w_int.dim() - 1))
                acc = self._op(xi, self.w_int * rows).index_select(ch, idx)
            if out is None:
                shape = list(acc.shape)
                shape[ch] = self.w_int.shape[0]
                out = acc.new_zeros(shape)
            out.index_copy_(ch, idx, acc)
        if out is None:  # every channel pruned
            out = self._op(xi, torch.zeros_like(self.w_int))
        scale = (self.a_scale.double() * self.w_scale.double()).to(out.device)
        shape = [1] * out.dim()
        shape[ch] = -1
        y = out * scale.reshape(shape)
        if self.bias is not None:
            y = y + self.bias.double().reshape(shape)
        return y.to(x.dtype)


def rebuild_integer_model(qmodel: QuantModel, arrays: dict[str, np.ndarray]) -> nn.Module:
    """A copy of ``qmodel``'s network whose quantized layers run from ``arrays`` alone."""
    net = copy.deepcopy(qmodel.net)
    for name in qmodel.layer_names:
        q = net.get_submodule(name)
        assert isinstance(q, QuantLayer)
        fields = {k[len(name) + 1:]: v for k, v in arrays.items() if k.startswith(name + ".")
                  and "." not in k[len(name) + 1:]}
        set_submodule(net, name, IntegerLayer(q.module, fields))
    return net.eval()


@torch.no_grad()
def check_export(qmodel: QuantModel, arrays: dict[str, np.ndarray], inputs: torch.Tensor,
                 layer_rtol: float = LAYER_RTOL, agreement: float = E2E_AGREEMENT
                 ) -> dict[str, Any]:
    """Compare the integer rebuild with the fake-quant model on ``inputs``.

    Per layer, each rebuilt layer gets the very input its fake-quant layer saw, so errors
    do not compound; end to end, both models run on ``inputs``.

    Returns:
        A report: per-layer relative errors, end-to-end max abs difference, prediction
        agreement, tolerances and ``ok``.
    """
    qmodel.eval()
    rebuilt = rebuild_integer_model(qmodel, arrays)
    seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    hooks = [q.register_forward_hook(
        lambda m, a, o, n=n: seen.__setitem__(n, (a[0].detach(), o.detach())))
        for n, q in zip(qmodel.layer_names, qmodel.qlayers)]
    try:
        ref = qmodel(inputs)
    finally:
        for h in hooks:
            h.remove()
    layers = {}
    for name in qmodel.layer_names:
        x, y = seen[name]
        y2 = rebuilt.get_submodule(name)(x)
        denom = float(y.abs().max()) or 1.0
        layers[name] = float((y2 - y).abs().max()) / denom
    out = rebuilt(inputs)
    agree = float((out.argmax(dim=1) == ref.argmax(dim=1)).float().mean()) if ref.dim() > 1 \
        else float(torch.isclose(out, ref, rtol=1e-3, atol=1e-5).float().mean())
    worst = max(layers.values(), default=0.0)
    return {
        "inputs": int(inputs.shape[0]),
        "layer_rel_error": layers,
        "max_layer_rel_error": worst,
        "layer_rtol": layer_rtol,
        "output_max_abs_diff": float((out - ref).abs().max()),
        "output_max_abs": float(ref.abs().max()),
        "prediction_agreement": agree,
        "agreement_required": agreement,
        "ok": bool(worst <= layer_rtol and agree >= agreement),
    }


# ---------------------------------------------------------------------------- ONNX
class _QDQLayer(nn.Module):
    """The rebuilt layer as QuantizeLinear/DequantizeLinear pairs for ONNX export: the
    input clipped to its b-bit range and quantized per tensor, the weights per channel."""

    w: torch.Tensor
    w_scale: torch.Tensor
    w_zp: torch.Tensor

    def __init__(self, layer: IntegerLayer) -> None:
        super().__init__()
        self.kind, self.geom = layer.kind, layer.geom
        self.register_buffer("w", (layer.w_int * layer.w_scale.double().reshape(
            (-1,) + (1,) * (layer.w_int.dim() - 1))).float())
        self.register_buffer("w_scale", layer.w_scale.float().clone())
        self.register_buffer("w_zp", torch.zeros(len(layer.w_scale), dtype=torch.int32))
        self.bias = None if layer.bias is None else nn.Parameter(layer.bias.float().clone(),
                                                                 requires_grad=False)
        self.s = float(layer.a_scale)
        self.lo, self.hi = layer.a_qmin, layer.a_qmax
        self.unsigned = self.lo == 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.clamp(x, self.lo * self.s, self.hi * self.s)
        qmin, qmax = (0, 255) if self.unsigned else (-128, 127)
        x = torch.fake_quantize_per_tensor_affine(x, self.s, 0, qmin, qmax)
        w = torch.fake_quantize_per_channel_affine(self.w, self.w_scale, self.w_zp, 0, -128, 127)
        if self.kind == "linear":
            return F.linear(x, w, self.bias)
        fn = F.conv1d if self.kind == "conv1d" else F.conv2d
        return fn(x, w, self.bias, **self.geom)


def export_onnx(qmodel: QuantModel, arrays: dict[str, np.ndarray], example: torch.Tensor,
                path: Path) -> dict[str, Any]:
    """Write ``model.onnx`` with QDQ nodes when the ``onnx`` package is installed, and
    check it with onnxruntime when that is installed too.

    Returns:
        ``{"status": "written" | "skipped", "reason"?, "checked"?, "max_abs_diff"?}``.
    """
    try:
        import onnx
    except ImportError:
        return {"status": "skipped", "reason": "the onnx package is not installed "
                "(pip install onnx onnxruntime) - the npz and state dict were written"}
    bits = [int(v.max()) for k, v in arrays.items() if k.endswith(".w_bits")]
    abits = [int(v) for k, v in arrays.items() if k.endswith(".a_bits")]
    if max(bits + abits) > 8:
        return {"status": "skipped", "reason": "ONNX QDQ export supports up to 8 bits; "
                "this configuration has wider layers (the npz holds them)"}
    net = rebuild_integer_model(qmodel, arrays)
    for name in qmodel.layer_names:
        layer = cast(IntegerLayer, net.get_submodule(name))  # as rebuild_integer_model set
        set_submodule(net, name, _QDQLayer(layer))
    net.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(net, (example,), str(path), dynamo=False, opset_version=17,
                              input_names=["input"], output_names=["output"],
                              dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
        except Exception as e:  # exporter missing or refusing an op of the model
            return {"status": "skipped", "reason": f"torch.onnx.export failed: {e}"}
    model = onnx.load(str(path))
    ops = [n.op_type for n in model.graph.node]
    res: dict[str, Any] = {"status": "written", "quantize_nodes": ops.count("QuantizeLinear"),
                           "dequantize_nodes": ops.count("DequantizeLinear")}
    try:
        import onnxruntime as ort
    except ImportError:
        res["checked"] = False
        res["reason"] = "onnxruntime is not installed: the ONNX file was not run"
        return res
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input": example.cpu().numpy()})[0]
    with torch.no_grad():
        want = qmodel(example).cpu().numpy()
    res["checked"] = True
    res["max_abs_diff"] = float(np.abs(got - want).max())
    agree = float((got.argmax(1) == want.argmax(1)).mean()) if want.ndim > 1 else \
        float(np.isclose(got, want, rtol=1e-3, atol=1e-5).mean())
    res["prediction_agreement"] = agree
    res["ok"] = bool(agree >= E2E_AGREEMENT)
    return res
