"""Learned precision (Schaefer, Joshi et al. 2023): bit-widths from learned step and range.

Every weight output channel and every input-activation tensor learns a step ``d`` (a
power of two, ``d = 2^round(l)``) and a range ``x_max``; the quantizer clips to
``[-x_max, x_max]`` (``[0, x_max]`` for non-negative inputs) and rounds to multiples of
``d``. The bit-width follows:

    bits = ceil(log2(round(x_max / d) + 1)) (+1 if signed),

straight-through through the ceil and the round, so a size penalty reaches ``d`` and
``x_max``. The loss adds, separately for weights and activations,

    lambda(t) * relu(size / target - 1)^2,

``lambda`` ramped log-linearly from 0.01 to 1 over the first half of training; sizes are
in bits (weights: ``fan_in x bits`` per channel; activations: input elements x bits per
layer) and the targets are fractions of the highest-precision sizes, swept for the
trade-off. The learned bit-widths are rounded *up* to the space's choices (a channel
whose range holds no level, ``round(x_max / d) = 0``, is pruned when 0 is a choice; a
layer keeps its channel with the most levels at the lowest non-zero choice rather than
prune every channel).

The exported configuration is bit-widths only: the common final QAT re-derives the
steps. The method's discrete network (its rounded-bits forward, checked against the
export by :func:`~evomp.baselines._diff_common.check_argmax`) is therefore every
channel at the bits rounded from *its own* learned step and range, with the protocol's
per-channel MSE-optimal step, and the input at its rounded bits over its learned range.
The ramp spans the whole run: its length is the number of steps the search takes
(``info["points"][k]["ramp_total_steps"]``).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from evomp._errors import EvompError
from evomp.baselines._diff_common import (
    SearchLayer,
    build_supernet,
    epoch_batches,
    finish_points,
    layer_options,
    make_arch_optimizer,
    make_weight_optimizer,
    n_batches,
    point_stats,
    sweep_values,
)
from evomp.baselines._registry import BaselineOptions, BaselineResult, check_params, register_method
from evomp.quant import init_weight_scale, quantize_act, quantize_weight, round_ste

__all__ = ["DEFAULTS", "LearnedLayer", "learned_bits", "ramp", "to_choices"]

#: Hyper-parameters of ``[baselines.learned]``.
DEFAULTS: dict[str, Any] = {
    "w_targets": [0.4, 0.28, 0.2, 0.14],  # weight-size targets, fractions of the 8-bit size
    "a_targets": [0.8, 0.65, 0.5, 0.4],   # activation-size targets, same
    "epochs": 20,
    "penalty_scale": 1.0,       # multiplies lambda(t)
    "ramp_start": 0.01,         # lambda at step 0, ramped to 1 by mid-training
    "weight_optimizer": "adam",  # weights: adam, or "sgd" (momentum 0.9)
    "lr": 1e-3,                 # weights
    "arch_optimizer": "adam",   # steps and ranges: adam, or "sgd" (momentum 0.9)
    "arch_lr": 0.02,            # step (log2) and range (log) parameters
    "batch_size": 128,
    "calib_batches": 4,
}


def ramp(step: int, total: int, start: float = 0.01) -> float:
    """Penalty weight: ``start`` at step 0, log-linear to 1 at ``total / 2``, then 1."""
    half = max(1.0, total / 2)
    return float(start ** max(0.0, 1.0 - step / half))


def _ceil_ste(x: torch.Tensor) -> torch.Tensor:
    return x + (torch.ceil(x) - x).detach()


def learned_bits(x_max: torch.Tensor, d: torch.Tensor, signed: bool) -> torch.Tensor:
    """``ceil(log2(round(x_max / d) + 1)) (+1 if signed)``; 0 where no level fits.

    Straight-through gradients reach ``x_max`` and ``d``.
    """
    n = torch.clamp(round_ste(x_max / d), min=0.0)
    b = _ceil_ste(torch.log2(n + 1.0))
    if signed:
        b = b + (n.detach() > 0).to(b.dtype)
    return b


def to_choices(bits: np.ndarray, choices: Sequence[int]) -> np.ndarray:
    """Round learned bit-widths up to the nearest choice (0 only if 0 is a choice)."""
    c = np.asarray(sorted(choices))
    b = np.asarray(bits, dtype=np.float64)
    idx = np.clip(np.searchsorted(c, b - 1e-6, side="left"), 0, len(c) - 1)
    return c[idx]


class LearnedLayer(SearchLayer):
    """Per-channel learned weight quantizer and per-tensor learned input quantizer."""

    def __init__(self, module: nn.Module, w_opts: Sequence[int], a_opts: Sequence[int],
                 signed: bool, alphas: Sequence[float]) -> None:
        super().__init__(module, w_opts, a_opts, signed, alphas)
        w = self.module.weight.detach()
        self.learn_w = len(self.w_opts) > 1
        self.learn_a = len(self.a_opts) > 1
        top = len(self.w_opts) - 1
        maxabs = w.reshape(w.shape[0], -1).abs().amax(dim=1).clamp_min(1e-8)
        step = self.w_scale_tab[top].clamp_min(1e-12)
        self.w_log2_d = nn.Parameter(torch.round(torch.log2(step)))
        self.w_log_xmax = nn.Parameter(torch.log(maxabs))
        ja = len(self.a_opts) - 1
        alpha = float(alphas[ja])
        levels = 2 ** (self.a_opts[ja] - 1) - 1 if signed else 2 ** self.a_opts[ja] - 1
        self.a_log2_d = nn.Parameter(torch.tensor(float(round(math.log2(alpha / levels)))))
        self.a_log_xmax = nn.Parameter(torch.tensor(math.log(alpha)))

    def _w_shape(self) -> tuple[int, ...]:
        return (-1,) + (1,) * (self.module.weight.dim() - 1)

    def w_bits_soft(self) -> torch.Tensor:
        """``(out,)`` learned weight bits (differentiable)."""
        d = torch.pow(2.0, round_ste(self.w_log2_d))
        return learned_bits(torch.exp(self.w_log_xmax), d, True)

    def a_bits_soft(self) -> torch.Tensor:
        d = torch.pow(2.0, round_ste(self.a_log2_d))
        return learned_bits(torch.exp(self.a_log_xmax), d, self.signed)

    @torch.no_grad()
    def rounded_bits(self) -> tuple[torch.Tensor, int]:
        """The method's discrete choice: ``((out,) weight bits, input bits)``.

        Learned bit-widths rounded up to the choices (:func:`to_choices`); when every
        channel would be pruned, the channel with the most learned levels keeps the
        lowest non-zero choice.
        """
        dev = self.module.weight.device
        if self.learn_w:
            wb = torch.as_tensor(to_choices(self.w_bits_soft().cpu().numpy(), self.w_opts),
                                 dtype=torch.long, device=dev)
            nonzero = [b for b in self.w_opts if b > 0]
            if bool((wb == 0).all()) and nonzero:
                levels = torch.exp(self.w_log_xmax) / torch.pow(2.0, torch.round(self.w_log2_d))
                wb[int(levels.argmax())] = min(nonzero)
        else:
            wb = torch.full((self.out_channels,), self.w_opts[0], dtype=torch.long, device=dev)
        if self.learn_a:
            a = int(to_choices(np.array([float(self.a_bits_soft())]), self.a_opts)[0])
        else:
            a = self.a_opts[0]
        return wb, a

    def soft_weight(self) -> torch.Tensor:
        if not self.learn_w:
            return self.q_weight(0)
        w = self.module.weight
        if self.discrete:  # rounded bits, the protocol's MSE-optimal step
            wb, _ = self.rounded_bits()
            return quantize_weight(w, wb, init_weight_scale(w, wb).abs() + 1e-12)
        sh = self._w_shape()
        xm = torch.exp(self.w_log_xmax).reshape(sh)
        d = torch.pow(2.0, round_ste(self.w_log2_d)).reshape(sh)
        return round_ste(torch.minimum(torch.maximum(w, -xm), xm) / d) * d

    def soft_input(self, x: torch.Tensor) -> torch.Tensor:
        if not self.learn_a:
            return self.q_input(x, 0)
        xm = torch.exp(self.a_log_xmax)
        if self.discrete:  # rounded bits over the learned range
            _, a = self.rounded_bits()
            return quantize_act(x, a, xm, self.signed)
        d = torch.pow(2.0, round_ste(self.a_log2_d))
        lo = -xm if self.signed else torch.zeros_like(xm)
        return round_ste(torch.minimum(torch.maximum(x, lo), xm) / d) * d

    def w_size_bits(self) -> torch.Tensor:
        """Weight bits of this layer (``fan_in x bits`` summed over channels)."""
        w = self.module.weight
        fan_in = w[0].numel()
        if not self.learn_w:
            return torch.tensor(float(fan_in * self.w_opts[0] * self.out_channels))
        return fan_in * self.w_bits_soft().sum()

    def a_bits_value(self) -> torch.Tensor:
        return self.a_bits_soft() if self.learn_a else torch.tensor(float(self.a_opts[0]))

    def hard_alpha(self, a_bits: int) -> torch.Tensor:
        if not self.learn_a:
            return super().hard_alpha(a_bits)
        return torch.exp(self.a_log_xmax)

    def chosen(self) -> tuple[np.ndarray, int]:
        wb, a = self.rounded_bits()
        return wb.cpu().numpy().astype(np.int64), a

    def arch_parameters(self) -> list[nn.Parameter]:
        out = []
        if self.learn_w:
            out += [self.w_log2_d, self.w_log_xmax]
        if self.learn_a:
            out += [self.a_log2_d, self.a_log_xmax]
        return out


@register_method("learned")
def learned(ctx: Any, objectives: Any, opts: BaselineOptions) -> BaselineResult:
    """Learned precision: sweep the size targets; bits rounded up to the choices per point."""
    p = check_params("learned", opts.params, DEFAULTS)
    if len(p["w_targets"]) != len(p["a_targets"]):
        raise EvompError("[baselines.learned] w_targets and a_targets must have the same length")
    wts = sweep_values(p["w_targets"], opts.points, "[baselines.learned] w_targets")
    ats = sweep_values(p["a_targets"], opts.points, "[baselines.learned] a_targets")
    if opts.points is not None and opts.points != len(p["w_targets"]):
        wts, ats = sorted(wts, reverse=True), sorted(ats, reverse=True)
    t0 = time.perf_counter()
    seed = int(ctx.spec.seed)
    torch.manual_seed(seed)
    t = ctx.space.table
    base = build_supernet(ctx, lambda i, m, w, a, s, al: LearnedLayer(m, w, a, s, al),
                          layer_options(ctx), p["calib_batches"])
    w_full = float(sum(lay.fan_in * lay.out_channels for lay in t.layers) * max(t.w_choices))
    in_numel = [float(lay.in_numel) for lay in t.layers]
    a_full = float(sum(in_numel) * max(t.a_choices))
    bs = p["batch_size"]
    total = p["epochs"] * n_batches(ctx.task, bs)
    loss_fn = ctx.task.loss_fn
    points, w_rows, a_rows = [], [], []
    for wt, at in zip(wts, ats, strict=False):
        tp = time.perf_counter()
        net = copy.deepcopy(base)
        w_opt = make_weight_optimizer([{"params": net.weight_parameters(), "lr": p["lr"]}],
                                      p["weight_optimizer"], "learned")
        a_opt = make_arch_optimizer(net.arch_parameters(), p["arch_optimizer"], p["arch_lr"],
                                    "learned")
        g = torch.Generator().manual_seed(seed + 1)
        net.train()
        step = 0
        sizes = (float("nan"), float("nan"))
        lam_epochs: list[float] = []
        slayers = cast("list[LearnedLayer]", net.slayers)  # built by LearnedLayer above
        for _ in range(p["epochs"]):
            for x, y in epoch_batches(ctx.task, bs, g, ctx.device):
                w_size = cast(torch.Tensor, sum(s.w_size_bits() for s in slayers)) / w_full
                a_sum = sum(n * s.a_bits_value() for n, s in zip(in_numel, slayers, strict=True))
                a_size = cast(torch.Tensor, a_sum) / a_full
                pen = torch.relu(w_size / wt - 1) ** 2 + torch.relu(a_size / at - 1) ** 2
                lam = p["penalty_scale"] * ramp(step, total, p["ramp_start"])
                loss = loss_fn(net(x), y) + lam * pen
                w_opt.zero_grad(set_to_none=True)
                a_opt.zero_grad(set_to_none=True)
                loss.backward()
                w_opt.step()
                a_opt.step()
                sizes = (float(w_size.detach()), float(a_size.detach()))
                step += 1
            lam_epochs.append(p["penalty_scale"] * ramp(step - 1, total, p["ramp_start"]))
        net.refresh_scales()
        wb, ab = net.chosen()
        stats = point_stats(ctx, net, wb, ab, bs)
        points.append({"cost_weight": wt, "w_target": wt, "a_target": at,
                       "learned_w_size": sizes[0], "learned_a_size": sizes[1],
                       "ramp_total_steps": total, "steps": step,
                       "penalty_weight_per_epoch": lam_epochs,
                       "seconds": time.perf_counter() - tp, **stats})
        w_rows.append(wb)
        a_rows.append(ab)
    genomes, info = finish_points(ctx, objectives, "learned", points, w_rows, a_rows, t0,
                                  {"w_targets": wts, "a_targets": ats},
                                  params=p, overrides=list(opts.params))
    return BaselineResult(genomes=genomes, info=info)
