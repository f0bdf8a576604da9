"""The differentiable baselines (EdMIPS, DNAS, Bayesian Bits, learned precision) on a tiny model."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from evomp import SearchSpace
from evomp._errors import EvompError
from evomp.baselines import BaselineOptions, _bayesbits, _dnas, _edmips, _learned, get_method
from evomp.baselines._bayesbits import BayesBitsLayer, HardConcrete, gate_on
from evomp.baselines._diff_common import (
    CHECK_TOLERANCE,
    build_supernet,
    check_argmax,
    cost_lut,
    expected_cost,
    finish_points,
    layer_options,
    make_weight_optimizer,
    n_batches,
    point_stats,
    predecessors,
    sweep_values,
)
from evomp.baselines._dnas import DnasLayer, init_logits, temperature
from evomp.baselines._edmips import EdmipsLayer
from evomp.baselines._learned import LearnedLayer, learned_bits, ramp, to_choices
from evomp.objectives._objectives import Objectives
from evomp.tasks import from_arrays

METHODS = ("edmips", "dnas-channel", "dnas-layer", "bayesbits", "learned")
FAST = {"epochs": 1, "batch_size": 32, "calib_batches": 1}
DEFAULTS = {"edmips": _edmips.DEFAULTS, "dnas-channel": _dnas.DEFAULTS,
            "dnas-layer": _dnas.LAYER_DEFAULTS, "bayesbits": _bayesbits.DEFAULTS,
            "learned": _learned.DEFAULTS}
SWEEP = {"edmips": "cost_weights", "dnas-channel": "cost_weights", "dnas-layer": "cost_weights",
         "bayesbits": "mus"}


class Tiny(nn.Module):
    """Conv1d + BN + depthwise Conv1d + Linear (every quantizable kind but Conv2d)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(2, 6, 3, padding=1)
        self.bn = nn.BatchNorm1d(6)
        self.dw = nn.Conv1d(6, 6, 3, padding=1, groups=6)
        self.fc = nn.Linear(6 * 8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.conv(x)))
        x = torch.relu(self.dw(x))
        return self.fc(x.flatten(1))


def make_ctx(w_bits=(0, 2, 4, 8), a_bits=(2, 4, 8), pin=None) -> SimpleNamespace:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 2, 8)).astype(np.float32)
    y = (x[:, 0, :4].sum(1) > 0).astype(np.int64) + 2 * (x[:, 1, 4:].sum(1) > 0)
    xt = rng.normal(size=(32, 2, 8)).astype(np.float32)
    yt = (xt[:, 0, :4].sum(1) > 0).astype(np.int64) + 2 * (xt[:, 1, 4:].sum(1) > 0)
    task = from_arrays(x, y, xt, yt, Tiny, name="tiny", val_fraction=0.25)
    torch.manual_seed(0)
    model = Tiny()
    space = SearchSpace.from_model(model, task.example_input(), w_bits=w_bits, a_bits=a_bits,
                                   pin=pin)
    spec = SimpleNamespace(seed=0, hw={}, name="tiny")
    return SimpleNamespace(spec=spec, task=task, model=model, space=space,
                           device=torch.device("cpu"))


@pytest.fixture(scope="module")
def ctx() -> SimpleNamespace:
    return make_ctx()


def objectives(ctx: SimpleNamespace) -> Objectives:
    return Objectives(ctx.space.table, ("accuracy", "memory_bytes"), hardware=("memory",))


# ------------------------------------------------------------------ end to end
@pytest.mark.parametrize("name", METHODS)
def test_method_runs_end_to_end(ctx: SimpleNamespace, name: str) -> None:
    before = {k: v.clone() for k, v in ctx.model.state_dict().items()}
    res = get_method(name)(ctx, objectives(ctx), BaselineOptions(points=2, params=dict(FAST)))
    g = ctx.space.check(res.genomes)
    assert g.shape == (2, ctx.space.n_genes)
    assert len(res.info["points"]) == 2
    for p in res.info["points"]:
        assert p["check_max_rel_diff"] <= CHECK_TOLERANCE  # exported = the chosen network
        assert "memory_bytes" in p and p["seconds"] > 0
        assert 0.0 <= p["argmax_val_accuracy"] <= 1.0 and "soft_val_accuracy" not in p
    # the full merged hyper-parameters, defaults included, and which ones the spec set
    assert res.info["params"] == {**DEFAULTS[name], **FAST}
    assert res.info["param_overrides"] == sorted(FAST)
    assert res.info["repaired_rows"] == []
    for k, v in ctx.model.state_dict().items():  # ctx.model is never modified
        assert torch.equal(v, before[k])
    wb, _ = ctx.space.decode(g)
    if name in ("edmips", "dnas-layer", "bayesbits"):
        assert (wb > 0).all()  # layer-wise methods never prune


