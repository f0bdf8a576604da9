"""Uniform precision: every searched weight and activation at one bit-width (pins respected)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from evomp._errors import EvompError
from evomp.baselines._registry import BaselineOptions, BaselineResult, check_params, register_method

if TYPE_CHECKING:
    from evomp.objectives import Objectives
    from evomp.run import RunContext

__all__ = ["uniform_genomes", "DEFAULTS"]

#: ``[baselines.uniform]`` keys and their defaults: ``pairs`` lists ``[w, a]`` bits;
#: empty means (8, 8), (4, 4), (2, 2) plus (8, 4) and (4, 8), as far as the choices allow.
DEFAULTS: dict[str, Any] = {"pairs": []}

_DEFAULT_PAIRS = ((8, 8), (4, 4), (2, 2), (8, 4), (4, 8))


def uniform_genomes(space: Any, pairs: Any = ()) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """``(m, n_genes)`` int8 uniform genomes and the ``(w, a)`` pairs they are.

    Args:
        space: a :class:`~evomp.SearchSpace` (pinned layers keep their pins).
        pairs: ``[(w_bits, a_bits), ...]``; empty: the default pairs that the choices allow.

    Raises:
        EvompError: a requested pair is not among the choices, or none is possible.
    """
    w_ch, a_ch = space.table.w_choices, space.table.a_choices
    if len(pairs):
        want = []
        for pr in pairs:
            if len(pr) != 2:
                raise EvompError(f"[baselines.uniform] pairs holds [w, a] bits, got {pr!r}")
            want.append((int(pr[0]), int(pr[1])))
    else:
        want = [pr for pr in _DEFAULT_PAIRS if pr[0] in w_ch and pr[1] in a_ch]
        if not want:  # unusual choices: the same widths where both exist, else the extremes
            want = [(b, b) for b in w_ch if b in a_ch and b > 0] or [(max(w_ch), max(a_ch))]
    genomes = np.concatenate([space.uniform(w, a) for w, a in want], axis=0)
    return genomes, want


@register_method("uniform")
def uniform_method(ctx: RunContext, objectives: Objectives, opts: BaselineOptions
                   ) -> BaselineResult:
    """All-8, all-4, all-2 (and 8/4, 4/8) bit configurations, respecting pinned layers."""
    p = check_params("uniform", opts.params, DEFAULTS)
    genomes, pairs = uniform_genomes(ctx.space, p["pairs"])
    return BaselineResult(genomes, {"params": p, "pairs": [list(x) for x in pairs]})
