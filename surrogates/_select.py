"""Pick which candidates of a pool get a true (QAT) evaluation next."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import ndtr

__all__ = ["select_uncertain", "select_ehvi", "select_diverse", "expected_hvi"]


def _rng(rng: Any) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def _k(k: int, n: int) -> int:
    if int(k) < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    return min(int(k), n)


def select_uncertain(mean: Any, std: Any, k: int) -> np.ndarray:
    """The ``k`` candidates with the largest predicted std (ties: higher mean first).

    Args:
        mean: ``(n,)`` predicted accuracies.
        std: ``(n,)`` predicted standard deviations.
        k: how many to pick (at most ``n``).

    Returns:
        ``(k,)`` int indices into the pool, most uncertain first.
    """
    m = np.asarray(mean, dtype=np.float64).ravel()
    s = np.asarray(std, dtype=np.float64).ravel()
    if m.shape != s.shape:
        raise ValueError(f"mean and std differ in length: {m.shape[0]} vs {s.shape[0]}")
    return np.lexsort((-m, -s))[: _k(k, m.size)].astype(np.int64)


def expected_hvi(
    mean: Any,
    std: Any,
    costs: Any,
    front_points: Any,
    ref_point: Any,
    rng: Any = None,
    n_mc: int = 4096,
) -> np.ndarray:
    """Expected hypervolume improvement of each candidate over the current front.

    Objectives: accuracy (maximised, uncertain: ``N(mean, std)``) and ``m`` costs
    (minimised, known). The hypervolume integral is estimated with ``n_mc`` uniform
    points in the box between the ideal corner and ``ref_point``; the expectation over
    each candidate's accuracy is exact (a normal CDF per box point).

    Args:
        mean / std: ``(n,)`` predicted accuracy and its std.
        costs: ``(n, m)`` costs of the candidates.
        front_points: ``(p, 1 + m)`` current front: accuracy, then the ``m`` costs
            (``p`` may be 0).
        ref_point: ``(1 + m,)``: the lowest accuracy and the highest costs that count.
        rng: seed or ``np.random.Generator`` of the box points.
        n_mc: number of box points.

    Returns:
        ``(n,)`` expected improvement in the box's units (accuracy times costs).
    """
    m, s, c, front, ref = _check_ehvi(mean, std, costs, front_points, ref_point)
    u, vol = _box_points(m, s, c, front, ref, _rng(rng), n_mc)
    free = ~_dominated(front, u)
    return _ehvi(m, s, c, u, free) * vol / u.shape[0]


def select_ehvi(
    mean: Any,
    std: Any,
    costs: Any,
    front_points: Any,
    ref_point: Any,
    k: int,
    rng: Any = None,
    n_mc: int = 4096,
) -> np.ndarray:
    """Greedy batch of ``k`` candidates by expected hypervolume improvement.

    After each pick, the candidate's predicted point (mean accuracy, costs) joins the
    front ("kriging believer"), so the next pick improves a different region.

    Args:
        mean / std: ``(n,)`` predicted accuracy and std of the pool.
        costs: ``(n, m)`` costs (minimised).
        front_points: ``(p, 1 + m)`` current front, accuracy first.
        ref_point: ``(1 + m,)`` lowest accuracy and highest costs that count.
        k: how many to pick.
        rng: seed or generator.
        n_mc: Monte Carlo box points.

    Returns:
        ``(k,)`` int indices into the pool, in pick order. When no candidate improves
        the front any more, the rest are filled by largest std.
    """
    m, s, c, front, ref = _check_ehvi(mean, std, costs, front_points, ref_point)
    k = _k(k, m.size)
    u, _ = _box_points(m, s, c, front, ref, _rng(rng), n_mc)
    free = ~_dominated(front, u)
    chosen: list[int] = []
    avail = np.ones(m.size, dtype=bool)
    for _ in range(k):
        e = _ehvi(m, s, c, u, free)
        e[~avail] = -np.inf
        best = int(np.argmax(e))
        if not e[best] > 0:
            rest = [int(i) for i in select_uncertain(m[avail], s[avail], k - len(chosen))]
            chosen += np.nonzero(avail)[0][rest].tolist()
            break
        chosen.append(best)
        avail[best] = False
        pt = np.concatenate([[m[best]], c[best]])[None, :]
        free &= ~_dominated(pt, u)
    return np.asarray(chosen, dtype=np.int64)


def _check_ehvi(mean, std, costs, front_points, ref_point):  # type: ignore[no-untyped-def]
    m = np.asarray(mean, dtype=np.float64).ravel()
    s = np.maximum(np.asarray(std, dtype=np.float64).ravel(), 1e-12)
    c = np.asarray(costs, dtype=np.float64)
    if c.ndim == 1:
        c = c[:, None]
    ref = np.asarray(ref_point, dtype=np.float64).ravel()
    front = np.asarray(front_points, dtype=np.float64).reshape(-1, ref.size)
    if m.shape != s.shape or c.shape[0] != m.size:
        raise ValueError(
            f"mean {m.shape}, std {s.shape} and costs {c.shape} must describe the same pool"
        )
    if ref.size != 1 + c.shape[1]:
        raise ValueError(
            f"ref_point must hold 1 accuracy + {c.shape[1]} costs, got {ref.size} values"
        )
    return m, s, c, front, ref


def _box_points(m, s, c, front, ref, rng, n_mc):  # type: ignore[no-untyped-def]
    """Uniform points in [ideal, ref] in (accuracy, costs) coordinates."""
    acc_hi = np.concatenate([m + 4 * s, front[:, 0]]).max(initial=ref[0])
    cost_lo = np.concatenate([c, front[:, 1:]]).min(axis=0, initial=np.inf)
    cost_lo = np.minimum(cost_lo, ref[1:])
    lo = np.concatenate([[ref[0]], cost_lo])
    hi = np.concatenate([[max(acc_hi, ref[0])], ref[1:]])
    u = lo + (hi - lo) * rng.random((int(n_mc), lo.size))
    return u, float(np.prod(hi - lo))


def _dominated(points: np.ndarray, u: np.ndarray) -> np.ndarray:
    """``(N,)`` whether each box point is dominated by any of ``points`` (acc first)."""
    out = np.zeros(u.shape[0], dtype=bool)
    for p in points:
        out |= (p[0] >= u[:, 0]) & np.all(p[None, 1:] <= u[:, 1:], axis=1)
    return out


def _ehvi(m, s, c, u, free, block: int = 256):  # type: ignore[no-untyped-def]
    """Sum over free box points of P(candidate dominates the point)."""
    uf = u[free]
    out = np.zeros(m.size)
    if uf.shape[0] == 0:
        return out
    for lo in range(0, m.size, block):
        sl = slice(lo, lo + block)
        cover = np.all(c[sl, None, :] <= uf[None, :, 1:], axis=2)  # (b, N)
        p = ndtr((m[sl, None] - uf[None, :, 0]) / s[sl, None])
        out[sl] = (cover * p).sum(1)
    return out


def select_diverse(X: Any, k: int, rng: Any = None, existing: Any = None) -> np.ndarray:
    """Greedy farthest-point choice of ``k`` rows of ``X`` (standardized columns).

    Args:
        X: ``(n, d)`` candidate features (or genomes).
        k: how many to pick.
        rng: seed or generator for the first pick (when ``existing`` is empty).
        existing: ``(p, d)`` points already evaluated, to stay away from.

    Returns:
        ``(k,)`` int indices into ``X``, in pick order.
    """
    x = np.asarray(X, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"X must be (n, d), got shape {x.shape}")
    k = _k(k, x.shape[0])
    mu, sd = x.mean(0), x.std(0)
    sd[sd == 0] = 1.0
    z = (x - mu) / sd
    dist = np.full(x.shape[0], np.inf)
    if existing is not None and np.size(existing):
        e = (np.asarray(existing, dtype=np.float64).reshape(-1, x.shape[1]) - mu) / sd
        for row in e:
            dist = np.minimum(dist, ((z - row) ** 2).sum(1))
    chosen: list[int] = []
    for _ in range(k):
        if np.isinf(dist).all():
            i = int(_rng(rng).integers(x.shape[0]))
        else:
            d = dist.copy()
            d[chosen] = -1.0
            i = int(np.argmax(d))
        chosen.append(i)
        dist = np.minimum(dist, ((z - z[i]) ** 2).sum(1))
        dist[chosen] = -1.0
    return np.asarray(chosen, dtype=np.int64)
