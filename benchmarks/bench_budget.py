"""Hypervolume of the verified front against the CPU seconds spent, for two settings of the
demo spec, over several seeds.

Each (setting, seed) is one run directory grown in stages: ``evomp run`` with the first
budget (it verifies its front), then the same command with the next budget (a resume: it
trains only the new evaluations and the final QATs of new front members), and so on. After
every stage the run's own CPU clock (``progress.json``: pretraining, profile, every short
and final QAT, the controller), the hypervolume of its verified front and the pooled
out-of-sample Kendall tau of its round candidates (``surrogate_quality.csv``: overall and
within 5 points of the best accuracy) are read. The
hypervolume is that of (1 - test accuracy, memory_bytes) with the reference point (1.0,
the 8-bit uniform memory of the demo model, 54512 bytes), normalised by that memory.

Settings (``--settings``): ``float`` = every final QAT from the float weights
(``qat.final_from = "float"``, the protocol before reuse), ``reuse`` = the demo spec as it
is, ``screen`` = with ``search.screen = ["ptq"]`` (successive halving: each round screens
three times as many candidates by post-training accuracy, BatchNorm re-estimated, and
trains the best third), ``screen2`` = ``["ptq", "tiny"]`` (two rungs: PTQ, then a very
short QAT), ``async`` = ``search.mode = "async"`` (the cluster mode: local workers take
queued trials, the controller refits as results land, against the synchronous rounds of
the demo's default), ``ensemble`` = ``search.surrogate = "ensemble"`` (the mean of the
GP, forest and boosting predictors instead of the one ``auto`` picks), ``short150`` /
``short100`` = ``qat.steps = 150`` / ``100`` (a shorter
short QAT per evaluation; the final QAT still trains ``final_steps`` in all).

Prints a table and writes benchmarks/results/bench_budget.json (``--json``: another name
there); run directories go to benchmarks/results/.budget/ (relative paths only). Measures;
asserts nothing.
Usage: python benchmarks/bench_budget.py [--seeds 0 1 2] [--budgets 20 30 40]
       [--settings float reuse screen screen2 async ensemble short150 short100] [--jobs 2]
       [--json NAME.json] [--fresh]
`make demo` side by side with the protocol before reuse (each pretrains, one run):
       python benchmarks/bench_budget.py --seeds 0 --budgets 40 --settings float reuse \
           --fresh --json bench_demo.json
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from evomp.objectives import hypervolume_2d

RESULTS = Path("benchmarks") / "results"
WORK = Path("benchmarks") / "results" / ".budget"
REF_MEMORY = 54512.0  # the demo model's uniform 8-bit memory
#: setting -> (spec table, key, TOML value) set in the spec; None: the spec as it is
SETTINGS: dict[str, tuple[str, str, str] | None] = {
    "float": ("qat", "final_from", '"float"'),
    "reuse": None,
    "screen": ("search", "screen", '["ptq"]'),
    "screen2": ("search", "screen", '["ptq", "tiny"]'),
    "async": ("search", "mode", '"async"'),
    "ensemble": ("search", "surrogate", '"ensemble"'),
    "short150": ("qat", "steps", "150"),
    "short100": ("qat", "steps", "100"),
}


def _spec(base: str, setting: str, seed: int) -> Path:
    text = re.sub(r"^seed = \d+", f"seed = {seed}", base, flags=re.M)
    extra = SETTINGS[setting]
    if extra:
        table, key, value = extra
        start = re.search(rf"^\[{table}\]\n", text, flags=re.M)
        if start is None:
            raise SystemExit(f"{setting}: the spec has no [{table}] table")
        end = re.search(r"^\[", text[start.end():], flags=re.M)
        stop = start.end() + (end.start() if end else len(text) - start.end())
        body, n = re.subn(rf"^{key} = [^#\n]*", f"{key} = {value} ", text[start.end():stop],
                          count=1, flags=re.M)
        if n == 0:
            body = f"{key} = {value}\n" + body
        text = text[:start.end()] + body + text[stop:]
    p = WORK / f"{setting}-s{seed}.toml"
    p.write_text(text)
    return p


def _hv(run_dir: Path) -> tuple[float, int]:
    rows = list(csv.DictReader(open(run_dir / "front.csv")))
    F = [[1 - float(r["test_accuracy"]), float(r["memory_bytes"])] for r in rows]
    return hypervolume_2d(F, [1.0, REF_MEMORY]) / REF_MEMORY, len(rows)


def _pooled_tau(run_dir: Path) -> dict[str, float]:
    """The run's pooled out-of-sample rank quality so far (surrogate_quality.csv's last row:
    every round candidate, predicted before it was trained, against its measurement)."""
    path = run_dir / "surrogate_quality.csv"
    rows = list(csv.DictReader(open(path))) if path.is_file() else []
    last = rows[-1] if rows else {}
    return {k: float(last.get(k) or "nan") for k in ("pooled_tau", "pooled_tau_top")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec", default="runs/demo.toml")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--budgets", type=int, nargs="+", default=[20, 30, 40])
    ap.add_argument("--settings", nargs="+", default=["reuse", "screen"], choices=list(SETTINGS))
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--json", default="bench_budget.json", help="file in benchmarks/results")
    ap.add_argument("--fresh", action="store_true",
                    help="each run directory pretrains its own float model (no float cache "
                         "shared between settings): with one budget and seed 0, `make demo` "
                         "per setting, wall clock included")
    args = ap.parse_args()
    out_json = RESULTS / args.json
    base = Path(args.spec).read_text()
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    load0 = os.getloadavg()
    rows = []
    for seed in args.seeds:
        for setting in args.settings:
            spec = _spec(base, setting, seed)
            out = WORK / spec.stem / "run" if args.fresh else WORK / spec.stem
            for budget in args.budgets:
                t0 = time.perf_counter()
                r = subprocess.run([sys.executable, "-m", "evomp", "run", str(spec), "--out",
                                    str(out), "--quiet", "--budget", str(budget),
                                    "--jobs", str(args.jobs)],
                                   capture_output=True, text=True)
                if r.returncode != 0:
                    raise SystemExit(f"{spec} budget {budget}: {r.stderr.strip()}")
                cpu = json.loads((out / "progress.json").read_text())["cpu_seconds"]
                hv, n = _hv(out)
                row = {"setting": setting, "seed": seed, "budget": budget,
                       "cpu_seconds": cpu, "hypervolume": hv, "front": n,
                       "wall_seconds": time.perf_counter() - t0, **_pooled_tau(out)}
                rows.append(row)
                print(f"{setting:<6} seed {seed} budget {budget:>3}: {cpu:7.1f} CPU-s  "
                      f"HV {hv:.4f} ({n} members)  pooled tau {row['pooled_tau']:.3f} "
                      f"(top {row['pooled_tau_top']:.3f})", flush=True)
    print(f"\nmedian over seeds {args.seeds} (CPU seconds are cumulative per run directory)")
    print(f"{'setting':<8} {'budget':>6} {'CPU-s':>8} {'HV':>7} {'tau':>6}")
    summary = []
    for setting in args.settings:
        for budget in args.budgets:
            rs = [r for r in rows if r["setting"] == setting and r["budget"] == budget]
            s = {"setting": setting, "budget": budget,
                 "cpu_seconds": statistics.median(r["cpu_seconds"] for r in rs),
                 "hypervolume": statistics.median(r["hypervolume"] for r in rs),
                 "pooled_tau": statistics.median(r["pooled_tau"] for r in rs)}
            summary.append(s)
            print(f"{setting:<8} {budget:>6} {s['cpu_seconds']:>8.1f} {s['hypervolume']:>7.4f} "
                  f"{s['pooled_tau']:>6.3f}")
    load1 = os.getloadavg()
    print(f"load average before {load0[0]:.2f}, after {load1[0]:.2f}")
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps({"rows": rows, "summary": summary, "jobs": args.jobs,
                                    "fresh": args.fresh,
                               "load_before": load0[0], "load_after": load1[0]}, indent=1))
    print(f"wrote {out_json}")


if __name__ == "__main__":
    main()
