"""``evomp report DIR``: plots of the trade-off and a self-contained HTML summary."""

from __future__ import annotations

import argparse

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="plots of a run's front and a self-contained HTML summary")
    p.add_argument("dir", help="a finished run directory (search or baseline)")
    p.add_argument("--out", help="where to write (default DIR/report)")
    p.add_argument("--pick", help="front member ids for the bit-allocation picture, "
                   "comma-separated (default: up to 4 spread over the front)")
    p.add_argument("--metrics", help="hardware metrics to plot accuracy against, "
                   "comma-separated, or 'all' (default: the run's hardware objectives)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from evomp.reports import write_report

    split = lambda s: [x.strip() for x in s.split(",") if x.strip()] if s else None  # noqa: E731
    rep = write_report(args.dir, args.out, split(args.pick), split(args.metrics))
    print(f"report: {rep.html}")
    for p in rep.plots:
        print(f"  {p}")
    for n in rep.notes:
        print(f"  note: {n}")
    return 0
