from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evomp import EvalResult, EvompError
from evomp.engines import (
    CompactEncoding,
    KeepChannelRepair,
    LayerBlockCrossover,
    LevelStepMutation,
    OptunaEngine,
    PymooEngine,
    importance_rank,
    initial_design,
)
from evomp.objectives._objectives import Objectives, parse_constraint
from evomp.objectives._pareto import nondominated
from evomp.run import open_storage
from evomp.search._store import Store
from evomp.space import repair_all_pruned
from hwmodels import Layer, LayerTable


def _table(gran: str = "channel", pin: bool = False) -> LayerTable:
    layers = (
        Layer("c1", "conv1d", 1, 8, (3,), 1, 3, 3 * 16, (1, 16), (8, 16)),
        Layer("c2", "conv1d", 8, 12, (3,), 1, 24, 24 * 8, (8, 16), (12, 8), a_signed=False),
        Layer("fc", "linear", 96, 4, (), 1, 96, 96, (96,), (4,), a_signed=False,
              w_pinned=8 if pin else None, a_pinned=8 if pin else None),
    )
    return LayerTable(layers, (0, 2, 4, 8), (2, 4, 8), gran)


def _mem(t: LayerTable, G: np.ndarray) -> np.ndarray:
    wb = t.weight_bits(G)
    fan = np.array([lay.fan_in for lay in t.layers])[t.channel_layer]
    return (wb * fan).sum(axis=1).astype(float)


def test_importance_rank_within_layers() -> None:
    t = _table()
    imp = np.arange(t.n_channels, dtype=float)
    r = importance_rank(t, imp)
    np.testing.assert_array_equal(r[:8], np.arange(8)[::-1])  # highest importance -> rank 0
    np.testing.assert_array_equal(r[8:20], np.arange(12)[::-1])


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 1000), gran=st.sampled_from(["channel", "layer"]), pin=st.booleans())
def test_compact_decode_valid_and_ordered(seed: int, gran: str, pin: bool) -> None:
    t = _table(gran, pin)
    rng = np.random.default_rng(seed)
    imp = rng.random(t.n_channels)
    enc = CompactEncoding(t, imp)
    P = enc.random_params(5, rng)
    G = enc.decode(P)
    t.check_genomes(G)  # valid genes
    if gran == "channel":
        wb = t.weight_bits(G)
        for i in range(2):  # searched layers: more important channels never get fewer bits
            s, e = t.layer_start[i], t.layer_start[i + 1]
            order = np.argsort(-imp[s:e], kind="stable")
            assert np.all(np.diff(wb[:, s:e][:, order], axis=1) <= 0)
            # counts follow the shares (largest remainder: within one channel per level)
            shares = P[:, i * 4 : i * 4 + 4]
            shares = shares / shares.sum(1, keepdims=True)
            counts = np.stack([(wb[:, s:e] == b).sum(1) for b in (0, 2, 4, 8)], 1)
            assert np.all(np.abs(counts - shares * (e - s)) < 1 + 1e-9)


def test_uniform_shares_decode_to_uniform() -> None:
    t = _table()
    enc = CompactEncoding(t, np.ones(t.n_channels))
    p = [0, 0, 1, 0] * 3 + [2, 2, 2]  # every layer at 4 bit, activations at 8
    G = enc.decode(np.array([p], dtype=float))
    np.testing.assert_array_equal(G, t.uniform(4, 8))


def test_initial_design_mixes_kinds(rng) -> None:
    t = _table()
    enc = CompactEncoding(t, rng.random(t.n_channels))
    D = initial_design(t, enc, 12, rng)
    assert D.shape == (12, t.n_genes)
    np.testing.assert_array_equal(D[0], t.uniform(8, 8)[0])
    assert len(np.unique(D, axis=0)) == 12


def test_crossover_takes_whole_layers(rng) -> None:
    t = _table()
    X = np.stack([np.zeros((5, t.n_genes)), np.ones((5, t.n_genes)) * 3])
    cx = LayerBlockCrossover(t, p_channel=0.0)
    Y = cx._do(None, X, random_state=rng)
    gl = t.gene_layer
    for child in Y.reshape(-1, t.n_genes):
        for layer in range(t.n_layers):
            assert len(np.unique(child[gl == layer])) == 1  # each layer from one parent
    np.testing.assert_array_equal(Y[0] + Y[1], 3)  # the two children are complementary


