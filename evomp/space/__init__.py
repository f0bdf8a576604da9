"""The search space: the traced layer table, genomes and their bit configurations.

Floor 1 of evomp (after ``evomp._errors``): imports neither torch training nor search.
"""

from __future__ import annotations

from evomp.space._bitconfig import BitConfig
from evomp.space._genome import genome_from_hex, genome_hash, genome_to_hex, repair_all_pruned
from evomp.space._space import QUANTIZABLE, SearchSpace, parse_pin

__all__ = [
    "parse_pin",
    "BitConfig",
    "QUANTIZABLE",
    "SearchSpace",
    "genome_from_hex",
    "genome_hash",
    "genome_to_hex",
    "repair_all_pruned",
]
