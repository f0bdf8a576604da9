"""The asynchronous controller's work per landed result (issue 14): a place that frees in
the queue is filled at once from the candidates chosen ahead, with no refit and no search
in between; the surrogate is refitted only once enough results landed (``AsyncState.ahead``:
5% of the data, at least one result per live worker) and only when the queue is down to
two trials per live worker; candidates are chosen ahead while the queue is full, so the
workers never wait on the controller's computation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from optuna.trial import TrialState

from evomp.evaluation import EvalResult
from evomp.run import load_spec, open_run
from evomp.search import AsyncState, Search, SearchOptions, build_parts
from evomp.space import genome_hash, genome_to_hex


def _synthetic_accuracy(costs: dict[str, np.ndarray], rng: np.random.Generator,
                        top: float) -> np.ndarray:
    """Higher accuracy for more memory, with noise: a front to search for."""
    m = costs["memory_bytes"]
    return np.clip(0.3 + 0.6 * m / top + 0.05 * rng.random(len(m)), 0.0, 1.0)


class _Counting:
    """Counts the calls of a bound method and still runs it."""

    def __init__(self, fn: Any) -> None:
        self.fn, self.calls = fn, 0

    def __call__(self, *a: Any, **kw: Any) -> Any:
        self.calls += 1
        return self.fn(*a, **kw)


def test_a_freed_place_is_filled_before_any_refit_or_search(
        tiny_runs: Any, tiny_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = tiny_runs.spec(tiny_tmp, "ctl.toml", name="ctl", budget=200)
    ctx = open_run(load_spec(spec), tiny_runs.out(tiny_tmp, "ctl"), 1)
    try:
        parts = build_parts(ctx)
        s = Search(ctx, parts, SearchOptions(budget=200, mode="async"))
        rng = np.random.default_rng(0)
        G = ctx.space.random(30, rng)
        top = float(parts.objectives.costs(G)["memory_bytes"].max())
        acc = _synthetic_accuracy(parts.objectives.costs(G), rng, top)
        for g, a in zip(G, acc):
            costs = {k: float(v[0]) for k, v in parts.objectives.costs(g[None]).items()}
            parts.store.record(g, EvalResult(genome_hash(g), "short", float(a), 0.1,
                                             seconds=1.0), costs, round_=0, source="synthetic")
        fit, choose = _Counting(s._fit), _Counting(s._choose)
        monkeypatch.setattr(s, "_fit", fit)
        monkeypatch.setattr(s, "_choose", choose)
        queue = parts.queue

        def land() -> None:
            """A worker's part: take the oldest queued candidate, tell a result."""
            task = queue.take(("short",))
            assert task is not None, "the controller left the queue empty"
            c = parts.objectives.costs(task.genome[None])
            a = _synthetic_accuracy(c, rng, top)
            queue.tell(task, EvalResult(genome_hash(task.genome), "short", float(a[0]), 0.1,
                                        seconds=1.0), {k: float(v[0]) for k, v in c.items()})

        st = AsyncState(0, every=2)  # two live workers
        # the first look: a fit and a search for the room and the places that free next
        assert s.look(st, 2, [], spare=2)
        assert (fit.calls, choose.calls, st.n_fit) == (1, 1, 30)
        assert len(queue.pending("short")) == 2
        assert st.reserve is not None and len(st.reserve[0]) == 2 + st.ahead - 1 - 2 == 1
        kept = genome_to_hex(st.reserve[0].genomes[0])
        assert not s.look(st, 0, queue.pending("short"), spare=2)  # full, nothing due
        assert (fit.calls, choose.calls) == (1, 1)

        land()  # one result: its place is refilled from the reserve, nothing computed
        assert s.look(st, 1, queue.pending("short"), spare=2)
        assert (fit.calls, choose.calls) == (1, 1)
        assert queue.pending("short")[-1].user_attrs["genome"] == kept
        # the queue is full again, one result since the fit (below one per live worker):
        # no refit, but a search on the current model for the places that free next
        assert not s.look(st, 0, queue.pending("short"), spare=2)
        assert (fit.calls, choose.calls) == (1, 2)
        assert st.reserve is not None and len(st.reserve[0]) == 3

        land()
        assert s.look(st, 1, queue.pending("short"), spare=2)  # from the reserve again
        assert (fit.calls, choose.calls) == (1, 2)
        # two results since the fit: now it refits, and chooses ahead on the new model
        assert not s.look(st, 0, queue.pending("short"), spare=2)
        assert (fit.calls, choose.calls, st.n_fit) == (2, 3, 32)
        assert st.reserve is not None and len(st.reserve[0]) == 3

        # a deep queue (as in the initial design): a refit is due, but a model fitted now
        # would be stale before it is needed; nothing is computed until the queue is down
        # to two trials per live worker (here one)
        assert s.look(st, 3, queue.pending("short"), spare=2)  # the reserve queued
        land()
        land()
        waiting = [t for t in queue.pending("short") if t.state == TrialState.WAITING]
        assert len(waiting) == 3
        assert not s.look(st, 0, queue.pending("short"), spare=1)
        assert (fit.calls, choose.calls, st.n_fit) == (2, 3, 32)
        land()
        assert not s.look(st, 0, queue.pending("short"), spare=1)  # 2 waiting: refit
        assert (fit.calls, choose.calls, st.n_fit) == (3, 4, 35)
    finally:
        ctx.close()


def test_the_refit_spacing_grows_with_the_data() -> None:
    st = AsyncState(0)
    st.n_fit = 30
    assert st.ahead == 1  # small studies: a refit per result
    st.every = 4
    assert st.ahead == 4  # at least one result per live worker
    st.n_fit = 1000
    assert st.ahead == 50  # 5% of the data: the per-result work stays flat
