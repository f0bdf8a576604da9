"""The fused fake-quant nodes (float masks, reused buffers, cached eval weights) against a
straightforward reference written here with plain torch ops and autograd."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from evomp.quant import QuantLayer


def _ref_weight(w: torch.Tensor, raw: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    """Per-channel STE/LSQ fake-quant of ``w`` (step ``|raw| + 1e-12``), plain ops."""
    shape = (-1,) + (1,) * (w.dim() - 1)
    s = (raw.abs() + 1e-12).reshape(shape)
    b = bits.reshape(shape)
    qmax = torch.clamp(2.0 ** (b.float() - 1) - 1, min=1.0)
    x = w / s
    clipped = torch.clamp(x, -qmax, qmax)  # clamp passes the gradient at the bounds too
    multi = clipped + (torch.round(clipped) - clipped).detach()  # STE, zero grad outside
    xw = w / s.detach()  # binary: the sign STE passes everything to w, the sign to s
    binary = xw + (torch.where(x >= 0, 1.0, -1.0) - xw).detach()
    q = torch.where(b == 1, binary, multi)
    return q * s * (b > 0).float()


def _ref_act(x: torch.Tensor, alpha: torch.Tensor, bits: int, signed: bool) -> torch.Tensor:
    qmax = max(2 ** (bits - 1) - 1, 1) if signed else 2**bits - 1
    qmin = -qmax if signed else 0
    step = (alpha.abs() + 1e-8) / qmax
    xc = torch.clamp(x / step, qmin, qmax)
    return (xc + (torch.round(xc) - xc).detach()) * step


@pytest.mark.parametrize("kind", ["conv1d", "conv2d", "linear"])
@pytest.mark.parametrize("signed", [False, True])
def test_layer_forward_backward_match_reference(kind: str, signed: bool) -> None:
    torch.manual_seed({"conv1d": 0, "conv2d": 1, "linear": 2}[kind] + 10 * signed)
    if kind == "conv1d":
        mod: nn.Module = nn.Conv1d(5, 10, 3, padding=1)
        x = torch.randn(6, 5, 12)
    elif kind == "conv2d":
        mod = nn.Conv2d(5, 10, 3, padding=1, bias=False)
        x = torch.randn(6, 5, 7, 7)
    else:
        mod = nn.Linear(20, 10)
        x = torch.randn(6, 20)
    x = (x * 2) if signed else (x * 2).relu()
    layer = QuantLayer(mod)
    layer.calibrate(x)
    assert layer._signed is signed
    bits = torch.tensor([0, 1, 2, 4, 8, 3, 1, 0, 8, 2])
    for a_bits in (2, 4, 8):
        layer.set_bits(bits, a_bits)
        with torch.no_grad():  # some negative raw scales: the |scale| path is exercised
            layer.w_scale[2] = -layer.w_scale[2]
            layer.a_alpha.mul_(0.6)  # clip a visible share of the inputs
        xin = x.clone().requires_grad_()
        g_out = torch.randn_like(layer(xin))

        layer.zero_grad(set_to_none=True)
        out = layer(xin)
        (out * g_out).sum().backward()
        fast = (out.detach(), xin.grad, mod.weight.grad, layer.w_scale.grad, layer.a_alpha.grad)

        w = mod.weight.detach().clone().requires_grad_()
        raw = layer.w_scale.detach().clone().requires_grad_()
        alpha = layer.a_alpha.detach().clone().requires_grad_()
        xr = x.clone().requires_grad_()
        wq = _ref_weight(w, raw, layer.w_bits)
        xq = _ref_act(xr, alpha, a_bits, signed)
        b = mod.bias
        if kind == "linear":
            ref = F.linear(xq, wq, b)
        elif kind == "conv1d":
            ref = F.conv1d(xq, wq, b, padding=1)
        else:
            ref = F.conv2d(xq, wq, b, padding=1)
        (ref * g_out).sum().backward()
        refs = (ref.detach(), xr.grad, w.grad, raw.grad, alpha.grad)
        names = ("out", "grad x", "grad w", "grad scale", "grad alpha")
        for name, a, r in zip(names, fast, refs):
            # the scale and range gradients are sums over a channel / the whole tensor,
            # accumulated in another order than the reference's, with cancellation (levels
            # up to 127 minus x/s): float rounding up to ~1e-3 here; one wrongly masked
            # element would move them by |g * level|, far more
            tol = 1e-3 if name in ("grad scale", "grad alpha") else 1e-5
            torch.testing.assert_close(a, r, rtol=tol, atol=tol, msg=lambda m, n=name: f"{n}: {m}")
        assert (mod.weight.grad[bits == 0] == 0).all()  # pruned channels learn nothing
        assert (layer.w_scale.grad[bits == 0] == 0).all()
        assert (fast[1] == 0).any() and (fast[1] != 0).any()  # clipping and passing inputs


def test_eval_weights_follow_every_update() -> None:
    """Evaluation (no autograd) quantizes the current weights: after a fused Adam step
    (which updates in place without bumping the version counter), new bits, a load."""
    from evomp.tasks._train import make_adam

    torch.manual_seed(0)
    layer = QuantLayer(nn.Conv1d(3, 4, 3))
    x = torch.randn(2, 3, 8)
    layer.calibrate(x)
    layer.set_bits(torch.tensor([8, 4, 0, 2]), 8)

    def ref() -> torch.Tensor:
        return _ref_weight(layer.module.weight, layer.w_scale, layer.w_bits).detach()

    opt = make_adam([{"params": list(layer.parameters()), "lr": 0.05}])
    for _ in range(2):
        with torch.no_grad():
            torch.testing.assert_close(layer.quantized_weight(), ref())
        layer(x).sum().backward()
        opt.step()
    with torch.no_grad():
        before = layer.quantized_weight().clone()
        torch.testing.assert_close(before, ref())
        layer.set_bits(torch.tensor([2, 2, 8, 1]))
        torch.testing.assert_close(layer.quantized_weight(), ref())
        layer.load_state_dict({k: v * 0.5 if k == "module.weight" else v
                               for k, v in layer.state_dict().items()})
        torch.testing.assert_close(layer.quantized_weight(), ref())
    w = layer.quantized_weight()  # with autograd: a node every call
    assert w.requires_grad and w.grad_fn is not None