def test_unknown_param_rejected(ctx: SimpleNamespace) -> None:
    with pytest.raises(EvompError, match="temprature"):
        get_method("dnas-channel")(ctx, objectives(ctx),
                                   BaselineOptions(params={"temprature": 1.0}))


def test_bayesbits_needs_2_4_8() -> None:
    c = make_ctx(w_bits=(0, 2, 8))
    with pytest.raises(EvompError, match="include 2, 4 and 8"):
        get_method("bayesbits")(c, objectives(c), BaselineOptions(params=dict(FAST)))


def test_pinned_layers_respected() -> None:
    c = make_ctx(pin={"conv": 8, "fc": [4, 8]})
    res = get_method("dnas-channel")(c, objectives(c), BaselineOptions(points=1,
                                                                      params=dict(FAST)))
    wb, ab = c.space.decode(res.genomes)
    t = c.space.table
    assert (wb[0, t.layer_start[0]:t.layer_start[1]] == 8).all() and ab[0, 0] == 8
    assert (wb[0, t.layer_start[2]:t.layer_start[3]] == 4).all() and ab[0, 2] == 8


def test_edmips_options_drop_zero_and_keep_first_last(ctx: SimpleNamespace) -> None:
    opts = layer_options(ctx, drop_zero=True, keep_first_last=True)
    assert opts[0] == ((8,), (8,)) and opts[-1] == ((8,), (8,))
    assert opts[1] == ((2, 4, 8), (2, 4, 8))


# ------------------------------------------------------------------- gradients
def _layers():
    return {
        "edmips": (lambda i, m, w, a, s, al: EdmipsLayer(m, w, a, s, al), True),
        "dnas": (lambda i, m, w, a, s, al: DnasLayer(m, w, a, s, al), False),
        "bayesbits": (lambda i, m, w, a, s, al: BayesBitsLayer(
            m, (2, 4, 8), a, s, al, {"init": 2.0, "beta": 0.5, "gamma": -0.1, "zeta": 1.1},
            0.34), True),
        "learned": (lambda i, m, w, a, s, al: LearnedLayer(m, w, a, s, al), False),
    }


@pytest.mark.parametrize("kind", ["edmips", "dnas", "bayesbits", "learned"])
def test_gradients_reach_architecture_parameters(ctx: SimpleNamespace, kind: str) -> None:
    make, drop_zero = _layers()[kind]
    opts = layer_options(ctx, drop_zero=drop_zero)
    if kind == "bayesbits":
        opts = [((2, 4, 8), a) for _, a in opts]
    torch.manual_seed(0)
    net = build_supernet(ctx, make, opts, calib_batches=1)
    net.train()
    x, y = ctx.task.train.x[:32], ctx.task.train.y[:32]
    loss = nn.functional.cross_entropy(net(x), y)
    if kind == "learned":
        loss = loss + sum(s.w_size_bits() + s.a_bits_value() for s in net.slayers) * 1e-3
    else:
        loss = loss + expected_cost(net, cost_lut(ctx, "bitops", opts)) * 1e-6
    loss.backward()
    arch = net.arch_parameters()
    assert arch
    for prm in arch:
        assert prm.grad is not None and torch.isfinite(prm.grad).all()
        assert prm.grad.abs().sum() > 0
    for s in net.slayers:  # the weights learn too
        assert s.module.weight.grad is not None and s.module.weight.grad.abs().sum() > 0


