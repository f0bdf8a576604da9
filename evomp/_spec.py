"""Run specifications: TOML parsed into frozen dataclasses, every key checked by name."""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evomp._errors import SpecError

__all__ = [
    "RunSpec",
    "TaskSpec",
    "SpaceSpec",
    "PretrainSpec",
    "QATSpec",
    "SearchSpec",
    "load_spec",
    "parse_spec",
    "spec_to_toml",
]


@dataclass(frozen=True)
class TaskSpec:
    """``[task]``: a built-in task (``mnist1d``, ``digits``) or ``npz`` with ``path``."""

    name: str = "mnist1d"
    model: str = ""
    path: str = ""
    val_fraction: float = 0.125
    model_kwargs: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.name not in ("mnist1d", "digits", "npz"):
            raise SpecError(f"task.name must be 'mnist1d', 'digits' or 'npz', got {self.name!r}")
        if self.name == "npz" and not self.path:
            raise SpecError("task.path is required when task.name = 'npz'")
        if not 0 < self.val_fraction < 1:
            raise SpecError(f"task.val_fraction must lie in (0, 1), got {self.val_fraction}")


@dataclass(frozen=True)
class SpaceSpec:
    """``[space]``: bit choices, granularity, pinned and excluded layers."""

    w_bits: tuple = (0, 2, 4, 8)
    a_bits: tuple = (2, 4, 8)
    granularity: str = "channel"
    pin: dict = field(default_factory=dict)
    exclude: tuple = ()

    def __post_init__(self) -> None:
        for key, lo in (("w_bits", 0), ("a_bits", 1)):
            v = getattr(self, key)
            if not v:
                raise SpecError(f"space.{key} is empty; give bit-widths, e.g. [2, 4, 8]")
            if any(not isinstance(b, int) or isinstance(b, bool) for b in v):
                raise SpecError(f"space.{key} must hold integers, got {list(v)}")
            if any(b < lo or b > 16 for b in v) or list(v) != sorted(set(v)):
                raise SpecError(
                    f"space.{key} must be increasing bit-widths in {lo}..16, got {list(v)}"
                )
        if self.granularity not in ("channel", "layer"):
            raise SpecError(
                f"space.granularity must be 'channel' or 'layer', got {self.granularity!r}"
            )


@dataclass(frozen=True)
class PretrainSpec:
    """``[pretrain]``: float training of the model (cached in the run directory)."""

    epochs: int = 40
    lr: float = 3e-3
    batch_size: int = 128
    weight_decay: float = 1e-4


@dataclass(frozen=True)
class QATSpec:
    """``[qat]``: short QAT of every search evaluation and the longer final QAT."""

    steps: int = 300
    final_steps: int = 1500
    lr: float = 3e-3
    quant_lr: float = 1e-2
    batch_size: int = 128


@dataclass(frozen=True)
class SearchSpec:
    """``[search]``: engine, objectives, constraints and budgets of the search."""

    engine: str = "pymoo"
    algorithm: str = "nsga2"
    sampler: str = "nsga2"
    objectives: tuple = ("accuracy", "memory_bytes")
    constraints: tuple = ()
    hardware: tuple = ("memory", "bitops", "mpic")
    budget: int = 40
    initial: int = 12
    per_round: int = 6
    generations: int = 30
    population: int = 64
    time_limit_s: float = 0.0
    jobs: int = 1
    final_max: int = 8
    final_min_accuracy: float = 0.0
    selection: str = "ehvi"
    surrogate: str = "auto"
    sensitivity: str = "hutchinson"
    probes: int = 16

    def __post_init__(self) -> None:
        if self.engine not in ("pymoo", "optuna"):
            raise SpecError(f"search.engine must be 'pymoo' or 'optuna', got {self.engine!r}")
        if "accuracy" not in self.objectives:
            raise SpecError("search.objectives must include 'accuracy'")
        if len(self.objectives) < 2:
            raise SpecError("search.objectives needs accuracy and at least one hardware metric")
        for k in ("budget", "initial", "per_round", "generations", "population", "jobs"):
            if getattr(self, k) < 1:
                raise SpecError(f"search.{k} must be >= 1, got {getattr(self, k)}")
        if self.initial > self.budget:
            raise SpecError(
                f"search.initial ({self.initial}) exceeds search.budget ({self.budget})"
            )


