"""Rank quality of an accuracy predictor on held-out true evaluations."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats

__all__ = ["rank_quality"]


def rank_quality(y_true: Any, y_pred: Any, k: int = 5) -> dict[str, float]:
    """How well predictions rank and match held-out accuracies.

    Args:
        y_true: ``(n,)`` true accuracies.
        y_pred: ``(n,)`` predicted accuracies.
        k: size of the top sets compared (clipped to ``n``).

    Returns:
        ``kendall_tau`` (tau-b), ``spearman``, ``mae`` and ``topk_overlap`` (share of the
        ``k`` truly best points that are among the ``k`` predicted best), plus ``n``.
        A correlation is NaN when either side is constant.

    Raises:
        ValueError: different lengths, or an empty input.
    """
    t = np.asarray(y_true, dtype=np.float64).ravel()
    p = np.asarray(y_pred, dtype=np.float64).ravel()
    if t.shape != p.shape:
        raise ValueError(f"y_true and y_pred differ in length: {t.shape[0]} vs {p.shape[0]}")
    if t.size == 0:
        raise ValueError("rank_quality needs at least one point")
    const = np.ptp(t) == 0 or np.ptp(p) == 0
    tau = float("nan") if const else float(stats.kendalltau(t, p).statistic)
    rho = float("nan") if const else float(stats.spearmanr(t, p).statistic)
    kk = max(1, min(int(k), t.size))
    top_t = set(np.argsort(-t, kind="stable")[:kk].tolist())
    top_p = set(np.argsort(-p, kind="stable")[:kk].tolist())
    return {
        "kendall_tau": tau,
        "spearman": rho,
        "mae": float(np.mean(np.abs(t - p))),
        "topk_overlap": len(top_t & top_p) / kk,
        "n": int(t.size),
    }
