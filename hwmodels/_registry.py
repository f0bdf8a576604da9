"""Name -> model class registry, with plugins from the ``evomp.hwmodels`` entry-point group.

A third-party package exposes a model by declaring, in its ``pyproject.toml``::

    [project.entry-points."evomp.hwmodels"]
    mychip = "mychip_hw:MyChipModel"

where ``MyChipModel`` subclasses :class:`hwmodels.HardwareModel`. Plugins are loaded
once, on the first call of :func:`available`, :func:`get` or :func:`metric_owner`. A
plugin that fails to import or is not a valid model is reported by name (a warning, and
:func:`plugin_errors`) without affecting the others.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import warnings
from collections.abc import Sequence
from typing import Any, TypeVar

import numpy as np

from hwmodels._base import BitBatch, Costs, HardwareModel
from hwmodels._layers import LayerTable

__all__ = [
    "ENTRY_POINT_GROUP",
    "register",
    "get",
    "available",
    "model_class",
    "metric_owner",
    "plugin_errors",
    "load_plugins",
    "evaluate",
    "evaluate_layers",
]

ENTRY_POINT_GROUP = "evomp.hwmodels"

_REGISTRY: dict[str, type[HardwareModel]] = {}
_PLUGIN_ERRORS: dict[str, str] = {}
_PLUGINS_LOADED = False
_PLUGIN_LOADED: dict[str, type[HardwareModel]] = {}  # plugin name -> class it registered

M = TypeVar("M", bound=type[HardwareModel])


def register(cls: M, *, name: str | None = None) -> M:
    """Register a :class:`HardwareModel` subclass; usable as a class decorator.

    Args:
        cls: the model class.
        name: registry name; defaults to ``cls.name``.

    Returns:
        ``cls`` unchanged.

    Raises:
        ValueError: not a model class, an empty or duplicate name, or a metric that
            another registered model already provides.
    """
    if not (isinstance(cls, type) and issubclass(cls, HardwareModel)):
        raise ValueError(f"{cls!r} is not a hwmodels.HardwareModel subclass")
    key = name or cls.name
    if not key or not isinstance(key, str):
        raise ValueError(f"{cls.__name__} needs a non-empty class attribute 'name'")
    if key in _REGISTRY:
        raise ValueError(
            f"a hardware model named {key!r} is already registered "
            f"({_REGISTRY[key].__module__}.{_REGISTRY[key].__qualname__}); pick another name"
        )
    for m in cls.metrics:
        owner = _static_owner(m)
        if owner is not None:
            raise ValueError(
                f"metric {m!r} of model {key!r} is already provided by model {owner!r}; "
                "metric names must be unique, so rename it (e.g. with a chip prefix)"
            )
    _REGISTRY[key] = cls
    return cls


def _unregister(name: str) -> None:
    """Remove a model (for tests)."""
    _REGISTRY.pop(name, None)


def _static_owner(metric: str) -> str | None:
    for key, cls in _REGISTRY.items():
        if metric in cls.metrics:
            return key
    return None


def load_plugins(*, reload: bool = False) -> dict[str, str]:
    """Discover models in the ``evomp.hwmodels`` entry-point group.

    Args:
        reload: look again even if plugins were already loaded.

    Returns:
        plugin name -> error message for every plugin that could not be loaded.
    """
    global _PLUGINS_LOADED
    if _PLUGINS_LOADED and not reload:
        return dict(_PLUGIN_ERRORS)
    _PLUGINS_LOADED = True
    try:
        eps = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    except Exception as e:  # noqa: BLE001 - a broken environment must not break us
        _PLUGIN_ERRORS["<entry points>"] = f"{type(e).__name__}: {e}"
        return dict(_PLUGIN_ERRORS)
    for ep in eps:
        if ep.name in _PLUGIN_LOADED and _REGISTRY.get(ep.name) is _PLUGIN_LOADED[ep.name]:
            continue  # already loaded by an earlier call
        try:
            obj = ep.load()
            if not (isinstance(obj, type) and issubclass(obj, HardwareModel)):
                raise ValueError(
                    f"entry point {ep.value!r} is {obj!r}, not a hwmodels.HardwareModel subclass"
                )
            register(obj, name=ep.name)
            _PLUGIN_LOADED[ep.name] = obj
        except Exception as e:  # noqa: BLE001 - report any failure by name
            msg = f"{type(e).__name__}: {e}"
            _PLUGIN_ERRORS[ep.name] = msg
            warnings.warn(
                f"hwmodels plugin {ep.name!r} ({ep.value}) could not be loaded: {msg}",
                RuntimeWarning,
                stacklevel=2,
            )
        else:
            _PLUGIN_ERRORS.pop(ep.name, None)
    return dict(_PLUGIN_ERRORS)


def plugin_errors() -> dict[str, str]:
    """Plugin name -> why it could not be loaded (empty when all loaded)."""
    load_plugins()
    return dict(_PLUGIN_ERRORS)


def available() -> list[str]:
    """Names of every registered model (built-ins and loaded plugins), sorted."""
    load_plugins()
    return sorted(_REGISTRY)


def model_class(name: str) -> type[HardwareModel]:
    """The class registered under ``name``.

    Raises:
        ValueError: unknown name (listing the available ones), or a plugin that failed.
    """
    load_plugins()
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name in _PLUGIN_ERRORS:
        raise ValueError(f"hardware model plugin {name!r} failed to load: {_PLUGIN_ERRORS[name]}")
    raise ValueError(f"no hardware model named {name!r}; available: {', '.join(available())}")


def get(name: str, table: LayerTable | None = None, **params: Any) -> HardwareModel:
    """Build a model by name.

    Args:
        name: registry name, e.g. ``"memory"``, ``"pulp"``.
        table: if given, the model is validated against this layer table now (e.g. a
            bit-width the model has no figure for raises here, not mid-search).
        **params: the model's keyword parameters.

    Raises:
        ValueError: unknown model, bad parameters, or a table the model cannot cost.
    """
    cls = model_class(name)
    try:
        inspect.signature(cls).bind(**params)
    except TypeError as e:
        raise ValueError(
            f"model {name!r}: {e}; its parameters are {sorted(cls.parameters)} "
            f"(see `evomp hw list`)"
        ) from None
    model = cls(**params)
    if table is not None:
        model.bind(table)
    return model


def metric_owner(metric: str) -> str:
    """Name of the registered model that provides ``metric``.

    Models whose metrics depend on their parameters (``table``, ``callable``) are not
    searched; ask their instance's ``metrics``.

    Raises:
        ValueError: no registered model declares the metric (the message lists them).
    """
    load_plugins()
    owner = _static_owner(metric)
    if owner is None:
        known = sorted(m for cls in _REGISTRY.values() for m in cls.metrics)
        raise ValueError(f"no hardware model provides metric {metric!r}; known: {known}")
    return owner


def _check_clash(models: Sequence[HardwareModel]) -> None:
    owners: dict[str, str] = {}
    for m in models:
        for k in m.metrics:
            if k in owners:
                raise ValueError(
                    f"metric {k!r} is provided by both {owners[k]!r} and {m.name!r}; "
                    "keep one of them or rename the metric"
                )
            owners[k] = m.name


def evaluate(models: Sequence[HardwareModel], table: LayerTable, genomes: np.ndarray) -> Costs:
    """Metrics of several models on one genome batch, decoding it once.

    Args:
        models: model instances; their metric names must not clash.
        table: the layer table.
        genomes: ``(n, n_genes)`` integer genomes.

    Returns:
        metric -> ``(n,)`` float64 array, over all models.

    Raises:
        ValueError: two models provide the same metric.
    """
    batch = _bound_batch(models, table, genomes)
    out: Costs = {}
    for m in models:
        out.update(m.cost_batch(batch))
    return out


def _bound_batch(models: Sequence[HardwareModel], table: LayerTable, genomes: np.ndarray
                 ) -> BitBatch:
    """The decoded batch of ``genomes``, with every model bound to ``table`` (metric names
    checked for clashes first)."""
    _check_clash(models)
    for m in models:
        m.bind(table)
    return BitBatch.from_genomes(table, genomes)


def evaluate_layers(models: Sequence[HardwareModel], table: LayerTable | BitBatch,
                    genomes: np.ndarray | None = None) -> Costs:
    """Per-layer figures of several models on one batch, decoding it once (vectorized).

    Only metrics that add up over layers come back (see
    :meth:`HardwareModel.layer_cost`): ``memory_bytes`` and ``activation_bytes`` (peak
    activation buffer) and the metrics of models without a per-layer breakdown
    (``callable``) are absent; summed over layers each returned figure equals the
    metric's :func:`evaluate` total.

    Args:
        models: model instances; their metric names must not clash.
        table: the layer table (with ``genomes``), or an already decoded
            :class:`BitBatch` (e.g. ``BitBatch.from_bits`` of bits outside the choices).
        genomes: ``(n, n_genes)`` integer genomes; None when ``table`` is a batch.

    Returns:
        metric -> ``(n, n_layers)`` float64 array, in the metric's unit.

    Raises:
        ValueError: two models provide the same metric, bad genomes, or bits a model
            has no figure for.
    """
    if isinstance(table, BitBatch):
        if genomes is not None:
            raise ValueError("evaluate_layers takes a table and genomes, or a BitBatch alone")
        _check_clash(models)
        batch = table
    else:
        if genomes is None:
            raise ValueError("evaluate_layers needs genomes with a layer table")
        batch = _bound_batch(models, table, genomes)
    out: Costs = {}
    for m in models:
        out.update(m.layer_cost_batch(batch))
    return out
