"""How well can any surrogate rank a run's round candidates? The short QAT's seed noise.

The pooled out-of-sample Kendall tau of a search's surrogate (``surrogate_quality.csv``,
``bench_surrogate_frontier.py``) compares predictions with *one* measurement per candidate:
one short QAT at the spec's QAT seed. That measurement is itself noisy (data order, RNG), so
even a predictor that knew each genome's expected accuracy exactly would not reach tau 1,
least of all in the top band, where candidates lie within a few points of one another.

For each RUN_DIR, every round candidate (the candidates the pooled tau is computed over:
rounds after the initial design, in the loop's canonical order) is trained again with the
run's own spec, space and float weights at ``--retests`` other QAT seeds. Reported per run:

* ``retest_tau`` / ``retest_tau_top``: the pooled rank quality of a retest's accuracy taken as
  the "prediction" of the recorded one (the same band as the loop: measured within 5 points
  of the run's best), the median over the retest seeds;
* ``noise_std``: one measurement's seed noise, the standard deviation of (retest - recorded)
  over sqrt(2) (the median over the retest seeds);
* ``ceiling_tau`` / ``ceiling_tau_top``: the expected tau of a perfect predictor of the
  seed-mean accuracy, simulated: each candidate's mean over every measurement (recorded and
  retests) plus a draw of ``N(0, noise_std)``, 2,000 draws (on the band's fixed candidates);
  an estimate, slightly optimistic since the means still hold some noise;
* ``surrogate_tau`` / ``surrogate_tau_top``: the run's own recorded figure, for comparison;
* ``reproduced``: whether the first ``--check`` candidates, trained again at the run's own
  QAT seed, give their recorded accuracy exactly (the harness is the run's protocol, so the
  retest spread is seed noise and nothing else).

Prints a table and writes benchmarks/results/bench_noise.json (relative paths only).
Measures; asserts nothing. Costs one short QAT per round candidate and retest seed.

Usage: python benchmarks/bench_noise.py RUN_DIR [RUN_DIR ...] [--retests 1] [--jobs 2] [--check 2]
       e.g. on the runs of ``bench_budget.py``:
       python benchmarks/bench_noise.py benchmarks/results/.budget/reuse-s*/run
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from joblib import Parallel, delayed

import surrogates as S
from evomp.evaluation import Evaluator
from evomp.run import build_space, build_task, load_spec
from evomp.tasks import set_threads

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_surrogate_frontier import MARGIN, load_run  # noqa: E402

OUT = Path("benchmarks") / "results" / "bench_noise.json"
DRAWS = 2000


def _retest(run_dir: Path, seeds: list[int], check: int) -> dict[str, Any]:
    """Train every round candidate of ``run_dir`` again at each of ``seeds``, and the first
    ``check`` of them at the run's own seed (one thread)."""
    set_threads(1)
    run = load_run(run_dir)
    spec = load_spec(run_dir / "spec.toml")
    task = build_task(spec)
    model = task.model_factory()
    model.load_state_dict(torch.load(run_dir / "float.pt", weights_only=True)["state_dict"])
    ev = Evaluator(task, build_space(spec, model, task), model, spec.qat)
    cand = (run.round > 0) & np.isfinite(run.predicted)
    G = run.genomes[cand]
    again = [r.val_accuracy for r in ev.evaluate(G[:check], "short", seed=spec.qat.seed)]
    c0 = time.process_time()
    retests = [[r.val_accuracy for r in ev.evaluate(G, "short", seed=s)] for s in seeds]
    return {"run": run, "cand": cand, "retests": np.array(retests),
            "cpu_seconds": time.process_time() - c0,
            "reproduced": bool(np.allclose(again, run.acc[cand][:check], rtol=0, atol=1e-6))}


