"""Shared machinery of the differentiable baselines (EdMIPS, DNAS, Bayesian Bits, learned).

A *supernet* is a copy of the pretrained float model whose quantizable layers are
:class:`SearchLayer` s. Each method subclasses :class:`SearchLayer` with its own
architecture parameters and its soft forward (a mixture, gates, learned ranges); the
base class owns what all of them share:

* the quantizers of every candidate bit-width, built from :mod:`evomp.quant`
  (per-channel MSE-optimal weight scales refreshed from the current weights, per-tensor
  activation ranges calibrated per bit-width and learned PACT/LSQ-style);
* the *discrete* mode (``discrete = True``): the method's own forward with its
  architecture parameters discretised *by the method itself* (DNAS and EdMIPS: the
  mixture with one-hot(argmax) mixing weights; Bayesian Bits: the thresholded
  deterministic gates; learned precision: its learned bit-widths rounded to the
  choices). :func:`check_argmax` runs this network against a
  :class:`evomp.quant.QuantModel` given only the *exported* bits, so an export that is
  not the network the method chose fails the check;
* the *hard* mode: one given bit configuration applied as
  :class:`evomp.quant.QuantLayer` applies it (used for the highest-precision warm-up);
* expected-cost look-up tables over (activation bits, weight bits) per layer, from the
  run's hardware models found through its :class:`~evomp.objectives.Objectives`.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from evomp._errors import EvompError
from evomp.quant import (
    QuantModel,
    calibrate_alpha,
    init_weight_scale,
    quantize_act,
    quantize_weight,
    set_submodule,
)
from evomp.space import QUANTIZABLE
from evomp.tasks import Task, TensorData, batches, evaluate_model, make_adam

if TYPE_CHECKING:
    from evomp.objectives import Objectives

__all__ = [
    "SearchLayer",
    "Supernet",
    "build_supernet",
    "check_argmax",
    "CHECK_TOLERANCE",
    "cost_lut",
    "expected_cost",
    "sweep_values",
    "epoch_batches",
    "make_weight_optimizer",
    "n_batches",
    "predecessors",
    "finish_points",
    "point_stats",
    "freeze_bn",
    "one_hot",
]


class SearchLayer(nn.Module):
    """A quantizable layer of a supernet: the original module plus candidate quantizers.

    Args:
        module: the ``nn.Conv1d``/``nn.Conv2d``/``nn.Linear`` (kept, trained in place).
        w_opts: weight bit choices of this layer (one value when pinned; 0 = pruned).
        a_opts: input-activation bit choices of this layer (one value when pinned).
        signed: whether the layer's input is signed.
        alphas: ``(len(a_opts),)`` calibrated clipping ranges, one per activation choice.

    Attributes:
        w_scale_tab: ``(len(w_opts), out)`` buffer, MSE-optimal per-channel scale at each
            weight choice for the current weights (see :meth:`refresh_scales`).
        a_alpha: ``(len(a_opts),)`` learnable clipping range per activation choice.
        discrete: when set, :meth:`soft_weight` and :meth:`soft_input` compute the
            method's own discrete network (its architecture parameters discretised the
            way the method exports them) instead of the training-time relaxation.
        hard: a given configuration applied as ``QuantLayer`` does (see :meth:`set_hard`).
    """

    module: nn.Conv1d | nn.Conv2d | nn.Linear  # one of QUANTIZABLE (see build_supernet)
    w_scale_tab: torch.Tensor

    def __init__(
        self,
        module: nn.Module,
        w_opts: Sequence[int],
        a_opts: Sequence[int],
        signed: bool,
        alphas: Sequence[float],
    ) -> None:
        super().__init__()
        self.module = cast("nn.Conv1d | nn.Conv2d | nn.Linear", module)
        self.w_opts = tuple(int(b) for b in w_opts)
        self.a_opts = tuple(int(b) for b in a_opts)
        self.signed = bool(signed)
        out = self.module.weight.shape[0]
        self.register_buffer("w_scale_tab", torch.ones(len(self.w_opts), out))
        self.a_alpha = nn.Parameter(torch.tensor([float(a) for a in alphas]))
        self.hard: tuple[torch.Tensor, int] | None = None
        self.discrete = False
        self.refresh_scales()

    # ------------------------------------------------------------- quantizers
    @property
    def out_channels(self) -> int:
        return int(self.module.weight.shape[0])

    @torch.no_grad()
    def refresh_scales(self) -> None:
        """Recompute the MSE-optimal scales of every weight choice for the current weights."""
        w = self.module.weight
        for i, b in enumerate(self.w_opts):
            bits = torch.full((self.out_channels,), b, dtype=torch.long, device=w.device)
            self.w_scale_tab[i] = init_weight_scale(w, bits)

    def q_weight(self, i: int) -> torch.Tensor:
        """Weights quantized at choice ``i`` (every channel); zeros for 0 bits.

        The step is ``|s| + 1e-12`` of the MSE-optimal scale, as in ``QuantLayer``.
        """
        w = self.module.weight
        b = self.w_opts[i]
        if b == 0:
            return torch.zeros_like(w)
        bits = torch.full((self.out_channels,), b, dtype=torch.long, device=w.device)
        return quantize_weight(w, bits, self.w_scale_tab[i].abs() + 1e-12)

    def q_input(self, x: torch.Tensor, j: int) -> torch.Tensor:
        """Input quantized at activation choice ``j`` with its learned range."""
        return quantize_act(x, self.a_opts[j], self.a_alpha[j], self.signed)

    def op(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """The wrapped layer's operation with weights ``w`` (bias and geometry kept)."""
        m = self.module
        if isinstance(m, nn.Linear):
            return F.linear(x, w, m.bias)
        if m.padding_mode != "zeros":
            return m._conv_forward(x, w, m.bias)
        fn = F.conv1d if isinstance(m, nn.Conv1d) else F.conv2d
        return fn(x, w, m.bias, m.stride, m.padding, m.dilation, m.groups)

    # ---------------------------------------------------------------- methods
    def soft_weight(self) -> torch.Tensor:
        """The method's weights: the training-time relaxation (a mixture, gated sum,
        learned quantizer), or its discrete network when :attr:`discrete` is set."""
        raise NotImplementedError

    def soft_input(self, x: torch.Tensor) -> torch.Tensor:
        """The method's input quantization (relaxed, or discrete when :attr:`discrete`)."""
        raise NotImplementedError

    def w_counts(self) -> torch.Tensor:
        """``(len(w_opts),)`` expected number of channels at each weight choice."""
        raise NotImplementedError

    def a_probs(self) -> torch.Tensor:
        """``(len(a_opts),)`` probability of each activation choice."""
        raise NotImplementedError

    def chosen(self) -> tuple[np.ndarray, int]:
        """The method's discrete choice, as exported: ``(w_bits (out,), a_bits)``.

        It must describe the network the discrete forward computes; a layer never
        exports every channel pruned (the channel most likely kept stays).
        """
        raise NotImplementedError

    def arch_parameters(self) -> list[nn.Parameter]:
        """Parameters the method treats as architecture (trained at the arch rate)."""
        return []

    def hard_alpha(self, a_bits: int) -> torch.Tensor:
        """Clipping range used in hard mode for ``a_bits`` (the learned one of that choice)."""
        return self.a_alpha[self.a_opts.index(a_bits)]

    # ---------------------------------------------------------------- forward
    def set_hard(self, w_bits: np.ndarray | None, a_bits: int | None = None) -> None:
        """Apply one configuration exactly (``None``: back to the soft forward)."""
        if w_bits is None:
            self.hard = None
            return
        wb = torch.as_tensor(np.asarray(w_bits), dtype=torch.long,
                             device=self.module.weight.device)
        if a_bits is None or int(a_bits) not in self.a_opts:
            raise ValueError(f"activation bits {a_bits} not among {self.a_opts}")
        self.hard = (wb, int(a_bits))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.hard is not None:
            wb, ab = self.hard
            x = quantize_act(x, ab, self.hard_alpha(ab), self.signed)
            w = self.module.weight
            # exactly what QuantLayer does after set_bits: MSE scale, |s| + 1e-12
            scale = init_weight_scale(w, wb).abs() + 1e-12
            return self.op(x, quantize_weight(w, wb, scale))
        return self.op(self.soft_input(x), self.soft_weight())


