"""Export: integer weights and scales rebuild the fake-quant model, mixed layers included."""

from __future__ import annotations

import builtins
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from evomp import EvompError
from evomp.quant import QuantModel
from evomp.quant._integer import check_export, export_onnx, integer_arrays, rebuild_integer_model
from evomp.reports._export import select_member


def _mixed_model(model, space, x) -> QuantModel:  # type: ignore[no-untyped-def]
    qm = QuantModel(model, space.layer_names)
    qm.calibrate([x])
    t = space.table
    # the first conv holds 0, 2, 4 and 8-bit channels together, in an interleaved order
    wb = np.full(t.n_channels, 4)
    wb[: t.layers[0].out_channels] = [8, 0, 2, 4, 2, 8][: t.layers[0].out_channels]
    wb[t.layer_start[1]: t.layer_start[2]] = [2, 8, 0, 4, 4, 2]
    ab = np.array([8, 4, 2])
    qm.set_bits(wb, ab, t.layer_start)
    return qm.eval()


def test_mixed_precision_layer_round_trips(tiny_model, tiny_space, tiny_input) -> None:
    qm = _mixed_model(tiny_model, tiny_space, tiny_input)
    arrays = integer_arrays(qm)
    assert sorted(set(arrays["conv.w_bits"].tolist())) == [0, 2, 4, 8]
    w = arrays["conv.w_int"]
    assert w.dtype == np.int8
    assert not w[arrays["conv.w_bits"] == 0].any()  # pruned channels: all-zero integers
    for b in (2, 4, 8):  # integers stay in each channel's own range
        assert np.abs(w[arrays["conv.w_bits"] == b]).max() <= 2 ** (b - 1) - 1
    rep = check_export(qm, arrays, tiny_input)
    assert rep["ok"], rep
    assert rep["max_layer_rel_error"] < 1e-5
    with torch.no_grad():
        np.testing.assert_allclose(rebuild_integer_model(qm, arrays)(tiny_input).numpy(),
                                   qm(tiny_input).numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("corrupt", ["swap_channels", "activation_bits", "scale"])
def test_check_catches_a_wrong_export(tiny_model, tiny_space, tiny_input, corrupt) -> None:
    qm = _mixed_model(tiny_model, tiny_space, tiny_input)
    arrays = integer_arrays(qm)
    if corrupt == "swap_channels":  # what a group-wise export that reorders channels does
        bits = arrays["conv.w_bits"]
        i, j = int(np.nonzero(bits == 8)[0][0]), int(np.nonzero(bits == 2)[0][0])
        for k in ("conv.w_int", "conv.w_scale", "conv.w_bits"):
            arrays[k][[i, j]] = arrays[k][[j, i]]
    elif corrupt == "activation_bits":
        arrays["dw.a_qmax"] = np.int32(255)
        arrays["dw.a_scale"] = np.float32(arrays["dw.a_scale"] * 15 / 255)
    else:
        arrays["fc.w_scale"] = arrays["fc.w_scale"] * 1.01
    rep = check_export(qm, arrays, tiny_input)
    assert not rep["ok"]


def test_select_member() -> None:
    rows = [{"id": "p0", "val_accuracy": 0.80, "memory_bytes": 1000.0},
            {"id": "p1", "val_accuracy": 0.95, "memory_bytes": 4000.0},
            {"id": "p2", "val_accuracy": 0.97, "memory_bytes": 9000.0}]
    assert select_member(rows, pick="p1")["id"] == "p1"
    assert select_member(rows, best_under="memory_bytes=5000")["id"] == "p1"
    assert select_member(rows, best_under="memory_bytes<=9000")["id"] == "p2"
    with pytest.raises(EvompError, match="smallest memory_bytes is 1000"):
        select_member(rows, best_under="memory_bytes=500")
    with pytest.raises(EvompError, match="no metric 'energy_uj'"):
        select_member(rows, best_under="energy_uj=1")
    with pytest.raises(EvompError, match="no front member 'p9'"):
        select_member(rows, pick="p9")
    with pytest.raises(EvompError, match="exactly one"):
        select_member(rows)
    with pytest.raises(EvompError, match="METRIC=VALUE"):
        select_member(rows, best_under="memory_bytes")


def test_onnx_qdq_export_matches(tiny_model, tiny_space, tiny_input, tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    qm = _mixed_model(tiny_model, tiny_space, tiny_input)
    res = export_onnx(qm, integer_arrays(qm), tiny_input, tmp_path / "m.onnx")
    assert res["status"] == "written" and res["checked"] and res["ok"], res
    assert res["quantize_nodes"] >= 6 and res["dequantize_nodes"] >= 6
    assert res["max_abs_diff"] < 1e-3


def test_onnx_skipped_with_a_clear_message(tiny_model, tiny_space, tiny_input, tmp_path,
                                           monkeypatch) -> None:
    real = builtins.__import__

    def no_onnx(name, *a, **k):  # type: ignore[no-untyped-def]
        if name == "onnx" or name.startswith("onnx."):
            raise ImportError("No module named 'onnx'")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_onnx)
    qm = _mixed_model(tiny_model, tiny_space, tiny_input)
    res = export_onnx(qm, integer_arrays(qm), tiny_input, tmp_path / "m.onnx")
    assert res["status"] == "skipped" and "pip install onnx" in res["reason"]
    assert not (tmp_path / "m.onnx").exists()
    json.dumps(res)  # goes into the manifest