# -------------------------------------------------------------- DNAS schedule
def test_temperature_schedule() -> None:
    assert temperature(0) == pytest.approx(5.0)
    for e in (1, 10, 100):
        assert temperature(e) == pytest.approx(5.0 * math.exp(-0.045 * e))
        assert temperature(e) / temperature(e - 1) == pytest.approx(math.exp(-0.045))
    assert temperature(3, t0=2.0, decay=0.1) == pytest.approx(2.0 * math.exp(-0.3))


def test_dnas_logits_start_toward_highest_precision(ctx: SimpleNamespace) -> None:
    assert init_logits((0, 2, 4, 8)).tolist() == pytest.approx([0, 0.25, 0.5, 1.0])
    net = build_supernet(ctx, lambda i, m, w, a, s, al: DnasLayer(m, w, a, s, al),
                         layer_options(ctx), calib_batches=1)
    wb, ab = net.chosen()
    assert (wb == 8).all() and (ab == 8).all()
    th = net.slayers[0].theta_w()
    assert th.shape == (4, 6) and torch.allclose(th.sum(0), torch.ones(6))
    net.slayers[0].tau = 0.1  # annealing sharpens the same preference
    assert net.slayers[0].theta_w()[-1].min() > th[-1].max()


def test_pruned_channels_shrink_next_layer_cost(ctx: SimpleNamespace) -> None:
    opts = layer_options(ctx)
    pred = predecessors(ctx.space.table)
    assert pred.tolist() == [-1, -1, 1]  # depthwise is not followed; fc reads dw
    net = build_supernet(ctx, lambda i, m, w, a, s, al: DnasLayer(m, w, a, s, al), opts, 1)
    luts = cost_lut(ctx, "size", opts)
    c0 = float(expected_cost(net, luts, pred).detach())
    with torch.no_grad():
        net.slayers[1].w_logits[0] += 100.0  # prune every dw channel
    c1 = float(expected_cost(net, luts, pred).detach())
    assert c1 < 1e-3 * c0 + float(luts[0][-1, -1]) * 6


# ------------------------------------------------------------ Bayesian Bits gates
def test_hard_concrete_gate_threshold() -> None:
    g = HardConcrete(2, init=2.0)
    # P(z = 0) = sigmoid(beta * log(-gamma / zeta) - log_alpha)
    expect = 1 / (1 + math.exp(-(0.5 * math.log(0.1 / 1.1) - 2.0)))
    assert float(g.p_zero()[0].detach()) == pytest.approx(expect)
    boundary = 0.5 * math.log(0.1 / 1.1) - math.log(0.34 / 0.66)  # P(z = 0) == 0.34
    with torch.no_grad():
        g.log_alpha.copy_(torch.tensor([boundary + 0.05, boundary - 0.05]))
    assert gate_on(g.p_zero(), 0.34).tolist() == [True, False]
    g.eval()
    assert g(0.34).tolist() == [1.0, 0.0]
    g.train()
    torch.manual_seed(0)
    with torch.no_grad():
        g.log_alpha.fill_(0.0)
    s = torch.stack([g.sample() for _ in range(2000)])
    assert s.min() == 0.0 and s.max() == 1.0  # the stretch gives exact zeros and ones
    p0 = float(g.p_zero()[0].detach())
    assert float((s == 0).float().mean()) == pytest.approx(p0, abs=0.03)


def test_bayesbits_bits_from_gates(ctx: SimpleNamespace) -> None:
    layer = BayesBitsLayer(nn.Conv1d(2, 3, 3), (2, 4, 8), (2, 4, 8), True, [1.0, 1.0, 1.0],
                           {"init": 2.0}, 0.34)
    cases = {(5.0, 5.0): 8, (5.0, -5.0): 4, (-5.0, 5.0): 2, (-5.0, -5.0): 2}
    for (z4, z8), bits in cases.items():
        with torch.no_grad():
            layer.w_gates.log_alpha.copy_(torch.tensor([z4, z8]))
            layer.a_gates.log_alpha.copy_(torch.tensor([z4, z8]))
        wb, ab = layer.chosen()
        assert (wb == bits).all() and ab == bits


