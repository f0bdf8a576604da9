"""True evaluation of bit configurations: PTQ and QAT from the float weights."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from evomp.quant import QuantModel
from evomp.space import SearchSpace, genome_hash
from evomp.tasks import (
    Diverged,
    QATConfig,
    Task,
    TrainState,
    batches,
    evaluate_model,
    train_steps,
)

__all__ = ["EvalResult", "Evaluator", "FIDELITIES", "evaluate_uniform"]

FIDELITIES = ("ptq", "tiny", "short", "final")
"""From cheapest to dearest: post-training accuracy (BatchNorm re-estimated, no training), a
very short QAT (``qat.tiny_steps``), the search's short QAT (``qat.steps``), the final QAT."""

log = logging.getLogger("evomp")


@dataclass(frozen=True)
class EvalResult:
    """One true evaluation.

    Attributes:
        genome_hash: hash of the genome row.
        fidelity: ``"ptq"`` (no training), ``"tiny"`` (a very short QAT), ``"short"``
            (search QAT) or ``"final"``.
        val_accuracy: metric on the validation split after QAT (NaN if failed).
        ptq_accuracy: validation metric right after quantization (BatchNorm statistics
            re-estimated), before any QAT.
        test_accuracy: test metric, only for ``with_test=True`` evaluations.
        val_loss: validation loss after QAT.
        seconds: wall time of this evaluation.
        failed: True if training diverged; ``reason`` says why.
        cpu_seconds: CPU time of the process during this evaluation (all threads).
        start: where its QAT started: ``"float"`` (the float weights) or ``"short"`` (a final
            QAT continuing the genome's saved short-QAT state).
    """

    genome_hash: str
    fidelity: str
    val_accuracy: float
    ptq_accuracy: float
    test_accuracy: float | None = None
    val_loss: float = float("nan")
    seconds: float = 0.0
    failed: bool = False
    reason: str = ""
    cpu_seconds: float = 0.0
    start: str = "float"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        """One strict-JSON line: a NaN or infinite float is written ``null`` (bare ``NaN``
        tokens are not JSON, and strict readers reject them)."""
        d = {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
             for k, v in self.to_dict().items()}
        return json.dumps(d, allow_nan=False)

    @classmethod
    def from_json(cls, line: str) -> EvalResult:
        """Read a :meth:`to_json` line (or an older one with bare ``NaN`` tokens): ``null``
        reads back as NaN, except ``test_accuracy``, whose ``null`` means not scored.

        Raises:
            ValueError: not a JSON object of these fields (e.g. a line cut by a crash).
            TypeError: unknown or missing fields.
        """
        d = json.loads(line)
        if not isinstance(d, dict):
            raise ValueError(f"not a JSON object: {line[:40]!r}")
        for k in _NAN_FIELDS:
            if k in d and d[k] is None:
                d[k] = float("nan")
        return cls(**d)


_NAN_FIELDS = ("val_accuracy", "ptq_accuracy", "val_loss", "seconds", "cpu_seconds")
"""Float fields of an :class:`EvalResult` that are never None (``null`` in JSON is NaN)."""


