from __future__ import annotations

import numpy as np
import pytest
import torch

from evomp import SearchSpace
from evomp.quant import (
    QuantModel,
    calibrate_alpha,
    fake_quant_act,
    fake_quant_weight,
    quantize_act,
    quantize_weight,
)


def test_8bit_weight_error_bound() -> None:
    torch.manual_seed(0)
    w = torch.randn(16, 32)
    q = fake_quant_weight(w, torch.full((16,), 8))
    # per channel, the error is at most half a step of max|w| / 127
    step = w.abs().amax(1) / 127
    assert torch.all((q - w).abs().amax(1) <= step / 2 + 1e-6)


def test_error_decreases_with_bits() -> None:
    torch.manual_seed(0)
    w = torch.randn(4, 64)
    errs = [float(((fake_quant_weight(w, torch.full((4,), b)) - w) ** 2).sum())
            for b in (1, 2, 3, 4, 6, 8, 16)]
    assert all(a > b for a, b in zip(errs, errs[1:]))


def test_levels_per_bitwidth() -> None:
    torch.manual_seed(0)
    w = torch.randn(5, 500)
    q = fake_quant_weight(w, torch.tensor([0, 1, 2, 4, 8]))
    assert torch.count_nonzero(q[0]) == 0
    assert len(torch.unique(q[1])) == 2  # binary
    assert len(torch.unique(q[2])) <= 3  # ternary levels -1, 0, 1
    assert len(torch.unique(q[3])) <= 15
    assert len(torch.unique(q[4])) <= 255


def test_zero_bit_channel_outputs_bias_only(tiny_model, tiny_input, tiny_space) -> None:
    qm = QuantModel(tiny_model, tiny_space.layer_names)
    qm.calibrate([tiny_input])
    wb, ab = tiny_space.decode(tiny_space.uniform(8, 8))
    wb = wb.copy()
    wb[0, :3] = 0  # prune conv channels 0..2
    qm.set_bits(wb[0], ab[0], tiny_space.table.layer_start)
    conv = qm.qlayers[0]
    w = conv.quantized_weight()
    assert torch.count_nonzero(w[:3]) == 0
    out = conv(tiny_input)
    bias = conv.module.bias.detach()
    assert torch.allclose(out[:, :3], bias[:3, None].expand(16, 3, 8))


def test_ste_gradients_flow() -> None:
    torch.manual_seed(0)
    w = torch.randn(3, 10, requires_grad=True)
    s = torch.full((3,), 0.1, requires_grad=True)
    quantize_weight(w, torch.tensor([2, 4, 0]), s).sum().backward()
    assert w.grad is not None and s.grad is not None
    assert torch.count_nonzero(w.grad[2]) == 0  # pruned channel: no gradient
    assert torch.count_nonzero(w.grad[1]) > 0
    x = torch.randn(100, requires_grad=True)
    a = torch.tensor(1.0, requires_grad=True)
    y = quantize_act(x, 4, a, True)
    y.sum().backward()
    assert x.grad is not None and a.grad is not None
    inside = x.detach().abs() <= 1.0
    assert torch.all(x.grad[inside] == 1) and torch.all(x.grad[~inside] == 0)


def test_scale_gradient_matches_finite_difference() -> None:
    torch.manual_seed(0)
    x = torch.randn(1000) * 2
    a = torch.tensor(1.5, requires_grad=True)
    y = quantize_act(x, 3, a, True)
    (y * x).sum().backward()
    # LSQ gradient equals the derivative of sum((clip(x)/s rounded held fixed) * s * x)
    with torch.no_grad():
        qmax = 3
        s = 1.5 / qmax
        xs = x / s
        q = torch.round(xs).clamp(-qmax, qmax)
        inside = xs.abs() <= qmax
        expect = float(((q - xs * inside) * x).sum()) / qmax
    assert abs(float(a.grad) - expect) < 1e-3 * max(1.0, abs(expect))


def test_activation_quant_unsigned_and_error() -> None:
    torch.manual_seed(0)
    x = torch.rand(4096) * 3
    y = fake_quant_act(x, 8, signed=False)
    assert y.min() >= 0
    assert float(((y - x) ** 2).mean()) < 1e-4
    y2 = fake_quant_act(x, 2, signed=False)
    assert len(torch.unique(y2)) <= 4
    assert 0 < calibrate_alpha(x, 2, False) <= 3.0


def test_buffer_switching_equals_fresh_build(tiny_model, tiny_input, tiny_space) -> None:
    g1, g2 = tiny_space.random(2, 3)
    ls = tiny_space.table.layer_start
    a = QuantModel(tiny_model, tiny_space.layer_names)
    a.calibrate([tiny_input])
    a.eval()
    ids_before = [id(m) for m in a.modules()]
    for g in (g1, g2, g1):
        wb, ab = tiny_space.decode(g[None])
        a.reset_float()
        a.set_bits(wb[0], ab[0], ls)
    assert [id(m) for m in a.modules()] == ids_before  # nothing rebuilt
    b = QuantModel(tiny_model, tiny_space.layer_names)
    b.calibrate([tiny_input])
    wb, ab = tiny_space.decode(g1[None])
    b.set_bits(wb[0], ab[0], ls)
    b.eval()
    with torch.no_grad():
        assert torch.equal(a(tiny_input), b(tiny_input))


def test_reset_float_restores_weights(tiny_model, tiny_input, tiny_space) -> None:
    qm = QuantModel(tiny_model, tiny_space.layer_names)
    qm.calibrate([tiny_input])
    before = {k: v.clone() for k, v in qm.state_dict().items()}
    with torch.no_grad():
        for p in qm.parameters():
            p.add_(1.0)
    qm.reset_float()
    for k, v in qm.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_state_dict_roundtrip_keeps_learned_scales(tiny_model, tiny_input, tiny_space) -> None:
    qm = QuantModel(tiny_model, tiny_space.layer_names)
    qm.calibrate([tiny_input])
    with torch.no_grad():
        qm.qlayers[0].w_scale.mul_(1.7)
    sd = {k: v.clone() for k, v in qm.state_dict().items()}
    qm2 = QuantModel(tiny_model, tiny_space.layer_names)
    qm2.load_state_dict(sd)
    assert torch.equal(qm2.qlayers[0].w_scale, sd["net.conv.w_scale"])
    qm.eval()
    qm2.eval()
    with torch.no_grad():
        assert torch.equal(qm(tiny_input), qm2(tiny_input))


def test_conv2d_grouped_quant() -> None:
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Conv2d(4, 8, 3, groups=2, padding=1), torch.nn.ReLU(),
                            torch.nn.Conv2d(8, 8, 3, groups=8), torch.nn.Flatten())
    x = torch.randn(4, 4, 6, 6)
    space = SearchSpace.from_model(m, x)
    assert space.table.layers[1].groups == 8 and space.table.layers[1].fan_in == 9
    qm = QuantModel(m, space.layer_names)
    qm.calibrate([x])
    wb, ab = space.decode(space.uniform(8, 8))
    qm.set_bits(wb[0], ab[0], space.table.layer_start)
    with torch.no_grad():
        assert torch.allclose(qm(x), m(x), atol=0.05)
    np.testing.assert_array_equal(ab[0], [8, 8])


def test_unknown_module_is_clear_error(tiny_model) -> None:
    from evomp import EvompError

    with pytest.raises(EvompError, match="no module named 'nope'"):
        QuantModel(tiny_model, ["nope"])
