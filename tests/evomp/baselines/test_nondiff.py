"""Non-differentiable baselines: uniform, random, the sensitivity ILP and Free Bits refinement."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hwmodels
from evomp._errors import EvompError
from evomp.baselines import METHODS, BaselineOptions
from evomp.baselines._ilp import (
    IlpSolution,
    budget_cost,
    ilp_sweep,
    objective_value,
    sensitivity_terms,
    solve_ilp,
    sweep_budgets,
)
from evomp.baselines._random import front_candidates, sample_genomes
from evomp.baselines._uniform import uniform_genomes
from evomp.engines._refine import FreeBitsRepair, latency_refiner, refine, refine_bits
from evomp.evaluation._evaluator import EvalResult
from evomp.objectives._objectives import Objectives
from evomp.space._genome import genome_hash, genome_to_hex, repair_all_pruned
from hwmodels import Layer, LayerTable, testing


# ------------------------------------------------------------------------------ helpers
def tiny_table(granularity: str = "channel", pin: bool = False) -> LayerTable:
    """Conv1d 2 -> 3 channels and Linear 24 -> 2: 4^5 x 3^2 = 9216 channel-wise genomes."""
    conv = Layer("conv", "conv1d", 2, 3, (3,), 1, 6, 48, (2, 10), (3, 8), True)
    fc = Layer("fc", "linear", 24, 2, (), 1, 24, 24, (24,), (2,), False)
    if pin:  # last layer's weights pinned at 8 bit, first layer's input pinned at 8 bit
        conv = Layer(**{**conv.__dict__, "a_pinned": 8})
        fc = Layer(**{**fc.__dict__, "w_pinned": 8})
    return LayerTable((conv, fc), (0, 2, 4, 8), (2, 4, 8), granularity)


def all_genomes(t: LayerTable) -> np.ndarray:
    return np.array(list(itertools.product(*[range(n) for n in t.gene_n_levels])), np.int8)


def terms(t: LayerTable, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random sensitivity terms decreasing in bits (as real quantization errors are)."""
    rng = np.random.default_rng(seed)
    w = np.sort(rng.random((t.n_channels, len(t.w_choices))), axis=1)[:, ::-1]
    w = w * rng.lognormal(0, 1, (t.n_channels, 1))
    a = np.sort(rng.random((t.n_layers, len(t.a_choices))), axis=1)[:, ::-1]
    return w, a


LINEAR = [("memory", "memory_bytes"), ("memory", "weight_bytes"), ("bitops", "bitops"),
          ("mpic", "mpic_cycles"), ("mpic", "energy_uj")]


# ---------------------------------------------------------------------------------- ILP
@pytest.mark.parametrize("granularity,pin", [("channel", False), ("layer", False),
                                             ("channel", True)])
@pytest.mark.parametrize("model,metric", LINEAR)
def test_ilp_matches_brute_force(granularity: str, pin: bool, model: str, metric: str) -> None:
    t = tiny_table(granularity, pin)
    hw = hwmodels.get(model, table=t)
    cost = budget_cost(t, hw, metric)
    G = all_genomes(t)
    true = hw.cost(t, G)[metric]
    np.testing.assert_allclose(cost.evaluate(t, G), true, rtol=1e-12)  # exact, pruning incl.
    w, a = terms(t, seed=len(metric))
    obj = objective_value(t, w, a, G)
    keeps = np.all(repair_all_pruned(t, G.astype(np.int64)) == G, axis=1)
    budgets = sweep_budgets(float(true.min()), float(true.max()), 7, 0.02)
    for s in ilp_sweep(t, w, a, cost, budgets):
        feasible = keeps & (true <= s.budget + 1e-9 * abs(s.budget))
        if not feasible.any():
            assert s.genome is None and s.status == 2
            continue
        assert s.status == 0 and s.genome is not None
        assert s.cost <= s.budget * (1 + 1e-12)
        assert hw.cost(t, s.genome[None])[metric][0] == pytest.approx(s.cost, rel=1e-12)
        assert s.objective == pytest.approx(obj[feasible].min(), rel=1e-6, abs=1e-12)


