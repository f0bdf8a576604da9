"""Compare the fronts of run directories (search and baselines) under one reference point.

Every run directory (written by :func:`evomp.run._protocol.finish_run`) holds ``front.csv``
(accuracy and every hardware metric per verified front member) and ``run.json``
(method, CPU seconds). :func:`compare_runs` reads them and computes, per run:

* the hypervolume of ``(1 - y, x)`` (both minimised) under **one** reference point
  shared by all runs (default: derived from every run's worst values with a 10% margin;
  :func:`default_ref_point`), also as a fraction of the box between the ideal
  ``(y = 1, x = 0)`` and the reference point;
* the number of front points;
* the best ``y`` with ``x`` under each given budget;
* the smallest ``x`` reaching the first run's best ``y`` minus ``iso_tolerance`` (the
  metric at iso-accuracy), and its ratio to the first run's;
* the CPU seconds the run spent (``run.json``; a refinement of another run's front,
  ``freebits --from DIR``, includes that run's CPU seconds, ``source_cpu_seconds``);
* whether the run found a feasible configuration (``run.json``'s ``feasible``). A run
  that did not shows the least infeasible configurations on its front: its hypervolume
  counts 0 (the value ignoring constraints is kept as ``hypervolume_ignoring_constraints``),
  its points do not widen the default reference point, and the table flags it.

:func:`plot_fronts` overlays the fronts in one PNG.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from evomp._errors import EvompError
from evomp.objectives import hypervolume_2d

__all__ = [
    "RunFront",
    "Comparison",
    "load_run",
    "default_ref_point",
    "compare_runs",
    "format_table",
    "plot_fronts",
    "metric_label",
]


@dataclass
class RunFront:
    """One run directory's front and record.

    Attributes:
        path: the run directory.
        label: a short name (the directory name, made unique).
        method: ``run.json``'s method (with the ILP's granularity where recorded).
        rows: ``front.csv`` rows, numbers parsed.
        meta: ``run.json``.
    """

    path: Path
    label: str
    method: str
    rows: list[dict[str, Any]]
    meta: dict[str, Any]

    def points(self, x: str, y: str) -> np.ndarray:
        """``(n, 2)`` float ``(x, y)`` of the front members that have both values.

        Raises:
            EvompError: the run records neither column (naming the ones it has).
        """
        if self.rows and (x not in self.rows[0] or y not in self.rows[0]):
            missing = [c for c in (x, y) if c not in self.rows[0]]
            raise EvompError(
                f"run {self.path} has no {missing} column in front.csv; it has "
                f"{sorted(k for k in self.rows[0] if k not in ('id', 'genome_hash'))}. "
                "Pick another --x/--y, or rerun it with the hardware model that provides it"
            )
        pts = np.array([[_num(r.get(x)), _num(r.get(y))] for r in self.rows],
                       dtype=float).reshape(-1, 2)
        return pts[~np.isnan(pts).any(axis=1)]

    @property
    def cpu_seconds(self) -> float | None:
        v = self.meta.get("cpu_seconds")
        return None if v is None else float(v)

    @property
    def feasible(self) -> bool | None:
        """``run.json``'s ``feasible`` (None when not recorded). A front.csv with a
        ``violation`` column also marks an infeasible run."""
        v = self.meta.get("feasible")
        if v is not None:
            return bool(v)
        if self.rows and "violation" in self.rows[0]:
            return False
        return None

    @property
    def cpu_note(self) -> str | None:
        """``"includes source"`` when ``cpu_seconds`` includes the CPU seconds of a run whose
        front this run refined, ``"excludes source"`` when it refined one whose cost is not
        included (unknown, or a run written before it was recorded), else None."""
        if "source_cpu_seconds" in self.meta:
            return ("includes source" if self.meta.get("cpu_seconds_includes_source")
                    else "excludes source")
        base = self.meta.get("baseline")
        if self.meta.get("method") == "freebits" and isinstance(base, dict):
            src = str(base.get("source", ""))
            if src and not set(src.split("+")) <= {"uniform", "ilp"}:  # --from DIR
                return "excludes source"
        return None


def _num(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def load_run(path: str | Path) -> RunFront:
    """Read ``front.csv`` and ``run.json`` of a run directory.

    Raises:
        EvompError: not a finished run directory.
    """
    from evomp.run import RunDir

    rd = RunDir(path)
    d = rd.path
    rows, _ = rd.read_front(members=rd.front_json.is_file())
    rows = [{k: (v if k in ("id", "genome_hash") else _num(v)) for k, v in r.items()}
            for r in rows]
    meta = rd.read_run_json()
    method = str(meta.get("method", "?"))
    base = meta.get("baseline")
    if isinstance(base, dict) and base.get("granularity"):
        method = f"{method} ({base['granularity']})"
    elif method not in ("?",) and "baseline" not in meta:
        gran = _run_granularity(d)
        if gran:
            method = f"{method} ({gran})"
    return RunFront(d, d.name or str(d), method, rows, meta)


def _run_granularity(d: Path) -> str | None:
    from evomp.run import RunDir

    try:
        return str(json.loads(RunDir(d).space.read_text()).get("granularity"))
    except (OSError, ValueError, AttributeError):
        return None


def default_ref_point(runs: Sequence[RunFront], x: str, y: str, margin: float = 0.1
                      ) -> tuple[float, float]:
    """``(y_ref, x_ref)``: every run's worst ``y`` and ``x`` widened by ``margin`` of the range.

    Runs that found no feasible configuration are left out (unless no run is feasible).
    ``y_ref`` is clipped at 0 and ``x_ref`` at 0 from below.
    """
    use = [r for r in runs if r.feasible is not False] or list(runs)
    pts = np.concatenate([r.points(x, y) for r in use] or [np.zeros((0, 2))])
    if len(pts) == 0:
        raise EvompError("no run has a front point with both values; nothing to compare")
    xs, ys = pts[:, 0], pts[:, 1]
    xr = float(xs.max() - xs.min()) or max(abs(float(xs.max())), 1e-12)  # one point: its size
    yr = max(float(ys.max() - ys.min()), 1e-3)
    return max(float(ys.min()) - margin * yr, 0.0), float(xs.max()) + margin * xr


@dataclass
class Comparison:
    """The result of :func:`compare_runs`: one row per run plus the shared settings."""

    x: str
    y: str
    ref_point: tuple[float, float]  # (y_ref, x_ref)
    ref_point_source: str
    budgets: list[float]
    iso_target: float | None
    iso_tolerance: float
    rows: list[dict[str, Any]] = field(default_factory=list)
    fronts: dict[str, list[list[float]]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare_runs(dirs: Sequence[str | Path], x: str | None = None, y: str = "test_accuracy",
                 ref_point: tuple[float, float] | None = None, budgets: Sequence[float] = (),
                 iso_tolerance: float = 0.005) -> Comparison:
    """Compare run directories (see the module docstring).

    Args:
        dirs: run directories; the first is the reference of the iso-accuracy ratios.
        x: the hardware metric (minimised); default the first run's first hardware
            objective.
        y: the accuracy column (maximised): ``test_accuracy`` or ``val_accuracy``.
        ref_point: ``(y_ref, x_ref)``; default :func:`default_ref_point`.
        budgets: values of ``x`` under which to report the best ``y``.
        iso_tolerance: the iso-accuracy target is the first run's best ``y`` minus this.

    Raises:
        EvompError: fewer than one directory, a directory that is not a finished run, or
            a metric a run did not record.
    """
    if not dirs:
        raise EvompError("give at least one run directory")
    runs = [load_run(d) for d in dirs]
    seen: dict[str, int] = {}
    for r in runs:  # unique labels
        n = seen.get(r.label, 0)
        seen[r.label] = n + 1
        if n:
            r.label = f"{r.label}#{n + 1}"
    if x is None:
        objs = [o for o in runs[0].meta.get("objectives", []) if o != "accuracy"]
        x = objs[0] if objs else "memory_bytes"
    pts = {r.label: r.points(x, y) for r in runs}
    src = "given"
    if ref_point is None:
        ref_point = default_ref_point(runs, x, y)
        src = "derived: worst y and x over all feasible runs, widened by 10% of their range"
    y_ref, x_ref = float(ref_point[0]), float(ref_point[1])
    box = (1.0 - y_ref) * x_ref
    first = pts[runs[0].label]
    iso_target = float(first[:, 1].max()) - iso_tolerance if len(first) else None
    iso_first = _x_at(first, iso_target)
    cmp = Comparison(x, y, (y_ref, x_ref), src, [float(b) for b in budgets], iso_target,
                     iso_tolerance)
    for r in runs:
        p = pts[r.label]
        F = np.stack([1.0 - p[:, 1], p[:, 0]], axis=1) if len(p) else np.zeros((0, 2))
        hv_raw = hypervolume_2d(F, (1.0 - y_ref, x_ref))
        feasible = r.feasible
        hv = 0.0 if feasible is False else hv_raw  # infeasible points dominate nothing
        x_iso = _x_at(p, iso_target)
        row: dict[str, Any] = {
            "run": r.label,
            "path": str(r.path),
            "method": r.method,
            "feasible": feasible,
            "hypervolume": hv,
            "hv_fraction": hv / box if box > 0 else float("nan"),
            "hypervolume_ignoring_constraints": hv_raw,
            "front_points": int(len(r.rows)),
            "best_y": float(p[:, 1].max()) if len(p) else None,
            "best_y_under": {f"{b:g}": _best_under(p, b) for b in budgets},
            "x_at_iso": x_iso,
            "x_at_iso_ratio": (x_iso / iso_first if x_iso is not None and iso_first else None),
            "cpu_seconds": r.cpu_seconds,
            "source_cpu_seconds": r.meta.get("source_cpu_seconds"),
            "cpu_note": r.cpu_note,
            "n_true_evaluations": r.meta.get("n_true_evaluations"),
            "n_final_evaluations": r.meta.get("n_final_evaluations"),
        }
        cmp.rows.append(row)
        cmp.fronts[r.label] = p[np.argsort(p[:, 0], kind="stable")].tolist()
    return cmp


def _best_under(p: np.ndarray, budget: float) -> float | None:
    ok = p[:, 0] <= budget
    return float(p[ok, 1].max()) if ok.any() else None


def _x_at(p: np.ndarray, target: float | None) -> float | None:
    if target is None or len(p) == 0:
        return None
    ok = p[:, 1] >= target - 1e-12
    return float(p[ok, 0].min()) if ok.any() else None


# ------------------------------------------------------------------------ reporting
_UNITS = (("_bytes", "kB", 1e-3), ("_cycles", "cycles", 1.0), ("_uj", "µJ", 1.0),
          ("_ms", "ms", 1.0), ("bitops", "bit-ops", 1.0))


def metric_label(metric: str) -> tuple[str, float]:
    """``(axis label with unit, scale)`` of a metric (bytes are shown in kB)."""
    for suffix, unit, scale in _UNITS:
        if metric.endswith(suffix):
            return f"{metric} [{unit}]", scale
    if metric.endswith("accuracy"):
        return f"{metric.replace('_', ' ')} [%]", 100.0
    return metric, 1.0


def _fmt(v: Any, spec: str = ".4g") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return format(v, spec)


def format_table(cmp: Comparison, markdown: bool = False) -> str:
    """The comparison as a text (or markdown) table, with the reference point stated."""
    yl = cmp.y.replace("_accuracy", "")
    head = ["run", "method", "feasible", "HV", "HV %", "points", f"best {yl}"]
    head += [f"{yl} @ {cmp.x}<={b:g}" for b in cmp.budgets]
    head += [f"{cmp.x} @ iso", "ratio", "CPU s"]
    body = []
    for r in cmp.rows:
        feas = {True: "yes", False: "NO", None: "?"}[r.get("feasible")]
        cpu = _fmt(r["cpu_seconds"], ".0f")
        if r.get("cpu_note") == "includes source" and cpu != "-":
            cpu += "*"
        elif r.get("cpu_note") == "excludes source" and cpu != "-":
            cpu += "†"
        line = [r["run"], r["method"], feas, _fmt(r["hypervolume"]),
                _fmt(100 * r["hv_fraction"], ".2f"), str(r["front_points"]),
                _fmt(r["best_y"], ".4f")]
        line += [_fmt(r["best_y_under"][f"{b:g}"], ".4f") for b in cmp.budgets]
        line += [_fmt(r["x_at_iso"], ".5g"), _fmt(r["x_at_iso_ratio"], ".3f"), cpu]
        body.append(line)
    y_ref, x_ref = cmp.ref_point
    notes = [
        f"hypervolume of (1 - {cmp.y}, {cmp.x}) under the reference point "
        f"{cmp.y} = {y_ref:.4g}, {cmp.x} = {x_ref:.6g} ({cmp.ref_point_source}); "
        "HV % = share of the box from (accuracy 1, 0) to the reference point",
    ]
    infeasible = [r["run"] for r in cmp.rows if r.get("feasible") is False]
    if infeasible:
        notes.append(
            f"feasible = NO ({', '.join(infeasible)}): the run found no configuration meeting "
            "its constraints and its front shows the least infeasible ones; their hypervolume "
            "counts 0 (hypervolume_ignoring_constraints in --json) and their other figures "
            "are not comparable")
    if any(r.get("feasible") is None for r in cmp.rows):
        notes.append("feasible = ?: run.json does not say whether the run found a feasible "
                     "configuration")
    if any(r.get("cpu_note") == "includes source" for r in cmp.rows):
        notes.append("CPU s with * includes the CPU seconds of the run whose front was "
                     "refined (freebits --from; source_cpu_seconds in run.json), so it is the "
                     "whole cost of that front")
    if any(r.get("cpu_note") == "excludes source" for r in cmp.rows):
        notes.append("CPU s with † counts only a refinement: the refined run's CPU seconds "
                     "are unknown (not recorded); add them before comparing at equal cost")
    if cmp.iso_target is not None:
        notes.append(
            f"iso-accuracy: smallest {cmp.x} with {cmp.y} >= {cmp.iso_target:.4f} (the first "
            f"run's best minus {cmp.iso_tolerance:g}); ratio to the first run's"
        )
    if markdown:
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        out += ["| " + " | ".join(line) + " |" for line in body]
        return "\n".join(out + [""] + [f"{n}." for n in notes])
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h)
              for i, h in enumerate(head)]
    out = ["  ".join(h.rjust(w) for h, w in zip(head, widths, strict=True))]
    out += ["  ".join(c.rjust(w) for c, w in zip(line, widths, strict=True)) for line in body]
    return "\n".join(out + [""] + notes)


def plot_fronts(cmp: Comparison, path: str | Path, title: str | None = None) -> Path:
    """Overlay every run's front (points and staircase) in one PNG.

    Args:
        cmp: a comparison.
        path: the PNG file to write.
        title: figure title (default names the metrics and the reference point).

    Returns:
        The path written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xl, xs = metric_label(cmp.x)
    yl, ys = metric_label(cmp.y)
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
    markers = "osD^v<>ph*X"
    allx = [p[0] for f in cmp.fronts.values() for p in f]
    for i, r in enumerate(cmp.rows):
        f = np.asarray(cmp.fronts[r["run"]], dtype=float).reshape(-1, 2)
        label = f"{r['run']}: {r['method']}, HV {100 * r['hv_fraction']:.1f}%"
        if r.get("feasible") is False:
            label += " (infeasible)"
        if len(f) == 0:
            ax.plot([], [], label=label + ", empty")
            continue
        stair = f[np.argsort(f[:, 0], kind="stable")]
        stair = stair[np.maximum.accumulate(stair[:, 1]) == stair[:, 1]]
        stair = np.vstack([stair, [f[:, 0].max(), stair[-1, 1]]])  # flat to the last point
        line, = ax.step(stair[:, 0] * xs, stair[:, 1] * ys, where="post", lw=1.4, alpha=0.8)
        infeasible = r.get("feasible") is False
        if infeasible:
            line.set_linestyle(":")
        ax.scatter(f[:, 0] * xs, f[:, 1] * ys, marker=markers[i % len(markers)], s=36,
                   color="none" if infeasible else line.get_color(),
                   edgecolors=line.get_color(), label=label, zorder=3)
    for b in cmp.budgets:
        ax.axvline(b * xs, color="grey", ls=":", lw=1)
    y_ref, x_ref = cmp.ref_point
    ax.scatter([x_ref * xs], [y_ref * ys], marker="x", color="black", s=50,
               label="reference point", zorder=4)
    if allx and min(allx) > 0 and max(allx) / min(allx) > 20:
        ax.set_xscale("log")
    ax.set_xlabel(xl)
    ax.set_ylabel(yl)
    ax.grid(True, alpha=0.3)
    ax.set_title(title or f"{cmp.y} against {cmp.x}: verified fronts", fontsize=11)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    out = Path(path)
    from evomp.run import writing

    try:
        with writing(out):
            out.parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(out)
    finally:
        plt.close(fig)
    return out
