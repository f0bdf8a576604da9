"""The Optuna study that records every true evaluation of a run (both engines).

Default storage: a JournalStorage file ``study.journal`` in the run directory (appends are
atomic, so a killed process loses at most the evaluations in flight); any RDB URL such as
``postgresql://...`` for a cluster. optuna-dashboard opens either.

Each completed trial holds ``values = [accuracy, metric_1, ...]`` (accuracy maximised,
hardware metrics minimised), constraints through Optuna's constraint API, and user
attributes: ``genome`` (hex of the int8 genome: compact, never thousands of params),
``genome_hash``, ``fidelity``, ``ptq_accuracy``, ``seconds``, ``cpu_seconds``, ``round``,
``source``. Trials of the Optuna engine also carry its compact parameters.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import optuna
from optuna.trial import TrialState

from evomp._errors import EvompError
from evomp.evaluation import EvalResult
from evomp.objectives import Objectives
from evomp.space import genome_from_hex, genome_to_hex

__all__ = ["Store", "Record"]

optuna.logging.set_verbosity(optuna.logging.WARNING)
log = logging.getLogger("evomp")


@dataclass(frozen=True)
class Record:
    """One stored true evaluation, decoded once from its trial.

    Attributes:
        number: the trial number.
        genome: ``(n_genes,)`` int8.
        genome_hash / fidelity: the evaluation's key.
        val_accuracy: measured validation accuracy (NaN when failed).
        ptq_accuracy: validation accuracy right after quantization.
        failed / reason: whether (and why) the evaluation failed.
        seconds / cpu_seconds: wall and CPU time of the evaluation.
        round: search round (0 = initial design; -1 = a worker's own proposal).
        slot: row within its batch (the canonical training order), or None.
        source: ``"initial"``, ``"round"``, ``"screen"`` (a screening fidelity) or
            ``"worker"``.
        predicted_accuracy / predicted_std: the surrogate's prediction made before the
            candidate was trained (round candidates only), else None.
        costs: ``{metric: value}`` hardware costs stored with the trial.
        test_accuracy: the test score (final QATs of front candidates), else None.
        worker: the worker that evaluated it (``host:pid``), or "" when recorded directly.
        model_artifact: artifact id of the trained state dict a worker uploaded, or None.
    """

    number: int
    genome: np.ndarray
    genome_hash: str
    fidelity: str
    val_accuracy: float
    ptq_accuracy: float
    failed: bool
    reason: str = ""
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    round: int | None = None
    slot: int | None = None
    source: str = ""
    predicted_accuracy: float | None = None
    predicted_std: float | None = None
    costs: Mapping[str, float] = field(default_factory=dict)
    test_accuracy: float | None = None
    worker: str = ""
    model_artifact: str | None = None

    def result(self) -> EvalResult:
        """The evaluation as an :class:`~evomp.evaluation.EvalResult`."""
        return EvalResult(self.genome_hash, self.fidelity, self.val_accuracy,
                          self.ptq_accuracy, self.test_accuracy, float("nan"), self.seconds,
                          self.failed, self.reason, self.cpu_seconds)


def _opt_float(v: Any) -> float | None:
    return None if v is None else float(v)


def _opt_int(v: Any) -> int | None:
    return None if v is None else int(v)


class Store:
    """Records and reloads true evaluations in an Optuna study.

    Args:
        storage: an Optuna storage or URL.
        study_name: the study's name (the run's name).
        objectives: the run's objectives (directions and metric names).
        sampler: sampler for ask/tell (the Optuna engine and workers); None = default.
    """

    def __init__(
        self,
        storage: optuna.storages.BaseStorage | str,
        study_name: str,
        objectives: Objectives,
        sampler: optuna.samplers.BaseSampler | None = None,
    ) -> None:
        directions: list[Literal["minimize", "maximize"]] = [
            "maximize" if n == "accuracy" else "minimize" for n in objectives.names
        ]
        # several workers may create the same study (and the schema) at the same moment:
        # the losers of that race retry and load what the winner created
        for attempt in range(6):
            try:
                self.study = optuna.create_study(
                    storage=storage, study_name=study_name, directions=directions,
                    load_if_exists=True, sampler=sampler,
                )
                break
            except Exception as e:  # e.g. unreachable database, or the creation race
                if attempt == 5:
                    raise EvompError(f"cannot open the study {study_name!r}: {e}") from e
                time.sleep(0.2 + random.random() * (attempt + 1))
        got = [d.name.lower() for d in self.study.directions]
        if got != directions:
            raise EvompError(
                f"study {study_name!r} exists with directions {got}, but this spec's objectives "
                f"{objectives.names} need {directions}; use another --out or --storage"
            )
        saved = self.study.user_attrs.get("objectives")
        if saved is None:
            self.study.set_user_attr("objectives", list(objectives.names))
        elif list(saved) != list(objectives.names):
            raise EvompError(
                f"study {study_name!r} was made for objectives {saved}, not {objectives.names}; "
                "use another --out or --storage"
            )
        self.objectives = objectives
        self._decoded: dict[int, Record | None] = {}

    # -------------------------------------------------------------- writing
    def values_and_constraints(
        self, result: EvalResult, costs: Mapping[str, float]
    ) -> tuple[list[float], dict[str, float]]:
        o = self.objectives
        values = [result.val_accuracy if n == "accuracy" else float(costs[n]) for n in o.names]
        cons = {}
        for c in o.constraints:
            v = result.val_accuracy if c.metric == "accuracy" else float(costs[c.metric])
            cons[str(c)] = float(v - c.bound if c.op == "<=" else c.bound - v)
        return values, cons

    def user_attrs(self, genome: np.ndarray, result: EvalResult, costs: Mapping[str, float],
                   round_: int, source: str) -> dict[str, Any]:
        return {
            "genome": genome_to_hex(genome),
            "genome_hash": result.genome_hash,
            "fidelity": result.fidelity,
            "ptq_accuracy": result.ptq_accuracy,
            "seconds": result.seconds,
            "cpu_seconds": result.cpu_seconds,
            "round": round_,
            "source": source,
            "reason": result.reason,
            **{f"m.{k}": float(v) for k, v in costs.items()},
        }

    def record(
        self,
        genome: np.ndarray,
        result: EvalResult,
        costs: Mapping[str, float],
        *,
        round_: int,
        source: str,
        params: dict[str, Any] | None = None,
        distributions: dict[str, optuna.distributions.BaseDistribution] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        """Add one finished evaluation as a trial (failed ones as FAIL with the reason).

        ``extra`` adds user attributes, e.g. the surrogate's ``predicted_accuracy`` and
        ``predicted_std`` of a candidate chosen in a round.
        """
        attrs = {**self.user_attrs(genome, result, costs, round_, source), **(extra or {})}
        if result.failed:
            trial = optuna.trial.create_trial(
                state=TrialState.FAIL, params=params or {}, distributions=distributions or {},
                user_attrs=attrs,
            )
        else:
            values, cons = self.values_and_constraints(result, costs)
            trial = optuna.trial.create_trial(
                state=TrialState.COMPLETE, values=values, params=params or {},
                distributions=distributions or {}, user_attrs=attrs,
                constraints=cons or None,
            )
        self.study.add_trial(trial)

    # -------------------------------------------------------------- reading
    def records(self, fidelity: str = "short") -> list[Record]:
        """Every stored evaluation at ``fidelity`` (completed and failed), in trial order.

        Each finished trial is decoded once and kept: a call reads the study's trials
        (Optuna's storages cache finished ones) and decodes only those it has not seen.
        """
        trials = self.study.get_trials(deepcopy=False,
                                       states=(TrialState.COMPLETE, TrialState.FAIL))
        i_acc = self.objectives.names.index("accuracy")
        for t in trials:
            if t.number in self._decoded:
                continue
            ua = t.user_attrs
            if "genome" not in ua or "fidelity" not in ua or "seconds" not in ua \
                    or ua.get("requeued"):
                # not a result: e.g. a queued trial failed because its worker died
                self._decoded[t.number] = None
                continue
            failed = t.state == TrialState.FAIL
            self._decoded[t.number] = Record(
                number=t.number, genome=genome_from_hex(ua["genome"]),
                genome_hash=ua["genome_hash"], fidelity=ua["fidelity"],
                val_accuracy=float("nan") if failed else float(t.values[i_acc]),
                ptq_accuracy=float(ua.get("ptq_accuracy", np.nan)), failed=failed,
                reason=str(ua.get("reason", "")), seconds=float(ua.get("seconds", 0.0)),
                cpu_seconds=float(ua.get("cpu_seconds", 0.0)), round=_opt_int(ua.get("round")),
                slot=_opt_int(ua.get("slot")), source=str(ua.get("source", "")),
                predicted_accuracy=_opt_float(ua.get("predicted_accuracy")),
                predicted_std=_opt_float(ua.get("predicted_std")),
                costs={k[2:]: float(v) for k, v in ua.items() if k.startswith("m.")},
                test_accuracy=_opt_float(ua.get("test_accuracy")),
                worker=str(ua.get("worker", "")), model_artifact=ua.get("model_artifact"),
            )
        return [r for t in trials if (r := self._decoded[t.number]) is not None
                and r.fidelity == fidelity]

    def n_true(self, fidelity: str = "short") -> int:
        return len(self.records(fidelity))

    def costs(self, records: list[Record]) -> dict[str, np.ndarray]:
        """``{metric: (n,)}`` hardware costs of ``records``, read back from their trials;
        computed only for records stored without some metric (an older study)."""
        metrics = self.objectives.metrics
        if not records:
            return {m: np.zeros(0) for m in metrics}
        if any(not all(m in r.costs for m in metrics) for r in records):
            return self.objectives.costs(np.stack([r.genome for r in records]))
        return {m: np.array([r.costs[m] for r in records], dtype=float) for m in metrics}