# ------------------------------------------------------------- learned precision
def test_learned_bit_formula() -> None:
    d = torch.tensor(1.0)
    for n, signed, bits in ((127, True, 8), (7, True, 4), (1, True, 2), (0, True, 0),
                            (255, False, 8), (3, False, 2), (0.3, True, 0)):
        assert float(learned_bits(torch.tensor(float(n)), d, signed)) == bits
    assert to_choices(np.array([0, 1, 2, 3, 5, 8, 11]), (0, 2, 4, 8)).tolist() == \
        [0, 2, 2, 4, 8, 8, 8]
    assert to_choices(np.array([0, 1]), (2, 4, 8)).tolist() == [2, 2]
    assert ramp(0, 100) == pytest.approx(0.01)
    assert ramp(25, 100) == pytest.approx(0.1)
    assert ramp(50, 100) == ramp(90, 100) == 1.0


def test_sweep_values() -> None:
    assert sweep_values([1, 10], None, "x") == [1.0, 10.0]
    assert sweep_values([1, 10, 100], 3, "x") == [1.0, 10.0, 100.0]
    assert sweep_values([1, 100], 3, "x") == pytest.approx([1.0, 10.0, 100.0])
    with pytest.raises(EvompError):
        sweep_values([], 2, "x")


def test_bayesbits_refine_never_slower(ctx: SimpleNamespace) -> None:
    import hwmodels

    params = dict(FAST, refine="pulp")
    res = get_method("bayesbits")(ctx, objectives(ctx), BaselineOptions(points=1, params=params))
    assert res.genomes.shape[0] == 2 and res.info["refined_rows"] == [1]
    lat = hwmodels.get("pulp", table=ctx.space.table).cost(ctx.space.table, res.genomes)
    assert lat["latency_cycles"][1] <= lat["latency_cycles"][0]
    assert (res.genomes[1] >= res.genomes[0]).all()


# ---------------------------------------------------------- numerical export check
def _supernet(ctx: SimpleNamespace, kind: str):
    make, drop_zero = _layers()[kind]
    opts = layer_options(ctx, drop_zero=drop_zero)
    if kind == "bayesbits":
        opts = [((2, 4, 8), a) for _, a in opts]
    torch.manual_seed(0)
    return build_supernet(ctx, make, opts, calib_batches=1)


@torch.no_grad()
def _choose(net, kind: str, rng: np.random.Generator, strength: float = 3.0) -> None:
    """Put every layer's architecture parameters at a random discrete choice (channel-wise
    kinds: a different choice per channel, pruning included)."""
    for s in net.slayers:
        if kind in ("dnas", "edmips"):
            s.w_logits.zero_()
            s.a_logits.zero_()
            if s.w_logits.dim() == 2:
                cols = s.w_logits.shape[1]
                s.w_logits[rng.integers(0, len(s.w_opts), cols), np.arange(cols)] = strength
            else:
                s.w_logits[rng.integers(len(s.w_opts))] = strength
            s.a_logits[rng.integers(len(s.a_opts))] = strength
        elif kind == "bayesbits":
            for g in (s.w_gates, s.a_gates):
                g.log_alpha.copy_(torch.tensor(rng.choice([-5.0, 5.0], 2), dtype=torch.float32))
        else:  # learned: ranges holding about 0, 1, 7 or 127 steps: 0, 2, 4 or 8 bits
            d = torch.pow(2.0, torch.round(s.w_log2_d))
            n = torch.tensor(rng.choice([0.3, 1.0, 7.0, 127.0], s.out_channels),
                             dtype=torch.float32)
            s.w_log_xmax.copy_(torch.log(n * d))
            na = rng.choice([1.0, 7.0, 127.0] if s.signed else [3.0, 15.0, 255.0])
            s.a_log2_d.fill_(round(float(s.a_log_xmax) / math.log(2) - math.log2(na)))


