"""Where the final QAT is spent: no near-duplicates of a cheaper front member."""

from __future__ import annotations

import numpy as np

from evomp.search._loop import _spaced


def test_near_duplicates_are_not_verified_twice() -> None:
    metric = np.array([1000.0, 1010.0, 1015.0, 1500.0, 1510.0])
    acc = np.array([0.90, 0.902, 0.93, 0.95, 0.951])
    kept = _spaced(np.arange(5), metric, acc, 0.02)
    # 1010 is within 2% of 1000 and not half a point better: dropped; 1015 is 3 points
    # better: a trade-off, kept; 1510 is a near-copy of 1500: dropped
    assert kept.tolist() == [0, 2, 3]
    assert _spaced(np.arange(5), metric, acc, 0.0).tolist() == [0, 1, 2, 3, 4]
