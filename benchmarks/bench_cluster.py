"""The study as the queue, measured: throughput, worker idle share, storage and controller
overhead as the study grows.

1. **Throughput**: a real search on a spec (default: the demo with a smaller budget), in
   ``async`` mode with 1 and 2 local workers on the journal file: true (short-QAT)
   evaluations per hour, and each worker's idle share (wall time between its first take
   and the controller's end not spent inside a trial, from the trials' start/complete
   stamps).
2. **Storage overhead per trial** on PostgreSQL (a throw-away server on loopback, when the
   binaries exist; SQLite otherwise, said so) with 100, 1,000 and 10,000 trials already in
   the study (**synthetic** trials with random genomes and accuracies, labelled as such):
   enqueue + take + tell + the controller's incremental read of the new result.
3. **Controller time per landed result** at 50, 200 and 1,000 evaluations (synthetic
   results on the demo space): the asynchronous controller's real steps as results land
   one at a time, taken and told through the queue (the freed place filled from what was
   chosen ahead, the incremental read, the refit when due, the engine's search and the
   selection with pending candidates), averaged over the results.

Prints tables and writes benchmarks/results/bench_cluster.json. Measures; asserts nothing.
Usage: python benchmarks/bench_cluster.py [--spec runs/demo.toml] [--budget 24]
       [--skip-throughput] [--jobs 1,2] [--skip-storage] [--skip-controller]
       [--sizes 100,1000,10000] [--evals 50,200,1000] [--json bench_cluster.json]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import glob
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import TrialState

from evomp.cli import main as evomp_main
from evomp.engines import Proposals
from evomp.evaluation import EvalResult
from evomp.run import load_spec, open_run
from evomp.search import (
    AsyncState,
    Queue,
    Search,
    SearchOptions,
    Store,
    build_parts,
    open_queue_storage,
)
from evomp.space import genome_hash, genome_to_hex

RESULTS = Path("benchmarks/results")


# ------------------------------------------------------------------ PostgreSQL
def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    cands = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found or (cands[-1] if cands else None)


@contextlib.contextmanager
def database() -> Iterator[tuple[str, str]]:
    """``(url, kind)``: a throw-away PostgreSQL on loopback, or a SQLite file."""
    initdb, postgres = _pg_bin("initdb"), _pg_bin("postgres")
    base = Path(tempfile.mkdtemp(prefix="evomp-bench-pg-", dir="/tmp"))
    if not initdb or not postgres:
        yield f"sqlite:///{base / 'bench.db'}", "SQLite (no PostgreSQL binaries found)"
        shutil.rmtree(base, ignore_errors=True)
        return
    prefix: list[str] = []
    if os.geteuid() == 0:
        import pwd

        pw = pwd.getpwnam("postgres")
        os.chown(base, pw.pw_uid, pw.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    os.chmod(base, 0o755)
    subprocess.run(prefix + [initdb, "-D", str(base / "data"), "-A", "trust", "-U", "postgres",
                             "--no-sync"], check=True, capture_output=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(prefix + [postgres, "-D", str(base / "data"), "-p", str(port),
                                        "-k", str(base), "-c", "listen_addresses=127.0.0.1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import psycopg

    try:
        for _ in range(150):
            try:
                conn = psycopg.connect(host="127.0.0.1", port=port, user="postgres",
                                       dbname="postgres", autocommit=True)
                break
            except psycopg.OperationalError:
                time.sleep(0.2)
        conn.execute("CREATE DATABASE bench")
        conn.close()
        yield f"postgresql://postgres@127.0.0.1:{port}/bench", "PostgreSQL (loopback)"
    finally:
        server.terminate()
        server.wait(20)
        shutil.rmtree(base, ignore_errors=True)


# ------------------------------------------------------------------ 1. throughput
def throughput(spec_path: str, budget: int, jobs: int, out: Path) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(out / f"j{jobs}", ignore_errors=True)
    t0 = time.time()
    code = evomp_main(["run", spec_path, "--out", str(out / f"j{jobs}"), "--budget", str(budget),
                       "--jobs", str(jobs), "--mode", "async", "--quiet", "--no-reference"])
    wall = time.time() - t0
    study = optuna.load_study(study_name=load_spec(spec_path).name, storage=JournalStorage(
        JournalFileBackend(str(out / f"j{jobs}" / "study.journal"))))
    done = [t for t in study.trials if t.state == TrialState.COMPLETE
            and t.user_attrs.get("fidelity") == "short"]
    first = min(t.datetime_start.timestamp() for t in done)
    last = max(t.datetime_complete.timestamp() for t in done)
    per: dict[str, float] = {}
    for t in done:
        w = str(t.user_attrs.get("worker"))
        per[w] = per.get(w, 0.0) + (t.datetime_complete - t.datetime_start).total_seconds()
    span = last - first
    idle = {w: max(0.0, 1 - busy / span) for w, busy in per.items()}
    return {"jobs": jobs, "exit": code, "wall_s": wall, "short_evaluations": len(done),
            "search_span_s": span, "evaluations_per_hour": 3600 * len(done) / span,
            "idle_share": idle, "idle_share_mean": float(np.mean(list(idle.values())))}


# ------------------------------------------------------------------ 2. storage
def _synthetic(n: int, n_genes: int, rng: np.random.Generator, metrics: list[str]
               ) -> list[optuna.trial.FrozenTrial]:
    out = []
    for i in range(n):
        g = rng.integers(0, 3, n_genes).astype(np.int8)
        attrs = {"genome": genome_to_hex(g), "genome_hash": f"syn{i:08d}", "fidelity": "short",
                 "seconds": 1.0, "cpu_seconds": 1.0, "round": 0, "source": "synthetic",
                 "ptq_accuracy": 0.1, **{f"m.{m}": float(rng.random()) for m in metrics}}
        out.append(optuna.trial.create_trial(state=TrialState.COMPLETE,
                                             values=[float(rng.random()), float(rng.random())],
                                             user_attrs=attrs))
    return out


def storage_overhead(url: str, sizes: list[int], repeats: int = 20) -> list[dict[str, Any]]:
    from evomp.objectives import Objectives
    from evomp.run import build_space

    spec = load_spec("runs/demo.toml")
    spec = dataclasses.replace(spec, search=dataclasses.replace(
        spec.search, objectives=("accuracy", "memory_bytes"), constraints=()))
    table = build_space(spec).table
    obj = Objectives(table, spec.search.objectives, (), ("memory",))
    rng = np.random.default_rng(0)
    rows = []
    have = 0
    storage = open_queue_storage(url)
    store = Store(storage, "overhead", obj)
    queue = Queue(store, storage)
    store.records()
    for n in sizes:
        store.study.add_trials(_synthetic(n - have, table.n_genes, rng, obj.metrics))
        have = n
        store.records()  # the controller has read what is there
        times = []
        for _ in range(repeats):
            g = rng.integers(0, 3, (1, table.n_genes)).astype(np.int8)
            t0 = time.perf_counter()
            queue.enqueue(Proposals(g), "short", round_=1, source="bench")
            task = queue.take(("short",))
            assert task is not None
            r = EvalResult(genome_to_hex(g[0])[:20], "short", 0.5, 0.1, seconds=1.0)
            queue.tell(task, r, {m: 1.0 for m in obj.metrics})
            store.records()
            times.append(time.perf_counter() - t0)
        rows.append({"trials_in_study": n, "synthetic": True,
                     "ms_per_trial_median": 1e3 * float(np.median(times)),
                     "ms_per_trial_p90": 1e3 * float(np.percentile(times, 90))})
        print(f"  storage: {n:>6} trials in the study: {rows[-1]['ms_per_trial_median']:.1f} ms "
              "per trial (enqueue + take + tell + read)", flush=True)
    return rows


# ------------------------------------------------------------------ 3. controller
def _synthetic_results(parts: Any, G: np.ndarray, rng: np.random.Generator
                       ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``(accuracy, costs)`` of **synthetic** results: more memory, more accuracy, noisy."""
    costs = parts.objectives.costs(G)
    acc = np.clip(0.97 - 2e-5 * (54512 - costs["memory_bytes"]) * rng.random(len(G)), 0.05, 1)
    return acc, costs