def _corruptions(ctx: SimpleNamespace, net, wb: np.ndarray, ab: np.ndarray, channelwise: bool):
    """Exports that are not the chosen network: two channels' bits swapped in a mixed
    layer, one layer's weight bits changed, one layer's activation bits changed (every
    layer in turn), and random bits unrelated to the architecture parameters."""
    t = ctx.space.table
    st = t.layer_start
    swapped = 0
    for i in range(t.n_layers):
        seg = wb[st[i]:st[i + 1]]
        if channelwise and len(np.unique(seg)) > 1:
            j, k = 0, int(np.nonzero(seg != seg[0])[0][0])
            w2 = wb.copy()
            w2[st[i] + j], w2[st[i] + k] = seg[k], seg[j]
            swapped += 1
            yield f"swap channels {j},{k} of layer {i}", w2, ab
        s = net.slayers[i]
        other = [b for b in s.w_opts if b not in (0, seg[0])]
        w2 = wb.copy()
        w2[st[i]:st[i + 1]] = other[0]
        yield f"weight bits of layer {i}", w2, ab
        a2 = ab.copy()
        a2[i] = next(b for b in s.a_opts if b != ab[i])
        yield f"activation bits of layer {i}", wb, a2
    if channelwise:
        assert swapped >= 2  # the state mixes bits within layers
    rng = np.random.default_rng(7)
    w2 = rng.choice([b for b in t.w_choices if b], size=t.n_channels)
    yield "random bits", w2, rng.choice(t.a_choices, size=t.n_layers)


@pytest.mark.parametrize("kind", ["edmips", "dnas", "bayesbits", "learned"])
def test_check_argmax_passes_the_export_and_fails_corrupted_bits(ctx: SimpleNamespace,
                                                                 kind: str) -> None:
    net = _supernet(ctx, kind)
    _choose(net, kind, np.random.default_rng(3))
    net.refresh_scales()
    wb, ab = net.chosen()
    channelwise = kind in ("dnas", "learned")
    if channelwise:
        assert (wb == 0).any() and len(np.unique(wb)) >= 3  # pruned and mixed channels
    assert check_argmax(ctx, net, wb, ab) <= CHECK_TOLERANCE
    n = 0
    for what, w2, a2 in _corruptions(ctx, net, wb, ab, channelwise):
        assert check_argmax(ctx, net, w2, a2) > 10 * CHECK_TOLERANCE, what
        n += 1
    assert n >= 7
    assert not net.slayers[0].discrete  # the check leaves the supernet relaxed


def test_point_stats_rejects_an_export_that_is_not_the_chosen_network(
        ctx: SimpleNamespace) -> None:
    net = _supernet(ctx, "dnas")
    _choose(net, "dnas", np.random.default_rng(3))
    wb, ab = net.chosen()
    t = ctx.space.table
    a2 = ab.copy()
    a2[-1] = 2 if ab[-1] != 2 else 8
    with pytest.raises(RuntimeError, match="does not reproduce"):
        point_stats(ctx, net, wb, a2, 32)
    w2 = wb.copy()
    w2[t.layer_start[0]:t.layer_start[1]] = np.roll(w2[t.layer_start[0]:t.layer_start[1]], 1)
    assert not np.array_equal(w2, wb)
    with pytest.raises(RuntimeError, match="does not reproduce"):
        point_stats(ctx, net, w2, ab, 32)


def test_dnas_eval_is_the_hard_argmax_and_is_what_point_stats_scores(
        ctx: SimpleNamespace) -> None:
    from evomp.baselines._diff_common import freeze_bn
    from evomp.tasks._train import evaluate_model

    net = _supernet(ctx, "dnas")
    _choose(net, "dnas", np.random.default_rng(5), strength=0.5)  # a soft mixture
    net.refresh_scales()
    x = ctx.task.val.x
    net.eval()
    y_eval = net(x)
    net.set_discrete(True)
    y_disc = net(x)
    net.set_discrete(False)
    net.train()
    freeze_bn(net)  # same BatchNorm statistics, relaxed layers
    y_soft = net(x)
    assert torch.equal(y_eval, y_disc)  # eval replaces the mixture by the hard argmax
    assert (y_soft - y_eval).abs().max() > 1e-2
    acc, _ = evaluate_model(net, ctx.task, ctx.task.val)
    stats = point_stats(ctx, net, *net.chosen(), 32)
    assert stats["argmax_val_accuracy"] == acc
    assert "soft_val_accuracy" not in stats


