"""The run's sensitivity profile: computed once with ``surrogates``, saved, reused on resume."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evomp.quant import fake_quant_act, fake_quant_weight
from evomp.tasks import batches

__all__ = ["run_profile", "channel_importance"]

log = logging.getLogger("evomp")


def _layers(ctx: Any) -> list[tuple[str, torch.nn.Module]]:
    return [(n, ctx.model.get_submodule(n)) for n in ctx.space.layer_names]


def run_profile(ctx: Any, method: str = "hutchinson", probes: int = 16, n_batches: int = 4,
                path: str | Path | None = None) -> Any:
    """Load the run's sensitivity profile, or compute and save it.

    A saved profile that does not match the model and data is an error (never silently
    recomputed over: delete the file to recompute).

    Args:
        ctx: the run context (model, task, space, spec).
        method / probes / n_batches: how the profile is computed.
        path: the profile file (default: the run directory's, ``ctx.run_dir.sensitivity``).

    Raises:
        OSError: the profile cannot be written (its ``filename`` names the file).
    """
    import surrogates

    path = Path(path) if path is not None else Path(ctx.run_dir.sensitivity)
    model = ctx.model
    train = ctx.task.train
    if isinstance(train, torch.utils.data.DataLoader) and \
            not isinstance(train.dataset, torch.utils.data.IterableDataset):
        # a user's loader may shuffle: read the same first samples every time, so the
        # profile's data fingerprint is stable and a resumed run finds its profile
        train = torch.utils.data.DataLoader(train.dataset, batch_size=256, shuffle=False,
                                            collate_fn=train.collate_fn)
    data = [(x, y) for (x, y), _ in zip(batches(train, 256), range(n_batches))]
    fp = surrogates.fingerprint(model, data)
    if path.is_file():
        return surrogates.SensitivityProfile.load(
            path, expect_fingerprint=fp, layer_names=ctx.space.layer_names
        )
    was = model.training
    model.eval()
    try:
        prof = surrogates.compute_sensitivity(
            model,
            _layers(ctx),
            data,
            ctx.task.loss_fn,
            quantize_weight=fake_quant_weight,
            quantize_act=lambda x, b, s: fake_quant_act(x, b, s),
            w_choices=ctx.space.w_bits,
            a_choices=ctx.space.a_bits,
            method=method,
            n_probes=probes,
            n_batches=n_batches,
            seed=ctx.spec.seed,
        )
    finally:
        model.train(was)
    try:
        prof.save(path)
    except OSError as e:  # name the file (np.savez's error does not)
        raise OSError(e.errno, e.strerror, str(path)) from e
    log.info("sensitivity profile (%s, %d probes) saved to %s", method, probes, path)
    return prof


def channel_importance(profile: Any, table: Any) -> np.ndarray:
    """``(n_channels,)`` channel importance: sensitivity x error at the lowest non-zero bits."""
    nz = [i for i, b in enumerate(table.w_choices) if b > 0]
    col = nz[0] if nz else 0
    return np.asarray(profile.w_sens, float) * np.asarray(profile.w_err, float)[:, col]
