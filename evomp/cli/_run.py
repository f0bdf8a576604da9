"""``evomp run SPEC``: create or resume a search run and print its verified front."""

from __future__ import annotations

import argparse
import dataclasses

__all__ = ["register"]



def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="create or resume a search run of a spec")
    p.add_argument("spec", help="run specification (TOML), e.g. runs/demo.toml")
    p.add_argument("--out", help="run directory (default runs/<name>/)")
    p.add_argument("--engine", help="search engine: pymoo or optuna")
    p.add_argument("--sampler", help="Optuna sampler: nsga2, nsga3, tpe, gp")
    p.add_argument("--storage", help="Optuna storage URL (default: a journal file in the run dir)")
    p.add_argument("--budget", type=int, help="number of true (short-QAT) evaluations")
    p.add_argument("--jobs", type=int, help="local worker processes (1 in rounds mode: this "
                   "process evaluates; 0: only external 'evomp worker' processes evaluate)")
    p.add_argument("--mode", choices=["auto", "rounds", "async"],
                   help="synchronous rounds (deterministic) or asynchronous (the queue kept "
                   "full); auto: async with --storage, rounds otherwise")
    p.add_argument("--artifacts", help="artifact store path every worker sees (default "
                   "<run dir>/artifacts)")
    p.add_argument("--scheduler", help="dask.distributed scheduler address: start the "
                   "--jobs workers on that cluster")
    p.add_argument("--seed", type=int, help="random seed (overrides the spec)")
    p.add_argument("--threads", type=int, help="torch threads of this process")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--no-reference", action="store_true",
                   help="skip the uniform reference points (8-bit PTQ, 4- and 2-bit short QAT)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from evomp.cli._baseline import print_front
    from evomp.run import load_spec, open_run
    from evomp.search import Search, SearchOptions

    spec = load_spec(args.spec)
    if args.seed is not None:
        spec = dataclasses.replace(spec, seed=args.seed)
    # command-line overrides go into the spec, so the run directory's spec.toml is the
    # resolved one
    over = {k: getattr(args, k) for k in ("engine", "sampler", "budget", "jobs", "mode")
            if getattr(args, k) is not None}
    if over:
        spec = dataclasses.replace(spec, search=dataclasses.replace(spec.search, **over))
    ctx = open_run(spec, args.out, args.threads, progress=not args.quiet,
                   storage=args.storage)
    fi = ctx.float_info
    if not args.quiet:
        print(f"run directory: {ctx.out}")
        print(
            f"float model: val {fi['val_accuracy']:.4f}  test {fi['test_accuracy']:.4f}"
            + ("  (cached)" if fi.get("cached") else f"  (trained in {fi['seconds']:.1f}s)")
        )
    if not args.quiet and not args.no_reference:
        print_reference(ctx)
    search = Search.from_context(
        ctx, SearchOptions(scheduler=args.scheduler, progress=not args.quiet,
                           artifacts=args.artifacts),
        storage=args.storage,
    )
    front = search.run()
    print(f"\nverified front ({len(front.rows)} points; val/test accuracy after the final QAT):")
    print_front(front.rows, search.objectives.hw_metrics, front.feasible)
    print(f"\noutputs: {ctx.out}/front.csv, front.json, evaluations.csv, "
          f"surrogate_quality.csv; CPU {search.clock.seconds:.0f}s")
    return 0


def print_reference(ctx) -> None:  # type: ignore[no-untyped-def]
    """Uniform reference points with test accuracy: what the search must beat (cached in
    the run directory, so a resume does not retrain them)."""
    from evomp.evaluation import evaluate_uniform

    space = ctx.space
    hi = max(space.a_bits)
    settings = [(8, 8, "ptq"), (4, 4, "short"), (2, 2, "short")]
    settings = [(w, a if a in space.a_bits else hi, f) for w, a, f in settings
                if w in space.w_bits]
    res = evaluate_uniform(ctx.evaluator, settings)
    fi = ctx.float_info
    parts = [f"float {fi['test_accuracy']:.4f}"]
    for (w, a, fid), (_, r) in zip(settings, res):
        what = "PTQ" if fid == "ptq" else "short QAT"
        acc = "failed" if r.failed else f"{r.test_accuracy:.4f}"
        parts.append(f"w{w}a{a} {what} {acc}")
    print("uniform reference points (test accuracy): " + " | ".join(parts))
