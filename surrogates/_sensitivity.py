"""Sensitivity analysis, computed once per model and saved with what it came from.

Three tables feed the accuracy features (:mod:`surrogates._features`):

* per weight channel, the Hessian diagonal summed over the channel's weights
  (Hutchinson: ``E[v * Hv]`` over Rademacher probes ``v``, Hessian-vector products by
  double backward), or the empirical Fisher diagonal (mean per-sample squared gradient)
  as the cheap option; per-layer Hessian traces come from the same passes;
* per weight channel and bit choice, the squared error of quantizing that channel
  (0 bit: the channel's squared norm);
* per layer, the activation sensitivity (per-sample squared gradient of the loss with
  respect to the layer's input, averaged over samples and elements) and, for each
  activation bit choice, the mean squared quantization noise of that input.

Under a second-order model, quantizing channel ``c`` with error ``dW`` costs about
``0.5 * w_sens[c] / w_numel[c] * ||dW||^2`` of loss (HAWQ's ``Tr(H)/n * ||dW||^2`` at
channel granularity), and quantizing layer ``l``'s input about
``0.5 * a_sens[l] * a_numel[l] * a_noise[l, b]``.

The estimator here is written from the definitions (PyHessian is GPL-licensed).
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

__all__ = ["SensitivityProfile", "compute_sensitivity", "fingerprint", "METHODS"]

METHODS = ("hutchinson", "fisher")
_FORMAT = 1

QuantizeWeight = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
QuantizeAct = Callable[[torch.Tensor, int, bool], torch.Tensor]


# --------------------------------------------------------------------------- profile
@dataclass(frozen=True, eq=False)
class SensitivityProfile:
    """Per-channel and per-layer sensitivities of one model on one data sample.

    Channel arrays follow the layer table's channel order (layers in order, each layer's
    output channels in order), pinned layers included.

    Attributes:
        w_sens: ``(n_channels,)`` Hessian-diagonal sum over each channel's weights
            (Hutchinson), or the Fisher-diagonal sum (``method="fisher"``). Hutchinson
            values can be slightly negative (estimator noise or real negative curvature).
        layer_trace: ``(n_layers,)`` Hessian (or Fisher) trace of each layer's weights.
        w_err: ``(n_channels, len(w_choices))`` squared quantization error of each
            channel at each weight bit choice (0 bit: the channel's squared norm).
        a_sens: ``(n_layers,)`` mean over samples and input elements of the squared
            per-sample gradient of the loss with respect to the layer input.
        a_noise: ``(n_layers, len(a_choices))`` mean squared quantization noise per input
            element at each activation bit choice (range calibrated on the input).
        layer_names: names of the layers, in order.
        w_choices / a_choices: the bit choices the tables were computed for.
        w_numel: ``(n_channels,)`` weights per channel (fan-in).
        a_numel: ``(n_layers,)`` input elements per sample of each layer.
        a_signed: ``(n_layers,)`` whether each layer's input had negative values.
        meta: provenance: ``fingerprint``, ``method``, ``n_probes``, ``n_batches``,
            ``n_samples``, ``seed``, ``seconds``, ``format``.
    """

    w_sens: np.ndarray
    layer_trace: np.ndarray
    w_err: np.ndarray
    a_sens: np.ndarray
    a_noise: np.ndarray
    layer_names: tuple[str, ...]
    w_choices: tuple[int, ...]
    a_choices: tuple[int, ...]
    w_numel: np.ndarray
    a_numel: np.ndarray
    a_signed: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)
    layer_start: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        f64 = {k: np.asarray(getattr(self, k), dtype=np.float64)
               for k in ("w_sens", "layer_trace", "w_err", "a_sens", "a_noise")}
        for k, v in f64.items():
            object.__setattr__(self, k, v)
        object.__setattr__(self, "w_numel", np.asarray(self.w_numel, dtype=np.int64))
        object.__setattr__(self, "a_numel", np.asarray(self.a_numel, dtype=np.int64))
        object.__setattr__(self, "a_signed", np.asarray(self.a_signed, dtype=bool))
        object.__setattr__(self, "layer_names", tuple(str(n) for n in self.layer_names))
        object.__setattr__(self, "w_choices", tuple(int(b) for b in self.w_choices))
        object.__setattr__(self, "a_choices", tuple(int(b) for b in self.a_choices))
        object.__setattr__(self, "meta", dict(self.meta))
        n_l, n_c = len(self.layer_names), self.w_sens.shape[0]
        want = {
            "w_sens": (n_c,),
            "layer_trace": (n_l,),
            "w_err": (n_c, len(self.w_choices)),
            "a_sens": (n_l,),
            "a_noise": (n_l, len(self.a_choices)),
            "w_numel": (n_c,),
            "a_numel": (n_l,),
            "a_signed": (n_l,),
        }
        for k, shape in want.items():
            if getattr(self, k).shape != shape:
                raise ValueError(
                    f"SensitivityProfile.{k} must have shape {shape}, "
                    f"got {getattr(self, k).shape}"
                )
        layer_start = np.asarray(self.meta.get("layer_start", []), dtype=np.int64)
        if layer_start.shape != (n_l + 1,) or layer_start[-1] != n_c:
            raise ValueError(
                "SensitivityProfile.meta['layer_start'] must hold the n_layers + 1 channel "
                f"offsets of the layers (ending at {n_c}), got {layer_start.tolist()}"
            )
        object.__setattr__(self, "layer_start", layer_start)

    # ------------------------------------------------------------------ sizes
    @property
    def n_channels(self) -> int:
        return int(self.w_sens.shape[0])

    @property
    def n_layers(self) -> int:
        return len(self.layer_names)

    @property
    def channel_layer(self) -> np.ndarray:
        """``(n_channels,)`` layer index of every channel."""
        return np.repeat(np.arange(self.n_layers), np.diff(self.layer_start))

    @property
    def fingerprint(self) -> str:
        return str(self.meta.get("fingerprint", ""))

    # ------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the profile as one ``.npz`` file (arrays plus a JSON ``meta`` entry).

        The file is written to a temporary name and moved into place, so a crash never
        leaves a half-written profile. The exact ``path`` is used (no suffix is added).

        Returns:
            The path written.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        header = {
            "format": _FORMAT,
            "layer_names": list(self.layer_names),
            "w_choices": list(self.w_choices),
            "a_choices": list(self.a_choices),
            "meta": self.meta,
        }
        buf = io.BytesIO()
        np.savez(
            buf,
            w_sens=self.w_sens,
            layer_trace=self.layer_trace,
            w_err=self.w_err,
            a_sens=self.a_sens,
            a_noise=self.a_noise,
            w_numel=self.w_numel,
            a_numel=self.a_numel,
            a_signed=self.a_signed,
            header=np.array(json.dumps(header)),
        )
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(buf.getvalue())
        tmp.replace(path)
        return path

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        expect_fingerprint: str | None = None,
        layer_names: Sequence[str] | None = None,
    ) -> SensitivityProfile:
        """Read a profile written by :meth:`save`, checking it belongs to this model.

        Args:
            path: the ``.npz`` file.
            expect_fingerprint: if given, the :func:`fingerprint` of the model and data
                the caller is about to use; a different stored one is an error.
            layer_names: if given, the caller's quantizable layers, in order.

        Raises:
            FileNotFoundError: no such file.
            ValueError: not a profile, or it does not match the fingerprint or layers.
        """
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                header = json.loads(str(z["header"]))
                arrays = {k: z[k] for k in z.files if k != "header"}
        except (KeyError, ValueError, OSError, json.JSONDecodeError) as e:
            if isinstance(e, FileNotFoundError):
                raise
            raise ValueError(f"{path} is not a sensitivity profile ({e})") from e
        if header.get("format") != _FORMAT:
            raise ValueError(
                f"{path} has profile format {header.get('format')!r}, this version reads "
                f"{_FORMAT}; delete the file to recompute the profile"
            )
        prof = cls(
            layer_names=tuple(header["layer_names"]),
            w_choices=tuple(header["w_choices"]),
            a_choices=tuple(header["a_choices"]),
            meta=header["meta"],
            **arrays,
        )
        if layer_names is not None and list(layer_names) != list(prof.layer_names):
            raise ValueError(
                f"the sensitivity profile in {path} was computed for layers "
                f"{list(prof.layer_names)}, not {list(layer_names)}; delete it to recompute"
            )
        if expect_fingerprint is not None and prof.fingerprint != expect_fingerprint:
            raise ValueError(
                f"the sensitivity profile in {path} was computed from a different model or "
                f"data (fingerprint {prof.fingerprint!r}, expected {expect_fingerprint!r}); "
                "delete it to recompute"
            )
        return prof


# ------------------------------------------------------------------------ fingerprint
def fingerprint(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> str:
    """Hash of a model's state (names, shapes, dtypes, values) and of a data sample.

    Args:
        model: the float model (parameters and buffers are hashed).
        batches: the ``(x, y)`` batches the profile is computed from (consumed once:
            pass a list, not a one-shot generator you still need).

    Returns:
        A 20-character hex digest.
    """
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        _hash_tensor(h, name, t)
    for i, (x, y) in enumerate(batches):
        _hash_tensor(h, f"x{i}", x)
        _hash_tensor(h, f"y{i}", y)
    return h.hexdigest()[:20]


def _hash_tensor(h: Any, name: str, t: Any) -> None:
    t = torch.as_tensor(t).detach().cpu().contiguous()
    h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())


# ------------------------------------------------------------------------- compute
def compute_sensitivity(
    model: nn.Module,
    layers: Sequence[tuple[str, nn.Module]],
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    quantize_weight: QuantizeWeight,
    quantize_act: QuantizeAct,
    w_choices: Sequence[int],
    a_choices: Sequence[int],
    method: str = "hutchinson",
    n_probes: int = 16,
    n_batches: int = 4,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> SensitivityProfile:
    """Compute the sensitivity profile of ``model`` on up to ``n_batches`` batches.

    The model is put in eval mode for the computation (its mode is restored after), so
    dropout is off and batch norm uses its running statistics.

    Args:
        model: the float model.
        layers: ``(name, module)`` of each quantizable layer in layer-table order; each
            module has a ``.weight`` of shape ``(out, ...)``.
        batches: ``(x, y)`` tensor batches; only the first ``n_batches`` are used.
        loss_fn: ``loss_fn(output, y)``, a *mean* over the batch (as ``F.cross_entropy``).
        quantize_weight: ``(w (out, ...), bits LongTensor (out,)) -> w_q``, per-channel
            symmetric fake-quant (0 bit gives zeros).
        quantize_act: ``(x, bits, signed) -> x_q``, per-tensor fake-quant of a layer input
            calibrated on ``x``.
        w_choices / a_choices: the bit choices of the search space.
        method: ``"hutchinson"`` (Hessian diagonal) or ``"fisher"`` (empirical Fisher
            diagonal: mean per-sample squared gradient, about ``n_probes`` times cheaper).
        n_probes: Rademacher probes per batch (Hutchinson).
        n_batches: number of batches used.
        seed: seed of the probes.
        device: where to compute; default: where the model's parameters are. The model
            is moved there in place (as ``model.to`` does).

    Returns:
        The :class:`SensitivityProfile`, its ``meta`` holding the :func:`fingerprint` of
        the model and the batches used, the method, probes, seed and seconds spent.

    Raises:
        ValueError: unknown method, no layers, no batches, or a layer without weights.
    """
    t0 = time.perf_counter()
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if n_probes < 1 or n_batches < 1:
        raise ValueError(f"n_probes and n_batches must be >= 1, got {n_probes}, {n_batches}")
    if not layers:
        raise ValueError("no layers given: pass the (name, module) pairs of the layer table")
    names = [str(n) for n, _ in layers]
    mods = [m for _, m in layers]
    for n, m in layers:
        w = getattr(m, "weight", None)
        if not isinstance(w, torch.Tensor) or w.dim() < 2:
            raise ValueError(f"layer {n!r} has no (out, ...) weight tensor")
    if device is None:
        device = next(iter(model.parameters())).device
    device = torch.device(device)
    model.to(device)
    data = [(x, y) for x, y in itertools.islice(batches, n_batches)]
    if not data:
        raise ValueError("no batches given: pass an iterable of (x, y) tensors")
    fp = fingerprint(model, data)
    data = [(x.to(device), y.to(device)) for x, y in data]
    # every layer's weight was checked to be a tensor above
    weights = cast(list[torch.Tensor], [m.weight for m in mods])

    was_training = model.training
    model.eval()
    try:
        if method == "hutchinson":
            w_diag = _hutchinson_diag(model, weights, data, loss_fn, n_probes, seed)
        else:
            w_diag = _fisher_diag(model, weights, data, loss_fn)
        a_sens, a_noise, a_numel, a_signed, n_samples = _activation_tables(
            model, mods, names, data, loss_fn, quantize_act, a_choices
        )
    finally:
        model.train(was_training)

    w_sens = np.concatenate([d.reshape(d.shape[0], -1).sum(1) for d in w_diag])
    layer_trace = np.array([float(d.sum()) for d in w_diag])
    w_err = np.concatenate([_weight_error_table(w, quantize_weight, w_choices) for w in weights])
    w_numel = np.concatenate(
        [np.full(w.shape[0], w[0].numel(), dtype=np.int64) for w in weights]
    )
    layer_start = np.concatenate([[0], np.cumsum([w.shape[0] for w in weights])])
    meta = {
        "fingerprint": fp,
        "method": method,
        "n_probes": int(n_probes) if method == "hutchinson" else 0,
        "n_batches": len(data),
        "n_samples": int(n_samples),
        "seed": int(seed),
        "seconds": round(time.perf_counter() - t0, 3),
        "layer_start": layer_start.tolist(),
        "format": _FORMAT,
    }
    return SensitivityProfile(
        w_sens=w_sens,
        layer_trace=layer_trace,
        w_err=w_err,
        a_sens=a_sens,
        a_noise=a_noise,
        layer_names=tuple(names),
        w_choices=tuple(int(b) for b in w_choices),
        a_choices=tuple(int(b) for b in a_choices),
        w_numel=w_numel,
        a_numel=a_numel,
        a_signed=a_signed,
        meta=meta,
    )


def hutchinson_diagonal(
    model: nn.Module,
    params: Sequence[torch.Tensor],
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    n_probes: int,
    seed: int = 0,
) -> list[np.ndarray]:
    """Hutchinson estimate of the Hessian diagonal of the mean loss for ``params``.

    For each batch, the gradient is built once with ``create_graph=True``; each probe
    ``v`` (Rademacher, all parameters at once) then costs one Hessian-vector product
    ``Hv`` by a second backward, and ``v * Hv`` is an unbiased estimate of ``diag(H)``.
    Estimates are averaged over probes and batches.

    Returns:
        One float64 array per parameter, shaped like it.
    """
    return _hutchinson_diag(model, list(params), list(batches), loss_fn, n_probes, seed)


def _hutchinson_diag(model, weights, data, loss_fn, n_probes, seed):  # type: ignore[no-untyped-def]
    gen = torch.Generator().manual_seed(int(seed))
    acc = [torch.zeros_like(w, dtype=torch.float64) for w in weights]
    for x, y in data:
        loss = loss_fn(model(x), y)
        grads = torch.autograd.grad(loss, weights, create_graph=True)
        for p in range(n_probes):
            vs = [
                (torch.randint(0, 2, w.shape, generator=gen, dtype=torch.int8) * 2 - 1)
                .to(device=w.device, dtype=w.dtype)
                for w in weights
            ]
            hvs = torch.autograd.grad(
                grads, weights, grad_outputs=vs, retain_graph=p < n_probes - 1,
                allow_unused=True,
            )
            for a, v, hv in zip(acc, vs, hvs, strict=True):
                if hv is not None:
                    a += (v * hv).detach().double()
    scale = 1.0 / (n_probes * len(data))
    return [(a * scale).cpu().numpy() for a in acc]


def _fisher_diag(model, weights, data, loss_fn):  # type: ignore[no-untyped-def]
    """Empirical Fisher diagonal: mean over samples of the per-sample squared gradient.

    Per-sample gradients come from ``torch.func.vmap`` when the model allows it, else
    from one backward per sample.
    """
    acc = [torch.zeros_like(w, dtype=torch.float64) for w in weights]
    n = 0
    per_sample = _vmap_per_sample_grads(model, weights, loss_fn)
    for x, y in data:
        for lo in range(0, x.shape[0], 64):
            xc, yc = x[lo : lo + 64], y[lo : lo + 64]
            gs = None
            if per_sample is not None:
                try:
                    gs = per_sample(xc, yc)
                except Exception:  # noqa: BLE001 - any vmap limitation: use the loop
                    per_sample = None
            if gs is None:
                gs = [torch.zeros((xc.shape[0], *w.shape), dtype=w.dtype) for w in weights]
                for i in range(xc.shape[0]):
                    loss = loss_fn(model(xc[i : i + 1]), yc[i : i + 1])
                    grads = torch.autograd.grad(loss, weights, allow_unused=True)
                    for k, g in enumerate(grads):
                        if g is not None:
                            gs[k][i] = g.detach().cpu()
            for a, g in zip(acc, gs, strict=True):
                a += (g.detach().double() ** 2).sum(0).to(a.device)
            n += xc.shape[0]
    return [(a / max(n, 1)).cpu().numpy() for a in acc]


def _vmap_per_sample_grads(model, weights, loss_fn):  # type: ignore[no-untyped-def]
    try:
        from torch.func import functional_call, grad, vmap
    except ImportError:  # pragma: no cover - torch < 2.0
        return None
    named = dict(model.named_parameters())
    ids = {id(w): k for k, w in named.items()}
    if any(id(w) not in ids for w in weights):
        return None
    wkeys = [ids[id(w)] for w in weights]
    fixed = {k: v.detach() for k, v in named.items() if k not in wkeys}
    buffers = dict(model.named_buffers())

    def loss1(wvals, x1, y1):  # type: ignore[no-untyped-def]
        p = {**fixed, **dict(zip(wkeys, wvals, strict=True))}
        out = functional_call(model, (p, buffers), (x1[None],))
        return loss_fn(out, y1[None])

    g = vmap(grad(loss1), in_dims=(None, 0, 0))
    wvals = tuple(w.detach() for w in weights)
    return lambda x, y: list(g(wvals, x, y))


def _activation_tables(model, mods, names, data, loss_fn, quantize_act, a_choices):  # type: ignore[no-untyped-def]
    """Activation sensitivity (squared input gradients) and noise power per bit choice."""
    captured: dict[int, torch.Tensor] = {}

    def pre_hook(idx: int):  # type: ignore[no-untyped-def]
        def fn(mod: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
            if idx in captured or not args or not isinstance(args[0], torch.Tensor):
                return None  # first call of a shared module only
            x = args[0]
            if not x.requires_grad:
                x = x.detach().requires_grad_(True)
                captured[idx] = x
                return (x, *args[1:])
            captured[idx] = x
            return None

        return fn

    n_l = len(mods)
    sq_sum = np.zeros(n_l)
    elems = np.zeros(n_l)
    a_numel = np.zeros(n_l, dtype=np.int64)
    signed = np.zeros(n_l, dtype=bool)
    inputs: list[list[torch.Tensor]] = [[] for _ in range(n_l)]
    n_samples = 0
    for x, y in data:
        captured.clear()
        hooks = [m.register_forward_pre_hook(pre_hook(i)) for i, m in enumerate(mods)]
        try:
            out = model(x)
        finally:
            for h in hooks:
                h.remove()
        missing = [names[i] for i in range(n_l) if i not in captured]
        if missing:
            raise ValueError(f"layers {missing} were not called by the model's forward")
        loss = loss_fn(out, y)
        xs = [captured[i] for i in range(n_l)]
        grads = torch.autograd.grad(loss, xs, allow_unused=True)
        b = x.shape[0]
        n_samples += b
        for i, (xi, g) in enumerate(zip(xs, grads, strict=True)):
            # loss is a batch mean: the per-sample gradient is b times the batch one
            if g is not None:
                sq_sum[i] += float(((g.detach().double() * b) ** 2).sum())
            elems[i] += xi.numel()
            a_numel[i] = xi[0].numel()
            signed[i] |= bool((xi.detach() < 0).any())
            inputs[i].append(xi.detach())
    a_sens = sq_sum / np.maximum(elems, 1)
    a_noise = np.zeros((n_l, len(a_choices)))
    with torch.no_grad():
        for i in range(n_l):
            for j, bits in enumerate(a_choices):
                tot, cnt = 0.0, 0
                for xi in inputs[i]:
                    q = quantize_act(xi, int(bits), bool(signed[i]))
                    tot += float(((q.double() - xi.double()) ** 2).sum())
                    cnt += xi.numel()
                a_noise[i, j] = tot / max(cnt, 1)
    return a_sens, a_noise, a_numel, signed, n_samples


def _weight_error_table(
    w: torch.Tensor, quantize_weight: QuantizeWeight, w_choices: Sequence[int]
) -> np.ndarray:
    """``(out, len(w_choices))`` squared error of quantizing each channel at each choice."""
    with torch.no_grad():
        wd = w.detach()
        flat = wd.reshape(wd.shape[0], -1).double()
        out = np.zeros((wd.shape[0], len(w_choices)))
        for j, bits in enumerate(w_choices):
            if int(bits) == 0:
                out[:, j] = (flat**2).sum(1).cpu().numpy()
                continue
            b = torch.full((wd.shape[0],), int(bits), dtype=torch.long, device=wd.device)
            q = quantize_weight(wd, b).reshape(wd.shape[0], -1).double()
            out[:, j] = ((q - flat) ** 2).sum(1).cpu().numpy()
        return out
