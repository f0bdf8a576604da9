"""Built-in offline tasks: MNIST-1D (generated) and scikit-learn digits (shipped)."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from evomp._errors import EvompError
from evomp.tasks._task import Task, from_arrays
from evomp.tasks._zoo import MODELS

__all__ = [
    "TASKS",
    "get_task",
    "TASK_MODELS",
]

_DEFAULT_MODEL = {"mnist1d": "cnn1d", "digits": "resnet8"}
TASK_MODELS = {"mnist1d": ("cnn1d", "dscnn1d"), "digits": ("resnet8", "mobilenetv1")}


@functools.lru_cache(maxsize=1)
def _mnist1d_arrays() -> tuple[np.ndarray, ...]:
    """The canonical MNIST-1D data: the package's default arguments, its data seed included.

    The data never depends on a run's seed, so runs with different seeds (and results
    across papers) share the same train and test sets; the run seed only picks the
    validation split.
    """
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()  # canonical arguments, including the fixed data seed
    d = make_dataset(args)  # generated locally; never the downloading get_dataset
    x = d["x"].astype(np.float32)[:, None, :]
    xt = d["x_test"].astype(np.float32)[:, None, :]
    return x, np.asarray(d["y"], dtype=np.int64), xt, np.asarray(d["y_test"], dtype=np.int64)


_DIGITS_SPLIT_SEED = 0  # fixed: the test set never depends on a run's seed


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, ...]:
    """scikit-learn digits with a fixed train/test split (360 test images)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = d.images.astype(np.float32)[:, None, :, :] / 16.0
    y = d.target.astype(np.int64)
    rng = np.random.default_rng(_DIGITS_SPLIT_SEED)
    perm = rng.permutation(len(x))
    n_test = 360
    te, tr = perm[:n_test], perm[n_test:]
    return x[tr], y[tr], x[te], y[te]


def get_task(
    name: str = "mnist1d",
    model: str | None = None,
    *,
    seed: int = 0,
    val_fraction: float = 0.125,
    model_kwargs: dict[str, Any] | None = None,
) -> Task:
    """A built-in task: ``"mnist1d"`` (4000 train / 1000 test, length 40) or ``"digits"``.

    Args:
        name: task name.
        model: architecture from the zoo; default ``cnn1d`` (mnist1d), ``resnet8`` (digits).
        seed: validation-split seed. The train and test data themselves are fixed (MNIST-1D
            is generated with the package's canonical data seed, digits is split with a
            fixed seed), so runs with different seeds share them.
        val_fraction: share of the training set held out for validation.
        model_kwargs: keyword arguments of the model factory (e.g. ``width``); they are
            part of the task's fingerprint, i.e. of the float-pretrain cache key.
    """
    if name not in _DEFAULT_MODEL:
        raise EvompError(f"unknown task {name!r}; built-in tasks are {sorted(_DEFAULT_MODEL)}")
    model = model or _DEFAULT_MODEL[name]
    if model not in TASK_MODELS[name]:
        raise EvompError(
            f"model {model!r} does not fit task {name!r}; choose one of {list(TASK_MODELS[name])}"
        )
    x_train, y_train, x_test, y_test = _mnist1d_arrays() if name == "mnist1d" else _digits_arrays()
    kw = dict(model_kwargs or {})
    factory = MODELS[model]

    def make() -> Any:
        return factory(**kw)

    return from_arrays(
        x_train,
        y_train,
        x_test,
        y_test,
        model_factory=make,
        name=name,
        model_name=model,
        val_fraction=val_fraction,
        seed=seed,
        model_kwargs=kw,
    )


TASKS = tuple(_DEFAULT_MODEL)
