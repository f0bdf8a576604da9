"""Build a run's parts from its spec: task, float model, space, evaluator, run directory."""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from evomp._errors import EvompError
from evomp.evaluation import Evaluator
from evomp.run._spec import RunSpec, spec_to_toml
from evomp.space import SearchSpace
from evomp.tasks import (
    MODELS,
    QATConfig,
    Task,
    TrainConfig,
    float_cache_key,
    from_npz,
    get_task,
    pretrain,
    resolve_device,
    set_threads,
)

__all__ = [
    "build_task",
    "build_space",
    "RunContext",
    "open_run",
    "make_context",
    "default_out_dir",
    "checkpoint_key",
    "CACHE_FILE",
    "qat_config",
    "setup_logging",
    "user_model_key",
]

log = logging.getLogger("evomp")

#: every true evaluation of a run directory, one JSON line each, appended as it finishes
#: (what lets a killed run resume without retraining, the final QATs included)
CACHE_FILE = "evaluations.jsonl"


def build_task(spec: RunSpec) -> Task:
    t = spec.task
    kw = dict(t.model_kwargs)
    if t.name in ("mnist1d", "digits"):
        return get_task(
            t.name, t.model or None, seed=spec.seed, val_fraction=t.val_fraction, model_kwargs=kw
        )
    model = t.model or "cnn1d"
    if model not in MODELS:
        raise EvompError(f"task.model {model!r} is not in the zoo; choose one of {sorted(MODELS)}")
    with np.load(t.path) if Path(t.path).is_file() else _missing(t.path) as z:
        x = z["x_train"]
        n_classes = int(max(z["y_train"].max(), z["y_test"].max()) + 1)
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
    return from_npz(
        t.path,
        lambda: factory(**kw),
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
    return SearchSpace.from_model(
        model,
        task.example_input(),
        w_bits=s.w_bits,
        a_bits=s.a_bits,
        granularity=s.granularity,
        pin=s.pin,
        exclude=s.exclude,
    )


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

    def qat_config(self) -> QATConfig:
        return qat_config(self.spec)


def qat_config(spec: RunSpec) -> QATConfig:
    """The run's QAT settings: the spec's ``[qat]`` itself (its seed is the run's)."""
    return spec.qat


def setup_logging(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger("evomp")
    root.setLevel(logging.INFO)
    target = str((out / "run.log").resolve())
    if not any(getattr(h, "baseFilename", None) == target for h in root.handlers):
        fh = logging.FileHandler(target)
        fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        root.addHandler(fh)


def open_run(spec: RunSpec, out: str | Path | None = None, threads: int | None = None,
             progress: bool = False) -> RunContext:
    """Create or reopen the run directory, pretrain (or load) the float model, build parts.

    Writes ``spec.toml`` (the resolved spec) and ``float.pt``; refuses to reuse a directory
    whose saved spec names another task or space, so nothing saved is overwritten.
    """
    out_dir = Path(out) if out else default_out_dir(spec)
    out_dir.mkdir(parents=True, exist_ok=True)
    setup_logging(out_dir)
    _check_same_run(spec, out_dir)
    (out_dir / "spec.toml").write_text(spec_to_toml(spec))
    n = set_threads(threads if threads is not None else (spec.threads or None))
    device = resolve_device(spec.device)
    torch.manual_seed(spec.seed)
    task = build_task(spec)
    t0 = time.perf_counter()
    cfg: TrainConfig = spec.pretrain  # the spec's [pretrain] (its seed is the run's)
    # the float model is shared by every run of the same task and training settings (search
    # and baselines start from the same weights); each run directory keeps its own copy
    key = float_cache_key(task, cfg)
    shared = out_dir.parent / ".cache" / f"float-{key}.pt"
    own = out_dir / "float.pt"
    own_key = checkpoint_key(own)
    if own_key is not None and own_key != key and \
            any((out_dir / f).is_file() for f in ("study.journal", CACHE_FILE, "front.csv")):
        raise EvompError(
            f"{out_dir} holds evaluations of another float model (its float.pt was trained "
            "on other data or settings); pass --out to start this run elsewhere (nothing was "
            "changed)"
        )
    if own_key == key and not shared.is_file():
        shared.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(own, shared)
    model, info = pretrain(task, cfg, cache_path=shared, device=device, progress=progress)
    if own_key != key:  # a new run, or a run directory's stale copy
        shutil.copyfile(shared, own)
    log.info("float model %s (%.1fs, threads=%d, device=%s)", info, time.perf_counter() - t0, n,
             device)
    space = build_space(spec, model, task)
    (out_dir / "space.json").write_text(space.table.to_json())
    evaluator = Evaluator(task, space, model, qat_config(spec), device=device,
                          cache_file=out_dir / CACHE_FILE)
    return RunContext(spec, out_dir, task, model, space, evaluator, device, info)


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
) -> RunContext:
    """A run context from Python objects: a user's task (any ``nn.Module`` with
    DataLoaders or tensors) and an already-trained float model, instead of a spec's
    built-in task. ``spec`` supplies the QAT, search and hardware settings (its ``task``
    and ``pretrain`` tables are not used).
    """
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    setup_logging(out_dir)
    _check_same_run(spec, out_dir)
    (out_dir / "spec.toml").write_text(spec_to_toml(spec))
    (out_dir / "space.json").write_text(space.table.to_json())
    dev = resolve_device(device)
    model = model.to(dev)
    key = user_model_key(model, task)
    old = checkpoint_key(out_dir / "float.pt")
    if old is not None and old != key:
        raise EvompError(
            f"{out_dir} holds a run of another model or data (its float.pt differs); pass "
            "another out directory (nothing was changed)"
        )
    torch.save({"key": key, "state_dict": model.state_dict(), "info": {}},
               out_dir / "float.pt")
    evaluator = Evaluator(task, space, model, qat_config(spec), device=dev,
                          cache_file=out_dir / CACHE_FILE)
    from evomp.tasks import evaluate_model

    val, _ = evaluate_model(model, task, task.val, dev)
    test, _ = evaluate_model(model, task, task.test, dev)
    info = {"val_accuracy": val, "test_accuracy": test, "seconds": 0.0, "cached": True}
    return RunContext(spec, out_dir, task, model, space, evaluator, dev, info)


def _check_same_run(spec: RunSpec, out_dir: Path) -> None:
    saved = out_dir / "spec.toml"
    if not saved.is_file():
        return
    from evomp.run._spec import load_spec

    try:
        old = load_spec(saved)
    except EvompError:
        return
    changed = [k for k in ("task", "space", "seed", "pretrain", "qat")
               if getattr(old, k) != getattr(spec, k)]
    if changed:
        raise EvompError(
            f"{out_dir} holds a run made with other {', '.join(changed)} settings (its "
            "evaluations would not be comparable); pass --out to write this run elsewhere "
            "(nothing was changed)"
        )


def cpu_count() -> int:
    return os.cpu_count() or 1
