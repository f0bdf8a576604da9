"""Hardware cost models for mixed-precision networks (pure numpy, no torch at import)."""

from __future__ import annotations

from hwmodels._layers import MAX_BITS, Layer, LayerTable

__all__ = ["Layer", "LayerTable", "MAX_BITS"]
