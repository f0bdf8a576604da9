"""Step time of the demo model's QAT training step beside competing busy processes.

The demo's model (the zoo ``cnn1d`` on MNIST-1D, wrapped in ``QuantModel`` at a random
mixed-precision genome) trains one Adam step per batch of 128, as every search evaluation
does. Each setting is timed with 0 and 1 competing processes: a real ``multiprocessing``
process spinning a CPU-bound torch matmul loop on one thread. Thread settings: 1 and 2
intra-op threads, the old default (``threads = 0`` meant every core: ``os.cpu_count()``)
and the new automatic one (``evomp.evaluation.threads_per_worker(1, task)``).

Prints a table and writes benchmarks/results/bench_threads.json (relative paths only).
Measures; asserts nothing. Other processes on the machine change the figures: the load
average before and after is recorded with them.
Run from the repository root.
Usage: python benchmarks/bench_threads.py [--repeats 7] [--steps 20] [--competitors 0 1]
       [--budget-s 2]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from evomp import SearchSpace
from evomp.evaluation import threads_per_worker, usable_cores
from evomp.quant import QuantModel
from evomp.tasks import batches, cnn1d, get_task, make_adam

OUT = Path("benchmarks") / "results" / "bench_threads.json"


def _spin(stop: mp.synchronize.Event, ready: mp.synchronize.Event) -> None:
    """A competing busy process: one thread of CPU-bound matmuls until ``stop``."""
    torch.set_num_threads(1)
    a = torch.randn(256, 256)
    ready.set()
    while not stop.is_set():
        for _ in range(20):
            a = torch.tanh(a @ a)


def _steps(model: torch.nn.Module, opt: torch.optim.Optimizer, data: list, loss_fn, n: int,
           budget_s: float = float("inf")) -> tuple[float, float]:
    """Wall and CPU seconds per training step over ``n`` steps, or fewer (at least 2) when
    they take longer than ``budget_s`` (a collapsed setting takes a second a step)."""
    t0, c0 = time.perf_counter(), time.process_time()
    done = 0
    for i in range(n):
        x, y = data[i % len(data)]
        loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        done += 1
        if done >= 2 and time.perf_counter() - t0 > budget_s:
            break
    return (time.perf_counter() - t0) / done, (time.process_time() - c0) / done


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--competitors", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--budget-s", type=float, default=2.0,
                    help="wall seconds a repeat may take before it stops early (>= 2 steps)")
    args = ap.parse_args()

    task = get_task("mnist1d")
    torch.manual_seed(0)
    fmodel = cnn1d(length=int(task.example_input().shape[-1]))
    space = SearchSpace.from_model(fmodel, task.example_input())
    q = QuantModel(fmodel, space.layer_names)
    q.calibrate([x for (x, _), _ in zip(batches(task.train, 256), range(2))])
    wb, ab = space.decode(space.random(1, 0))
    q.set_bits(wb[0], ab[0], space.table.layer_start)
    opt = make_adam([{"params": q.weight_parameters(), "lr": 3e-3},
                     {"params": q.quant_parameters(), "lr": 1e-2}])
    gen = torch.Generator().manual_seed(0)
    data = list(batches(task.train, args.batch_size, shuffle=True, generator=gen))

    old_default = os.cpu_count() or 1
    new_default = threads_per_worker(1, task)  # what open_run picks for threads = 0
    settings = [("1 thread", 1), ("2 threads", 2),
                (f"old default (all cores: {old_default})", old_default),
                (f"new default (automatic: {new_default})", new_default)]
    load_before = os.getloadavg()
    rows = []
    ctx = mp.get_context("spawn")
    for n_comp in args.competitors:
        stop, procs = ctx.Event(), []
        for _ in range(n_comp):
            ready = ctx.Event()
            p = ctx.Process(target=_spin, args=(stop, ready), daemon=True)
            p.start()
            ready.wait(60)
            procs.append(p)
        try:
            time.sleep(0.5 if n_comp else 0.0)
            for label, threads in settings:
                torch.set_num_threads(threads)
                _steps(q, opt, data, task.loss_fn, 3, args.budget_s)  # warm-up
                wall, cpu = [], []
                for _ in range(args.repeats):
                    w, c = _steps(q, opt, data, task.loss_fn, args.steps, args.budget_s)
                    wall.append(w)
                    cpu.append(c)
                rows.append({"competitors": n_comp, "setting": label, "threads": threads,
                             "step_ms": 1e3 * statistics.median(wall),
                             "step_ms_min": 1e3 * min(wall), "step_ms_max": 1e3 * max(wall),
                             "cpu_ms_per_step": 1e3 * statistics.median(cpu)})
                r = rows[-1]
                print(f"{n_comp} competing  {label:32s} {r['step_ms']:8.1f} ms/step "
                      f"(min {r['step_ms_min']:.1f}, max {r['step_ms_max']:.1f}; "
                      f"CPU {r['cpu_ms_per_step']:.1f} ms)", flush=True)
        finally:
            stop.set()
            for p in procs:
                p.join(10)
                if p.is_alive():
                    p.terminate()
    load_after = os.getloadavg()

    print("\nmedian step time (ms) of the demo model's QAT step, batch "
          f"{args.batch_size}, {args.repeats} repeats of {args.steps} steps")
    heads = [f"{c} competing" for c in args.competitors]
    print(f"{'setting':40s}" + "".join(f"{h:>14s}" for h in heads))
    for label, _ in settings:
        cells = [next(r for r in rows if r["setting"] == label and r["competitors"] == c)
                 for c in args.competitors]
        print(f"{label:40s}" + "".join(f"{r['step_ms']:14.1f}" for r in cells))
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} "
          f"({usable_cores()} usable CPUs)")

    result = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "script": "benchmarks/bench_threads.py",
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                    "usable_cores": usable_cores(), "torch": torch.__version__,
                    "python": platform.python_version()},
        "load_average_before": list(load_before), "load_average_after": list(load_after),
        "batch_size": args.batch_size, "repeats": args.repeats, "steps": args.steps,
        "budget_s_per_repeat": args.budget_s,
        "model": "cnn1d (mnist1d), QuantModel at a random genome",
        "rows": rows,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
