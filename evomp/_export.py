"""``evomp export``: a front member as deployable integer weights, checked before writing.

Integer format (symmetric, zero-points 0), per quantized layer ``L``:

* weights: ``L.w_int`` (int8 up to 8 bits, int16 above) with ``L.w_scale`` per output
  channel: ``W[c] = w_int[c] * w_scale[c]``; ``L.w_bits[c]`` is the channel's bit-width,
  0 for a pruned channel (all-zero integers: its output is the bias alone);
* input activation: ``x_int = clamp(round(x / a_scale), a_qmin, a_qmax)`` with
  ``a_qmin = 0, a_qmax = 2^b - 1`` for a non-negative input and
  ``a_qmin = -a_qmax = -(2^(b-1) - 1)`` for a signed one;
* output: ``y[c] = (sum x_int * w_int[c]) * (a_scale * w_scale[c]) + bias[c]`` (the bias
  stays float; BatchNorm and every other layer stay float in ``fakequant_state.pt``).

A layer whose channels hold several precisions runs as one sub-kernel per precision
group. The check rebuilds every layer from these integers *that* way (one integer
convolution per group, outputs scattered back to the channels' original positions) and
compares it with the fake-quant model, layer by layer on the inputs the layer really sees
and end to end, on real validation data, before anything is written.
"""

from __future__ import annotations

import copy
import json
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from evomp._bitconfig import BitConfig
from evomp._errors import EvompError
from evomp.quant import QuantLayer, QuantModel
from evomp.quant._functional import act_int_range, weight_levels, weight_quant_consts
from evomp.quant._model import _set_submodule

__all__ = [
    "ExportResult",
    "export_run",
    "integer_arrays",
    "IntegerLayer",
    "rebuild_integer_model",
    "check_export",
    "select_member",
    "LAYER_RTOL",
]

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
        _set_submodule(net, name, IntegerLayer(q.module, fields))
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
        _set_submodule(net, name, _QDQLayer(layer))
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


# ------------------------------------------------------------------------ selection
def select_member(rows: Sequence[dict[str, Any]], pick: str | None = None,
                  best_under: str | None = None) -> dict[str, Any]:
    """The front row named by ``pick`` (an id such as ``p3``), or the most accurate one
    (validation accuracy after the final QAT; ties to the smaller metric) whose
    ``METRIC <= VALUE`` for ``best_under="METRIC=VALUE"``.

    Raises:
        EvompError: neither or both given, an unknown id or metric, or no member qualifies
            (naming the smallest value the front offers).
    """
    if (pick is None) == (best_under is None):
        raise EvompError("give exactly one of --pick ID or --best-under METRIC=VALUE")
    ids = [str(r["id"]) for r in rows]
    if pick is not None:
        for r in rows:
            if str(r["id"]) == pick:
                return dict(r)
        raise EvompError(f"no front member {pick!r}; the front has {ids}")
    m = re.fullmatch(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:=|<=)\s*([-+0-9.eE]+)\s*", best_under or "")
    if not m:
        raise EvompError(f"--best-under {best_under!r} is not METRIC=VALUE "
                         "(e.g. memory_bytes=10000)")
    metric, value = m.group(1), float(m.group(2))
    have = [k for k in (rows[0] if rows else {}) if k not in ("id", "genome_hash")]
    if rows and metric not in rows[0]:
        raise EvompError(f"front has no metric {metric!r}; it has {have}")
    ok = [r for r in rows if isinstance(r.get(metric), float) and r[metric] <= value]
    if not ok:
        vals = [r[metric] for r in rows if isinstance(r.get(metric), float)]
        low = f"; its smallest {metric} is {min(vals):.6g}" if vals else ""
        raise EvompError(f"no front member has {metric} <= {value:g}{low}")
    best = min(ok, key=lambda r: (-(r.get("val_accuracy") or 0.0), r[metric]))
    return dict(best)


# --------------------------------------------------------------------------- export
@dataclass
class ExportResult:
    """What :func:`export_run` wrote."""

    out: Path
    member: str
    files: dict[str, Path]
    check: dict[str, Any]
    onnx: dict[str, Any] = field(default_factory=dict)


def _load_quant_model(run_dir: Path, member: dict[str, Any], layer_names: list[str],
                      model: nn.Module | None) -> QuantModel:
    if model is None:
        raise EvompError("internal: no model")  # pragma: no cover
    state_path = run_dir / member["model"]
    if not state_path.is_file():
        raise EvompError(f"{state_path} is missing: the member's trained state dict is needed "
                         "(re-run the same command to verify the front again)")
    qm = QuantModel(model, layer_names)
    state = torch.load(state_path, map_location="cpu", weights_only=True)
    try:
        qm.load_state_dict(state)
    except RuntimeError as e:
        raise EvompError(f"{state_path} does not fit the model: {e}") from e
    return qm.eval()


def _check_bits(qm: QuantModel, cfg: BitConfig) -> None:
    """The state dict's bit buffers must be the member's configuration."""
    for name, q in zip(qm.layer_names, qm.qlayers):
        if tuple(int(b) for b in q.w_bits.tolist()) != tuple(cfg.weights[name]) or \
                int(q.a_bits) != int(cfg.activations[name]):
            raise EvompError(f"the trained model's bits of layer {name!r} differ from "
                             "front.json: the run directory is inconsistent")


