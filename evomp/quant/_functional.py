"""Fake-quantization functions with straight-through gradients.

Weights: per-output-channel symmetric quantization with a per-channel scale (learnable
during QAT, LSQ-style). ``b`` bits give the signed levels ``-(2^(b-1)-1) .. 2^(b-1)-1``
times the scale; ``b = 1`` is binary (``±scale``); ``b = 0`` prunes the channel (zeros).

Activations: per-tensor, unsigned (``0 .. 2^b-1`` levels over ``[0, alpha]``) when the
tensor is non-negative, signed (``±(2^(b-1)-1)`` levels over ``[-alpha, alpha]``)
otherwise; ``alpha`` is calibrated by minimising the mean squared error and is learnable
during QAT (PACT-style).
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = [
    "round_ste",
    "weight_qmax",
    "init_weight_scale",
    "quantize_weight",
    "fake_quant_weight",
    "act_levels",
    "act_int_range",
    "weight_levels",
    "weight_grad_consts",
    "calibrate_alpha",
    "quantize_act",
    "fake_quant_act",
]

_CLIP_GRID = torch.linspace(0.05, 1.0, 40)


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round in the forward pass, identity gradient in the backward pass."""
    return x + (torch.round(x) - x).detach()


def _sign_ste(x: torch.Tensor) -> torch.Tensor:
    s = torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))
    return x + (s - x).detach()


def weight_qmax(bits: torch.Tensor) -> torch.Tensor:
    """Largest integer level per channel: ``2^(b-1)-1`` for ``b >= 2``, 1 for ``b <= 1``.

    Args:
        bits: ``(out,)`` integer bit-widths.

    Returns:
        ``(out,)`` float tensor.
    """
    b = bits.to(torch.float32)
    return torch.clamp(torch.pow(2.0, b - 1.0) - 1.0, min=1.0)


def _flat(w: torch.Tensor) -> torch.Tensor:
    return w.reshape(w.shape[0], -1)


