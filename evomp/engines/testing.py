"""The engine contract, shipped with the package: every registered engine, algorithm and
sampler must pass it (``tests/evomp/engines/test_contract.py`` runs it over all of them;
a plugin's tests can run it over theirs).

The checks are behavioural: proposals are valid genomes, reproducible for a seed and
different for another seed, better than random on a known problem, fixed points of the
engine's repair, and their compact parameters decode to them; each registered variant
builds the algorithm or sampler class it is named after and searches differently from
the others of its registry (so a variant that silently builds another one fails).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from evomp.engines._base import ENGINES, CheapFn, Engine, EngineParts, Proposals
from evomp.engines._encoding import CompactEncoding
from evomp.engines._optuna import SAMPLERS, OptunaEngine
from evomp.engines._pymoo import ALGORITHMS, PymooEngine
from evomp.engines._refine import FreeBitsRepair
from hwmodels import LayerTable

__all__ = [
    "EXPECTED_CLASS",
    "toy_parts",
    "toy_objective",
    "variants",
    "built_class",
    "check_engine",
    "check_variants_differ",
]

#: engine -> variant name -> the class name its builder must produce (pymoo algorithms,
#: Optuna samplers); a plugin's variants without an entry are checked by behaviour only
EXPECTED_CLASS: dict[str, dict[str, str]] = {
    "pymoo": {"nsga2": "NSGA2", "nsga3": "NSGA3", "smsemoa": "SMSEMOA"},
    "optuna": {"nsga2": "NSGAIISampler", "nsga3": "NSGAIIISampler", "tpe": "TPESampler",
               "gp": "GPSampler"},
}


def toy_table() -> LayerTable:
    """A three-layer 1-D CNN's layer table (44 weight channels, 3 activations)."""
    import torch
    from torch import nn

    from evomp.space import SearchSpace

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv1d(2, 12, 3, padding=1), nn.ReLU(),
                        nn.Conv1d(12, 24, 3, padding=1), nn.ReLU(), nn.Flatten(),
                        nn.Linear(24 * 8, 8))
    space = SearchSpace.from_model(net, torch.randn(4, 2, 8), w_bits=(0, 2, 4, 8),
                                   a_bits=(4, 8))
    return space.table


def toy_parts(engine: str, variant: str, seed: int = 0, *, repair: bool = False,
              population: int = 16, generations: int = 4) -> EngineParts:
    """:class:`EngineParts` of the toy problem for ``engine`` with ``variant`` (its
    algorithm or sampler); ``repair`` adds Free Bits' latency repair (GAP8 model)."""
    table = toy_table()
    rng = np.random.default_rng(123)
    enc = CompactEncoding(table, rng.random(table.n_channels))
    rep = None
    if repair:
        import hwmodels

        rep = FreeBitsRepair(table, hwmodels.get("pulp", table=table), "latency_cycles")
    if engine == "optuna":  # population * generations // 4 cheap trials: five generations
        population, generations = 8, 20
        if variant == "gp":  # a Gaussian-process fit per trial: fewer trials
            population, generations = 4, 12
    return EngineParts(table=table, encoding=enc, n_obj=2, n_constr=0, seed=seed,
                       population=population, generations=generations,
                       algorithm=variant if engine == "pymoo" else "nsga2",
                       sampler=variant if engine == "optuna" else "nsga2", repair=rep)