# --------------------------------------------------- no layer exported fully pruned
def test_dnas_keeps_the_channel_least_likely_pruned(ctx: SimpleNamespace) -> None:
    net = _supernet(ctx, "dnas")
    t = ctx.space.table
    s = net.slayers[0]  # conv, choices (0, 2, 4, 8), 6 channels
    with torch.no_grad():
        s.w_logits.zero_()
        s.w_logits[0] = 5.0  # every channel's argmax: pruned
        s.w_logits[2, 3] = 4.0  # channel 3 least likely pruned, its runner-up 4 bits
    wb, ab = net.chosen()
    assert wb[t.layer_start[0]:t.layer_start[1]].tolist() == [0, 0, 0, 4, 0, 0]
    net.refresh_scales()
    assert check_argmax(ctx, net, wb, ab) <= CHECK_TOLERANCE  # the network keeps it too
    w2 = wb.copy()
    w2[t.layer_start[0] + 3] = 0
    assert check_argmax(ctx, net, w2, ab) > 10 * CHECK_TOLERANCE


def test_learned_keeps_the_channel_with_most_levels(ctx: SimpleNamespace) -> None:
    net = _supernet(ctx, "learned")
    t = ctx.space.table
    s = net.slayers[0]
    with torch.no_grad():
        d = torch.pow(2.0, torch.round(s.w_log2_d))
        s.w_log_xmax.copy_(torch.log(0.2 * d))  # no level fits: 0 bits everywhere
        s.w_log_xmax[2] = torch.log(0.4 * d[2])
    wb, ab = net.chosen()
    assert wb[t.layer_start[0]:t.layer_start[1]].tolist() == [0, 0, 2, 0, 0, 0]
    net.refresh_scales()
    assert check_argmax(ctx, net, wb, ab) <= CHECK_TOLERANCE


def test_finish_points_repairs_a_fully_pruned_layer(ctx: SimpleNamespace) -> None:
    import time

    t = ctx.space.table
    wb = np.full(t.n_channels, 8)
    wb[t.layer_start[0]:t.layer_start[1]] = 0
    ab = np.full(t.n_layers, 8)
    points = [{"cost_weight": 1.0}, {"cost_weight": 2.0}]
    g, info = finish_points(ctx, objectives(ctx), "test", points, [wb, np.full_like(wb, 4)],
                            [ab, ab], time.perf_counter(), params={"epochs": 1},
                            overrides=["epochs"])
    w2, _ = t.decode(g)
    assert (w2[0, t.layer_start[0]:t.layer_start[1]] > 0).sum() == 1
    assert (w2[1] == 4).all()
    assert info["repaired_rows"] == [0] and points[0]["repaired_all_pruned"]
    assert "repaired_all_pruned" not in points[1]
    assert info["params"] == {"epochs": 1} and info["param_overrides"] == ["epochs"]


# ------------------------------------------------ a user DataLoader as training data
def make_loader_ctx() -> SimpleNamespace:
    import dataclasses

    from torch.utils.data import DataLoader, TensorDataset

    c = make_ctx()
    tr = c.task.train  # 72 samples: 5 batches of 16
    loader = DataLoader(TensorDataset(tr.x, tr.y), batch_size=16, shuffle=True,
                        generator=torch.Generator().manual_seed(0))
    c.task = dataclasses.replace(c.task, train=loader)
    return c


def test_n_batches_counts_a_loaders_batches() -> None:
    from torch.utils.data import DataLoader, IterableDataset

    c = make_loader_ctx()
    assert n_batches(c.task, 128) == len(c.task.train) == 5
    x, y = c.task.train.dataset.tensors

    class Stream(IterableDataset):  # no length: counted in one pass
        def __iter__(self):
            return iter(zip(x, y, strict=True))

    import dataclasses

    stream = dataclasses.replace(c.task, train=DataLoader(Stream(), batch_size=16))
    assert n_batches(stream, 128) == 5
    assert n_batches(make_ctx().task, 32) == 3  # in-memory: ceil(72 / 32)


def test_dnas_on_a_dataloader_trains_the_weights() -> None:
    c = make_loader_ctx()
    res = get_method("dnas-channel")(c, objectives(c), BaselineOptions(
        points=1, params={**FAST, "epochs": 2}))
    pt = res.info["points"][0]
    assert pt["batches_per_epoch"] == 5 and pt["arch_batches_per_epoch"] == 1
    assert pt["weight_steps"] == 8 and pt["arch_steps"] == 2  # 80% / 20% of each epoch
    assert pt["weight_rel_change"] > 1e-4  # the weights did move


