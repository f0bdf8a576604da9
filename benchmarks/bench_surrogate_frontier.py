"""Does the search's surrogate rank the frontier? Pooled out-of-sample rank quality.

The honest figure of a search surrogate: every round candidate's predicted accuracy, made
before the candidate was trained, against its measured short-QAT validation accuracy,
pooled over all the rounds of a run (Kendall tau-b), and the same among the candidates
within 5 points of the run's best accuracy (the frontier the search pushes into).

Two parts:

* **recorded** (``--runs DIR ...``): the pooled figure from each finished run directory's
  recorded ``predicted_accuracy`` (per run and the median over runs), plus the
  hypervolume of the verified front (``front.csv``: ``1 - test_accuracy`` against
  ``memory_bytes``, reference ``(1.0, 54512)``, the demo's uniform 8-bit memory).
* **replay** (``--replay``): offline development of predictors and features. For every
  round ``r`` of a run, each candidate surrogate is fitted on everything evaluated before
  round ``r`` (initial design plus earlier rounds, in the loop's canonical order) and
  predicts round ``r``'s candidates; pooled over rounds. The candidates are the ones the
  run's own surrogate chose, so a replay is a development aid; confirm with real runs.

Prints a table and writes ``benchmarks/results/bench_surrogate_frontier.json`` (paths in
it are relative to the current directory where possible).

Usage::

    python benchmarks/bench_surrogate_frontier.py --runs /tmp/surr/base-s* \\
        [--replay] [--models auto,gp,...] [--label before]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.pipeline import make_pipeline

import surrogates as S
from evomp.objectives import hypervolume_2d
from evomp.run import load_run_study
from evomp.space import genome_from_hex
from hwmodels import LayerTable

RESULTS = Path(__file__).resolve().parent / "results"
HV_REF = (1.0, 54512.0)  # error 1.0, the demo's uniform 8-bit memory in bytes
MARGIN = 0.05  # "within 5 points of the best"


@dataclass
class RunData:
    """One run directory's short-QAT evaluations in the loop's canonical order."""

    path: Path
    table: LayerTable
    profile: S.SensitivityProfile
    genomes: np.ndarray  # (n, n_genes) int8
    acc: np.ndarray  # (n,) validation accuracy
    round: np.ndarray  # (n,) 0 = initial design
    predicted: np.ndarray  # (n,) recorded prediction (NaN for the initial design)
    seed: int


def load_run(run_dir: str | os.PathLike[str]) -> RunData:
    """Read a finished (or partial) run directory: its space, profile and study."""
    d = Path(run_dir)
    table = LayerTable.from_json((d / "space.json").read_text())
    profile = S.SensitivityProfile.load(d / "sensitivity.npz")
    study = load_run_study(d)
    if study is None:
        raise SystemExit(f"{d} holds no study")
    rows = []
    for t in study.get_trials(deepcopy=False):
        ua = t.user_attrs
        if ua.get("fidelity") != "short" or "genome" not in ua or t.state.name != "COMPLETE":
            continue
        rd = ua.get("round")
        key = (float("inf") if rd is None or rd < 0 else float(rd),
               float(t.number) if ua.get("slot") is None else float(ua["slot"]), t.number)
        acc = float(t.values[study.user_attrs["objectives"].index("accuracy")])
        rows.append((key, genome_from_hex(ua["genome"]), acc, int(rd or 0),
                     float(ua.get("predicted_accuracy", np.nan))))
    rows.sort(key=lambda r: r[0])
    seed = 0
    run_json = d / "run.json"
    if run_json.is_file():
        seed = int(json.loads(run_json.read_text()).get("seed", 0) or 0)
    return RunData(d, table, profile, np.stack([r[1] for r in rows]).astype(np.int8),
                   np.array([r[2] for r in rows]), np.array([r[3] for r in rows]),
                   np.array([r[4] for r in rows]), seed)


def pooled(run: RunData, predicted: np.ndarray) -> dict[str, float]:
    """Pooled quality of ``predicted`` (one per round candidate, NaN elsewhere)."""
    cand = (run.round > 0) & np.isfinite(predicted)
    q = S.pooled_rank_quality(run.acc[cand], predicted[cand], best_margin=MARGIN,
                              best=float(run.acc.max()))
    return {k: float(v) for k, v in q.items()}


def front_hypervolume(run_dir: str | os.PathLike[str]) -> float:
    """Hypervolume of the verified front: ``(1 - test_accuracy, memory_bytes)``."""
    with open(Path(run_dir) / "front.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    F = np.array([[1.0 - float(r["test_accuracy"]), float(r["memory_bytes"])] for r in rows
                  if r.get("test_accuracy") not in (None, "")])
    return float(hypervolume_2d(F, HV_REF)) / (HV_REF[0] * HV_REF[1])


# ------------------------------------------------------------------ replay
Factory = Callable[[LayerTable, S.SensitivityProfile, int], Any]


def _pipe(pred: Callable[[int], Any], **feat: Any) -> Factory:
    return lambda t, p, seed: make_pipeline(S.GenomeFeatures(t, p, **feat), pred(seed))


OLD = {"widths": False}  # the features before the layer-width columns

MODELS: dict[str, Factory] = {
    # the search's default (search.surrogate = "auto"), and what it was before
    "auto": _pipe(lambda s: S.AutoSurrogate()),
    "auto_before": _pipe(lambda s: S.AutoSurrogate(), **OLD),
    # one change at a time
    "auto_focus": _pipe(lambda s: S.AutoSurrogate(focus=0.5)),
    "auto_focus_oldfeat": _pipe(lambda s: S.AutoSurrogate(focus=0.5), **OLD),
    "gp": _pipe(lambda s: S.GPSurrogate()),
    "gp_oldfeat": _pipe(lambda s: S.GPSurrogate(), **OLD),
    "forest": _pipe(lambda s: S.ForestSurrogate(random_state=s)),
    "forest_oldfeat": _pipe(lambda s: S.ForestSurrogate(random_state=s), **OLD),
    "boosting": _pipe(lambda s: S.BoostingSurrogate(random_state=s)),
    "boosting_oldfeat": _pipe(lambda s: S.BoostingSurrogate(random_state=s), **OLD),
    "hawq": _pipe(lambda s: S.HawqProxy()),
    # model averaging instead of the cross-validated choice
    "ensemble": _pipe(lambda s: S.EnsembleSurrogate(random_state=s)),
}


def replay(run: RunData, factory: Factory) -> tuple[np.ndarray, float]:
    """Predictions of every round candidate from a surrogate fitted on what came before.

    Returns ``(predicted (n,), seconds spent fitting and predicting)``; NaN for the
    initial design.
    """
    out = np.full(run.acc.shape, np.nan)
    t0 = time.perf_counter()
    for r in np.unique(run.round[run.round > 0]):
        before, now = run.round < r, run.round == r
        model = factory(run.table, run.profile, run.seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model.fit(run.genomes[before], run.acc[before])
            out[now] = model.predict(run.genomes[now])
    return out, time.perf_counter() - t0


def _rel(p: Path) -> str:
    try:
        return os.path.relpath(p)
    except ValueError:
        return p.name


def _median(vals: list[float]) -> float:
    v = np.asarray(vals, dtype=float)
    v = v[np.isfinite(v)]
    return float(np.median(v)) if v.size else float("nan")


def _fmt(col: str, v: float) -> str:
    return f"{v:>9.4f}" if col == "front_hv" else f"{v:>9.3f}"


def _recorded(runs: list[RunData], title: str) -> dict[str, Any]:
    """Print and return the recorded pooled figures of ``runs``, per run and median."""
    cols = ("pooled_tau", "pooled_tau_top", "pooled_mae", "n", "n_top", "front_hv")
    heads = ("tau", "tau_top", "mae", "n", "n_top", "front_hv")
    print(f"{title:<28}" + "".join(f"{c:>9}" for c in heads))
    per: dict[str, Any] = {}
    for run in runs:
        q = pooled(run, run.predicted)
        q["front_hv"] = (front_hypervolume(run.path) if (run.path / "front.csv").is_file()
                         else float("nan"))
        per[_rel(run.path)] = q
        print(f"{run.path.name:<28}" + "".join(_fmt(c, q[c]) for c in cols))
    med = {c: _median([q[c] for q in per.values()]) for c in cols}
    print(f"{'median':<28}" + "".join(_fmt(c, med[c]) for c in cols))
    return {"per_run": per, "median": med}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", nargs="+", required=True, help="run directories")
    ap.add_argument("--after", nargs="*", default=[],
                    help="run directories of the changed code, reported beside --runs")
    ap.add_argument("--replay", action="store_true", help="also replay candidate models")
    ap.add_argument("--models", default=",".join(MODELS),
                    help=f"comma-separated replay models among {sorted(MODELS)}")
    ap.add_argument("--label", default="runs", help="the name of the --runs group")
    ap.add_argument("--out", default=str(RESULTS / "bench_surrogate_frontier.json"))
    args = ap.parse_args(argv)
    runs = [load_run(d) for d in args.runs]
    res: dict[str, Any] = {"margin": MARGIN, "hv_ref": HV_REF, "recorded": {}, "replay": {}}
    res["recorded"][args.label] = _recorded(runs, f"recorded: {args.label}")
    if args.after:
        print()
        res["recorded"]["after"] = _recorded([load_run(d) for d in args.after],
                                             "recorded: after")
    cols = ("pooled_tau", "pooled_tau_top", "pooled_mae", "n", "n_top")
    heads = ("tau", "tau_top", "mae", "n", "n_top")
    if args.replay:
        names = [m for m in args.models.split(",") if m]
        unknown = sorted(set(names) - set(MODELS))
        if unknown:
            raise SystemExit(f"unknown replay models {unknown}; choose among {sorted(MODELS)}")
        print(f"\n{'replay (median over runs)':<28}" + "".join(f"{c:>9}" for c in heads)
              + f"{'sec':>8}   per run tau / tau_top")
        for name in names:
            per = {}
            for run in runs:
                pred, sec = replay(run, MODELS[name])
                q = pooled(run, pred)
                q["seconds"] = sec
                per[_rel(run.path)] = q
            m = {c: _median([q[c] for q in per.values()]) for c in (*cols, "seconds")}
            res["replay"][name] = {"per_run": per, "median": m}
            detail = " ".join(f"{q['pooled_tau']:.2f}/{q['pooled_tau_top']:.2f}"
                              for q in per.values())
            print(f"{name:<28}" + "".join(f"{m[c]:>9.3f}" for c in cols)
                  + f"{m['seconds']:>8.1f}   {detail}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1, default=float) + "\n")
    print(f"\nwrote {_rel(out)}")
    return res


if __name__ == "__main__":
    main()
