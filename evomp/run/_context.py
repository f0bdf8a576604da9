"""Build a run's parts from its spec: task, float model, space, evaluator, run directory."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from evomp._errors import EvompError
from evomp.evaluation import Evaluator, threads_per_worker
from evomp.objectives import Objectives
from evomp.run._rundir import RunDir, RunLock, atomic_write_bytes, atomic_write_text, writing
from evomp.run._spec import RunSpec, spec_to_toml
from evomp.run._storage import check_storage_url, repair_journal
from evomp.space import SearchSpace
from evomp.tasks import (
    MODELS,
    QATConfig,
    Task,
    TrainConfig,
    evaluate_model,
    float_cache_key,
    from_arrays,
    get_task,
    load_npz,
    pretrain,
    resolve_device,
    set_threads,
)

__all__ = [
    "build_task",
    "task_from_factory",
    "load_float_checkpoint",
    "build_space",
    "RunContext",
    "open_run",
    "make_context",
    "default_out_dir",
    "checkpoint_key",
    "CACHE_FILE",
    "check_run",
    "check_same_run",
    "qat_config",
    "setup_logging",
    "user_model_key",
]

log = logging.getLogger("evomp")

#: every true evaluation of a run directory, one JSON line each, appended as it finishes
#: (what lets a killed run resume without retraining, the final QATs included)
CACHE_FILE = RunDir(".").evaluations_jsonl.name


def task_from_factory(path: str) -> Task:
    """Call the ``"package.module:function"`` named by ``task.factory``.

    The current directory is importable (as for ``python -m``), so a module beside the
    spec works when the run starts there.

    Raises:
        EvompError: the module cannot be imported, has no such function, the function
            fails, or it does not return an :class:`evomp.Task`.
    """
    import importlib
    import sys

    mod_name, _, fn_name = path.partition(":")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as e:
        raise EvompError(f"task.factory {path!r}: cannot import {mod_name!r} ({e}); install "
                         "the package or put its folder on PYTHONPATH on every node") from e
    fn = getattr(mod, fn_name, None)
    if not callable(fn):
        raise EvompError(f"task.factory {path!r}: module {mod_name!r} has no function "
                         f"{fn_name!r}")
    try:
        task = fn()
    except Exception as e:  # noqa: BLE001 - the user's code: say whose error it is
        raise EvompError(f"task.factory {path!r} raised {type(e).__name__}: {e}") from e
    if not isinstance(task, Task):
        raise EvompError(f"task.factory {path!r} returned {type(task).__name__}, not an "
                         "evomp.Task (the model factory and its data)")
    return task


def load_float_checkpoint(task: Task, path: str) -> nn.Module:
    """``task``'s model with the weights of ``task.float_checkpoint``."""
    if not Path(path).is_file():
        raise EvompError(f"task.float_checkpoint {path!r} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a file that is not a state dict
        raise EvompError(f"task.float_checkpoint {path!r} is not a torch state dict "
                         f"({type(e).__name__}: {e})") from e
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    model = task.model_factory()
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as e:
        raise EvompError(f"task.float_checkpoint {path!r} does not fit the factory's model: "
                         f"{e}") from e
    return model


def build_task(spec: RunSpec) -> Task:
    t = spec.task
    if t.factory:
        return task_from_factory(t.factory)
    kw = dict(t.model_kwargs)
    if t.name in ("mnist1d", "digits"):
        return get_task(
            t.name, t.model or None, seed=spec.seed, val_fraction=t.val_fraction, model_kwargs=kw
        )
    model = t.model or "cnn1d"
    if model not in MODELS:
        raise EvompError(f"task.model {model!r} is not in the zoo; choose one of {sorted(MODELS)}")
    if not Path(t.path).is_file():
        _missing(t.path)
    # checked before anything is trained: the four arrays, finite inputs, labels 0..C-1
    arrays = load_npz(t.path)
    x = arrays["x_train"]
    n_classes = int(max(arrays["y_train"].max(), arrays["y_test"].max()) + 1)
    if x.ndim == 2:
        raise EvompError(
            f"{t.path}: x_train is (N, features); give (N, channels, length) for 1-D models "
            "or (N, channels, H, W) for 2-D ones"
        )
    kw.setdefault("in_channels", int(x.shape[1]))
    kw.setdefault("n_classes", n_classes)
    if model == "cnn1d":
        kw.setdefault("length", int(x.shape[-1]))
    factory = MODELS[model]
    return from_arrays(
        arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"],
        model_factory=lambda: factory(**kw),
        name=Path(t.path).stem,
        model_name=model,
        model_kwargs=kw,
        val_fraction=t.val_fraction,
        seed=spec.seed,
    )


def _missing(path: str) -> Any:
    raise EvompError(f"task.path {path!r} does not exist")


def build_space(spec: RunSpec, model: nn.Module | None = None, task: Task | None = None
                ) -> SearchSpace:
    """Trace the spec's model (a fresh one unless given) into a :class:`SearchSpace`."""
    task = task or build_task(spec)
    model = model if model is not None else task.model_factory()
    s = spec.space
    try:
        return SearchSpace.from_model(
            model,
            task.example_input(),
            w_bits=s.w_bits,
            a_bits=s.a_bits,
            granularity=s.granularity,
            pin=s.pin,
            exclude=s.exclude,
        )
    except EvompError:
        raise
    except Exception as e:  # noqa: BLE001 - a user's model that does not run or trace
        raise EvompError(f"cannot trace the model of task {task.name!r} ({task.model_name}) "
                         f"on its example input: {type(e).__name__}: {e}; the model must run "
                         "on a batch of the task's training inputs") from e


def default_out_dir(spec: RunSpec) -> Path:
    return Path("runs") / spec.name


@dataclass
class RunContext:
    """Everything a run (search or baseline) works with, built once."""

    spec: RunSpec
    out: Path
    task: Task
    model: nn.Module
    space: SearchSpace
    evaluator: Evaluator
    device: torch.device
    float_info: dict[str, Any] = field(default_factory=dict)
    #: the directory's owner lock (None: not held, e.g. a worker sharing the directory)
    owner: RunLock | None = field(default=None, repr=False, compare=False)

    @property
    def run_dir(self) -> RunDir:
        """The run directory (its files by name)."""
        return RunDir(self.out)

    def close(self) -> None:
        """Give up the directory's owner lock (also done when the context is freed or the
        process ends)."""
        if self.owner is not None:
            self.owner.release()
            self.owner = None

    def qat_config(self) -> QATConfig:
        return qat_config(self.spec)


def qat_config(spec: RunSpec) -> QATConfig:
    """The run's QAT settings: the spec's ``[qat]`` itself (its seed is the run's)."""
    return spec.qat


class _RunLogHandler(logging.FileHandler):
    """The run's log file. A failed write (disk full, file-size limit) turns the file off
    instead of printing a traceback per message: the run itself then reports the failure
    where it matters (the record)."""

    dead = False

    def emit(self, record: logging.LogRecord) -> None:
        if not self.dead:
            super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        import sys

        if isinstance(sys.exc_info()[1], OSError):
            self.dead = True
            with contextlib.suppress(OSError):
                self.close()
            return
        super().handleError(record)


def setup_logging(out: Path) -> None:
    """Send the ``evomp`` logger's INFO messages to the run directory's ``run.log``.

    Raises:
        EvompError: the directory cannot be written (read-only, full).
    """
    rd = RunDir(out)
    with writing(rd.path):
        rd.path.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger("evomp")
    root.setLevel(logging.INFO)
    target = str(rd.run_log.resolve())
    if not any(getattr(h, "baseFilename", None) == target for h in root.handlers):
        with writing(rd.run_log):
            fh = _RunLogHandler(target)
        fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        root.addHandler(fh)


def check_run(spec: RunSpec, task: Task, storage: str | None = None) -> SearchSpace:
    """Validate what can be validated before anything is written or trained: the task's
    data (by building it), pin and exclude names against the traced model (a fresh,
    untrained one), the objectives, constraints and hardware parameters (by building the
    run's :class:`~evomp.objectives.Objectives`) and a database URL.

    Returns:
        The space of the fresh model (same layers as the trained one's).

    Raises:
        EvompError: the first thing that is wrong, saying what to fix.
    """
    if storage:
        check_storage_url(storage)
    with torch.random.fork_rng(devices=[]):  # the run's random stream is left as it was
        space = build_space(spec, None, task)
    s = spec.search
    Objectives(space.table, s.objectives, s.constraints, s.hardware, spec.hw)
    return space


def open_run(spec: RunSpec, out: str | Path | None = None, threads: int | None = None,
             progress: bool = False, *, lock: bool = True, storage: str | None = None,
             say: Callable[[str], None] | None = None) -> RunContext:
    """Create or reopen the run directory, pretrain (or load) the float model, build parts.

    Everything that can be checked is checked first (:func:`check_run`,
    :func:`check_same_run`); only then are ``spec.toml`` (the resolved spec, atomically),
    ``float.pt`` and ``space.json`` written, so a refused run changes nothing.

    Args:
        spec: the run's spec.
        out: the run directory (default ``runs/<name>``).
        threads: torch threads (default: the spec's).
        progress: print messages and progress bars.
        lock: hold the directory's owner lock (:meth:`RunDir.acquire`) for the context's
            life; ``evomp worker``, which shares a directory on purpose, passes False.
        storage: the run's database URL, validated before anything is written.
        say: where messages go besides the log (default: printed when ``progress``).

    Raises:
        EvompError: a bad spec, task, pin, exclude, hardware parameter or URL; another
            process owns the directory; the directory holds a run of other settings.
    """
    rd = RunDir(out if out else default_out_dir(spec))
    out_dir = rd.path
    tell = say or (print if progress else None)
    device = resolve_device(spec.device)
    torch.manual_seed(spec.seed)
    task = build_task(spec)
    # threads = 0 is automatic: this process's share of the usable CPUs, one thread for a
    # small model or on an oversubscribed machine (warned); -1 is refused before any write
    n = set_threads(threads_per_worker(1, task, spec.threads if threads is None else threads,
                                       check_load=True))
    check_run(spec, task, storage)
    owner = rd.acquire() if lock else None
    check_same_run(spec, rd.path)
    setup_logging(out_dir)
    repair_journal(rd.journal, tell)
    atomic_write_text(rd.spec, spec_to_toml(spec))
    t0 = time.perf_counter()
    cfg: TrainConfig = spec.pretrain  # the spec's [pretrain] (its seed is the run's)
    # the float model is shared by every run of the same task and training settings (search
    # and baselines start from the same weights); each run directory keeps its own copy
    key = float_cache_key(task, cfg)
    shared = out_dir.parent / ".cache" / f"float-{key}.pt"
    own = rd.float_model
    own_key = checkpoint_key(own)
    if own_key is not None and own_key != key and \
            any(f.is_file() for f in (rd.journal, rd.evaluations_jsonl, rd.front_csv)):
        raise EvompError(
            f"{out_dir} holds evaluations of another float model (its float.pt was trained "
            "on other data or settings); pass --out to start this run elsewhere (nothing was "
            "changed)"
        )
    if own_key == key and not shared.is_file():
        with writing(shared.parent):
            shared.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(shared, own.read_bytes())
    if spec.task.float_checkpoint:  # the user's trained weights: nothing is pretrained
        model = load_float_checkpoint(task, spec.task.float_checkpoint).to(device)
        key = user_model_key(model, task)
        if own_key is not None and own_key != key and \
                any(f.is_file() for f in (rd.journal, rd.evaluations_jsonl, rd.front_csv)):
            raise EvompError(f"{out_dir} holds evaluations of other float weights; pass --out "
                             "to start this run elsewhere (nothing was changed)")
        val, _ = evaluate_model(model, task, task.val, device)
        test, _ = evaluate_model(model, task, task.test, device)
        info = {"val_accuracy": val, "test_accuracy": test, "seconds": 0.0, "cached": True}
        buf = io.BytesIO()
        torch.save({"key": key, "state_dict": model.state_dict(), "info": info}, buf)
        atomic_write_bytes(own, buf.getvalue())
    else:
        model, info = pretrain(task, cfg, cache_path=shared, device=device, progress=progress)
    if own_key != key and not spec.task.float_checkpoint:  # new run, or a stale copy
        atomic_write_bytes(own, shared.read_bytes())
    log.info("float model %s (%.1fs, threads=%d, device=%s)", info, time.perf_counter() - t0, n,
             device)
    space = build_space(spec, model, task)
    atomic_write_text(rd.space, space.table.to_json())
    evaluator = Evaluator(task, space, model, qat_config(spec), device=device,
                          cache_file=rd.evaluations_jsonl)
    return RunContext(spec, out_dir, task, model, space, evaluator, device, info, owner)


def user_model_key(model: nn.Module, task: Task) -> str:
    """``"user-<hash>"``: the float.pt key of a run made from Python (:func:`make_context`)
    with one's own model, from its weights and the task's data fingerprint."""
    import hashlib

    h = hashlib.sha256(task.fingerprint().encode())
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return f"user-{h.hexdigest()[:16]}"


def checkpoint_key(path: Path) -> str | None:
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True).get("key")
    except Exception:  # unreadable: treat as stale
        return None