def test_ilp_default_sweep_starts_at_the_cheapest_feasible_config() -> None:
    t = tiny_table()
    hw = hwmodels.get("memory", table=t)
    cost = budget_cost(t, hw, "memory_bytes")
    w, a = terms(t)
    sols = ilp_sweep(t, w, a, cost, points=5, min_fraction=0.01)
    assert all(s.genome is not None for s in sols)
    costs = [s.cost for s in sols]
    assert costs == sorted(costs)
    # generous budget: the most precise configuration
    top = solve_ilp(t, w, a, cost, 1e12).genome
    assert np.array_equal(top, t.gene_n_levels - 1)


def test_ilp_on_contract_tables_respects_pins_and_keeps_a_channel() -> None:
    for t in testing.contract_tables().values():
        hw = hwmodels.get("mpic", table=t)
        cost = budget_cost(t, hw, "mpic_cycles")
        w, a = terms(t)
        for s in ilp_sweep(t, w, a, cost, points=3, min_fraction=0.01):
            assert s.genome is not None
            assert np.array_equal(repair_all_pruned(t, s.genome[None].astype(np.int64))[0],
                                  s.genome)


def test_ilp_refuses_a_nonlinear_metric() -> None:
    t = tiny_table()
    with pytest.raises(EvompError, match="freebits"):
        budget_cost(t, hwmodels.get("pulp", table=t), "latency_cycles")
    with pytest.raises(EvompError, match="no metric"):
        budget_cost(t, hwmodels.get("memory", table=t), "bitops")


def test_sweep_budgets_checks_its_arguments() -> None:
    b = sweep_budgets(10.0, 110.0, 3, 0.01)
    np.testing.assert_allclose(b, [11.0, 20.0, 110.0])
    np.testing.assert_allclose(sweep_budgets(0.0, 1.0, 3, 0.5, "linear"), [0.5, 0.75, 1.0])
    for kw in ({"points": 0}, {"min_fraction": 0.0}, {"spacing": "log"}):
        args = {"points": 3, "min_fraction": 0.1, "spacing": "geometric", **kw}
        with pytest.raises(EvompError):
            sweep_budgets(0.0, 1.0, args["points"], args["min_fraction"], args["spacing"])


def _profile(t: LayerTable, seed: int = 0):  # a SensitivityProfile from plain arrays
    import surrogates

    rng = np.random.default_rng(seed)
    err = np.sort(rng.random((t.n_channels, len(t.w_choices))), axis=1)[:, ::-1]
    noise = np.sort(rng.random((t.n_layers, len(t.a_choices))), axis=1)[:, ::-1]
    return surrogates.SensitivityProfile(
        w_sens=rng.random(t.n_channels), layer_trace=rng.random(t.n_layers), w_err=err,
        a_sens=rng.random(t.n_layers), a_noise=noise,
        layer_names=[x.name for x in t.layers], w_choices=t.w_choices, a_choices=t.a_choices,
        w_numel=np.repeat([x.fan_in for x in t.layers], [x.out_channels for x in t.layers]),
        a_numel=[x.in_numel for x in t.layers], a_signed=[True] * t.n_layers,
        meta={"layer_start": t.layer_start.tolist(), "method": "test", "n_probes": 1},
    )


def test_sensitivity_terms_follow_hawq() -> None:
    t = tiny_table()
    p = _profile(t)
    w, a = sensitivity_terms(t, p)
    np.testing.assert_allclose(w, 0.5 * p.w_sens[:, None] / p.w_numel[:, None] * p.w_err)
    np.testing.assert_allclose(a, 0.5 * (p.a_sens * p.a_numel)[:, None] * p.a_noise)