def init_weight_scale(w: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    """Per-channel scale minimising the squared quantization error of each channel.

    A grid of clipping ratios (5% .. 100% of the channel's max magnitude) is searched for
    every channel at once; binary channels use the L2-optimal ``mean |w|``.

    Args:
        w: ``(out, ...)`` weights.
        bits: ``(out,)`` bit-widths.

    Returns:
        ``(out,)`` positive scales (pruned channels get 1.0, unused).
    """
    with torch.no_grad():
        wf = _flat(w).float()
        maxabs = wf.abs().amax(dim=1).clamp_min(1e-12)
        qmax = weight_qmax(bits.to(w.device))
        grid = _CLIP_GRID.to(w.device)
        # (out, G) candidate scales
        cand = maxabs[:, None] * grid[None, :] / qmax[:, None]
        x = wf[:, None, :] / cand[:, :, None]
        q = torch.clamp(torch.round(x), -qmax[:, None, None], qmax[:, None, None])
        err = ((q * cand[:, :, None] - wf[:, None, :]) ** 2).sum(dim=2)
        scale = cand.gather(1, err.argmin(dim=1, keepdim=True)).squeeze(1)
        binary = bits == 1
        if binary.any():
            scale = torch.where(binary, wf.abs().mean(dim=1).clamp_min(1e-12), scale)
        return torch.where(bits > 0, scale, torch.ones_like(scale))


def weight_levels(
    w: torch.Tensor, scale: torch.Tensor, qmax: torch.Tensor, binary: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(w / scale, integer levels)``: rounded and clipped to ``±qmax``; binary channels
    take the sign. What the fake-quant forward and the integer export both compute (the
    levels of pruned channels are not zeroed here: multiply by ``keep``)."""
    x = w / scale
    q = torch.round(x).clamp_(min=-qmax, max=qmax)
    if binary is not None:
        q = torch.where(binary, torch.where(x >= 0, 1.0, -1.0).to(q.dtype), q)
    return x, q


class _WeightFakeQuant(torch.autograd.Function):
    """Per-channel fake-quant as one autograd node (STE for ``w``, LSQ for ``scale``).

    With ``raw=True`` the node takes the learnable parameter and uses
    ``|scale| + 1e-12`` as the step (formed inside: one node instead of three).

    The backward works on float 0/1 masks, never on bool tensors: on the CPU a bool
    ``where``/compare costs 5-10 times a float multiply (torch 2.x kernels), and the
    per-channel constants ``grad_consts`` (:func:`weight_grad_consts`) fold the pruned and
    binary channels into the masks, so the gradients are bit-for-bit those of the
    composition ``where(inside | binary, g * keep, 0)`` / ``sum(g * keep * ds)``.
    """

    @staticmethod
    def forward(ctx: Any, w: torch.Tensor, scale: torch.Tensor, qmax: Any, keep: Any,
                binary: Any, raw: Any, grad_consts: Any) -> torch.Tensor:
        sign = torch.sign(scale) if raw else None
        if raw:
            scale = scale.abs() + 1e-12
        x, q = weight_levels(w, scale, qmax, binary)
        out = q * (scale * keep)  # keep is 0/1: the same bits as (q * scale) * keep
        limit, nonbin = grad_consts
        ctx.save_for_backward(x, q, keep if sign is None else keep * sign, limit, nonbin)
        ctx.shape = scale.shape
        return out

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> Any:
        x, q, keep_sign, limit, nonbin = ctx.saved_tensors
        # 1 where w passes (inside the clipping range, or binary), 0 elsewhere and when pruned
        mw = torch.le(x.abs(), limit, out=torch.empty_like(x))
        gw = g * mw
        ms = mw if nonbin is None else mw * nonbin  # LSQ's "inside": binary channels never
        ds = torch.addcmul(q, x, ms, value=-1.0)  # q - x inside, q (the level) outside
        dims = tuple(range(1, g.dim()))
        gs = (g * ds).sum(dim=dims, keepdim=True) * keep_sign
        return gw, gs.reshape(ctx.shape), None, None, None, None, None


def weight_grad_consts(
    qmax: torch.Tensor, keep: torch.Tensor, binary: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-channel constants of the fake-quant backward, from :func:`weight_quant_consts`.

    Returns:
        ``(limit, nonbin)`` broadcastable like ``qmax``: ``limit`` is the clipping level
        ``|w / s|`` may reach and still pass the gradient (``qmax``; ``inf`` for binary
        channels, whose sign STE passes everything; ``-1`` for pruned channels, which
        pass nothing); ``nonbin`` is 0 for binary channels, 1 otherwise (``None`` when the
        layer has none).
    """
    limit = torch.where(keep > 0, qmax, -torch.ones_like(qmax))
    if binary is None:
        return limit, None
    limit = torch.where(binary & (keep > 0), torch.full_like(qmax, float("inf")), limit)
    return limit, (~binary).to(qmax.dtype)


def quantize_weight(w: torch.Tensor, bits: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Fake-quantize weights per output channel with straight-through rounding.

    Gradients reach ``w`` (STE, zero outside the clipping range) and ``scale`` (LSQ).

    Args:
        w: ``(out, ...)`` weights.
        bits: ``(out,)`` integer bit-widths in 0..16.
        scale: ``(out,)`` positive per-channel step sizes.

    Returns:
        Tensor shaped like ``w``; channels with 0 bits are exactly zero.
    """
    qmax, keep, binary = weight_quant_consts(bits, w.dim(), w.dtype)
    return quantize_weight_fast(w, scale, qmax, keep, binary)


def weight_quant_consts(
    bits: torch.Tensor, dim: int, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Broadcastable ``(qmax, keep, binary-mask-or-None)`` for :func:`quantize_weight_fast`.

    Computed once per configuration (a layer caches them when its bits change).
    """
    shape = (-1,) + (1,) * (dim - 1)
    b = bits.reshape(shape)
    qmax = weight_qmax(bits).to(dtype).reshape(shape)
    keep = (b > 0).to(dtype)
    binary = (b == 1) if bool((bits == 1).any()) else None
    return qmax, keep, binary


def quantize_weight_fast(
    w: torch.Tensor,
    scale: torch.Tensor,
    qmax: torch.Tensor,
    keep: torch.Tensor,
    binary: torch.Tensor | None,
    raw: bool = False,
    grad_consts: tuple[torch.Tensor, torch.Tensor | None] | None = None,
) -> torch.Tensor:
    """:func:`quantize_weight` with the per-configuration constants precomputed.

    ``raw=True``: ``scale`` is the learnable parameter and the step is ``|scale| + 1e-12``.
    ``grad_consts``: :func:`weight_grad_consts` of ``(qmax, keep, binary)`` if cached
    (derived here otherwise). Without autograd (``no_grad``, or nothing requires a
    gradient) the same values come from plain tensor ops, no node is recorded.
    """
    shape = (-1,) + (1,) * (w.dim() - 1)
    scale = scale.reshape(shape)
    if not torch.is_grad_enabled() or not (w.requires_grad or scale.requires_grad):
        if raw:
            scale = scale.abs() + 1e-12
        return weight_levels(w, scale, qmax, binary)[1] * (scale * keep)
    if grad_consts is None:
        grad_consts = weight_grad_consts(qmax, keep, binary)
    return _WeightFakeQuant.apply(w, scale, qmax, keep, binary, raw, grad_consts)


def fake_quant_weight(w: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    """Quantize with the MSE-initialised scale: what PTQ and the start of QAT apply.

    Args:
        w: ``(out, ...)`` weights.
        bits: ``(out,)`` integer bit-widths (0 = pruned).

    Returns:
        Tensor shaped like ``w``.
    """
    bits = torch.as_tensor(bits, dtype=torch.long, device=w.device)
    if bits.shape != (w.shape[0],):
        raise ValueError(f"bits must have shape ({w.shape[0]},), got {tuple(bits.shape)}")
    return quantize_weight(w, bits, init_weight_scale(w, bits))


def act_levels(bits: int | torch.Tensor, signed: bool | torch.Tensor) -> torch.Tensor:
    """Largest integer level of an activation quantizer (``2^b-1`` or ``2^(b-1)-1``)."""
    b = torch.as_tensor(bits, dtype=torch.float32)
    sg = torch.as_tensor(signed)
    return torch.where(sg, torch.clamp(2.0 ** (b - 1) - 1, min=1.0), 2.0**b - 1)


class _ActFakeQuant(torch.autograd.Function):
    """Per-tensor fake-quant as one autograd node: STE for ``x``, LSQ for the range.

    The step ``(|alpha| + 1e-8) / qmax`` is formed inside the node (one node per layer
    and step instead of four: what a QAT step pays per layer is mostly node overhead).
    The "inside the range" mask is kept as a float 0/1 tensor written over ``x / step``
    (``torch.eq(..., out=float)``): a bool mask and ``where`` cost 5-10 times a float
    multiply on the CPU, and the float mask needs no extra buffer. The node keeps two
    activation-sized buffers (mask and per-element LSQ derivative) and returns the third.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, alpha: torch.Tensor, qmin: Any,
                qmax: Any) -> torch.Tensor:
        step = (alpha.abs() + 1e-8) / qmax
        xs = x / step
        xc = xs.clamp(qmin, qmax)
        out = torch.round(xc)  # = clamp(round(xs)): the bounds are integers
        inside = torch.eq(xc, xs, out=xs)  # 1.0 inside the (inclusive, as in LSQ) range
        # d(q*s)/ds per element: q - x/s inside the range (LSQ), the clipped level outside
        # (inside, the clamped xc is x/s); written over xc, so two buffers are kept, not three
        ds = torch.addcmul(out, inside, xc, value=-1.0, out=xc)
        ctx.save_for_backward(inside, ds, alpha)
        ctx.qmax = qmax
        return out.mul_(step)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> Any:
        inside, ds, alpha = ctx.saved_tensors
        gs = torch.dot(g.reshape(-1), ds.reshape(-1))
        ga = (gs * torch.sign(alpha) / ctx.qmax).reshape(alpha.shape)
        return g * inside, ga, None, None


def quantize_act(
    x: torch.Tensor, bits: int | torch.Tensor, alpha: torch.Tensor, signed: torch.Tensor | bool
) -> torch.Tensor:
    """Fake-quantize a tensor per tensor over ``[0, alpha]`` or ``[-alpha, alpha]``.

    Gradients reach ``x`` (STE inside the range) and ``alpha`` (LSQ, equivalent to
    PACT's learnable clipping range).
    """
    qmin, qmax = act_int_range(int(bits), bool(signed))
    if not torch.is_grad_enabled() or not (x.requires_grad or alpha.requires_grad):
        step = (alpha.abs() + 1e-8) / qmax
        return torch.round(torch.clamp(x / step, qmin, qmax)) * step
    return _ActFakeQuant.apply(x, alpha, qmin, qmax)


def act_int_range(bits: int, signed: bool) -> tuple[int, int]:
    """``(qmin, qmax)`` integer levels of a ``bits``-bit activation quantizer."""
    if signed:
        qmax = max(2 ** (bits - 1) - 1, 1)
        return -qmax, qmax
    return 0, 2**bits - 1


def calibrate_alpha(x: torch.Tensor, bits: int, signed: bool) -> float:
    """Clipping range that minimises the squared quantization error of ``x``.

    Args:
        x: sample of activation values (any shape).
        bits: activation bit-width.
        signed: quantize over ``[-alpha, alpha]`` instead of ``[0, alpha]``.
    """
    with torch.no_grad():
        xf = x.detach().reshape(-1).float()
        if xf.numel() > 65536:
            idx = torch.linspace(0, xf.numel() - 1, 65536).long()
            xf = xf[idx]
        top = xf.abs().max().clamp_min(1e-8)
        cands = top * _CLIP_GRID.to(xf.device)
        levels = float(act_levels(bits, signed))
        lo = -cands[:, None] if signed else torch.zeros_like(cands)[:, None]
        xc = torch.minimum(torch.maximum(xf[None, :], lo), cands[:, None])
        step = cands[:, None] / levels
        err = ((torch.round(xc / step) * step - xf[None, :]) ** 2).mean(dim=1)
        return float(cands[err.argmin()])


def fake_quant_act(
    x: torch.Tensor, bits: int, signed: bool, alpha: float | None = None
) -> torch.Tensor:
    """Quantize an activation tensor; ``alpha=None`` calibrates the range on ``x`` itself."""
    if alpha is None:
        alpha = calibrate_alpha(x, bits, signed)
    return quantize_act(
        x, torch.tensor(bits), torch.tensor(float(alpha), dtype=x.dtype), bool(signed)
    )