@dataclass(frozen=True)
class RunSpec:
    """A whole run. Outputs go to ``runs/<name>/`` unless ``--out`` says otherwise.

    ``hw`` holds hardware-model parameters (``[hw.pulp] preset = "gap8"``); ``baselines``
    holds each baseline method's hyper-parameters (``[baselines.dnas-channel] epochs = 30``),
    checked by the method itself.
    """

    name: str
    seed: int = 0
    device: str = "auto"
    threads: int = 0
    task: TaskSpec = field(default_factory=TaskSpec)
    space: SpaceSpec = field(default_factory=SpaceSpec)
    pretrain: PretrainSpec = field(default_factory=PretrainSpec)
    qat: QATSpec = field(default_factory=QATSpec)
    search: SearchSpec = field(default_factory=SearchSpec)
    hw: dict = field(default_factory=dict)
    baselines: dict = field(default_factory=dict)
    source: str = ""

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name or self.name.startswith("."):
            raise SpecError(f"name must be a plain directory name, got {self.name!r}")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise SpecError(f"device must be 'auto', 'cpu' or 'cuda', got {self.device!r}")
        if self.threads < 0:
            raise SpecError("threads must be >= 0 (0 = all cores)")


_SECTIONS = {
    "task": TaskSpec,
    "space": SpaceSpec,
    "pretrain": PretrainSpec,
    "qat": QATSpec,
    "search": SearchSpec,
}


def _coerce(path: str, value: Any, tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SpecError(f"{path} must be a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SpecError(f"{path} must be an integer, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise SpecError(f"{path} must be a string, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise SpecError(f"{path} must be true or false, got {value!r}")
        return value
    if tp is tuple or origin is tuple:
        if not isinstance(value, list):
            raise SpecError(f"{path} must be a list, got {value!r}")
        return tuple(value)
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise SpecError(f"{path} must be a table, got {value!r}")
        return dict(value)
    if origin in (typing.Union, types.UnionType):  # pragma: no cover - not used yet
        return value
    return value


def _build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)} - {"source"}
    unknown = sorted(set(data) - names)
    if unknown:
        where = f"[{prefix.rstrip('.')}]" if prefix else "the top level"
        raise SpecError(f"unknown key(s) {unknown} in {where}; valid keys are {sorted(names)}")
    kwargs = {}
    for k, v in data.items():
        if prefix == "" and k in _SECTIONS:
            if not isinstance(v, dict):
                raise SpecError(f"[{k}] must be a table")
            kwargs[k] = _build(_SECTIONS[k], v, f"{k}.")
        else:
            kwargs[k] = _coerce(prefix + k, v, hints[k])
    try:
        return cls(**kwargs)
    except TypeError as e:  # a missing required key
        raise SpecError(f"{prefix or 'spec'}: {e}") from e


def parse_spec(data: dict[str, Any], source: str = "") -> RunSpec:
    """Build a :class:`RunSpec` from a parsed TOML dict (raises :class:`SpecError`)."""
    if "name" not in data:
        raise SpecError("the spec needs a top-level 'name' (the run directory's name)")
    spec = _build(RunSpec, data, "")
    return dataclasses.replace(spec, source=source)


def load_spec(path: str | Path) -> RunSpec:
    """Read and validate a TOML run specification."""
    p = Path(path)
    if not p.is_file():
        raise SpecError(f"spec file {str(p)!r} does not exist")
    try:
        data = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as e:
        raise SpecError(f"{p}: not valid TOML: {e}") from e
    return parse_spec(data, source=str(p))


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_key(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def _key(k: str) -> str:
    return k if k.replace("_", "").replace("-", "").isalnum() else _toml_value(k)


def spec_to_toml(spec: RunSpec) -> str:
    """The fully resolved spec (every default written out), as TOML."""
    d = dataclasses.asdict(spec)
    d.pop("source", None)
    lines = []
    nested = {k: d.pop(k) for k in ("hw", "baselines")}
    for k, v in d.items():
        if k not in _SECTIONS:
            lines.append(f"{k} = {_toml_value(v)}")
    for sec in _SECTIONS:
        lines.append(f"\n[{sec}]")
        for k, v in d[sec].items():
            lines.append(f"{k} = {_toml_value(v)}")
    for top, tables in nested.items():
        for sub, vals in tables.items():
            lines.append(f"\n[{top}.{_key(sub)}]")
            for k, v in vals.items():
                lines.append(f"{_key(k)} = {_toml_value(v)}")
    return "\n".join(lines) + "\n"
