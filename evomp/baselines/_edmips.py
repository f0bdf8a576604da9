"""EdMIPS (Cai & Vasconcelos 2020): layer-wise softmax mixtures of bit-widths.

Every layer holds logits over its weight bits and over its input-activation bits,
initialised equal; the mixing weights are a plain softmax (no temperature, no Gumbel).
The input is ``sum_j pi_j Q_{a_j}(x)``; the weights are *one* shared float tensor
quantized at every bit-width and mixed, ``sum_i pi_i Q_{w_i}(W)``, then a single
convolution (the composite convolution). The loss adds the expected bit-op cost

    c * sum_l MACs_l * E[a_l] * E[w_l] / MACs_first,    E[b] = sum_i pi_i b_i,

weights and logits being trained on the same batches. A sweep of ``c`` gives the points;
each exports the per-layer argmax; the common final QAT (``finish_run``) then trains
that configuration from the float weights. EdMIPS does not prune: a 0 in the space's
weight choices is left out. The first and last layers stay at the highest choices
(``keep_first_last``), as in the paper.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from typing import Any, cast

import numpy as np
import torch
from torch import nn

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
    one_hot,
    point_stats,
    sweep_values,
)
from evomp.baselines._registry import BaselineOptions, BaselineResult, check_params, register_method

__all__ = ["DEFAULTS", "EdmipsLayer"]

#: Hyper-parameters of ``[baselines.edmips]``.
DEFAULTS: dict[str, Any] = {
    # c, on the MACs_first-normalised bit-op cost; on the demo (20 epochs) 1e-5 / 3e-5 /
    # 1e-4 gave 31.7 / 25.6 / 20.5 kB, and any c above 1e-4 the same all-2-bit network
    "cost_weights": [1e-5, 3e-5, 1e-4],
    "epochs": 20,
    "keep_first_last": True,    # first and last layer at the highest precision (paper)
    "weight_optimizer": "adam",  # weights and ranges: adam, or "sgd" (momentum 0.9; paper:
                                 # SGD, lr 0.1)
    "lr": 1e-3,                 # weights
    "quant_lr": 1e-2,           # activation ranges
    "arch_optimizer": "adam",   # logits: adam, or "sgd" (momentum 0.9; paper: SGD, lr 0.01)
    "arch_lr": 0.01,            # logits
    "batch_size": 128,
    "calib_batches": 4,
}


class EdmipsLayer(SearchLayer):
    """Layer-wise softmax over weight bits and input bits (composite convolution).

    In discrete mode the softmax weights are replaced by one-hot(argmax of the logits),
    through the same mixing code: the network the method chose.
    """

    def __init__(self, module: nn.Module, w_opts: Sequence[int], a_opts: Sequence[int],
                 signed: bool, alphas: Sequence[float]) -> None:
        super().__init__(module, w_opts, a_opts, signed, alphas)
        self.w_logits = nn.Parameter(torch.zeros(len(self.w_opts)))
        self.a_logits = nn.Parameter(torch.zeros(len(self.a_opts)))

    def _pi(self, logits: torch.Tensor) -> torch.Tensor:
        if self.discrete:
            return one_hot(logits.detach().argmax(), len(logits)).to(logits.device)
        return torch.softmax(logits, dim=0)

    def soft_weight(self) -> torch.Tensor:
        pi = self._pi(self.w_logits)
        return cast(torch.Tensor, sum(pi[i] * self.q_weight(i) for i in range(len(self.w_opts))))

    def soft_input(self, x: torch.Tensor) -> torch.Tensor:
        pi = self._pi(self.a_logits)
        return cast(torch.Tensor, sum(pi[j] * self.q_input(x, j) for j in range(len(self.a_opts))))

    def w_counts(self) -> torch.Tensor:
        return torch.softmax(self.w_logits, dim=0) * self.out_channels

    def a_probs(self) -> torch.Tensor:
        return torch.softmax(self.a_logits, dim=0)

    def chosen(self) -> tuple[np.ndarray, int]:
        w = self.w_opts[int(self.w_logits.argmax())]
        return np.full(self.out_channels, w), self.a_opts[int(self.a_logits.argmax())]

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.w_logits, self.a_logits]


@register_method("edmips")
def edmips(ctx: Any, objectives: Any, opts: BaselineOptions) -> BaselineResult:
    """EdMIPS: sweep the bit-op cost weight ``c``; one search and one argmax per value."""
    p = check_params("edmips", opts.params, DEFAULTS)
    cs = sweep_values(p["cost_weights"], opts.points, "[baselines.edmips] cost_weights")
    t0 = time.perf_counter()
    seed = int(ctx.spec.seed)
    torch.manual_seed(seed)
    options = layer_options(ctx, drop_zero=True, keep_first_last=p["keep_first_last"])
    base = build_supernet(ctx, lambda i, m, w, a, s, al: EdmipsLayer(m, w, a, s, al), options,
                          p["calib_batches"])
    luts = cost_lut(ctx, "bitops", options, objectives)
    macs_first = float(ctx.space.table.layers[0].macs)
    bs = p["batch_size"]
    loss_fn = ctx.task.loss_fn
    points, w_rows, a_rows = [], [], []
    for c in cs:
        tp = time.perf_counter()
        net = copy.deepcopy(base)
        w_opt = make_weight_optimizer(
            [{"params": net.weight_parameters(), "lr": p["lr"]},
             {"params": net.alpha_parameters(), "lr": p["quant_lr"]}],
            p["weight_optimizer"], "edmips")
        a_opt = make_arch_optimizer(net.arch_parameters(), p["arch_optimizer"], p["arch_lr"],
                                    "edmips")
        g = torch.Generator().manual_seed(seed + 1)
        net.train()
        cost_val = float("nan")
        for _ in range(p["epochs"]):
            net.refresh_scales()
            for x, y in epoch_batches(ctx.task, bs, g, ctx.device):
                cost = expected_cost(net, luts) / macs_first
                loss = loss_fn(net(x), y) + c * cost
                w_opt.zero_grad(set_to_none=True)
                a_opt.zero_grad(set_to_none=True)
                loss.backward()
                w_opt.step()
                a_opt.step()
                cost_val = float(cost.detach())
        wb, ab = net.chosen()
        stats = point_stats(ctx, net, wb, ab, bs)
        points.append({"cost_weight": c, "soft_bitop_cost": cost_val,
                       "seconds": time.perf_counter() - tp, **stats})
        w_rows.append(wb)
        a_rows.append(ab)
    genomes, info = finish_points(ctx, objectives, "edmips", points, w_rows, a_rows, t0,
                                  {"cost_weights": cs}, params=p, overrides=list(opts.params))
    return BaselineResult(genomes=genomes, info=info)
