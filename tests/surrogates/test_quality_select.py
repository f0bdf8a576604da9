from __future__ import annotations

import numpy as np
import pytest

from surrogates import (
    expected_hvi,
    rank_quality,
    select_diverse,
    select_ehvi,
    select_uncertain,
)


def test_rank_quality_values() -> None:
    y = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    q = rank_quality(y, y + 0.01, k=3)
    assert q["kendall_tau"] == pytest.approx(1.0) and q["spearman"] == pytest.approx(1.0)
    assert q["mae"] == pytest.approx(0.01) and q["topk_overlap"] == 1.0 and q["n"] == 6
    r = rank_quality(y, -y, k=3)
    assert r["kendall_tau"] == pytest.approx(-1.0) and r["topk_overlap"] == 0.0
    p = np.array([0.9, 0.8, 0.5, 0.6, 0.7, 0.4])  # one swap inside the top 3
    assert rank_quality(y, p, k=3)["topk_overlap"] == pytest.approx(2 / 3)
    assert np.isnan(rank_quality(y, np.zeros(6))["kendall_tau"])
    assert rank_quality(y, p, k=100)["topk_overlap"] == 1.0
    with pytest.raises(ValueError, match="length"):
        rank_quality(y, y[:3])
    with pytest.raises(ValueError, match="at least one"):
        rank_quality([], [])


def test_select_uncertain() -> None:
    std = np.array([0.1, 0.5, 0.3, 0.5, 0.0])
    mean = np.array([0.5, 0.6, 0.5, 0.9, 0.5])
    assert select_uncertain(mean, std, 3).tolist() == [3, 1, 2]
    assert select_uncertain(mean, std, 10).size == 5
    with pytest.raises(ValueError):
        select_uncertain(mean, std[:2], 1)


def _exact_hvi_2d(front: np.ndarray, pt: np.ndarray, ref: np.ndarray) -> float:
    """HV gain of adding pt (acc up, cost down) to front, by a fine grid."""
    acc = np.linspace(ref[0], 1.0, 801)[:-1] + 0.5 * (1.0 - ref[0]) / 800
    cost = np.linspace(0.0, ref[1], 801)[:-1] + 0.5 * ref[1] / 800
    A, C = np.meshgrid(acc, cost, indexing="ij")
    dom = np.zeros_like(A, dtype=bool)
    for f in front:
        dom |= (f[0] >= A) & (f[1] <= C)
    new = (pt[0] >= A) & (pt[1] <= C) & ~dom
    return new.mean() * (1.0 - ref[0]) * ref[1]


def test_ehvi_matches_exact_improvement_for_certain_points() -> None:
    front = np.array([[0.9, 0.8], [0.7, 0.3]])
    ref = np.array([0.5, 1.0])
    mean = np.array([0.95, 0.8, 0.6, 0.85])
    costs = np.array([[0.9], [0.2], [0.5], [0.9]])  # the last is dominated by the front
    e = expected_hvi(mean, np.full(4, 1e-9), costs, front, ref, rng=0, n_mc=200_000)
    want = [_exact_hvi_2d(front, np.array([m, c[0]]), ref) for m, c in zip(mean, costs,
                                                                            strict=True)]
    np.testing.assert_allclose(e, want, atol=2e-3)
    assert e[3] == pytest.approx(0.0, abs=1e-12)


def test_ehvi_rewards_uncertainty_and_greedy_batch_is_distinct() -> None:
    front = np.array([[0.9, 0.8], [0.7, 0.3]])
    ref = np.array([0.5, 1.0])
    mean = np.array([0.88, 0.88, 0.6, 0.6, 0.6])
    std = np.array([0.001, 0.05, 0.01, 0.01, 0.01])
    costs = np.array([[0.7], [0.7], [0.1], [0.1], [0.15]])
    e = expected_hvi(mean, std, costs, front, ref, rng=0)
    assert e[1] > e[0] > 0
    pick = select_ehvi(mean, std, costs, front, ref, k=3, rng=0)
    assert len(set(pick.tolist())) == 3 and pick[0] in (1, 2, 3)
    # a duplicate of an already picked point gains nothing: the other region comes next
    assert not ({2, 3} <= set(pick[:2].tolist()))
    # empty front, two costs
    p2 = select_ehvi(mean, std, np.column_stack([costs[:, 0], costs[:, 0]]),
                     np.zeros((0, 3)), np.array([0.5, 1.0, 1.0]), k=5, rng=1)
    assert sorted(p2.tolist()) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="ref_point"):
        select_ehvi(mean, std, costs, front, np.array([0.5]), k=1)


def test_select_diverse() -> None:
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(size=(50, 2)) * 0.01, [[5.0, 5.0]], [[-5.0, 5.0]]])
    pick = select_diverse(X, 3, rng=0)
    assert len(set(pick.tolist())) == 3
    assert {50, 51} <= set(pick.tolist())
    pick2 = select_diverse(X, 1, existing=X[50:52])
    assert pick2[0] < 50
    assert select_diverse(np.zeros((4, 2)), 4, rng=0).tolist().__len__() == 4
    assert len(set(select_diverse(np.zeros((4, 2)), 4, rng=0).tolist())) == 4
