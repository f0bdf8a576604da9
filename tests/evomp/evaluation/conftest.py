"""A small pretrained model with BatchNorm (and Dropout) for the evaluation tests."""

from __future__ import annotations

import numpy as np
import pytest
from torch import nn

from evomp import SearchSpace, TrainConfig, pretrain
from evomp.tasks import Task, from_arrays


def _model() -> nn.Module:
    return nn.Sequential(nn.Conv1d(2, 8, 3, padding=1), nn.BatchNorm1d(8), nn.ReLU(),
                         nn.Dropout(0.5), nn.Flatten(), nn.Linear(64, 3))


@pytest.fixture(scope="package")
def trained() -> tuple[Task, nn.Module, SearchSpace]:
    """A 3-class task of 220 training samples (batches of 32: 7 an epoch), its float model
    trained for 2 epochs, and the model's search space."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 260)
    x = rng.normal(size=(260, 2, 8)).astype(np.float32) + y[:, None, None] * 1.5
    task = from_arrays(x[:220], y[:220], x[220:], y[220:], model_factory=_model, name="bn",
                       seed=0)
    m, _ = pretrain(task, TrainConfig(epochs=2, lr=1e-2, batch_size=32))
    return task, m, SearchSpace.from_model(m, task.example_input())
