"""Rank quality of an accuracy predictor on held-out true evaluations."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats

__all__ = ["rank_quality", "pooled_rank_quality"]


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


def _tau(t: np.ndarray, p: np.ndarray) -> float:
    if t.size < 2 or np.ptp(t) == 0 or np.ptp(p) == 0:
        return float("nan")
    return float(stats.kendalltau(t, p).statistic)


def pooled_rank_quality(
    measured: Any, predicted: Any, best_margin: float = 0.05, best: float | None = None
) -> dict[str, float]:
    """Pooled out-of-sample rank quality of a search's surrogate.

    ``measured`` and ``predicted`` hold every round candidate so far, pooled over the
    rounds, each predicted *before* it was trained (by the surrogate of its round). The
    figure that matters for a search is how well those predictions rank the candidates,
    overall and on the frontier: among the candidates whose measured accuracy is within
    ``best_margin`` of the best accuracy.

    Args:
        measured: ``(n,)`` measured accuracies of the round candidates (failed ones
            left out by the caller).
        predicted: ``(n,)`` their predictions, made before they were trained.
        best_margin: width of the frontier band, in accuracy units (0.05 = 5 points).
        best: the run's best accuracy (over every evaluation, initial design included);
            default: the best of ``measured``.

    Returns:
        ``pooled_tau`` (Kendall tau-b over all ``n``), ``pooled_tau_top`` (over the
        ``n_top`` candidates with ``measured >= best - best_margin``), ``pooled_mae``,
        ``n`` and ``n_top``. A tau is NaN with fewer than 2 points or a constant side;
        the MAE is NaN when ``n == 0``.

    Raises:
        ValueError: different lengths, or a negative ``best_margin``.
    """
    t = np.asarray(measured, dtype=np.float64).ravel()
    p = np.asarray(predicted, dtype=np.float64).ravel()
    if t.shape != p.shape:
        raise ValueError(f"measured and predicted differ in length: {t.shape[0]} vs {p.shape[0]}")
    if not best_margin >= 0:
        raise ValueError(f"best_margin must be >= 0, got {best_margin}")
    top_acc = float(best) if best is not None else (float(t.max()) if t.size else np.nan)
    top = t >= top_acc - float(best_margin) - 1e-12
    return {
        "pooled_tau": _tau(t, p),
        "pooled_tau_top": _tau(t[top], p[top]),
        "pooled_mae": float(np.mean(np.abs(t - p))) if t.size else float("nan"),
        "n": float(t.size),
        "n_top": float(top.sum()),
    }
