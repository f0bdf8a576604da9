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
from evomp._objectives import Objectives
from evomp.baselines import BaselineOptions, get_method
from evomp.baselines._bayesbits import BayesBitsLayer, HardConcrete, gate_on
from evomp.baselines._diff_common import (
    build_supernet,
    check_argmax,
    cost_lut,
    expected_cost,
    layer_options,
    predecessors,
    sweep_values,
)
from evomp.baselines._dnas import DnasLayer, init_logits, temperature
from evomp.baselines._edmips import EdmipsLayer
from evomp.baselines._learned import LearnedLayer, learned_bits, ramp, to_choices
from evomp.tasks import from_arrays

METHODS = ("edmips", "dnas-channel", "dnas-layer", "bayesbits", "learned")
FAST = {"epochs": 1, "batch_size": 32, "calib_batches": 1}
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
        assert p["check_max_rel_diff"] <= 1e-4  # the configuration exported is the one searched
        assert "memory_bytes" in p and p["seconds"] > 0
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


# ---------------------------------------------------------- numerical export check
def test_check_argmax_matches_quant_model_on_mixed_channels(ctx: SimpleNamespace) -> None:
    opts = layer_options(ctx)
    net = build_supernet(ctx, lambda i, m, w, a, s, al: DnasLayer(m, w, a, s, al), opts, 1)
    rng = np.random.default_rng(1)
    t = ctx.space.table
    wb = rng.choice(t.w_choices, size=t.n_channels)
    ab = rng.choice(t.a_choices, size=t.n_layers)
    assert check_argmax(ctx, net, wb, ab) <= 1e-5
    # a channel-order slip in an export is caught: the hard mode runs reversed bits
    net.set_hard(wb[::-1].copy(), ab, t.layer_start)
    y_wrong = net(ctx.task.val.x)
    net.set_hard(wb, ab, t.layer_start)
    assert (net(ctx.task.val.x) - y_wrong).abs().max() > 1e-3


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
