"""``evomp status DIR``: progress of a run directory."""

from __future__ import annotations

import argparse
import csv
import json
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
    from evomp._errors import EvompError

    if not (d / "spec.toml").is_file():
        raise EvompError(f"{d} is not a run directory (no spec.toml)")
    out: dict = {"dir": str(d)}
    prog = json.loads((d / "progress.json").read_text()) if (d / "progress.json").is_file() else {}
    out["round"] = prog.get("round", 0)
    out["cpu_seconds"] = prog.get("cpu_seconds")
    out["verified"] = bool(prog.get("verified", False))
    from evomp.run import load_run_study

    study = load_run_study(d, storage)
    n_true = 0 if study is None else sum(
        1 for t in study.get_trials(deepcopy=False)
        if t.user_attrs.get("fidelity") == "short" and t.state.name in ("COMPLETE", "FAIL"))
    out["true_evaluations"] = n_true
    if (d / "front.csv").is_file():
        with (d / "front.csv").open() as f:
            out["front_size"] = sum(1 for _ in csv.DictReader(f))
    q = d / "surrogate_quality.csv"
    if q.is_file():
        with q.open() as f:
            rows = list(csv.DictReader(f))
        if rows:
            out["surrogate"] = {k: rows[-1][k] for k in ("round", "kendall_tau", "spearman", "mae",
                                                          "model")}
    if (d / "run.json").is_file():
        meta = json.loads((d / "run.json").read_text())
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
    print(f"front:            {s.get('front_size', 'not verified yet')}")
    if "surrogate" in s:
        q = s["surrogate"]
        print(f"surrogate:        round {q['round']}: kendall tau {float(q['kendall_tau']):.3f}, "
              f"spearman {float(q['spearman']):.3f}, MAE {float(q['mae']):.4f} ({q['model']})")
    if s.get("cpu_seconds") is not None:
        print(f"time:             {float(s['cpu_seconds']):.0f} CPU-seconds"
              + (f", {float(s['wall_seconds']):.0f}s wall" if s.get("wall_seconds") else ""))
    return 0
