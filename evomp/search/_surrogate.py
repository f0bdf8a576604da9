"""The search's accuracy surrogate: genome features, then a named predictor."""

from __future__ import annotations

from typing import Any

from evomp._errors import EvompError

__all__ = ["build_surrogate"]


def build_surrogate(name: str, table: Any, profile: Any, seed: int) -> Any:
    """A scikit-learn pipeline: genome features, then the named predictor."""
    from sklearn.pipeline import make_pipeline

    import surrogates

    predictors = {
        "auto": lambda: surrogates.AutoSurrogate(),
        "gp": lambda: surrogates.GPSurrogate(),
        "forest": lambda: surrogates.ForestSurrogate(random_state=seed),
        "boosting": lambda: surrogates.BoostingSurrogate(random_state=seed),
        "hawq": lambda: surrogates.HawqProxy(),
    }
    if name not in predictors:
        raise EvompError(f"search.surrogate must be one of {sorted(predictors)}, got {name!r}")
    return make_pipeline(surrogates.GenomeFeatures(table, profile), predictors[name]())
