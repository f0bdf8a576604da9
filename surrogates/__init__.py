"""surrogates: sensitivity analysis and scikit-learn accuracy predictors.

Knows nothing of search: what it needs from the engine (the layer list, the weight and
activation quantizers) is passed in; genome layouts come from :class:`hwmodels.LayerTable`.

Typical use::

    prof = compute_sensitivity(model, layers, batches, loss_fn,
                               quantize_weight=..., quantize_act=...,
                               w_choices=(0, 2, 4, 8), a_choices=(2, 4, 8))
    prof.save(run_dir / "sensitivity.npz")
    model = make_pipeline(GenomeFeatures(table, prof), AutoSurrogate())
    model.fit(genomes, accuracies)
    mean, std = model.predict(pool, return_std=True)
"""

from __future__ import annotations

from surrogates._design import sensitivity_order_genome
from surrogates._features import HAWQ_TOTAL, GenomeFeatures, channel_terms
from surrogates._predictors import (
    AutoSurrogate,
    BoostingSurrogate,
    EnsembleSurrogate,
    ForestSurrogate,
    GPSurrogate,
    HawqProxy,
    default_candidates,
)
from surrogates._quality import pooled_rank_quality, rank_quality
from surrogates._select import expected_hvi, select_diverse, select_ehvi, select_uncertain
from surrogates._sensitivity import (
    METHODS,
    SensitivityProfile,
    compute_sensitivity,
    fingerprint,
    hutchinson_diagonal,
)

__all__ = [
    "AutoSurrogate",
    "BoostingSurrogate",
    "EnsembleSurrogate",
    "ForestSurrogate",
    "GPSurrogate",
    "GenomeFeatures",
    "HAWQ_TOTAL",
    "HawqProxy",
    "METHODS",
    "SensitivityProfile",
    "channel_terms",
    "compute_sensitivity",
    "default_candidates",
    "expected_hvi",
    "fingerprint",
    "hutchinson_diagonal",
    "pooled_rank_quality",
    "rank_quality",
    "select_diverse",
    "select_ehvi",
    "select_uncertain",
    "sensitivity_order_genome",
]