def _ceiling(mu: np.ndarray, sd: float, rng: np.random.Generator) -> float:
    """The mean tau of ``mu`` against ``mu + N(0, sd)`` over :data:`DRAWS` draws."""
    if mu.size < 2 or np.ptp(mu) == 0:
        return float("nan")
    taus = [S.pooled_rank_quality(mu + rng.normal(0.0, sd, mu.size), mu,
                                  best_margin=1.0)["pooled_tau"] for _ in range(DRAWS)]
    return float(np.nanmean(taus))


def _summary(run_dir: Path, got: dict[str, Any]) -> dict[str, Any]:
    run, cand, R = got["run"], got["cand"], got["retests"]
    meas, pred = run.acc[cand], run.predicted[cand]
    best = float(run.acc.max())
    ok = np.isfinite(R).all(axis=0)
    meas, pred, R = meas[ok], pred[ok], R[:, ok]
    top = meas >= best - MARGIN - 1e-12
    rt = [S.pooled_rank_quality(meas, r, best_margin=MARGIN, best=best) for r in R]
    noise = statistics.median(float(np.std(r - meas) / np.sqrt(2)) for r in R)
    mu = np.vstack([meas[None], R]).mean(axis=0)
    rng = np.random.default_rng(0)
    own = S.pooled_rank_quality(meas, pred, best_margin=MARGIN, best=best)
    return {
        "run_dir": os.path.relpath(run_dir), "seed": run.seed, "n": int(meas.size),
        "n_top": int(top.sum()), "retests": len(R),
        "retest_tau": statistics.median(q["pooled_tau"] for q in rt),
        "retest_tau_top": statistics.median(q["pooled_tau_top"] for q in rt),
        "noise_std": noise,
        "ceiling_tau": _ceiling(mu, noise, rng),
        "ceiling_tau_top": _ceiling(mu[top], noise, rng),
        "surrogate_tau": own["pooled_tau"], "surrogate_tau_top": own["pooled_tau_top"],
        "cpu_seconds": got["cpu_seconds"], "reproduced": got["reproduced"],
        "recorded": meas.tolist(), "retested": R.tolist(),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dirs", type=Path, nargs="+")
    ap.add_argument("--retests", type=int, default=1, help="other QAT seeds per candidate")
    ap.add_argument("--jobs", type=int, default=2, help="runs retrained in parallel")
    ap.add_argument("--check", type=int, default=2,
                    help="candidates trained again at the run's own seed (0: none)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    missing = [str(d) for d in args.run_dirs if not (d / "float.pt").is_file()]
    if missing:
        raise SystemExit(f"not finished run directories (no float.pt): {missing}")
    load0 = os.getloadavg()
    rows = []
    for d in args.run_dirs:
        seed = load_spec(d / "spec.toml").qat.seed
        rows.append((d, [seed + 1000 + i for i in range(args.retests)]))
    got = Parallel(n_jobs=args.jobs)(delayed(_retest)(d, s, args.check) for d, s in rows)
    out = [_summary(d, g) for (d, _), g in zip(rows, got)]
    cols = ("n", "n_top", "noise_std", "retest_tau", "retest_tau_top", "ceiling_tau",
            "ceiling_tau_top", "surrogate_tau", "surrogate_tau_top", "cpu_seconds",
            "reproduced")
    print(f"{'run':<40} " + " ".join(f"{c:>17}" for c in cols))
    for r in out:
        print(f"{r['run_dir'][-40:]:<40} " + " ".join(
            f"{r[c]:>17.3f}" if isinstance(r[c], float) else f"{r[c]!s:>17}" for c in cols))
    med = {c: statistics.median(r[c] for r in out) for c in cols[2:-1]}
    print(f"{'median':<40} {'':>17} {'':>17} " +
          " ".join(f"{med[c]:>17.3f}" for c in cols[2:-1]))
    load1 = os.getloadavg()
    print(f"load average before {load0[0]:.2f}, after {load1[0]:.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rows": out, "median": med, "load_before": load0[0],
                                    "load_after": load1[0]}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
