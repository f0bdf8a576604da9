"""SearchSpace: trace a model once, record its quantizable layers and the genome layout."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from evomp._errors import EvompError
from evomp.space._bitconfig import BitConfig
from hwmodels import MAX_BITS, Layer, LayerTable

__all__ = [
    "SearchSpace",
    "QUANTIZABLE",
    "parse_pin",
]

#: the layer types a space traces (one gene per output channel, one per input activation)
QUANTIZABLE = (nn.Conv1d, nn.Conv2d, nn.Linear)

PinValue = int | tuple[int, int] | Sequence[int]


def _as_bits(value: Any) -> int | None:
    """``value`` as an int if it is an integer number (``8``, ``np.int8(8)``, ``8.0``)."""
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return int(value)
    return None


def _bit_choices(key: str, values: Sequence[Any]) -> tuple[int, ...]:
    """Bit choices as ints; non-integers are an error, never truncated."""
    if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, np.ndarray)):
        raise EvompError(f"{key} must be a list of integer bit-widths, e.g. [2, 4, 8], "
                         f"got {values!r}")
    out = [_as_bits(b) for b in values]
    bad = [b for b, o in zip(values, out, strict=True) if o is None]
    if bad:
        raise EvompError(
            f"{key} must hold integer bit-widths, got non-integers {bad} in {list(values)}; "
            "give whole numbers of bits, e.g. [0, 2, 4, 8]"
        )
    return tuple(o for o in out if o is not None)


def parse_pin(name: str, v: Any) -> tuple[int | None, int | None]:
    """A pin is ``8`` (weights and activation), ``[w, a]``, or ``{w=.., a=..}``.

    Raises:
        EvompError: not one of these forms, non-integer bits, or bits out of range.
    """
    hint = "e.g. 8, [8, 8] or {w = 8, a = 8}"
    w: Any
    a: Any
    if isinstance(v, Mapping):
        extra = set(v) - {"w", "a"}
        if extra:
            raise EvompError(f"pin[{name!r}] accepts keys 'w' and 'a', not {sorted(extra)}")
        if not v:
            raise EvompError(f"pin[{name!r}] is empty; give bits, {hint}")
        w, a = v.get("w"), v.get("a")
    elif isinstance(v, Sequence) and not isinstance(v, (str, bytes)) and len(v) == 2:
        w, a = v[0], v[1]
    elif _as_bits(v) is not None:
        w = a = v
    else:
        raise EvompError(f"pin[{name!r}] must be bits, {hint}, got {v!r}")
    wi = None if w is None else _as_bits(w)
    ai = None if a is None else _as_bits(a)
    if (w is not None and wi is None) or (a is not None and ai is None):
        raise EvompError(f"pin[{name!r}] must hold integer bits, {hint}, got {v!r}")
    if wi is not None and not 0 <= wi <= MAX_BITS:
        raise EvompError(f"pin[{name!r}] weight bits {wi} outside 0..{MAX_BITS}")
    if ai is not None and not 1 <= ai <= MAX_BITS:
        raise EvompError(f"pin[{name!r}] activation bits {ai} outside 1..{MAX_BITS}")
    return wi, ai


class SearchSpace:
    """The quantizable layers of a model and the genome layout over them.

    Build it with :meth:`from_model`. All genome conversions are vectorized over the batch.

    Attributes:
        table: the plain-data :class:`hwmodels.LayerTable` (what hwmodels and surrogates read).
    """

    def __init__(self, table: LayerTable) -> None:
        self.table = table

    # -------------------------------------------------------------- building
    @classmethod
    def from_model(
        cls,
        model: nn.Module,
        example_input: torch.Tensor,
        w_bits: Sequence[int] = (0, 2, 4, 8),
        a_bits: Sequence[int] = (2, 4, 8),
        granularity: str = "channel",
        pin: Mapping[str, PinValue] | None = None,
        exclude: Sequence[str] = (),
    ) -> SearchSpace:
        """Trace ``model`` once on ``example_input`` (with its batch dimension).

        Args:
            model: a float ``nn.Module`` holding Conv1d/Conv2d/Linear layers.
            example_input: a batch the model accepts, e.g. ``(8, 1, 40)``.
            w_bits: weight bit choices per channel (0 = pruned), e.g. ``(0, 2, 4, 8)``.
            a_bits: activation bit choices per layer, e.g. ``(2, 4, 8)``.
            granularity: ``"channel"`` (a gene per output channel) or ``"layer"``.
            pin: module name -> fixed bits (``8``, ``[w, a]`` or ``{"w": 8}``); pinned
                parts hold no genes.
            exclude: module names left in float and out of the search and the costs.

        Raises:
            EvompError: no quantizable layer, an unknown pinned/excluded name, bad bits
                (non-integer bit choices included: ``2.5`` is never truncated to 2).
        """
        w_choices = _bit_choices("w_bits", w_bits)
        a_choices = _bit_choices("a_bits", a_bits)
        pin = dict(pin or {})
        if isinstance(exclude, str):
            raise EvompError(f"exclude must be a list of module names, got {exclude!r}")
        exclude = list(exclude)
        names = {n for n, _ in model.named_modules()}
        quantizable = [n for n, m in model.named_modules() if isinstance(m, QUANTIZABLE)]
        for what, keys in (("pin", list(pin)), ("exclude", exclude)):
            unknown = [k for k in keys if k not in names]
            if unknown:
                raise EvompError(
                    f"{what} names {unknown} not in the model; quantizable layers are {quantizable}"
                )
            notq = [k for k in keys if k in names and k not in quantizable]
            if notq:
                raise EvompError(
                    f"{what} names {notq} that are not Conv1d/Conv2d/Linear layers; "
                    f"quantizable layers are {quantizable}"
                )
        both = set(pin) & set(exclude)
        if both:
            raise EvompError(f"layers {sorted(both)} are both pinned and excluded; pick one")
        for k, v in pin.items():
            parse_pin(k, v)  # bad pin values fail before tracing
        records: dict[str, dict[str, Any]] = {}
        order: list[str] = []
        hooks = []

        def hook(name: str) -> Callable[..., None]:
            def fn(mod: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
                if name in records:
                    records[name]["calls"] += 1
                    return
                order.append(name)
                records[name] = {
                    "in_shape": tuple(inp[0].shape[1:]),
                    "out_shape": tuple(out.shape[1:]),
                    "signed": bool((inp[0] < 0).any()),
                    "calls": 1,
                }

            return fn

        for n, m in model.named_modules():
            if isinstance(m, QUANTIZABLE) and n not in exclude:
                hooks.append(m.register_forward_hook(hook(n)))
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                model(example_input)
        finally:
            for h in hooks:
                h.remove()
            model.train(was_training)
        if not order:
            raise EvompError(
                "the model has no quantizable layer reached by the example input "
                "(evomp quantizes nn.Conv1d, nn.Conv2d and nn.Linear)"
                + (f"; excluded: {exclude}" if exclude else "")
            )
        reused = [n for n in order if records[n]["calls"] > 1]
        if reused:
            raise EvompError(
                f"modules {reused} are called more than once per forward pass; give each "
                "call its own module, or exclude them"
            )
        mods = dict(model.named_modules())
        layers = []
        for n in order:
            m, r = mods[n], records[n]
            wp, ap = parse_pin(n, pin[n]) if n in pin else (None, None)
            ks: tuple[int, ...]
            if isinstance(m, nn.Linear):
                kind, ks, groups = "linear", (), 1
                fan_in = m.in_features
                positions = math.prod(r["out_shape"][:-1]) if len(r["out_shape"]) > 1 else 1
                in_c, out_c = m.in_features, m.out_features
            else:
                kind = "conv1d" if isinstance(m, nn.Conv1d) else "conv2d"
                ks, groups = tuple(int(k) for k in m.kernel_size), int(m.groups)
                in_c, out_c = m.in_channels, m.out_channels
                fan_in = in_c // groups * math.prod(ks)
                positions = math.prod(r["out_shape"][1:])
            layers.append(
                Layer(
                    name=n,
                    kind=kind,
                    in_channels=int(in_c),
                    out_channels=int(out_c),
                    kernel_size=ks,
                    groups=groups,
                    fan_in=int(fan_in),
                    macs_per_channel=int(fan_in * positions),
                    in_shape=r["in_shape"],
                    out_shape=r["out_shape"],
                    has_bias=m.bias is not None,
                    w_pinned=wp,
                    a_pinned=ap,
                    a_signed=r["signed"],
                )
            )
        try:
            table = LayerTable(
                layers=tuple(layers),
                w_choices=w_choices,
                a_choices=a_choices,
                granularity=granularity,
            )
        except ValueError as e:
            raise EvompError(str(e)) from e
        return cls(table)

    def with_granularity(self, granularity: str) -> SearchSpace:
        """The same layers and choices at another granularity (``"channel"``/``"layer"``)."""
        t = self.table
        return SearchSpace(LayerTable(t.layers, t.w_choices, t.a_choices, granularity))

    # ------------------------------------------------------------- properties
    @property
    def layers(self) -> tuple[Layer, ...]:
        return self.table.layers

    @property
    def layer_names(self) -> list[str]:
        return [lay.name for lay in self.table.layers]

    @property
    def n_genes(self) -> int:
        return self.table.n_genes

    @property
    def w_bits(self) -> tuple[int, ...]:
        return self.table.w_choices

    @property
    def a_bits(self) -> tuple[int, ...]:
        return self.table.a_choices

    @property
    def granularity(self) -> str:
        return self.table.granularity

    # ---------------------------------------------------------------- genomes
    def check(self, genomes: np.ndarray) -> np.ndarray:
        """Validated ``(n, n_genes)`` int array (raises :class:`EvompError`)."""
        try:
            return self.table.check_genomes(genomes)
        except ValueError as e:
            raise EvompError(str(e)) from e

    def decode(self, genomes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(w_bits (n, n_channels), a_bits (n, n_layers))`` for a genome batch."""
        self.check(genomes)
        return self.table.decode(genomes)

    def uniform(self, w: int, a: int) -> np.ndarray:
        """``(1, n_genes)`` genome: all free weights at ``w`` bits, activations at ``a``."""
        try:
            return self.table.uniform(w, a)
        except ValueError as e:
            raise EvompError(str(e)) from e

    def random(self, n: int, rng: np.random.Generator | int | None = None) -> np.ndarray:
        """``(n, n_genes)`` int8 genomes drawn uniformly over the choices."""
        rng = np.random.default_rng(rng)
        hi = self.table.gene_n_levels
        return (rng.random((n, self.n_genes)) * hi[None, :]).astype(np.int8)

    def to_configs(self, genomes: np.ndarray) -> list[BitConfig]:
        """One :class:`BitConfig` per genome row (bits decoded for the whole batch at once)."""
        wb, ab = self.decode(genomes)
        starts = self.table.layer_start
        per_layer = [wb[:, starts[i] : starts[i + 1]].tolist() for i in range(len(self.layers))]
        names = self.layer_names
        ab_l = ab.tolist()
        return [
            BitConfig(
                weights={n: tuple(per_layer[i][r]) for i, n in enumerate(names)},
                activations=dict(zip(names, ab_l[r])),
            )
            for r in range(wb.shape[0])
        ]

    def to_config(self, genome: np.ndarray) -> BitConfig:
        return self.to_configs(np.asarray(genome).reshape(1, -1))[0]

    def config_bits(self, configs: Sequence[BitConfig]) -> tuple[np.ndarray, np.ndarray]:
        """Decoded bit arrays of configurations, checked against this space's layers."""
        names = self.layer_names
        outs = [lay.out_channels for lay in self.layers]
        for c in configs:
            c.check_matches(names, outs)
        wb = np.array(
            [np.concatenate([c.weights[n] for n in names]) for c in configs], dtype=np.int64
        ).reshape(len(configs), self.table.n_channels)
        ab = np.array([[c.activations[n] for n in names] for c in configs], dtype=np.int64)
        return wb, ab.reshape(len(configs), len(names))

    def from_configs(self, configs: Sequence[BitConfig]) -> np.ndarray:
        """``(n, n_genes)`` genomes of configurations (inverse of :meth:`to_configs`)."""
        wb, ab = self.config_bits(configs)
        try:
            return self.table.encode(wb, ab)
        except ValueError as e:
            raise EvompError(str(e)) from e

    # ----------------------------------------------------------------- report
    def describe(self) -> list[dict[str, Any]]:
        """One row per layer for printing (``evomp space``)."""
        t = self.table
        rows = []
        for i, lay in enumerate(t.layers):
            n_w = int((t.w_gene_of_channel[t.layer_start[i] : t.layer_start[i + 1]] >= 0).any())
            rows.append(
                {
                    "name": lay.name,
                    "kind": lay.kind,
                    "in": lay.in_channels,
                    "out": lay.out_channels,
                    "kernel": "x".join(map(str, lay.kernel_size)) or "-",
                    "groups": lay.groups,
                    "fan_in": lay.fan_in,
                    "macs": lay.macs,
                    "in_shape": "x".join(map(str, lay.in_shape)),
                    "out_shape": "x".join(map(str, lay.out_shape)),
                    "w_genes": (lay.out_channels if t.granularity == "channel" else 1) * n_w,
                    "a_gene": int(lay.a_pinned is None),
                    "pinned": ""
                    if lay.w_pinned is None and lay.a_pinned is None
                    else f"w={lay.w_pinned} a={lay.a_pinned}",
                }
            )
        return rows

    def to_dict(self) -> dict[str, Any]:
        return self.table.to_dict()

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SearchSpace:
        return cls(LayerTable.from_dict(dict(d)))
