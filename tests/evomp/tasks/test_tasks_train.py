from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

from evomp import Evaluator, EvompError, QATConfig, SearchSpace, TrainConfig, pretrain
from evomp.tasks import Diverged, Task, TensorData, from_arrays, from_npz, get_task
from evomp.tasks._train import resolve_device, set_threads, steps_per_epoch, train_steps


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


# ------------------------------------------------------------ user modules + DataLoaders
class _CountingNet(nn.Module):
    """A user model that counts its training-mode forward passes (one per optimizer step)."""

    def __init__(self, slope: float = 0.0) -> None:
        super().__init__()
        self.conv = nn.Conv1d(2, 4, 3, padding=1)
        self.fc = nn.Linear(32, 3)
        self.slope = slope
        self.train_calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and torch.is_grad_enabled():
            self.train_calls += 1
        return self.fc(F.leaky_relu(self.conv(x), self.slope).flatten(1))


def _loader(n: int, batch_size: int, drop_last: bool = False, seed: int = 0) -> DataLoader:
    xt, yt, _, _ = _blobs(n + 40, seed)
    ds = TensorDataset(torch.as_tensor(xt[:n], dtype=torch.float32),
                       torch.as_tensor(yt[:n], dtype=torch.long))
    return DataLoader(ds, batch_size=batch_size, shuffle=False, drop_last=drop_last)


def _loader_task(train: DataLoader, **model_kw: float) -> Task:
    return Task("loaders", lambda: _CountingNet(**model_kw), train, _loader(40, 20),
                _loader(40, 20), model_name="counting", model_kwargs=dict(model_kw))


def test_pretrain_with_dataloaders_runs_len_loader_steps_per_epoch() -> None:
    # 64 samples in batches of 8: 8 steps per epoch, whatever TrainConfig.batch_size says
    task = _loader_task(_loader(64, 8))
    model, info = pretrain(task, TrainConfig(epochs=3, lr=1e-2, batch_size=128))
    assert model.train_calls == 3 * 8
    assert 0.0 <= info["val_accuracy"] <= 1.0


def test_empty_epoch_is_an_error_not_an_endless_loop() -> None:
    class Bounded(DataLoader):
        passes = 0

        def __iter__(self):  # type: ignore[no-untyped-def]
            type(self).passes += 1
            if type(self).passes > 50:
                raise RuntimeError("train_steps kept looping over an empty loader")
            return super().__iter__()

    xt, yt, _, _ = _blobs()
    ds = TensorDataset(torch.as_tensor(xt[:5], dtype=torch.float32),
                       torch.as_tensor(yt[:5], dtype=torch.long))
    empty = Bounded(ds, batch_size=8, drop_last=True)  # 5 samples: not one full batch
    task = _loader_task(empty)
    model = task.model_factory()
    with pytest.raises(EvompError, match="drop_last"):
        train_steps(model, task, 10, [{"params": list(model.parameters()), "lr": 1e-3}],
                    batch_size=8, seed=0)
    with pytest.raises(EvompError, match="smaller batch_size"):
        pretrain(task, TrainConfig(epochs=2))


def test_steps_per_epoch_counts_samples_or_batches() -> None:
    x = torch.zeros(100, 2, 8)
    y = torch.zeros(100, dtype=torch.long)
    assert steps_per_epoch(TensorData(x, y), 32) == 4
    assert steps_per_epoch(_loader(64, 8), 128) == 8

    class Stream(IterableDataset):
        def __iter__(self):  # type: ignore[no-untyped-def]
            for i in range(10):
                yield x[i], y[i]

    assert steps_per_epoch(DataLoader(Stream(), batch_size=4), 128) == 3  # counted


# ----------------------------------------------------------------------- cache keys
def test_fingerprint_covers_model_kwargs() -> None:
    base = get_task("mnist1d")
    assert base.model_kwargs == {}
    narrow = get_task("mnist1d", model_kwargs={"width": 8})
    assert narrow.model_kwargs == {"width": 8}
    assert base.fingerprint() != narrow.fingerprint()
    assert narrow.fingerprint() == get_task("mnist1d", model_kwargs={"width": 8}).fingerprint()


