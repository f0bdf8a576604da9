"""Small models shaped like the MLPerf Tiny references, sized for the built-in tasks."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from torch import nn

__all__ = ["MODELS", "cnn1d", "dscnn1d", "resnet8", "mobilenetv1", "get_model"]


def cnn1d(in_channels: int = 1, n_classes: int = 10, width: int = 32, length: int = 40
          ) -> nn.Module:
    """Plain 1-D CNN for MNIST-1D: 4 convs (3 with stride 2), BN+ReLU, linear head.

    298 weight channels at width 32; ``length`` is the input signal length.
    """
    w = width
    out_len = length
    for _ in range(3):
        out_len = (out_len + 1) // 2
    chans = [(in_channels, w, 5, 1), (w, 2 * w, 3, 2), (2 * w, 2 * w, 3, 2), (2 * w, 4 * w, 3, 2)]
    layers: list[tuple[str, nn.Module]] = []
    for i, (ci, co, k, st) in enumerate(chans, 1):
        layers += [
            (f"conv{i}", nn.Conv1d(ci, co, k, stride=st, padding=k // 2)),
            (f"bn{i}", nn.BatchNorm1d(co)),
            (f"relu{i}", nn.ReLU()),
        ]
    layers += [("flatten", nn.Flatten()), ("fc", nn.Linear(4 * w * out_len, n_classes))]
    return nn.Sequential(OrderedDict(layers))


def _dw_block(conv: type[nn.Module], bn: type[nn.Module], i: int, c_in: int, c_out: int,
              stride: int) -> list[tuple[str, nn.Module]]:
    return [
        (f"dw{i}", conv(c_in, c_in, 3, stride=stride, padding=1, groups=c_in, bias=False)),
        (f"dwbn{i}", bn(c_in)),
        (f"dwrelu{i}", nn.ReLU()),
        (f"pw{i}", conv(c_in, c_out, 1, bias=False)),
        (f"pwbn{i}", bn(c_out)),
        (f"pwrelu{i}", nn.ReLU()),
    ]


def dscnn1d(in_channels: int = 1, n_classes: int = 10, width: int = 64) -> nn.Module:
    """Depthwise-separable 1-D CNN (the KWS DS-CNN pattern: a conv, 4 dw+pw blocks, pool, fc)."""
    w = width
    layers: list[tuple[str, nn.Module]] = [
        ("conv1", nn.Conv1d(in_channels, w, 5, stride=1, padding=2, bias=False)),
        ("bn1", nn.BatchNorm1d(w)),
        ("relu1", nn.ReLU()),
    ]
    for i, stride in enumerate((2, 1, 2, 1), 1):
        layers += _dw_block(nn.Conv1d, nn.BatchNorm1d, i, w, w, stride)
    layers += [("pool", nn.AdaptiveAvgPool1d(1)), ("flatten", nn.Flatten()),
               ("fc", nn.Linear(w, n_classes))]
    return nn.Sequential(OrderedDict(layers))


class _ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU()
        self.short: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.short = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x):  # type: ignore[no-untyped-def]
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu(y + self.short(x))


def resnet8(in_channels: int = 1, n_classes: int = 10, width: int = 16) -> nn.Module:
    """ResNet-8 (MLPerf Tiny image classification): stem + 3 residual stages 16/32/64."""
    w = width
    return nn.Sequential(
        OrderedDict(
            [
                ("conv1", nn.Conv2d(in_channels, w, 3, 1, 1, bias=False)),
                ("bn1", nn.BatchNorm2d(w)),
                ("relu1", nn.ReLU()),
                ("stage1", _ResBlock(w, w, 1)),
                ("stage2", _ResBlock(w, 2 * w, 2)),
                ("stage3", _ResBlock(2 * w, 4 * w, 2)),
                ("pool", nn.AdaptiveAvgPool2d(1)),
                ("flatten", nn.Flatten()),
                ("fc", nn.Linear(4 * w, n_classes)),
            ]
        )
    )


def mobilenetv1(in_channels: int = 1, n_classes: int = 10, width: int = 8) -> nn.Module:
    """MobileNetV1-like (the visual-wake-words pattern, 0.25 width) for small images."""
    w = width
    layers: list[tuple[str, nn.Module]] = [
        ("conv1", nn.Conv2d(in_channels, w, 3, 1, 1, bias=False)),
        ("bn1", nn.BatchNorm2d(w)),
        ("relu1", nn.ReLU()),
    ]
    plan = [(w, 2 * w, 1), (2 * w, 4 * w, 2), (4 * w, 4 * w, 1), (4 * w, 8 * w, 2)]
    for i, (ci, co, st) in enumerate(plan, 1):
        layers += _dw_block(nn.Conv2d, nn.BatchNorm2d, i, ci, co, st)
    layers += [("pool", nn.AdaptiveAvgPool2d(1)), ("flatten", nn.Flatten()),
               ("fc", nn.Linear(8 * w, n_classes))]
    return nn.Sequential(OrderedDict(layers))


MODELS: dict[str, Callable[..., nn.Module]] = {
    "cnn1d": cnn1d,
    "dscnn1d": dscnn1d,
    "resnet8": resnet8,
    "mobilenetv1": mobilenetv1,
}


def get_model(name: str, **kwargs: object) -> nn.Module:
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; built-in models are {sorted(MODELS)}")
    return MODELS[name](**kwargs)