def make_context(
    task: Task,
    model: nn.Module,
    space: SearchSpace,
    spec: RunSpec,
    out: str | Path,
    device: str | torch.device = "cpu",
    *,
    lock: bool = True,
) -> RunContext:
    """A run context from Python objects: a user's task (any ``nn.Module`` with
    DataLoaders or tensors) and an already-trained float model, instead of a spec's
    built-in task. ``spec`` supplies the QAT, search and hardware settings (its ``task``
    and ``pretrain`` tables are not used).

    The directory's owner lock is held for the context's life unless ``lock`` is False;
    nothing is written before the checks pass (see :func:`open_run`).
    """
    rd = RunDir(out)
    out_dir = rd.path
    s = spec.search
    Objectives(space.table, s.objectives, s.constraints, s.hardware, spec.hw)
    owner = rd.acquire() if lock else None
    check_same_run(spec, out_dir)
    dev = resolve_device(device)
    model = model.to(dev)
    key = user_model_key(model, task)
    old = checkpoint_key(rd.float_model)
    if old is not None and old != key:
        raise EvompError(
            f"{out_dir} holds a run of another model or data (its float.pt differs); pass "
            "another out directory (nothing was changed)"
        )
    setup_logging(out_dir)
    repair_journal(rd.journal)
    atomic_write_text(rd.spec, spec_to_toml(spec))
    atomic_write_text(rd.space, space.table.to_json())
    buf = io.BytesIO()
    torch.save({"key": key, "state_dict": model.state_dict(), "info": {}}, buf)
    atomic_write_bytes(rd.float_model, buf.getvalue())
    evaluator = Evaluator(task, space, model, qat_config(spec), device=dev,
                          cache_file=rd.evaluations_jsonl)
    val, _ = evaluate_model(model, task, task.val, dev)
    test, _ = evaluate_model(model, task, task.test, dev)
    info = {"val_accuracy": val, "test_accuracy": test, "seconds": 0.0, "cached": True}
    return RunContext(spec, out_dir, task, model, space, evaluator, dev, info, owner)


