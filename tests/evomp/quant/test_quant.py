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


# ------------------------------------------------------------------- bit range checks
@pytest.mark.parametrize(
    "w_bits, a_bits, match",
    [
        (None, 0, r"activation bits 0 are outside 1\.\.16"),
        (None, 17, r"activation bits 17 are outside 1\.\.16"),
        (None, 2.5, "activation bits must be an integer"),
        ([8, 8, 8, 8, 8, 17], None, r"weight bits \[17\] are outside 0\.\.16"),
        ([8, 8, -1, 8, 8, 8], None, r"weight bits \[-1\] are outside 0\.\.16"),
        ([8], None, "got 1 weight bit-widths for a layer with 6 output channels"),
        ([8.5] * 6, None, "weight bits must be integers"),
    ],
)
def test_set_bits_rejects_out_of_range(tiny_model, tiny_input, tiny_space, w_bits, a_bits,
                                       match) -> None:
    from evomp import EvompError

    qm = QuantModel(tiny_model, tiny_space.layer_names)
    qm.calibrate([tiny_input])
    conv = qm.qlayers[0]
    before = conv.w_bits.clone(), int(conv.a_bits)
    with pytest.raises(EvompError, match=match):
        conv.set_bits(None if w_bits is None else torch.tensor(w_bits), a_bits)
    assert torch.equal(conv.w_bits, before[0]) and int(conv.a_bits) == before[1]
    conv.set_bits(torch.tensor([0, 1, 2, 4, 8, 16]), 16)  # the ends of the range are fine
    conv.set_bits(None, 1)
    with torch.no_grad():
        assert torch.isfinite(qm(tiny_input)).all()


def test_moved_model_works_without_set_bits(tiny_model, tiny_input, tiny_space) -> None:
    qm = QuantModel(tiny_model, tiny_space.layer_names)
    qm.calibrate([tiny_input])
    wb, ab = tiny_space.decode(tiny_space.random(1, 5))
    qm.set_bits(wb[0], ab[0], tiny_space.table.layer_start)
    qm.eval()
    with torch.no_grad():
        ref = qm(tiny_input)
    qm.to(torch.float64)  # a dtype move stands in for .to("cuda") on a CPU-only machine
    for q in qm.qlayers:
        qmax, keep, _ = q._consts
        assert qmax.dtype == keep.dtype == torch.float64
        assert qmax.device == keep.device == q.module.weight.device
    with torch.no_grad():
        out = qm(tiny_input.double())
    assert out.dtype == torch.float64
    torch.testing.assert_close(out.float(), ref, rtol=1e-4, atol=1e-4)


def test_apply_config_checks_names_and_channels(tiny_model, tiny_input, tiny_space) -> None:
    from evomp import BitConfig, EvompError

    g = tiny_space.random(1, 7)
    cfg = tiny_space.to_config(g[0])
    a = QuantModel(tiny_model, tiny_space.layer_names)
    a.calibrate([tiny_input])
    a.apply_config(cfg)
    b = QuantModel(tiny_model, tiny_space.layer_names)
    b.calibrate([tiny_input])
    wb, ab = tiny_space.decode(g)
    b.set_bits(wb[0], ab[0], tiny_space.table.layer_start)
    for qa, qb in zip(a.qlayers, b.qlayers):
        assert torch.equal(qa.w_bits, qb.w_bits) and int(qa.a_bits) == int(qb.a_bits)
    one = BitConfig(weights={**cfg.weights, "conv": (4,)}, activations=cfg.activations)
    with pytest.raises(EvompError, match=r"weights\['conv'\] has 1 channels, the layer has 6"):
        a.apply_config(one)  # never broadcast to every channel
    extra = BitConfig(weights={**cfg.weights, "bn": (8,) * 6}, activations=cfg.activations)
    with pytest.raises(EvompError, match=r"names unknown layers \['bn'\]"):
        a.apply_config(extra)
    missing = BitConfig(weights=cfg.weights, activations={"conv": 8})
    with pytest.raises(EvompError, match=r"activations lacks layers \['dw', 'fc'\]"):
        a.apply_config(missing)
    assert not hasattr(a, "set_bits_by_name")


def test_set_bits_checks_lengths(tiny_model, tiny_input, tiny_space) -> None:
    from evomp import EvompError

    qm = QuantModel(tiny_model, tiny_space.layer_names)
    wb, ab = tiny_space.decode(tiny_space.uniform(8, 8))
    with pytest.raises(EvompError, match="decode genomes with the SearchSpace"):
        qm.set_bits(wb[0, :-1], ab[0], tiny_space.table.layer_start)
    with pytest.raises(EvompError, match="decode genomes with the SearchSpace"):
        qm.set_bits(wb[0], ab[0, :-1], tiny_space.table.layer_start)


