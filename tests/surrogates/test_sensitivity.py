from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from sg_helpers import TanhNet, layers_of, ref_quant_act, ref_quant_weight
from torch import nn
from torch.nn import functional as F

from surrogates import SensitivityProfile, compute_sensitivity, fingerprint, hutchinson_diagonal


class TinyMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(3, 4)
        self.fc2 = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.tanh(self.fc1(x)))


def _exact_hessian(model: nn.Module, names: list[str], x, y) -> np.ndarray:
    """Exact Hessian (float64) of the mean cross-entropy over the named weights."""
    m64 = copy.deepcopy(model).double()
    params = dict(m64.named_parameters())
    shapes = [params[n].shape for n in names]
    sizes = [params[n].numel() for n in names]
    fixed = {n: p.detach() for n, p in params.items() if n not in names}

    def loss(flat: torch.Tensor) -> torch.Tensor:
        parts = torch.split(flat, sizes)
        ps = {k: t.reshape(s) for k, t, s in zip(names, parts, shapes, strict=True)}
        out = torch.func.functional_call(m64, {**fixed, **ps}, (x.double(),))
        return F.cross_entropy(out, y)

    flat = torch.cat([params[n].detach().reshape(-1) for n in names])
    return torch.autograd.functional.hessian(loss, flat).numpy()


def test_hutchinson_matches_exact_hessian_diagonal() -> None:
    torch.manual_seed(0)
    model = TinyMLP()
    x, y = torch.randn(16, 3), torch.randint(0, 3, (16,))
    params = [model.fc1.weight, model.fc2.weight]
    h = _exact_hessian(model, ["fc1.weight", "fc2.weight"], x, y)
    exact = np.diag(h)
    n = 3000
    est = np.concatenate([d.ravel() for d in hutchinson_diagonal(
        model, params, [(x, y)], F.cross_entropy, n_probes=n, seed=0)])
    # the estimator's per-element std is sqrt(sum_{j != i} H_ij^2 / n)
    off = np.sqrt(((h - np.diag(exact)) ** 2).sum(1) / n)
    assert np.all(np.abs(est - exact) <= 5 * off + 1e-6), (est, exact)
    assert np.linalg.norm(est - exact) < 0.1 * np.linalg.norm(exact)


def test_profile_sums_hessian_diagonal_per_channel_and_layer() -> None:
    torch.manual_seed(0)
    model = TinyMLP()
    x, y = torch.randn(16, 3), torch.randint(0, 3, (16,))
    layers = [("fc1", model.fc1), ("fc2", model.fc2)]
    prof = compute_sensitivity(
        model, layers, [(x, y)], F.cross_entropy, quantize_weight=ref_quant_weight,
        quantize_act=ref_quant_act, w_choices=(0, 2, 4, 8), a_choices=(4, 8), n_probes=2000,
    )
    exact = np.diag(_exact_hessian(model, ["fc1.weight", "fc2.weight"], x, y))
    per_ch = np.concatenate([exact[:12].reshape(4, 3).sum(1), exact[12:].reshape(3, 4).sum(1)])
    np.testing.assert_allclose(prof.w_sens, per_ch, atol=0.1 * np.abs(per_ch).max())
    np.testing.assert_allclose(prof.layer_trace, [exact[:12].sum(), exact[12:].sum()],
                               rtol=0.1)
    np.testing.assert_allclose(prof.layer_trace, [prof.w_sens[:4].sum(), prof.w_sens[4:].sum()])
    assert prof.meta["n_probes"] == 2000 and prof.meta["seconds"] > 0
    assert list(prof.layer_start) == [0, 4, 7]


