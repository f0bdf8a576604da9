"""``evomp compare DIR [DIR ...]``: one table (and one plot) over the fronts of several runs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare",
        help="compare the verified fronts of runs and baselines",
        description="One row per run directory: method, whether it found a feasible "
        "configuration, hypervolume under one reference point (0 for a run whose front "
        "holds only the least infeasible configurations), front size, best accuracy under "
        "budgets, the metric at iso-accuracy relative to the first run, CPU seconds (a "
        "refinement such as freebits --from includes the refined run's). Writes "
        "compare.png with every front.",
    )
    p.add_argument("dirs", nargs="+", metavar="DIR", help="run directories (search or baseline)")
    p.add_argument("--x", help="hardware metric (minimised); default: the first run's first "
                   "hardware objective")
    p.add_argument("--y", default="test_accuracy",
                   help="accuracy column: test_accuracy (default) or val_accuracy")
    p.add_argument("--ref-point", metavar="ACC,X",
                   help="hypervolume reference point, accuracy then metric (e.g. 0.8,60000); "
                   "default: the worst values over all runs widened by 10%% (printed)")
    p.add_argument("--budgets", metavar="B1,B2", help="report the best accuracy with the "
                   "metric under each of these values")
    p.add_argument("--iso-tolerance", type=float, default=0.005,
                   help="iso-accuracy target = first run's best minus this (default 0.005)")
    p.add_argument("--out", help="folder for compare.png (default: the current directory)")
    p.add_argument("--no-plot", action="store_true", help="do not write compare.png")
    p.add_argument("--markdown", action="store_true", help="print a markdown table")
    p.add_argument("--json", action="store_true", help="print JSON (for scripts)")
    p.set_defaults(func=run)


def _floats(text: str | None, what: str, n: int | None = None) -> list[float]:
    from evomp._errors import EvompError

    if not text:
        return []
    try:
        vals = [float(v) for v in text.split(",") if v.strip()]
    except ValueError as e:
        raise EvompError(f"{what} takes comma-separated numbers, got {text!r}") from e
    if n is not None and len(vals) != n:
        raise EvompError(f"{what} takes {n} comma-separated numbers, got {text!r}")
    return vals


def run(args: argparse.Namespace) -> int:
    from evomp.reports import compare_runs, format_table, plot_fronts

    ref = _floats(args.ref_point, "--ref-point", 2)
    cmp = compare_runs(
        args.dirs, x=args.x, y=args.y, ref_point=(ref[0], ref[1]) if ref else None,
        budgets=_floats(args.budgets, "--budgets"), iso_tolerance=args.iso_tolerance,
    )
    png = None
    if not args.no_plot:
        png = plot_fronts(cmp, Path(args.out or ".") / "compare.png")
    if args.json:
        d = cmp.to_dict()
        d["plot"] = None if png is None else str(png)
        print(json.dumps(d, indent=1))
        return 0
    print(format_table(cmp, markdown=args.markdown))
    if png is not None:
        print(f"plot: {png}")
    return 0