# ------------------------------------------------------------------------ fake run context
class FakeEvaluator:
    """Short QAT replaced by a deterministic function of the bits (more bits, better)."""

    def __init__(self, space) -> None:
        self.space = space
        self.cache: dict = {}
        self.cache_file = None
        self.calls = 0
        self.qat = SimpleNamespace(steps=10, final_steps=20)

    def cached(self, row, fidelity, with_test=False, save_dir=None):
        return None

    def evaluate(self, genomes, fidelity="short", with_test=False, seed=None, save_dir=None):
        g = self.space.check(genomes)
        w, a = self.space.decode(g)
        acc = 0.5 + 0.4 * (w.mean(1) / 8) ** 0.3 + 0.05 * a.mean(1) / 8
        self.calls += len(g)
        return [EvalResult(genome_hash(r), fidelity, float(x), float(x) - 0.1,
                           float(x) if with_test else None) for r, x in zip(g, acc, strict=True)]


@pytest.fixture
def fake_ctx(tiny_space, monkeypatch, tmp_path: Path):
    import evomp.evaluation._sensitivity

    prof = _profile(tiny_space.table)
    monkeypatch.setattr(evomp.evaluation, "run_profile", lambda ctx, **kw: prof)
    spec = SimpleNamespace(
        seed=0, hw={}, baselines={}, name="tiny",
        search=SimpleNamespace(budget=12, final_max=4, sensitivity="hutchinson", probes=2,
                               objectives=("accuracy", "memory_bytes"), constraints=(),
                               hardware=("memory", "mpic", "pulp")))
    ctx = SimpleNamespace(space=tiny_space, spec=spec, evaluator=FakeEvaluator(tiny_space),
                          out=tmp_path / "run")
    objectives = Objectives(tiny_space.table, ["accuracy", "memory_bytes"],
                            hardware=["memory", "mpic", "pulp"])
    return ctx, objectives


def test_uniform_method_respects_pins(tiny_model, tiny_input) -> None:
    from evomp import SearchSpace

    space = SearchSpace.from_model(tiny_model, tiny_input, pin={"conv": 8})
    g, pairs = uniform_genomes(space)
    assert pairs == [(8, 8), (4, 4), (2, 2), (8, 4), (4, 8)]
    w, a = space.decode(g)
    t = space.table
    assert np.all(w[:, : t.layer_start[1]] == 8) and np.all(a[:, 0] == 8)
    assert np.all(w[2, t.layer_start[1]:] == 2) and np.all(a[2, 1:] == 2)
    g2, pairs2 = uniform_genomes(space, [[4, 2]])
    assert pairs2 == [(4, 2)] and g2.shape == (1, t.n_genes)
    with pytest.raises(EvompError):
        uniform_genomes(space, [[3, 3]])


def test_methods_reject_unknown_parameters(fake_ctx) -> None:
    ctx, obj = fake_ctx
    for name in ("uniform", "random", "ilp", "freebits"):
        with pytest.raises(EvompError, match="unknown key"):
            METHODS[name](ctx, obj, BaselineOptions(params={"nope": 1}))


def test_random_method_spends_the_budget_and_returns_its_front(fake_ctx) -> None:
    ctx, obj = fake_ctx
    res = METHODS["random"](ctx, obj, BaselineOptions(budget=20))
    rows = res.info["evaluations"]
    assert len(rows) == 20 and ctx.evaluator.calls == 20
    assert {r["fidelity"] for r in rows} == {"short"} and "memory_bytes" in rows[0]
    assert 1 <= len(res.genomes) <= ctx.spec.search.final_max
    acc = np.array([r["val_accuracy"] for r in rows])
    mem = np.array([r["memory_bytes"] for r in rows])
    chosen = {genome_hash(g) for g in res.genomes}
    for r in rows:  # every candidate is non-dominated among the 20
        if r["genome_hash"] in chosen:
            dom = (acc >= r["val_accuracy"]) & (mem <= r["memory_bytes"]) & (
                (acc > r["val_accuracy"]) | (mem < r["memory_bytes"]))
            assert not dom.any()
    # default budget: the search's
    ctx.evaluator.calls = 0
    METHODS["random"](ctx, obj, BaselineOptions())
    assert ctx.evaluator.calls == 12


