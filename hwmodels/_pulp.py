"""Latency of a PULP-class multi-core RISC-V MCU cluster (GAP8-like or XpulpNN-like).

Per layer and precision group (the channels sharing one weight bit-width, deployed as one
sub-kernel), the model takes

    cycles = max(compute + activation unpack, L2->L1 transfer) + launch

and sums over groups and layers. Transfers overlap compute (double-buffered DMA, as in
DORY-generated code), hence the ``max``.

* compute: group MACs / (cores x per-core MACs per cycle at (activation, weight) bits);
  depthwise layers run ``depthwise_slowdown`` times slower (no input reuse).
* activation unpack: sub-byte activations narrower than the kernel's SIMD width are
  expanded during im2col, a cost proportional to the layer's input size (not to MACs),
  paid by every sub-kernel since each reads the whole input.
* transfer: the group's packed weights, the layer input and the group's share of the
  output, at ``l2_bytes_per_cycle``.
* launch: a fixed cost per sub-kernel (cluster fork/join, DMA and tiling set-up).

Presets (figures from METHODS.md; "estimate" marks figures not taken from a paper):

``gap8`` (default): 8 cores, XpulpV2 8-bit SIMD only. PULP-NN peaks near 15.5-16
MACs/cycle at 8 bit on 8 cores, so 1.95 MACs/cycle/core at 8-bit weights. Sub-byte
weights are unpacked in the inner loop: ~0.73 against ~2.3 MACs per inner-loop
instruction, so 1.95 x 0.73 / 2.3 = 0.62 MACs/cycle/core (about 3x slower). Activations
are always widened to 8 bit in im2col, so sub-byte activations only add unpack cost. The
model is therefore *not* monotone in bits: on compute-bound layers 2-bit and 4-bit
weights are slower than 8-bit ones (the Free Bits observation).

``xpulpnn``: the same cluster with sub-byte SIMD (XpulpNN): ideal 4/8/16 MACs per SIMD
instruction at 8/4/2 bit; 4- and 2-bit kernels run 6-8x faster than unpacking on an
8-bit-only cluster, so 3.9 (6.3x) and 4.9 (7.9x) MACs/cycle/core. A kernel runs at the
wider of its two operands; activations narrower than the weights are unpacked in im2col.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from hwmodels._base import BitBatch, Costs, HardwareModel, _batch_pairs, _table_pairs
from hwmodels._layers import MAX_BITS, LayerTable
from hwmodels._mpic import _parse_rates

__all__ = ["PulpModel", "PULP_PRESETS"]

_BITS = (2, 4, 8)

#: Per-core MACs per cycle keyed by (activation bits, weight bits), and whether an
#: (activation bits, weight bits) kernel must unpack its activations in im2col.
PULP_PRESETS: Mapping[str, dict[str, Any]] = {
    "gap8": {
        "macs_per_cycle": {(a, w): (1.95 if w == 8 else 0.62) for a in _BITS for w in _BITS},
        "unpacks": {(a, w): a < 8 for a in _BITS for w in _BITS},
    },
    "xpulpnn": {
        "macs_per_cycle": {(a, w): {8: 1.95, 4: 3.9, 2: 4.9}[max(a, w)]
                           for a in _BITS for w in _BITS},
        "unpacks": {(a, w): a < w for a in _BITS for w in _BITS},
    },
}


class PulpModel(HardwareModel):
    """Latency on a PULP-class 8-core RISC-V cluster; sub-byte weights can be slower (GAP8 preset).

    See the module docstring for the formula and the sources of every default.
    """

    name: ClassVar[str] = "pulp"
    metrics = {
        "latency_cycles": "cluster cycles per inference (PULP-class MCU)",
        "latency_ms": "milliseconds per inference at freq_mhz (PULP-class MCU)",
    }
    parameters: ClassVar[dict[str, str]] = {
        "preset": "'gap8' (8-bit SIMD only: sub-byte weights unpacked, slower) or "
        "'xpulpnn' (sub-byte SIMD: 4 and 2 bit faster)",
        "cores": "cluster cores (GAP8: 8)",
        "freq_mhz": "cluster clock in MHz (GAP8 datasheet: up to 175)",
        "macs_per_cycle": "override per-core MACs/cycle, {(a_bits, w_bits): rate} "
        "(default from the preset; see PULP_PRESETS)",
        "unpack_cycles_per_element": "cycles per input element to unpack sub-byte "
        "activations in im2col, per core (estimate: bit extract + store)",
        "l2_bytes_per_cycle": "L2->L1 DMA bandwidth in bytes/cycle (GAP8: 64-bit AXI, ~8)",
        "launch_cycles": "fixed cycles per sub-kernel: fork/join, DMA and tiling set-up "
        "(estimate)",
        "depthwise_slowdown": "compute slowdown of depthwise layers, which lack input reuse "
        "(estimate)",
        "last_output_bits": "bits of the last layer's output written back (int32 logits)",
    }
    monotone = frozenset()  # deliberately: GAP8 sub-byte weights can be slower
    prune_monotone = frozenset(metrics)

    def __init__(self, preset: str = "gap8", cores: int = 8, freq_mhz: float = 175.0,
                 macs_per_cycle: Mapping[Any, Any] | None = None,
                 unpack_cycles_per_element: float = 2.0, l2_bytes_per_cycle: float = 8.0,
                 launch_cycles: float = 1000.0, depthwise_slowdown: float = 3.0,
                 last_output_bits: int = 32) -> None:
        if preset not in PULP_PRESETS:
            raise ValueError(f"unknown pulp preset {preset!r}; choose one of {list(PULP_PRESETS)}")
        if not isinstance(cores, (int, np.integer)) or isinstance(cores, bool) or cores < 1:
            raise ValueError(f"cores must be a positive integer, got {cores!r}")
        for k, v, lo in (("freq_mhz", freq_mhz, 0), ("l2_bytes_per_cycle", l2_bytes_per_cycle, 0),
                         ("depthwise_slowdown", depthwise_slowdown, 0)):
            if not isinstance(v, (int, float)) or not v > lo:
                raise ValueError(f"{k} must be a positive number, got {v!r}")
        for k, v in (("unpack_cycles_per_element", unpack_cycles_per_element),
                     ("launch_cycles", launch_cycles), ("last_output_bits", last_output_bits)):
            if not isinstance(v, (int, float)) or v < 0:
                raise ValueError(f"{k} must be a number >= 0, got {v!r}")
        super().__init__(
            preset=preset, cores=cores, freq_mhz=freq_mhz, macs_per_cycle=macs_per_cycle,
            unpack_cycles_per_element=unpack_cycles_per_element,
            l2_bytes_per_cycle=l2_bytes_per_cycle, launch_cycles=launch_cycles,
            depthwise_slowdown=depthwise_slowdown, last_output_bits=last_output_bits,
        )
        p = PULP_PRESETS[preset]
        rates = dict(p["macs_per_cycle"])
        unpacks = dict(p["unpacks"])
        if macs_per_cycle is not None:
            extra = _parse_rates(macs_per_cycle)
            rates.update(extra)
            for a, w in extra:  # pairs outside the preset: widen activations to the kernel
                unpacks.setdefault((a, w), a < max(a, w))
        self.preset = preset
        self.rates = rates
        self.cores = int(cores)
        self.freq_mhz = float(freq_mhz)
        self.unpack_cycles_per_element = float(unpack_cycles_per_element)
        self.l2_bytes_per_cycle = float(l2_bytes_per_cycle)
        self.launch_cycles = float(launch_cycles)
        self.depthwise_slowdown = float(depthwise_slowdown)
        self.last_output_bits = int(last_output_bits)
        cpm = np.full((MAX_BITS + 1, MAX_BITS + 1), np.nan)  # cluster cycles per MAC
        unpack = np.zeros((MAX_BITS + 1, MAX_BITS + 1))
        cpm[:, 0] = 0.0
        for (a, w), r in rates.items():
            cpm[a, w] = 1.0 / (r * self.cores)
            unpack[a, w] = float(unpacks.get((a, w), False))
        self._cpm = cpm
        self._unpack = unpack

    # --------------------------------------------------------------- validation
    def _raise_missing(self, pairs: set[tuple[int, int]]) -> None:
        missing = sorted(p for p in pairs if np.isnan(self._cpm[p]))
        if missing:
            raise ValueError(
                f"the pulp model ({self.preset}) has no MACs-per-cycle figure for "
                f"(activation bits, weight bits) {missing}; it covers {sorted(self.rates)}. "
                "Restrict the bit choices, or pass macs_per_cycle={(a, w): per-core rate}"
            )

    def _check_table(self, table: LayerTable) -> None:
        self._raise_missing(set().union(set(), *_table_pairs(table).values()))

    def _check_batch(self, batch: BitBatch) -> None:
        self._raise_missing(set().union(set(), *_batch_pairs(batch).values()))

    # ------------------------------------------------------------------ costing
    def _groups(self, batch: BitBatch) -> dict[str, np.ndarray]:
        """Per (genome, layer, group) cycles ``(n, L, K)`` of each term."""
        layers = batch.table.layers
        f = lambda attr: np.array([getattr(x, attr) for x in layers], dtype=np.float64)  # noqa: E731
        mpc, fan_in = f("macs_per_channel"), f("fan_in")
        in_numel, out_numel = f("in_numel"), f("out_numel")
        out_ch = np.maximum(f("out_channels"), 1.0)
        dw = np.array([self.depthwise_slowdown if x.is_depthwise else 1.0 for x in layers])
        a = batch.a_bits[:, :, None]  # (n, L, 1)
        w = batch.levels[None, None, :]  # (1, 1, K)
        cnt = batch.counts.astype(np.float64)
        used = (batch.counts > 0) & (w > 0)
        cpm = np.where(used, self._cpm[a, w], 0.0)
        compute = cnt * (mpc * dw)[None, :, None] * cpm
        unpack = self._unpack[a, w] * (in_numel[None, :, None] * self.unpack_cycles_per_element
                                      / self.cores)
        out_bits = batch.out_a_bits(self.last_output_bits)[:, :, None]
        moved = (cnt * fan_in[None, :, None] * w + in_numel[None, :, None] * a
                 + out_numel[None, :, None] * (cnt / out_ch[None, :, None]) * out_bits) / 8.0
        transfer = moved / self.l2_bytes_per_cycle
        busy = compute + unpack
        return {
            "compute": np.where(used, busy, 0.0),
            "transfer": np.where(used, transfer, 0.0),
            "total": np.where(used, np.maximum(busy, transfer) + self.launch_cycles, 0.0),
        }

    def _layer_cost(self, batch: BitBatch) -> Costs:
        cyc = self._groups(batch)["total"].sum(axis=2)
        return {"latency_cycles": cyc, "latency_ms": cyc / (self.freq_mhz * 1e3)}

    def _layer_extra(self, batch: BitBatch) -> Costs:
        g = self._groups(batch)
        return {
            "compute_cycles": g["compute"].sum(axis=2),
            "transfer_cycles": g["transfer"].sum(axis=2),
            "launch_cycles": self.launch_cycles * batch.groups,
        }