def test_fisher_is_mean_per_sample_squared_gradient(tanh_setup) -> None:
    model, data = tanh_setup
    prof = compute_sensitivity(
        model, layers_of(model), data[:1], F.cross_entropy, quantize_weight=ref_quant_weight,
        quantize_act=ref_quant_act, w_choices=(0, 8), a_choices=(8,), method="fisher",
    )
    x, y = data[0]
    ws = [m.weight for _, m in layers_of(model)]
    acc = [torch.zeros_like(w) for w in ws]
    for i in range(x.shape[0]):
        gs = torch.autograd.grad(F.cross_entropy(model(x[i:i + 1]), y[i:i + 1]), ws)
        for a, g in zip(acc, gs, strict=True):
            a += g**2
    want = np.concatenate([(a / x.shape[0]).reshape(a.shape[0], -1).sum(1).numpy()
                           for a in acc])
    np.testing.assert_allclose(prof.w_sens, want, rtol=1e-4, atol=1e-9)
    assert prof.meta["method"] == "fisher"


def test_error_table_is_exact_against_the_quantizer(tanh_setup, tanh_profile) -> None:
    model, _ = tanh_setup
    c = 0
    for _, m in layers_of(model):
        w = m.weight.detach()
        for j, b in enumerate(tanh_profile.w_choices):
            q = ref_quant_weight(w, torch.full((w.shape[0],), b, dtype=torch.long))
            err = ((q - w).double() ** 2).reshape(w.shape[0], -1).sum(1).numpy()
            np.testing.assert_allclose(tanh_profile.w_err[c:c + w.shape[0], j], err, rtol=1e-12)
            if b == 0:
                np.testing.assert_allclose(
                    err, (w.double() ** 2).reshape(w.shape[0], -1).sum(1).numpy())
        c += w.shape[0]
    # more bits, less error
    assert np.all(np.diff(tanh_profile.w_err, axis=1) <= 1e-12)


def test_activation_tables(tanh_setup, tanh_profile) -> None:
    model, data = tanh_setup
    # signedness: raw input and tanh output are signed, the ReLU output is not
    assert tanh_profile.a_signed.tolist() == [True, True, False]
    assert tanh_profile.a_numel.tolist() == [12, 24, 30]
    # first layer: per-sample input gradients computed directly
    sq, n = 0.0, 0
    for x, y in data:
        for i in range(x.shape[0]):
            xi = x[i:i + 1].clone().requires_grad_(True)
            (g,) = torch.autograd.grad(F.cross_entropy(model(xi), y[i:i + 1]), xi)
            sq += float((g.double() ** 2).sum())
            n += g.numel()
    np.testing.assert_allclose(tanh_profile.a_sens[0], sq / n, rtol=1e-5)
    # noise of the first layer at each choice: the quantizer's mean squared error
    for j, b in enumerate(tanh_profile.a_choices):
        tot = sum(float(((ref_quant_act(x, b, True) - x).double() ** 2).sum()) for x, _ in data)
        cnt = sum(x.numel() for x, _ in data)
        np.testing.assert_allclose(tanh_profile.a_noise[0, j], tot / cnt, rtol=1e-10)
    assert np.all(np.diff(tanh_profile.a_noise, axis=1) < 0)


def test_save_load_round_trip_and_mismatch(tmp_path, tanh_setup, tanh_profile) -> None:
    model, data = tanh_setup
    path = tanh_profile.save(tmp_path / "sensitivity.npz")
    assert path == tmp_path / "sensitivity.npz" and path.is_file()
    fp = fingerprint(model, data)
    assert fp == tanh_profile.fingerprint
    got = SensitivityProfile.load(path, expect_fingerprint=fp,
                                  layer_names=list(tanh_profile.layer_names))
    for k in ("w_sens", "layer_trace", "w_err", "a_sens", "a_noise", "w_numel", "a_numel",
              "a_signed", "layer_start"):
        np.testing.assert_array_equal(getattr(got, k), getattr(tanh_profile, k))
    assert got.meta == tanh_profile.meta
    assert got.w_choices == tanh_profile.w_choices and got.layer_names == tanh_profile.layer_names
    with pytest.raises(ValueError, match="different model or data"):
        SensitivityProfile.load(path, expect_fingerprint="0" * 20)
    with pytest.raises(ValueError, match="computed for layers"):
        SensitivityProfile.load(path, layer_names=["conv1", "fc"])
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a profile")
    with pytest.raises(ValueError, match="not a sensitivity profile"):
        SensitivityProfile.load(bad)
    with pytest.raises(FileNotFoundError):
        SensitivityProfile.load(tmp_path / "missing.npz")


