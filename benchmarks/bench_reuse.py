"""Final QAT from the float weights against a final QAT that continues the member's short-QAT
state (``qat.final_from``), on the verified front of a finished run.

For every front member of RUN_DIR (its final-QAT genomes) three final QATs are trained on the
run's own float weights and spec:
  float      ``qat.final_steps`` steps from the float weights (the protocol before reuse);
  reuse      the short QAT (``qat.steps``), then ``final_steps - steps`` more from its end state
             (the default: as many steps in all, ``steps`` fewer in the final QAT);
  reuse-short  the short QAT, then ``--short-added`` more steps (fewer steps in all).
The short QAT is the one the search already paid for; the "final steps" column counts what
the final QAT itself trains. Test and validation accuracy per member, and the CPU seconds of
each final QAT, are printed and written to benchmarks/results/bench_reuse.json (relative
paths only). Measures; asserts nothing.

Run from the repository root, e.g. after ``make demo``:
    python benchmarks/bench_reuse.py runs/out/demo [--short-added 300] [--threads 1]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from evomp.evaluation import Evaluator
from evomp.run import build_space, build_task, load_run_study, load_spec
from evomp.space import genome_from_hex
from evomp.tasks import set_threads

OUT = Path("benchmarks") / "results" / "bench_reuse.json"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--short-added", type=int, default=300)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    set_threads(args.threads)
    spec = load_spec(args.run_dir / "spec.toml")
    study = load_run_study(args.run_dir)
    if study is None:
        raise SystemExit(f"{args.run_dir} holds no study")
    genomes = {t.user_attrs["genome_hash"]: genome_from_hex(t.user_attrs["genome"])
               for t in study.trials
               if t.state.name == "COMPLETE" and t.user_attrs.get("fidelity") == "final"}
    task = build_task(spec)
    model = task.model_factory()
    model.load_state_dict(torch.load(args.run_dir / "float.pt", weights_only=True)["state_dict"])
    space = build_space(spec, model, task)
    q = spec.qat
    settings = {
        "float": dataclasses.replace(q, final_from="float"),
        "reuse": dataclasses.replace(q, final_from="short", added_steps=0),
        "reuse-short": dataclasses.replace(q, final_from="short", added_steps=args.short_added),
    }
    load0 = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as states:
        evs = {k: Evaluator(task, space, model, c, states_dir=states) for k, c in settings.items()}
        for h, g in genomes.items():
            evs["reuse"].evaluate(g[None], "short")  # the state the search already paid for
            for name, ev in evs.items():
                c0 = time.process_time()
                r = ev.evaluate(g[None], "final", with_test=True)[0]
                cpu = time.process_time() - c0
                c = settings[name]
                steps = c.final_added if r.start == "short" else c.final_steps
                rows.append({"genome_hash": h, "setting": name, "start": r.start,
                             "final_steps": steps,
                             "total_steps": steps + (q.steps if r.start == "short" else 0),
                             "val_accuracy": r.val_accuracy, "test_accuracy": r.test_accuracy,
                             "cpu_seconds": cpu})
                print(f"{h}  {name:<12} {steps:>5} final steps  test {r.test_accuracy:.3f}  "
                      f"val {r.val_accuracy:.3f}  {cpu:.1f} CPU-s", flush=True)
    summary = {}
    print(f"\n{len(genomes)} front members of {args.run_dir}, threads {args.threads}")
    print(f"{'setting':<12} {'final steps':>11} {'total steps':>11} {'median test':>11} "
          f"{'mean test':>9} {'members >= float':>16} {'final CPU-s':>11}")
    base = {r["genome_hash"]: r["test_accuracy"] for r in rows if r["setting"] == "float"}
    for name in settings:
        rs = [r for r in rows if r["setting"] == name]
        test = [r["test_accuracy"] for r in rs]
        s = {"final_steps": rs[0]["final_steps"], "total_steps": rs[0]["total_steps"],
             "median_test": statistics.median(test), "mean_test": statistics.fmean(test),
             "at_least_float": sum(r["test_accuracy"] >= base[r["genome_hash"]] for r in rs),
             "cpu_seconds": sum(r["cpu_seconds"] for r in rs)}
        summary[name] = s
        print(f"{name:<12} {s['final_steps']:>11} {s['total_steps']:>11} "
              f"{s['median_test']:>11.3f} {s['mean_test']:>9.3f} "
              f"{s['at_least_float']:>10}/{len(rs):<5} {s['cpu_seconds']:>11.1f}")
    load1 = os.getloadavg()
    print(f"load average before {load0[0]:.2f}, after {load1[0]:.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"run_dir": args.run_dir.name, "threads": args.threads,
                                    "rows": rows, "summary": summary,
                                    "load_before": load0[0], "load_after": load1[0]},
                                   indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