def check_same_run(spec: RunSpec, out_dir: str | Path) -> None:
    """Refuse to reuse ``out_dir`` for a run its saved ``spec.toml`` did not make.

    Evaluations made with another task, space, seed, pretraining or QAT would not be
    comparable; other objectives need another study; another ``name`` would start a second
    study in the same record. A saved spec that is empty or not a valid spec is refused
    too (it can no longer say which settings made the evaluations).

    Raises:
        EvompError: what differs and what to do; nothing was changed.
    """
    rd = RunDir(out_dir)
    saved = rd.spec
    if not saved.is_file():
        return
    from evomp.run._spec import load_spec

    elsewhere = "pass --out to write this run elsewhere (nothing was changed)"
    try:
        text = saved.read_text()
        if not text.strip():
            raise EvompError("it is empty")
        old = load_spec(saved)
    except (EvompError, OSError, UnicodeDecodeError, ValueError) as e:
        raise EvompError(
            f"{saved} is damaged ({e}), so it no longer says which settings made the "
            f"evaluations in {rd.path}; restore it (or, if the directory holds no evaluations "
            f"yet, delete it), or {elsewhere}") from None
    changed = [k for k in ("task", "space", "seed", "pretrain", "qat")
               if getattr(old, k) != getattr(spec, k)]
    if changed:
        raise EvompError(
            f"{rd.path} holds a run made with other {', '.join(changed)} settings (its "
            f"evaluations would not be comparable); {elsewhere}"
        )
    if list(old.search.objectives) != list(spec.search.objectives):
        raise EvompError(
            f"{rd.path} holds a run with objectives {list(old.search.objectives)}, not "
            f"{list(spec.search.objectives)}; {elsewhere}"
        )
    if old.name != spec.name:
        raise EvompError(
            f"{rd.path} holds the run {old.name!r}; a spec named {spec.name!r} would start a "
            f"second study in its record: set name = {old.name!r} to resume it, or {elsewhere}"
        )


def cpu_count() -> int:
    return os.cpu_count() or 1
