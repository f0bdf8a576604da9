"""Quantize a model once; re-configure it for any genome through buffers."""

from __future__ import annotations

import copy
from collections.abc import Iterable

import numpy as np
import torch
from torch import nn

from evomp._errors import EvompError
from evomp.quant._layer import QuantLayer
from evomp.space import BitConfig

__all__ = ["QuantModel", "set_submodule"]


def set_submodule(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


class QuantModel(nn.Module):
    """A copy of a float model whose quantizable layers are :class:`QuantLayer` s.

    The layers follow a :class:`~hwmodels.LayerTable` (names and order). Switching between
    configurations only writes buffers (``set_bits`` for decoded genomes, ``apply_config``
    for a :class:`~evomp.BitConfig`); ``reset_float`` restores the float
    weights, BatchNorm statistics and calibrated ranges captured at construction, so every
    evaluation starts from the same point.

    Args:
        model: the trained float model (copied, never modified).
        layer_names: quantizable module names in layer-table order.
    """

    def __init__(self, model: nn.Module, layer_names: Iterable[str]) -> None:
        super().__init__()
        self.net = copy.deepcopy(model)
        self.layer_names = list(layer_names)
        self.qlayers: list[QuantLayer] = []
        for name in self.layer_names:
            try:
                mod = self.net.get_submodule(name)
            except AttributeError as e:
                raise EvompError(f"model has no module named {name!r}") from e
            q = QuantLayer(mod)
            set_submodule(self.net, name, q)
            self.qlayers.append(q)
        self._snapshot: dict[str, torch.Tensor] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    # ------------------------------------------------------------ calibration
    @torch.no_grad()
    def calibrate(self, batches: Iterable[torch.Tensor]) -> None:
        """Run float inference on ``batches`` and calibrate every layer's input range.

        Then snapshot the state: :meth:`reset_float` returns here.
        """
        inputs: dict[int, list[torch.Tensor]] = {i: [] for i in range(len(self.qlayers))}
        hooks = []
        for i, q in enumerate(self.qlayers):
            hooks.append(
                q.register_forward_pre_hook(lambda m, a, i=i: inputs[i].append(a[0].detach()))
            )
        was_training = self.training
        self.eval()
        self.set_quantization(False)
        try:
            for x in batches:
                self.net(x)
        finally:
            for h in hooks:
                h.remove()
            self.set_quantization(True)
            self.train(was_training)
        for i, q in enumerate(self.qlayers):
            if not inputs[i]:
                raise EvompError(
                    f"layer {self.layer_names[i]!r} was not reached during calibration"
                )
            q.calibrate(torch.cat([t.reshape(-1) for t in inputs[i]]))
        self.snapshot()

    @torch.no_grad()
    def reestimate_bn(self, batches: Iterable[torch.Tensor]) -> bool:
        """Re-estimate every BatchNorm's running statistics on ``batches`` with the current
        bits (a cumulative average over one pass, quantization on, every other module in
        evaluation mode): pruning and low precision shift each layer's output statistics,
        and post-training accuracy is meaningless without this. Returns whether the model
        has any BatchNorm (nothing runs when it has none)."""
        bns = [m for m in self.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
               and m.track_running_stats]
        if not bns:
            return False
        was_training = self.training
        momenta = [m.momentum for m in bns]
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative moving average over the batches
        self.eval()  # only the BatchNorms in training mode (no dropout)
        for m in bns:
            m.train()
        try:
            for x in batches:
                self(x)
        finally:
            for m, mom in zip(bns, momenta):
                m.momentum = mom
            self.train(was_training)
        return True

    def snapshot(self) -> None:
        self._snapshot = {k: v.detach().clone() for k, v in self.state_dict().items()}

    @torch.no_grad()
    def reset_float(self) -> None:
        """Restore weights, BatchNorm statistics and ranges to the snapshot (bits kept)."""
        if self._snapshot is None:
            raise EvompError("call calibrate() before reset_float()")
        bits = [(q.w_bits.clone(), int(q.a_bits)) for q in self.qlayers]
        self.load_state_dict(self._snapshot)
        for q, (wb, ab) in zip(self.qlayers, bits):
            q.set_bits(wb, ab)

    def set_quantization(self, enabled: bool) -> None:
        for q in self.qlayers:
            q.quantize_weights = enabled
            q.quantize_input = enabled

    # ---------------------------------------------------------- configuration
    @torch.no_grad()
    def set_bits(self, w_bits: np.ndarray, a_bits: np.ndarray, layer_start: np.ndarray) -> None:
        """Write one configuration into the buffers.

        Args:
            w_bits: ``(n_channels,)`` weight bits in layer-table channel order.
            a_bits: ``(n_layers,)`` activation bits.
            layer_start: ``(n_layers + 1,)`` channel offsets of each layer.

        Raises:
            EvompError: arrays that do not match the layers, or bits out of range.
        """
        w = torch.as_tensor(np.asarray(w_bits))
        a = np.asarray(a_bits).reshape(-1)
        n = len(self.qlayers)
        if len(layer_start) != n + 1 or a.shape[0] != n or w.reshape(-1).shape[0] != int(
            layer_start[-1]
        ):
            raise EvompError(
                f"set_bits expects {n} activation bit-widths and weight bits for "
                f"{int(layer_start[-1]) if len(layer_start) else 0} channels over {n} layers, "
                f"got {a.shape[0]} and {w.numel()} (layer_start of length {len(layer_start)}); "
                "decode genomes with the SearchSpace this model was built from"
            )
        w = w.reshape(-1)
        for i, q in enumerate(self.qlayers):
            q.set_bits(w[int(layer_start[i]) : int(layer_start[i + 1])], int(a[i]))

    @torch.no_grad()
    def apply_config(self, config: BitConfig) -> None:
        """Write a :class:`~evomp.BitConfig` (bits keyed by module name) into the buffers.

        Raises:
            EvompError: the configuration names other layers than this model's, or gives a
                layer a channel count other than its output channels.
        """
        names = self.layer_names
        config.check_matches(names, [int(q.w_bits.shape[0]) for q in self.qlayers])
        for name, q in zip(names, self.qlayers, strict=True):
            q.set_bits(torch.as_tensor(config.weights[name], dtype=torch.long),
                       int(config.activations[name]))

    def quant_parameters(self) -> list[nn.Parameter]:
        """The quantizer parameters (scales and ranges), for a separate learning rate."""
        return [p for q in self.qlayers for p in (q.w_scale, q.a_alpha)]

    def weight_parameters(self) -> list[nn.Parameter]:
        ids = {id(p) for p in self.quant_parameters()}
        return [p for p in self.parameters() if id(p) not in ids]
