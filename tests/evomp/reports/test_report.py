"""`evomp report` and `evomp export` on real run directories (a tiny uniform baseline and a
run whose front has a single member), through the command line."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from evomp.cli import main
from evomp.objectives._objectives import Objectives
from evomp.reports._report import hypervolume_trace, load_run_data
from evomp.run._context import open_run
from evomp.run._protocol import CpuClock, finish_run
from evomp.run._spec import load_spec


@pytest.fixture(scope="module")
def spec_path(tiny_runs: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's tiny spec with three objectives; its runs share the session's float
    model."""
    where = tiny_runs.share(tmp_path_factory.mktemp("spec"))
    return tiny_runs.spec(where, "tiny.toml", name="tiny-report", steps=10, final_steps=20,
                          objectives=["accuracy", "memory_bytes", "energy_uj"],
                          hardware=["memory", "mpic"])


@pytest.fixture(scope="module")
def uniform_run(spec_path: Path) -> Path:
    out = spec_path.parent / "uniform"
    assert main(["baseline", str(spec_path), "--method", "uniform", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def single_run(spec_path: Path) -> Path:
    """A run directory whose front holds exactly one member (one candidate)."""
    ctx = open_run(load_spec(spec_path), spec_path.parent / "single", 1)
    s = ctx.spec.search
    obj = Objectives(ctx.space.table, s.objectives, s.constraints, s.hardware, ctx.spec.hw)
    finish_run(ctx, obj, ctx.space.uniform(4, 8), method="one", clock=CpuClock())
    return ctx.out


def _front(d: Path) -> list[dict[str, str]]:
    with (d / "front.csv").open() as f:
        return list(csv.DictReader(f))


def test_report_writes_plots_and_html(uniform_run: Path, capsys) -> None:
    assert main(["report", str(uniform_run)]) == 0
    rep = uniform_run / "report"
    for name in ("front_memory_bytes.png", "front_energy_uj.png", "bits.png", "report.html"):
        assert (rep / name).is_file() and (rep / name).stat().st_size > 1000, name
    html = (rep / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 3  # self-contained: plots embedded
    for r in _front(uniform_run):
        assert f"<td>{r['id']}</td>" in html  # the front table
    out = capsys.readouterr().out
    assert "no surrogate predictions recorded" in out  # a baseline has no surrogate


def test_report_on_a_single_member_front(single_run: Path) -> None:
    assert len(_front(single_run)) == 1
    assert main(["report", str(single_run), "--metrics", "all"]) == 0
    rep = single_run / "report"
    assert (rep / "bits.png").is_file() and (rep / "report.html").is_file()
    assert (rep / "front_mpic_cycles.png").is_file()  # --metrics all: every metric in front.csv


def test_report_errors(uniform_run: Path, tmp_path: Path, capsys) -> None:
    assert main(["report", str(tmp_path)]) == 2
    assert "not a finished run directory" in capsys.readouterr().err
    assert main(["report", str(uniform_run), "--pick", "p99"]) == 2
    assert "p99" in capsys.readouterr().err
    assert main(["report", str(uniform_run), "--metrics", "latency_cycles"]) == 2
    assert "has no ['latency_cycles']" in capsys.readouterr().err


def test_export_pick_round_trip(uniform_run: Path, tmp_path: Path) -> None:
    row = _front(uniform_run)[0]
    out = tmp_path / "exp"
    assert main(["export", str(uniform_run), "--pick", row["id"], "--out", str(out)]) == 0
    man = json.loads((out / "manifest.json").read_text())
    assert man["member"] == row["id"] and man["check"]["ok"]
    assert man["hardware"]["memory_bytes"] == pytest.approx(float(row["memory_bytes"]))
    bits = json.loads((out / "bits.json").read_text())
    members = json.loads((uniform_run / "front.json").read_text())
    assert bits == members[row["id"]]["bits"]
    z = np.load(out / "weights.npz")
    for name, w in bits["weights"].items():
        np.testing.assert_array_equal(z[f"{name}.w_bits"], w)
        assert np.all(z[f"{name}.w_zero_point"] == 0)
    assert (out / "fakequant_state.pt").is_file()
    # a second export into the same folder is refused (nothing saved is lost)
    assert main(["export", str(uniform_run), "--pick", row["id"], "--out", str(out)]) == 2


def test_export_best_under(uniform_run: Path, tmp_path: Path, capsys) -> None:
    rows = _front(uniform_run)
    mems = sorted(float(r["memory_bytes"]) for r in rows)
    budget = mems[len(mems) // 2]
    ok = [r for r in rows if float(r["memory_bytes"]) <= budget]
    want = max(ok, key=lambda r: (float(r["val_accuracy"]), -float(r["memory_bytes"])))
    out = tmp_path / "best"
    assert main(["export", str(uniform_run), "--best-under", f"memory_bytes={budget}",
                 "--out", str(out), "--no-onnx"]) == 0
    assert json.loads((out / "manifest.json").read_text())["member"] == want["id"]
    assert not (out / "model.onnx").exists()
    capsys.readouterr()
    assert main(["export", str(uniform_run), "--best-under", f"memory_bytes={mems[0] / 2}",
                 "--out", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert "no front member has memory_bytes" in err and "smallest" in err
    assert not (tmp_path / "none").exists()


def test_hypervolume_trace_is_monotone_and_matches_pymoo() -> None:
    from pymoo.indicators.hv import HV

    rng = np.random.default_rng(0)
    acc = rng.random(30)
    C = rng.random((30, 2)) * [100, 3]
    hv, ref = hypervolume_trace(acc, C)
    assert np.all(np.diff(hv) >= -1e-12) and 0 < hv[-1] <= 1
    F = np.concatenate([1 - acc[:, None], C / C.max(0)], axis=1)
    assert hv[-1] * np.prod(ref) == pytest.approx(HV(ref_point=np.array(ref))(F))


def test_load_run_data_orders_front(uniform_run: Path) -> None:
    data = load_run_data(uniform_run)
    mem = [r["memory_bytes"] for r in data.front]
    assert mem == sorted(mem)
    assert data.hw_objectives == ["memory_bytes", "energy_uj"]
