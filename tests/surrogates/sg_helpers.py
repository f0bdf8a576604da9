"""Helpers of the surrogates tests: tiny models, a reference quantizer, layer tables.

The quantizers are injected dependencies of ``compute_sensitivity``: these small
reference versions keep the tests independent of evomp (one test also runs evomp's).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from hwmodels import Layer, LayerTable


def ref_quant_weight(w: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    """Per-channel symmetric max-abs fake-quant; 0 bit -> zeros, 1 bit -> sign * mean|w|."""
    flat = w.reshape(w.shape[0], -1)
    out = torch.zeros_like(flat)
    for c in range(w.shape[0]):
        b = int(bits[c])
        if b == 0:
            continue
        if b == 1:
            out[c] = torch.sign(flat[c]) * flat[c].abs().mean()
            continue
        qmax = 2 ** (b - 1) - 1
        s = flat[c].abs().max().clamp_min(1e-12) / qmax
        out[c] = torch.clamp(torch.round(flat[c] / s), -qmax, qmax) * s
    return out.reshape(w.shape)


def ref_quant_act(x: torch.Tensor, bits: int, signed: bool) -> torch.Tensor:
    """Per-tensor max-range fake-quant."""
    top = x.abs().max().clamp_min(1e-12)
    if signed:
        q = max(2 ** (bits - 1) - 1, 1)
        s = top / q
        return torch.clamp(torch.round(x / s), -q, q) * s
    q = 2**bits - 1
    s = top / q
    return torch.clamp(torch.round(x / s), 0, q) * s


class TanhNet(nn.Module):
    """Conv1d -> tanh -> ReLU conv -> Linear: smooth enough for exact Hessians."""

    def __init__(self, c1: int = 4, c2: int = 5, length: int = 6, n_out: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(2, c1, 3, padding=1)
        self.conv2 = nn.Conv1d(c1, c2, 3, padding=1)
        self.fc = nn.Linear(c2 * length, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.tanh(self.conv1(x))
        x = torch.relu(self.conv2(x))
        return self.fc(x.flatten(1))


def table_for(
    model: nn.Module,
    x: torch.Tensor,
    w_choices: tuple[int, ...] = (0, 2, 4, 8),
    a_choices: tuple[int, ...] = (2, 4, 8),
    pins: dict[str, tuple[int | None, int | None]] | None = None,
    granularity: str = "channel",
) -> LayerTable:
    """A LayerTable of the model's Conv1d/Linear layers, traced with hooks."""
    pins = pins or {}
    shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}
    hooks = []
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv1d, nn.Linear)):
            def fn(mod, inp, out, name=name):  # type: ignore[no-untyped-def]
                shapes[name] = (tuple(inp[0].shape[1:]), tuple(out.shape[1:]))
            hooks.append(m.register_forward_hook(fn))
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    layers = []
    for name, m in model.named_modules():
        if name not in shapes:
            continue
        ins, outs = shapes[name]
        conv = isinstance(m, nn.Conv1d)
        fan_in = m.weight[0].numel()
        w_pin, a_pin = pins.get(name, (None, None))
        layers.append(Layer(
            name=name, kind="conv1d" if conv else "linear",
            in_channels=m.weight.shape[1] * (m.groups if conv else 1),
            out_channels=m.weight.shape[0],
            kernel_size=tuple(m.kernel_size) if conv else (),
            groups=m.groups if conv else 1, fan_in=fan_in,
            macs_per_channel=fan_in * (math.prod(outs[1:]) if conv else 1),
            in_shape=ins, out_shape=outs, w_pinned=w_pin, a_pinned=a_pin,
        ))
    return LayerTable(tuple(layers), w_choices, a_choices, granularity)


def layers_of(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv1d, nn.Linear))]