def test_dirichlet_sampler_spans_the_cost_range() -> None:
    t = testing.contract_tables()["toy"]
    mem = hwmodels.get("memory", table=t)
    rng = np.random.default_rng(0)
    d = mem.cost(t, sample_genomes(t, 400, rng))["memory_bytes"]
    u = mem.cost(t, sample_genomes(t, 400, rng, "uniform"))["memory_bytes"]
    assert d.std() > 1.3 * u.std()
    with pytest.raises(EvompError):
        sample_genomes(t, 2, rng, "sobol")


def test_front_candidates_caps_and_spreads() -> None:
    t = testing.contract_tables()["toy"]
    obj = Objectives(t, ["accuracy", "memory_bytes"])
    G = sample_genomes(t, 200, np.random.default_rng(1))
    mem = obj.costs(G)["memory_bytes"]
    acc = np.log1p(mem) / np.log1p(mem.max())  # monotone: every distinct cost is on the front
    idx = front_candidates(obj, G, acc, 5)
    assert len(idx) == 5
    assert np.all(np.diff(mem[idx]) > 0)
    assert mem[idx[0]] == mem.min() and mem[idx[-1]] == mem.max()
    acc_nan = np.full(len(G), np.nan)
    assert len(front_candidates(obj, G, acc_nan, 5)) == 0


def test_ilp_method_channel_and_layer(fake_ctx) -> None:
    ctx, obj = fake_ctx
    res = METHODS["ilp"](ctx, obj, BaselineOptions(points=4))
    assert res.info["granularity"] == "channel" and res.info["metric"] == "memory_bytes"
    assert len(res.info["sweep"]) == 4 and 1 <= len(res.genomes) <= 4
    ctx.space.check(res.genomes)
    lay = METHODS["ilp"](ctx, obj, BaselineOptions(points=4, params={"granularity": "layer",
                                                                     "metric": "bitops"}))
    assert lay.info["granularity"] == "layer" and lay.info["metric"] == "bitops"
    t = ctx.space.table
    w, _ = t.decode(lay.genomes)
    for i in range(t.n_layers):  # every layer uniform
        seg = w[:, t.layer_start[i]:t.layer_start[i + 1]]
        assert np.all(seg == seg[:, :1])
    with pytest.raises(EvompError, match="freebits"):
        METHODS["ilp"](ctx, obj, BaselineOptions(params={"metric": "latency_cycles"}))


# ------------------------------------------------------- ILP solves cut short by the limit
def _cut_short(monkeypatch) -> None:
    """Every MILP solve reports scipy's status 1 (time limit) but keeps its solution."""
    import evomp.baselines._ilp as ilp_mod

    real = ilp_mod.milp

    def fake(*args, **kwargs):
        res = real(*args, **kwargs)
        return SimpleNamespace(x=res.x, status=1 if res.x is not None else res.status)

    monkeypatch.setattr(ilp_mod, "milp", fake)


def test_ilp_solution_optimality_follows_the_status() -> None:
    g = np.zeros(3, np.int8)
    assert IlpSolution(g, 1.0, 1.0, 1.0, 0, 0.1).proven_optimal
    s1 = IlpSolution(g, 1.0, 1.0, 1.0, 1, 0.1)
    assert not s1.proven_optimal and s1.cut_short
    assert not IlpSolution(None, 1.0, np.nan, np.nan, 2, 0.1).proven_optimal


def test_ilp_sweep_warns_about_solves_cut_short(monkeypatch, caplog) -> None:
    t = tiny_table()
    cost = budget_cost(t, hwmodels.get("memory", table=t), "memory_bytes")
    w, a = terms(t)
    exact = ilp_sweep(t, w, a, cost, [300.0, 500.0])
    assert all(s.proven_optimal for s in exact)
    _cut_short(monkeypatch)
    with caplog.at_level("WARNING", logger="evomp"):
        short = ilp_sweep(t, w, a, cost, [300.0, 500.0])
    for s, e in zip(short, exact, strict=True):
        assert s.status == 1 and not s.proven_optimal
        np.testing.assert_array_equal(s.genome, e.genome)  # the best found is kept
    msgs = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert sum("NOT proven optimal" in m for m in msgs) == 2