class Evaluator:
    """Evaluates genomes for real on one quantized copy of the float model.

    The model is quantized once; each evaluation restores the float weights, writes the
    genome's bits into buffers, re-initialises the quantizer ranges, runs QAT and scores.
    Results are cached by genome hash and fidelity (in memory, and in ``cache_file``
    as JSON lines when given).

    Args:
        task: the task (data, loss, metric).
        space: the search space of ``float_model``.
        float_model: the pretrained float model (copied).
        qat: QAT settings.
        device: torch device.
        calib_batches: number of training batches used to calibrate activation ranges.
        cache_file: optional JSON-lines file of results, appended to and re-read.
        states_dir: where each short QAT leaves its end state (``<hash>-short.pt``: model,
            quantizer ranges, BatchNorm statistics, Adam state, data position), from which
            a final QAT continues when ``qat.final_from == "short"``; None keeps none.
    """

    def __init__(
        self,
        task: Task,
        space: SearchSpace,
        float_model: nn.Module,
        qat: QATConfig | None = None,
        device: torch.device | str = "cpu",
        calib_batches: int = 4,
        cache_file: str | Path | None = None,
        states_dir: str | Path | None = None,
    ) -> None:
        self.task = task
        self.states_dir = Path(states_dir) if states_dir is not None else None
        self.space = space
        self.qat = qat or QATConfig()
        self.device = torch.device(device)
        self.qmodel = QuantModel(float_model, space.layer_names).to(self.device)
        calib = [x for (x, _), _ in zip(batches(task.train, 256, device=self.device),
                                         range(calib_batches))]
        self.qmodel.calibrate(calib)
        self._bn_batches = calib  # BatchNorm re-estimation after each genome's bits are set
        self.cache: dict[tuple[str, str], EvalResult] = {}
        self.cache_file = Path(cache_file) if cache_file else None
        if self.cache_file and self.cache_file.is_file():
            for line in self.cache_file.read_text().splitlines():
                try:
                    r = EvalResult.from_json(line)
                except (ValueError, TypeError):
                    continue  # a line cut by a crash mid-write
                self.cache[(r.genome_hash, r.fidelity)] = r

    # ------------------------------------------------------------------ API
    def apply(self, genome: np.ndarray) -> None:
        """Reset to float weights and write ``genome``'s bits into the model's buffers."""
        wb, ab = self.space.decode(np.asarray(genome).reshape(1, -1))
        self.qmodel.reset_float()
        self.qmodel.set_bits(wb[0], ab[0], self.space.table.layer_start)

    def evaluate(
        self,
        genomes: np.ndarray,
        fidelity: str = "short",
        with_test: bool = False,
        seed: int | None = None,
        save_dir: str | Path | None = None,
    ) -> list[EvalResult]:
        """Evaluate a batch of genomes (sequentially in this process).

        Args:
            genomes: ``(n, n_genes)`` int.
            fidelity: ``"ptq"``, ``"tiny"`` (``qat.tiny_steps``), ``"short"`` (``qat.steps``)
                or ``"final"`` (``qat.final_steps``).
            with_test: also score the test split (final reports only).
            seed: QAT seed (default ``qat.seed``).
            save_dir: if given, the trained fake-quant state dict of each evaluated genome
                is saved there as ``<genome_hash>-<fidelity>.pt`` (for export).

        Returns:
            One :class:`EvalResult` per row; a diverged QAT is a failed result, not an error.
        """
        if fidelity not in FIDELITIES:
            raise ValueError(f"fidelity must be one of {FIDELITIES}, got {fidelity!r}")
        g = self.space.check(genomes)
        # the cache holds results at the configured seed; another seed is never cached
        use_cache = seed is None or seed == self.qat.seed
        out = []
        for row in g:
            hit = self.cached(row, fidelity, with_test, save_dir) if use_cache else None
            if hit is not None:
                out.append(hit)
                continue
            r = self._evaluate_one(row, fidelity, with_test,
                                   self.qat.seed if seed is None else seed)
            if save_dir is not None and not r.failed:
                d = Path(save_dir)
                d.mkdir(parents=True, exist_ok=True)
                tmp = d / f"{r.genome_hash}-{fidelity}.tmp"
                torch.save(self.qmodel.state_dict(), tmp)
                tmp.replace(d / f"{r.genome_hash}-{fidelity}.pt")
            if use_cache:
                self.remember(r)
            out.append(r)
        return out

    def cached(self, row: np.ndarray, fidelity: str, with_test: bool = False,
               save_dir: str | Path | None = None) -> EvalResult | None:
        """The cached result of ``row`` at ``fidelity``, if it answers the request: with a
        test score when ``with_test``, and with its state dict in ``save_dir`` when given."""
        hit = self.cache.get((genome_hash(row), fidelity))
        if hit is None or (with_test and hit.test_accuracy is None and not hit.failed):
            return None
        if save_dir is not None and not hit.failed and \
                not (Path(save_dir) / f"{hit.genome_hash}-{fidelity}.pt").is_file():
            return None
        return hit

    def remember(self, r: EvalResult) -> None:
        """Cache a result (and append it to ``cache_file``, one JSON line, flushed)."""
        self.cache[(r.genome_hash, r.fidelity)] = r
        if self.cache_file:
            _append_line(self.cache_file, r.to_json())

    def model_for(self, genome: np.ndarray, fidelity: str = "final", seed: int | None = None
                  ) -> QuantModel:
        """Train ``genome`` at ``fidelity`` and return the fake-quant model (for export)."""
        self._start(genome)
        self._qat(self.steps(fidelity), self.qat.seed if seed is None else seed)
        return self.qmodel

    def steps(self, fidelity: str) -> int:
        """QAT steps of ``fidelity`` from the float weights."""
        q = self.qat
        return {"ptq": 0, "tiny": q.tiny_steps, "short": q.steps, "final": q.final_steps}[fidelity]

    # ------------------------------------------------------------ internals
    def _start(self, genome: np.ndarray) -> None:
        """:meth:`apply`, then re-estimate the BatchNorm statistics under the new bits."""
        self.apply(genome)
        self.qmodel.reestimate_bn(self._bn_batches)

    def _qat(self, steps: int, seed: int, state: TrainState | None = None) -> None:
        q = self.qmodel
        groups = [
            {"params": q.weight_parameters(), "lr": self.qat.lr},
            {"params": q.quant_parameters(), "lr": self.qat.quant_lr},
        ]
        train_steps(q, self.task, steps, groups, self.qat.batch_size, seed, self.device,
                    state=state)

    def __getstate__(self) -> dict[str, Any]:
        # sent to worker processes: the cache stays home
        d = self.__dict__.copy()
        d["cache"] = {}
        d["cache_file"] = None
        return d

    def _evaluate_one(self, row: np.ndarray, fidelity: str, with_test: bool, seed: int
                        ) -> EvalResult:
        c0 = time.process_time()
        r = self._evaluate_raw(row, fidelity, with_test, seed)
        return dataclasses.replace(r, cpu_seconds=time.process_time() - c0)

    def state_path(self, genome_hash: str) -> Path | None:
        """Where the short-QAT end state of ``genome_hash`` is kept (None: kept nowhere)."""
        return None if self.states_dir is None else self.states_dir / f"{genome_hash}-short.pt"

    def _save_state(self, h: str, state: TrainState) -> None:
        path = self.state_path(h)
        if path is None:
            return
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save({"model": self.qmodel.state_dict(), "train": vars(state)}, tmp)
            tmp.replace(path)
        except (OSError, RuntimeError) as e:  # disk full, file-size limit: only a saving lost
            tmp.unlink(missing_ok=True)
            log.warning("could not keep the short-QAT state %s (%s): its final QAT will "
                        "start from the float weights", path, e)

    def _load_state(self, row: np.ndarray, h: str) -> TrainState | None:
        """Put the saved short-QAT end state of ``h`` into the model (None: none saved, or
        one that no longer fits this model; the model then holds ``row`` on the float
        weights)."""
        path = self.state_path(h)
        if path is None or not path.is_file():
            return None
        try:
            saved = torch.load(path, map_location=self.device, weights_only=True)
            self.qmodel.load_state_dict(saved["model"])
            return TrainState(**saved["train"])
        except Exception as e:  # any damage (torn file, other model): not worth a failure
            log.warning("short-QAT state %s unreadable (%s): the final QAT starts from the "
                        "float weights", path, e)
            self._start(row)  # a failed load may have copied part of the state
            return None

    def _evaluate_raw(self, row: np.ndarray, fidelity: str, with_test: bool, seed: int
                      ) -> EvalResult:
        t0 = time.perf_counter()
        h = genome_hash(row)
        self._start(row)
        ptq, _ = evaluate_model(self.qmodel, self.task, self.task.val, self.device)
        steps = self.steps(fidelity)
        state = TrainState()
        start = "float"
        if fidelity == "final" and self.qat.final_from == "short":
            saved = self._load_state(row, h)
            if saved is not None:
                state, start, steps = saved, "short", self.qat.final_added
        try:
            self._qat(steps, seed, state)
        except Diverged as e:
            return EvalResult(h, fidelity, float("nan"), ptq, None, float("nan"),
                              time.perf_counter() - t0, True, f"QAT diverged: {e}",
                              start=start)
        val, loss = evaluate_model(self.qmodel, self.task, self.task.val, self.device)
        if not np.isfinite(loss):
            return EvalResult(h, fidelity, float("nan"), ptq, None, loss,
                              time.perf_counter() - t0, True, "validation loss is not finite",
                              start=start)
        if fidelity == "short" and steps > 0:
            self._save_state(h, state)
        test = None
        if with_test:
            test, _ = evaluate_model(self.qmodel, self.task, self.task.test, self.device)
        return EvalResult(h, fidelity, val, ptq, test, loss, time.perf_counter() - t0,
                          start=start)


