"""Bayesian Bits gates, the search step of Free Bits (Rutishauser, Conti, Benini 2023).

Every weight tensor and every input-activation tensor gets two hard-concrete gates
``z4`` and ``z8`` on top of a 2-bit quantizer:

    x_hat = x2 + z4 * (x4 - x2) + z4 * z8 * (x8 - x4)

(temperature 0.5, stretched to [-0.1, 1.1], gate logits initialised at 2.0). The
regularizer is the expected cost under the gates' probabilities of being on: bit-ops by
default, or any per-layer hardware metric (e.g. ``latency_cycles`` of the ``pulp``
model: the latency-table regularizer), relative to the all-8-bit network and weighted
by ``mu`` (0.18 in the paper; swept here for the trade-off). A gate is kept on when
``P(z = 0) < 0.34``; those thresholded gates are also the eval-mode network, the one
checked against the exported configuration.

The second step of Free Bits, the hardware-aware heuristic that raises precision where
that lowers the measured latency (:func:`evomp.baselines._freebits.refine_bits`), runs
by default (``refine = "auto"``) against the run's latency model: the first model of
the spec's ``[search] hardware`` list with a metric naming latency (``pulp``, or a
``table`` model of measurements), preferring a latency that is an objective. Both the
searched and the refined configurations are exported (rows ``info["refine"]["rows"]``
are the refined ones, point ``k``'s refinement is row ``n_points + k``). ``refine =
"<model>[:<metric>]"`` names the latency model; ``refine = "none"`` turns the step off
(it is also skipped, and recorded so, when no latency model is configured). The same
step is the ``freebits`` baseline: ``evomp baseline SPEC --method freebits --from DIR``.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from evomp._errors import EvompError
from evomp.baselines._diff_common import (
    SearchLayer,
    build_supernet,
    cost_lut,
    epoch_batches,
    expected_cost,
    finish_points,
    layer_options,
    make_arch_optimizer,
    make_weight_optimizer,
    max_cost,
    point_stats,
    sweep_values,
)
from evomp.baselines._registry import BaselineOptions, BaselineResult, check_params, register_method
from evomp.engines import refine_bits

__all__ = ["DEFAULTS", "BayesBitsLayer", "HardConcrete", "gate_on"]

#: Hyper-parameters of ``[baselines.bayesbits]``.
DEFAULTS: dict[str, Any] = {
    "mus": [0.05, 0.18, 0.6, 2.0],   # regularizer weights (paper: 0.18)
    "regularizer": "bitops",        # "bitops", or a hardware metric, e.g. "latency_cycles"
    "epochs": 20,
    "beta": 0.5,                    # hard-concrete temperature
    "gamma": -0.1,                  # stretch interval [gamma, zeta]
    "zeta": 1.1,
    "init": 2.0,                    # initial gate logit (log alpha)
    "threshold": 0.34,              # a gate is on when P(z = 0) < threshold
    "refine": "auto",               # Free Bits step 2 on every point, also exported: "auto"
                                    # (the run's latency model, if any), "<model>[:<metric>]",
                                    # or "none"
    "weight_optimizer": "adam",     # weights and ranges: adam, or "sgd" (momentum 0.9)
    "lr": 1e-3,                     # weights
    "quant_lr": 1e-2,               # activation ranges
    "arch_optimizer": "adam",       # gate logits: adam, or "sgd" (momentum 0.9)
    "arch_lr": 0.05,                # gate logits
    "batch_size": 128,
    "calib_batches": 4,
}

_BITS = (2, 4, 8)


class HardConcrete(nn.Module):
    """``n`` hard-concrete gates (Louizos et al.), as Bayesian Bits uses them.

    Args:
        n: number of gates.
        init: initial logit ``log alpha``.
        beta: temperature.
        gamma / zeta: stretch interval, ``gamma < 0 < 1 < zeta``.
    """

    def __init__(self, n: int, init: float = 2.0, beta: float = 0.5, gamma: float = -0.1,
                 zeta: float = 1.1) -> None:
        super().__init__()
        self.log_alpha = nn.Parameter(torch.full((n,), float(init)))
        self.beta, self.gamma, self.zeta = float(beta), float(gamma), float(zeta)

    def p_zero(self) -> torch.Tensor:
        """``(n,)`` probability that each gate is exactly 0 (differentiable)."""
        return torch.sigmoid(self.beta * math.log(-self.gamma / self.zeta) - self.log_alpha)

    def sample(self) -> torch.Tensor:
        """``(n,)`` stretched, clamped relaxed samples in ``[0, 1]`` (reparameterised)."""
        u = torch.rand_like(self.log_alpha).clamp(1e-6, 1 - 1e-6)
        s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + self.log_alpha) / self.beta)
        return (s * (self.zeta - self.gamma) + self.gamma).clamp(0.0, 1.0)

    def forward(self, threshold: float, deterministic: bool | None = None) -> torch.Tensor:
        """Samples in training, the thresholded deterministic gates in eval (or when
        ``deterministic`` is true)."""
        if deterministic is None:
            deterministic = not self.training
        if not deterministic:
            return self.sample()
        return gate_on(self.p_zero(), threshold).to(self.log_alpha.dtype)


def gate_on(p_zero: torch.Tensor, threshold: float = 0.34) -> torch.Tensor:
    """Bool gates: on where ``P(z = 0) < threshold``."""
    return p_zero < threshold


def _level_probs(q: torch.Tensor) -> torch.Tensor:
    """``(3,)`` probabilities of 2, 4 and 8 bits from ``q = P(z4 on), P(z8 on)``."""
    return torch.stack([1 - q[0], q[0] * (1 - q[1]), q[0] * q[1]])


class BayesBitsLayer(SearchLayer):
    """Gated residual quantization over 2/4/8 bits for the weights and the input.

    A pinned part has one option and no gates. In eval and in discrete mode the gates
    are the deterministic thresholded ones (the method's chosen network).
    """

    def __init__(self, module: nn.Module, w_opts: Sequence[int], a_opts: Sequence[int],
                 signed: bool, alphas: Sequence[float], hc: dict[str, float],
                 threshold: float) -> None:
        super().__init__(module, w_opts, a_opts, signed, alphas)
        self.threshold = float(threshold)
        self.w_gates = HardConcrete(2, **hc) if self.w_opts == _BITS else None
        self.a_gates = HardConcrete(2, **hc) if self.a_opts == _BITS else None

    def _mix(self, q: list[torch.Tensor], gates: HardConcrete | None) -> torch.Tensor:
        if gates is None:
            return q[0]
        z = gates(self.threshold, deterministic=self.discrete or not self.training)
        return q[0] + z[0] * (q[1] - q[0]) + z[0] * z[1] * (q[2] - q[1])

    def soft_weight(self) -> torch.Tensor:
        return self._mix([self.q_weight(i) for i in range(len(self.w_opts))], self.w_gates)

    def soft_input(self, x: torch.Tensor) -> torch.Tensor:
        return self._mix([self.q_input(x, j) for j in range(len(self.a_opts))], self.a_gates)

    def w_counts(self) -> torch.Tensor:
        if self.w_gates is None:
            return torch.full((1,), float(self.out_channels))
        return _level_probs(1 - self.w_gates.p_zero()) * self.out_channels

    def a_probs(self) -> torch.Tensor:
        if self.a_gates is None:
            return torch.ones(1)
        return _level_probs(1 - self.a_gates.p_zero())

    def _choice(self, opts: tuple[int, ...], gates: HardConcrete | None) -> int:
        if gates is None:
            return opts[0]
        on = gate_on(gates.p_zero(), self.threshold)
        return 8 if bool(on[0]) and bool(on[1]) else 4 if bool(on[0]) else 2

    def chosen(self) -> tuple[np.ndarray, int]:
        w = self._choice(self.w_opts, self.w_gates)
        return np.full(self.out_channels, w), self._choice(self.a_opts, self.a_gates)

    def arch_parameters(self) -> list[nn.Parameter]:
        return [g.log_alpha for g in (self.w_gates, self.a_gates) if g is not None]


def _options(ctx: Any) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    t = ctx.space.table
    missing = [f"{what} {sorted(set(_BITS) - set(c))}" for what, c in
               (("w_bits", t.w_choices), ("a_bits", t.a_choices)) if not set(_BITS) <= set(c)]
    if missing:
        raise EvompError(
            "bayesbits gates 4 and 8 bit on top of 2 bit, so [space] w_bits and a_bits must "
            f"include 2, 4 and 8; missing: {', '.join(missing)}"
        )
    return [(w if len(w) == 1 else _BITS, a if len(a) == 1 else _BITS)
            for w, a in layer_options(ctx)]


@register_method("bayesbits")
def bayesbits(ctx: Any, objectives: Any, opts: BaselineOptions) -> BaselineResult:
    """Bayesian Bits search: sweep the regularizer weight; thresholded gates per point."""
    p = check_params("bayesbits", opts.params, DEFAULTS)
    mus = sweep_values(p["mus"], opts.points, "[baselines.bayesbits] mus")
    if not 0.0 < p["threshold"] < 1.0:
        raise EvompError("[baselines.bayesbits] threshold must lie in (0, 1)")
    t0 = time.perf_counter()
    seed = int(ctx.spec.seed)
    torch.manual_seed(seed)
    options = _options(ctx)
    hc = {k: p[k] for k in ("init", "beta", "gamma", "zeta")}
    base = build_supernet(
        ctx, lambda i, m, w, a, s, al: BayesBitsLayer(m, w, a, s, al, hc, p["threshold"]),
        options, p["calib_batches"])
    luts = cost_lut(ctx, p["regularizer"], options, objectives)
    norm = max_cost(base, luts)
    bs = p["batch_size"]
    loss_fn = ctx.task.loss_fn
    points, w_rows, a_rows = [], [], []
    for mu in mus:
        tp = time.perf_counter()
        net = copy.deepcopy(base)
        torch.manual_seed(seed + 2)
        w_opt = make_weight_optimizer(
            [{"params": net.weight_parameters(), "lr": p["lr"]},
             {"params": net.alpha_parameters(), "lr": p["quant_lr"]}],
            p["weight_optimizer"], "bayesbits")
        a_opt = make_arch_optimizer(net.arch_parameters(), p["arch_optimizer"], p["arch_lr"],
                                    "bayesbits")
        g = torch.Generator().manual_seed(seed + 1)
        net.train()
        cost_val = float("nan")
        for _ in range(p["epochs"]):
            net.refresh_scales()
            for x, y in epoch_batches(ctx.task, bs, g, ctx.device):
                cost = expected_cost(net, luts) / norm
                loss = loss_fn(net(x), y) + mu * cost
                w_opt.zero_grad(set_to_none=True)
                a_opt.zero_grad(set_to_none=True)
                loss.backward()
                w_opt.step()
                a_opt.step()
                cost_val = float(cost.detach())
        wb, ab = net.chosen()
        stats = point_stats(ctx, net, wb, ab, bs)
        pz = {n: [round(float(v), 4) for v in s.w_gates.p_zero().detach()]
              for n, s in zip(net.names, net.slayers, strict=True)
              if isinstance(s, BayesBitsLayer) and s.w_gates is not None}
        points.append({"cost_weight": mu, "soft_relative_cost": cost_val,
                       "w_gate_p_zero": pz, "seconds": time.perf_counter() - tp, **stats})
        w_rows.append(wb)
        a_rows.append(ab)
    genomes, info = finish_points(ctx, objectives, "bayesbits", points, w_rows, a_rows, t0,
                                  {"regularizer": p["regularizer"], "mus": mus},
                                  params=p, overrides=list(opts.params))
    target = _refine_target(ctx, objectives, p["refine"])
    if target is None:
        info["refine"] = {"setting": p["refine"], "applied": False,
                          "reason": "turned off" if p["refine"] in ("", "none") else
                          "no latency model in the run's hardware list"}
        info["refined_rows"] = []
        return BaselineResult(genomes=genomes, info=info)
    model, metric = target
    t = ctx.space.table
    w, a = t.decode(genomes)
    try:
        w2, a2, before, after = refine_bits(t, w, a, model, metric)
    except (KeyError, ValueError) as e:
        raise EvompError(f"[baselines.bayesbits] refine = {p['refine']!r}: {e}") from e
    refined = t.encode(w2, a2)
    n = len(genomes)
    rows = list(range(n, 2 * n))
    changed = np.any(refined != genomes, axis=1)
    for k, pt in enumerate(points):
        pt["refined_row"] = n + k
        pt["refine_changed"] = bool(changed[k])
        pt["latency_searched"] = float(before[k])
        pt["latency_refined"] = float(after[k])
    info["refine"] = {"setting": p["refine"], "applied": True, "model": model.name,
                      "metric": metric, "searched_rows": list(range(n)), "rows": rows,
                      "n_changed": int(changed.sum())}
    info["refined_rows"] = rows
    return BaselineResult(genomes=np.concatenate([genomes, refined]), info=info)


def _refine_target(ctx: Any, objectives: Any, setting: str) -> tuple[Any, str] | None:
    """``(latency model, metric)`` the Free Bits refinement runs against, or ``None``.

    ``"auto"``: among the run's hardware models (``objectives.models``, built from the
    spec's hardware list), the one giving the first latency objective, else the first
    with a metric naming latency; ``None`` if there is none. ``"none"`` or ``""``: off.
    ``"<model>[:<metric>]"``: that model (the run's instance, or one built from
    ``[hw.<model>]``, both through :meth:`~evomp.objectives.Objectives.model_named`) and
    metric (default: its first).
    """
    from evomp.engines import latency_metric

    if setting in ("", "none"):
        return None
    if setting == "auto":
        wanted = [m for m in objectives.hw_metrics if "latency" in m]
        wanted += [m for m in objectives.metrics if "latency" in m]
        return (objectives.model_for(wanted[0]), wanted[0]) if wanted else None
    name, _, metric = setting.partition(":")
    try:
        model = objectives.model_named(name)
    except EvompError as e:
        raise EvompError(f"[baselines.bayesbits] refine = {setting!r}: {e}; give 'auto', "
                         "'none' or a hardware model listed by 'evomp hw list'") from e
    return model, latency_metric(model, metric or None)
