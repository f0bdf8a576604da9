"""The search against every baseline of evomp, on one spec snapshot, at comparable cost.

Runs (or reuses) one run directory per method, all from the same spec snapshot (so the
same cached float model, seed, splits, hardware models and the same final QAT for every
row), each through the command line a user would type (``evomp run`` / ``evomp baseline``):

=======================  =================================================================
``search``               the search (``evomp run``), channel-wise space
``search-layer``         the search on the layer-wise space (same budget)
``uniform``              uniform 8/8, 4/4, 2/2, 8/4, 4/8
``random``               random genomes, as many short-QAT evaluations as the search made
``ilp``                  HAWQ-V3-style ILP sweep, channel granularity
``ilp-layer``            the same ILP at layer granularity
``freebits``             Free Bits refinement of the search's front for the ``pulp``
                         (GAP8) ``latency_cycles``; its CPU time includes the search's
``edmips``               EdMIPS (``--points 3``)
``dnas-channel``         channel-wise DNAS, PLiNIO's MPS (``--points 3``)
``dnas-layer``           the same DNAS, layer-wise (``--points 3``)
``bayesbits``            Bayesian Bits, Free Bits' search step (``--points 3``)
``bayesbits-freebits``   Free Bits end to end: its refinement of the ``bayesbits`` front
``learned``              learned precision, Schaefer et al. (``--points 3``)
=======================  =================================================================

Run directories are ``<runs>/bench-<spec name>-<method>`` (``-layerwise`` for
``search-layer``); the spec snapshot, its variants (layer-wise space, layer-wise ILP) and
the logs are in ``<runs>/.bench/``. A finished run directory of the same spec and command
is reused, an unfinished one is resumed (``evomp run`` resumes its study), so an
interrupted call picks up where it stopped. ``--only a,b`` runs just those methods; the
report covers every method whose run directory is finished, so partial calls build up
the full comparison. ``--fresh a,b`` reruns methods from scratch.

The report (``evomp.reports._compare``, one fixed reference point per metric): accuracy against
memory and against GAP8 latency for every row; channel-wise against layer-wise at
iso-accuracy (search, ILP, DNAS: memory of the smallest front member reaching each
accuracy); each differentiable method's number of distinct configurations and whether its
strongest cost pressure gave a smaller configuration than its weakest. Writes
``benchmarks/results/bench_baselines.json`` and two PNGs and prints the markdown, which
``--write-readme`` puts between ``<!-- bench_baselines:start -->`` and
``<!-- bench_baselines:end -->`` in README.md.

    python benchmarks/bench_baselines.py [--spec runs/demo.toml] [--jobs 2] [--only a,b]
        [--fresh a,b] [--keep-snapshot] [--write-readme] [--dry-run]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _relative(obj: Any) -> Any:
    """``obj`` with every path under the repository written relative to it (the JSON is
    committed: no machine's absolute paths)."""
    if isinstance(obj, str) and obj.startswith(str(ROOT) + "/"):
        return obj[len(str(ROOT)) + 1:]
    if isinstance(obj, dict):
        return {k: _relative(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_relative(v) for v in obj]
    return obj
sys.path.insert(0, str(ROOT))

from evomp.reports._compare import Comparison, compare_runs, plot_fronts  # noqa: E402
from evomp.run._spec import RunSpec, load_spec, spec_to_toml  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
README = ROOT / "README.md"
START, END = "<!-- bench_baselines:start -->", "<!-- bench_baselines:end -->"
ISO_TARGETS = (0.90, 0.93, 0.95, 0.96, 0.97)  # default --iso-levels
LATENCY = "latency_cycles"  # of the pulp (GAP8) model
DIFFERENTIABLE = ("edmips", "dnas-channel", "dnas-layer", "bayesbits", "learned")
#: channel-wise against layer-wise pairs of the iso-accuracy table
GRANULARITY_PAIRS = (("search", "search-layer"), ("ilp", "ilp-layer"),
                     ("dnas-channel", "dnas-layer"))


@dataclass
class Method:
    """One row of the comparison.

    Attributes:
        key: its name for ``--only``, ``--fresh`` and ``--skip``.
        label: its name in the tables.
        detail: what the name leaves out (granularity), shown in parentheses.
        out: its run directory.
        cmd: the ``evomp`` command (without ``--jobs``), set when the plan is made.
        needs: methods whose finished front this one refines.
    """

    key: str
    label: str
    detail: str
    out: Path
    cmd: list[str] = field(default_factory=list)
    needs: tuple[str, ...] = ()


# ------------------------------------------------------------------------- planning
def _variant(base: RunSpec, name: str, log_dir: Path, **changes: Any) -> Path:
    """Write a variant of the snapshot (only ``changes`` differ) into ``log_dir``."""
    p = log_dir / f"{name}.toml"
    text = spec_to_toml(dataclasses.replace(base, **changes))
    if not p.is_file() or p.read_text() != text:  # unchanged files keep their mtime
        p.write_text(text)
    return p


def make_plan(spec_path: Path, runs: Path, points: int) -> tuple[dict[str, Method], dict]:
    """Every method's run directory and command, and the spec variants used.

    The variants differ from the snapshot in one field each (recorded in the JSON).
    Commands that depend on another run (random's budget, freebits' source) are
    completed by :func:`finish_command` when that run is done.
    """
    spec = load_spec(spec_path)
    name = spec.name
    log_dir = spec_path.parent
    layer_spec = _variant(spec, f"{spec_path.stem}-layerwise", log_dir,
                          space=dataclasses.replace(spec.space, granularity="layer"))
    ilp_layer_spec = _variant(
        spec, f"{spec_path.stem}-ilp-layer", log_dir,
        baselines={**spec.baselines, "ilp": {**spec.baselines.get("ilp", {}),
                                             "granularity": "layer"}})
    # Bayesian Bits refines against a configured latency model by default; the pure row
    # keeps its own search step, and the bayesbits-freebits row refines its front
    bb_spec = _variant(
        spec, f"{spec_path.stem}-bayesbits", log_dir,
        baselines={**spec.baselines, "bayesbits": {**spec.baselines.get("bayesbits", {}),
                                                   "refine": "none"}})
    variants = {
        "bayesbits": {"spec": str(bb_spec), "differs": "[baselines.bayesbits] refine = 'none'"},
        "search-layer": {"spec": str(layer_spec), "differs": "[space] granularity = 'layer'"},
        "ilp-layer": {"spec": str(ilp_layer_spec),
                      "differs": "[baselines.ilp] granularity = 'layer'"},
    }
    d = lambda suffix: runs / f"bench-{name}-{suffix}"  # noqa: E731
    s = str(spec_path)
    m = [
        Method("search", "evomp search", "channel", d("search")),
        Method("search-layer", "evomp search", "layer", d("layerwise")),
        Method("random", "random", "", d("random")),
        Method("uniform", "uniform", "", d("uniform")),
        Method("ilp", "ILP", "channel", d("ilp")),
        Method("ilp-layer", "ILP", "layer", d("ilp-layer")),
        Method("freebits", "Free Bits refinement of the search", LATENCY, d("freebits"),
               needs=("search",)),
        Method("edmips", "EdMIPS", "layer", d("edmips")),
        Method("dnas-channel", "DNAS", "channel", d("dnas-channel")),
        Method("dnas-layer", "DNAS", "layer", d("dnas-layer")),
        Method("bayesbits", "Bayesian Bits", "tensor", d("bayesbits")),
        Method("bayesbits-freebits", "Bayesian Bits + Free Bits refinement", LATENCY,
               d("bayesbits-freebits"), needs=("bayesbits",)),
        Method("learned", "learned precision", "channel", d("learned")),
    ]
    plan = {x.key: x for x in m}
    plan["search"].cmd = ["run", s, "--out", str(plan["search"].out), "--quiet"]
    plan["search-layer"].cmd = ["run", str(layer_spec), "--out", str(plan["search-layer"].out),
                                "--quiet"]
    for k in ("uniform", "ilp"):
        plan[k].cmd = ["baseline", s, "--method", k, "--out", str(plan[k].out)]
    plan["ilp-layer"].cmd = ["baseline", str(ilp_layer_spec), "--method", "ilp", "--out",
                             str(plan["ilp-layer"].out)]
    for k in DIFFERENTIABLE:
        plan[k].cmd = ["baseline", str(bb_spec) if k == "bayesbits" else s, "--method", k,
                       "--points", str(points), "--out", str(plan[k].out)]
    # completed by finish_command: random's budget, the refinements' sources
    plan["random"].cmd = ["baseline", s, "--method", "random", "--out", str(plan["random"].out)]
    for k, src in (("freebits", "search"), ("bayesbits-freebits", "bayesbits")):
        plan[k].cmd = ["baseline", s, "--method", "freebits", "--from", str(plan[src].out),
                       "--out", str(plan[k].out)]
    return plan, variants


def _meta(d: Path) -> dict[str, Any] | None:
    try:
        return json.loads((d / "run.json").read_text())
    except (OSError, ValueError):
        return None


def finish_command(m: Method, plan: dict[str, Method], spec: RunSpec) -> str | None:
    """Complete ``m.cmd`` from the runs it needs; a note on how, or None.

    ``random`` gets ``--budget`` = the search's true evaluations (the spec's budget if the
    search has not finished). The refinements need their source's finished front.

    Raises:
        SystemExit: a refinement whose source run is not finished.
    """
    if m.key == "random":
        meta = _meta(plan["search"].out)
        n = meta.get("n_true_evaluations") if meta else None
        if n:
            m.cmd += ["--budget", str(int(n))]
            return f"--budget {int(n)}: the search's true evaluations"
        m.cmd += ["--budget", str(spec.search.budget)]
        return (f"--budget {spec.search.budget}: the spec's search budget (the search has "
                "not finished; rerun random with --fresh random once it has)")
    for dep in m.needs:
        if _meta(plan[dep].out) is None:
            raise SystemExit(f"[{m.key}] refines the front of {dep!r}, which has not "
                             f"finished ({plan[dep].out}); run it first (--only {dep})")
    return None


def _command_of(m: Method) -> list[str]:
    """The command ``m``'s run directory was made with (as recorded), else the planned one."""
    try:
        return list(json.loads((m.out / "bench_cmd.json").read_text())["cmd"])
    except (OSError, ValueError, KeyError):
        return list(m.cmd)


def outdated(m: Method, plan: dict[str, Method]) -> list[str]:
    """The runs ``m`` refines that finished after ``m`` did (``m`` refined an older front)."""
    mine = m.out / "run.json"
    if not mine.is_file():
        return []
    return [dep for dep in m.needs if (plan[dep].out / "run.json").is_file()
            and (plan[dep].out / "run.json").stat().st_mtime > mine.stat().st_mtime]


def state(m: Method, spec_text: str, plan: dict[str, Method] | None = None) -> str:
    """``"new"``, ``"done"`` (finished, same spec and command), ``"resume"`` (unfinished,
    same spec) or ``"stale"`` (another spec or command, or a refinement of a front that
    has since been remade)."""
    out = m.out
    if not out.exists():
        return "new"
    saved = out / "spec.toml"
    if saved.is_file() and saved.read_text() != spec_text:
        return "stale"
    if plan is not None and outdated(m, plan):
        return "stale"
    side = out / "bench_cmd.json"
    if side.is_file():
        try:
            if json.loads(side.read_text()).get("cmd") != list(m.cmd):
                return "stale"
        except ValueError:
            return "stale"
    if (out / "run.json").is_file() and saved.is_file():
        if not side.is_file() and m.key == "random":  # written before commands were kept
            want = m.cmd[m.cmd.index("--budget") + 1] if "--budget" in m.cmd else None
            got = (_meta(out) or {}).get("n_true_evaluations")
            if want is not None and str(got) != want:
                return "stale"
        return "done"
    return "resume"


def run_method(m: Method, spec_text: str, fresh: set[str], jobs: int, log_dir: Path,
               plan: dict[str, Method]) -> dict[str, Any]:
    """Run ``evomp CMD`` into ``m.out``, resume it, or reuse it when finished.

    A run directory is deleted only when ``--fresh`` names it.
    """
    st = state(m, spec_text, plan)
    if st == "done" and m.key not in fresh:
        print(f"[{m.key}] reusing {m.out}", flush=True)
        return {"name": m.key, "dir": str(m.out), "reused": True}
    if st == "stale" and m.key not in fresh:
        why = (f"refines an older front of {', '.join(outdated(m, plan))}"
               if outdated(m, plan) else "holds a run of another spec or command")
        raise SystemExit(f"[{m.key}] {m.out} {why}; pass --fresh {m.key} to replace it, or "
                         f"--skip {m.key}")
    if m.key in fresh and m.out.exists():
        shutil.rmtree(m.out)
        st = "new"
    cmd = [*m.cmd, "--jobs", str(jobs)]
    print(f"[{m.key}] {'resuming: ' if st == 'resume' else ''}evomp {' '.join(cmd)}",
          flush=True)
    t0 = time.perf_counter()
    log = log_dir / f"{m.key}.log"
    with log.open("a" if st == "resume" else "w") as f:
        rc = subprocess.call([sys.executable, "-m", "evomp", *cmd], cwd=ROOT, stdout=f,
                             stderr=subprocess.STDOUT)
    wall = time.perf_counter() - t0
    if rc != 0:
        print(log.read_text()[-3000:])
        raise SystemExit(f"[{m.key}] failed (rc={rc}); log: {log}")
    (m.out / "bench_cmd.json").write_text(json.dumps({"cmd": list(m.cmd)}, indent=1))
    print(f"[{m.key}] done in {wall:.0f}s wall", flush=True)
    return {"name": m.key, "dir": str(m.out), "reused": False, "resumed": st == "resume",
            "wall_seconds": wall}


# -------------------------------------------------------------------------- report
def _uniform8_memory(spec_path: Path, dirs: list[Path]) -> float:
    """Memory of the all-8-bit configuration (from a run's space.json if there is one)."""
    import hwmodels
    from hwmodels import LayerTable

    spec = load_spec(spec_path)
    params = dict(spec.hw.get("memory", {}))
    for d in dirs:
        if (d / "space.json").is_file():
            t = LayerTable.from_dict(json.loads((d / "space.json").read_text()))
            mem = hwmodels.get("memory", table=t, **params)
            return float(mem.cost(t, t.uniform(8, 8))["memory_bytes"][0])
    from evomp.run._context import build_space

    space = build_space(spec)
    mem = hwmodels.get("memory", table=space.table, **params)
    return float(mem.cost(space.table, space.uniform(8, 8))["memory_bytes"][0])


def _has_column(d: Path, col: str) -> bool:
    try:
        with (d / "front.csv").open() as f:
            return col in f.readline().strip().split(",")
    except OSError:
        return False


def _x_reaching(front: list[list[float]], target: float) -> float | None:
    p = np.asarray(front, dtype=float).reshape(-1, 2)
    ok = p[:, 1] >= target - 1e-12
    return float(p[ok, 0].min()) if ok.any() else None


def granularity_table(cmp: Comparison, keys: dict[str, str], targets: tuple[float, ...]
                      ) -> dict[str, list[dict[str, Any]]]:
    """Per channel/layer pair: the smallest memory reaching each accuracy, and the saving.

    Args:
        cmp: the memory comparison.
        keys: method key -> the comparison's run label, for the runs present.
        targets: accuracy levels.
    """
    out = {}
    for a, b in GRANULARITY_PAIRS:
        if a not in keys or b not in keys:
            continue
        rows = []
        for t in targets:
            xa = _x_reaching(cmp.fronts[keys[a]], t)
            xb = _x_reaching(cmp.fronts[keys[b]], t)
            rows.append({"accuracy": t, "channel": xa, "layer": xb,
                         "saving": (1 - xa / xb) if xa and xb else None})
        out[f"{a} vs {b}"] = rows
    return out


def sweep_summary(meta: dict[str, Any]) -> dict[str, Any] | None:
    """A differentiable run's sweep: distinct configurations, and whether the strongest
    cost pressure gave a smaller configuration (``memory_bytes``) than the weakest.

    The strongest pressure is the largest cost weight, except for ``learned``, whose
    sweep key is a size target (the smallest target presses hardest).
    """
    base = meta.get("baseline") or {}
    pts = [p for p in base.get("points", []) if "cost_weight" in p]
    if not pts:
        return None
    is_target = any("w_target" in p for p in pts)
    order = sorted(pts, key=lambda p: float(p["cost_weight"]), reverse=is_target)
    weak, strong = order[0], order[-1]
    size = next((k for k in ("memory_bytes", "weight_bytes", "bitops") if k in weak), None)
    sw = float(weak[size]) if size else None
    ss = float(strong[size]) if size else None
    return {
        "sweep_key": "size target (smallest = strongest)" if is_target else "cost weight",
        "values": [float(p["cost_weight"]) for p in pts],
        "n_points": len(pts),
        "distinct_configurations": base.get("distinct_configurations"),
        "size_metric": size,
        "weakest": {"cost_weight": float(weak["cost_weight"]), size or "size": sw},
        "strongest": {"cost_weight": float(strong["cost_weight"]), size or "size": ss},
        "strongest_smaller": None if sw is None or ss is None else bool(ss < sw),
        "size_ratio": None if not sw or ss is None else ss / sw,
    }


def _f(v: Any, spec: str = ".3f") -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "-"
    return format(v, spec)


def _kb(v: float | None) -> str:
    return "-" if v is None else f"{v / 1000:.1f} kB"


def _cycles(v: float | None) -> str:
    return "-" if v is None else f"{v / 1000:.1f}k"


def metric_table(cmp: Comparison, labels: dict[str, str], metas: dict[str, dict],
                 fmt_x: Any, x_name: str) -> list[str]:
    """Markdown rows of one comparison (label, feasibility, HV, budgets, iso, CPU)."""
    head = ["method", "feasible", "HV %", "points", "best test"]
    head += [f"test @ {x_name} ≤ {fmt_x(b)}" for b in cmp.budgets]
    head += [f"{x_name} @ iso", "ratio", "CPU s", "true evals"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in cmp.rows:
        meta = metas[r["run"]]
        cpu = _f(r["cpu_seconds"], ".0f")
        if r.get("cpu_note") == "includes source":
            cpu += "*"
        elif r.get("cpu_note") == "excludes source":
            cpu += "†"
        line = [labels[r["run"]], {True: "yes", False: "**no**", None: "?"}[r["feasible"]],
                _f(100 * r["hv_fraction"], ".1f"), str(r["front_points"]),
                _f(r["best_y"])]
        line += [_f(r["best_y_under"][f"{b:g}"]) for b in cmp.budgets]
        line += [fmt_x(r["x_at_iso"]), _f(r["x_at_iso_ratio"], ".2f"), cpu,
                 str(meta.get("n_true_evaluations") or "-")]
        lines.append("| " + " | ".join(line) + " |")
    return lines


def markdown_report(result: dict[str, Any], cmp_mem: Comparison, cmp_lat: Comparison | None,
                    labels: dict[str, str], metas: dict[str, dict], names: dict[str, str]
                    ) -> str:
    """The README block: setup, the two comparisons, granularity and the sweeps.

    Args:
        result: the JSON result (setup, granularity table, sweeps).
        cmp_mem / cmp_lat: the memory and latency comparisons.
        labels / metas: per comparison run label, the row's label and run.json.
        names: per method key, its name in the tables.
    """
    b = result["budget"]
    mach = result["machine"]
    load = ", ".join(f"{x:.1f}" for x in mach["load_average_at_end"])
    n_rand = b.get("random_true_evaluations")
    rand = ("random: none" if n_rand is None else "random: the same number"
            if n_rand == b["search_true_evaluations"] else
            f"random: **{n_rand}** (not the search's number; rerun it with --fresh random)")
    out = [
        f"Measured {result['date']} on {mach['platform']} ({mach['cpu_count']} CPU cores, "
        f"load average at the end {load}), one seed ({b['seed']}), spec snapshot "
        f"`{result['spec']}`. Search: {b['search_true_evaluations']} true evaluations "
        f"(short QAT {b['short_qat_steps']} steps), {rand}; final QAT "
        f"{b['final_qat_steps']} steps for **every** row (checked in each run.json); "
        f"differentiable methods: {b['differentiable_points']} sweep points each; "
        f"`final_max = {b['final_max']}`, `--jobs {b['jobs']}`.",
        "",
        f"**Accuracy against memory** (hypervolume of (1 - test accuracy, memory_bytes) "
        f"under test = {cmp_mem.ref_point[0]:.2f}, memory = {_kb(cmp_mem.ref_point[1])}; "
        f"budgets 10% and 20% of the all-8-bit memory, {_kb(result['uniform8_memory_bytes'])}; "
        + (f"iso-accuracy: test ≥ {cmp_mem.iso_target:.3f}, ratio to the first row)"
           if cmp_mem.iso_target is not None else "no iso-accuracy target)"),
        "",
        *metric_table(cmp_mem, labels, metas, _kb, "memory"),
    ]
    if cmp_lat is not None:
        out += [
            "",
            f"**Accuracy against GAP8 latency** (`pulp` model, {LATENCY}; reference point "
            f"test = {cmp_lat.ref_point[0]:.2f}, {_cycles(cmp_lat.ref_point[1])} cycles, "
            "derived from the feasible runs)",
            "",
            *metric_table(cmp_lat, labels, metas, _cycles, "cycles"),
        ]
    notes = ["CPU s: CPU seconds of the run (all processes), so rows can be compared at "
             "equal cost"]
    if any(r.get("cpu_note") == "includes source" for r in cmp_mem.rows):
        notes.append("\\* includes the CPU seconds of the run whose front it refined "
                     "(`source_cpu_seconds` in run.json)")
    if any(r.get("feasible") is False for r in cmp_mem.rows):
        notes.append("feasible **no**: no configuration met the spec's constraints; the "
                     "front shows the least infeasible ones and its hypervolume counts 0")
    out += ["", "; ".join(notes) + "."]
    gran = result["granularity_iso_accuracy"]
    if gran:
        out += ["", "**Channel-wise against layer-wise at iso-accuracy** (memory of the "
                "smallest front member reaching each test accuracy; saving = 1 - channel / "
                "layer). Risso et al. report up to 63% less memory on MLPerf Tiny.", ""]
        head = ["test accuracy ≥"]
        for k in gran:
            a, bb = k.split(" vs ")
            head += [names[a], names[bb], "saving"]
        out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for i, t in enumerate(result["iso_levels"]):
            line = [f"{t:.2f}"]
            for rows in gran.values():
                r = rows[i]
                line += [_kb(r["channel"]), _kb(r["layer"]),
                         "-" if r["saving"] is None else f"{100 * r['saving']:.0f}%"]
            out.append("| " + " | ".join(line) + " |")
        best = []
        for k, rows in gran.items():
            ok = [r for r in rows if r["saving"] is not None]
            if ok:
                r = max(ok, key=lambda r: r["saving"])
                best.append(f"{names[k.split(' vs ')[0]]}: {100 * r['saving']:.0f}% at test ≥ "
                            f"{r['accuracy']:.2f}")
        if best:
            out += ["", "Largest saving of channel over layer granularity we measure: "
                    + "; ".join(best) + " (negative: the layer-wise front is smaller; - : "
                    "one of the two never reaches that accuracy)."]
    sweeps = result["differentiable_sweeps"]
    if sweeps:
        out += ["", "**Differentiable sweeps** (strongest pressure: largest cost weight; "
                "for learned precision, the smallest size target)", "",
                "| method | sweep | distinct configurations | memory, weakest → strongest "
                "| strongest smaller? |", "|---|---|---|---|---|"]
        for k, s in sweeps.items():
            if s is None:
                out.append(f"| {names[k]} | - | - | - | - |")
                continue
            vals = ", ".join(f"{v:.3g}" for v in s["values"])
            size = s["size_metric"] or "size"
            ws, ss = s["weakest"].get(size), s["strongest"].get(size)
            fmt = _kb if size.endswith("_bytes") else (lambda v: _f(v, ".4g"))
            yes = {True: "yes", False: "**no**", None: "-"}[s["strongest_smaller"]]
            if s["size_ratio"] is not None:
                yes += f" ({s['size_ratio']:.2f}x)"
            out.append(f"| {names[k]} | {vals} | "
                       f"{_f(s['distinct_configurations'], 'd')} of {s['n_points']} | "
                       f"{fmt(ws)} → {fmt(ss)} | {yes} |")
    out += ["", "`python benchmarks/bench_baselines.py` makes these tables (reusing the run "
            "directories it finds finished); `benchmarks/results/bench_baselines.json` holds "
            "every figure."]
    return "\n".join(out)


def write_readme(block: str, readme: Path) -> None:
    """Replace the text between the two marker comments in ``readme`` with ``block``.

    Raises:
        SystemExit: the markers are missing, repeated or out of order.
    """
    text = readme.read_text()
    i, j = text.find(START), text.find(END)
    if i < 0 or j < 0 or text.count(START) != 1 or text.count(END) != 1 or j < i:
        raise SystemExit(f"{readme} needs exactly one {START} line followed by one {END} "
                         "line around the block to replace; add them where the table goes")
    new = text[: i + len(START)] + "\n" + block.strip() + "\n" + text[j:]
    tmp = readme.with_suffix(".tmp")
    tmp.write_text(new)
    tmp.replace(readme)
    print(f"wrote the tables into {readme}")


def _names(values: list[str], known: list[str], what: str) -> set[str]:
    out = {v.strip() for s in values for v in s.split(",") if v.strip()}
    unknown = sorted(out - set(known))
    if unknown:
        raise SystemExit(f"{what}: unknown method(s) {unknown}; methods are {', '.join(known)}")
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="methods: search, search-layer, random, uniform, ilp, ilp-layer, freebits, "
        "edmips, dnas-channel, dnas-layer, bayesbits, bayesbits-freebits, learned")
    ap.add_argument("--spec", default=str(ROOT / "runs" / "demo.toml"))
    ap.add_argument("--runs", default=str(ROOT / "runs"), help="parent of the run directories")
    ap.add_argument("--jobs", type=int, default=2, help="parallel evaluations per run")
    ap.add_argument("--points", type=int, default=3,
                    help="sweep points of each differentiable method (default 3)")
    ap.add_argument("--only", action="append", default=[], metavar="A,B",
                    help="run only these methods (the report still covers every finished one)")
    ap.add_argument("--skip", action="append", default=[], metavar="A,B",
                    help="neither run nor report these")
    ap.add_argument("--fresh", action="append", default=[], metavar="A,B",
                    help="rerun these from scratch (their run directories are deleted)")
    ap.add_argument("--iso-levels", default=",".join(f"{t:g}" for t in ISO_TARGETS),
                    metavar="A1,A2", help="test accuracies of the channel-wise against "
                    "layer-wise table (default %(default)s)")
    ap.add_argument("--keep-snapshot", action="store_true",
                    help="reuse the spec snapshot of an earlier call (<runs>/.bench/), e.g. to "
                    "finish a comparison after the spec file changed")
    ap.add_argument("--results", default=str(RESULTS / "bench_baselines.json"),
                    help="JSON file to write (the PNGs go next to it)")
    ap.add_argument("--write-readme", action="store_true",
                    help=f"replace the block between {START} and {END} in README.md with "
                    "the tables")
    ap.add_argument("--readme", default=str(README), help="README to write (--write-readme)")
    ap.add_argument("--dry-run", action="store_true",
                    help="print what would run (and what is reused) and stop")
    args = ap.parse_args(argv)
    if args.points < 1 or args.jobs < 1:
        ap.error("--points and --jobs must be at least 1")
    try:
        args.iso_levels = sorted(float(v) for v in args.iso_levels.split(",") if v.strip())
    except ValueError:
        ap.error(f"--iso-levels takes comma-separated accuracies, got {args.iso_levels!r}")
    if not args.iso_levels or not all(0 < v <= 1 for v in args.iso_levels):
        ap.error("--iso-levels takes accuracies in (0, 1]")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    runs = Path(args.runs).resolve()
    log_dir = runs / ".bench"
    log_dir.mkdir(parents=True, exist_ok=True)
    # a snapshot of the spec, resolved (every default written out): every run of the
    # comparison uses it, and later changes of code defaults cannot make rows differ
    spec_path = log_dir / Path(args.spec).name
    if not (args.keep_snapshot and spec_path.is_file()):
        text = spec_to_toml(load_spec(args.spec))
        if not spec_path.is_file() or spec_path.read_text() != text:
            spec_path.write_text(text)
    spec = load_spec(spec_path)
    fb = spec.baselines.get("freebits", {}).get("metric", "")
    if fb and fb != LATENCY:
        raise SystemExit(f"the spec sets [baselines.freebits] metric = {fb!r}; this benchmark "
                         f"refines for the pulp model's {LATENCY}")
    plan, variants = make_plan(spec_path, runs, args.points)
    keys = list(plan)
    only = _names(args.only, keys, "--only") or set(keys)
    skip = _names(args.skip, keys, "--skip")
    fresh = _names(args.fresh, keys, "--fresh")
    texts = {k: spec_to_toml(load_spec(m.cmd[1])) for k, m in plan.items()}
    order = ["search", "uniform", "ilp", "ilp-layer", "freebits", "random", "search-layer",
             "edmips", "dnas-channel", "dnas-layer", "bayesbits", "bayesbits-freebits",
             "learned"]
    t0 = time.perf_counter()
    done, notes = [], {}
    for k in order:
        m = plan[k]
        if k in skip:
            continue
        if k not in only:  # not run: reported if finished
            continue
        if args.dry_run and any(_meta(plan[dep].out) is None for dep in m.needs):
            print(f"[{k}] after {', '.join(m.needs)}: evomp {' '.join(m.cmd)} ...")
            continue
        note = finish_command(m, plan, spec)
        if note:
            notes[k] = note
        if args.dry_run:
            st = state(m, texts[k], plan)
            print(f"[{k}] {st}: evomp {' '.join(m.cmd)} --jobs {args.jobs}"
                  + (f"   ({note})" if note else ""))
            continue
        done.append(run_method(m, texts[k], fresh, args.jobs, log_dir, plan))
    if not args.dry_run:
        report(args, spec_path, plan, variants, texts, skip, done, notes,
               time.perf_counter() - t0)


def report(args: argparse.Namespace, spec_path: Path, plan: dict[str, Method],
           variants: dict, texts: dict[str, str], skip: set[str], done: list[dict],
           notes: dict[str, str], wall: float) -> None:
    """Compare every finished run, write the JSON and PNGs, print (and place) the markdown.

    Args:
        args: the command line.
        spec_path: the spec snapshot.
        plan / variants: from :func:`make_plan`.
        texts: per method, the resolved spec its run directory must hold.
        skip: methods left out.
        done: what this call ran or reused.
        notes: per method, how its command was completed.
        wall: seconds this call spent running methods.
    """
    spec = load_spec(spec_path)
    keys = list(plan)
    # every method whose run directory is finished, of this spec, and not outdated
    have = [k for k in keys if k not in skip and _meta(plan[k].out) is not None
            and (plan[k].out / "spec.toml").is_file()
            and (plan[k].out / "spec.toml").read_text() == texts[k]
            and not outdated(plan[k], plan)]
    stale = [k for k in keys if k not in skip and k not in have and plan[k].out.exists()]
    if stale:
        print("left out of the report (unfinished, of another spec, or refining an older "
              f"front): {', '.join(stale)}")
    if not have:
        raise SystemExit("no finished run to compare yet")
    metas = {k: _meta(plan[k].out) or {} for k in have}
    steps = {k: metas[k].get("final_steps") for k in have}
    if len(set(steps.values())) > 1:
        raise SystemExit(f"the rows were finished with different final QAT steps {steps}; "
                         "rerun the odd ones with --fresh")
    mem8 = _uniform8_memory(spec_path, [plan[k].out for k in have])
    cmp_mem = compare_runs([plan[k].out for k in have], x="memory_bytes", y="test_accuracy",
                           ref_point=(0.5, 1.1 * mem8),
                           budgets=[round(0.1 * mem8), round(0.2 * mem8)])
    run_key = {str(plan[k].out): k for k in have}
    key_run = {run_key[r["path"]]: r["run"] for r in cmp_mem.rows}
    names = {k: plan[k].label + (f" ({plan[k].detail})" if plan[k].detail else "")
             for k in keys}
    labels = {}
    for k in have:  # with the sweep's size
        meta = metas[k]
        base = meta.get("baseline") or {}
        parts = [plan[k].detail] if plan[k].detail else []
        if k == "random":
            parts.append(f"{meta.get('n_true_evaluations')} evaluations")
        elif k.startswith("ilp"):
            parts.append(f"{len(base.get('sweep', []))} budgets")
            if base.get("all_proven_optimal") is False:
                parts.append("not all proven optimal")
        elif k in DIFFERENTIABLE:
            parts.append(f"{len(base.get('points', []))} points")
        labels[key_run[k]] = plan[k].label + (f" ({', '.join(parts)})" if parts else "")
    metas_by_run = {r["run"]: metas[run_key[r["path"]]] for r in cmp_mem.rows}
    results = Path(args.results)
    results.parent.mkdir(parents=True, exist_ok=True)
    name = spec.name
    plot_fronts(cmp_mem, results.with_name(results.stem + "_memory.png"),
                title=f"{name}: test accuracy against memory (verified fronts)")
    lat_keys = [k for k in have if _has_column(plan[k].out, LATENCY)]
    cmp_lat = None
    if lat_keys:
        cmp_lat = compare_runs([plan[k].out for k in lat_keys], x=LATENCY, y="test_accuracy")
        for r in cmp_lat.rows:  # labels are the directory names: the same as in cmp_mem
            labels.setdefault(r["run"], names[run_key[r["path"]]])
            metas_by_run.setdefault(r["run"], metas[run_key[r["path"]]])
        plot_fronts(cmp_lat, results.with_name(results.stem + "_latency.png"),
                    title=f"{name}: test accuracy against GAP8 latency (pulp model)")
    gran = granularity_table(cmp_mem, key_run, tuple(args.iso_levels))
    sweeps = {k: sweep_summary(metas[k]) for k in DIFFERENTIABLE if k in have}
    search_meta = metas.get("search", {})
    result: dict[str, Any] = {
        "spec": str(spec_path.relative_to(ROOT)) if spec_path.is_relative_to(ROOT) else
        str(spec_path),
        "spec_variants": variants,
        "date": datetime.date.today().isoformat(),
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpu_count": os.cpu_count(), "python": platform.python_version(),
                    "load_average_at_end": list(os.getloadavg())},
        "budget": {"search_true_evaluations": search_meta.get("n_true_evaluations",
                                                              spec.search.budget),
                   "spec_search_budget": spec.search.budget,
                   "random_true_evaluations": metas.get("random", {}).get("n_true_evaluations"),
                   "short_qat_steps": spec.qat.steps, "final_qat_steps": spec.qat.final_steps,
                   "final_steps_per_row": steps, "final_max": spec.search.final_max,
                   "differentiable_points": args.points, "jobs": args.jobs,
                   "seed": spec.seed},
        "uniform8_memory_bytes": mem8,
        "methods": {k: {"label": names[k], "dir": str(plan[k].out),
                        "command": _command_of(plan[k]), "note": notes.get(k)} for k in have},
        "runs": done,
        "memory": cmp_mem.to_dict(),
        "latency": None if cmp_lat is None else cmp_lat.to_dict(),
        "iso_levels": list(args.iso_levels),
        "granularity_iso_accuracy": gran,
        "differentiable_sweeps": sweeps,
        "wall_seconds": wall,
    }
    md = markdown_report(result, cmp_mem, cmp_lat, labels, metas_by_run, names)
    result["markdown"] = md
    results.write_text(json.dumps(_relative(result), indent=1))
    print()
    print(md)
    print(f"\nwrote {results} and the PNGs next to it")
    if len(have) < len([k for k in keys if k not in skip]):
        missing = [k for k in keys if k not in skip and k not in have]
        print(f"not in the report yet: {', '.join(missing)}")
    if args.write_readme:
        write_readme(md, Path(args.readme))


if __name__ == "__main__":
    main()
