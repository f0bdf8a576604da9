"""``evomp worker SPEC --storage URL``: join a run's shared study as one more worker."""

from __future__ import annotations

import argparse

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "worker",
        help="evaluate candidates of a shared study (any number of workers, any machines)",
        description="Each worker asks the shared study for a candidate, evaluates it with "
        "short QAT and tells the result, until the study holds the spec's budget. Then "
        "'evomp run SPEC --storage URL' verifies the front from every worker's trials.",
    )
    p.add_argument("spec", help="run specification (TOML)")
    p.add_argument("--storage", required=True, help="shared Optuna storage URL (PostgreSQL)")
    p.add_argument("--out", help="local run directory (float model, sensitivity)")
    p.add_argument("--budget", type=int, help="stop when the study holds this many evaluations")
    p.add_argument("--sampler", help="Optuna sampler: nsga2, nsga3, tpe, gp")
    p.add_argument("--threads", type=int, help="torch threads of this worker")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from evomp.run import load_spec, open_run
    from evomp.search import run_worker

    spec = load_spec(args.spec)
    ctx = open_run(spec, args.out, args.threads)
    counts = run_worker(ctx, args.storage, args.budget, args.sampler)
    print(f"worker done: {counts['evaluated']} evaluated, {counts['duplicates']} duplicates "
          f"skipped, {counts['failed']} failed")
    return 0
