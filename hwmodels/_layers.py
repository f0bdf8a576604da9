"""The layer table: plain data describing a model's quantizable layers and its genome layout.

This is the one contract shared by the three packages. ``evomp`` builds it by tracing a
torch model (``evomp.SearchSpace``); ``hwmodels`` and ``surrogates`` consume it without
importing torch or evomp.

Genome layout
-------------
A genome is a row of small integers, each an index into the bit choices (ordinal: a
higher index is a higher bit-width). Weight genes come first, in layer order; then one
activation gene per layer whose activation is not pinned.

* ``granularity="channel"``: one weight gene per output channel of every layer whose
  weights are not pinned.
* ``granularity="layer"``: one weight gene per layer whose weights are not pinned.

Pinned layers hold no genes; their bits are fixed (``Layer.w_pinned``/``a_pinned``).
Excluded layers stay float and are not in the table at all (and are not costed).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

__all__ = ["Layer", "LayerTable", "MAX_BITS"]

MAX_BITS = 16


@dataclass(frozen=True)
class Layer:
    """One quantizable layer (Conv1d, Conv2d incl. depthwise/grouped, or Linear).

    Attributes:
        name: fully qualified module name in the model.
        kind: ``"conv1d"``, ``"conv2d"`` or ``"linear"``.
        in_channels / out_channels: channel counts (features for Linear).
        kernel_size: kernel extent per spatial dim (``()`` for Linear).
        groups: convolution groups (``in_channels`` for depthwise).
        fan_in: weights per output channel, ``in_channels // groups * prod(kernel_size)``.
        macs_per_channel: multiply-accumulates per output channel per sample
            (``fan_in * prod(out spatial)``).
        in_shape / out_shape: per-sample activation shapes (channels first).
        has_bias: whether the layer has a bias (stored at 32 bit).
        w_pinned: fixed weight bits for every channel, or ``None`` if searched.
        a_pinned: fixed input-activation bits, or ``None`` if searched.
        a_signed: whether the input activation is signed (``False`` after a ReLU).
    """

    name: str
    kind: str
    in_channels: int
    out_channels: int
    kernel_size: tuple[int, ...]
    groups: int
    fan_in: int
    macs_per_channel: int
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    has_bias: bool = True
    w_pinned: int | None = None
    a_pinned: int | None = None
    a_signed: bool = True

    @property
    def in_numel(self) -> int:
        return int(np.prod(self.in_shape))

    @property
    def out_numel(self) -> int:
        return int(np.prod(self.out_shape))

    @property
    def macs(self) -> int:
        return self.macs_per_channel * self.out_channels

    @property
    def is_depthwise(self) -> bool:
        return self.groups > 1 and self.groups == self.in_channels


@dataclass(frozen=True)
class LayerTable:
    """Layers plus the genome layout over them; all decoding is vectorized numpy.

    Attributes:
        layers: the quantizable layers in execution order.
        w_choices: weight bit choices, strictly increasing, e.g. ``(0, 2, 4, 8)``.
        a_choices: activation bit choices, strictly increasing, e.g. ``(2, 4, 8)``.
        granularity: ``"channel"`` or ``"layer"``.
    """

    layers: tuple[Layer, ...]
    w_choices: tuple[int, ...]
    a_choices: tuple[int, ...]
    granularity: str = "channel"
    # Derived index arrays, filled in __post_init__.
    _idx: dict[str, np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.layers:
            raise ValueError("a layer table needs at least one layer")
        if self.granularity not in ("channel", "layer"):
            raise ValueError(
                f"granularity must be 'channel' or 'layer', got {self.granularity!r}"
            )
        _check_choices("w_choices", self.w_choices, lo=0)
        _check_choices("a_choices", self.a_choices, lo=1)
        names = [lay.name for lay in self.layers]
        if len(set(names)) != len(names):
            raise ValueError(f"layer names must be unique, got {names}")
        n_ch = np.array([lay.out_channels for lay in self.layers], dtype=np.int64)
        channel_layer = np.repeat(np.arange(len(self.layers)), n_ch)
        layer_start = np.concatenate([[0], np.cumsum(n_ch)])
        w_gene = np.full(channel_layer.shape[0], -1, dtype=np.int64)
        w_fixed = np.zeros(channel_layer.shape[0], dtype=np.int64)
        g = 0
        layer_w_gene_start = np.full(len(self.layers), -1, dtype=np.int64)
        for i, lay in enumerate(self.layers):
            sl = slice(layer_start[i], layer_start[i + 1])
            if lay.w_pinned is not None:
                w_fixed[sl] = lay.w_pinned
                continue
            layer_w_gene_start[i] = g
            if self.granularity == "channel":
                w_gene[sl] = np.arange(g, g + lay.out_channels)
                g += lay.out_channels
            else:
                w_gene[sl] = g
                g += 1
        n_w_genes = g
        a_gene = np.full(len(self.layers), -1, dtype=np.int64)
        a_fixed = np.zeros(len(self.layers), dtype=np.int64)
        for i, lay in enumerate(self.layers):
            if lay.a_pinned is None:
                a_gene[i] = g
                g += 1
            else:
                a_fixed[i] = lay.a_pinned
        self._idx.update(
            channel_layer=channel_layer,
            layer_start=layer_start,
            w_gene=w_gene,
            w_fixed=w_fixed,
            a_gene=a_gene,
            a_fixed=a_fixed,
            layer_w_gene_start=layer_w_gene_start,
            n_w_genes=np.array(n_w_genes),
            n_genes=np.array(g),
        )

    # ------------------------------------------------------------------ sizes
    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def n_channels(self) -> int:
        """Total number of weight output channels over all layers."""
        return int(self._idx["channel_layer"].shape[0])

    @property
    def n_genes(self) -> int:
        return int(self._idx["n_genes"])

    @property
    def n_w_genes(self) -> int:
        return int(self._idx["n_w_genes"])

    @property
    def n_a_genes(self) -> int:
        return self.n_genes - self.n_w_genes

    # --------------------------------------------------------------- indices
    @property
    def channel_layer(self) -> np.ndarray:
        """``(n_channels,)`` int: layer index of every weight channel."""
        return self._idx["channel_layer"]

    @property
    def layer_start(self) -> np.ndarray:
        """``(n_layers + 1,)`` int: offsets of each layer's channels in channel arrays."""
        return self._idx["layer_start"]

    @property
    def w_gene_of_channel(self) -> np.ndarray:
        """``(n_channels,)`` int: gene index of each channel, -1 where pinned."""
        return self._idx["w_gene"]

    @property
    def a_gene_of_layer(self) -> np.ndarray:
        """``(n_layers,)`` int: gene index of each layer's activation, -1 where pinned."""
        return self._idx["a_gene"]

    @property
    def gene_layer(self) -> np.ndarray:
        """``(n_genes,)`` int: layer index of each gene (weight and activation genes)."""
        out = np.empty(self.n_genes, dtype=np.int64)
        w = self.w_gene_of_channel
        m = w >= 0
        out[w[m]] = self.channel_layer[m]
        a = self.a_gene_of_layer
        out[a[a >= 0]] = np.nonzero(a >= 0)[0]
        return out

    @property
    def gene_is_weight(self) -> np.ndarray:
        """``(n_genes,)`` bool: True for weight genes, False for activation genes."""
        return np.arange(self.n_genes) < self.n_w_genes

    @property
    def gene_n_levels(self) -> np.ndarray:
        """``(n_genes,)`` int: number of bit choices of each gene (upper bound + 1)."""
        return np.where(self.gene_is_weight, len(self.w_choices), len(self.a_choices))

    # --------------------------------------------------------------- decoding
    def check_genomes(self, genomes: np.ndarray) -> np.ndarray:
        """Validate a genome batch and return it as a 2-D integer array.

        Args:
            genomes: ``(n, n_genes)`` or ``(n_genes,)`` integer array.

        Raises:
            ValueError: wrong length, non-integer values, or a gene out of range.
        """
        g = np.asarray(genomes)
        if g.ndim == 1:
            g = g[None, :]
        if g.ndim != 2:
            raise ValueError(f"genomes must be (n, {self.n_genes}), got shape {g.shape}")
        if g.shape[1] != self.n_genes:
            raise ValueError(
                f"genome length {g.shape[1]} does not match this space's {self.n_genes} "
                f"genes ({self.n_w_genes} weight + {self.n_a_genes} activation); "
                "build genomes from the same SearchSpace"
            )
        if g.dtype.kind not in "iu":
            if g.dtype.kind == "f" and g.size and np.all(np.mod(g, 1) == 0):
                g = g.astype(np.int64)
            elif g.size:
                raise ValueError(f"genomes must hold integers, got dtype {g.dtype}")
            else:
                g = g.astype(np.int64)
        if g.size:
            hi = self.gene_n_levels
            bad = (g < 0) | (g >= hi[None, :])
            if bad.any():
                r, c = np.argwhere(bad)[0]
                raise ValueError(
                    f"gene {c} of genome {r} is {g[r, c]}, outside 0..{hi[c] - 1} "
                    "(genes are indices into the bit choices)"
                )
        return g

    def weight_bits(self, genomes: np.ndarray) -> np.ndarray:
        """Per-channel weight bits.

        Args:
            genomes: ``(n, n_genes)`` int.

        Returns:
            ``(n, n_channels)`` int64 bit-widths (0 = pruned channel).
        """
        g = self.check_genomes(genomes)
        wg = self.w_gene_of_channel
        choices = np.asarray(self.w_choices, dtype=np.int64)
        safe = np.where(wg >= 0, wg, 0)
        if g.shape[1] == 0:
            return np.broadcast_to(self._idx["w_fixed"], (g.shape[0], self.n_channels)).copy()
        # pinned channels read gene 0 as a placeholder (discarded below): clip it into range
        bits = choices[np.minimum(g[:, safe], len(choices) - 1)]
        return np.where(wg[None, :] >= 0, bits, self._idx["w_fixed"][None, :])

    def act_bits(self, genomes: np.ndarray) -> np.ndarray:
        """Per-layer input-activation bits.

        Args:
            genomes: ``(n, n_genes)`` int.

        Returns:
            ``(n, n_layers)`` int64 bit-widths.
        """
        g = self.check_genomes(genomes)
        ag = self.a_gene_of_layer
        choices = np.asarray(self.a_choices, dtype=np.int64)
        safe = np.where(ag >= 0, ag, 0)
        if g.shape[1] == 0:
            return np.broadcast_to(self._idx["a_fixed"], (g.shape[0], self.n_layers)).copy()
        bits = choices[np.minimum(g[:, safe], len(choices) - 1)]
        return np.where(ag[None, :] >= 0, bits, self._idx["a_fixed"][None, :])

    def decode(self, genomes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(weight_bits (n, n_channels), act_bits (n, n_layers))`` of a genome batch."""
        return self.weight_bits(genomes), self.act_bits(genomes)

    def encode(self, w_bits: np.ndarray, a_bits: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`decode`.

        Args:
            w_bits: ``(n, n_channels)`` int weight bits.
            a_bits: ``(n, n_layers)`` int activation bits.

        Returns:
            ``(n, n_genes)`` int8 genomes.

        Raises:
            ValueError: a bit-width that is not a choice, a pinned layer whose bits differ
                from its pin, or (layer granularity) a layer whose channels differ.
        """
        w = np.atleast_2d(np.asarray(w_bits, dtype=np.int64))
        a = np.atleast_2d(np.asarray(a_bits, dtype=np.int64))
        if w.shape[1] != self.n_channels or a.shape[1] != self.n_layers or w.shape[0] != a.shape[0]:
            raise ValueError(
                f"expected weight bits (n, {self.n_channels}) and activation bits "
                f"(n, {self.n_layers}), got {w.shape} and {a.shape}"
            )
        n = w.shape[0]
        out = np.zeros((n, self.n_genes), dtype=np.int8)
        wg = self.w_gene_of_channel
        pinned_c = wg < 0
        if np.any(w[:, pinned_c] != self._idx["w_fixed"][None, pinned_c]):
            c = int(np.argwhere(np.any(w[:, pinned_c] != self._idx["w_fixed"][pinned_c], 0))[0, 0])
            lay = self.layers[self.channel_layer[pinned_c][c]]
            raise ValueError(f"layer {lay.name!r} is pinned to {lay.w_pinned}-bit weights")
        free = ~pinned_c
        w_idx = _bits_to_index(w[:, free], self.w_choices, "weight")
        if self.granularity == "layer":
            layer_of = self.channel_layer[free]
            # every channel of a layer must share one bit-width
            ref = w_idx[:, np.searchsorted(layer_of, layer_of)]
            if np.any(ref != w_idx):
                bad = self.layers[int(layer_of[np.argwhere(np.any(ref != w_idx, 0))[0, 0]])]
                raise ValueError(
                    f"layer {bad.name!r} has channels at different bit-widths, but this "
                    "space is layer-wise (granularity='layer')"
                )
        out[:, wg[free]] = w_idx
        ag = self.a_gene_of_layer
        pinned_l = ag < 0
        if np.any(a[:, pinned_l] != self._idx["a_fixed"][None, pinned_l]):
            i = int(np.nonzero(pinned_l)[0][np.argwhere(
                np.any(a[:, pinned_l] != self._idx["a_fixed"][pinned_l], 0))[0, 0]])
            raise ValueError(
                f"layer {self.layers[i].name!r} is pinned to "
                f"{self.layers[i].a_pinned}-bit activations"
            )
        out[:, ag[~pinned_l]] = _bits_to_index(a[:, ~pinned_l], self.a_choices, "activation")
        return out

    def uniform(self, w: int, a: int) -> np.ndarray:
        """``(1, n_genes)`` genome with every free weight at ``w`` bits, activations at ``a``.

        Raises:
            ValueError: ``w`` or ``a`` is not among the choices.
        """
        if w not in self.w_choices:
            raise ValueError(f"weight bits {w} not in the choices {self.w_choices}")
        if a not in self.a_choices:
            raise ValueError(f"activation bits {a} not in the choices {self.a_choices}")
        g = np.zeros((1, self.n_genes), dtype=np.int8)
        g[0, : self.n_w_genes] = self.w_choices.index(w)
        g[0, self.n_w_genes :] = self.a_choices.index(a)
        return g

    # ----------------------------------------------------------- persistence
    def to_dict(self) -> dict[str, Any]:
        return {
            "layers": [asdict(lay) for lay in self.layers],
            "w_choices": list(self.w_choices),
            "a_choices": list(self.a_choices),
            "granularity": self.granularity,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LayerTable:
        layers = []
        for ld in d["layers"]:
            ld = dict(ld)
            for k in ("kernel_size", "in_shape", "out_shape"):
                ld[k] = tuple(ld[k])
            layers.append(Layer(**ld))
        return cls(
            layers=tuple(layers),
            w_choices=tuple(d["w_choices"]),
            a_choices=tuple(d["a_choices"]),
            granularity=d.get("granularity", "channel"),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, s: str) -> LayerTable:
        return cls.from_dict(json.loads(s))

    def layer_index(self, name: str) -> int:
        for i, lay in enumerate(self.layers):
            if lay.name == name:
                return i
        raise KeyError(f"no layer named {name!r}; layers are {[x.name for x in self.layers]}")


def _check_choices(what: str, choices: Sequence[int], lo: int) -> None:
    if len(choices) == 0:
        raise ValueError(f"{what} is empty: give at least one bit-width, e.g. (2, 4, 8)")
    if any(not isinstance(b, (int, np.integer)) or isinstance(b, bool) for b in choices):
        raise ValueError(f"{what} must hold integers, got {tuple(choices)}")
    if any(b < lo or b > MAX_BITS for b in choices):
        raise ValueError(f"{what} must lie in {lo}..{MAX_BITS}, got {tuple(choices)}")
    if list(choices) != sorted(set(choices)):
        raise ValueError(
            f"{what} must be strictly increasing without repeats, got {tuple(choices)}"
        )


def _bits_to_index(bits: np.ndarray, choices: Sequence[int], what: str) -> np.ndarray:
    lut = np.full(MAX_BITS + 2, -1, dtype=np.int64)
    lut[list(choices)] = np.arange(len(choices))
    clipped = np.clip(bits, 0, MAX_BITS + 1)
    idx = lut[clipped]
    if np.any(idx < 0) or np.any(bits != clipped):
        bad = int(bits[(idx < 0) | (bits != clipped)][0])
        raise ValueError(f"{what} bit-width {bad} is not one of the choices {tuple(choices)}")
    return idx.astype(np.int8)