def test_mutation_steps_one_level_in_bounds(rng) -> None:
    t = _table()
    X = rng.integers(0, 3, (200, t.n_genes)).astype(float)
    Y = LevelStepMutation(t, p_gene=0.2, p_layer=0.0)._do(None, X, random_state=rng)
    assert np.all(np.abs(Y - X) <= 1)
    assert np.all((Y >= 0) & (Y <= t.gene_n_levels - 1))
    assert (Y != X).any()


def test_repair_keeps_a_channel_per_layer() -> None:
    t = _table()
    G = np.zeros((3, t.n_genes), dtype=np.int64)
    R = repair_all_pruned(t, G)
    wb = t.weight_bits(R)
    for i in range(t.n_layers):
        assert np.all((wb[:, t.layer_start[i] : t.layer_start[i + 1]] > 0).sum(1) >= 1)
    assert np.array_equal(KeepChannelRepair(t)._do(None, G.astype(float)), R)


def _toy_objective(t: LayerTable):  # type: ignore[no-untyped-def]
    def f(G: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mem = _mem(t, G)
        err = np.exp(-mem / 1000.0)
        return np.stack([err, mem], 1), np.zeros((len(G), 0))

    return f


def test_pymoo_engine_spreads_and_checkpoints(tmp_path: Path, rng) -> None:
    t = _table()
    enc = CompactEncoding(t, rng.random(t.n_channels))
    ck = tmp_path / "state.npz"
    e = PymooEngine(t, enc, 2, 0, "nsga2", pop_size=16, seed=0, checkpoint=ck)
    P = e.propose(_toy_objective(t), 5).genomes
    assert P.shape == (16, t.n_genes) and ck.is_file() and e.generation == 5
    mem = _mem(t, P)
    assert mem.max() / max(mem.min(), 1) > 3  # the front spans memory
    e2 = PymooEngine(t, enc, 2, 0, "nsga2", pop_size=16, seed=0, checkpoint=ck)
    assert e2.generation == 5 and np.array_equal(e2.pop, P)  # resumes from the checkpoint
    for algo in ("nsga3", "smsemoa"):
        PymooEngine(t, enc, 2, 0, algo, pop_size=16).propose(_toy_objective(t), 2)
    with pytest.raises(EvompError, match="search.algorithm"):
        PymooEngine(t, enc, 2, 0, "cmaes")


def test_pymoo_engine_is_reproducible(rng) -> None:
    t = _table()
    enc = CompactEncoding(t, np.linspace(0, 1, t.n_channels))
    a = PymooEngine(t, enc, 2, pop_size=12, seed=3).propose(_toy_objective(t), 3).genomes
    b = PymooEngine(t, enc, 2, pop_size=12, seed=3).propose(_toy_objective(t), 3).genomes
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("sampler", ["nsga2", "tpe", "nsga3", "gp"])
def test_optuna_engine_samplers(sampler: str, rng) -> None:
    t = _table()
    enc = CompactEncoding(t, rng.random(t.n_channels))
    e = OptunaEngine(enc, 2, sampler, trials=24 if sampler != "gp" else 12, population=8)
    G = e.propose(_toy_objective(t), 0).genomes
    t.check_genomes(G)
    assert len(e.last_params) >= 1
    F, _ = _toy_objective(t)(G)
    assert nondominated(F).all()
    with pytest.raises(EvompError, match="search.sampler"):
        OptunaEngine(enc, 2, "random")


def test_nondominated_and_constraints() -> None:
    F = np.array([[1, 5], [2, 2], [3, 3], [2, 2], [0, 9]], float)
    np.testing.assert_array_equal(nondominated(F), [True, True, False, False, True])
    c = parse_constraint("memory_bytes <= 40000")
    np.testing.assert_allclose(c.violation(np.array([39000, 41000])), [0, 1000])
    assert parse_constraint(" accuracy>=0.9 ").op == ">="
    with pytest.raises(EvompError, match="not of the form"):
        parse_constraint("memory < 3")


def test_objectives_errors() -> None:
    t = _table()
    with pytest.raises(EvompError, match="must include 'accuracy'"):
        Objectives(t, ["memory_bytes"])
    with pytest.raises(EvompError, match="no hardware model provides metric 'joules'"):
        Objectives(t, ["accuracy", "joules"])
    o = Objectives(t, ["accuracy", "memory_bytes"], ["energy_uj <= 1"])
    assert set(o.models) == {"memory", "mpic"}  # the constraint's model is added
    G = t.uniform(8, 8)
    costs = o.costs(G)
    assert o.matrix(np.array([0.9]), costs).shape == (1, 2)


def test_store_records_and_reloads(tmp_path: Path) -> None:
    t = _table()
    o = Objectives(t, ["accuracy", "memory_bytes"], ["memory_bytes <= 100"])
    st_ = Store(open_storage(None, tmp_path), "s", o)
    g = t.uniform(8, 8)[0]
    ok = EvalResult("h1", "short", 0.9, 0.5, seconds=1.0)
    bad = EvalResult("h2", "short", float("nan"), 0.1, failed=True, reason="QAT diverged")
    st_.record(g, ok, {"memory_bytes": 500.0}, round_=0, source="initial")
    st_.record(g, bad, {"memory_bytes": 500.0}, round_=1, source="round")
    again = Store(open_storage(None, tmp_path), "s", o)
    recs = again.records()
    assert [r.genome_hash for r in recs] == ["h1", "h2"]
    assert recs[0].val_accuracy == 0.9 and recs[1].failed
    np.testing.assert_array_equal(recs[0].genome, g)
    trial = again.study.trials[0]
    assert trial.constraints == {"memory_bytes <= 100": 400.0}
    assert trial.state == optuna.trial.TrialState.COMPLETE
    with pytest.raises(EvompError, match="exists with directions"):
        Store(open_storage(None, tmp_path), "s",
              Objectives(t, ["memory_bytes", "accuracy"]))
    with pytest.raises(EvompError, match="was made for objectives"):
        Store(open_storage(None, tmp_path), "s", Objectives(t, ["accuracy", "bitops"]))
    with pytest.raises(EvompError, match="not a database URL"):
        open_storage("somewhere.db", tmp_path)


def test_pymoo_engine_with_free_bits_repair(rng) -> None:
    import hwmodels
    from evomp.engines._refine import FreeBitsRepair, refine

    t = _table()
    enc = CompactEncoding(t, rng.random(t.n_channels))
    pulp = hwmodels.get("pulp", table=t)

    def lat_obj(G: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lat = pulp.cost(t, G)["latency_cycles"]
        return np.stack([np.exp(-_mem(t, G) / 1000.0), lat], 1), np.zeros((len(G), 0))

    e = PymooEngine(t, enc, 2, pop_size=12, seed=0, repair=FreeBitsRepair(t, pulp))
    P = e.propose(lat_obj, 3).genomes
    np.testing.assert_array_equal(refine(t, P.astype(np.int64), pulp), P)  # already refined


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 1000), gran=st.sampled_from(["channel", "layer"]), pin=st.booleans())
def test_compact_encode_keeps_the_bit_mix(seed: int, gran: str, pin: bool) -> None:
    t = _table(gran, pin)
    rng = np.random.default_rng(seed)
    enc = CompactEncoding(t, rng.random(t.n_channels))
    G = enc.decode(enc.random_params(4, rng))
    np.testing.assert_array_equal(enc.decode(enc.encode(G)), G)  # ordered genomes: exact
    R = rng.integers(0, t.gene_n_levels, (4, t.n_genes)).astype(np.int8)
    back = enc.decode(enc.encode(R))
    wb, rb = t.weight_bits(back), t.weight_bits(R)
    for i in range(len(t.layers)):  # same per-layer histogram of bits
        s, e = t.layer_start[i], t.layer_start[i + 1]
        np.testing.assert_array_equal(np.sort(wb[:, s:e], axis=1), np.sort(rb[:, s:e], axis=1))


def test_optuna_engine_injects_and_survives_no_feasible_trial(rng) -> None:
    t = _table()
    enc = CompactEncoding(t, rng.random(t.n_channels))
    e = OptunaEngine(enc, 2, "tpe", trials=16, population=6)
    front = enc.decode(enc.random_params(3, rng))

    def infeasible(G: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        m = _mem(t, G)
        return np.stack([m, -m], 1), (m[:, None] + 1.0)  # every trial violates

    G = e.propose(infeasible, 1, inject=front).genomes
    assert 0 < len(G) <= 6
    # the least infeasible = smallest memory among the trials; injected genomes were tried
    assert _mem(t, G).min() <= _mem(t, front).min()


def test_initial_design_takes_budgeted_genomes(rng) -> None:
    t = _table()
    enc = CompactEncoding(t, rng.random(t.n_channels))
    B = enc.decode(enc.random_params(5, np.random.default_rng(7), 0.2))
    D = initial_design(t, enc, 12, rng, budgeted=B)
    rows = {d.tobytes() for d in D}
    n_b = sum(b.tobytes() in rows for b in B)
    assert n_b >= 2  # part of the ordered share, spread over the budgets
    assert B[0].tobytes() in rows and B[-1].tobytes() in rows  # smallest and largest budget
