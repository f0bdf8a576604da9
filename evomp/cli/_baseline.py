"""``evomp baseline SPEC --method NAME``: run a baseline under the search's final protocol."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "baseline",
        help="run a baseline method; its front is scored like the search's",
        description="Methods: uniform, random, ilp, freebits (non-differentiable) and "
        "edmips, dnas-channel, bayesbits, learned (differentiable), as installed.",
    )
    p.add_argument("spec", help="run specification (TOML)")
    p.add_argument("--method", required=True, help="baseline method name")
    p.add_argument("--points", type=int, help="number of trade-off points (sweep length)")
    p.add_argument("--out", help="run directory (default runs/<name>-<method>/)")
    p.add_argument("--from", dest="from_dir", help="refine the front of this run (freebits); "
                   "its CPU seconds are included in this run's")
    p.add_argument("--budget", type=int, help="true evaluations (random; default: spec budget)")
    p.add_argument("--jobs", type=int, default=1, help="parallel evaluations")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from evomp.baselines import BaselineOptions, get_method
    from evomp.objectives import Objectives
    from evomp.run import CpuClock, finish_run, load_spec, open_run

    spec = load_spec(args.spec)
    method = get_method(args.method)
    out = Path(args.out) if args.out else Path("runs") / f"{spec.name}-{args.method}"
    ctx = open_run(spec, out)
    clock = CpuClock()
    s = spec.search
    objectives = Objectives(ctx.space.table, s.objectives, s.constraints, s.hardware, spec.hw)
    opts = BaselineOptions(
        points=args.points,
        from_dir=Path(args.from_dir) if args.from_dir else None,
        budget=args.budget,
        params=dict(spec.baselines.get(args.method, {})),
        jobs=args.jobs,
    )
    res = method(ctx, objectives, opts)
    # CPU time of worker processes the method used (e.g. random's parallel short QAT)
    clock.add_workers(float(res.info.pop("worker_cpu_seconds", 0.0)))
    extra = cpu_record(clock, res.info)
    front = finish_run(
        ctx, objectives, res.genomes, method=args.method, clock=clock, jobs=args.jobs,
        prior_evaluations=res.info.pop("evaluations", []),
        info={"baseline": res.info, **extra},
    )
    print_front(front.rows, objectives.hw_metrics, front.feasible)
    src = extra.get("source_cpu_seconds")
    print(f"run directory: {ctx.out}  (CPU {clock.seconds:.0f}s"
          + (f", of which {src:.0f}s by the refined run" if src else "") + ")")
    return 0


def cpu_record(clock: Any, info: dict[str, Any]) -> dict[str, Any]:
    """Fold the CPU seconds of a refined source run into ``clock``; ``run.json`` fields.

    A method that refines another run's front (``freebits --from DIR``) puts that run's
    CPU seconds in ``info["source_cpu_seconds"]`` (None: unknown). They are added to the
    clock, so ``run.json``'s ``cpu_seconds`` is the whole cost of the front (source run
    plus refinement), and recorded on their own as ``source_cpu_seconds``.

    Args:
        clock: the run's :class:`~evomp.run._protocol.CpuClock`.
        info: the method's info (``source_cpu_seconds`` is removed from it).

    Returns:
        Top-level ``run.json`` fields (empty for a method that refines nothing).
    """
    if "source_cpu_seconds" not in info:
        return {}
    src = info.pop("source_cpu_seconds")
    src = None if src is None else float(src)
    if src is not None:
        clock.before += src
    return {
        "source_cpu_seconds": src,
        "cpu_seconds_includes_source": src is not None,
        "cpu_seconds_note": (
            "cpu_seconds = source_cpu_seconds (the refined run, --from) + this refinement "
            "and its final QAT" if src is not None else
            "the refined run (--from) records no cpu_seconds: cpu_seconds counts only this "
            "refinement and its final QAT"),
    }


def print_front(rows: list[dict], metrics: list[str], feasible: bool = True) -> None:
    if not feasible:
        print("no feasible configuration; the least infeasible ones:")
    cols = ["id", "val_accuracy", "test_accuracy"] + metrics
    print("  ".join(f"{c:>14}" for c in cols))
    for r in rows:
        vals = []
        for c in cols:
            v = r.get(c)
            vals.append(f"{v:>14.4f}" if isinstance(v, float) and c.endswith("accuracy")
                        else f"{v:>14.6g}" if isinstance(v, float) else f"{v!s:>14}")
        print("  ".join(vals))
