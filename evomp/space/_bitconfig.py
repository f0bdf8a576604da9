"""BitConfig: a bit-width per weight output channel and per activation, keyed by module name."""

from __future__ import annotations

import json
import numbers
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np

from evomp._errors import EvompError
from hwmodels import MAX_BITS

__all__ = ["BitConfig"]


def _bits(where: str, b: Any) -> int:
    """An integer bit-width (Python or numpy integer); floats, bools and strings refused."""
    if isinstance(b, (bool, np.bool_)) or not isinstance(b, numbers.Integral):
        raise EvompError(
            f"{where} holds {b!r} ({type(b).__name__}): bit-widths are integers, e.g. 8"
        )
    return int(b)


@dataclass(frozen=True)
class BitConfig:
    """A full mixed-precision configuration.

    Attributes:
        weights: module name -> bits of each output channel (0 = pruned channel).
        activations: module name -> bits of the layer's input activation.
    """

    weights: Mapping[str, tuple[int, ...]]
    activations: Mapping[str, int]

    def __post_init__(self) -> None:
        if not isinstance(self.weights, Mapping) or not isinstance(self.activations, Mapping):
            raise EvompError("BitConfig takes mappings: weights {layer: [bits per output "
                             "channel]} and activations {layer: bits}")
        w: dict[str, tuple[int, ...]] = {}
        for name, bits in dict(self.weights).items():
            if isinstance(bits, (str, bytes)) or not isinstance(bits, Iterable):
                raise EvompError(
                    f"weights[{name!r}] must be a sequence of integer bit-widths, one per "
                    f"output channel (e.g. [8, 8, 4]), got {bits!r}"
                )
            t = tuple(_bits(f"weights[{name!r}]", b) for b in bits)
            if not t:
                raise EvompError(f"weights[{name!r}] is empty: give one bit-width per channel")
            bad = [b for b in t if b < 0 or b > MAX_BITS]
            if bad:
                raise EvompError(f"weights[{name!r}] has bit-widths {bad} outside 0..{MAX_BITS}")
            w[name] = t
        a: dict[str, int] = {}
        for name, b in dict(self.activations).items():
            v = _bits(f"activations[{name!r}]", b)
            if v < 1 or v > MAX_BITS:
                raise EvompError(f"activations[{name!r}] = {b} is outside 1..{MAX_BITS}")
            a[name] = v
        object.__setattr__(self, "weights", MappingProxyType(w))
        object.__setattr__(self, "activations", MappingProxyType(a))

    def check_matches(self, layer_names: Sequence[str], out_channels: Sequence[int]) -> None:
        """Check that this configuration is for the layers ``layer_names`` (in any order)
        with ``out_channels`` output channels each.

        Raises:
            EvompError: a layer missing or unknown, or a channel count that differs.
        """
        names = list(layer_names)
        for what, d in (("weights", self.weights), ("activations", self.activations)):
            missing = [n for n in names if n not in d]
            extra = [n for n in d if n not in names]
            if missing or extra:
                parts = ([f"lacks layers {missing}"] if missing else []) + (
                    [f"names unknown layers {extra}"] if extra else [])
                raise EvompError(
                    f"BitConfig does not match the model: {what} {'; '.join(parts)} "
                    f"(quantized layers are {names})"
                )
        for name, n_out in zip(names, out_channels, strict=True):
            if len(self.weights[name]) != n_out:
                raise EvompError(
                    f"BitConfig does not match the model: weights[{name!r}] has "
                    f"{len(self.weights[name])} channels, the layer has {n_out}; give one "
                    "bit-width per output channel"
                )

    def to_dict(self) -> dict[str, Any]:
        return {
            "weights": {k: list(v) for k, v in self.weights.items()},
            "activations": dict(self.activations),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> BitConfig:
        unknown = set(d) - {"weights", "activations"}
        if unknown or "weights" not in d or "activations" not in d:
            raise ValueError(
                "a BitConfig dict needs exactly the keys 'weights' and 'activations'"
                + (f"; unknown keys {sorted(unknown)}" if unknown else "")
            )
        return cls(weights=d["weights"], activations=d["activations"])

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_json(cls, s: str) -> BitConfig:
        return cls.from_dict(json.loads(s))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BitConfig):
            return NotImplemented
        return dict(self.weights) == dict(other.weights) and dict(self.activations) == dict(
            other.activations
        )

    def __hash__(self) -> int:
        return hash(self.to_json())
