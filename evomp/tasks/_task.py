"""Task: a model factory, train/validation/test data, loss and metric."""

from __future__ import annotations

import hashlib
import json
import types
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from evomp._errors import EvompError

__all__ = [
    "Task", "TensorData", "Data", "batches", "accuracy", "check_arrays", "from_arrays",
    "from_npz", "load_npz", "NPZ_ARRAYS",
]


@dataclass(frozen=True)
class TensorData:
    """An in-memory split: ``x (N, ...)`` float32 inputs and ``y (N,)`` int64 labels."""

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        if self.x.shape[0] != self.y.shape[0]:
            raise EvompError(
                f"inputs and labels differ in length: {self.x.shape[0]} vs {self.y.shape[0]}"
            )
        if self.x.shape[0] == 0:
            raise EvompError("a data split is empty")

    def __len__(self) -> int:
        return int(self.x.shape[0])


Data = TensorData | DataLoader


def batches(
    data: Data,
    batch_size: int,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Iterate ``(x, y)`` mini-batches of a split (tensors or a user DataLoader)."""
    if isinstance(data, TensorData):
        n = len(data)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        for i in range(0, n, batch_size):
            idx = order[i : i + batch_size]
            yield data.x[idx].to(device), data.y[idx].to(device)
    else:
        for x, y in data:
            yield x.to(device), y.to(device)


def accuracy(output: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy of logits ``(N, classes)`` against labels ``(N,)``."""
    return float((output.argmax(dim=1) == y).float().mean())


@dataclass
class Task:
    """Everything an evaluation needs besides bit-widths.

    Attributes:
        name: task name (used in cache keys).
        model_factory: builds a fresh float model (random init).
        train / val / test: the splits; search uses ``val`` carved from the training data,
            ``test`` is touched only for final reports.
        loss_fn: ``loss_fn(logits, y) -> scalar tensor``.
        metric: ``metric(logits, y) -> float`` (higher is better), averaged over samples.
        model_name: name of the model architecture (for cache keys and manifests).
        info: free-form facts about the data (e.g. normalisation statistics).
        model_kwargs: keyword arguments ``model_factory`` applies (e.g. ``{"width": 8}``);
            part of :meth:`fingerprint`, so models of another configuration never share a
            cached float checkpoint.
    """

    name: str
    model_factory: Callable[[], nn.Module]
    train: Data
    val: Data
    test: Data
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy
    metric: Callable[[torch.Tensor, torch.Tensor], float] = accuracy
    model_name: str = "custom"
    info: dict[str, Any] = field(default_factory=dict)
    model_kwargs: dict[str, Any] = field(default_factory=dict)

    def example_input(self, n: int = 8) -> torch.Tensor:
        x, _ = next(batches(self.train, n))
        return x[:n]

    def fingerprint(self) -> str:
        """A short hash of the task: names, model keyword arguments and the data.

        Tensor data is hashed by shape and a sample of values; a DataLoader by its dataset
        (the tensors of a ``TensorDataset``, otherwise the dataset's type and length, or
        "unsized" for an ``IterableDataset`` without one) and its batching.
        """
        h = hashlib.sha256(f"{self.name}|{self.model_name}|".encode())
        h.update(_stable_json(self.model_kwargs).encode())
        for split in (self.train, self.val, self.test):
            if isinstance(split, TensorData):
                _hash_tensors(h, (split.x, split.y))
            else:
                h.update(_describe_loader(split).encode())
                ds = getattr(split, "dataset", None)
                if isinstance(ds, TensorDataset):
                    _hash_tensors(h, ds.tensors)
        return h.hexdigest()[:16]


def _stable_json(obj: Any) -> str:
    """JSON of model keyword arguments; functions and classes by qualified name."""

    def default(o: Any) -> str:
        if isinstance(o, (type, types.FunctionType, types.BuiltinFunctionType)):
            return f"{o.__module__}.{o.__qualname__}"
        return repr(o)

    return json.dumps(obj, sort_keys=True, default=default)


def _hash_tensors(h: Any, tensors: Iterable[torch.Tensor]) -> None:
    for t in tensors:
        t = t.detach().cpu()
        h.update(f"{tuple(t.shape)}|{t.dtype}".encode())
        flat = t.reshape(-1)
        sample = flat[:: max(1, flat.numel() // 4096)].contiguous()
        h.update(sample.view(torch.uint8).numpy().tobytes())  # any dtype, bfloat16 included


def _describe_loader(loader: Any) -> str:
    """A stable description of a user DataLoader (never iterates it)."""
    ds = getattr(loader, "dataset", loader)
    kind = f"{type(ds).__module__}.{type(ds).__qualname__}"
    try:
        n: Any = len(ds)
    except TypeError:  # an IterableDataset (or any iterable) without a length
        n = "unsized"
    batching = (
        f"batch_size={getattr(loader, 'batch_size', None)},"
        f"drop_last={getattr(loader, 'drop_last', None)}"
    )
    return f"loader:{kind}:{n}:{batching}"


def _split_val(
    x: np.ndarray, y: np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    if not 0 < val_fraction < 1:
        raise EvompError(f"val_fraction must lie in (0, 1), got {val_fraction}")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(x))
    n_val = max(1, int(round(len(x) * val_fraction)))
    v, t = perm[:n_val], perm[n_val:]
    return x[t], y[t], x[v], y[v]


def from_arrays(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    model_factory: Callable[[], nn.Module],
    *,
    name: str = "arrays",
    model_name: str = "custom",
    val_fraction: float = 0.125,
    seed: int = 0,
    standardize: bool = True,
    model_kwargs: Mapping[str, Any] | None = None,
) -> Task:
    """A classification task from numpy arrays (checked by :func:`check_arrays`).

    The validation split is carved from the training set (``val_fraction``, seeded);
    inputs are standardised with training statistics (one mean and std for all features).
    ``model_kwargs`` records the keyword arguments ``model_factory`` applies (it does not
    apply them): they enter :meth:`Task.fingerprint`, i.e. the float-pretrain cache key.
    """
    check_arrays({"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test})
    xt, yt, xv, yv = _split_val(x_train, y_train, val_fraction, seed)
    mean, std = (float(xt.mean()), float(xt.std()) or 1.0) if standardize else (0.0, 1.0)

    def td(x: np.ndarray, y: np.ndarray) -> TensorData:
        return TensorData(
            torch.as_tensor((x - mean) / std, dtype=torch.float32),
            torch.as_tensor(y, dtype=torch.long),
        )

    return Task(
        name=name,
        model_factory=model_factory,
        train=td(xt, yt),
        val=td(xv, yv),
        test=td(x_test, y_test),
        model_name=model_name,
        info={"mean": mean, "std": std, "n_classes": int(max(y_train.max(), y_test.max()) + 1)},
        model_kwargs=dict(model_kwargs or {}),
    )


NPZ_ARRAYS = ("x_train", "y_train", "x_test", "y_test")
"""The arrays a task's ``.npz`` file holds."""


def check_arrays(arrays: Mapping[str, Any], where: str = "") -> None:
    """Check a classification task's arrays before anything is trained on them.

    Args:
        arrays: ``x_train (N, ...)``, ``y_train (N,)``, ``x_test (M, ...)``, ``y_test (M,)``:
            numeric inputs without NaN or inf, and integer class labels ``>= 0``.
        where: what holds them (e.g. the ``.npz`` path), prefixed to each message.

    Raises:
        EvompError: a missing, non-array, empty or non-numeric array; inputs holding NaN or
            inf (saying which array, how many values and the first sample); labels that are
            not 1-D non-negative integers; inputs and labels of different lengths; train and
            test samples of different shapes.
    """
    pre = f"{where}: " if where else ""
    missing = [k for k in NPZ_ARRAYS if k not in arrays]
    if missing:
        raise EvompError(f"{pre}lacks arrays {missing}; it needs {', '.join(NPZ_ARRAYS)}")
    for k in NPZ_ARRAYS:
        a = arrays[k]
        if not isinstance(a, np.ndarray):
            raise EvompError(f"{pre}{k} must be a numpy array, got {type(a).__name__}")
        if a.ndim == 0 or a.shape[0] == 0:
            raise EvompError(f"{pre}{k} is empty (shape {a.shape}); give at least one sample")
    for k in ("x_train", "x_test"):
        a = arrays[k]
        if a.dtype.kind not in "biuf":
            raise EvompError(f"{pre}{k} must hold numbers, got dtype {a.dtype}")
        if a.ndim < 2:
            raise EvompError(f"{pre}{k} has shape {a.shape}; give one row per sample, "
                             "(N, channels, length) or (N, channels, H, W)")
        if a.dtype.kind == "f":
            bad = ~np.isfinite(a.reshape(len(a), -1))
            if bad.any():
                rows = np.flatnonzero(bad.any(axis=1))
                raise EvompError(
                    f"{pre}the data holds non-finite values: {k} has {int(bad.sum())} NaN or "
                    f"inf value(s) in {len(rows)} of its {len(a)} samples (the first at index "
                    f"{int(rows[0])}); replace or drop those samples"
                )
    for k in ("y_train", "y_test"):
        a = arrays[k]
        if a.ndim != 1:
            raise EvompError(f"{pre}{k} must be a 1-D array of class labels, got shape {a.shape}")
        if a.dtype.kind not in "iu":
            example = ""
            if a.dtype.kind == "f":
                odd = a[~np.isfinite(a) | (a != np.round(a))]
                example = (f" holding {float(odd[0]):g}" if odd.size else
                           " (whole numbers: save them with .astype(np.int64))")
            raise EvompError(
                f"{pre}{k} must hold integer class labels 0..C-1, got dtype {a.dtype}{example}"
            )
        neg = a < 0
        if neg.any():
            raise EvompError(
                f"{pre}{k} holds {int(neg.sum())} negative label(s) (the smallest is "
                f"{int(a.min())}); labels are class indices 0..C-1"
            )
    for x, y in (("x_train", "y_train"), ("x_test", "y_test")):
        if len(arrays[x]) != len(arrays[y]):
            raise EvompError(
                f"{pre}{x} holds {len(arrays[x])} samples but {y} holds {len(arrays[y])} "
                "labels; give one label per sample"
            )
    if arrays["x_train"].shape[1:] != arrays["x_test"].shape[1:]:
        raise EvompError(
            f"{pre}x_train samples are {arrays['x_train'].shape[1:]} but x_test samples are "
            f"{arrays['x_test'].shape[1:]}"
        )


def load_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Load and check (:func:`check_arrays`) a task's ``.npz`` file.

    Pickled (object) arrays are never loaded: an ``.npz`` can run code when unpickled.

    Returns:
        ``{"x_train", "y_train", "x_test", "y_test"}`` arrays.

    Raises:
        EvompError: the file is missing, not an ``.npz`` archive, holds pickled arrays, or
            fails :func:`check_arrays`.
    """
    p = Path(path)
    if not p.is_file():
        raise EvompError(f"data file {str(p)!r} does not exist")
    not_npz = (f"{p} is not an .npz archive; save the four arrays with "
               f"np.savez(path, {'=..., '.join(NPZ_ARRAYS)}=...)")
    try:
        z = np.load(p, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise EvompError(f"{not_npz} ({e})") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise EvompError(f"{not_npz} (it holds a single .npy array)")
    with z:
        missing = [k for k in NPZ_ARRAYS if k not in z]
        if missing:
            raise EvompError(f"{p} lacks arrays {missing}; it needs {', '.join(NPZ_ARRAYS)}"
                             + ("" if z.files else " (the archive is empty)"))
        arrays = {}
        for k in NPZ_ARRAYS:
            try:
                arrays[k] = z[k]
            except ValueError as e:
                if "allow_pickle" not in str(e):
                    raise EvompError(f"{p}: {k} cannot be read ({e})") from None
                raise EvompError(
                    f"{p}: {k} is a pickled object array, which evomp never loads (unpickling "
                    "can run code); save plain numeric arrays, e.g. x_train=x.astype(np.float32)"
                    ", y_train=y.astype(np.int64)"
                ) from None
            except (OSError, EOFError, zipfile.BadZipFile) as e:
                raise EvompError(f"{p}: {k} cannot be read ({e}); the file may be truncated"
                                 ) from None
    check_arrays(arrays, str(p))
    return arrays


def from_npz(
    path: str | Path, model_factory: Callable[[], nn.Module], **kwargs: Any
) -> Task:
    """A task from an ``.npz`` file holding ``x_train, y_train, x_test, y_test``
    (loaded and checked by :func:`load_npz`)."""
    p = Path(path)
    arrs = load_npz(p)
    kwargs.setdefault("name", p.stem)
    return from_arrays(arrs["x_train"], arrs["y_train"], arrs["x_test"], arrs["y_test"],
                       model_factory=model_factory, **kwargs)
