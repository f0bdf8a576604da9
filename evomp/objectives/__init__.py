"""Objectives and constraints over hardware metrics and accuracy; Pareto helpers.
"""

from __future__ import annotations

from evomp.objectives._objectives import Constraint, Objectives, parse_constraint
from evomp.objectives._pareto import hypervolume_2d, nondominated

__all__ = [
    "Constraint",
    "Objectives",
    "hypervolume_2d",
    "nondominated",
    "parse_constraint",
]
