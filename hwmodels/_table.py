"""Measured figures from a user's CSV or JSON table, for any metric.

File format (CSV; JSON holds the same records)::

    layer,a_bits,w_bits,latency_us,energy_nj
    conv1,8,8,120.5,40.1
    conv1,8,4,150.2,45.0
    conv1d:32x40->64x20:k3:g1,8,8,80.0,22.0

``layer`` is a layer name or a geometry key (:func:`geometry_key`), so one measurement
can serve every layer of the same shape; names win over geometry. Each row is the
figure of the *whole* layer with every channel at ``w_bits`` and its input at ``a_bits``.
JSON: a list of such records, or ``{"units": {metric: unit}, "entries": [records]}``.

A layer whose channels hold several precisions costs the sum over its precision groups
of the table value scaled by the group's share of the layer's channels, plus
``group_overhead`` for every group beyond the first (the measured figure already
contains one launch). Pruned channels cost nothing.
"""

from __future__ import annotations

import csv
import json
import math
import os
import weakref
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from hwmodels._base import BitBatch, Costs, HardwareModel, _batch_pairs, _table_pairs
from hwmodels._layers import MAX_BITS, Layer, LayerTable

__all__ = ["TableModel", "geometry_key"]

_KEYS = ("layer", "a_bits", "w_bits")


def geometry_key(layer: Layer) -> str:
    """Shape key of a layer, e.g. ``"conv1d:32x40->64x20:k3:g1"`` or ``"linear:640->10"``.

    Rows of a measurement table may use it instead of a layer name.
    """
    shape = lambda s: "x".join(str(int(d)) for d in s)  # noqa: E731
    key = f"{layer.kind}:{shape(layer.in_shape)}->{shape(layer.out_shape)}"
    if layer.kind != "linear":
        key += f":k{shape(layer.kernel_size)}:g{layer.groups}"
    return key


def _read(path: str | os.PathLike[str]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    p = os.fspath(path)
    if not os.path.exists(p):
        raise ValueError(f"measurement table {p!r} does not exist")
    if p.lower().endswith(".json"):
        with open(p) as f:
            try:
                doc = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"measurement table {p!r} is not valid JSON: {e}") from e
        if isinstance(doc, Mapping):
            if "entries" not in doc:
                raise ValueError(f"{p!r}: a JSON table is a list of records or "
                                 "{'units': {...}, 'entries': [...]}")
            return list(doc["entries"]), dict(doc.get("units", {}))
        return list(doc), {}
    if p.lower().endswith(".csv"):
        with open(p, newline="") as f:
            return [dict(r) for r in csv.DictReader(f)], {}
    raise ValueError(f"measurement table {p!r} must end in .csv or .json")