def test_ilp_method_marks_unproven_points(fake_ctx, monkeypatch, caplog) -> None:
    ctx, obj = fake_ctx
    res = METHODS["ilp"](ctx, obj, BaselineOptions(points=3))
    assert res.info["all_proven_optimal"] and res.info["not_proven_optimal"] == []
    assert all(e["proven_optimal"] and e["status"] == 0 for e in res.info["sweep"])
    _cut_short(monkeypatch)
    with caplog.at_level("WARNING", logger="evomp"):
        cut = METHODS["ilp"](ctx, obj, BaselineOptions(points=3))
    assert not cut.info["all_proven_optimal"]
    assert cut.info["not_proven_optimal"] == sorted(genome_hash(g) for g in cut.genomes)
    assert all(not e["proven_optimal"] and e["status"] == 1 for e in cut.info["sweep"])
    assert {e["genome_hash"] for e in cut.info["sweep"]} == {genome_hash(g) for g in cut.genomes}
    assert any("not proven optimal" in r.getMessage() for r in caplog.records)


def test_ilp_method_with_a_zero_time_limit(fake_ctx, caplog) -> None:
    ctx, obj = fake_ctx  # HiGHS stops before finding anything: status 1, no solution
    with caplog.at_level("WARNING", logger="evomp"), \
            pytest.raises(EvompError, match="time_limit_s"):
        METHODS["ilp"](ctx, obj, BaselineOptions(points=2, params={"time_limit_s": 0.0}))
    assert any("time limit" in r.getMessage() for r in caplog.records)


def test_methods_record_their_merged_parameters(fake_ctx) -> None:
    from evomp.baselines import _freebits, _ilp, _random, _uniform

    ctx, obj = fake_ctx
    cases = [
        ("uniform", _uniform.DEFAULTS, {"pairs": [[4, 4], [8, 8]]}, {}),
        ("random", _random.DEFAULTS, {"sampler": "uniform"}, {"budget": 3}),
        ("ilp", _ilp.DEFAULTS, {"spacing": "linear", "time_limit_s": 30}, {"points": 2}),
        ("freebits", _freebits.DEFAULTS, {"ties": True, "start": ["uniform"]}, {}),
    ]
    for name, defaults, given_, kw in cases:
        res = METHODS[name](ctx, obj, BaselineOptions(params=given_, **kw))
        want = {**defaults, **given_}
        assert res.info["params"] == want, name
        assert set(res.info["params"]) == set(defaults)
        json.dumps(res.info["params"])  # goes into run.json
    assert isinstance(METHODS["ilp"](ctx, obj, BaselineOptions(
        points=2, params={"time_limit_s": 30})).info["params"]["time_limit_s"], float)
    fb = METHODS["freebits"](ctx, obj, BaselineOptions(points=2))  # uniform + ilp starts
    assert fb.info["ilp_params"] == _ilp.DEFAULTS


# ---------------------------------------------------------------------------- Free Bits
TABLES = testing.contract_tables()
LATENCY = [("pulp", {}), ("pulp", {"preset": "xpulpnn"}), ("pulp", {"launch_cycles": 0.0}),
           ("mpic", {}), ("mpic", {"group_overhead_cycles": 300.0})]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(table=st.sampled_from(sorted(TABLES)), model=st.sampled_from(range(len(LATENCY))),
       seed=st.integers(0, 2**31), ties=st.booleans())