def toy_objective(table: LayerTable) -> CheapFn:
    """A known two-objective problem on genomes: an importance-weighted error that falls
    with every level raised (accuracy loss) against the levels spent (cost)."""
    w = np.random.default_rng(7).random(table.n_genes) + 0.1
    top = (table.gene_n_levels - 1).astype(float)

    def f(G: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        G = np.asarray(G, dtype=float)
        err = ((top - G) ** 2 * w).sum(axis=1)
        cost = G.sum(axis=1)
        return np.stack([err, cost], axis=1), np.zeros((len(G), 0))
    return f


def _hv(F: np.ndarray, ref: np.ndarray) -> float:
    from evomp.objectives import hypervolume_2d

    return hypervolume_2d(F, [float(v) for v in ref])


def variants(engine: str) -> tuple[str, ...]:
    """The registered variants (algorithms or samplers) of ``engine``."""
    return {"pymoo": ALGORITHMS.names(), "optuna": SAMPLERS.names()}.get(engine, ("",))


def built_class(engine: Engine) -> str:
    """The class name of the algorithm or sampler the engine builds for a round."""
    if isinstance(engine, PymooEngine):
        return type(engine.build_algorithm(None, 0)).__name__
    if isinstance(engine, OptunaEngine):
        return type(engine.build_sampler(0)).__name__
    return type(engine).__name__


def _valid(table: LayerTable, P: Proposals, what: str) -> None:
    G = P.genomes
    assert isinstance(P, Proposals), f"{what}: returned {type(P).__name__}, not Proposals"
    assert G.ndim == 2 and G.shape[1] == table.n_genes, f"{what}: genomes shape {G.shape}"
    assert G.dtype == np.int8, f"{what}: genomes dtype {G.dtype}, not int8"
    assert len(G) > 0, f"{what}: no genome"
    assert (G >= 0).all() and (G < table.gene_n_levels[None, :]).all(), \
        f"{what}: a gene outside its levels"
    if P.params is not None:
        assert len(P.params) == len(G), f"{what}: {len(P.params)} params for {len(G)} genomes"


def _decodes(enc: CompactEncoding, P: Proposals, what: str) -> None:
    if P.params is None:
        return
    for g, p in zip(P.genomes, P.params):
        if p is None:
            continue
        d = enc.decode(np.array([[p[n] for n in enc.names]], dtype=float))[0]
        assert (d == g).all(), f"{what}: a row's compact parameters do not decode to it"


def check_engine(name: str, parts: EngineParts,
                 make: Callable[[EngineParts], Engine] | None = None) -> None:
    """The contract of one engine variant on the toy problem (raises AssertionError)."""
    import dataclasses

    make = make or ENGINES.get(name)
    table, enc = parts.table, parts.encoding
    f = toy_objective(table)
    eng = make(parts)
    assert isinstance(eng, Engine), f"{name}: does not implement the Engine protocol"
    # the initial design as the engine records it
    G0 = np.random.default_rng(1).integers(0, table.gene_n_levels, (6, table.n_genes)
                                           ).astype(np.int8)
    P0 = eng.initial(G0)
    _valid(table, P0, f"{name}.initial")
    assert len(P0) == len(G0), f"{name}.initial: {len(P0)} rows for {len(G0)}"
    _decodes(enc, P0, f"{name}.initial")
    d = eng.distributions()
    if P0.params is not None:
        assert d is not None and all(set(p) == set(d) for p in P0.params if p), \
            f"{name}: recorded parameters do not match its distributions"
    # a round of proposals
    P = eng.propose(f, parts.generations, inject=G0[:2])
    _valid(table, P, f"{name}.propose")
    _decodes(enc, P, f"{name}.propose")
    if parts.repair is not None:
        assert (parts.repair.apply(P.genomes) == P.genomes).all(), \
            f"{name}: proposals are not fixed points of the engine's repair"
    # reproducible for a seed, different for another
    again = make(dataclasses.replace(parts)).propose(f, parts.generations, inject=G0[:2])
    assert again.genomes.shape == P.genomes.shape and (again.genomes == P.genomes).all(), \
        f"{name}: the same seed gave other proposals"
    other = make(dataclasses.replace(parts, seed=parts.seed + 1)).propose(
        f, parts.generations, inject=G0[:2])
    assert other.genomes.shape != P.genomes.shape or (other.genomes != P.genomes).any(), \
        f"{name}: another seed gave the same proposals"
    if parts.repair is not None:
        return  # the repair moves genomes off the toy problem's optimum on purpose
    # it searches: its proposals beat as many random genomes
    R = np.random.default_rng(2).integers(0, table.gene_n_levels,
                                          (len(P), table.n_genes)).astype(np.int8)
    FP, FR = f(P.genomes)[0], f(R)[0]
    ref = np.maximum(FP.max(0), FR.max(0)) * 1.1 + 1
    assert _hv(FP, ref) > _hv(FR, ref), f"{name}: proposals no better than random genomes"


def check_variants_differ(engine: str, make_parts: Callable[[str], EngineParts]) -> None:
    """Every variant of ``engine`` builds the class it is named after (where known) and
    proposes differently from every other variant on the same seed and problem."""
    names = variants(engine)
    seen: dict[str, np.ndarray] = {}
    for v in names:
        parts = make_parts(v)
        eng = ENGINES.get(engine)(parts)
        want = EXPECTED_CLASS.get(engine, {}).get(v)
        if want is not None:
            got = built_class(eng)
            assert got == want, f"{engine} variant {v!r} builds {got}, not {want}"
        G = eng.propose(toy_objective(parts.table), parts.generations).genomes
        for w, H in seen.items():
            same = G.shape == H.shape and (G == H).all()
            assert not same, f"{engine} variants {v!r} and {w!r} propose the same genomes"
        seen[v] = G