def test_dnas_needs_two_batches_per_epoch(ctx: SimpleNamespace) -> None:
    with pytest.raises(EvompError, match="batch_size"):
        get_method("dnas-channel")(ctx, objectives(ctx), BaselineOptions(
            points=1, params={**FAST, "batch_size": 128}))  # 72 samples: one batch


def test_learned_ramp_spans_the_run_on_a_dataloader() -> None:
    c = make_loader_ctx()
    res = get_method("learned")(c, objectives(c), BaselineOptions(
        points=1, params={**FAST, "epochs": 4}))
    pt = res.info["points"][0]
    assert pt["steps"] == pt["ramp_total_steps"] == 20
    lam = pt["penalty_weight_per_epoch"]
    assert lam[0] == pytest.approx(ramp(4, 20)) and lam[0] < 0.1
    assert lam[1] < 1.0 and lam[2] == lam[3] == 1.0  # full weight from mid-run only


# ----------------------------------------------------------- DNAS temperatures used
@pytest.mark.parametrize("params", [{}, {"t0": 2.0, "t_decay": 0.1}])
def test_run_dnas_anneals_the_temperature_every_epoch(ctx: SimpleNamespace, monkeypatch,
                                                      params: dict) -> None:
    seen: list[float] = []
    soft = DnasLayer._soft_theta_w

    def spy(self: DnasLayer) -> torch.Tensor:
        seen.append(self.tau)
        return soft(self)

    monkeypatch.setattr(DnasLayer, "_soft_theta_w", spy)
    epochs = 4
    res = get_method("dnas-channel")(ctx, objectives(ctx), BaselineOptions(
        points=1, params={**FAST, "epochs": epochs, "warmup_epochs": 0, **params}))
    t0, decay = params.get("t0", 5.0), params.get("t_decay", 0.045)
    expect = [t0 * math.exp(-decay * e) for e in range(epochs)]
    assert res.info["temperatures"] == pytest.approx(expect, rel=1e-12)
    assert res.info["points"][0]["temperatures"] == pytest.approx(expect, rel=1e-12)
    assert res.info["points"][0]["final_temperature"] == pytest.approx(expect[-1])
    # the mixtures of the search ran at exactly these temperatures, in this order
    runs = [v for i, v in enumerate(seen) if i == 0 or v != seen[i - 1]]
    assert runs == pytest.approx(expect, rel=1e-12)


# ------------------------------------------------- Bayesian Bits + Free Bits refinement
def test_bayesbits_refines_against_the_runs_latency_model_by_default(
        ctx: SimpleNamespace) -> None:
    import hwmodels

    obj = Objectives(ctx.space.table, ("accuracy", "memory_bytes"),
                     hardware=("memory", "pulp"))
    res = get_method("bayesbits")(ctx, obj, BaselineOptions(points=2, params=dict(FAST)))
    ref = res.info["refine"]
    assert ref["applied"] and ref["setting"] == "auto"
    assert ref["model"] == "pulp" and ref["metric"] == "latency_cycles"
    assert ref["searched_rows"] == [0, 1] and ref["rows"] == res.info["refined_rows"] == [2, 3]
    assert res.genomes.shape == (4, ctx.space.n_genes)
    lat = hwmodels.get("pulp", table=ctx.space.table).cost(ctx.space.table,
                                                            res.genomes)["latency_cycles"]
    for k, pt in enumerate(res.info["points"]):
        assert pt["refined_row"] == 2 + k
        assert pt["latency_searched"] == pytest.approx(lat[k])
        assert pt["latency_refined"] == pytest.approx(lat[2 + k])
        assert lat[2 + k] <= lat[k]
        assert (res.genomes[2 + k] >= res.genomes[k]).all()
    off = get_method("bayesbits")(ctx, obj, BaselineOptions(
        points=2, params={**FAST, "refine": "none"}))
    assert off.genomes.shape[0] == 2 and not off.info["refine"]["applied"]
    np.testing.assert_array_equal(off.genomes, res.genomes[:2])
    none = get_method("bayesbits")(ctx, objectives(ctx), BaselineOptions(
        points=1, params=dict(FAST)))  # memory only: no latency model to refine against
    assert none.genomes.shape[0] == 1 and none.info["refined_rows"] == []
    assert "no latency model" in none.info["refine"]["reason"]
    with pytest.raises(EvompError, match="refine"):
        get_method("bayesbits")(ctx, obj, BaselineOptions(
            points=1, params={**FAST, "refine": "nosuchmodel"}))


