"""Channel-wise differentiable mixed-precision search (Risso et al. 2022, PLiNIO's MPS).

``dnas-channel``: every output channel of every layer holds logits over the weight
bit choices *including 0* (pruning); every layer holds logits over its input-activation
choices. Mixing weights are ``softmax(logits / T)``; the effective weight of channel
``c`` is ``sum_i theta_{i,c} Q_{b_i}(W_c)`` with ``Q_0 = 0``, the effective input
``sum_j theta_j Q_{a_j}(x)``. Logits start at ``p / max(p)`` for choice ``p`` (favouring
the highest precision) and ``T`` starts at 5, multiplied by ``exp(-0.045)`` each epoch.
The cost is the expected model size (``fan_in x bits`` per channel) or the expected
MPIC energy; a pruned channel also shrinks the input the next layer reads. Each epoch
80% of the batches train the weights, 20% the logits (the paper's code; the weights
with Adam, ``weight_optimizer = "sgd"`` for SGD with momentum 0.9). In eval the mixture
is replaced by the hard argmax (one-hot mixing weights through the same code path):
that network is the one checked against the exported configuration
(:func:`~evomp.baselines._diff_common.check_argmax`). The exported configuration is the
per-channel argmax, keeping in a layer whose argmax prunes every channel the channel
least likely pruned; the accuracy reported is that configuration after the common final
QAT (``finish_run``), never the mixture's. ``info["temperatures"]`` records the
temperature each epoch ran at.

Deviations for a budget of minutes instead of hundreds of epochs: the logits train
with Adam by default (``arch_optimizer = "sgd"`` gives the paper's SGD), since per-channel
and per-layer logits receive gradients of very different scales; the cost is relative to
the all-highest-precision network, so ``lambda`` is unit-free; BatchNorm statistics are
frozen during the search (``freeze_bn``), since with batch statistics a channel's scale,
and with it the drift toward ``Q_0 = 0``, is invisible to the task loss.

``dnas-layer``: the paper's own comparison, one weight choice per layer (no pruning, as
a layer-wise search without a 0-bit option), otherwise identical.
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
    Supernet,
    build_supernet,
    cost_lut,
    epoch_batches,
    expected_cost,
    finish_points,
    freeze_bn,
    layer_options,
    make_arch_optimizer,
    make_weight_optimizer,
    max_cost,
    n_batches,
    one_hot,
    point_stats,
    predecessors,
    sweep_values,
)
from evomp.baselines._registry import BaselineOptions, BaselineResult, check_params, register_method

__all__ = ["DEFAULTS", "LAYER_DEFAULTS", "DnasLayer", "temperature", "run_dnas"]

#: Hyper-parameters of ``[baselines.dnas-channel]`` / ``[baselines.dnas-layer]``.
#: Chosen on the demo (20 epochs, 3 points): the channel-wise sweep gave 25.5 / 14.0 /
#: 11.3 kB at 97.7 / 92.6 / 86.6% test, while a weight of 1.5 collapsed (7.7 kB, 32%).
DEFAULTS: dict[str, Any] = {
    # relative cost weights lambda (cost is normalised by the all-highest-bits network's)
    "cost_weights": [0.1, 0.3, 0.8],
    "cost": "auto",            # "size", "energy" (MPIC) or "auto" (energy if an objective)
    "epochs": 20,              # search epochs per sweep point
    "warmup_epochs": 1,        # highest-precision warm-up, shared by every point
    "t0": 5.0,                 # initial softmax temperature
    "t_decay": 0.045,          # T <- T * exp(-t_decay) per epoch
    "arch_fraction": 0.2,      # share of each epoch's batches that trains the logits
    "freeze_bn": True,         # BatchNorm statistics fixed during the search (see docs)
    "weight_optimizer": "adam",  # weights and ranges: adam (paper's code), or "sgd" (m. 0.9)
    "lr": 1e-3,                # weights
    "quant_lr": 1e-2,          # activation ranges
    "arch_optimizer": "adam",  # logits: adam, or "sgd" (momentum 0.9) as in the paper's code
    "arch_lr": 0.05,           # logits
    "batch_size": 128,
    "calib_batches": 4,
}


#: ``[baselines.dnas-layer]``: the layer-wise switch cannot prune, so it needs far stronger
#: pressure to move (the demo: 0.01 / 0.3 / 10 gave 31.7 / 18.6 / 15.5 kB).
LAYER_DEFAULTS: dict[str, Any] = {**DEFAULTS, "cost_weights": [0.01, 0.3, 10.0]}


def temperature(epoch: int, t0: float = 5.0, decay: float = 0.045) -> float:
    """Softmax temperature during ``epoch`` (0-based): ``t0 * exp(-decay * epoch)``."""
    return float(t0 * math.exp(-decay * epoch))


def init_logits(opts: Sequence[int]) -> torch.Tensor:
    """``(len(opts),)`` initial logits ``p / max(p)``: the highest precision is favoured."""
    top = max(max(opts), 1)
    return torch.tensor([b / top for b in opts], dtype=torch.float32)


class DnasLayer(SearchLayer):
    """Per-channel (or per-layer) softmax mixture over weight bits, per-layer over input bits.

    Attributes:
        w_logits: ``(len(w_opts), out)`` (channel) or ``(len(w_opts), 1)`` (layer).
        a_logits: ``(len(a_opts),)``.
        tau: current temperature (set by the search loop).
    """

    def __init__(self, module: nn.Module, w_opts: Sequence[int], a_opts: Sequence[int],
                 signed: bool, alphas: Sequence[float], channelwise: bool = True,
                 t0: float = 5.0) -> None:
        super().__init__(module, w_opts, a_opts, signed, alphas)
        cols = self.out_channels if channelwise else 1
        self.w_logits = nn.Parameter(init_logits(self.w_opts)[:, None].repeat(1, cols))
        self.a_logits = nn.Parameter(init_logits(self.a_opts))
        self.tau = float(t0)

    @torch.no_grad()
    def rescale_for_pruning(self) -> None:
        """With ``Q_0 = 0`` the initial mixture is ``(1 - theta_0) W``: rescale the weights
        so that it starts at ``W`` (called once, after the warm-up)."""
        if 0 not in self.w_opts:
            return
        keep = 1.0 - self._soft_theta_w()[self.w_opts.index(0)]
        w = self.module.weight
        w.mul_((1.0 / keep).reshape((-1,) + (1,) * (w.dim() - 1)))
        self.refresh_scales()

    def _soft_theta_w(self) -> torch.Tensor:
        th = torch.softmax(self.w_logits / self.tau, dim=0)
        return th.expand(len(self.w_opts), self.out_channels)

    def _soft_theta_a(self) -> torch.Tensor:
        return torch.softmax(self.a_logits / self.tau, dim=0)

    def _hard(self) -> bool:
        """In eval (and in discrete mode) the mixture is replaced by the hard argmax."""
        return self.discrete or not self.training

    @torch.no_grad()
    def w_index(self) -> torch.Tensor:
        """``(out,)`` index of each channel's argmax weight choice.

        A layer never prunes every channel: when the argmax would, the channel least
        likely pruned (smallest ``theta_0``) keeps its most likely non-zero choice.
        """
        n = len(self.w_opts)
        lg = self.w_logits.detach().expand(n, self.out_channels)
        idx = lg.argmax(dim=0)
        if 0 in self.w_opts and n > 1:
            z = self.w_opts.index(0)
            if bool((idx == z).all()):
                c = int(self._soft_theta_w()[z].argmin())
                col = lg[:, c].clone()
                col[z] = -math.inf
                idx = idx.clone()
                idx[c] = col.argmax()
        return idx

    def a_index(self) -> int:
        """Index of the argmax activation choice."""
        return int(self.a_logits.detach().argmax())

    def theta_w(self) -> torch.Tensor:
        """``(len(w_opts), out)`` mixing weights of every channel: ``softmax(logits / T)``,
        or one-hot(argmax) in eval and discrete mode."""
        if self._hard():
            return one_hot(self.w_index(), len(self.w_opts)).to(self.w_logits.device)
        return self._soft_theta_w()

    def theta_a(self) -> torch.Tensor:
        """``(len(a_opts),)`` mixing weights of the input choices (one-hot when hard)."""
        if self._hard():
            idx = torch.tensor(self.a_index(), device=self.a_logits.device)
            return one_hot(idx, len(self.a_opts))
        return self._soft_theta_a()

    def soft_weight(self) -> torch.Tensor:
        th = self.theta_w()
        w = self.module.weight
        shape = (-1,) + (1,) * (w.dim() - 1)
        out = torch.zeros_like(w)
        for i, b in enumerate(self.w_opts):
            if b:
                out = out + th[i].reshape(shape) * self.q_weight(i)
        return out

    def soft_input(self, x: torch.Tensor) -> torch.Tensor:
        th = self.theta_a()
        return cast(torch.Tensor, sum(th[j] * self.q_input(x, j) for j in range(len(self.a_opts))))

    def w_counts(self) -> torch.Tensor:
        return self._soft_theta_w().sum(dim=1)

    def a_probs(self) -> torch.Tensor:
        return self._soft_theta_a()

    def chosen(self) -> tuple[np.ndarray, int]:
        idx = self.w_index().cpu().numpy()
        return np.asarray(self.w_opts)[idx], self.a_opts[self.a_index()]

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.w_logits, self.a_logits]


def _set_tau(net: Supernet, tau: float) -> None:
    for s in cast("list[DnasLayer]", net.slayers):  # a DNAS supernet holds DnasLayers
        s.tau = tau


def _cost_kind(cost: str, objectives: Any) -> str:
    if cost == "auto":
        names = set(objectives.names)
        return "mpic" if names & {"energy_uj", "mpic_cycles"} else "size"
    if cost in ("size", "memory"):
        return "size"
    if cost in ("energy", "mpic"):
        return "mpic"
    raise EvompError(f"[baselines.dnas-*] cost must be 'auto', 'size' or 'energy', got {cost!r}")


def run_dnas(ctx: Any, objectives: Any, opts: BaselineOptions, channelwise: bool
             ) -> BaselineResult:
    """Sweep the cost weight; one search (from a shared warm-up) and one argmax per value.

    ``info`` records the temperature each search epoch ran at (``temperatures``) and
    each point the number of weight and logit steps it took.
    """
    method = "dnas-channel" if channelwise else "dnas-layer"
    p = check_params(method, opts.params, DEFAULTS if channelwise else LAYER_DEFAULTS)
    lams = sweep_values(p["cost_weights"], opts.points, f"[baselines.{method}] cost_weights")
    if not 0.0 < p["arch_fraction"] < 1.0:
        raise EvompError(f"[baselines.{method}] arch_fraction must lie in (0, 1)")
    t0 = time.perf_counter()
    seed = int(ctx.spec.seed)
    torch.manual_seed(seed)
    options = layer_options(ctx, drop_zero=not channelwise)

    def make(i: int, m: nn.Module, w: tuple, a: tuple, signed: bool, alphas: list) -> DnasLayer:
        return DnasLayer(m, w, a, signed, alphas, channelwise, p["t0"])

    def weight_opt(net: Supernet) -> torch.optim.Optimizer:
        return make_weight_optimizer(
            [{"params": net.weight_parameters(), "lr": p["lr"]},
             {"params": net.alpha_parameters(), "lr": p["quant_lr"]}],
            p["weight_optimizer"], method)

    base = build_supernet(ctx, make, options, p["calib_batches"])
    kind = _cost_kind(p["cost"], objectives)
    luts = cost_lut(ctx, kind, options, objectives)
    shrink = predecessors(ctx.space.table) if channelwise else None
    norm = max_cost(base, luts)
    bs = p["batch_size"]
    nb = n_batches(ctx.task, bs)
    if nb < 2:
        raise EvompError(
            f"{method} splits each epoch's batches between weights and logits but the "
            f"training data gives {nb} batch; lower [baselines.{method}] batch_size (or the "
            "DataLoader's batch size)"
        )
    n_arch = min(nb - 1, max(1, int(round(p["arch_fraction"] * nb))))
    gen = torch.Generator().manual_seed(seed)
    loss_fn = ctx.task.loss_fn
    dev = ctx.device

    # warm-up at the highest precision (hard mode), once for the whole sweep
    if p["warmup_epochs"] > 0:
        wb, ab = _highest(base)
        base.set_hard(wb, ab, ctx.space.table.layer_start)
        opt = weight_opt(base)
        base.train()
        for _ in range(p["warmup_epochs"]):
            for x, y in epoch_batches(ctx.task, bs, gen, dev):
                loss = loss_fn(base(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        base.set_hard(None, None)
    for s in cast("list[DnasLayer]", base.slayers):
        s.rescale_for_pruning()

    points, w_rows, a_rows = [], [], []
    temps: list[float] = []
    for lam in lams:
        tp = time.perf_counter()
        net = copy.deepcopy(base)
        w_opt = weight_opt(net)
        a_opt = make_arch_optimizer(net.arch_parameters(), p["arch_optimizer"], p["arch_lr"],
                                    method)
        g = torch.Generator().manual_seed(seed + 1)
        net.train()
        if p["freeze_bn"]:
            freeze_bn(net)
        cost_val = float("nan")
        temps = []
        steps = {"weight": 0, "arch": 0}
        w_start = [s.module.weight.detach().clone() for s in net.slayers]
        for ep in range(p["epochs"]):
            _set_tau(net, temperature(ep, p["t0"], p["t_decay"]))
            net.refresh_scales()
            for k, (x, y) in enumerate(epoch_batches(ctx.task, bs, g, dev)):
                task_loss = loss_fn(net(x), y)
                if k >= nb - n_arch:  # the last 20% of the batches train the logits
                    cost = expected_cost(net, luts, shrink) / norm
                    loss = task_loss + lam * cost
                    a_opt.zero_grad(set_to_none=True)
                    w_opt.zero_grad(set_to_none=True)
                    loss.backward()
                    a_opt.step()
                    steps["arch"] += 1
                    cost_val = float(cost.detach())
                else:
                    w_opt.zero_grad(set_to_none=True)
                    a_opt.zero_grad(set_to_none=True)
                    task_loss.backward()
                    w_opt.step()
                    steps["weight"] += 1
            temps.append(_tau(net))  # the temperature this epoch's forwards ran at
        moved = _rel_change(w_start, [s.module.weight.detach() for s in net.slayers])
        wb, ab = net.chosen()
        stats = point_stats(ctx, net, wb, ab, bs)
        points.append({"cost_weight": lam, "soft_relative_cost": cost_val,
                       "temperatures": temps,
                       "final_temperature": temps[-1] if temps else p["t0"],
                       "weight_steps": steps["weight"], "arch_steps": steps["arch"],
                       "weight_rel_change": moved,
                       "batches_per_epoch": nb, "arch_batches_per_epoch": n_arch,
                       "seconds": time.perf_counter() - tp, **stats})
        w_rows.append(wb)
        a_rows.append(ab)
    genomes, info = finish_points(ctx, objectives, method, points, w_rows, a_rows, t0,
                                  {"cost": kind, "cost_weights": lams, "temperatures": temps},
                                  params=p, overrides=list(opts.params))
    return BaselineResult(genomes=genomes, info=info)


def _rel_change(before: Sequence[torch.Tensor], after: Sequence[torch.Tensor]) -> float:
    """``||after - before|| / ||before||`` over all the tensors."""
    num = sum(float(((a - b) ** 2).sum()) for a, b in zip(after, before, strict=True))
    den = sum(float((b ** 2).sum()) for b in before)
    return math.sqrt(num / max(den, 1e-30))


def _tau(net: Supernet) -> float:
    taus = {float(s.tau) for s in cast("list[DnasLayer]", net.slayers)}
    if len(taus) != 1:  # a bug: _set_tau sets every layer
        raise RuntimeError(f"layers run at different temperatures: {sorted(taus)}")
    return taus.pop()


def _highest(net: Supernet) -> tuple[np.ndarray, np.ndarray]:
    w = np.concatenate([np.full(s.out_channels, max(s.w_opts)) for s in net.slayers])
    return w, np.array([max(s.a_opts) for s in net.slayers])


@register_method("dnas-channel")
def dnas_channel(ctx: Any, objectives: Any, opts: BaselineOptions) -> BaselineResult:
    """Channel-wise DNAS (PLiNIO MPS): per-channel weight bits incl. 0, per-layer activations."""
    return run_dnas(ctx, objectives, opts, channelwise=True)


@register_method("dnas-layer")
def dnas_layer(ctx: Any, objectives: Any, opts: BaselineOptions) -> BaselineResult:
    """Layer-wise DNAS (the paper's comparison): one weight choice per layer, no pruning."""
    return run_dnas(ctx, objectives, opts, channelwise=False)
