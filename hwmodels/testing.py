"""The shared contract every hardware model must satisfy, shipped for plugin authors.

Run it over your model (no pytest needed; each check raises ``AssertionError``)::

    from hwmodels import testing
    for name, table in testing.contract_tables().items():
        testing.run_contract(MyModel(), table)

or, under pytest, parametrize over :data:`CHECKS` and :func:`contract_tables` as
``tests/hwmodels/test_contract.py`` does for every registered model.

The checks: declared metrics come back as ``(n,)`` float arrays; values are finite and
non-negative; results are deterministic; a batch equals its rows costed one by one;
decoded bits cost the same as their genomes; pruning a channel never raises a
``prune_monotone`` metric; lowering any bit-width never raises a ``monotone`` metric;
the per-layer breakdown adds up to the totals; the per-layer costs
(:meth:`~hwmodels.HardwareModel.layer_cost`) are ``(n, n_layers)``, sum to the totals of
the additive metrics, equal the breakdown and the decoded bits' figures (and leave out
the metrics that do not add up: peak buffers; models without a breakdown); an
empty batch works.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from hwmodels._base import HardwareModel
from hwmodels._layers import Layer, LayerTable
from hwmodels._registry import get

__all__ = [
    "CHECKS",
    "toy_table",
    "contract_tables",
    "random_genomes",
    "example_model",
    "synthetic_measurements",
    "run_contract",
    "check_metrics_declared",
    "check_nonnegative",
    "check_deterministic",
    "check_batch_equals_rows",
    "check_bits_equal_genomes",
    "check_prune_monotone",
    "check_monotone",
    "check_breakdown",
    "check_layer_costs",
    "check_empty_batch",
]

_RTOL = 1e-9


def _fail(msg: str) -> None:
    raise AssertionError(msg)


def _close(x: np.ndarray, y: np.ndarray) -> bool:
    return bool(np.allclose(x, y, rtol=_RTOL, atol=1e-12 * (1 + np.abs(y).max(initial=0))))


# ------------------------------------------------------------------------------- tables
def toy_table(w_choices: tuple[int, ...] = (0, 2, 4, 8), a_choices: tuple[int, ...] = (2, 4, 8),
              granularity: str = "channel") -> LayerTable:
    """The two-layer toy of the hand-computed tests.

    ``conv``: Conv1d 2 -> 4 channels, kernel 3, input ``(2, 10)``, output ``(4, 8)``
    (fan-in 6, 48 MACs per channel), with bias. ``fc``: Linear 32 -> 3 without bias
    (fan-in 32, 32 MACs per channel).
    """
    conv = Layer("conv", "conv1d", 2, 4, (3,), 1, 6, 48, (2, 10), (4, 8), True)
    fc = Layer("fc", "linear", 32, 3, (), 1, 32, 32, (32,), (3,), False)
    return LayerTable((conv, fc), w_choices, a_choices, granularity)


def contract_tables() -> dict[str, LayerTable]:
    """Small layer tables covering the layouts a model must handle.

    ``toy`` (channel-wise), ``layerwise`` (one gene per layer), ``pinned`` (first layer
    pinned 8/8, last layer's weights pinned to 8 bit) and ``depthwise`` (a Conv2d
    depthwise/pointwise pair after a stem, sub-byte choices without pruning).
    """
    toy = toy_table()
    stem = Layer("stem", "conv2d", 3, 8, (3, 3), 1, 27, 27 * 64, (3, 16, 16), (8, 8, 8), True,
                 w_pinned=8, a_pinned=8)
    dw = Layer("dw", "conv2d", 8, 8, (3, 3), 8, 9, 9 * 64, (8, 8, 8), (8, 8, 8), False)
    pw = Layer("pw", "conv2d", 8, 16, (1, 1), 1, 8, 8 * 64, (8, 8, 8), (16, 8, 8), False)
    fc = Layer("head", "linear", 16, 5, (), 1, 16, 16, (16,), (5,), True, w_pinned=8)
    conv = toy.layers[0]
    return {
        "toy": toy,
        "layerwise": toy_table(granularity="layer"),
        "pinned": LayerTable(
            (Layer(**{**conv.__dict__, "w_pinned": 8, "a_pinned": 8}), toy.layers[1],
             Layer(**{**toy.layers[1].__dict__, "name": "fc2", "in_channels": 3, "fan_in": 3,
                      "macs_per_channel": 3, "in_shape": (3,), "out_shape": (3,),
                      "w_pinned": 8})),
            (0, 2, 4, 8), (2, 4, 8)),
        "depthwise": LayerTable((stem, dw, pw, fc), (2, 4, 8), (4, 8)),
    }


def random_genomes(table: LayerTable, n: int, seed: int = 0) -> np.ndarray:
    """``(n, n_genes)`` int8 random genomes, plus the all-lowest and all-highest ones."""
    rng = np.random.default_rng(seed)
    hi = table.gene_n_levels
    g = (rng.random((n, table.n_genes)) * hi).astype(np.int8)
    if n >= 2:
        g[0] = 0
        g[1] = hi - 1
    return g


def synthetic_measurements(table: LayerTable, metric: str = "measured_cycles"
                           ) -> list[dict[str, Any]]:
    """Records for the ``table`` model covering every (layer, a, w) of ``table``.

    The value, ``macs x (a_bits + w_bits) / 8``, grows with both bit-widths.
    """
    rows = []
    for lay in table.layers:
        a_set = [lay.a_pinned] if lay.a_pinned is not None else table.a_choices
        w_set = [lay.w_pinned] if lay.w_pinned is not None else table.w_choices
        for a in a_set:
            for w in w_set:
                if w > 0:
                    rows.append({"layer": lay.name, "a_bits": a, "w_bits": w,
                                 metric: lay.macs * (a + w) / 8})
    return rows


def _weight_bits(cfg: dict[str, Any]) -> dict[str, float]:
    return {"callable_weight_bits": float(sum(sum(v) for v in cfg["weights"].values()))}


def example_model(name: str, table: LayerTable) -> HardwareModel:
    """A registered model with the parameters it needs to cost ``table``.

    ``table`` gets :func:`synthetic_measurements`; ``callable`` sums weight bits. Every
    other model is built with its defaults.
    """
    if name == "table":
        return get("table", table=table, data=synthetic_measurements(table))
    if name == "callable":
        return get("callable", table=table, fn=_weight_bits, metrics=["callable_weight_bits"],
                   monotone=["callable_weight_bits"], prune_monotone=["callable_weight_bits"])
    return get(name, table=table)


# ------------------------------------------------------------------------------- checks
def check_metrics_declared(model: HardwareModel, table: LayerTable, n: int = 8) -> None:
    """Every declared metric, and only those, comes back as an ``(n,)`` float64 array."""
    out = model.cost(table, random_genomes(table, n))
    if set(out) != set(model.metrics):
        _fail(f"{model.name}: returned {sorted(out)}, declared {sorted(model.metrics)}")
    for m, v in out.items():
        if not isinstance(v, np.ndarray) or v.shape != (n,) or v.dtype != np.float64:
            _fail(f"{model.name}: {m} is {type(v).__name__} {getattr(v, 'shape', None)}, "
                  f"expected float64 ({n},)")


def check_nonnegative(model: HardwareModel, table: LayerTable, n: int = 32) -> None:
    """All values are finite and >= 0."""
    for m, v in model.cost(table, random_genomes(table, n, seed=1)).items():
        if not np.all(np.isfinite(v)) or np.any(v < 0):
            _fail(f"{model.name}: {m} has negative or non-finite values {v}")


def check_deterministic(model: HardwareModel, table: LayerTable, n: int = 16) -> None:
    """Two calls on the same batch return identical values."""
    g = random_genomes(table, n, seed=2)
    a, b = model.cost(table, g), model.cost(table, g.copy())
    for m in a:
        if not np.array_equal(a[m], b[m]):
            _fail(f"{model.name}: {m} differs between two identical calls")


def check_batch_equals_rows(model: HardwareModel, table: LayerTable, n: int = 16) -> None:
    """Costing a batch equals costing each genome alone."""
    g = random_genomes(table, n, seed=3)
    batch = model.cost(table, g)
    for i in range(n):
        row = model.cost(table, g[i])
        for m, v in row.items():
            if v.shape != (1,) or not _close(v, batch[m][i : i + 1]):
                _fail(f"{model.name}: {m} of genome {i} alone is {v}, in the batch "
                      f"{batch[m][i]}")


def check_bits_equal_genomes(model: HardwareModel, table: LayerTable, n: int = 16) -> None:
    """``cost_bits`` on decoded bits equals ``cost`` on the genomes."""
    g = random_genomes(table, n, seed=4)
    a = model.cost(table, g)
    b = model.cost_bits(table, table.weight_bits(g), table.act_bits(g))
    for m in a:
        if not _close(b[m], a[m]):
            _fail(f"{model.name}: {m} from decoded bits {b[m]} != from genomes {a[m]}")


def check_prune_monotone(model: HardwareModel, table: LayerTable, n: int = 32) -> None:
    """Pruning one channel (a weight gene to 0 bits) never raises a ``prune_monotone`` metric."""
    if not model.prune_monotone or table.n_w_genes == 0 or table.w_choices[0] != 0:
        return
    g = random_genomes(table, n, seed=5)
    rng = np.random.default_rng(5)
    pruned = g.copy()
    cols = rng.integers(0, table.n_w_genes, size=n)
    pruned[np.arange(n), cols] = 0
    before, after = model.cost(table, g), model.cost(table, pruned)
    for m in model.prune_monotone:
        bad = after[m] > before[m] * (1 + _RTOL) + 1e-12
        if bad.any():
            i = int(np.argmax(bad))
            _fail(f"{model.name}: pruning gene {cols[i]} of genome {i} raised {m} from "
                  f"{before[m][i]} to {after[m][i]}")


def check_monotone(model: HardwareModel, table: LayerTable, n: int = 64) -> None:
    """Lowering any one gene by one level never raises a ``monotone`` metric."""
    if not model.monotone or table.n_genes == 0:
        return
    g = random_genomes(table, n, seed=6)
    rng = np.random.default_rng(6)
    cols = rng.integers(0, table.n_genes, size=n)
    lower = g.copy()
    lower[np.arange(n), cols] = np.maximum(g[np.arange(n), cols] - 1, 0)
    before, after = model.cost(table, g), model.cost(table, lower)
    for m in model.monotone:
        bad = after[m] > before[m] * (1 + _RTOL) + 1e-12
        if bad.any():
            i = int(np.argmax(bad))
            _fail(f"{model.name}: lowering gene {cols[i]} of genome {i} raised {m} from "
                  f"{before[m][i]} to {after[m][i]}, but the model declares it monotone")


def check_breakdown(model: HardwareModel, table: LayerTable) -> None:
    """One row per layer, in order; per-layer metrics that are additive sum to the total."""
    g = random_genomes(table, 3, seed=7)
    for i in range(g.shape[0]):
        rows = model.breakdown(table, g[i])
        if [r["layer"] for r in rows] != [lay.name for lay in table.layers]:
            _fail(f"{model.name}: breakdown rows are not the layers in order")
        total = model.cost(table, g[i])
        for m in model.metrics:
            if all(m in r for r in rows) and m in _additive(model, table, g[i]):
                s = np.array([sum(r[m] for r in rows)])
                if not _close(s, total[m]):
                    _fail(f"{model.name}: breakdown of {m} sums to {s[0]}, total {total[m][0]}")
        for r in rows:
            for k, v in r.items():
                if isinstance(v, float) and (not np.isfinite(v) or v < 0):
                    _fail(f"{model.name}: breakdown {r['layer']}.{k} = {v}")


def _additive(model: HardwareModel, table: LayerTable, genome: np.ndarray) -> set[str]:
    return set(model.layer_cost(table, genome))


def check_layer_costs(model: HardwareModel, table: LayerTable, n: int = 8) -> None:
    """Per-layer costs: declared metrics only, ``(n, n_layers)`` float64, finite and
    >= 0, summing over layers to :meth:`cost` (the additive metrics), equal to the
    breakdown's figures and to :meth:`layer_cost_bits` of the decoded bits; an empty
    batch gives ``(0, n_layers)``."""
    g = random_genomes(table, n, seed=8)
    per = model.layer_cost(table, g)
    total = model.cost(table, g)
    extra = sorted(set(per) - set(model.metrics))
    if extra:
        _fail(f"{model.name}: layer_cost returned undeclared metrics {extra}")
    for m, v in per.items():
        if not isinstance(v, np.ndarray) or v.shape != (n, table.n_layers) or \
                v.dtype != np.float64:
            _fail(f"{model.name}: layer_cost {m} is {getattr(v, 'shape', None)}, expected "
                  f"float64 ({n}, {table.n_layers})")
        if not np.all(np.isfinite(v)) or np.any(v < 0):
            _fail(f"{model.name}: layer_cost {m} has negative or non-finite values")
        if not _close(v.sum(axis=1), total[m]):
            _fail(f"{model.name}: layer_cost of {m} sums to {v.sum(axis=1)}, total {total[m]}")
    bits = model.layer_cost_bits(table, table.weight_bits(g), table.act_bits(g))
    if set(bits) != set(per):
        _fail(f"{model.name}: layer_cost_bits gives {sorted(bits)}, layer_cost {sorted(per)}")
    for m in per:
        if not _close(bits[m], per[m]):
            _fail(f"{model.name}: layer_cost_bits of {m} differs from layer_cost")
    rows = model.breakdown(table, g[0])
    for m in per:
        b = np.array([r.get(m, np.nan) for r in rows])
        if not _close(b, per[m][0]):
            _fail(f"{model.name}: breakdown of {m} {b} != layer_cost {per[m][0]}")
    empty = model.layer_cost(table, np.zeros((0, table.n_genes), dtype=np.int8))
    for m, v in empty.items():
        if v.shape != (0, table.n_layers):
            _fail(f"{model.name}: layer_cost {m} of an empty batch has shape {v.shape}")


def check_empty_batch(model: HardwareModel, table: LayerTable) -> None:
    """A ``(0, n_genes)`` batch gives ``(0,)`` arrays."""
    out = model.cost(table, np.zeros((0, table.n_genes), dtype=np.int8))
    for m, v in out.items():
        if v.shape != (0,):
            _fail(f"{model.name}: {m} of an empty batch has shape {v.shape}")


CHECKS: tuple[Callable[[HardwareModel, LayerTable], None], ...] = (
    check_metrics_declared,
    check_nonnegative,
    check_deterministic,
    check_batch_equals_rows,
    check_bits_equal_genomes,
    check_prune_monotone,
    check_monotone,
    check_breakdown,
    check_layer_costs,
    check_empty_batch,
)


def run_contract(model: HardwareModel, table: LayerTable) -> None:
    """Run every check of :data:`CHECKS`; the first failure raises ``AssertionError``."""
    model.bind(table)
    for check in CHECKS:
        check(model, table)