# ----------------------------------------------------------- optimizers, parameters
def test_weight_optimizer_choice() -> None:
    prm = [nn.Parameter(torch.zeros(2))]
    sgd = make_weight_optimizer([{"params": prm, "lr": 0.1}, {"params": [], "lr": 1.0}],
                                "sgd", "edmips")
    assert isinstance(sgd, torch.optim.SGD) and len(sgd.param_groups) == 1
    assert sgd.param_groups[0]["momentum"] == 0.9 and sgd.param_groups[0]["lr"] == 0.1
    assert isinstance(make_weight_optimizer([{"params": prm, "lr": 0.1}], "adam", "x"),
                      torch.optim.Adam)
    with pytest.raises(EvompError, match=r"\[baselines.edmips\] weight_optimizer"):
        make_weight_optimizer([{"params": prm, "lr": 0.1}], "rmsprop", "edmips")
    for d in DEFAULTS.values():
        assert d["weight_optimizer"] == "adam" and d["arch_optimizer"] == "adam"


@pytest.mark.parametrize("name", METHODS)
def test_weight_optimizer_sgd_is_used(ctx: SimpleNamespace, monkeypatch, name: str) -> None:
    import evomp.baselines._diff_common as common

    made: list[torch.optim.Optimizer] = []
    orig = common.make_weight_optimizer

    def spy(*a, **k):
        made.append(orig(*a, **k))
        return made[-1]

    mod = {"edmips": _edmips, "bayesbits": _bayesbits, "learned": _learned}.get(name, _dnas)
    monkeypatch.setattr(mod, "make_weight_optimizer", spy)
    params = {**FAST, "weight_optimizer": "sgd", "lr": 0.01}
    res = get_method(name)(ctx, objectives(ctx), BaselineOptions(points=1, params=params))
    assert made and all(isinstance(o, torch.optim.SGD) for o in made)
    assert all(g["momentum"] == 0.9 for o in made for g in o.param_groups)
    assert res.info["params"]["weight_optimizer"] == "sgd" and res.info["params"]["lr"] == 0.01
    assert res.info["params"]["arch_lr"] == DEFAULTS[name]["arch_lr"]  # defaults recorded too


# ------------------------------------------------------------------ through the CLI
#: the session's tiny spec (``tests/conftest.py``), with a quick DNAS
DNAS_SPEC = dict(steps=10, final_steps=10, objectives=["accuracy", "memory_bytes"],
                 hardware=["memory", "mpic"], budget=6, initial=4, final_max=2,
                 extra="[baselines.dnas-channel]\nepochs = 1\nwarmup_epochs = 0\n"
                       "batch_size = 256\n")


def test_dnas_through_the_cli_then_compare(tiny_runs, tmp_path, capsys) -> None:
    import json

    from evomp.cli import main

    spec = tiny_runs.spec(tmp_path, "tiny.toml", **DNAS_SPEC)
    out = tiny_runs.share(tmp_path / "runs") / "dnas"  # the session's float model
    assert main(["baseline", str(spec), "--method", "dnas-channel", "--points", "2",
                 "--out", str(out)]) == 0
    meta = json.loads((out / "run.json").read_text())
    assert meta["method"] == "dnas-channel" and meta["cpu_seconds"] > 0
    info = meta["baseline"]
    assert info["params"]["epochs"] == 1 and info["params"]["t0"] == 5.0
    assert info["param_overrides"] == ["batch_size", "epochs", "warmup_epochs"]
    assert len(info["points"]) == 2 and len(info["temperatures"]) == 1
    assert all(p["check_max_rel_diff"] <= CHECK_TOLERANCE for p in info["points"])
    assert (out / "front.csv").is_file()
    capsys.readouterr()
    assert main(["compare", str(out), "--json", "--no-plot"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert len(rows) == 1 and rows[0]["method"] == "dnas-channel"
