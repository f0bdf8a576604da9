"""Sensitivity-ordered bit assignments: greedy HAWQ-style genomes at memory budgets."""

from __future__ import annotations

from typing import Any

import numpy as np

from hwmodels import LayerTable
from surrogates._features import channel_terms
from surrogates._sensitivity import SensitivityProfile

__all__ = ["sensitivity_order_genome"]


def sensitivity_order_genome(
    table: LayerTable,
    profile: SensitivityProfile,
    budget_fraction: float | Any,
    a_bits: int | None = None,
    allow_prune: bool = True,
    ref_bits: int = 8,
    max_prune_share: float = 0.75,
) -> np.ndarray:
    """Genomes that lower the least sensitive channels first until a memory budget holds.

    Starting from every free weight gene at its highest choice, one-level downgrades are
    taken in increasing order of (loss increase) / (weight bits saved), the loss
    increase being the HAWQ-style channel term (:func:`channel_terms`). Per gene, the
    ratios of successive downgrades are made non-decreasing (running maximum), so the
    global order always takes a gene's downgrades in sequence: this is the greedy
    solution of the multiple-choice knapsack on the terms' monotone envelope.

    Args:
        table: the layer table (channel or layer granularity).
        profile: its sensitivity profile.
        budget_fraction: scalar or ``(b,)`` targets of weight memory (``fan_in * bits``
            over all channels, pinned ones included) as a share of the memory at
            ``ref_bits``; e.g. ``0.25`` is a quarter of the 8-bit weight memory. A target
            below the reachable minimum gives the minimum.
        a_bits: activation bits of the free activation genes (default: the highest).
        allow_prune: allow 0-bit (pruned) channels when 0 is among the choices.
        ref_bits: the reference bit-width of the budget.
        max_prune_share: at most this share of each layer's channels is pruned (the
            least costly ones). The second-order terms are additive and small for whole
            late layers, so an uncapped greedy happily prunes a layer away and kills the
            network; a cap keeps low budgets usable.

    Returns:
        ``(b, n_genes)`` int8 genomes, one per budget.
    """
    budgets = np.atleast_1d(np.asarray(budget_fraction, dtype=np.float64))
    if budgets.ndim != 1 or np.any(~np.isfinite(budgets)) or np.any(budgets < 0):
        raise ValueError(f"budget_fraction must be >= 0, got {budget_fraction!r}")
    w_ch = np.asarray(table.w_choices, dtype=np.float64)
    j_w = w_ch.size
    if a_bits is None:
        a_idx = len(table.a_choices) - 1
    elif a_bits in table.a_choices:
        a_idx = table.a_choices.index(a_bits)
    else:
        raise ValueError(f"a_bits {a_bits} not in the choices {table.a_choices}")
    lo_level = 1 if (not allow_prune and table.w_choices[0] == 0 and j_w > 1) else 0
    n_wg = table.n_w_genes
    term = channel_terms(table, profile)
    wg = table.w_gene_of_channel
    free = wg >= 0
    fan_in = np.array([lay.fan_in for lay in table.layers], dtype=np.float64)
    ch_fan = fan_in[table.channel_layer]
    gene_term = np.zeros((n_wg, j_w))
    np.add.at(gene_term, wg[free], term[free])
    gene_size = np.bincount(wg[free], weights=ch_fan[free], minlength=n_wg)  # fan_in sum
    denom = float(ch_fan.sum()) * ref_bits
    pinned_mem = 0.0
    for i, lay in enumerate(table.layers):
        if lay.w_pinned is not None:
            pinned_mem += lay.w_pinned * fan_in[i] * lay.out_channels
    mem_start = pinned_mem + float(gene_size.sum()) * w_ch[-1]

    # downgrade steps: from level j to j-1, j = J-1 .. lo_level+1 (depth 0, 1, ...)
    levels = np.arange(j_w - 1, lo_level, -1)
    n_steps = levels.size
    out = np.zeros((budgets.size, table.n_genes), dtype=np.int8)
    out[:, n_wg:] = a_idx
    if n_steps == 0 or n_wg == 0:
        out[:, :n_wg] = j_w - 1
        return out
    d_term = gene_term[:, levels - 1] - gene_term[:, levels]  # (G, S)
    saving = gene_size[:, None] * (w_ch[levels] - w_ch[levels - 1])[None, :]
    ratio = d_term / np.maximum(saving, 1e-30)
    ratio = np.maximum.accumulate(ratio, axis=1)
    depth = np.broadcast_to(np.arange(n_steps), ratio.shape)
    gene = np.broadcast_to(np.arange(n_wg)[:, None], ratio.shape)
    order = np.lexsort((depth.ravel(), ratio.ravel()))
    if lo_level == 0 and table.w_choices[0] == 0 and max_prune_share < 1.0:
        order = _cap_pruning(order, n_steps, n_wg, gene_size, fan_in, table, max_prune_share)
    cum_save = np.cumsum(saving.ravel()[order])
    step_gene = gene.ravel()[order]
    for b, frac in enumerate(budgets):
        need = mem_start - frac * denom
        if need <= 0:
            k = 0
        else:
            k = int(np.searchsorted(cum_save, need - 1e-9 * denom, side="left")) + 1
        taken = np.bincount(step_gene[: min(k, order.size)], minlength=n_wg)
        out[b, :n_wg] = (j_w - 1 - taken).astype(np.int8)
    return out


def _cap_pruning(order: np.ndarray, n_steps: int, n_wg: int, gene_size: np.ndarray,
                 fan_in: np.ndarray, table: LayerTable, share: float) -> np.ndarray:
    """Drop the pruning steps (last depth) beyond ``share`` of each layer's channels."""
    gene = order // n_steps
    is_prune = order % n_steps == n_steps - 1
    wg = table.w_gene_of_channel
    free = wg >= 0
    gene_layer = np.zeros(n_wg, dtype=np.int64)
    gene_layer[wg[free]] = table.channel_layer[free]
    n_ch = gene_size / fan_in[gene_layer]  # channels per gene
    layer_ch = np.diff(table.layer_start).astype(np.float64)
    cap = np.floor(share * layer_ch + 1e-9)
    keep = np.ones(order.size, dtype=bool)
    pi = np.nonzero(is_prune)[0]  # pruning steps in the global (ratio) order
    lay = gene_layer[gene[pi]]
    for i in np.unique(lay):
        sel = pi[lay == i]
        cum = np.cumsum(n_ch[gene[sel]])
        keep[sel[cum > cap[i]]] = False
    return order[keep]
