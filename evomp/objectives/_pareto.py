"""Pareto helpers: non-dominated rows and the exact 2-D hypervolume."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["nondominated", "hypervolume_2d"]


def nondominated(F: np.ndarray) -> np.ndarray:
    """``(n,)`` bool mask of the non-dominated rows of ``F (n, m)`` (all minimised).

    Duplicated rows are all kept once: the first of equal rows survives.
    """
    F = np.asarray(F, dtype=float)
    n = F.shape[0]
    if n == 0:
        return np.zeros(0, dtype=bool)
    le = np.all(F[:, None, :] <= F[None, :, :], axis=2)
    lt = np.any(F[:, None, :] < F[None, :, :], axis=2)
    dominated = np.any(le & lt, axis=0)
    same = np.all(F[:, None, :] == F[None, :, :], axis=2)
    dup = np.triu(same, 1).any(axis=0)
    return ~dominated & ~dup


def hypervolume_2d(F: np.ndarray, ref: Sequence[float]) -> float:
    """Exact hypervolume of 2-D points (both objectives minimised) under ``ref``.

    Points not strictly better than ``ref`` in both objectives add nothing.

    Args:
        F: ``(n, 2)`` objective values.
        ref: ``(2,)`` reference point.
    """
    F = np.asarray(F, dtype=float).reshape(-1, 2)
    r = np.asarray(ref, dtype=float)
    F = F[np.all(F < r[None, :], axis=1)]
    if len(F) == 0:
        return 0.0
    F = F[np.lexsort((F[:, 0], F[:, 1]))]  # by the second objective, then the first
    best = np.minimum.accumulate(F[:, 0])
    keep = np.ones(len(F), dtype=bool)
    keep[1:] = F[1:, 0] < best[:-1]  # strictly better in the first: on the staircase
    S = F[keep]
    widths = np.diff(np.append(S[:, 1], r[1]))
    return float(np.sum(widths * (r[0] - S[:, 0])))