class TableModel(HardwareModel):
    """Measured per-layer figures from a CSV/JSON table keyed by layer and (a bits, w bits).

    Metrics are the table's columns besides ``layer``, ``a_bits`` and ``w_bits``. Every
    (layer, a_bits, w_bits) the search can reach must be present; all missing entries are
    listed in one error when the table meets the layer table (``hwmodels.get("table",
    table=..., path=...)``), not mid-search.
    """

    name: ClassVar[str] = "table"
    metrics: Mapping[str, str] = {}
    parameters: ClassVar[dict[str, str]] = {
        "path": "CSV or JSON file of measured figures (columns layer,a_bits,w_bits,<metrics>)",
        "data": "the same records in memory (a list of dicts), instead of path",
        "group_overhead": "added per precision group beyond the first, in the metric's unit "
        "(a number for every metric, or {metric: value})",
    }
    prune_monotone = frozenset()

    def __init__(self, path: str | os.PathLike[str] | None = None,
                 data: Sequence[Mapping[str, Any]] | None = None,
                 group_overhead: float | Mapping[str, float] = 0.0) -> None:
        if (path is None) == (data is None):
            raise ValueError("the table model needs exactly one of path= (CSV/JSON file) "
                             "or data= (list of records)")
        super().__init__(path=path, data=data, group_overhead=group_overhead)
        records: list[Any]
        if path is not None:
            records, units = _read(path)
            source = os.fspath(path)
        else:
            records, units, source = list(data or []), {}, "data"
        self.source = source
        self._entries, names = self._parse(records)
        self.metrics = {m: units.get(m, f"measured, from {source}") for m in names}
        if isinstance(group_overhead, Mapping):
            unknown = set(group_overhead) - set(names)
            if unknown:
                raise ValueError(f"group_overhead names {sorted(unknown)}, not metrics of "
                                 f"{source} ({names})")
            over = {m: float(group_overhead.get(m, 0.0)) for m in names}
        else:
            over = {m: float(group_overhead) for m in names}
        if any(not v >= 0 for v in over.values()):
            raise ValueError(f"group_overhead must be >= 0, got {group_overhead!r}")
        self.group_overhead = over
        self.prune_monotone = frozenset(names)
        self._lut: tuple[weakref.ref[LayerTable], dict[str, np.ndarray]] | None = None
        self.monotone = frozenset()  # decided per layer table in _check_table

    def _parse(self, records: list[Any]) -> tuple[dict[str, dict[tuple[int, int], dict]], list]:
        if not records:
            raise ValueError(f"measurement table {self.source if hasattr(self, 'source') else ''}"
                             " has no rows")
        names: list[str] = []
        for r in records:
            if not isinstance(r, Mapping):
                raise ValueError(f"each measurement record must be a mapping, got {r!r}")
            for k in r:
                if k not in _KEYS and k not in names:
                    names.append(str(k))
        if not names:
            raise ValueError("the measurement table has no metric column besides "
                             "layer, a_bits, w_bits")
        entries: dict[str, dict[tuple[int, int], dict[str, float]]] = {}
        for i, r in enumerate(records, 1):
            miss = [k for k in _KEYS if k not in r or r[k] in ("", None)]
            if miss:
                raise ValueError(f"measurement row {i} lacks {miss}: {dict(r)}")
            try:
                a, w = int(r["a_bits"]), int(r["w_bits"])
            except (TypeError, ValueError) as e:
                raise ValueError(f"measurement row {i}: a_bits/w_bits must be integers, "
                                 f"got {r['a_bits']!r}, {r['w_bits']!r}") from e
            if not (1 <= a <= MAX_BITS and 1 <= w <= MAX_BITS):
                raise ValueError(f"measurement row {i}: bits ({a}, {w}) outside 1..{MAX_BITS} "
                                 "(pruned channels cost nothing and need no row)")
            vals: dict[str, float] = {}
            for m in names:
                v = r.get(m)
                if v in ("", None):
                    continue
                try:
                    fv = float(v)
                except (TypeError, ValueError) as e:
                    raise ValueError(f"measurement row {i}: {m}={v!r} is not a number") from e
                if not math.isfinite(fv) or fv < 0:
                    raise ValueError(f"measurement row {i}: {m}={v!r} must be finite and >= 0")
                vals[m] = fv
            slot = entries.setdefault(str(r["layer"]), {})
            if (a, w) in slot and set(slot[(a, w)]) & set(vals):
                raise ValueError(f"measurement row {i} repeats layer {r['layer']!r} at "
                                 f"a_bits={a}, w_bits={w}; keep one row per entry")
            slot.setdefault((a, w), {}).update(vals)
        return entries, names

    # --------------------------------------------------------------- validation
    def _check_table(self, table: LayerTable) -> None:
        luts = self._build(table)
        missing = []
        for i, pairs in _table_pairs(table).items():
            for a, w in sorted(pairs):
                lacking = [m for m in self.metrics if np.isnan(luts[m][i, a, w])]
                if lacking:
                    missing.append((table.layers[i], a, w, lacking))
        self._raise_missing(missing)
        self._lut = (weakref.ref(table), luts)
        mono = all(v == 0 for v in self.group_overhead.values()) and all(
            _nondecreasing(luts[m][i], pairs)
            for m in self.metrics for i, pairs in _table_pairs(table).items()
        )
        self.monotone = frozenset(self.metrics) if mono else frozenset()

    def _check_batch(self, batch: BitBatch) -> None:
        luts = self._luts(batch.table)
        missing = []
        for i, pairs in _batch_pairs(batch).items():
            for a, w in sorted(pairs):
                lacking = [m for m in self.metrics if np.isnan(luts[m][i, a, w])]
                if lacking:
                    missing.append((batch.table.layers[i], a, w, lacking))
        self._raise_missing(missing)

    def _raise_missing(self, missing: list[tuple[Layer, int, int, list[str]]]) -> None:
        if not missing:
            return
        lines = [
            f"  {lay.name} ({geometry_key(lay)}): a_bits={a}, w_bits={w}"
            + ("" if len(ms) == len(self.metrics) else f" [{', '.join(ms)}]")
            for lay, a, w, ms in missing
        ]
        raise ValueError(
            f"the measurement table {self.source} lacks {len(missing)} entr"
            f"{'y' if len(missing) == 1 else 'ies'} this search can reach:\n"
            + "\n".join(lines)
            + "\nadd rows keyed by layer name or geometry key, or restrict the bit choices"
        )

    def _build(self, table: LayerTable) -> dict[str, np.ndarray]:
        luts = {m: np.full((table.n_layers, MAX_BITS + 1, MAX_BITS + 1), np.nan)
                for m in self.metrics}
        for i, lay in enumerate(table.layers):
            # geometry rows first, so that rows keyed by name override them
            for key in (geometry_key(lay), lay.name):
                for (a, w), vals in self._entries.get(key, {}).items():
                    for m, v in vals.items():
                        luts[m][i, a, w] = v
        return luts

    def _luts(self, table: LayerTable) -> dict[str, np.ndarray]:
        if self._lut is not None and self._lut[0]() is table:
            return self._lut[1]
        luts = self._build(table)
        self._lut = (weakref.ref(table), luts)
        return luts

    # ------------------------------------------------------------------ costing
    def _layer_cost(self, batch: BitBatch) -> Costs:
        luts = self._luts(batch.table)
        out_ch = np.array([max(x.out_channels, 1) for x in batch.table.layers], dtype=np.float64)
        lidx = np.arange(batch.table.n_layers)[None, :, None]
        a = batch.a_bits[:, :, None]
        w = batch.levels[None, None, :]
        used = (batch.counts > 0) & (w > 0)
        share = batch.counts / out_ch[None, :, None]
        extra = np.maximum(batch.groups - 1, 0)
        out = {}
        for m in self.metrics:
            v = np.where(used, luts[m][lidx, a, w], 0.0)
            out[m] = (v * share).sum(axis=2) + self.group_overhead[m] * extra
        return out


def _nondecreasing(lut: np.ndarray, pairs: set[tuple[int, int]]) -> bool:
    return all(
        lut[a1, w1] <= lut[a2, w2]
        for a1, w1 in pairs for a2, w2 in pairs if a1 <= a2 and w1 <= w2
    )