def test_fingerprint_tracks_model_and_data(tanh_setup) -> None:
    model, data = tanh_setup
    fp = fingerprint(model, data)
    assert fingerprint(model, list(data)) == fp
    assert fingerprint(model, data[:1]) != fp
    other = TanhNet()
    other.load_state_dict(model.state_dict())
    assert fingerprint(other, data) == fp
    with torch.no_grad():
        other.fc.weight[0, 0] += 1e-3
    assert fingerprint(other, data) != fp


def test_compute_restores_mode_and_checks_arguments(tanh_setup) -> None:
    model, data = tanh_setup
    model.train()
    kw = dict(quantize_weight=ref_quant_weight, quantize_act=ref_quant_act,
              w_choices=(0, 8), a_choices=(8,))
    prof = compute_sensitivity(model, layers_of(model), iter(data), F.cross_entropy,
                               n_probes=1, n_batches=1, **kw)
    assert model.training and prof.meta["n_batches"] == 1 and prof.meta["n_samples"] == 32
    with pytest.raises(ValueError, match="method"):
        compute_sensitivity(model, layers_of(model), data, F.cross_entropy, method="x", **kw)
    with pytest.raises(ValueError, match="no batches"):
        compute_sensitivity(model, layers_of(model), [], F.cross_entropy, **kw)
    with pytest.raises(ValueError, match="no layers"):
        compute_sensitivity(model, [], data, F.cross_entropy, **kw)
    with pytest.raises(ValueError, match="weight"):
        compute_sensitivity(model, [("act", nn.Tanh())], data, F.cross_entropy, **kw)


def test_profile_validates_shapes(tanh_profile) -> None:
    with pytest.raises(ValueError, match="w_err"):
        SensitivityProfile(
            w_sens=tanh_profile.w_sens, layer_trace=tanh_profile.layer_trace,
            w_err=tanh_profile.w_err[:, :2], a_sens=tanh_profile.a_sens,
            a_noise=tanh_profile.a_noise, layer_names=tanh_profile.layer_names,
            w_choices=tanh_profile.w_choices, a_choices=tanh_profile.a_choices,
            w_numel=tanh_profile.w_numel, a_numel=tanh_profile.a_numel,
            a_signed=tanh_profile.a_signed, meta=tanh_profile.meta,
        )


def test_with_evomp_quantizers() -> None:
    quant = pytest.importorskip("evomp.quant")
    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv1d(2, 6, 3, padding=1)
            self.bn = nn.BatchNorm1d(6)
            self.fc = nn.Linear(6 * 8, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))

    model = Net()
    data = [(torch.randn(16, 2, 8), torch.randint(0, 4, (16,)))]
    prof = compute_sensitivity(
        model, [("conv", model.conv), ("fc", model.fc)], data, F.cross_entropy,
        quantize_weight=quant.fake_quant_weight,
        quantize_act=lambda x, b, s: quant.fake_quant_act(x, b, s),
        w_choices=(0, 2, 4, 8), a_choices=(2, 4, 8), n_probes=4,
    )
    w = model.fc.weight.detach()
    for j, b in enumerate(prof.w_choices):
        q = quant.fake_quant_weight(w, torch.full((4,), b))
        np.testing.assert_allclose(prof.w_err[6:, j],
                                   ((q - w).double() ** 2).sum(1).numpy(), rtol=1e-10)
    assert prof.a_signed.tolist() == [True, False]
    assert np.all(prof.a_noise[:, 0] > prof.a_noise[:, 2])


def test_fisher_loop_fallback_agrees_with_vmap(tanh_setup, monkeypatch) -> None:
    import surrogates._sensitivity as sens

    model, data = tanh_setup
    ws = [m.weight for _, m in layers_of(model)]
    fast = sens._fisher_diag(model, ws, data[:1], F.cross_entropy)
    monkeypatch.setattr(sens, "_vmap_per_sample_grads", lambda *a: None)
    slow = sens._fisher_diag(model, ws, data[:1], F.cross_entropy)
    for a, b in zip(fast, slow, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-10)
