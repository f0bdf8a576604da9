"""Throughput of the hardware models: genomes per second on batches of 1024.

Three layer tables built by hand (no torch): a demo-like 1-D CNN (~500 weight channels),
a ResNet-18-like (~5,800) and a MobileNetV2-like (~17,000) network at ImageNet shapes.
Each model's ``cost(table, genomes)`` (decoding included) is timed; the figure is the
median of repeats. Prints a table and writes ``benchmarks/results/bench_hwmodels.json``.

    python benchmarks/bench_hwmodels.py [--batch 1024] [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import numpy as np

import hwmodels
from hwmodels import Layer, LayerTable, testing


def conv2d(name: str, cin: int, cout: int, k: int, hw: int, stride: int = 1,
           groups: int = 1) -> tuple[Layer, int]:
    out = math.ceil(hw / stride)
    fan_in = cin // groups * k * k
    lay = Layer(name, "conv2d", cin, cout, (k, k), groups, fan_in, fan_in * out * out,
                (cin, hw, hw), (cout, out, out), False)
    return lay, out


def linear(name: str, cin: int, cout: int) -> Layer:
    return Layer(name, "linear", cin, cout, (), 1, cin, cin, (cin,), (cout,), True)


def table(layers: list[Layer]) -> LayerTable:
    return LayerTable(tuple(layers), (0, 2, 4, 8), (2, 4, 8))


def demo_cnn() -> LayerTable:
    """1-D CNN on length-40 signals, widths 64/128/128/192 (the demo's cnn1d, wider)."""
    layers, c, n = [], 1, 40
    for i, (co, k, s) in enumerate([(64, 5, 1), (128, 3, 2), (128, 3, 2), (192, 3, 2)], 1):
        o = math.ceil(n / s)
        layers.append(Layer(f"conv{i}", "conv1d", c, co, (k,), 1, c * k, c * k * o, (c, n),
                            (co, o), True))
        c, n = co, o
    layers.append(linear("fc", c * n, 10))
    return table(layers)


def resnet18() -> LayerTable:
    layers = []
    lay, hw = conv2d("conv1", 3, 64, 7, 224, 2)
    layers.append(lay)
    hw = hw // 2  # max-pool
    c = 64
    for stage, co in enumerate((64, 128, 256, 512), 1):
        for blk in range(2):
            s = 2 if stage > 1 and blk == 0 else 1
            lay, out = conv2d(f"layer{stage}.{blk}.conv1", c, co, 3, hw, s)
            layers.append(lay)
            lay, _ = conv2d(f"layer{stage}.{blk}.conv2", co, co, 3, out)
            layers.append(lay)
            if s == 2:
                lay, _ = conv2d(f"layer{stage}.{blk}.downsample", c, co, 1, hw, 2)
                layers.append(lay)
            c, hw = co, out
    layers.append(linear("fc", 512, 1000))
    return table(layers)


def mobilenetv2() -> LayerTable:
    layers = []
    lay, hw = conv2d("stem", 3, 32, 3, 224, 2)
    layers.append(lay)
    c, i = 32, 0
    for t, co, n, s in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                        (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]:
        for j in range(n):
            st = s if j == 0 else 1
            e = c * t
            if t != 1:
                lay, _ = conv2d(f"b{i}.expand", c, e, 1, hw)
                layers.append(lay)
            lay, out = conv2d(f"b{i}.dw", e, e, 3, hw, st, groups=e)
            layers.append(lay)
            lay, _ = conv2d(f"b{i}.project", e, co, 1, out)
            layers.append(lay)
            c, hw, i = co, out, i + 1
    lay, _ = conv2d("head", c, 1280, 1, hw)
    layers.append(lay)
    layers.append(linear("fc", 1280, 1000))
    return table(layers)


def timeit(fn, repeats: int) -> float:  # type: ignore[no-untyped-def]
    fn()  # warm-up (plans, lookup tables)
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_hwmodels.json"))
    args = ap.parse_args()

    tables = {"demo_cnn": demo_cnn(), "resnet18": resnet18(), "mobilenetv2": mobilenetv2()}
    rng = np.random.default_rng(0)
    results = []
    names = ["decode", "memory", "bitops", "mpic", "pulp", "table", "callable", "evaluate(4)"]
    print(f"genomes/s, batch {args.batch}, median of {args.repeats}")
    print(f"{'table':<12} {'layers':>6} {'channels':>8} " + " ".join(f"{n:>11}" for n in names))
    for tname, t in tables.items():
        g = (rng.random((args.batch, t.n_genes)) * t.gene_n_levels).astype(np.int8)
        row = {}
        for name in names:
            if name == "decode":
                fn = lambda g=g, t=t: hwmodels.BitBatch.from_genomes(t, g)  # noqa: E731
                n = args.batch
            elif name == "evaluate(4)":
                ms = [hwmodels.get(m, table=t) for m in ("memory", "bitops", "mpic", "pulp")]
                fn = lambda g=g, t=t, ms=ms: hwmodels.evaluate(ms, t, g)  # noqa: E731
                n = args.batch
            else:
                m = testing.example_model(name, t)
                # the callable model loops in Python: time a smaller batch
                n = min(args.batch, 32) if not m.vectorized else args.batch
                fn = lambda g=g[:n], t=t, m=m: m.cost(t, g)  # noqa: E731
            sec = timeit(fn, args.repeats)
            row[name] = n / sec
            results.append({"table": tname, "layers": t.n_layers, "channels": t.n_channels,
                            "genes": t.n_genes, "model": name, "batch": n,
                            "median_s": sec, "genomes_per_s": n / sec})
        print(f"{tname:<12} {t.n_layers:>6} {t.n_channels:>8} "
              + " ".join(f"{row[n]:>11,.0f}" for n in names))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": platform.platform(), "numpy": np.__version__,
                               "batch": args.batch, "repeats": args.repeats,
                               "results": results}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