def export_run(
    run_dir: str | Path,
    out: str | Path,
    *,
    pick: str | None = None,
    best_under: str | None = None,
    model: nn.Module | None = None,
    task: Any | None = None,
    onnx: bool = True,
    force: bool = False,
    n_check: int = 512,
) -> ExportResult:
    """Export one verified front member of a run directory.

    Args:
        run_dir: a finished run (search or baseline).
        out: the export directory (created; must be empty unless ``force``).
        pick / best_under: which member (see :func:`select_member`).
        model: a fresh float model of the run's architecture; default: built from the
            run's ``spec.toml`` (needed for runs made from Python with one's own model).
        task: the run's task (real inputs for the check); default: from ``spec.toml``.
        onnx: also write ``model.onnx`` when the onnx package is installed.
        force: allow writing into a non-empty ``out``.
        n_check: validation inputs used by the check.

    Raises:
        EvompError: bad selection, a run made from Python without ``model``/``task``, or
            an export that does not reproduce the fake-quant model (nothing is written).
    """
    from evomp._protocol import read_front

    d = Path(run_dir)
    if not (d / "front.csv").is_file():
        raise EvompError(f"{d} is not a finished run directory (no front.csv)")
    rows, members = read_front(d)
    row = select_member(rows, pick, best_under)
    gid = str(row["id"])
    member = members[gid]
    dest = Path(out)
    if dest.exists() and any(dest.iterdir()) and not force:
        raise EvompError(f"{dest} is not empty; pick another --out (or --force to overwrite "
                         "the export files in it)")
    from evomp._runner import _checkpoint_key, build_task
    from evomp._spec import load_spec
    from hwmodels import LayerTable

    spec = load_spec(d / "spec.toml")
    user = str(_checkpoint_key(d / "float.pt") or "").startswith("user")
    if user and (model is None or task is None):
        raise EvompError(f"{d} was made from Python with one's own model: export it with "
                         "evomp.export_run(DIR, OUT, pick=..., model=YourModel(), task=task)")
    if task is None:
        task = build_task(spec)
    if model is None:
        model = task.model_factory()
    table = LayerTable.from_json((d / "space.json").read_text())
    names = [lay.name for lay in table.layers]
    cfg = BitConfig.from_dict(member["bits"])
    qm = _load_quant_model(d, member, names, model)
    _check_bits(qm, cfg)
    arrays = integer_arrays(qm)
    from evomp.tasks import batches

    xs = []
    for x, _ in batches(task.val, 256):
        xs.append(x)
        if sum(len(t) for t in xs) >= n_check:
            break
    inputs = torch.cat(xs)[:n_check]
    check = check_export(qm, arrays, inputs)
    if not check["ok"]:
        raise EvompError(
            "the integer rebuild does not reproduce the fake-quant model (worst layer "
            f"relative error {check['max_layer_rel_error']:.3g} > {check['layer_rtol']:g} or "
            f"prediction agreement {check['prediction_agreement']:.4f} < "
            f"{check['agreement_required']}); nothing was written")
    dest.mkdir(parents=True, exist_ok=True)
    files = {
        "bits": dest / "bits.json",
        "weights": dest / "weights.npz",
        "state_dict": dest / "fakequant_state.pt",
        "manifest": dest / "manifest.json",
    }
    files["bits"].write_text(json.dumps(cfg.to_dict(), indent=1))
    # numpy's stubs match a ** argument against savez's allow_pickle: bool as well; the
    # values are arrays and numpy scalars, none named allow_pickle
    np.savez(files["weights"], **cast(dict[str, Any], arrays))
    torch.save(qm.state_dict(), files["state_dict"])
    onnx_info: dict[str, Any] = {"status": "not requested"}
    if onnx:
        onnx_info = export_onnx(qm, arrays, inputs[:64], dest / "model.onnx")
        if onnx_info["status"] == "written":
            files["onnx"] = dest / "model.onnx"
    meta = json.loads((d / "run.json").read_text()) if (d / "run.json").is_file() else {}
    hw = {k: v for k, v in row.items() if k not in
          ("id", "val_accuracy", "test_accuracy", "ptq_accuracy", "genome_hash", "violation")}
    manifest = {
        "evomp_export": 1,
        "run_dir": str(d),
        "member": gid,
        "genome_hash": member.get("genome_hash"),
        "method": meta.get("method"),
        "spec": spec.name,
        "task": {"name": task.name, "model": task.model_name,
                 "model_kwargs": dict(spec.task.model_kwargs) if not user else None},
        "metrics": {k: row.get(k) for k in ("val_accuracy", "test_accuracy", "ptq_accuracy")},
        "hardware": hw,
        "layers": [
            {"name": n, "w_bits_channels": {str(b): int(c) for b, c in
                                            zip(*np.unique(cfg.weights[n], return_counts=True))},
             "a_bits": int(cfg.activations[n]),
             "precision_groups": {str(b): [int(i) for i in np.nonzero(
                 np.asarray(cfg.weights[n]) == b)[0]] for b in sorted(set(cfg.weights[n]))}}
            for n in names],
        "format": __doc__.split("Integer format", 1)[1].split("A layer whose", 1)[0].strip(),
        "check": check,
        "onnx": onnx_info,
        "files": {k: v.name for k, v in files.items() if k != "manifest"},
    }
    files["manifest"].write_text(json.dumps(manifest, indent=1))
    return ExportResult(dest, gid, files, check, onnx_info)
