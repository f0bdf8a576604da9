"""Successive halving over the cheap fidelities (issue 15): each round screens
``per_round * screen_factor ** len(screen)`` candidates, every rung promotes exactly its
``1 / screen_factor`` share, every screening is a trial of its fidelity in the study, and a
resumed run evaluates nothing again at any fidelity."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

import surrogates
from evomp.cli import main
from evomp.engines import Proposals
from evomp.run import load_run_study, load_spec, open_run
from evomp.search import build_parts, promoted
from evomp.space import genome_hash

LOOP = dict(steps=5, final_steps=5, final_max=1, initial=4, per_round=2, population=16)


def test_promoted_share() -> None:
    assert promoted(18, 3, 6) == 6  # the full share
    assert promoted(7, 3, 6) == 3  # rounded up
    assert promoted(2, 3, 6) == 1  # at least one
    assert promoted(40, 3, 6) == 6  # never above the next rung's size


def _spy_ehvi(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int, np.ndarray]]:
    """Every call of the EHVI rule: (pool size, k asked, rows chosen); it still chooses."""
    real = surrogates.select_ehvi
    calls: list[tuple[int, int, np.ndarray]] = []

    def spy(mean: np.ndarray, *args: Any, **kw: Any) -> np.ndarray:
        out = np.asarray(real(mean, *args, **kw))
        calls.append((len(mean), int(args[4]), out))
        return out

    monkeypatch.setattr(surrogates, "select_ehvi", spy)
    return calls


def _trials(out: Path) -> list[optuna.trial.FrozenTrial]:
    study = load_run_study(out)
    assert study is not None
    return study.get_trials(deepcopy=False)


@pytest.mark.parametrize(("screen", "eta", "sizes"), [
    ('["ptq"]', 3, [6, 2]),
    ('["ptq", "tiny"]', 2, [8, 4, 2]),
])
def test_each_rung_promotes_exactly_its_share(tiny_runs: Any, tiny_tmp: Path,
                                              monkeypatch: pytest.MonkeyPatch, screen: str,
                                              eta: int, sizes: list[int]) -> None:
    calls = _spy_ehvi(monkeypatch)
    name = f"sh{eta}"
    spec = tiny_runs.spec(tiny_tmp, f"{name}.toml", name=name, budget=6,
                          search=f"screen = {screen}\nscreen_factor = {eta}", **LOOP)
    out = tiny_runs.out(tiny_tmp, name)
    assert main(["run", str(spec), "--out", str(out), "--quiet"]) == 0
    # one round of 2 after 4 initial evaluations: k * eta^R chosen on the genome
    # surrogate, then each rung keeps exactly 1/eta of the rung before
    assert [k for _, k, _ in calls] == sizes
    for (_, _, chose), (pool, k, got) in zip(calls, calls[1:]):
        assert pool == len(chose) and len(got) == k == len(chose) // eta
    trials = [t for t in _trials(out) if t.state == TrialState.COMPLETE]
    by = {f: [t for t in trials if t.user_attrs["fidelity"] == f] for f in
          ("ptq", "tiny", "short")}
    rounds = [t for t in by["short"] if t.user_attrs["source"] == "round"]
    assert len(by["short"]) == 6 and len(rounds) == 2
    # every short-QAT genome was screened at every rung (the initial design's too: the
    # rung surrogates learn from those pairs), and the round candidates were promoted
    short = {t.user_attrs["genome_hash"] for t in by["short"]}
    for fid in ("ptq", "tiny") if eta == 2 else ("ptq",):
        screened = {t.user_attrs["genome_hash"] for t in by[fid]}
        assert short <= screened and len(screened) > len(short)
        assert all(t.user_attrs["source"] == "screen" for t in by[fid])
    if eta == 3:
        assert not by["tiny"]
    # a screening records its fidelity's accuracy; a PTQ trial trained nothing
    assert all(t.values[0] == t.user_attrs["ptq_accuracy"] for t in by["ptq"])
    # the promoted candidates carry the rung surrogate's prediction (pooled tau)
    assert all("predicted_accuracy" in t.user_attrs for t in rounds)


def test_a_resumed_run_repeats_no_evaluation_of_any_fidelity(
        tiny_runs: Any, tiny_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tiny_runs.spec(tiny_tmp, "re.toml", name="re", budget=6,
                          search='screen = ["ptq", "tiny"]\nscreen_factor = 2', **LOOP)
    out = tiny_runs.out(tiny_tmp, "re")
    assert main(["run", str(spec), "--out", str(out), "--quiet"]) == 0
    first = {t.number: (t.state, t.values) for t in _trials(out)}
    # a controller killed in a round leaves screenings queued: one of a new genome
    ctx = open_run(load_spec(spec), out, lock=False)
    try:
        parts = build_parts(ctx)
        seen = {t.user_attrs.get("genome_hash") for t in _trials(out)}
        g = ctx.space.random(8, np.random.default_rng(5))
        g = g[[genome_hash(row) not in seen for row in g]][:1]
        assert len(g) == 1
        parts.queue.enqueue(Proposals(g), "tiny", round_=9, source="screen")
    finally:
        ctx.close()
    assert main(["run", str(spec), "--out", str(out), "--quiet", "--budget", "8"]) == 0
    trials = _trials(out)
    # nothing recorded changed, the queued screening was evaluated, nothing is pending
    assert {n: (t.state, t.values) for t in trials if (n := t.number) in first} == first
    assert not [t for t in trials if t.state in (TrialState.WAITING, TrialState.RUNNING)]
    done = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.FAIL)
            and not t.user_attrs.get("requeued")]
    keys = Counter((t.user_attrs["genome_hash"], t.user_attrs["fidelity"]) for t in done)
    assert max(keys.values()) == 1  # each genome once per fidelity
    assert sum(1 for _, f in keys if f == "short") == 8
    assert {f for _, f in keys} == {"ptq", "tiny", "short", "final"}
    capsys.readouterr()
    assert main(["status", str(out), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["true_evaluations"] == 8
    assert got["screened"] == {f: sum(1 for _, g in keys if g == f) for f in ("ptq", "tiny")}
    # and a third start with nothing to do evaluates nothing
    n = len(trials)
    assert main(["run", str(spec), "--out", str(out), "--quiet", "--budget", "8"]) == 0
    assert len(_trials(out)) == n