def test_batchnorm_is_left_unchanged(tiny_model, tiny_input, tiny_space) -> None:
    tiny_model.train()
    with torch.no_grad():
        tiny_model(tiny_input)  # non-trivial running statistics
    bn_before = {k: v.clone() for k, v in tiny_model.bn.state_dict().items()}
    qm = QuantModel(tiny_model, tiny_space.layer_names)
    assert type(qm.net.bn) is torch.nn.BatchNorm1d  # not wrapped nor replaced
    qm.calibrate([tiny_input])
    for g in tiny_space.random(3, 1):
        wb, ab = tiny_space.decode(g[None])
        qm.set_bits(wb[0], ab[0], tiny_space.table.layer_start)
    qm.apply_config(tiny_space.to_config(tiny_space.uniform(2, 2)[0]))
    after = qm.net.bn.state_dict()
    assert set(after) == set(bn_before)
    for k, v in bn_before.items():
        assert torch.equal(after[k], v), k
    for k, v in tiny_model.bn.state_dict().items():  # the float model is not touched either
        assert torch.equal(v, bn_before[k]), k


def test_fused_nodes_match_plain_autograd() -> None:
    """The one-node fake-quant gives the gradients of the plain STE/LSQ composition,
    the |alpha| and |scale| steps included."""
    from evomp.quant._functional import quantize_weight_fast, round_ste, weight_quant_consts

    torch.manual_seed(0)
    x = (torch.randn(4, 3, 16) * 2).requires_grad_()
    for signed, b in ((False, 4), (True, 3)):
        a1 = torch.tensor(-1.7 if signed else 2.2, requires_grad=True)
        a2 = a1.detach().clone().requires_grad_()
        g = torch.randn(4, 3, 16)
        xin = x if signed else x.relu()
        (quantize_act(xin, b, a1, signed) * g).sum().backward()
        gx1 = x.grad.clone()
        x.grad = None
        qmax = 2 ** (b - 1) - 1 if signed else 2**b - 1
        qmin = -qmax if signed else 0
        step = (a2.abs() + 1e-8) / qmax
        xin = x if signed else x.relu()
        ref = round_ste(torch.clamp(xin / step, qmin, qmax)) * step
        (ref * g).sum().backward()
        torch.testing.assert_close(x.grad, gx1)
        torch.testing.assert_close(a2.grad, a1.grad)
        x.grad = None
    w = torch.randn(6, 3, 5, requires_grad=True)
    bits = torch.tensor([8, 0, 2, 4, 3, 8])
    s1 = torch.tensor([0.02, 0.1, -0.4, 0.15, 0.3, 0.01], requires_grad=True)
    s2 = s1.detach().clone().requires_grad_()
    g = torch.randn(6, 3, 5)
    qm, keep, binary = weight_quant_consts(bits, 3)
    (quantize_weight_fast(w, s1, qm, keep, binary, raw=True) * g).sum().backward()
    gw1 = w.grad.clone()
    w.grad = None
    s = (s2.abs() + 1e-12).reshape(-1, 1, 1)
    ref = round_ste(torch.minimum(torch.maximum(w / s, -qm), qm)) * s * keep
    (ref * g).sum().backward()
    torch.testing.assert_close(w.grad, gw1)
    torch.testing.assert_close(s2.grad, s1.grad)


def test_binary_channel_does_not_change_its_neighbours_gradients() -> None:
    """A 1-bit channel uses the sign STE; the other channels of the same layer keep the
    LSQ clipping of their own range."""
    from evomp.quant._functional import quantize_weight_fast, weight_quant_consts

    torch.manual_seed(0)
    w0 = torch.randn(4, 3, 5) * 3
    g = torch.randn(4, 3, 5)
    grads = []
    for bits in ([2, 1, 3, 2], [2, 8, 3, 2]):
        w = w0.clone().requires_grad_()
        s = torch.tensor([0.5, 0.7, 0.4, 0.3], requires_grad=True)
        qm, keep, binary = weight_quant_consts(torch.tensor(bits), 3)
        (quantize_weight_fast(w, s, qm, keep, binary, raw=True) * g).sum().backward()
        grads.append((w.grad.clone(), s.grad.clone()))
    (gw1, gs1), (gw2, gs2) = grads
    other = [0, 2, 3]
    torch.testing.assert_close(gw1[other], gw2[other])
    torch.testing.assert_close(gs1[other], gs2[other])
    torch.testing.assert_close(gw1[1], g[1])  # the sign STE passes everything
    assert (gw2[other] == 0).any()  # clipped weights of 2- and 3-bit channels get none