def controller_overhead(spec_path: str, evals: list[int], out: Path, landed: int = 60
                        ) -> list[dict[str, Any]]:
    """The asynchronous controller's own work per landed result, through its real code
    (``Search.look``, as ``_run_async`` calls it): a study of ``n`` **synthetic** results on
    the demo space, then ``landed`` more results land one at a time, each the controller's
    own queued candidate taken and told through the queue with a synthetic accuracy (what
    a worker does); after each, the controller looks at the study until it has nothing to
    queue: the freed place filled from the candidates chosen ahead, the incremental read,
    the refit when due, the search and selection with pending candidates believed.
    Reported: the mean over those results (refits and searches amortised as they happen),
    and the first look (a refit with a cross-validated choice of predictor)."""
    spec = load_spec(spec_path)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in evals:
        d = out / f"ctl-{n}"
        shutil.rmtree(d, ignore_errors=True)
        ctx = open_run(spec, d, 1)
        parts = build_parts(ctx)
        s = Search(ctx, parts, SearchOptions(budget=n + 10 * landed, mode="async"))
        rng = np.random.default_rng(n)

        G = ctx.space.random(n, rng)
        acc, costs = _synthetic_results(parts, G, rng)
        for i in range(n):
            parts.store.record(G[i], EvalResult(genome_hash(G[i]), "short", float(acc[i]), 0.1,
                                                seconds=1.0),
                               {k: float(v[i]) for k, v in costs.items()}, round_=1,
                               source="synthetic")
        st = AsyncState(0)
        t0 = time.perf_counter()
        s.look(st, 2, [])  # the first look: a refit with auto's choice, two queued
        s.look(st, 0, parts.queue.pending("short"))
        first = time.perf_counter() - t0
        times, refits = [], 0
        for _ in range(landed):
            task = parts.queue.take(("short",))
            assert task is not None, "the controller left its queue empty"
            a, c = _synthetic_results(parts, task.genome[None], rng)
            parts.queue.tell(task, EvalResult(genome_hash(task.genome), "short", float(a[0]),
                                              0.1, seconds=1.0),
                             {k: float(v[0]) for k, v in c.items()})
            t0 = time.perf_counter()
            before = st.n_fit
            room = 1
            while s.look(st, room, parts.queue.pending("short")):
                room = 0
            times.append(time.perf_counter() - t0)
            refits += st.n_fit != before
        ctx.close()
        rows.append({"evaluations": n, "synthetic": True, "landed": landed,
                     "s_per_result_mean": float(np.mean(times)),
                     "s_per_result_median": float(np.median(times)),
                     "s_per_result_max": float(np.max(times)),
                     "refits": refits, "first_look_s": first})
        print(f"  controller: {n:>5} evaluations: {rows[-1]['s_per_result_mean']:.2f} s per "
              f"landed result (mean over {landed}, {refits} refits; median "
              f"{rows[-1]['s_per_result_median']:.3f} s, max "
              f"{rows[-1]['s_per_result_max']:.1f} s); the first look (a refit choosing its "
              f"predictor) {first:.1f} s", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", default="runs/demo.toml")
    ap.add_argument("--budget", type=int, default=24)
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--jobs", default="1,2", help="local worker counts for the throughput")
    ap.add_argument("--skip-storage", action="store_true")
    ap.add_argument("--skip-controller", action="store_true")
    ap.add_argument("--sizes", default="100,1000,10000")
    ap.add_argument("--evals", default="50,200,1000")
    ap.add_argument("--out", default="runs/.bench-cluster")
    ap.add_argument("--json", default="bench_cluster.json", help="file in benchmarks/results")
    a = ap.parse_args()
    out = Path(a.out)
    res: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"), "platform": platform.platform(),
                           "cpus": os.cpu_count(), "load_before": os.getloadavg()}
    if not a.skip_throughput:
        res["throughput"] = []
        for jobs in (int(j) for j in a.jobs.split(",")):
            r = throughput(a.spec, a.budget, jobs, out)
            res["throughput"].append(r)
            print(f"  throughput: {jobs} worker(s): {r['evaluations_per_hour']:.0f} true "
                  f"evaluations/h, idle share {100 * r['idle_share_mean']:.1f}%", flush=True)
    if not a.skip_storage:
        with database() as (url, kind):
            res["storage_backend"] = kind
            res["storage"] = storage_overhead(url, [int(x) for x in a.sizes.split(",")])
    if not a.skip_controller:
        res["controller"] = controller_overhead(a.spec, [int(x) for x in a.evals.split(",")],
                                                out)
    res["load_after"] = os.getloadavg()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / a.json).write_text(json.dumps(res, indent=1))
    print(f"\nstorage backend: {res.get('storage_backend', '(not measured)')}")
    print("| measure | value |\n|---|---|")
    for r in res.get("throughput", []):
        print(f"| {r['jobs']} worker(s): true evaluations / hour | "
              f"{r['evaluations_per_hour']:.0f} |")
        print(f"| {r['jobs']} worker(s): idle share | {100 * r['idle_share_mean']:.1f}% |")
    for r in res.get("storage", []):
        print(f"| storage per trial at {r['trials_in_study']} trials (synthetic) | "
              f"{r['ms_per_trial_median']:.1f} ms |")
    for r in res.get("controller", []):
        print(f"| controller per result at {r['evaluations']} evaluations (synthetic) | "
              f"mean {r['s_per_result_mean']:.2f} s, median {r['s_per_result_median']:.3f} s |")
    print(f"wrote {RESULTS / a.json}")


if __name__ == "__main__":
    sys.exit(main())
