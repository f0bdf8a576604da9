"""pymoo operators for bit genomes: one concern per class, vectorized over the batch."""

from __future__ import annotations

import numpy as np
from pymoo.core.crossover import Crossover
from pymoo.core.mutation import Mutation
from pymoo.core.repair import Repair
from pymoo.core.sampling import Sampling

from evomp.engines._encoding import CompactEncoding
from evomp.space import repair_all_pruned
from hwmodels import LayerTable

__all__ = ["ChainRepair", "MixedSampling", "LayerBlockCrossover", "LevelStepMutation",
           "KeepChannelRepair",
           "initial_design"]


def initial_design(
    table: LayerTable, encoding: CompactEncoding, n: int, rng: np.random.Generator,
    budgeted: np.ndarray | None = None,
) -> np.ndarray:
    """``(n, n_genes)`` genomes mixing uniform configurations, sensitivity-ordered
    assignments and uniformly random genomes; uniforms first, then about 2/3 ordered.

    The ordered ones are ``budgeted`` genomes first (sensitivity-ordered assignments at
    several memory budgets, computed by the caller, e.g. with
    ``surrogates.sensitivity_order_genome``; at most half of the ordered share, spread over
    the budgets), then Dirichlet shares of bit levels decoded in importance order.
    """
    if n <= 0:
        return np.zeros((0, table.n_genes), dtype=np.int8)
    uni = []
    for w in table.w_choices[::-1]:
        if w == 0:
            continue
        for a in table.a_choices[::-1]:
            uni.append(table.uniform(w, a)[0])
    # order uniforms: (8,8), (4,8), (2,8)... interleaved so small n still spans bits
    uni_arr = np.array(uni, dtype=np.int8).reshape(-1, table.n_genes)
    pick = sorted(range(len(uni_arr)), key=lambda i: (i % len(table.a_choices), i))
    uni_arr = uni_arr[pick][: min(n, max(1, n // 4))]
    rest = n - len(uni_arr)
    n_ord = (2 * rest + 2) // 3
    # concentrations from spread-out to balanced: low concentration gives extreme shares
    B = np.zeros((0, table.n_genes), np.int8) if budgeted is None else \
        np.asarray(budgeted, np.int8).reshape(-1, table.n_genes)
    B = _unique_rows(B, exclude=uni_arr)  # e.g. a 2-bit budget equal to the uniform 2-bit
    n_b = min(len(B), n_ord // 2)
    if n_b:
        B = B[np.unique(np.rint(np.linspace(0, len(B) - 1, n_b)).astype(int))]
        n_b = len(B)
    n_dir = n_ord - n_b
    conc = np.repeat([0.3, 1.0, 3.0], -(-n_dir // 3))[:n_dir]
    if n_dir:
        P = np.concatenate([encoding.random_params(1, rng, c) for c in conc])
        ordered = encoding.decode(P)
    else:
        ordered = np.zeros((0, table.n_genes), np.int8)
    ordered = np.concatenate([B[:n_b], ordered])
    hi = table.gene_n_levels
    rand = (rng.random((rest - n_ord, table.n_genes)) * hi).astype(np.int8)
    return np.concatenate([uni_arr, ordered, rand])[:n]


def _unique_rows(G: np.ndarray, exclude: np.ndarray | None = None) -> np.ndarray:
    """Rows of ``G`` in order, without repeats and without rows of ``exclude``."""
    seen = {r.tobytes() for r in exclude} if exclude is not None else set()
    keep = []
    for i, r in enumerate(G):
        k = r.tobytes()
        if k not in seen:
            seen.add(k)
            keep.append(i)
    return G[keep]


class MixedSampling(Sampling):
    """Initial population: :func:`initial_design` (uniform + ordered + random), plus any
    genomes given (e.g. the previous population when resuming)."""

    def __init__(self, table: LayerTable, encoding: CompactEncoding,
                 seeds: np.ndarray | None = None, seed: int = 0,
                 budgeted: np.ndarray | None = None) -> None:
        super().__init__()
        self.table = table
        self.encoding = encoding
        self.seeds = seeds
        self.seed = seed
        self.budgeted = budgeted

    def _do(self, problem, n_samples, **kwargs):  # type: ignore[no-untyped-def]
        rng = np.random.default_rng(self.seed)
        given = np.zeros((0, self.table.n_genes), np.int8) if self.seeds is None else self.seeds
        given = given[:n_samples]
        more = initial_design(self.table, self.encoding, n_samples - len(given), rng,
                              self.budgeted)
        return np.concatenate([given, more]).astype(float)


class LayerBlockCrossover(Crossover):
    """Exchange whole layers between two parents, and with ``p_channel`` single channels.

    Each child takes every layer (all its weight genes and its activation gene) from one
    parent chosen at random; then, with probability ``p_channel`` per gene, swaps single
    genes, which mixes channel assignments inside layers.
    """

    def __init__(self, table: LayerTable, p_channel: float = 0.05) -> None:
        super().__init__(n_parents=2, n_offsprings=2)
        self.gene_layer = table.gene_layer
        self.n_layers = table.n_layers
        self.p_channel = p_channel

    def _do(self, problem, X, random_state=None, **kwargs):  # type: ignore[no-untyped-def]
        rng = random_state if random_state is not None else np.random.default_rng()
        _, n_mat, n_var = X.shape
        pick = rng.random((n_mat, self.n_layers)) < 0.5  # (n_mat, L)
        mask = pick[:, self.gene_layer]  # (n_mat, n_var)
        mask ^= rng.random((n_mat, n_var)) < self.p_channel
        a, b = X[0], X[1]
        return np.stack([np.where(mask, a, b), np.where(mask, b, a)])


class LevelStepMutation(Mutation):
    """Move genes one bit level up or down; sometimes shift a whole layer.

    Per gene with probability ``p_gene`` (default ``1 / n_genes * 4``) a step of ±1 level;
    per genome with probability ``p_layer`` one random layer moves all its genes by ±1.
    """

    def __init__(self, table: LayerTable, p_gene: float | None = None, p_layer: float = 0.3
                 ) -> None:
        super().__init__()
        self.gene_layer = table.gene_layer
        self.hi = table.gene_n_levels - 1
        self.n_layers = table.n_layers
        self.p_gene = p_gene if p_gene is not None else min(0.5, 4.0 / table.n_genes)
        self.p_layer = p_layer

    def _do(self, problem, X, random_state=None, **kwargs):  # type: ignore[no-untyped-def]
        rng = random_state if random_state is not None else np.random.default_rng()
        n, n_var = X.shape
        X = np.rint(X).astype(np.int64)
        step = np.where(rng.random((n, n_var)) < 0.5, -1, 1)
        hit = rng.random((n, n_var)) < self.p_gene
        layer_move = rng.random(n) < self.p_layer
        which = rng.integers(0, self.n_layers, n)
        lstep = np.where(rng.random(n) < 0.5, -1, 1)
        in_layer = (self.gene_layer[None, :] == which[:, None]) & layer_move[:, None]
        X = X + np.where(hit, step, 0) + np.where(in_layer, lstep[:, None], 0)
        return np.clip(X, 0, self.hi[None, :]).astype(float)


class KeepChannelRepair(Repair):
    """Keep at least one unpruned weight channel in every layer (a layer with all channels
    at 0 bit cuts the network): the layer's first pruned gene is raised to the lowest
    non-zero level."""

    def __init__(self, table: LayerTable) -> None:
        super().__init__()
        self.table = table
        self.zero_level = table.w_choices.index(0) if 0 in table.w_choices else None

    def _do(self, problem, X, **kwargs):  # type: ignore[no-untyped-def]
        if self.zero_level is None:
            return X
        return repair_all_pruned(self.table, np.rint(X).astype(np.int64)).astype(float)


class ChainRepair(Repair):
    """Apply several repairs in order (e.g. keep-a-channel, then Free Bits)."""

    def __init__(self, *repairs: Repair) -> None:
        super().__init__()
        self.repairs = repairs

    def _do(self, problem, X, **kwargs):  # type: ignore[no-untyped-def]
        for r in self.repairs:
            X = r._do(problem, X, **kwargs)
        return X


