"""``evomp status DIR``: progress of a run directory."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="true evaluations, front size, surrogate quality, time")
    p.add_argument("dir", help="run directory")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--storage", help="the run's database URL (default: the one its "
                   "storage.txt names, or its journal file)")
    p.set_defaults(func=run)


def status(d: Path, storage: str | None = None) -> dict:
    """The progress of the run directory ``d`` (never fails on a damaged front: it says so).

    Raises:
        EvompError: ``d`` is not a run directory, or its record cannot be opened.
    """
    from evomp._errors import EvompError
    from evomp.run import RunDir, load_run_study

    rd = RunDir(d)
    if not rd.spec.is_file():
        raise EvompError(f"{d} is not a run directory (no spec.toml)")
    out: dict = {"dir": str(d)}
    prog = rd.read_progress()
    out["round"] = prog.get("round", 0)
    out["cpu_seconds"] = prog.get("cpu_seconds")
    out["verified"] = bool(prog.get("verified", False))
    study = load_run_study(d, storage, say=lambda m: print(f"evomp: note: {m}",
                                                           file=sys.stderr))
    counts: dict[str, int] = {}
    for t in [] if study is None else study.get_trials(deepcopy=False):
        if t.state.name in ("COMPLETE", "FAIL") and "seconds" in t.user_attrs \
                and not t.user_attrs.get("requeued"):
            f = str(t.user_attrs.get("fidelity"))
            counts[f] = counts.get(f, 0) + 1
    out["true_evaluations"] = counts.get("short", 0)
    # evaluations at the cheap screening fidelities (search.screen)
    out["screened"] = {f: counts[f] for f in ("ptq", "tiny") if f in counts}
    front = rd.front_status()
    if isinstance(front, int):
        out["front_size"] = front
    elif rd.front_csv.is_file():
        out["front"] = front  # "unreadable: ..."
    rows = rd.read_quality()
    if rows:
        q = {k: rows[-1].get(k) for k in ("round", "kendall_tau", "spearman", "mae", "model",
                                           "pooled_tau", "pooled_tau_top", "pooled_n",
                                           "pooled_n_top")}
        if isinstance(q["round"], float) and q["round"].is_integer():
            q["round"] = int(q["round"])
        out["surrogate"] = q
    try:
        meta = rd.read_run_json()
    except EvompError as e:
        out["run_json"] = f"unreadable: {e}"
        meta = {}
    if meta:
        out["wall_seconds"] = meta.get("wall_seconds")
        out["cpu_seconds"] = meta.get("cpu_seconds", out["cpu_seconds"])
        out["method"] = meta.get("method")
    return out


def run(args: argparse.Namespace) -> int:
    s = status(Path(args.dir), args.storage)
    if args.json:
        print(json.dumps(s, indent=1))
        return 0
    print(f"run directory:    {s['dir']}")
    print(f"true evaluations: {s['true_evaluations']}  (rounds done: {s['round']})")
    if s.get("screened"):
        print("screened:         " + ", ".join(f"{n} at {f}" for f, n in s["screened"].items())
              + " (cheap fidelities)")
    print(f"front:            {s.get('front_size', s.get('front', 'not verified yet'))}")
    if "surrogate" in s:
        q = s["surrogate"]
        num = lambda v, f: "?" if v is None else format(float(v), f)  # noqa: E731
        print(f"surrogate:        round {q['round']}: kendall tau {num(q['kendall_tau'], '.3f')}, "
              f"spearman {num(q['spearman'], '.3f')}, MAE {num(q['mae'], '.4f')} "
              f"({q['model']})")
        if q.get("pooled_tau") is not None:
            print(f"                  pooled out-of-sample over {num(q['pooled_n'], '.0f')} round "
                  f"candidates: kendall tau {num(q['pooled_tau'], '.3f')}, within 5 points of "
                  f"the best {num(q['pooled_tau_top'], '.3f')}"
                  + ("" if q.get("pooled_n_top") is None else
                     f" (over {num(q['pooled_n_top'], '.0f')})"))
    if s.get("cpu_seconds") is not None:
        print(f"time:             {float(s['cpu_seconds']):.0f} CPU-seconds"
              + (f", {float(s['wall_seconds']):.0f}s wall" if s.get("wall_seconds") else ""))
    return 0
