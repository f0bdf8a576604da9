"""The asynchronous controller's work per landed result (issue 14): a place that frees in
the queue is filled at once from the candidates chosen ahead, with no refit and no search
in between; candidates are chosen ahead while the queue is full, whenever fewer than one
per live worker are in reserve; the surrogate is refitted only once enough results landed
(``AsyncState.ahead``: 5% of the data, at least one result per live worker), and not while
the queue is deep (the initial design), so the workers never wait on the controller."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from optuna.trial import TrialState

from evomp.engines import Proposals
from evomp.evaluation import EvalResult
from evomp.run import load_spec, open_run
from evomp.search import AsyncState, Search, SearchOptions, build_parts
from evomp.space import genome_hash, genome_to_hex


class _Counting:
    """Counts the calls of a bound method and still runs it."""

    def __init__(self, fn: Any) -> None:
        self.fn, self.calls = fn, 0

    def __call__(self, *a: Any, **kw: Any) -> Any:
        self.calls += 1
        return self.fn(*a, **kw)


@dataclass
class _Controller:
    search: Search
    parts: Any
    fit: _Counting
    choose: _Counting
    rng: np.random.Generator
    top: float

    def accuracy(self, G: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Synthetic: more memory, more accuracy, with noise (a front to search for)."""
        c = self.parts.objectives.costs(G)
        acc = 0.3 + 0.6 * c["memory_bytes"] / self.top + 0.05 * self.rng.random(len(G))
        return np.clip(acc, 0.0, 1.0), c

    def land(self) -> None:
        """A worker's part: take the oldest queued candidate, tell a result."""
        task = self.parts.queue.take(("short",))
        assert task is not None, "the controller left the queue empty"
        a, c = self.accuracy(task.genome[None])
        self.parts.queue.tell(task, EvalResult(genome_hash(task.genome), "short", float(a[0]),
                                               0.1, seconds=1.0),
                              {k: float(v[0]) for k, v in c.items()})

    def pending(self) -> list[Any]:
        return self.parts.queue.pending("short")

    def waiting(self) -> int:
        return sum(t.state == TrialState.WAITING for t in self.pending())

    @property
    def calls(self) -> tuple[int, int]:
        return self.fit.calls, self.choose.calls


@pytest.fixture
def controller(tiny_runs: Any, tiny_tmp: Path,
               monkeypatch: pytest.MonkeyPatch) -> Iterator[_Controller]:
    """An asynchronous controller on the tiny spec with 30 synthetic results in its study;
    its fits and searches are counted."""
    spec = tiny_runs.spec(tiny_tmp, "ctl.toml", name="ctl", budget=200)
    ctx = open_run(load_spec(spec), tiny_runs.out(tiny_tmp, "ctl"), 1)
    try:
        parts = build_parts(ctx)
        s = Search(ctx, parts, SearchOptions(budget=200, mode="async"))
        rng = np.random.default_rng(0)
        G = ctx.space.random(30, rng)
        top = float(parts.objectives.costs(G)["memory_bytes"].max())
        c = _Controller(s, parts, _Counting(s._fit), _Counting(s._choose), rng, top)
        acc, costs = c.accuracy(G)
        for i, g in enumerate(G):
            parts.store.record(g, EvalResult(genome_hash(g), "short", float(acc[i]), 0.1,
                                             seconds=1.0),
                               {k: float(v[i]) for k, v in costs.items()}, round_=0,
                               source="synthetic")
        monkeypatch.setattr(s, "_fit", c.fit)
        monkeypatch.setattr(s, "_choose", c.choose)
        yield c
    finally:
        ctx.close()


def test_a_freed_place_is_filled_before_any_refit_or_search(controller: _Controller) -> None:
    c, s = controller, controller.search
    st = AsyncState(0, every=2)  # two live workers
    # the first look: a fit and a search for the room and the places that free next
    assert s.look(st, 2, [])
    assert c.calls == (1, 1) and st.n_fit == 30
    assert len(c.pending()) == 2
    assert st.reserve is not None and len(st.reserve[0]) == 2 + st.ahead - 1 - 2 == 1
    kept = genome_to_hex(st.reserve[0].genomes[0])
    # the queue is full, one in reserve (below one per live worker): chosen ahead again
    assert not s.look(st, 0, c.pending())
    assert c.calls == (1, 2)
    assert st.reserve is not None and len(st.reserve[0]) == 3
    assert kept not in {genome_to_hex(g) for g in st.reserve[0].genomes}  # not twice
    ahead = [genome_to_hex(g) for g in st.reserve[0].genomes]

    c.land()  # one result: its place is refilled from the reserve, nothing computed
    assert s.look(st, 1, c.pending())
    assert c.calls == (1, 2)
    assert c.pending()[-1].user_attrs["genome"] == ahead[0]
    # full again, two in reserve, one result since the fit: nothing to do
    assert not s.look(st, 0, c.pending())
    assert c.calls == (1, 2)

    c.land()
    assert s.look(st, 1, c.pending())  # from the reserve again
    assert c.calls == (1, 2) and c.pending()[-1].user_attrs["genome"] == ahead[1]
    # two results since the fit (one per live worker): a refit; one left in reserve, so
    # candidates are chosen ahead on the new model
    assert not s.look(st, 0, c.pending())
    assert c.calls == (2, 3) and st.n_fit == 32
    assert st.reserve is not None and len(st.reserve[0]) == 3


def test_no_refit_while_the_queue_is_deep(controller: _Controller) -> None:
    c, s = controller, controller.search
    st = AsyncState(0, every=2)
    assert not s.look(st, 0, [])  # the first model, candidates chosen ahead
    assert c.calls == (1, 1)
    # as in the initial design: many queued trials, results land, a refit is due, but a
    # model fitted now would be stale before it is needed
    G = c.search.ctx.space.random(8, c.rng)
    c.parts.queue.enqueue(Proposals(G), "short", round_=0, source="initial")
    c.land()
    c.land()
    assert c.waiting() == 6 > 2 * 2 and len(c.pending()) == 6
    assert not s.look(st, 0, c.pending())
    assert c.calls == (1, 1) and st.n_fit == 30
    c.land()
    c.land()
    assert c.waiting() == 4  # down to two per live worker: now it refits
    assert not s.look(st, 0, c.pending())
    assert c.fit.calls == 2 and st.n_fit == 34


def test_the_refit_spacing_grows_with_the_data() -> None:
    st = AsyncState(0)
    st.n_fit = 30
    assert st.ahead == 1  # small studies: a refit per result
    st.every = 4
    assert st.ahead == 4  # at least one result per live worker
    st.n_fit = 1000
    assert st.ahead == 50  # 5% of the data: the per-result work stays flat
