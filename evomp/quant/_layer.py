"""A quantizable layer: the original Conv/Linear plus bit-width buffers and quantizer state."""

from __future__ import annotations

import numbers
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from evomp._errors import EvompError
from evomp.quant._functional import (
    calibrate_alpha,
    init_weight_scale,
    quantize_act,
    quantize_weight_fast,
    weight_grad_consts,
    weight_quant_consts,
)
from evomp.space import QUANTIZABLE

__all__ = ["QuantLayer"]

_MAX_BITS = 16


def _check_weight_bits(w_bits: object, out_channels: int) -> torch.Tensor:
    """``(out_channels,)`` long tensor of weight bits, validated."""
    t = torch.as_tensor(w_bits)
    if t.dtype == torch.bool or (t.is_floating_point() and not bool((t == t.round()).all())):
        raise EvompError(f"weight bits must be integers in 0..{_MAX_BITS}, got {t.tolist()}")
    t = t.to(torch.long).reshape(-1) if t.dim() else t.to(torch.long).reshape(1)
    if t.numel() != out_channels:
        raise EvompError(
            f"got {t.numel()} weight bit-widths for a layer with {out_channels} output "
            "channels; give one per channel"
        )
    if t.numel() and (int(t.min()) < 0 or int(t.max()) > _MAX_BITS):
        bad = sorted({int(b) for b in t.tolist() if not 0 <= b <= _MAX_BITS})
        raise EvompError(
            f"weight bits {bad} are outside 0..{_MAX_BITS} (0 = pruned channel); "
            f"use bit-widths from 0 to {_MAX_BITS}"
        )
    return t


def _check_act_bits(a_bits: object) -> int:
    """Activation bits as an int in ``1..16``, validated."""
    if isinstance(a_bits, torch.Tensor):
        a_bits = a_bits.item()
    if (isinstance(a_bits, bool) or not isinstance(a_bits, numbers.Real)
            or not float(a_bits).is_integer()):
        raise EvompError(f"activation bits must be an integer in 1..{_MAX_BITS}, got {a_bits!r}")
    b = int(a_bits)  # type: ignore[call-overload]
    if not 1 <= b <= _MAX_BITS:
        raise EvompError(
            f"activation bits {b} are outside 1..{_MAX_BITS}; use 1 to {_MAX_BITS} bits "
            "(activations cannot be pruned)"
        )
    return b


class QuantLayer(nn.Module):
    """Wraps one ``nn.Conv1d``/``nn.Conv2d``/``nn.Linear`` with fake-quantized weights and input.

    State (all re-configurable without rebuilding the module):
        ``w_bits`` buffer ``(out,)``: weight bits per output channel (0 = pruned).
        ``w_scale`` parameter ``(out,)``: per-channel step, learnable in QAT.
        ``a_bits`` buffer ``()``: input-activation bits.
        ``a_alpha`` parameter ``()``: clipping range, learnable in QAT.
        ``a_table`` buffer ``(17,)``: calibrated MSE-optimal range for every bit-width.
        ``a_signed`` buffer ``()``: whether the input is signed (set at calibration).
    """

    w_bits: torch.Tensor
    a_bits: torch.Tensor
    a_table: torch.Tensor
    a_signed: torch.Tensor

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        if not isinstance(module, QUANTIZABLE):
            raise TypeError(f"cannot quantize {type(module).__name__}")
        self.module = module
        out = module.weight.shape[0]
        dev = module.weight.device
        self.register_buffer("w_bits", torch.full((out,), 8, dtype=torch.long, device=dev))
        self.w_scale = nn.Parameter(torch.ones(out, device=dev))
        self.register_buffer("a_bits", torch.tensor(8, dtype=torch.long, device=dev))
        self.a_alpha = nn.Parameter(torch.tensor(1.0, device=dev))
        self.register_buffer("a_table", torch.ones(_MAX_BITS + 1, device=dev))
        self.register_buffer("a_signed", torch.tensor(True, device=dev))
        self._signed = True
        self._a_bits = 8
        self.quantize_weights = True
        self.quantize_input = True
        self.init_weight_scale()

    # ------------------------------------------------------------ configuration
    @torch.no_grad()
    def set_bits(self, w_bits: torch.Tensor | None = None, a_bits: int | None = None) -> None:
        """Set bit-widths in place and re-initialise the matching quantizer ranges.

        Args:
            w_bits: ``(out_channels,)`` integer weight bits in ``0..16`` (0 = pruned), or
                ``None`` to keep them.
            a_bits: input-activation bits in ``1..16``, or ``None`` to keep them.

        Raises:
            EvompError: a bit-width out of range, non-integer bits, or a wrong channel count.
        """
        if w_bits is not None:
            wb = _check_weight_bits(w_bits, self.w_bits.shape[0])
            self.w_bits.copy_(wb.to(self.w_bits.device))
            self.init_weight_scale()
        if a_bits is not None:
            ab = _check_act_bits(a_bits)
            self.a_bits.fill_(ab)
            self._a_bits = ab
            self.a_alpha.copy_(self.a_table[ab])

    @torch.no_grad()
    def init_weight_scale(self) -> None:
        """MSE-optimal per-channel scales for the current bits and weights."""
        w = self.module.weight
        self.w_scale.copy_(init_weight_scale(w, self.w_bits))
        self._refresh_consts()

    @torch.no_grad()
    def calibrate(self, x: torch.Tensor) -> None:
        """Record the input's sign and the MSE-optimal range for every bit-width."""
        signed = bool((x < 0).any())
        self._signed = signed
        self.a_signed.fill_(signed)
        for b in range(1, _MAX_BITS + 1):
            self.a_table[b] = calibrate_alpha(x, b, signed)
        self.a_alpha.copy_(self.a_table[int(self.a_bits)])

    def _load_from_state_dict(self, state_dict: Any, prefix: str, *args: Any,
                              **kwargs: Any) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._signed = bool(self.a_signed)
        self._a_bits = int(self.a_bits)
        self._refresh_consts()

    def _apply(self, fn: Any, recurse: bool = True) -> QuantLayer:
        """``.to()``, ``.cuda()``, ``.double()``...: the cached constants follow the weights."""
        out = super()._apply(fn, recurse)
        self._refresh_consts()
        return out

    def _refresh_consts(self) -> None:
        w = self.module.weight
        self._consts = weight_quant_consts(self.w_bits, w.dim(), w.dtype)
        self._grad_consts = weight_grad_consts(*self._consts)

    # ------------------------------------------------------------------ forward
    def quantized_weight(self) -> torch.Tensor:
        w = self.module.weight
        if not self.quantize_weights:
            return w
        qmax, keep, binary = self._consts
        # (no cache of the quantized weights for evaluation: fused Adam updates the weights
        # in place without bumping their version counter, so a cache could not tell)
        return quantize_weight_fast(
            w, self.w_scale, qmax, keep, binary, raw=True, grad_consts=self._grad_consts
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.quantize_input:
            x = quantize_act(x, self._a_bits, self.a_alpha, self._signed)
        w = self.quantized_weight()
        m = self.module
        if isinstance(m, nn.Linear):
            return F.linear(x, w, m.bias)
        if m.padding_mode != "zeros":
            return m._conv_forward(x, w, m.bias)
        if isinstance(m, nn.Conv1d):
            return F.conv1d(x, w, m.bias, m.stride, m.padding, m.dilation, m.groups)
        return F.conv2d(x, w, m.bias, m.stride, m.padding, m.dilation, m.groups)

    def extra_repr(self) -> str:
        return f"signed_input={self._signed}"
