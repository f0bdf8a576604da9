"""``evomp compare``: hypervolume (checked against pymoo), budgets, iso-accuracy, table, plot."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from pymoo.indicators.hv import HV

from evomp._errors import EvompError
from evomp.cli import main
from evomp.objectives._pareto import hypervolume_2d
from evomp.reports._compare import compare_runs, default_ref_point, format_table, load_run


def write_run(d: Path, points: list[tuple[float, float]], method: str = "search",
              cpu: float = 10.0, extra: dict | None = None) -> Path:
    """A minimal finished run directory: (memory_bytes, test_accuracy) front points."""
    d.mkdir(parents=True)
    with (d / "front.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "val_accuracy", "test_accuracy", "genome_hash", "memory_bytes",
                    "energy_uj"])
        for i, (x, y) in enumerate(points):
            w.writerow([f"p{i}", y + 0.01, y, f"h{i}", x, x / 1000])
    (d / "front.json").write_text(json.dumps({f"p{i}": {} for i in range(len(points))}))
    meta = {"method": method, "objectives": ["accuracy", "memory_bytes"], "cpu_seconds": cpu,
            "n_true_evaluations": 5, **(extra or {})}
    (d / "run.json").write_text(json.dumps(meta))
    return d


finite = st.floats(0.0, 1.0, allow_nan=False, allow_infinity=False)


@settings(max_examples=150, deadline=None)
@given(F=arrays(np.float64, st.tuples(st.integers(1, 12), st.just(2)), elements=finite),
       ref=st.tuples(st.floats(0.05, 1.2), st.floats(0.05, 1.2)))
def test_hypervolume_equals_pymoo(F: np.ndarray, ref: tuple[float, float]) -> None:
    r = np.array(ref)
    inside = F[np.all(F < r, axis=1)]
    want = HV(ref_point=r)(inside) if len(inside) else 0.0
    assert hypervolume_2d(F, r) == pytest.approx(want, rel=1e-9, abs=1e-12)


def test_hypervolume_by_hand() -> None:
    F = np.array([[0.1, 3.0], [0.3, 1.0], [0.2, 2.0], [0.25, 2.5], [0.5, 5.0]])
    # staircase (0.3, 1), (0.2, 2), (0.1, 3) under (0.4, 4): 1*0.1 + 1*0.2 + 1*0.3
    assert hypervolume_2d(F, (0.4, 4.0)) == pytest.approx(0.6)
    assert hypervolume_2d(np.zeros((0, 2)), (1, 1)) == 0.0


def test_compare_runs(tmp_path: Path) -> None:
    a = write_run(tmp_path / "a", [(1000, 0.90), (2000, 0.95), (4000, 0.97)], cpu=100)
    b = write_run(tmp_path / "b", [(1500, 0.90), (5000, 0.97)], method="uniform", cpu=20,
                  extra={"baseline": {"pairs": [[8, 8]]}})
    c = write_run(tmp_path / "c", [(800, 0.6)], method="ilp",
                  extra={"baseline": {"granularity": "layer"}})
    cmp = compare_runs([a, b, c], budgets=[1200, 4500], ref_point=(0.5, 6000.0))
    assert cmp.x == "memory_bytes" and cmp.y == "test_accuracy"
    ra, rb, rc = cmp.rows
    assert [r["method"] for r in cmp.rows] == ["search", "uniform", "ilp (layer)"]
    for r, pts in ((ra, [(1000, 0.90), (2000, 0.95), (4000, 0.97)]),
                   (rb, [(1500, 0.90), (5000, 0.97)]), (rc, [(800, 0.6)])):
        F = np.array([[1 - y, x] for x, y in pts])
        assert r["hypervolume"] == pytest.approx(HV(ref_point=np.array([0.5, 6000.0]))(F))
        assert r["hv_fraction"] == pytest.approx(r["hypervolume"] / (0.5 * 6000))
    assert ra["best_y_under"] == {"1200": 0.90, "4500": 0.97}
    assert rb["best_y_under"] == {"1200": None, "4500": 0.90}
    assert cmp.iso_target == pytest.approx(0.965)
    assert ra["x_at_iso"] == 4000 and ra["x_at_iso_ratio"] == 1.0
    assert rb["x_at_iso"] == 5000 and rb["x_at_iso_ratio"] == pytest.approx(1.25)
    assert rc["x_at_iso"] is None and rc["x_at_iso_ratio"] is None
    assert [r["cpu_seconds"] for r in cmp.rows] == [100, 20, 10]
    assert ra["front_points"] == 3
    text = format_table(cmp)
    assert "reference point" in text and "0.5" in text and "6000" in text
    md = format_table(cmp, markdown=True)
    assert md.startswith("| run | method | feasible | HV")
    # default reference point: worst values widened by 10% of the range
    y_ref, x_ref = default_ref_point([load_run(p) for p in (a, b, c)], "memory_bytes",
                                     "test_accuracy")
    assert y_ref == pytest.approx(0.6 - 0.1 * 0.37) and x_ref == pytest.approx(5000 + 420)
    assert compare_runs([a, b]).ref_point_source.startswith("derived")


def test_compare_errors(tmp_path: Path) -> None:
    a = write_run(tmp_path / "a", [(1000, 0.9)])
    with pytest.raises(EvompError, match="latency_cycles"):
        compare_runs([a], x="latency_cycles")
    with pytest.raises(EvompError, match="not a finished run"):
        compare_runs([tmp_path / "nothing"])
    with pytest.raises(EvompError):
        compare_runs([])


def test_compare_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = write_run(tmp_path / "run", [(1000, 0.90), (2000, 0.95)])
    b = write_run(tmp_path / "other" / "run", [(1500, 0.93)], method="random")
    out = tmp_path / "plots"
    assert main(["compare", str(a), str(b), "--budgets", "1200,1800", "--ref-point",
                 "0.8,3000", "--out", str(out), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["ref_point"] == [0.8, 3000.0]
    assert [r["run"] for r in d["rows"]] == ["run", "run#2"]  # labels made unique
    assert (out / "compare.png").stat().st_size > 10_000
    assert main(["compare", str(a), "--no-plot", "--x", "energy_uj"]) == 0
    assert "energy_uj" in capsys.readouterr().out
    assert main(["compare", str(a), "--ref-point", "0.8"]) == 2
    assert "--ref-point" in capsys.readouterr().err


def test_compare_flags_runs_without_a_feasible_configuration(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]
                                                             ) -> None:
    a = write_run(tmp_path / "a", [(1000, 0.90), (2000, 0.95)], extra={"feasible": True})
    # its front holds the least infeasible points: far better than a's, were they allowed
    b = write_run(tmp_path / "b", [(500, 0.97), (9000, 0.99)], method="random",
                  extra={"feasible": False})
    c = write_run(tmp_path / "c", [(1500, 0.93)], method="uniform")  # feasible not recorded
    cmp = compare_runs([a, b, c], ref_point=(0.5, 6000.0))
    ra, rb, rc = cmp.rows
    assert (ra["feasible"], rb["feasible"], rc["feasible"]) == (True, False, None)
    assert rb["hypervolume"] == 0.0 and rb["hv_fraction"] == 0.0
    F = np.array([[1 - 0.97, 500.0]])
    assert rb["hypervolume_ignoring_constraints"] == pytest.approx(
        HV(ref_point=np.array([0.5, 6000.0]))(F))
    assert ra["hypervolume"] == ra["hypervolume_ignoring_constraints"] > 0
    assert rc["hypervolume"] > 0
    # the default reference point ignores the infeasible run's points (x = 9000 here)
    y_ref, x_ref = compare_runs([a, b, c]).ref_point
    assert x_ref == pytest.approx(2000 + 0.1 * 1000) and y_ref == pytest.approx(0.90 - 0.005)
    text = format_table(cmp)
    assert "feasible" in text.splitlines()[0] and "NO" in text
    assert "b" in text and "least infeasible" in text and "counts 0" in text
    md = format_table(cmp, markdown=True)
    assert md.startswith("| run | method | feasible | HV")
    assert "| b | random | NO | 0 |" in md
    # a front.csv with a violation column (finish_run writes one) also marks it
    d = tmp_path / "v"
    write_run(d, [(100, 0.99)])
    with (d / "front.csv").open() as f:
        lines = f.read().splitlines()
    (d / "front.csv").write_text("\n".join([lines[0] + ",violation", lines[1] + ",0.2"]) + "\n")
    assert load_run(d).feasible is False
    # and the JSON of the command line says so
    assert main(["compare", str(a), str(b), "--json", "--no-plot"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert [r["feasible"] for r in rows] == [True, False]
    assert rows[1]["hypervolume"] == 0.0 and rows[1]["hypervolume_ignoring_constraints"] > 0


def test_compare_states_how_refinements_count_cpu(tmp_path: Path) -> None:
    s = write_run(tmp_path / "s", [(1000, 0.90)], cpu=300)
    fb = write_run(tmp_path / "fb", [(900, 0.91)], method="freebits", cpu=330,
                   extra={"source_cpu_seconds": 300.0, "cpu_seconds_includes_source": True,
                          "baseline": {"source": str(s)}})
    old = write_run(tmp_path / "old", [(900, 0.91)], method="freebits", cpu=30,
                    extra={"baseline": {"source": str(s)}})  # written before it was recorded
    own = write_run(tmp_path / "own", [(900, 0.91)], method="freebits", cpu=30,
                    extra={"baseline": {"source": "uniform+ilp"}})
    cmp = compare_runs([s, fb, old, own])
    assert [r["cpu_note"] for r in cmp.rows] == [None, "includes source", "excludes source",
                                                None]
    assert cmp.rows[1]["source_cpu_seconds"] == 300.0 and cmp.rows[1]["cpu_seconds"] == 330
    text = format_table(cmp)
    assert "330*" in text and "30†" in text
    assert "includes the CPU seconds of the run whose front was refined" in text
    assert "counts only a refinement" in text