def test_pretrain_cache_is_keyed_by_model_kwargs(tmp_path: Path) -> None:
    xt, yt, xs, ys = _blobs()

    class Net(nn.Module):
        def __init__(self, width: int = 8, slope: float = 0.0) -> None:
            super().__init__()
            self.conv = nn.Conv1d(2, width, 3, padding=1)
            self.fc = nn.Linear(8 * width, 3)
            self.slope = slope

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(F.leaky_relu(self.conv(x), self.slope).flatten(1))

    def task(**kw: float) -> Task:
        return from_arrays(xt, yt, xs, ys, model_factory=lambda: Net(**kw), name="blobs",
                           model_name="net", model_kwargs=kw)

    cache = tmp_path / "float.pt"
    cfg = TrainConfig(epochs=1, batch_size=64)
    _, i1 = pretrain(task(width=8), cfg, cache)
    _, i2 = pretrain(task(width=4), cfg, cache)  # other shapes: retrained, no load crash
    assert not i1["cached"] and not i2["cached"]
    _, i3 = pretrain(task(width=4, slope=0.1), cfg, cache)  # same shapes, other model
    assert not i3["cached"]
    _, i4 = pretrain(task(width=4, slope=0.1), cfg, cache)
    assert i4["cached"]


def test_fingerprint_of_loaders() -> None:
    class Stream(IterableDataset):
        def __iter__(self):  # type: ignore[no-untyped-def]
            yield torch.zeros(2, 8), torch.tensor(0)

    stream = DataLoader(Stream(), batch_size=1)
    t = Task("s", _model, stream, stream, stream)
    fp = t.fingerprint()  # an IterableDataset has no length: described, not a crash
    assert fp == Task("s", _model, stream, stream, stream).fingerprint()
    a = _loader_task(_loader(64, 8, seed=0))
    b = _loader_task(_loader(64, 8, seed=1))
    assert a.fingerprint() != b.fingerprint()  # TensorDataset contents are hashed
    assert a.fingerprint() != _loader_task(_loader(64, 16, seed=0)).fingerprint()


# ---------------------------------------------------------------------- built-in data
def test_mnist1d_data_does_not_depend_on_the_run_seed() -> None:
    def raw(t: Task) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        m, s = t.info["mean"], t.info["std"]
        trainval = np.concatenate([t.train.x.numpy(), t.val.x.numpy()]) * s + m
        return np.sort(trainval.reshape(-1)), t.test.x.numpy() * s + m, t.test.y.numpy()

    a, b = get_task("mnist1d", seed=0), get_task("mnist1d", seed=1)
    ra, rb = raw(a), raw(b)
    np.testing.assert_allclose(ra[0], rb[0], rtol=1e-5, atol=1e-5)  # same training pool
    np.testing.assert_allclose(ra[1], rb[1], rtol=1e-5, atol=1e-5)  # same test set
    np.testing.assert_array_equal(ra[2], rb[2])
    assert not torch.equal(a.val.y, b.val.y)  # the seed still picks the validation split
    d0, d1 = get_task("digits", seed=0), get_task("digits", seed=1)
    assert torch.equal(d0.test.y, d1.test.y)


# ------------------------------------------------------------------ device, threads
def test_resolve_device_and_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(EvompError, match="CUDA is not available; use 'cpu' or 'auto'"):
        resolve_device("cuda")
    with pytest.raises(EvompError, match="CUDA is not available"):
        resolve_device("cuda:0")
    before = torch.get_num_threads()
    try:
        assert set_threads(1) == 1 and torch.get_num_threads() == 1
        assert set_threads(None) == torch.get_num_threads() >= 1  # None: all cores
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("check_every", [1, 5])
def test_a_diverged_step_is_named_when_checked_late(blob_task: Task, check_every: int) -> None:
    """The loss stays on the device between checks (no host sync per step on a GPU); a
    NaN is still found, and the step it appeared at named, at the next check."""
    calls = []

    def nan_at_seven(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        loss = F.cross_entropy(out, y)
        return loss * math.nan if len(calls) == 7 else loss

    bad = Task(blob_task.name, blob_task.model_factory, blob_task.train, blob_task.val,
               blob_task.test, loss_fn=nan_at_seven)
    model = bad.model_factory()
    with pytest.raises(Diverged, match="loss became nan at step 6$"):
        train_steps(model, bad, 40, [{"params": list(model.parameters()), "lr": 1e-3}],
                    batch_size=32, seed=0, check_every=check_every)
    assert len(calls) == (7 if check_every == 1 else 10)  # found at the next check
