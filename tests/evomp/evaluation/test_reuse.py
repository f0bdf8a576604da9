"""A final QAT continues its genome's saved short-QAT state (issue 15): exactly as if the
short QAT had gone on uninterrupted in memory, with weights, quantizer ranges, BatchNorm
statistics, Adam moments and the position in the data all carried over through the file."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from evomp import Evaluator, QATConfig, SearchSpace
from evomp.tasks import Task, TrainState

#: 200 training samples in batches of 32: 7 batches an epoch, so 10 short steps stop in the
#: middle of the second epoch
QAT = QATConfig(steps=10, final_steps=25, added_steps=9, batch_size=32, final_from="short")


def _state(ev: Evaluator) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in ev.qmodel.state_dict().items()}


def test_a_final_qat_continues_the_saved_short_state_exactly(
        trained: tuple[Task, nn.Module, SearchSpace], tmp_path: Path) -> None:
    task, m, space = trained
    g = space.random(1, 3)
    # the reference: one evaluator trains the short QAT and goes on, nothing saved or loaded
    ref = Evaluator(task, space, m, QAT)
    ref._start(g[0])  # the bits, then the BatchNorm statistics re-estimated
    state = TrainState()
    ref._qat(QAT.steps, QAT.seed, state)
    ref._qat(QAT.final_added, QAT.seed, state)
    assert state.steps == QAT.steps + QAT.final_added == 19
    want = _state(ref)
    # the run: the short QAT saves its end state; another evaluator (another process, as
    # far as the file goes) continues it for the final QAT
    short = Evaluator(task, space, m, QAT, states_dir=tmp_path).evaluate(g, "short")[0]
    assert (tmp_path / f"{short.genome_hash}-short.pt").is_file()
    ev = Evaluator(task, space, m, QAT, states_dir=tmp_path)
    final = ev.evaluate(g, "final", with_test=True)[0]
    assert final.start == "short" and not final.failed
    got = _state(ev)
    assert got.keys() == want.keys()
    for k in want:
        assert torch.equal(got[k], want[k]), k  # bit for bit, BatchNorm statistics included
    assert any("running_mean" in k for k in want)
    # a continuation that forgot the Adam moments or the data position would differ
    lost = Evaluator(task, space, m, QAT)
    lost._start(g[0])
    lost._qat(QAT.steps, QAT.seed, TrainState())
    lost._qat(QAT.final_added, QAT.seed, TrainState())
    assert not all(torch.equal(_state(lost)[k], want[k]) for k in want)


def test_without_a_state_or_when_asked_the_final_qat_starts_from_float(
        trained: tuple[Task, nn.Module, SearchSpace], tmp_path: Path) -> None:
    task, m, space = trained
    g = space.random(1, 4)
    Evaluator(task, space, m, QAT, states_dir=tmp_path).evaluate(g, "short")
    ev = Evaluator(task, space, m, QATConfig(**{**QAT.__dict__, "final_from": "float"}),
                   states_dir=tmp_path)
    assert ev.evaluate(g, "final")[0].start == "float"
    other = space.random(1, 5)  # never short-trained here: no state
    assert Evaluator(task, space, m, QAT, states_dir=tmp_path).evaluate(
        other, "final")[0].start == "float"
    (tmp_path / "x").mkdir()  # a damaged state file: warned, trained from float
    bad = Evaluator(task, space, m, QAT, states_dir=tmp_path / "x")
    (tmp_path / "x" / f"{bad.evaluate(other, 'ptq')[0].genome_hash}-short.pt").write_bytes(
        b"torn")
    assert bad.evaluate(other, "final")[0].start == "float"
    # from float, the final QAT is the plain final_steps one
    plain = Evaluator(task, space, m, QAT)
    a = plain.evaluate(other, "final")[0]
    assert a.start == "float" and a.val_accuracy == bad.evaluate(other, "final")[0].val_accuracy
