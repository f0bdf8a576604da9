from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from evomp import Evaluator, EvompError, QATConfig, SearchSpace, TrainConfig, pretrain
from evomp.tasks import Task, TensorData, from_arrays, from_npz, get_task


def _blobs(n: int = 240, seed: int = 0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.normal(size=(n, 2, 8)).astype(np.float32) + y[:, None, None] * 1.5
    return x[:200], y[:200], x[200:], y[200:]


def _model() -> nn.Module:
    return nn.Sequential(nn.Conv1d(2, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(64, 3))


@pytest.fixture
def blob_task() -> Task:
    return from_arrays(*_blobs(), model_factory=_model, name="blobs", seed=0)


def test_builtin_tasks_offline() -> None:
    t = get_task("mnist1d")
    assert len(t.train) == 3500 and len(t.val) == 500 and len(t.test) == 1000
    assert tuple(t.example_input().shape) == (8, 1, 40)
    assert abs(float(t.train.x.mean())) < 1e-3  # scaled with training statistics
    d = get_task("digits", "mobilenetv1")
    assert d.model_factory()(d.example_input()).shape == (8, 10)
    with pytest.raises(EvompError, match="unknown task"):
        get_task("imagenet")
    with pytest.raises(EvompError, match="does not fit task"):
        get_task("digits", "cnn1d")


def test_from_arrays_and_npz(tmp_path: Path) -> None:
    xt, yt, xs, ys = _blobs()
    np.savez(tmp_path / "d.npz", x_train=xt, y_train=yt, x_test=xs, y_test=ys)
    t = from_npz(tmp_path / "d.npz", _model)
    assert len(t.train) + len(t.val) == 200 and len(t.test) == 40
    np.savez(tmp_path / "bad.npz", x_train=xt, y_train=yt)
    with pytest.raises(EvompError, match=r"lacks arrays \['x_test', 'y_test'\]"):
        from_npz(tmp_path / "bad.npz", _model)
    with pytest.raises(EvompError, match="does not exist"):
        from_npz(tmp_path / "none.npz", _model)
    with pytest.raises(EvompError, match="integer class labels"):
        from_arrays(xt, yt.astype(float), xs, ys, model_factory=_model)
    with pytest.raises(EvompError, match="differ in length"):
        TensorData(torch.zeros(3, 2), torch.zeros(2, dtype=torch.long))


def test_pretrain_cached_and_deterministic(blob_task: Task, tmp_path: Path) -> None:
    cfg = TrainConfig(epochs=3, lr=1e-2, batch_size=32)
    m1, i1 = pretrain(blob_task, cfg, cache_path=tmp_path / "f.pt")
    m2, i2 = pretrain(blob_task, cfg, cache_path=tmp_path / "f.pt")
    assert not i1["cached"] and i2["cached"]
    m3, _ = pretrain(blob_task, cfg)
    for a, b, c in zip(m1.parameters(), m2.parameters(), m3.parameters()):
        assert torch.equal(a, b) and torch.equal(a, c)
    assert i1["val_accuracy"] > 0.8
    # a changed config retrains instead of reusing a stale checkpoint
    _, i4 = pretrain(blob_task, TrainConfig(epochs=2, lr=1e-2, batch_size=32), tmp_path / "f.pt")
    assert not i4["cached"]


def test_qat_deterministic_and_cached(blob_task: Task, tmp_path: Path) -> None:
    m, _ = pretrain(blob_task, TrainConfig(epochs=3, lr=1e-2, batch_size=32))
    space = SearchSpace.from_model(m, blob_task.example_input())
    ev = Evaluator(blob_task, space, m, QATConfig(steps=10, final_steps=20, batch_size=32),
                   cache_file=tmp_path / "c.jsonl")
    g = space.random(2, 0)
    r1 = ev.evaluate(g)
    ev.cache.clear()
    r2 = ev.evaluate(g)
    assert [r.val_accuracy for r in r1] == [r.val_accuracy for r in r2]
    ev2 = Evaluator(blob_task, space, m, QATConfig(steps=10, batch_size=32),
                    cache_file=tmp_path / "c.jsonl")
    assert len(ev2.cache) == 2  # re-read from disk
    final = ev.evaluate(g[:1], "final", with_test=True)[0]
    assert final.test_accuracy is not None and final.fidelity == "final"


def test_diverging_evaluation_is_reported(blob_task: Task) -> None:
    m, _ = pretrain(blob_task, TrainConfig(epochs=1, batch_size=32))
    space = SearchSpace.from_model(m, blob_task.example_input())

    def exploding(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(out, y) * (math.inf if out.requires_grad else 1.0)

    bad = Task(blob_task.name, blob_task.model_factory, blob_task.train, blob_task.val,
               blob_task.test, loss_fn=exploding)
    ev = Evaluator(bad, space, m, QATConfig(steps=5, batch_size=32))
    r = ev.evaluate(space.uniform(8, 8))[0]
    assert r.failed and "diverged" in r.reason and math.isnan(r.val_accuracy)


def test_quantized_accuracy_tracks_bits(blob_task: Task) -> None:
    m, info = pretrain(blob_task, TrainConfig(epochs=5, lr=1e-2, batch_size=32))
    space = SearchSpace.from_model(m, blob_task.example_input())
    ev = Evaluator(blob_task, space, m, QATConfig(steps=0))
    r8 = ev.evaluate(space.uniform(8, 8), "ptq")[0]
    r0 = ev.evaluate(space.uniform(0, 8), "ptq")[0]
    assert abs(r8.val_accuracy - info["val_accuracy"]) <= 0.05
    assert r0.val_accuracy < r8.val_accuracy
