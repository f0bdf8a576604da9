"""Surrogate-assisted search against plain NSGA-II and random search, at equal true evaluations.

All three methods get the same number of true evaluations (short QAT) on the demo spec;
the hypervolume of (1 - validation accuracy, memory_bytes) over those evaluations is
computed with one fixed reference point (error 1.0, the uniform 8-bit memory). A shared
evaluation cache means a genome that two methods both pick is trained once (results are
deterministic), so the comparison costs less than three full runs.

Also measures the Optuna engine's per-trial overhead (ask, decode, cheap costs, tell) on
a 17,000-channel MobileNetV2-like space.

Prints a table and writes benchmarks/results/bench_search.json. Measures; asserts nothing.
Usage: python benchmarks/bench_search.py [--budget 32] [--jobs 2] [--spec runs/demo.toml]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
from pymoo.indicators.hv import HV

sys.path.insert(0, str(Path(__file__).parent))

from evomp.engines import CompactEncoding, OptunaEngine, PymooEngine  # noqa: E402
from evomp.evaluation._parallel import evaluate_parallel  # noqa: E402
from evomp.evaluation._sensitivity import (
    channel_importance,  # noqa: E402
    run_profile,  # noqa: E402
)
from evomp.objectives._objectives import Objectives  # noqa: E402
from evomp.run._context import open_run  # noqa: E402
from evomp.run._spec import load_spec  # noqa: E402
from evomp.search._loop import Search, SearchOptions  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def hypervolume(acc: np.ndarray, mem: np.ndarray, ref: tuple[float, float]) -> float:
    F = np.stack([1.0 - np.asarray(acc), np.asarray(mem, float)], 1)
    F = F[np.isfinite(F).all(1)]
    return float(HV(ref_point=np.array(ref))(F)) if len(F) else 0.0


def open_cached(spec_path: str, out: Path):  # type: ignore[no-untyped-def]
    """A run context whose evaluator shares one on-disk cache between the methods.

    Every method optimises the same two objectives, accuracy and memory_bytes (the
    hypervolume compared), whatever the spec's own objectives are.
    """
    import dataclasses

    from evomp.evaluation._evaluator import Evaluator

    spec = load_spec(spec_path)
    spec = dataclasses.replace(spec, search=dataclasses.replace(
        spec.search, objectives=("accuracy", "memory_bytes"), constraints=()))
    ctx = open_run(spec, out, None)
    ctx.evaluator = Evaluator(ctx.task, ctx.space, ctx.model, ctx.evaluator.qat,
                              cache_file=RESULTS / "bench_search_cache.jsonl")
    return ctx


def run_surrogate(spec_path: str, out: Path, budget: int, jobs: int) -> dict:
    ctx = open_cached(spec_path, out)
    s = Search.from_context(ctx, SearchOptions(budget=budget, jobs=jobs))
    t0 = time.perf_counter()
    # run the loop up to the budget, without the final verification (not what we compare)
    s._verify = lambda round_: None  # type: ignore[method-assign]
    s.run()
    X, y, _ = s._true_data()
    mem = s.objectives.costs(X)["memory_bytes"]
    return {"acc": y, "mem": mem, "seconds": time.perf_counter() - t0,
            "cpu_seconds": s.clock.seconds, "n": len(y)}


def run_plain_nsga2(ctx, objectives: Objectives, budget: int, jobs: int, pop: int) -> dict:  # type: ignore[no-untyped-def]
    prof = run_profile(ctx, "hutchinson", 16)
    enc = CompactEncoding(ctx.space.table, channel_importance(prof, ctx.space.table))
    eng = PymooEngine(ctx.space.table, enc, 2, 0, "nsga2", pop_size=pop, seed=ctx.spec.seed)
    seen: dict[bytes, float] = {}
    t0 = time.perf_counter()

    def true_objective(G: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        res, _ = evaluate_parallel(ctx.evaluator, G, "short", jobs=jobs)
        acc = np.array([0.0 if r.failed else r.val_accuracy for r in res])
        for g, a in zip(G, acc):
            seen.setdefault(g.tobytes(), a)
        mem = objectives.costs(G)["memory_bytes"]
        return np.stack([1 - acc, mem], 1), np.zeros((len(G), 0))

    # one call: the first generation is the initial population, each later one `pop`
    # offspring (duplicates eliminated); a few spare generations cover cache hits
    eng.propose(true_objective, -(-budget // pop) + 2)
    keys = list(seen)[:budget]
    G = np.stack([np.frombuffer(k, dtype=np.int8) for k in keys])
    return {"acc": np.array([seen[k] for k in keys]),
            "mem": objectives.costs(G)["memory_bytes"], "seconds": time.perf_counter() - t0,
            "n": len(keys)}


def run_random(ctx, objectives: Objectives, budget: int, jobs: int) -> dict:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    G = ctx.space.random(budget, np.random.default_rng(ctx.spec.seed + 1))
    res, _ = evaluate_parallel(ctx.evaluator, G, "short", jobs=jobs)
    acc = np.array([0.0 if r.failed else r.val_accuracy for r in res])
    return {"acc": acc, "mem": objectives.costs(G)["memory_bytes"],
            "seconds": time.perf_counter() - t0, "n": budget}


def optuna_overhead(trials: int) -> list[dict]:
    import bench_hwmodels

    table = bench_hwmodels.mobilenetv2()
    rng = np.random.default_rng(0)
    enc = CompactEncoding(table, rng.random(table.n_channels))
    obj = Objectives(table, ["accuracy", "memory_bytes"], hardware=["memory"])

    def cheap(G: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mem = obj.costs(G)["memory_bytes"]
        return np.stack([mem / mem.max(), mem], 1), np.zeros((len(G), 0))

    rows = []
    t0 = time.perf_counter()
    enc.decode(enc.random_params(256, rng))
    decode_ms = (time.perf_counter() - t0) / 256 * 1e3
    for sampler, n in (("nsga2", trials), ("tpe", trials), ("gp", max(20, trials // 10))):
        eng = OptunaEngine(enc, 2, sampler, trials=n, population=32, seed=0)
        t0 = time.perf_counter()
        eng.propose(cheap, 0)
        rows.append({"sampler": sampler, "channels": table.n_channels, "params": enc.n_params,
                     "genes": table.n_genes, "trials": n,
                     "ms_per_trial": (time.perf_counter() - t0) / n * 1e3,
                     "decode_ms_per_genome": decode_ms})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec", default="runs/demo.toml")
    ap.add_argument("--budget", type=int, default=32)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--pop", type=int, default=8, help="population of plain NSGA-II")
    ap.add_argument("--optuna-trials", type=int, default=200)
    ap.add_argument("--skip-search", action="store_true", help="only the Optuna overhead")
    args = ap.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    out: dict = {"meta": {"machine": platform.machine(), "budget": args.budget,
                          "jobs": args.jobs, "spec": args.spec}}
    if not args.skip_search:
        base = RESULTS / "bench_search_runs"
        sur = run_surrogate(args.spec, base / "surrogate", args.budget, args.jobs)
        ctx = open_cached(args.spec, base / "plain")
        objectives = Objectives(ctx.space.table, ["accuracy", "memory_bytes"], hardware=["memory"])
        plain = run_plain_nsga2(ctx, objectives, args.budget, args.jobs, args.pop)
        rnd = run_random(ctx, objectives, args.budget, args.jobs)
        mem8 = float(objectives.costs(ctx.space.uniform(8, 8))["memory_bytes"][0])
        ref = (1.0, mem8)
        rows = []
        for name, r in (("surrogate-assisted NSGA-II", sur), ("plain NSGA-II", plain),
                        ("random", rnd)):
            rows.append({"method": name, "true_evaluations": int(r["n"]),
                         "hypervolume": hypervolume(r["acc"], r["mem"], ref),
                         "best_accuracy": float(np.nanmax(r["acc"])),
                         "min_memory_at_95pct": float(np.min(r["mem"][r["acc"] >= 0.95]))
                         if (r["acc"] >= 0.95).any() else None,
                         "wall_seconds": r["seconds"]})
        out["reference_point"] = {"error": ref[0], "memory_bytes": ref[1]}
        out["search"] = rows
        print(f"hypervolume of (1 - val accuracy, memory_bytes), ref point (1.0, {mem8:.0f} B),"
              f" {args.budget} true evaluations each:")
        print(f"{'method':<28} {'evals':>5} {'HV':>10} {'best acc':>9} {'min mem @95%':>13}")
        for r in rows:
            m95 = f"{r['min_memory_at_95pct']:.0f}" if r["min_memory_at_95pct"] else "-"
            print(f"{r['method']:<28} {r['true_evaluations']:>5} {r['hypervolume']:>10.1f} "
                  f"{r['best_accuracy']:>9.4f} {m95:>13}")
    ov = optuna_overhead(args.optuna_trials)
    out["optuna_overhead"] = ov
    print("\nOptuna engine overhead per cheap trial (ask + decode + costs + tell):")
    for r in ov:
        print(f"  {r['sampler']:<6} {r['channels']} channels, {r['params']} params: "
              f"{r['ms_per_trial']:.2f} ms/trial (decode {r['decode_ms_per_genome']:.3f} ms)")
    (RESULTS / "bench_search.json").write_text(json.dumps(out, indent=1))
    print(f"wrote {RESULTS / 'bench_search.json'}")


if __name__ == "__main__":
    main()
