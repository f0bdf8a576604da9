from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from evomp import SearchSpace


class TinyNet(nn.Module):
    """Conv1d + depthwise Conv1d + Linear; every quantizable kind but Conv2d."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(2, 6, 3, padding=1)
        self.bn = nn.BatchNorm1d(6)
        self.dw = nn.Conv1d(6, 6, 3, padding=1, groups=6)
        self.fc = nn.Linear(6 * 8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.conv(x)))
        x = torch.relu(self.dw(x))
        return self.fc(x.flatten(1))


@pytest.fixture
def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return TinyNet()


@pytest.fixture
def tiny_input() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(16, 2, 8)


@pytest.fixture
def tiny_space(tiny_model: nn.Module, tiny_input: torch.Tensor) -> SearchSpace:
    return SearchSpace.from_model(tiny_model, tiny_input)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
