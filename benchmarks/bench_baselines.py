"""The search against every non-differentiable baseline on the demo spec, at comparable cost.

Runs (or reuses, when ``run.json`` is already there) one run directory per method, all
from the same cached float model and under the same final protocol (final QAT, seed,
validation and test splits, hardware models):

=================================  ====================================================
``runs/bench-demo-search``         the search (``evomp run``), channel-wise
``runs/bench-demo-layerwise``      the search on the layer-wise space (same budget)
``runs/bench-demo-uniform``        uniform 8/8, 4/4, 2/2, 8/4, 4/8
``runs/bench-demo-random``         random genomes, as many short-QAT evaluations as the search
``runs/bench-demo-ilp``            HAWQ-V3-style ILP sweep, channel granularity
``runs/bench-demo-ilp-layer``      the same ILP at layer granularity
``runs/bench-demo-freebits``       Free Bits refinement of the search's front (GAP8 latency)
=================================  ====================================================

(``demo`` is the spec's name; the spec is snapshotted in ``runs/.bench/``, with the logs.)

It then compares them (``evomp._compare``) on memory and on latency with one fixed
reference point, and measures channel-wise against layer-wise at iso-accuracy. Writes
``benchmarks/results/bench_baselines.json`` and two PNGs, and prints markdown tables.

    python benchmarks/bench_baselines.py [--spec runs/demo.toml] [--jobs 2] [--fresh NAME]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from evomp._compare import compare_runs, format_table, plot_fronts  # noqa: E402
from evomp._spec import load_spec, spec_to_toml  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
ISO_TARGETS = (0.90, 0.93, 0.95, 0.96, 0.97)


def _variant(spec_path: Path, name: str, runs: Path, **changes: object) -> Path:
    """Write a variant of the spec (kept in runs/.bench, which git ignores)."""
    spec = load_spec(spec_path)
    spec = dataclasses.replace(spec, **changes)  # type: ignore[arg-type]
    d = runs / ".bench"
    d.mkdir(parents=True, exist_ok=True)
    p = d / f"{name}.toml"
    p.write_text(spec_to_toml(spec))
    return p


def _run(name: str, cmd: list[str], out: Path, fresh: set[str], log_dir: Path) -> dict:
    """Run ``evomp CMD`` into ``out``, or reuse ``out`` if it is a finished run of this spec."""
    done = (out / "run.json").is_file() and (out / "spec.toml").is_file()
    same = done and (out / "spec.toml").read_text() == spec_to_toml(load_spec(cmd[1]))
    if same and name not in fresh:
        print(f"[{name}] reusing {out}", flush=True)
        return {"name": name, "dir": str(out), "reused": True}
    if out.exists() and name not in fresh:
        raise SystemExit(f"[{name}] {out} holds another (or an unfinished) run of another "
                         f"spec; pass --fresh {name} to replace it, or --skip {name}")
    if name in fresh and out.exists():
        import shutil

        shutil.rmtree(out)
    print(f"[{name}] {' '.join(cmd)}", flush=True)
    t0 = time.perf_counter()
    log = log_dir / f"{name}.log"
    with log.open("w") as f:
        rc = subprocess.call([sys.executable, "-m", "evomp", *cmd], cwd=ROOT, stdout=f,
                             stderr=subprocess.STDOUT)
    wall = time.perf_counter() - t0
    if rc != 0:
        print(log.read_text()[-3000:])
        raise SystemExit(f"[{name}] failed (rc={rc}); log: {log}")
    print(f"[{name}] done in {wall:.0f}s wall", flush=True)
    return {"name": name, "dir": str(out), "reused": False, "wall_seconds": wall}


def _uniform8_memory(spec_path: Path) -> float:
    import hwmodels
    from evomp._runner import build_space

    spec = load_spec(spec_path)
    space = build_space(spec)
    mem = hwmodels.get("memory", table=space.table, **dict(spec.hw.get("memory", {})))
    return float(mem.cost(space.table, space.uniform(8, 8))["memory_bytes"][0])


def _b(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}"


def _iso(cmp_fronts: dict, a: str, b: str, targets: tuple[float, ...]) -> list[dict]:
    """Smallest x of runs ``a`` and ``b`` reaching each accuracy target, and the saving."""
    out = []
    for t in targets:
        xs = {}
        for r in (a, b):
            p = np.asarray(cmp_fronts[r], dtype=float).reshape(-1, 2)
            ok = p[:, 1] >= t
            xs[r] = float(p[ok, 0].min()) if ok.any() else None
        saving = (1 - xs[a] / xs[b]) if xs[a] and xs[b] else None
        out.append({"accuracy": t, a: xs[a], b: xs[b], "saving": saving})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", default=str(ROOT / "runs" / "demo.toml"))
    ap.add_argument("--runs", default=str(ROOT / "runs"), help="parent of the run directories")
    ap.add_argument("--jobs", type=int, default=2, help="parallel evaluations per run")
    ap.add_argument("--fresh", nargs="*", default=[], help="rerun these (names as in the table)")
    ap.add_argument("--skip", nargs="*", default=[], help="leave these out")
    ap.add_argument("--keep-snapshot", action="store_true",
                    help="reuse the spec snapshot of an earlier call (runs/.bench/), e.g. to "
                    "finish a comparison after the spec file changed")
    args = ap.parse_args()
    runs = Path(args.runs).resolve()
    log_dir = runs / ".bench"
    log_dir.mkdir(parents=True, exist_ok=True)
    # a snapshot of the spec: every run of the comparison uses the same one
    spec_path = log_dir / Path(args.spec).name
    if not (args.keep_snapshot and spec_path.is_file()):
        # resolved (every default written out): later changes of code defaults cannot
        # make the runs of one comparison differ
        spec_path.write_text(spec_to_toml(load_spec(args.spec)))
    spec = load_spec(spec_path)
    name = spec.name
    layer_spec = _variant(spec_path, f"{name}-layerwise", runs,
                          space=dataclasses.replace(spec.space, granularity="layer"))
    ilp_layer_spec = _variant(spec_path, f"{name}-ilp-layer", runs,
                              baselines={**spec.baselines,
                                         "ilp": {**spec.baselines.get("ilp", {}),
                                                 "granularity": "layer"}})
    d = {k: runs / f"bench-{name}{s}" for k, s in (
        ("search", "-search"), ("search-layer", "-layerwise"), ("uniform", "-uniform"),
        ("random", "-random"), ("ilp", "-ilp"), ("ilp-layer", "-ilp-layer"),
        ("freebits", "-freebits"))}
    j = ["--jobs", str(args.jobs)]
    plan = [
        ("search", ["run", str(spec_path), "--out", str(d["search"]), "--quiet", *j]),
        ("uniform", ["baseline", str(spec_path), "--method", "uniform",
                     "--out", str(d["uniform"]), *j]),
        ("ilp", ["baseline", str(spec_path), "--method", "ilp", "--out", str(d["ilp"]), *j]),
        ("ilp-layer", ["baseline", str(ilp_layer_spec), "--method", "ilp",
                       "--out", str(d["ilp-layer"]), *j]),
        ("freebits", ["baseline", str(spec_path), "--method", "freebits", "--from",
                      str(d["search"]), "--out", str(d["freebits"]), *j]),
        ("random", ["baseline", str(spec_path), "--method", "random",
                    "--out", str(d["random"]), *j]),
        ("search-layer", ["run", str(layer_spec), "--out", str(d["search-layer"]), "--quiet",
                          *j]),
    ]
    t0 = time.perf_counter()
    done = []
    for key, cmd in plan:
        if key in args.skip:
            continue
        done.append(_run(key, cmd, d[key], set(args.fresh), log_dir))
    have = [k for k, _ in plan if k not in args.skip and (d[k] / "run.json").is_file()]

    mem8 = _uniform8_memory(spec_path)
    budgets = [round(0.1 * mem8), round(0.2 * mem8)]
    ref_mem = (0.5, 1.1 * mem8)
    order = [k for k in ("search", "search-layer", "random", "ilp", "ilp-layer", "uniform",
                         "freebits") if k in have]
    cmp_mem = compare_runs([d[k] for k in order], x="memory_bytes", y="test_accuracy",
                           ref_point=ref_mem, budgets=budgets)
    RESULTS.mkdir(parents=True, exist_ok=True)
    plot_fronts(cmp_mem, RESULTS / "bench_baselines_memory.png",
                title=f"{name}: test accuracy against memory (verified fronts)")
    lat_runs = [k for k in ("search", "freebits", "ilp", "uniform") if k in have]
    cmp_lat = None
    if lat_runs:
        cmp_lat = compare_runs([d[k] for k in lat_runs], x="latency_cycles",
                               y="test_accuracy")
        plot_fronts(cmp_lat, RESULTS / "bench_baselines_latency.png",
                    title=f"{name}: test accuracy against GAP8 latency (pulp model)")
    label = {r["path"]: r["run"] for r in cmp_mem.rows}
    gran = {}
    for a, b in (("search", "search-layer"), ("ilp", "ilp-layer")):
        if a in have and b in have:
            la, lb = label[str(d[a])], label[str(d[b])]
            gran[f"{a} vs {b}"] = _iso(cmp_mem.fronts, la, lb, ISO_TARGETS)

    result = {
        "spec": str(spec_path.relative_to(ROOT)) if spec_path.is_relative_to(ROOT) else
        str(spec_path),
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpu_count": os.cpu_count(), "python": platform.python_version(),
                    "load_average_at_end": os.getloadavg()},
        "budget": {"search_true_evaluations": spec.search.budget,
                   "short_qat_steps": spec.qat.steps, "final_qat_steps": spec.qat.final_steps,
                   "final_max": spec.search.final_max, "jobs": args.jobs},
        "uniform8_memory_bytes": mem8,
        "runs": done,
        "memory": cmp_mem.to_dict(),
        "latency": None if cmp_lat is None else cmp_lat.to_dict(),
        "granularity_iso_accuracy": gran,
        "wall_seconds": time.perf_counter() - t0,
    }
    (RESULTS / "bench_baselines.json").write_text(json.dumps(result, indent=1))
    print("\n## Memory\n")
    print(format_table(cmp_mem, markdown=True))
    if cmp_lat is not None:
        print("\n## GAP8 latency (pulp model)\n")
        print(format_table(cmp_lat, markdown=True))
    print("\n## Channel-wise against layer-wise at iso-accuracy (memory_bytes)\n")
    for k, rows in gran.items():
        a, b = k.split(" vs ")
        print(f"\n{k}:\n")
        print(f"| test accuracy >= | {a} [B] | {b} [B] | saving |\n|---|---|---|---|")
        for r in rows:
            la, lb = label[str(d[a])], label[str(d[b])]
            s = "-" if r["saving"] is None else f"{100 * r['saving']:.0f}%"
            print(f"| {r['accuracy']:.2f} | {_b(r[la])} | {_b(r[lb])} | {s} |")
    print(f"\nwrote {RESULTS / 'bench_baselines.json'} and the PNGs")


if __name__ == "__main__":
    main()
