"""MPIC: a RISC-V core with mixed-precision SIMD (Ottavi et al. 2020), the target of
Risso et al.'s channel-wise search."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from hwmodels._base import BitBatch, Costs, HardwareModel, _batch_pairs, _table_pairs
from hwmodels._layers import MAX_BITS, LayerTable

__all__ = ["MpicModel", "MPIC_MACS_PER_CYCLE"]

#: MACs per cycle measured on MPIC, keyed by (activation bits, weight bits)
#: (Ottavi et al. 2020, as used by Risso et al. 2022).
MPIC_MACS_PER_CYCLE: Mapping[tuple[int, int], float] = {
    (2, 2): 6.5, (2, 4): 4.0, (2, 8): 2.2,
    (4, 2): 3.9, (4, 4): 3.5, (4, 8): 2.1,
    (8, 2): 2.5, (8, 4): 2.3, (8, 8): 2.1,
}


def _parse_rates(rates: Any) -> dict[tuple[int, int], float]:
    """Accept ``{(a, w): r}`` or nested ``{a: {w: r}}`` (keys may be strings, as in JSON)."""
    if not isinstance(rates, Mapping):
        raise ValueError(
            "macs_per_cycle must map (activation bits, weight bits) to MACs per cycle, "
            "e.g. {(8, 8): 2.1} or {'8': {'8': 2.1}}"
        )
    out: dict[tuple[int, int], float] = {}
    for k, v in rates.items():
        items = (
            [((k[0], k[1]), v)] if isinstance(k, tuple) else
            [((k, w), r) for w, r in v.items()] if isinstance(v, Mapping) else None
        )
        if items is None:
            raise ValueError(f"macs_per_cycle entry {k!r}: {v!r} is neither (a, w): rate "
                             "nor a: {w: rate}")
        for (a, w), r in items:
            try:
                a, w, r = int(a), int(w), float(r)
            except (TypeError, ValueError) as e:
                raise ValueError(f"macs_per_cycle entry ({a!r}, {w!r}): {r!r} is not "
                                 "numeric") from e
            if not (1 <= a <= MAX_BITS and 1 <= w <= MAX_BITS) or not r > 0:
                raise ValueError(f"macs_per_cycle entry ({a}, {w}): {r} needs bits in "
                                 f"1..{MAX_BITS} and a positive rate")
            out[(a, w)] = r
    return out


class MpicModel(HardwareModel):
    """MPIC cycles from its MACs-per-cycle table per precision group; energy from power and clock.

    A layer's channels at weight bits ``w`` (a precision group) run at the table's rate for
    (the layer's activation bits, ``w``); pruned channels cost nothing. Each precision
    group may pay ``group_overhead_cycles`` (a sub-kernel call; 0 by default, as in Risso
    et al.'s cost model). With no overhead and a table that is non-increasing in both bit
    widths (the measured one is), both metrics are monotone in every bit-width.
    """

    name: ClassVar[str] = "mpic"
    metrics = {
        "mpic_cycles": "cycles per inference on one MPIC core",
        "energy_uj": "microjoules per inference on MPIC: cycles / clock x power",
    }
    parameters: ClassVar[dict[str, str]] = {
        "macs_per_cycle": "override/extend the MACs-per-cycle table, {(a_bits, w_bits): "
        "rate} (default: Ottavi et al. 2020 measurements for 2/4/8 bit)",
        "freq_mhz": "clock in MHz (250, Ottavi et al. 2020)",
        "power_mw": "average power in mW (5.38 = mean of measured 5.30, 5.39, 5.46, 5.38)",
        "group_overhead_cycles": "cycles per precision group (sub-kernel launch); 0 = none",
    }
    prune_monotone = frozenset(metrics)

    def __init__(self, macs_per_cycle: Mapping[Any, Any] | None = None, freq_mhz: float = 250.0,
                 power_mw: float = 5.38, group_overhead_cycles: float = 0.0) -> None:
        for k, v in (("freq_mhz", freq_mhz), ("power_mw", power_mw)):
            if not isinstance(v, (int, float)) or not v > 0:
                raise ValueError(f"{k} must be a positive number, got {v!r}")
        if not isinstance(group_overhead_cycles, (int, float)) or group_overhead_cycles < 0:
            raise ValueError(f"group_overhead_cycles must be >= 0, got {group_overhead_cycles!r}")
        super().__init__(macs_per_cycle=macs_per_cycle, freq_mhz=freq_mhz, power_mw=power_mw,
                         group_overhead_cycles=group_overhead_cycles)
        rates = dict(MPIC_MACS_PER_CYCLE)
        if macs_per_cycle is not None:
            rates.update(_parse_rates(macs_per_cycle))
        self.rates = rates
        self.freq_mhz = float(freq_mhz)
        self.power_mw = float(power_mw)
        self.group_overhead_cycles = float(group_overhead_cycles)
        # cycles per MAC by [a_bits, w_bits]; NaN where unknown, 0 for pruned channels
        cpm = np.full((MAX_BITS + 1, MAX_BITS + 1), np.nan)
        cpm[:, 0] = 0.0
        for (a, w), r in rates.items():
            cpm[a, w] = 1.0 / r
        self._cpm = cpm
        mono = self.group_overhead_cycles == 0 and all(
            r1 >= r2 for (a1, w1), r1 in rates.items() for (a2, w2), r2 in rates.items()
            if a1 <= a2 and w1 <= w2
        )
        self.monotone = frozenset(self.metrics) if mono else frozenset()

    def _missing(self, pairs: set[tuple[int, int]]) -> list[tuple[int, int]]:
        return sorted(p for p in pairs if p[1] > 0 and np.isnan(self._cpm[p]))

    def _raise_missing(self, missing: list[tuple[int, int]]) -> None:
        if missing:
            have = sorted(self.rates)
            raise ValueError(
                f"the MPIC table has no MACs-per-cycle figure for (activation bits, weight "
                f"bits) {missing}; it covers {have}. Restrict the bit choices to those, or "
                "pass macs_per_cycle={(a, w): rate, ...} with measured figures"
            )

    def _check_table(self, table: LayerTable) -> None:
        self._raise_missing(self._missing(set().union(set(), *_table_pairs(table).values())))

    def _check_batch(self, batch: BitBatch) -> None:
        self._raise_missing(self._missing(set().union(set(), *_batch_pairs(batch).values())))

    def _layer_cost(self, batch: BitBatch) -> Costs:
        mpc = np.array([lay.macs_per_channel for lay in batch.table.layers], dtype=np.float64)
        cpm = self._cpm[batch.a_bits[:, :, None], batch.levels[None, None, :]]  # (n, L, K)
        used = batch.counts > 0
        cpm = np.where(used, cpm, 0.0)  # unused (a, w) pairs may be unknown
        cycles = (batch.counts * cpm).sum(axis=2) * mpc
        if self.group_overhead_cycles:
            cycles = cycles + self.group_overhead_cycles * batch.groups
        return {"mpic_cycles": cycles,
                "energy_uj": cycles * (self.power_mw / (self.freq_mhz * 1e3))}