def test_freebits_never_raises_latency_nor_lowers_precision(table: str, model: int, seed: int,
                                                            ties: bool) -> None:
    t = TABLES[table]
    name, params = LATENCY[model]
    hw = hwmodels.get(name, table=t, **params)
    metric = next(iter(hw.metrics))
    g = sample_genomes(t, 6, np.random.default_rng(seed))
    r = refine(t, g, hw, ties=ties)
    w0, a0 = t.decode(g)
    w1, a1 = t.decode(r)
    assert np.all(hw.cost(t, r)[metric] <= hw.cost(t, g)[metric])
    assert np.all(w1 >= w0) and np.all(a1 >= a0)
    assert np.array_equal(w1 == 0, w0 == 0)  # pruned channels stay pruned
    assert np.array_equal(refine(t, r, hw, ties=ties), r)  # a fixed point


def test_freebits_raises_sub_byte_weights_on_gap8() -> None:
    t = testing.contract_tables()["toy"]  # compute-bound enough that unpacking dominates
    hw = hwmodels.get("pulp", table=t)
    w = np.full((1, t.n_channels), 2)
    a = np.full((1, t.n_layers), 8)
    w2, a2, before, after = refine_bits(t, w, a, hw)
    assert after[0] < before[0]
    assert np.all(w2 >= w) and np.any(w2 > w)
    # MPIC is monotone: nothing is faster at more bits, nothing changes
    mp = hwmodels.get("mpic", table=t)
    g = sample_genomes(t, 10, np.random.default_rng(0))
    assert np.array_equal(refine(t, g, mp), g)


def test_freebits_merges_precision_groups_when_groups_cost() -> None:
    t = testing.contract_tables()["toy"]
    hw = hwmodels.get("mpic", table=t, group_overhead_cycles=1000.0)
    w = np.array([[2, 4, 8, 8, 8, 8, 8]])  # conv: three groups; fc: one
    a = np.array([[8, 8]])
    w2, _, before, after = refine_bits(t, w, a, hw)
    assert after[0] < before[0]
    assert np.all(w2[0, :4] == 8)  # one group


def test_freebits_repair_is_a_pymoo_repair() -> None:
    from pymoo.core.repair import Repair

    t = testing.contract_tables()["toy"]
    hw = hwmodels.get("pulp", table=t)
    rep = FreeBitsRepair(t, hw)
    assert isinstance(rep, Repair) and isinstance(rep, FreeBitsRepair)
    X = sample_genomes(t, 5, np.random.default_rng(3)).astype(float)
    out = rep._do(None, X)
    np.testing.assert_array_equal(out, refine(t, X.astype(int), hw))


def test_freebits_method_from_a_run_dir(fake_ctx, tmp_path: Path) -> None:
    ctx, obj = fake_ctx
    t = ctx.space.table
    d = tmp_path / "src"
    d.mkdir()
    layer_space = ctx.space.with_granularity("layer")  # a layer-wise run, refined channel-wise
    G = np.stack([layer_space.uniform(2, 2)[0], layer_space.uniform(4, 8)[0]])
    (d / "space.json").write_text(layer_space.table.to_json())
    (d / "front.csv").write_text(f"id,genome_hash,val_accuracy\np0,{genome_hash(G[0])},0.9\n"
                                 f"p1,{genome_hash(G[1])},0.95\n")
    (d / "front.json").write_text(json.dumps(
        {f"p{i}": {"genome": genome_to_hex(g)} for i, g in enumerate(G)}))
    res = METHODS["freebits"](ctx, obj, BaselineOptions(from_dir=d))
    assert res.info["metric"] == "latency_cycles" and res.info["n_start"] == 2
    assert res.genomes.shape == (2, t.n_genes)
    assert all(x <= y for x, y in zip(res.info["latency_after"], res.info["latency_before"],
                                      strict=True))
    start = t.encode(*layer_space.table.decode(G))
    assert np.all(t.decode(res.genomes)[0] >= t.decode(start)[0])
    # without --from: the uniform and ILP outputs
    res2 = METHODS["freebits"](ctx, obj, BaselineOptions(points=3))
    assert res2.info["source"] == "uniform+ilp" and res2.info["n_start"] >= 6
    with pytest.raises(EvompError, match="front.json"):
        METHODS["freebits"](ctx, obj, BaselineOptions(from_dir=tmp_path / "missing"))


