"""Time of a QAT step with fake-quant against the same float step, and of a PTQ evaluation.

Prints a table and writes benchmarks/results/bench_quant.json. Measures; asserts nothing.
Usage: python benchmarks/bench_quant.py [--repeats 7] [--steps 50] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from evomp import SearchSpace
from evomp.quant import QuantModel
from evomp.tasks import batches, get_task
from evomp.tasks._train import evaluate_model, make_adam, set_threads


def _time_steps(model: torch.nn.Module, task, steps: int, bs: int) -> float:
    opt = make_adam([{"params": list(model.parameters()), "lr": 1e-3}])
    gen = torch.Generator().manual_seed(0)
    data = list(batches(task.train, bs, shuffle=True, generator=gen))
    model.train()
    t0 = time.perf_counter()
    for i in range(steps):
        x, y = data[i % len(data)]
        loss = task.loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return (time.perf_counter() - t0) / steps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_quant.json"))
    args = ap.parse_args()
    set_threads(args.threads)
    rows = []
    for task_name, model_name in (("mnist1d", "cnn1d"), ("mnist1d", "dscnn1d"),
                                  ("digits", "resnet8")):
        task = get_task(task_name, model_name)
        torch.manual_seed(0)
        fmodel = task.model_factory()
        space = SearchSpace.from_model(fmodel, task.example_input())
        qmodel = QuantModel(fmodel, space.layer_names)
        qmodel.calibrate([x for (x, _), _ in zip(batches(task.train, 256), range(2))])
        g = space.random(1, 0)
        wb, ab = space.decode(g)
        qmodel.set_bits(wb[0], ab[0], space.table.layer_start)
        _time_steps(fmodel, task, 5, args.batch_size)  # warm-up
        _time_steps(qmodel, task, 5, args.batch_size)
        f_t, q_t, ratios, ptq_t = [], [], [], []
        for _ in range(args.repeats):
            a = _time_steps(fmodel, task, args.steps, args.batch_size)
            b = _time_steps(qmodel, task, args.steps, args.batch_size)
            f_t.append(a)
            q_t.append(b)
            ratios.append(b / a)
            t0 = time.perf_counter()
            qmodel.set_bits(wb[0], ab[0], space.table.layer_start)
            evaluate_model(qmodel, task, task.val)
            ptq_t.append(time.perf_counter() - t0)
        rows.append(
            {
                "task": task_name,
                "model": model_name,
                "channels": space.table.n_channels,
                "float_step_ms": 1e3 * statistics.median(f_t),
                "qat_step_ms": 1e3 * statistics.median(q_t),
                "ratio_median": statistics.median(ratios),
                "ptq_eval_ms": 1e3 * statistics.median(ptq_t),
                "val_samples": len(task.val),
            }
        )
    hdr = (f"{'model':<10} {'chan':>5} {'float ms':>9} {'qat ms':>8} {'ratio':>6} "
           f"{'ptq eval ms':>12}")
    print(hdr)
    for r in rows:
        print(
            f"{r['model']:<10} {r['channels']:>5} {r['float_step_ms']:>9.2f} "
            f"{r['qat_step_ms']:>8.2f} {r['ratio_median']:>6.2f} {r['ptq_eval_ms']:>12.1f}"
        )
    meta = {
        "machine": platform.processor() or platform.machine(),
        "threads": args.threads,
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "steps": args.steps,
        "torch": torch.__version__,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
