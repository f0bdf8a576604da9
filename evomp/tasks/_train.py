"""Float pretraining (cached on disk), evaluation, and quantization-aware training."""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import os
import time
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from evomp._errors import EvompError, SpecError
from evomp.tasks import Task, batches
from evomp.tasks._task import Data, TensorData

__all__ = [
    "TrainConfig",
    "QATConfig",
    "FINAL_FROM",
    "TrainState",
    "Diverged",
    "resolve_device",
    "set_threads",
    "pretrain",
    "evaluate_model",
    "train_steps",
    "steps_per_epoch",
    "make_adam",
    "float_cache_key",
]


# ------------------------------------------------------- [pretrain] and [qat] settings
# These dataclasses are the spec's ``[pretrain]`` and ``[qat]`` sections themselves (the
# spec parses those tables straight into them), so every check names the spec key. The
# seed is the spec's top-level ``seed``: a field here, but never a key of those tables.
_NOT_A_SPEC_KEY = {"spec_key": False}


def _fail(msg: str) -> typing.NoReturn:
    raise SpecError(msg)


def _number(key: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
        _fail(f"{key} must be a finite number, got {v!r}")
    return float(v)


def _integer(key: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        _fail(f"{key} must be an integer, got {v!r}")
    return int(v)


def _check(obj: Any, section: str, *, positive: tuple[str, ...] = (),
           non_negative: tuple[str, ...] = (), integers: tuple[str, ...] = ()) -> None:
    """Check the fields of a settings dataclass; errors name them ``section.field``."""
    for name in integers:
        object.__setattr__(obj, name, _integer(f"{section}.{name}", getattr(obj, name)))
    for name in positive:
        v = getattr(obj, name)
        if not _number(f"{section}.{name}", v) > 0:
            _fail(f"{section}.{name} must be > 0, got {v!r}")
    for name in non_negative:
        v = getattr(obj, name)
        if not _number(f"{section}.{name}", v) >= 0:
            _fail(f"{section}.{name} must be >= 0, got {v!r}")
    if _integer("seed", obj.seed) < 0:
        _fail(f"seed must be >= 0, got {obj.seed!r}")


@dataclass(frozen=True)
class TrainConfig:
    """Float pretraining (the spec's ``[pretrain]``): Adam with cosine decay over ``epochs``.

    Attributes:
        epochs: passes over the training split (> 0).
        lr: learning rate (> 0).
        batch_size: mini-batch size of tensor splits (> 0).
        weight_decay: Adam's L2 weight decay (>= 0).
        seed: the run's seed (the spec's top-level ``seed``, not a ``[pretrain]`` key).

    Raises:
        SpecError: a value out of range, naming it ``pretrain.<field>``.
    """

    epochs: int = 40
    lr: float = 3e-3
    batch_size: int = 128
    weight_decay: float = 1e-4
    seed: int = field(default=0, metadata=_NOT_A_SPEC_KEY)

    def __post_init__(self) -> None:
        _check(self, "pretrain", integers=("epochs", "batch_size"),
               positive=("epochs", "batch_size", "lr"), non_negative=("weight_decay",))


@dataclass(frozen=True)
class QATConfig:
    """Quantization-aware training from the float weights (the spec's ``[qat]``).

    ``steps`` is the short QAT of every search evaluation; ``final_steps`` the longer QAT
    of the final front; ``tiny_steps`` the very short QAT of the ``tiny`` screening
    fidelity (``search.screen``). Weights train at ``lr``, quantizer scales/ranges at ``quant_lr``;
    both decay with a cosine schedule. ``lr = 3e-3`` was chosen on the demo: against 1e-3
    it recovers heavily pruned configurations far better (an 8.8 KB front member: 92.0%
    -> 95.5% test after 800 steps) at no cost for the large ones. ``seed`` is the run's
    seed (the spec's top-level ``seed``, not a ``[qat]`` key).

    ``final_from = "short"`` (default): a front member's final QAT continues from its own
    short-QAT state (weights, quantizer ranges, BatchNorm statistics, Adam moments, the
    position in the data) for ``added_steps`` more steps (0, the default: ``final_steps -
    steps``, so a member trains as many steps in all as from float, and its final QAT costs
    ``steps`` fewer; see :attr:`final_added`), with the cosine schedule started
    again over those steps (a warm restart: so it is not the same as one cosine over
    ``steps + added_steps``, but it is exactly the same as an uninterrupted two-phase run).
    Where that state is not at hand (another node's worker without a shared run directory),
    and with ``final_from = "float"``, the final QAT trains ``final_steps`` from the float
    weights.

    Raises:
        SpecError: a value out of range, naming it ``qat.<field>``.
    """

    steps: int = 300
    final_steps: int = 1500
    lr: float = 3e-3
    quant_lr: float = 1e-2
    batch_size: int = 128
    final_from: str = "short"
    added_steps: int = 0
    tiny_steps: int = 30
    seed: int = field(default=0, metadata=_NOT_A_SPEC_KEY)

    def __post_init__(self) -> None:
        _check(self, "qat", integers=("steps", "final_steps", "batch_size", "added_steps",
                                       "tiny_steps"),
               non_negative=("steps", "final_steps", "added_steps", "tiny_steps"),
               positive=("lr", "quant_lr", "batch_size"))
        if self.final_from not in FINAL_FROM:
            _fail(f"qat.final_from must be one of {list(FINAL_FROM)}, got "
                  f"{self.final_from!r}")

    @property
    def final_added(self) -> int:
        """Steps a final QAT adds to a short-QAT state (``added_steps``, or by default
        ``final_steps - steps``)."""
        return self.added_steps or max(0, self.final_steps - self.steps)


#: where a final QAT starts: the member's short-QAT state, or the float weights
FINAL_FROM = {"short": "continue the member's short-QAT state for qat.added_steps",
              "float": "train qat.final_steps from the float weights"}


@dataclass
class TrainState:
    """Where a :func:`train_steps` run stopped, so that a later call continues it exactly.

    Attributes:
        optimizer: the Adam state dict (moments and step counts).
        generator: the data-order generator's state at the start of the current epoch.
        used: batches of that epoch already trained on.
        rng: torch's global RNG state.
        steps: optimizer steps taken so far, over every call.
    """

    optimizer: dict[str, Any] = field(default_factory=dict)
    generator: torch.Tensor | None = None
    used: int = 0
    rng: torch.Tensor | None = None
    steps: int = 0


class Diverged(RuntimeError):
    """Training produced a NaN or infinite loss."""


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """The torch device to run on: ``"auto"`` is CUDA when available, else the CPU.

    Raises:
        EvompError: CUDA requested on a machine without it.
    """
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise EvompError("device 'cuda' requested but CUDA is not available; use 'cpu' or 'auto'")
    return dev


def set_threads(n: int | None) -> int:
    """Set torch's intra-op thread count to ``n``; returns it.

    ``None`` or ``0``: every CPU this process may run on (its affinity set). A run's
    automatic count, which never oversubscribes the machine, comes from
    ``evomp.evaluation.threads_per_worker``.

    Raises:
        EvompError: ``n < 0``.
    """
    if n is not None and (isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 0):
        raise EvompError(f"threads must be >= 0 (0 = automatic), got {n!r}")
    if not n:
        try:
            n = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):  # not on Linux
            n = os.cpu_count() or 1
    torch.set_num_threads(max(1, int(n)))
    return torch.get_num_threads()


@torch.no_grad()
def evaluate_model(
    model: nn.Module, task: Task, split: Data, device: torch.device | str = "cpu",
    batch_size: int = 1024,
) -> tuple[float, float]:
    """``(metric, mean loss)`` of ``model`` on ``split`` in eval mode."""
    was = model.training
    model.eval()
    tot_m = tot_l = 0.0
    n = 0
    try:
        for x, y in batches(split, batch_size, device=device):
            out = model(x)
            k = y.shape[0]
            tot_m += task.metric(out, y) * k
            tot_l += float(task.loss_fn(out, y)) * k
            n += k
    finally:
        model.train(was)
    return tot_m / n, tot_l / n


def train_steps(
    model: nn.Module,
    task: Task,
    steps: int,
    param_groups: list[dict],
    batch_size: int,
    seed: int,
    device: torch.device | str = "cpu",
    progress: str | None = None,
    state: TrainState | None = None,
    check_every: int | None = None,
) -> float:
    """Train for ``steps`` Adam steps with cosine decay; returns the last-epoch mean loss.

    ``progress`` names a progress bar over the steps (None: no bar). ``state``: continue
    where the run that filled it stopped (its Adam moments, data order and RNG; the cosine
    schedule starts again over ``steps``) and leave this run's end in it; an empty
    :class:`TrainState` starts afresh from ``seed``. ``check_every``: steps between two
    finiteness checks of the loss (None: every step on the CPU,
    :data:`CHECK_EVERY_ACCELERATED` on an accelerator, where a check waits for the device).

    Raises:
        Diverged: a NaN or infinite loss (on an accelerator found at the next of the checks
            every :data:`CHECK_EVERY_ACCELERATED` steps, so that no step waits for the device).
        EvompError: an epoch of ``task.train`` yielded no batch (training could not progress).
    """
    if steps <= 0:
        return float("nan")
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    opt = make_adam(param_groups)
    skip = 0
    if state is not None and state.steps:
        opt.load_state_dict(state.optimizer)
        for g, want in zip(opt.param_groups, param_groups):  # this run's rates, not the
            g["lr"] = want["lr"]  # decayed ones the state ended with
            g.pop("initial_lr", None)
        if state.generator is not None:
            gen.set_state(state.generator)
        if state.rng is not None:
            torch.set_rng_state(state.rng)
        skip = state.used
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
    )
    model.train()
    step = 0
    recent: list[torch.Tensor] = []  # on the device: no host sync per step
    if check_every is None:
        check_every = 1 if torch.device(device).type == "cpu" else CHECK_EVERY_ACCELERATED
    since = 0  # steps since the last check
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc=progress, leave=False)
    while step < steps:
        seen = 0
        epoch_start = gen.get_state()
        for x, y in batches(task.train, batch_size, shuffle=True, generator=gen, device=device):
            seen += 1
            if seen <= skip:  # trained on before this run was continued
                continue
            loss = task.loss_fn(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            recent.append(loss.detach())
            step += 1
            since += 1
            if since >= check_every or step >= steps:
                _check_finite(recent[-since:], step)
                since = 0
                del recent[:-_TAIL]
            if bar is not None:
                bar.update(1)
            if step >= steps:
                break
        if seen == 0:
            raise EvompError(_EMPTY_EPOCH)
        skip = 0
    if bar is not None:
        bar.close()
    if state is not None:
        state.optimizer = opt.state_dict()
        state.generator, state.used = epoch_start, seen
        state.rng = torch.get_rng_state()
        state.steps += step
    return float(torch.stack(recent[-_TAIL:]).mean())


#: losses averaged into :func:`train_steps`' result
_TAIL = 20
#: steps between two finiteness checks of the loss on an accelerator (each check waits for
#: the device; on the CPU every step is checked, which costs nothing)
CHECK_EVERY_ACCELERATED = 25


def _check_finite(recent: list[torch.Tensor], step: int) -> None:
    """Raise :class:`Diverged` if one of ``recent``, the losses of the steps up to ``step``
    since the last check, is not finite."""
    losses = torch.stack(recent)
    if not bool(torch.isfinite(losses).all()):
        bad = int((~torch.isfinite(losses)).nonzero()[0, 0])
        first = step - len(recent) + bad
        raise Diverged(f"loss became {float(losses[bad])} at step {first}")


def make_adam(param_groups: list[dict]) -> torch.optim.Optimizer:
    """Adam with the fused kernel (CPU and CUDA): one call per step, not one per tensor."""
    try:
        return torch.optim.Adam(param_groups, fused=True)
    except (RuntimeError, TypeError):  # e.g. a parameter dtype without a fused kernel
        return torch.optim.Adam(param_groups)


_EMPTY_EPOCH = (
    "the training data yielded no batch in a whole epoch (a DataLoader with drop_last=True "
    "and fewer samples than its batch_size?); give the train DataLoader a smaller "
    "batch_size, set drop_last=False, or provide more training samples"
)


def steps_per_epoch(data: Data, batch_size: int) -> int:
    """Optimizer steps in one pass over a training split.

    Tensor splits are cut into ``batch_size`` mini-batches; a user ``DataLoader`` batches
    by itself, so one epoch is ``len(loader)`` steps (counted by one pass when the loader
    has no length, e.g. over an ``IterableDataset``).

    Raises:
        EvompError: the split yields no batch at all.
    """
    if isinstance(data, TensorData):
        n = math.ceil(len(data) / batch_size)
    else:
        try:
            n = len(data)
        except TypeError:  # an IterableDataset without __len__: count one pass
            n = sum(1 for _ in data)
    if n <= 0:
        raise EvompError(_EMPTY_EPOCH)
    return int(n)


def _architecture(model: nn.Module) -> list[list]:
    """Names, shapes and dtypes of a model's state: a checkpoint of another shape never loads."""
    return [[k, list(v.shape), str(v.dtype)] for k, v in model.state_dict().items()]


def float_cache_key(task: Task, cfg: TrainConfig, model: nn.Module | None = None) -> str:
    """The float-pretrain cache key: task fingerprint, model architecture and ``cfg``.

    Args:
        task: the task.
        cfg: the training settings.
        model: a fresh model of ``task.model_factory`` if one is at hand; otherwise one is
            built (with the global RNG state restored afterwards).
    """
    if model is None:
        with torch.random.fork_rng(devices=[]):
            model = task.model_factory()
    doc: dict[str, Any] = {
        "task": task.fingerprint(), "cfg": asdict(cfg), "arch": _architecture(model)
    }
    blob = json.dumps(doc, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def pretrain(
    task: Task,
    cfg: TrainConfig = TrainConfig(),
    cache_path: str | Path | None = None,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> tuple[nn.Module, dict]:
    """Train the task's model in float, or load it from ``cache_path`` if trained before.

    The cache is keyed by the task's fingerprint (data, model name and model keyword
    arguments), the model's architecture (parameter names and shapes) and ``cfg``; a stale
    checkpoint is retrained (and overwritten), never silently reused.

    An epoch is one pass over ``task.train``: ``ceil(n / cfg.batch_size)`` steps for tensor
    splits, ``len(loader)`` steps for a user DataLoader (which uses its own batch size).

    Returns:
        ``(model, info)`` with ``info`` holding val/test accuracy, seconds and whether cached.
    """
    device = torch.device(device)
    model = task.model_factory().to(device)
    key = float_cache_key(task, cfg, model)
    if cache_path is not None:
        p = Path(cache_path)
        if p.is_file():
            ck = torch.load(p, map_location=device, weights_only=True)
            if ck.get("key") == key:
                model.load_state_dict(ck["state_dict"])
                info = dict(ck["info"], cached=True)
                return model, info
    torch.manual_seed(cfg.seed)
    model = task.model_factory().to(device)
    t0 = time.perf_counter()
    train_steps(
        model,
        task,
        cfg.epochs * steps_per_epoch(task.train, cfg.batch_size),
        [{"params": list(model.parameters()), "lr": cfg.lr, "weight_decay": cfg.weight_decay}],
        cfg.batch_size,
        cfg.seed,
        device,
        progress="float pretraining" if progress else None,
    )
    val, _ = evaluate_model(model, task, task.val, device)
    test, _ = evaluate_model(model, task, task.test, device)
    info = {
        "val_accuracy": val,
        "test_accuracy": test,
        "seconds": time.perf_counter() - t0,
        "cached": False,
    }
    if cache_path is not None:
        p = Path(cache_path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f"{p.name}.{os.getpid()}.tmp")  # concurrent workers: no collision
        torch.save({"key": key, "state_dict": model.state_dict(), "info": info}, tmp)
        tmp.replace(p)
    return model, info
