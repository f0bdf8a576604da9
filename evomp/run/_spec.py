"""Run specifications: TOML parsed into frozen dataclasses, every key checked by name.

Unknown keys and bad values are both rejected; every error names the key as
``section.key`` (e.g. ``pretrain.epochs must be > 0, got 0``) and the fix.
"""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evomp._errors import EvompError, SpecError
from evomp.tasks import QATConfig, TrainConfig

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
    "unknown_hw_parameter",
]


TASKS = ("mnist1d", "digits", "npz")
#: ``search.mode``: synchronous rounds (deterministic for a seed, whatever the number of
#: workers), asynchronous (the queue kept full; refit as results land), or ``auto``: async
#: when the study is in a database (a cluster), rounds otherwise
MODES = ("auto", "rounds", "async")
"""Task kinds (``task.name``)."""


def unknown_hw_parameter(model: str, keys: Any) -> tuple[str, str] | None:
    """``(first unknown key, what is wrong)`` when ``keys`` hold a name that is not a
    parameter of the registered hardware model ``model``, else None."""
    import hwmodels

    allowed = sorted(hwmodels.model_class(model).parameters)
    unknown = sorted(set(keys) - set(allowed))
    if not unknown:
        return None
    return unknown[0], (
        f"is not a parameter of hardware model {model!r}"
        + (f" (nor are {unknown[1:]})" if unknown[1:] else "")
        + (f"; its parameters are {allowed}" if allowed else "; it takes no parameters")
        + " (see 'evomp hw list')")


# ------------------------------------------------------------------------- value checks
def _fail(msg: str) -> typing.NoReturn:
    raise SpecError(msg)


