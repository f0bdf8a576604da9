"""Time of a QAT step with fake-quant against the same float step, and of a PTQ evaluation.

Prints a table and writes benchmarks/results/bench_quant.json (relative to the working
directory). Measures; asserts nothing. Wall-clock and process CPU time are both reported:
on a shared machine the CPU-time ratio is the steadier one. ``uptime``'s load is printed
before and after; run the script on the old and the new code in one session to compare.
Usage: python benchmarks/bench_quant.py [--repeats 7] [--steps 50] [--threads 2] [--out P]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from evomp import SearchSpace
from evomp.quant import QuantModel
from evomp.tasks import batches, get_task
from evomp.tasks._train import evaluate_model, make_adam, set_threads


def _time_steps(model: torch.nn.Module, task, steps: int, bs: int) -> tuple[float, float]:
    """``(wall s, process CPU s)`` per step."""
    opt = make_adam([{"params": list(model.parameters()), "lr": 1e-3}])
    gen = torch.Generator().manual_seed(0)
    data = list(batches(task.train, bs, shuffle=True, generator=gen))
    model.train()
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(steps):
        x, y = data[i % len(data)]
        loss = task.loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return (time.perf_counter() - t0) / steps, (time.process_time() - c0) / steps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--out", default="benchmarks/results/bench_quant.json")
    ap.add_argument("--models", default="cnn1d,dscnn1d,resnet8",
                    help="comma-separated subset of cnn1d, dscnn1d, resnet8, mobilenetv1")
    args = ap.parse_args()
    set_threads(args.threads)
    load_before = os.getloadavg()
    print(f"load average before: {load_before}")
    rows = []
    zoo = {"cnn1d": "mnist1d", "dscnn1d": "mnist1d", "resnet8": "digits", "mobilenetv1": "digits"}
    for model_name in args.models.split(","):
        task_name = zoo[model_name]
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
        f_t, q_t, ratios, f_c, q_c, c_ratios, ptq_t = [], [], [], [], [], [], []
        for _ in range(args.repeats):
            a, ac = _time_steps(fmodel, task, args.steps, args.batch_size)
            b, bc = _time_steps(qmodel, task, args.steps, args.batch_size)
            f_t.append(a)
            q_t.append(b)
            ratios.append(b / a)
            f_c.append(ac)
            q_c.append(bc)
            c_ratios.append(bc / ac)
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
                "float_step_cpu_ms": 1e3 * statistics.median(f_c),
                "qat_step_cpu_ms": 1e3 * statistics.median(q_c),
                "cpu_ratio_median": statistics.median(c_ratios),
                "ptq_eval_ms": 1e3 * statistics.median(ptq_t),
                "val_samples": len(task.val),
            }
        )
    hdr = (f"{'model':<12} {'chan':>5} {'float ms':>9} {'qat ms':>8} {'ratio':>6} "
           f"{'float cpu':>10} {'qat cpu':>8} {'cpu ratio':>9} {'ptq eval ms':>12}")
    print(hdr)
    for r in rows:
        print(
            f"{r['model']:<12} {r['channels']:>5} {r['float_step_ms']:>9.2f} "
            f"{r['qat_step_ms']:>8.2f} {r['ratio_median']:>6.2f} "
            f"{r['float_step_cpu_ms']:>10.2f} {r['qat_step_cpu_ms']:>8.2f} "
            f"{r['cpu_ratio_median']:>9.2f} {r['ptq_eval_ms']:>12.1f}"
        )
    load_after = os.getloadavg()
    print(f"load average after: {load_after}")
    meta = {
        "machine": platform.processor() or platform.machine(),
        "threads": args.threads,
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "steps": args.steps,
        "torch": torch.__version__,
        "load_before": load_before,
        "load_after": load_after,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