def _source_run(d: Path, space, cpu: float | None) -> Path:
    """A finished run directory holding two uniform configurations of ``space``."""
    d.mkdir(parents=True)
    G = np.concatenate([space.uniform(2, 2), space.uniform(4, 8)])
    (d / "space.json").write_text(space.table.to_json())
    (d / "front.csv").write_text(f"id,genome_hash,val_accuracy\np0,{genome_hash(G[0])},0.9\n"
                                 f"p1,{genome_hash(G[1])},0.95\n")
    (d / "front.json").write_text(json.dumps(
        {f"p{i}": {"genome": genome_to_hex(g)} for i, g in enumerate(G)}))
    if cpu is not None:
        (d / "run.json").write_text(json.dumps({"method": "search", "cpu_seconds": cpu}))
    return d


def test_freebits_reports_the_source_runs_cpu(fake_ctx, tmp_path: Path, caplog) -> None:
    ctx, obj = fake_ctx
    src = _source_run(tmp_path / "src", ctx.space, 123.5)
    res = METHODS["freebits"](ctx, obj, BaselineOptions(from_dir=src))
    assert res.info["source_cpu_seconds"] == 123.5
    bare = _source_run(tmp_path / "bare", ctx.space, None)
    with caplog.at_level("WARNING", logger="evomp"):
        res = METHODS["freebits"](ctx, obj, BaselineOptions(from_dir=bare))
    assert res.info["source_cpu_seconds"] is None
    assert any("cpu_seconds" in r.getMessage() for r in caplog.records)
    # refining the uniform and ILP outputs refines no run: nothing to add
    assert "source_cpu_seconds" not in METHODS["freebits"](
        ctx, obj, BaselineOptions(points=2)).info


def test_baseline_cli_counts_the_refined_runs_cpu(fake_ctx, monkeypatch, tmp_path: Path,
                                                  capsys) -> None:
    import evomp.run._context
    import evomp.run._spec
    from evomp.cli import main
    from evomp.reports._compare import compare_runs

    ctx, _ = fake_ctx

    def open_run(spec, out, threads=None):
        ctx.out = Path(out)
        ctx.out.mkdir(parents=True, exist_ok=True)
        return ctx

    monkeypatch.setattr(evomp.run, "load_spec", lambda path: ctx.spec)
    monkeypatch.setattr(evomp.run, "open_run", open_run)
    src = _source_run(tmp_path / "src", ctx.space, 5000.0)
    out = tmp_path / "fb"
    assert main(["baseline", "x.toml", "--method", "freebits", "--from", str(src),
                 "--out", str(out)]) == 0
    meta = json.loads((out / "run.json").read_text())
    assert meta["source_cpu_seconds"] == 5000.0 and meta["cpu_seconds_includes_source"]
    assert 5000.0 < meta["cpu_seconds"] < 5000.0 + 600.0
    assert "source_cpu_seconds" in meta["cpu_seconds_note"]
    assert "source_cpu_seconds" not in meta["baseline"]
    assert meta["baseline"]["params"]["metric"] == ""
    assert "5000s by the refined run" in capsys.readouterr().out
    assert compare_runs([out]).rows[0]["cpu_note"] == "includes source"
    # an unknown source cost is said so, and not invented
    bare = _source_run(tmp_path / "bare", ctx.space, None)
    assert main(["baseline", "x.toml", "--method", "freebits", "--from", str(bare),
                 "--out", str(tmp_path / "fb2")]) == 0
    meta = json.loads((tmp_path / "fb2" / "run.json").read_text())
    assert meta["source_cpu_seconds"] is None and not meta["cpu_seconds_includes_source"]
    assert meta["cpu_seconds"] < 600.0
    assert compare_runs([tmp_path / "fb2"]).rows[0]["cpu_note"] == "excludes source"
    # a method that refines nothing records no source
    assert main(["baseline", "x.toml", "--method", "uniform", "--out",
                 str(tmp_path / "u")]) == 0
    meta = json.loads((tmp_path / "u" / "run.json").read_text())
    assert "source_cpu_seconds" not in meta and meta["baseline"]["params"] == {"pairs": []}
    assert compare_runs([tmp_path / "u"]).rows[0]["cpu_note"] is None