class Supernet(nn.Module):
    """A float model copy whose quantizable layers are :class:`SearchLayer` s.

    Args:
        net: the model with search layers substituted.
        names: quantizable module names in layer-table order.
        layers: the search layers, same order.
    """

    def __init__(self, net: nn.Module, names: Sequence[str], layers: Sequence[SearchLayer]
                 ) -> None:
        super().__init__()
        self.net = net
        self.names = list(names)
        self.slayers: list[SearchLayer] = list(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def refresh_scales(self) -> None:
        for s in self.slayers:
            s.refresh_scales()

    def arch_parameters(self) -> list[nn.Parameter]:
        return [p for s in self.slayers for p in s.arch_parameters()]

    def set_discrete(self, on: bool) -> None:
        """Run every layer's own discrete network (``True``) or its relaxation."""
        for s in self.slayers:
            s.discrete = bool(on)

    def alpha_parameters(self) -> list[nn.Parameter]:
        return [s.a_alpha for s in self.slayers]

    def weight_parameters(self) -> list[nn.Parameter]:
        skip = {id(p) for p in self.arch_parameters() + self.alpha_parameters()}
        return [p for p in self.parameters() if id(p) not in skip]

    def chosen(self) -> tuple[np.ndarray, np.ndarray]:
        """``(w_bits (n_channels,), a_bits (n_layers,))`` of the method's discrete choice."""
        ws, as_ = zip(*(s.chosen() for s in self.slayers), strict=False)
        return np.concatenate([np.asarray(w, dtype=np.int64) for w in ws]), np.asarray(
            as_, dtype=np.int64)

    def set_hard(self, w_bits: np.ndarray | None, a_bits: np.ndarray | None,
                 layer_start: np.ndarray | None = None) -> None:
        """Apply a configuration in every layer (``None``: soft mode)."""
        for i, s in enumerate(self.slayers):
            if w_bits is None or a_bits is None or layer_start is None:
                s.set_hard(None)
            else:
                s.set_hard(w_bits[layer_start[i]: layer_start[i + 1]], int(a_bits[i]))

    def float_state_dict(self) -> dict[str, torch.Tensor]:
        """The state dict of the plain float model (search-layer extras dropped)."""
        out = {}
        for k, v in self.net.state_dict().items():
            owner = next((n for n in self.names if k.startswith(n + ".")), None)
            if owner is None:
                out[k] = v
            elif k.startswith(owner + ".module."):
                out[owner + "." + k[len(owner) + len(".module."):]] = v
        return out


def one_hot(idx: torch.Tensor, n: int) -> torch.Tensor:
    """``(n, *idx.shape)`` float one-hot of the indices ``idx`` along a new first axis."""
    return F.one_hot(idx, n).movedim(-1, 0).to(torch.float32)


@torch.no_grad()
def _calibration_inputs(model: nn.Module, names: Sequence[str], xs: Sequence[torch.Tensor]
                        ) -> list[torch.Tensor]:
    store: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    hooks = [model.get_submodule(n).register_forward_pre_hook(
        lambda m, a, n=n: store[n].append(a[0].detach().reshape(-1))) for n in names]
    was = model.training
    model.eval()
    try:
        for x in xs:
            model(x)
    finally:
        for h in hooks:
            h.remove()
        model.train(was)
    return [torch.cat(store[n]) for n in names]


def layer_options(ctx: Any, drop_zero: bool = False, keep_first_last: bool = False
                  ) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """Per layer ``(w_opts, a_opts)``: the space's choices, or the pin.

    Args:
        ctx: the run context (its ``space``).
        drop_zero: leave 0 (pruning) out of the weight choices (layer-wise methods).
        keep_first_last: hold the first and last layers at the highest choices (EdMIPS).
    """
    t = ctx.space.table
    wc = tuple(b for b in t.w_choices if not (drop_zero and b == 0))
    if not wc:
        raise EvompError(
            f"the weight choices {t.w_choices} leave nothing besides 0 (pruning) for a "
            "layer-wise method; add bit-widths to [space] w_bits"
        )
    out = []
    n = len(t.layers)
    for i, lay in enumerate(t.layers):
        w = (lay.w_pinned,) if lay.w_pinned is not None else wc
        a = (lay.a_pinned,) if lay.a_pinned is not None else tuple(t.a_choices)
        if keep_first_last and i in (0, n - 1):
            w = (max(w),) if lay.w_pinned is None else w
            a = (max(a),) if lay.a_pinned is None else a
        out.append((w, a))
    return out


def build_supernet(
    ctx: Any,
    make_layer: Callable[[int, nn.Module, tuple[int, ...], tuple[int, ...], bool, list[float]],
                         SearchLayer],
    options: Sequence[tuple[tuple[int, ...], tuple[int, ...]]],
    calib_batches: int = 4,
) -> Supernet:
    """Copy ``ctx.model`` (never modified) and substitute the method's search layers.

    Args:
        ctx: run context (``model``, ``space``, ``task``, ``device``).
        make_layer: ``(index, module, w_opts, a_opts, signed, alphas) -> SearchLayer``.
        options: per layer ``(w_opts, a_opts)`` (see :func:`layer_options`).
        calib_batches: training batches (of 256) used to calibrate activation ranges.
    """
    net = copy.deepcopy(ctx.model).to(ctx.device)
    names = ctx.space.layer_names
    for n in names:
        if not isinstance(net.get_submodule(n), QUANTIZABLE):
            raise EvompError(f"layer {n!r} of the space is not Conv1d/Conv2d/Linear")
    xs = [x for (x, _), _ in zip(batches(ctx.task.train, 256, device=ctx.device),
                                  range(calib_batches), strict=False)]
    inputs = _calibration_inputs(net, names, xs)
    layers = []
    for i, (n, (w_opts, a_opts), x) in enumerate(zip(names, options, inputs, strict=False)):
        signed = bool((x < 0).any())
        alphas = [calibrate_alpha(x, b, signed) for b in a_opts]
        s = make_layer(i, net.get_submodule(n), w_opts, a_opts, signed, alphas)
        set_submodule(net, n, s)
        layers.append(s)
    return Supernet(net, names, layers).to(ctx.device)


def predecessors(table: Any) -> np.ndarray:
    """``(n_layers,)`` index of the layer whose output channels feed each layer, or -1.

    A plain chain is assumed: layer ``i`` reads layer ``i-1`` when its input channels
    equal (conv, not grouped) or are a multiple of (linear after a flatten) the previous
    layer's output channels. Used for the DNAS rule that pruned channels shrink what the
    next layer reads; skip connections and grouped convolutions are not followed.
    """
    out = np.full(len(table.layers), -1, dtype=np.int64)
    for i in range(1, len(table.layers)):
        lay, prev = table.layers[i], table.layers[i - 1]
        if lay.groups != 1 or prev.out_channels <= 0:
            continue
        if lay.in_channels == prev.out_channels or (
            lay.kind == "linear" and lay.in_channels % prev.out_channels == 0
        ):
            out[i] = i - 1
    return out


#: The differentiable baselines' named costs: kind -> (metric, model, fixed parameters,
#: scale). ``size`` is the DNAS model size, ``fan_in x bits`` per channel: the memory
#: model's packed weights without per-channel scale or bias, in bits.
PROXIES: dict[str, tuple[str, str, dict[str, Any], float]] = {
    "size": ("weight_bytes", "memory", {"qparam_bits": 0, "bias_bits": 0}, 8.0),
    "bitops": ("bitops", "bitops", {}, 1.0),
    "mpic": ("mpic_cycles", "mpic", {"group_overhead_cycles": 0.0}, 1.0),
}


def _objectives_of(ctx: Any, metric: str) -> Objectives:
    """The run's objectives as the CLI builds them, for a caller that passed none."""
    from evomp.objectives import Objectives

    s = getattr(ctx.spec, "search", None)
    hardware = tuple(getattr(s, "hardware", ()))
    return Objectives(ctx.space.table, ("accuracy", metric), hardware=hardware,
                      hw_params=dict(getattr(ctx.spec, "hw", {}) or {}))


def cost_lut(ctx: Any, kind: str, options: Sequence[tuple[tuple[int, ...], tuple[int, ...]]],
             objectives: Objectives | None = None) -> list[torch.Tensor]:
    """Per-layer cost per channel, ``(len(a_opts), len(w_opts))`` float tensors.

    Every figure comes from the run's hardware models, found through ``objectives``
    (:meth:`~evomp.objectives.Objectives.lookup`) and costed in one vectorized call
    (:meth:`~evomp.objectives.Objectives.uniform_layer_costs`): for every (activation,
    weight) pair of the options, the layer's figure with all its channels at ``w`` and
    its input at ``a`` (a layer without that choice at its highest one), divided by its
    channel count. Pruned choices (0 bits) cost 0.

    Args:
        ctx: run context (``space.table``; ``spec`` when ``objectives`` is None).
        kind: ``"size"`` (fan_in x weight bits: the memory model's packed weights without
            per-channel parameters), ``"bitops"`` (MACs per channel x a x w), ``"mpic"``
            (MPIC cycles per channel, without a per-group overhead), or
            ``"<model>:<metric>"`` / ``"<metric>"`` of any hardware model whose metric
            adds up over layers (e.g. ``"latency_cycles"``, ``"energy_uj"``).
        options: per layer ``(w_opts, a_opts)`` (see :func:`layer_options`).
        objectives: the run's :class:`~evomp.objectives.Objectives`; None builds them from
            ``ctx.spec`` as the CLI does (``[search] hardware`` and ``[hw.*]``).

    Raises:
        EvompError: an unknown metric, one that does not add up over layers, or a bit
            pair the model has no figure for.
    """
    t = ctx.space.table if objectives is None else objectives.table
    if kind in PROXIES:
        metric, model_name, fixed, scale = PROXIES[kind]
    else:
        model_name, _, metric = kind.rpartition(":")
        fixed, scale = {}, 1.0
    try:
        obj = _objectives_of(ctx, metric) if objectives is None else objectives
        if kind in PROXIES:
            model = obj.model_named(model_name)
            if any(model.get_params().get(k) != v for k, v in fixed.items()):
                model = obj.model_named(model_name, fixed)
        else:
            model = obj.lookup(metric, model_name or None)
    except EvompError as e:
        raise EvompError(
            f"no hardware model gives the cost {kind!r} ({e}); use 'size', 'bitops', 'mpic' "
            "or a metric listed by 'evomp hw list'"
        ) from e
    pairs = sorted({(a, w) for wo, ao in options for a in ao for w in wo if w > 0})
    wb = np.array([[w if w in wo else max(wo) for wo, _ in options] for _, w in pairs],
                  dtype=np.int64).reshape(len(pairs), len(options))
    ab = np.array([[a if a in ao else max(ao) for _, ao in options] for a, _ in pairs],
                  dtype=np.int64).reshape(len(pairs), len(options))
    try:
        f = obj.uniform_layer_costs(metric, wb, ab, model=model)  # (P, L)
    except EvompError as e:
        raise EvompError(f"cost {kind!r}: {e}") from e
    index = {p: k for k, p in enumerate(pairs)}
    luts = []
    for li, (lay, (wo, ao)) in enumerate(zip(t.layers, options, strict=False)):
        m = np.zeros((len(ao), len(wo)))
        for j, a in enumerate(ao):
            for i, w in enumerate(wo):
                if w > 0:
                    m[j, i] = f[index[(a, w)], li] / max(lay.out_channels, 1) * scale
        luts.append(torch.tensor(m, dtype=torch.float32))
    return luts


def expected_cost(net: Supernet, luts: Sequence[torch.Tensor],
                  shrink: np.ndarray | None = None) -> torch.Tensor:
    """Differentiable expected cost: ``sum_l f_l * a_probs_l^T lut_l w_counts_l``.

    Args:
        net: the supernet (its layers give ``w_counts`` and ``a_probs``).
        luts: per-layer ``(len(a_opts), len(w_opts))`` costs per channel.
        shrink: ``(n_layers,)`` predecessor index per layer (-1: none); when given, each
            layer's cost is scaled by the expected fraction of kept (unpruned) output
            channels of its predecessor.
    """
    total = torch.zeros((), device=luts[0].device if luts else None)
    counts = [s.w_counts() for s in net.slayers]
    for i, (s, lut) in enumerate(zip(net.slayers, luts, strict=False)):
        c = s.a_probs() @ lut.to(counts[i].device) @ counts[i]
        if shrink is not None and shrink[i] >= 0:
            p = net.slayers[shrink[i]]
            if 0 in p.w_opts:
                kept = 1.0 - counts[shrink[i]][p.w_opts.index(0)] / p.out_channels
                c = c * kept
        total = total + c
    return total


def max_cost(net: Supernet, luts: Sequence[torch.Tensor]) -> float:
    """Cost of the network with every layer at its highest choices (the normaliser)."""
    tot = 0.0
    for s, lut in zip(net.slayers, luts, strict=False):
        tot += float(lut[-1, -1]) * s.out_channels
    return max(tot, 1e-12)


def sweep_values(default: Sequence[float], points: int | None, name: str) -> list[float]:
    """The sweep of a method: ``default`` as given, or ``points`` values spread
    geometrically between its smallest and largest entries.

    Raises:
        EvompError: an empty or non-positive sweep, or ``points < 1``.
    """
    vals = [float(v) for v in default]
    if not vals or any(v <= 0 for v in vals):
        raise EvompError(f"{name} must be a non-empty list of positive numbers, got {default}")
    if points is None or points == len(vals):
        return vals
    if points < 1:
        raise EvompError(f"--points must be >= 1, got {points}")
    lo, hi = min(vals), max(vals)
    if points == 1:
        return [math.sqrt(lo * hi)]
    return [float(v) for v in np.geomspace(lo, hi, points)]


def epoch_batches(task: Task, batch_size: int, gen: torch.Generator, device: Any
                  ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    return batches(task.train, batch_size, shuffle=True, generator=gen, device=device)


def n_batches(task: Task, batch_size: int) -> int:
    """Number of batches one pass of :func:`epoch_batches` yields.

    In-memory data is cut into ``ceil(N / batch_size)`` batches; a user ``DataLoader``
    yields its own batches (``batch_size`` is ignored), ``len(loader)`` of them, or, for
    a loader without a length (an iterable dataset), as many as one pass counts.
    """
    data = task.train
    if isinstance(data, TensorData):
        return max(1, math.ceil(len(data) / batch_size))
    try:
        return max(1, len(data))
    except TypeError:
        return max(1, sum(1 for _ in data))


def make_weight_optimizer(groups: list[dict], kind: str, method: str) -> torch.optim.Optimizer:
    """Optimizer of the weights (and activation ranges): ``"adam"`` or ``"sgd"``
    (momentum 0.9, the papers' choice), over the non-empty parameter groups."""
    groups = [g for g in groups if g["params"]]
    if kind == "adam":
        return make_adam(groups)
    if kind == "sgd":
        return torch.optim.SGD(groups, lr=groups[0]["lr"] if groups else 0.0, momentum=0.9)
    raise EvompError(
        f"[baselines.{method}] weight_optimizer must be 'adam' or 'sgd', got {kind!r}"
    )


def make_arch_optimizer(params: list[nn.Parameter], kind: str, lr: float, method: str
                        ) -> torch.optim.Optimizer:
    """Optimizer of the architecture parameters: ``"sgd"`` (momentum 0.9) or ``"adam"``."""
    if kind == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9)
    if kind == "adam":
        return make_adam([{"params": params, "lr": lr}])
    raise EvompError(f"[baselines.{method}] arch_optimizer must be 'sgd' or 'adam', got {kind!r}")


def freeze_bn(net: nn.Module) -> None:
    """Put every BatchNorm in eval mode (running statistics used and kept fixed).

    With batch statistics a BatchNorm-followed channel is invariant to its weight scale,
    so the task loss cannot see a mixture drifting toward the 0-bit choice (``Q_0 = 0``
    only shrinks the channel): pruning would be free. Frozen statistics make it visible.
    """
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


@torch.no_grad()
def reestimate_bn(net: nn.Module, task: Task, batch_size: int, device: Any, n: int = 8) -> None:
    """Recompute BatchNorm running statistics under the current (hard) configuration."""
    bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    was = net.training
    net.train()
    gen = torch.Generator().manual_seed(0)
    for (x, _), _ in zip(epoch_batches(task, batch_size, gen, device), range(n), strict=False):
        net(x)
    net.train(was)
    for m, mom in zip(bns, saved, strict=False):
        m.momentum = mom


#: Largest relative output difference :func:`point_stats` accepts between the method's
#: discrete network and the ``QuantModel`` of its exported bits (any layer's output or
#: the network's). Both run the same quantizers on the same weights, so they agree to
#: float rounding (~1e-6); one channel or one layer at other bits moves a layer's
#: outputs by far more (1e-2 and up).
CHECK_TOLERANCE = 1e-4


@torch.no_grad()
def check_argmax(ctx: Any, net: Supernet, w_bits: np.ndarray, a_bits: np.ndarray,
                 n: int = 256) -> float:
    """Max relative difference between the method's discrete network and the
    ``QuantModel`` of the exported bits, over every quantized layer's output and the
    network's output.

    The supernet runs in *discrete* mode: every layer's own forward with its
    architecture parameters discretised by the method (see :class:`SearchLayer`), so
    its bits come from the method's logits, gates or learned ranges and never from
    ``w_bits``/``a_bits``. A fresh :class:`~evomp.quant.QuantModel` gets the searched
    network's current weights, BatchNorm statistics and learned activation ranges, and
    only the exported configuration, written with ``set_bits`` as the evaluator does.
    Both run in eval mode on validation inputs; an export that is not the network the
    method chose (a channel or a layer at other bits) gives a large difference. Every
    layer's output is compared, not only the network's, so that bits of a channel whose
    contribution dies downstream (e.g. behind a ReLU) are checked too.

    Args:
        ctx: run context.
        net: the supernet (its scales refreshed; left in its relaxed mode).
        w_bits: ``(n_channels,)`` exported weight bits.
        a_bits: ``(n_layers,)`` exported activation bits.
        n: number of validation samples compared.

    Returns:
        ``max`` over the layers' outputs and the network's output of
        ``max |y_method - y_quant| / max(1, max |y_quant|)``.
    """
    t = ctx.space.table
    plain = copy.deepcopy(ctx.model).to(ctx.device)
    plain.load_state_dict(net.float_state_dict())
    qm = QuantModel(plain, net.names).to(ctx.device)
    x, _ = next(iter(batches(ctx.task.val, n, device=ctx.device)))
    x = x[:n]
    for q, s in zip(qm.qlayers, net.slayers, strict=True):  # what calibration would set
        q._signed = s.signed
        q.a_signed.fill_(s.signed)
        for b in s.a_opts:  # the learned range of each choice
            q.a_table[b] = s.hard_alpha(b).detach()
    qm.set_bits(w_bits, a_bits, t.layer_start)
    qm.eval()
    outs: dict[int, list[torch.Tensor]] = {0: [], 1: []}
    hooks = [m.register_forward_hook(lambda mod, a, y, k=k: outs[k].append(y))
             for k, layers in ((0, net.slayers), (1, qm.qlayers)) for m in layers]
    was = net.training
    net.set_hard(None, None)
    net.set_discrete(True)
    net.eval()
    try:
        y_h = net(x)
        y_q = qm(x)
    finally:
        net.set_discrete(False)
        net.train(was)
        for h in hooks:
            h.remove()
    pairs = list(zip(outs[0], outs[1], strict=True)) + [(y_h, y_q)]
    return max(float((a - b).abs().max() / max(1.0, float(b.abs().max()))) for a, b in pairs)


def finish_points(
    ctx: Any,
    objectives: Any,
    method: str,
    points: list[dict[str, Any]],
    w_rows: list[np.ndarray],
    a_rows: list[np.ndarray],
    t0: float,
    extra: dict[str, Any] | None = None,
    *,
    params: dict[str, Any],
    overrides: Sequence[str] = (),
) -> tuple[np.ndarray, dict[str, Any]]:
    """Encode the chosen configurations and gather the method's ``info``.

    Every genome goes through :func:`evomp.engines._operators.repair_all_pruned` (no
    searched layer exported with every channel pruned, as the search guarantees); the
    layers already keep their most likely channel, so a row it changes is recorded
    (``repaired_rows``) as no longer the checked network.

    Args:
        points: one dict per sweep point (cost weight, statistics), extended here with
            the hardware metrics of its configuration.
        w_rows / a_rows: ``(n_channels,)`` and ``(n_layers,)`` bits per point.
        t0: ``time.perf_counter()`` at the start of the method.
        extra: more ``info`` fields.
        params: the full hyper-parameters used (defaults merged with the spec's table).
        overrides: the keys the spec's ``[baselines.<method>]`` table set.

    Returns:
        ``(genomes (n, n_genes) int8, info)``.
    """
    from evomp.space import repair_all_pruned

    t = ctx.space.table
    try:
        genomes = t.encode(np.stack(w_rows), np.stack(a_rows))
    except ValueError as e:  # a bug: every layer chooses among the space's choices
        raise RuntimeError(f"{method}: chosen configuration is not in the space: {e}") from e
    fixed = repair_all_pruned(t, genomes.astype(np.int64)).astype(np.int8)
    repaired = np.nonzero(np.any(fixed != genomes, axis=1))[0]
    genomes = fixed
    for r in repaired:
        points[int(r)]["repaired_all_pruned"] = True
    costs = objectives.costs(genomes)
    for k, p in enumerate(points):
        p.update({m: float(v[k]) for m, v in costs.items()})
    distinct = len({g.tobytes() for g in genomes})
    info = {
        "method": method,
        "params": _jsonable(params),
        "param_overrides": sorted(overrides),
        "points": points,
        "distinct_configurations": distinct,
        "repaired_rows": [int(k) for k in repaired],
        "search_seconds": time.perf_counter() - t0,
        **(extra or {}),
    }
    return genomes, info


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


def point_stats(ctx: Any, net: Supernet, w_bits: np.ndarray, a_bits: np.ndarray,
                batch_size: int, tol: float = CHECK_TOLERANCE) -> dict[str, Any]:
    """Check the exported configuration and score the method's discrete network (info
    only; the reported accuracy is the one after the common final QAT).

    The accuracies are those of the method's own eval network, in which the relaxation
    is replaced by the hard choice (argmax, thresholded gates, rounded bits):
    ``argmax_val_accuracy`` with the search's BatchNorm statistics and
    ``argmax_val_accuracy_bn_reestimated`` after re-estimating them for that network.

    Raises:
        RuntimeError: the method's discrete network and the ``QuantModel`` of the
            exported configuration differ by more than ``tol``.
    """
    net.refresh_scales()
    diff = check_argmax(ctx, net, w_bits, a_bits)
    if not diff <= tol:
        raise RuntimeError(
            f"exported configuration does not reproduce the searched network "
            f"(relative output difference {diff:.3g} > {tol:g})"
        )
    net.set_discrete(True)
    try:
        argmax_val, _ = evaluate_model(net, ctx.task, ctx.task.val, ctx.device)
        reestimate_bn(net, ctx.task, batch_size, ctx.device)
        bn_val, _ = evaluate_model(net, ctx.task, ctx.task.val, ctx.device)
    finally:
        net.set_discrete(False)
    w = np.asarray(w_bits)
    kept = w > 0
    return {
        "argmax_val_accuracy": argmax_val,
        "argmax_val_accuracy_bn_reestimated": bn_val,
        "check_max_rel_diff": diff,
        "check_tolerance": tol,
        "pruned_fraction": float(1.0 - kept.mean()),
        "mean_w_bits_kept": float(w[kept].mean()) if kept.any() else 0.0,
        "w_bits_histogram": {int(b): int((w == b).sum()) for b in np.unique(w)},
        "a_bits": [int(a) for a in a_bits],
    }
