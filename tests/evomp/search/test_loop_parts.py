"""Every selection rule and every surrogate name runs through the search loop: a tiny search
through ``evomp run`` per name (4 initial evaluations, one round of 2), asserting what only
that rule or predictor would have produced."""

from __future__ import annotations

import copy
import csv
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from optuna.storages.journal import JournalFileBackend, JournalStorage

import surrogates
from evomp.cli import main
from evomp.search import SELECTIONS, SURROGATES
from evomp.space import genome_from_hex

#: the run's predictor class per ``search.surrogate`` name (``surrogate_quality.csv``'s
#: ``model`` column; ``auto`` writes the name of the candidate it chose instead)
PREDICTOR = {"gp": "GPSurrogate", "forest": "ForestSurrogate",
             "boosting": "BoostingSurrogate", "hawq": "HawqProxy",
             "ensemble": "EnsembleSurrogate"}
#: the rules not covered by the other end-to-end tests (``ehvi`` is the default)
RULES = ("uncertainty", "diverse")
#: one round of 2 after 4 initial evaluations, few QAT steps
LOOP = dict(budget=6, initial=4, per_round=2, steps=5, final_steps=5, final_max=1)
#: the rule's own function, whatever a test patches in its place
SELECT_DIVERSE = surrogates.select_diverse


def _run(tiny_runs: Any, tmp: Path, name: str, line: str) -> Path:
    """A tiny search with ``line`` added to ``[search]``; returns its run directory."""
    spec = tiny_runs.spec(tmp, f"{name}.toml", name=name, search=line, **LOOP)
    out = tiny_runs.out(tmp, name)
    assert main(["run", str(spec), "--out", str(out), "--quiet"]) == 0
    return out


def _round_trials(out: Path, name: str) -> list[optuna.trial.FrozenTrial]:
    storage = JournalStorage(JournalFileBackend(str(out / "study.journal")))
    trials = optuna.load_study(study_name=name, storage=storage).trials
    return [t for t in trials if t.user_attrs.get("source") == "round"]


def test_every_name_is_covered() -> None:
    """A new predictor or rule fails here until it is run through the loop below."""
    assert set(SURROGATES.names()) == {"auto", *PREDICTOR}
    assert set(SELECTIONS.names()) == {"ehvi", *RULES}
    for name, cls in PREDICTOR.items():
        assert type(SURROGATES.get(name)(0)).__name__ == cls


@pytest.mark.parametrize("name", sorted(PREDICTOR))
def test_surrogate_name_is_the_fitted_predictor(tiny_runs: Any, tiny_tmp: Path,
                                                name: str) -> None:
    out = _run(tiny_runs, tiny_tmp, f"s-{name}", f'surrogate = "{name}"')
    with (out / "surrogate_quality.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and rows[0]["round"] == "1" and rows[0]["n_train"] == "4"
    assert rows[0]["model"] == PREDICTOR[name]
    assert len(_round_trials(out, f"s-{name}")) == 2


def _spy(monkeypatch: pytest.MonkeyPatch, fn_name: str) -> list[dict[str, Any]]:
    """Record every call of ``surrogates.<fn_name>`` (which still does the work): its
    arguments (the generator copied before the call) and what it returned."""
    real = getattr(surrogates, fn_name)
    calls: list[dict[str, Any]] = []

    def spy(*args: Any, **kw: Any) -> np.ndarray:
        rec = {"args": [np.array(a, copy=True) if isinstance(a, np.ndarray) else a
                        for a in args], "kw": dict(kw)}
        rec["rng"] = copy.deepcopy(args[2] if len(args) > 2 else kw.get("rng"))
        rec["out"] = np.asarray(real(*args, **kw))
        calls.append(rec)
        return rec["out"]

    monkeypatch.setattr(surrogates, fn_name, spy)
    return calls


def test_uncertainty_rule_picks_the_most_uncertain(tiny_runs: Any, tiny_tmp: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _spy(monkeypatch, "select_uncertain")
    out = _run(tiny_runs, tiny_tmp, "r-uncertainty", 'selection = "uncertainty"')
    assert len(calls) == 1  # the one round chose with this rule
    mean, std, k = calls[0]["args"]
    picked = calls[0]["out"]
    assert k == 2 and len(mean) == len(std) > k
    # the rule's own choice: the k largest predicted std of the round's pool
    np.testing.assert_allclose(np.sort(std[picked]), np.sort(std)[-k:])
    # ... and those are the candidates the loop evaluated (their predictions are recorded)
    trials = _round_trials(out, "r-uncertainty")
    got = sorted((t.user_attrs["predicted_accuracy"], t.user_attrs["predicted_std"])
                 for t in trials)
    want = sorted(zip(mean[picked].tolist(), std[picked].tolist(), strict=True))
    np.testing.assert_allclose(got, want)


def test_diverse_rule_picks_far_apart_genomes(tiny_runs: Any, tiny_tmp: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _spy(monkeypatch, "select_diverse")
    out = _run(tiny_runs, tiny_tmp, "r-diverse", 'selection = "diverse"')
    assert len(calls) == 1
    pool, k = calls[0]["args"][:2]
    picked = calls[0]["out"]
    assert k == 2 and pool.shape[0] > k
    # the round evaluated exactly the pool genomes the rule picked
    trials = _round_trials(out, "r-diverse")
    G = np.stack([genome_from_hex(t.user_attrs["genome"]) for t in trials])
    assert pool.shape[1] == G.shape[1]  # the pool is genomes
    assert sorted(map(tuple, G.astype(int))) == sorted(map(tuple, pool[picked].astype(int)))
    # farthest-point: the second pick is the pool member farthest from the first
    sd = pool.std(0)
    z = (pool - pool.mean(0)) / np.where(sd == 0, 1.0, sd)
    d = ((z - z[picked[0]]) ** 2).sum(1)
    assert d[picked[1]] == pytest.approx(d.max())
    # and the same generator makes the rule pick the same again
    np.testing.assert_array_equal(
        np.asarray(SELECT_DIVERSE(pool, k, calls[0]["rng"])), picked)