def test_refine_takes_any_engines_proposals() -> None:
    t = testing.contract_tables()["toy"]
    hw = hwmodels.get("pulp", table=t)
    G = sample_genomes(t, 8, np.random.default_rng(5))
    R = refine(t, G, hw, "latency_cycles")
    assert R.dtype == np.int8 and R.shape == G.shape
    np.testing.assert_array_equal(refine(t, G.astype(float), hw), R)  # pymoo's floats
    np.testing.assert_array_equal(refine(t, G[3], hw), R[3])  # one genome keeps its shape
    assert refine(t, G[:0], hw).shape == (0, t.n_genes)
    with pytest.raises(EvompError, match="genome length"):
        refine(t, G[:, :-1], hw)
    # built from a run's objectives: the first latency objective and the run's model
    obj = Objectives(t, ["accuracy", "memory_bytes", "latency_cycles"], hardware=["pulp"])
    fn = latency_refiner(t, obj)
    assert fn is not None
    np.testing.assert_array_equal(fn.apply(G), refine(t, G, obj.models["pulp"], "latency_cycles"))
    assert np.all(obj.costs(fn.apply(G))["latency_cycles"] <= obj.costs(G)["latency_cycles"])
    assert latency_refiner(t, Objectives(t, ["accuracy", "memory_bytes"],
                                         hardware=["pulp"])) is None


# --------------------------------------------------------------------------- end to end
TINY = """
name = "tiny"
seed = 0
threads = 1

[task]
name = "mnist1d"
model = "cnn1d"
model_kwargs = { width = 8 }

[pretrain]
epochs = 3

[qat]
steps = 10
final_steps = 20

[search]
objectives = ["accuracy", "memory_bytes"]
hardware = ["memory", "mpic", "pulp"]
budget = 6
initial = 4
probes = 2
final_max = 3
"""


@pytest.mark.slow
def test_every_baseline_through_the_cli_then_compare(tmp_path: Path, capsys) -> None:
    from evomp.cli import main

    spec = tmp_path / "tiny.toml"
    spec.write_text(TINY)
    runs = tmp_path / "runs"
    for m in ("uniform", "random", "ilp"):
        assert main(["baseline", str(spec), "--method", m, "--points", "3",
                     "--out", str(runs / m)]) == 0
        meta = json.loads((runs / m / "run.json").read_text())
        assert meta["method"] == m and meta["cpu_seconds"] > 0
        assert (runs / m / "front.csv").is_file()
    assert json.loads((runs / "random" / "run.json").read_text())["n_true_evaluations"] == 6
    assert main(["baseline", str(spec), "--method", "freebits", "--from", str(runs / "ilp"),
                 "--out", str(runs / "freebits")]) == 0
    src = json.loads((runs / "ilp" / "run.json").read_text())["cpu_seconds"]
    meta = json.loads((runs / "freebits" / "run.json").read_text())
    assert meta["source_cpu_seconds"] == src and meta["cpu_seconds"] > src
    capsys.readouterr()
    dirs = [str(runs / m) for m in ("ilp", "uniform", "random", "freebits")]
    assert main(["compare", *dirs, "--json", "--out", str(tmp_path)]) == 0
    d = json.loads(capsys.readouterr().out)
    assert len(d["rows"]) == 4 and all(r["hypervolume"] >= 0 for r in d["rows"])
    assert [r["feasible"] for r in d["rows"]] == [True] * 4
    assert d["rows"][3]["cpu_note"] == "includes source"
    assert (tmp_path / "compare.png").is_file()
    assert main(["compare", *dirs, "--x", "latency_cycles", "--no-plot"]) == 0
