"""Fixtures of the surrogates tests (helpers live in ``sg_helpers``)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))

from sg_helpers import TanhNet, layers_of, ref_quant_act, ref_quant_weight, table_for  # noqa: E402

from hwmodels import LayerTable  # noqa: E402
from surrogates import SensitivityProfile, compute_sensitivity  # noqa: E402


@pytest.fixture(scope="session")
def tanh_setup() -> tuple[nn.Module, list[tuple[torch.Tensor, torch.Tensor]]]:
    torch.manual_seed(0)
    model = TanhNet()
    g = torch.Generator().manual_seed(1)
    data = [(torch.randn(32, 2, 6, generator=g), torch.randint(0, 3, (32,), generator=g))
            for _ in range(2)]
    return model, data


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():  # type: ignore[no-untyped-def]
    """Tiny models and small BLAS calls run far faster on one thread."""
    from threadpoolctl import threadpool_limits

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tanh_profile(tanh_setup) -> SensitivityProfile:  # type: ignore[no-untyped-def]
    model, data = tanh_setup
    return compute_sensitivity(
        model, layers_of(model), data, nn.functional.cross_entropy,
        quantize_weight=ref_quant_weight, quantize_act=ref_quant_act,
        w_choices=(0, 2, 4, 8), a_choices=(2, 4, 8), n_probes=8, seed=0,
    )


@pytest.fixture(scope="session")
def tanh_table(tanh_setup) -> LayerTable:  # type: ignore[no-untyped-def]
    model, data = tanh_setup
    return table_for(model, data[0][0][:2])


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