def _number(key: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        _fail(f"{key} must be a finite number, got {v!r}")
    return float(v)


def _integer(key: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        _fail(f"{key} must be an integer, got {v!r}")
    return int(v)


def _at_least(key: str, v: Any, lo: int | float, integer: bool = True) -> None:
    x = _integer(key, v) if integer else _number(key, v)
    if x < lo:
        _fail(f"{key} must be >= {lo}, got {v!r}")


def _one_of(key: str, v: Any, choices: Sequence[str]) -> None:
    if v not in choices:
        _fail(f"{key} must be one of {', '.join(repr(c) for c in choices)}, got {v!r}")


def _strings(key: str, v: Any, example: str) -> tuple[str, ...]:
    if isinstance(v, str) or not isinstance(v, (list, tuple)):
        _fail(f"{key} must be a list of strings, e.g. {example}, got {v!r}")
    bad = [x for x in v if not isinstance(x, str) or not x]
    if bad:
        _fail(f"{key} must hold non-empty strings, e.g. {example}, got {list(v)}")
    return tuple(v)


def _set(obj: object, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)  # normalise a field of a frozen dataclass


@dataclass(frozen=True)
class TaskSpec:
    """``[task]``: a built-in task (``mnist1d``, ``digits``), ``npz`` with ``path``, or a
    user's ``factory = "package.module:function"`` returning an :class:`evomp.Task` (the
    same import path on every node), optionally with ``float_checkpoint``: already-trained
    float weights (a state dict, or a dict holding one under ``state_dict``) used instead of
    pretraining."""

    name: str = "mnist1d"
    model: str = ""
    path: str = ""
    val_fraction: float = 0.125
    model_kwargs: dict = field(default_factory=dict)
    factory: str = ""
    float_checkpoint: str = ""

    def __post_init__(self) -> None:
        if self.factory:
            mod, _, fn = str(self.factory).partition(":")
            if not mod or not fn or not all(p.isidentifier() for p in mod.split(".")) \
                    or not fn.isidentifier():
                raise SpecError(f"task.factory must be 'package.module:function', got "
                                f"{self.factory!r}")
            if self.model:
                raise SpecError("task.model names a zoo model; a task.factory builds its own "
                                "model: give one of them")
            return
        if self.float_checkpoint:
            raise SpecError("task.float_checkpoint goes with task.factory (the built-in tasks "
                            "pretrain their zoo model)")
        if self.name not in TASKS:
            raise SpecError(f"task.name must be 'mnist1d', 'digits' or 'npz', got {self.name!r}")
        if self.name == "npz" and not self.path:
            raise SpecError("task.path is required when task.name = 'npz'")
        if not 0 < _number("task.val_fraction", self.val_fraction) < 1:
            raise SpecError(f"task.val_fraction must lie in (0, 1), got {self.val_fraction}")
        if self.model:
            from evomp.tasks import MODELS, TASK_MODELS

            allowed = list(TASK_MODELS.get(self.name, sorted(MODELS)))
            if self.model not in allowed:
                raise SpecError(
                    f"task.model must be one of {', '.join(repr(m) for m in allowed)} for "
                    f"task.name = {self.name!r}, got {self.model!r}"
                )
        if not isinstance(self.model_kwargs, dict):
            raise SpecError(f"task.model_kwargs must be a table, got {self.model_kwargs!r}")


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
            if isinstance(v, str) or not isinstance(v, (list, tuple)):
                raise SpecError(f"space.{key} must be a list of bit-widths, e.g. [2, 4, 8]")
            if not v:
                raise SpecError(f"space.{key} is empty; give bit-widths, e.g. [2, 4, 8]")
            if any(not isinstance(b, int) or isinstance(b, bool) for b in v):
                raise SpecError(f"space.{key} must hold integers, got {list(v)}")
            if any(b < lo or b > 16 for b in v) or list(v) != sorted(set(v)):
                raise SpecError(
                    f"space.{key} must be increasing bit-widths in {lo}..16, got {list(v)}"
                )
            _set(self, key, tuple(v))
        if self.granularity not in ("channel", "layer"):
            raise SpecError(
                f"space.granularity must be 'channel' or 'layer', got {self.granularity!r}"
            )
        _set(self, "exclude", _strings("space.exclude", self.exclude, '["fc"]'))
        if not isinstance(self.pin, dict):
            raise SpecError(f"space.pin must be a table of layer -> bits, got {self.pin!r}")
        from evomp.space import parse_pin

        for name, v in self.pin.items():
            try:
                parse_pin(name, v)
            except EvompError as e:
                raise SpecError(f"space.pin.{name}: {e}") from e
        both = sorted(set(self.pin) & set(self.exclude))
        if both:
            raise SpecError(f"space.pin and space.exclude both name {both}; pick one")


# [pretrain] and [qat] parse straight into the training settings (one dataclass per
# section, checked there with the spec's key names); the run's seed is set from the top level
PretrainSpec = TrainConfig
"""``[pretrain]``: float training of the model (cached in the run directory)."""
QATSpec = QATConfig
"""``[qat]``: short QAT of every search evaluation and the longer final QAT."""


#: fidelities cheaper than the short QAT that can screen candidates (``search.screen``),
#: cheapest first: post-training accuracy with BatchNorm re-estimated, a very short QAT
SCREEN_FIDELITIES = ("ptq", "tiny")


@dataclass(frozen=True)
class SearchSpec:
    """``[search]``: engine, objectives, constraints and budgets of the search.

    ``objectives`` holds ``accuracy`` and at least one hardware metric; every metric of
    the objectives and constraints must come from a registered model, or from a model in
    ``hardware`` whose metrics depend on its parameters (e.g. the columns of a ``table``
    model's measurements).
    """

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
    final_gap: float = 0.25
    final_spacing: float = 0.02
    selection: str = "ehvi"
    surrogate: str = "auto"
    sensitivity: str = "hutchinson"
    probes: int = 16
    mode: str = "auto"
    screen: tuple = ()
    screen_factor: int = 3

    def __post_init__(self) -> None:
        _one_of("search.mode", self.mode, MODES)
        self._check_screen()
        # the names are checked against the registries the parts are built from (lazily:
        # those live on higher floors, and a plugin may have registered more)
        from evomp.engines import ALGORITHMS, ENGINES, SAMPLERS
        from evomp.search import SELECTIONS, SURROGATES
        from surrogates import METHODS

        for key, value, registry in (("engine", self.engine, ENGINES),
                                     ("algorithm", self.algorithm, ALGORITHMS),
                                     ("sampler", self.sampler, SAMPLERS),
                                     ("selection", self.selection, SELECTIONS),
                                     ("surrogate", self.surrogate, SURROGATES)):
            _one_of(f"search.{key}", value, registry.names())
        _one_of("search.sensitivity", self.sensitivity, METHODS)
        _at_least("search.jobs", self.jobs, 0)
        for k in ("budget", "initial", "per_round", "generations", "final_max",
                  "probes"):
            _at_least(f"search.{k}", getattr(self, k), 1)
        _at_least("search.population", self.population, 2)
        _at_least("search.time_limit_s", self.time_limit_s, 0, integer=False)
        for k in ("final_gap", "final_spacing"):
            if not 0 <= _number(f"search.{k}", getattr(self, k)) <= 1:
                raise SpecError(f"search.{k} must lie in [0, 1], got {getattr(self, k)!r}")
        if not 0 <= _number("search.final_min_accuracy", self.final_min_accuracy) <= 1:
            raise SpecError(
                f"search.final_min_accuracy must lie in [0, 1], got {self.final_min_accuracy!r}"
            )
        if self.initial > self.budget:
            raise SpecError(
                f"search.initial ({self.initial}) exceeds search.budget ({self.budget})"
            )
        self._check_metrics()

    def _check_screen(self) -> None:
        """``screen``: cheap fidelities, cheapest first, each a rung of successive halving."""
        screen = _strings("search.screen", self.screen, '["ptq"]')
        order = [f for f in SCREEN_FIDELITIES if f in screen]
        bad = [f for f in screen if f not in SCREEN_FIDELITIES]
        if bad:
            raise SpecError(f"search.screen names unknown fidelities {bad}; the cheap ones are "
                            f"{list(SCREEN_FIDELITIES)} (e.g. screen = [\"ptq\"])")
        if list(screen) != order:
            raise SpecError(f"search.screen must list each fidelity once, cheapest first: "
                            f"{order}, got {list(screen)}")
        _set(self, "screen", screen)
        _at_least("search.screen_factor", self.screen_factor, 2)

    def _check_metrics(self) -> None:
        """Hardware models registered; objectives and constraints well-formed and provided."""
        import hwmodels
        from evomp.objectives import parse_constraint

        hardware = _strings("search.hardware", self.hardware, '["memory", "mpic"]')
        known = hwmodels.available()
        unknown = [h for h in hardware if h not in known]
        if unknown:
            raise SpecError(
                f"search.hardware names unknown model(s) {unknown}; registered models are "
                f"{known} (see 'evomp hw list')"
            )
        _set(self, "hardware", hardware)
        objectives = _strings("search.objectives", self.objectives,
                              '["accuracy", "memory_bytes"]')
        if "accuracy" not in objectives:
            raise SpecError("search.objectives must include 'accuracy'")
        if len(set(objectives)) != len(objectives):
            raise SpecError(f"search.objectives repeat a metric: {list(objectives)}")
        if len(objectives) < 2:
            raise SpecError(
                "search.objectives needs accuracy and at least one hardware metric, e.g. "
                '["accuracy", "memory_bytes"]: a search over accuracy alone has no trade-off'
            )
        _set(self, "objectives", objectives)
        constraints = _strings("search.constraints", self.constraints,
                               '["memory_bytes <= 40000"]')
        parsed = []
        for c in constraints:
            try:
                parsed.append(parse_constraint(c))
            except EvompError as e:
                raise SpecError(f"search.constraints: {e}") from e
        _set(self, "constraints", constraints)
        # registered models declare their metrics; a model without class-level metrics
        # (table, callable, such plugins) decides them from its parameters at run time
        if any(not hwmodels.model_class(h).metrics for h in hardware):
            return
        for key, metrics in (("search.objectives", objectives),
                             ("search.constraints", [c.metric for c in parsed])):
            for m in metrics:
                if m == "accuracy":
                    continue
                try:
                    hwmodels.metric_owner(m)
                except ValueError:
                    static = sorted({x for n in known for x in hwmodels.model_class(n).metrics})
                    raise SpecError(
                        f"{key} names metric {m!r} that no hardware model provides; known "
                        f"metrics are {static} (see 'evomp hw list'); a measured metric "
                        "needs a 'table' model in search.hardware"
                    ) from None


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
    pretrain: TrainConfig = field(default_factory=TrainConfig)
    qat: QATConfig = field(default_factory=QATConfig)
    search: SearchSpec = field(default_factory=SearchSpec)
    hw: dict = field(default_factory=dict)
    baselines: dict = field(default_factory=dict)
    source: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or "/" in self.name or (
            self.name.startswith(".")
        ):
            raise SpecError(f"name must be a plain directory name, got {self.name!r}")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise SpecError(f"device must be 'auto', 'cpu' or 'cuda', got {self.device!r}")
        if _integer("threads", self.threads) < 0:
            raise SpecError(
                f"threads must be >= 0 (0 = automatic: this process's share of the usable "
                f"CPUs), got {self.threads}"
            )
        if _integer("seed", self.seed) < 0:
            raise SpecError(f"seed must be >= 0, got {self.seed}")
        for sec, cls in (("pretrain", TrainConfig), ("qat", QATConfig)):
            v = getattr(self, sec)
            if not isinstance(v, cls):
                raise SpecError(f"[{sec}] must be a table, got {v!r}")
            if v.seed != self.seed:  # the run's one seed trains the float model and QATs
                _set(self, sec, dataclasses.replace(v, seed=self.seed))
        self._check_hw()
        if not isinstance(self.baselines, dict):
            raise SpecError(f"baselines must be a table, got {self.baselines!r}")
        for method, params in self.baselines.items():
            if not isinstance(params, dict):
                raise SpecError(
                    f"[baselines.{method}] must be a table of parameters, got {params!r}"
                )

    def _check_hw(self) -> None:
        """``[hw.<model>]`` names a registered model, with keys among its parameters."""
        import hwmodels

        if not isinstance(self.hw, dict):
            raise SpecError(f"hw must be a table of [hw.<model>] tables, got {self.hw!r}")
        known = hwmodels.available()
        for model, params in self.hw.items():
            if model not in known:
                raise SpecError(
                    f"[hw.{model}] names no registered hardware model; registered models "
                    f"are {known} (see 'evomp hw list')"
                )
            if not isinstance(params, dict):
                raise SpecError(f"[hw.{model}] must be a table of parameters, got {params!r}")
            bad = unknown_hw_parameter(model, params)
            if bad:
                raise SpecError(f"hw.{model}.{bad[0]} {bad[1]}")


_SECTIONS = {
    "task": TaskSpec,
    "space": SpaceSpec,
    "pretrain": TrainConfig,
    "qat": QATConfig,
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


def _keys(cls: type) -> list[str]:
    """The TOML keys of a section: its fields, less those marked ``spec_key: False`` (the
    seed of the training settings, which is the spec's top-level ``seed``)."""
    return [f.name for f in dataclasses.fields(cls)
            if f.name != "source" and f.metadata.get("spec_key", True)]


def _build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = set(_keys(cls))
    unknown = sorted(set(data) - names)
    if unknown:
        where = f"[{prefix.rstrip('.')}]" if prefix else "the top level"
        hint = ("; the seed is the spec's top-level 'seed'"
                if prefix and "seed" in unknown and "seed" not in names else "")
        raise SpecError(
            f"unknown key(s) {unknown} in {where}; valid keys are {sorted(names)}{hint}"
        )
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
    """Read and validate a TOML run specification.

    Raises:
        SpecError: the file is missing, unreadable, not UTF-8 text, not valid TOML (the
            message names the file and line) or not a valid spec (it names the key).
    """
    p = Path(path)
    if not p.is_file():
        raise SpecError(f"spec file {str(p)!r} does not exist")
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise SpecError(f"cannot read spec file {str(p)!r}: {e.strerror or e}") from e
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise SpecError(
            f"{p} is not a text file (byte {e.start} on line {line} is not UTF-8); a spec is "
            "a TOML text file such as runs/demo.toml"
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        msg = str(e)
        m = re.search(r" \(at line (\d+), column (\d+)\)$", msg)
        if m:
            where, msg = f"line {m.group(1)}, column {m.group(2)}", msg[: m.start()]
        else:  # "(at end of document)": the last line
            where = f"line {max(1, len(text.splitlines()))} (end of file)"
            msg = re.sub(r" \(at end of document\)$", "", msg)
        raise SpecError(f"{p}, {where}: not valid TOML: {msg}") from None
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
    for sec, cls in _SECTIONS.items():
        lines.append(f"\n[{sec}]")
        for k in _keys(cls):
            lines.append(f"{k} = {_toml_value(d[sec][k])}")
    for top, tables in nested.items():
        for sub, vals in tables.items():
            lines.append(f"\n[{top}.{_key(sub)}]")
            for k, v in vals.items():
                lines.append(f"{_key(k)} = {_toml_value(v)}")
    return "\n".join(lines) + "\n"