def evaluate_uniform(
    evaluator: Evaluator, settings: Sequence[tuple[int, int, str]]
) -> list[tuple[str, EvalResult]]:
    """Evaluate uniform ``(w_bits, a_bits, fidelity)`` settings with test accuracy."""
    out = []
    for w, a, fid in settings:
        g = evaluator.space.uniform(w, a)
        out.append((f"w{w}a{a}-{fid}", evaluator.evaluate(g, fid, with_test=True)[0]))
    return out


def _append_line(path: Path, line: str) -> None:
    """Append one JSON line to ``path``: after a torn last line (a crash mid-write) on a line
    of its own; a write that fails (disk full, file-size limit) is cut back off, so the
    file holds only whole lines, and raised as ``OSError`` naming ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(path, "ab", buffering=0) as f:
            size = f.seek(0, os.SEEK_END)
            sep = b""
            if size:
                with open(path, "rb") as r:
                    r.seek(size - 1)
                    sep = b"" if r.read(1) == b"\n" else b"\n"
            view = memoryview(sep + line.encode() + b"\n")
            try:
                while view:
                    view = view[f.write(view) or 0:]
            except OSError:
                with contextlib.suppress(OSError):
                    os.truncate(path, size)
                raise
    except OSError as e:
        raise OSError(e.errno, e.strerror, str(path)) from e
