"""runs/own_model.py, the README's "one's own model" example, runs end to end (tiny)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # its own float training in a subprocess: nothing to share
def test_own_model_example_runs(tmp_path: Path) -> None:
    out = tmp_path / "own"
    proc = subprocess.run([sys.executable, str(ROOT / "runs" / "own_model.py"), "--tiny",
                           "--out", str(out)], capture_output=True, text=True, timeout=600,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "check ok: True" in proc.stdout
    for f in ("front.csv", "front.json", "latency.csv", "study.journal", "report/report.html",
              "export/weights.npz", "export/manifest.json"):
        assert (out / f).is_file(), f
    man = json.loads((out / "export" / "manifest.json").read_text())
    assert "latency_us" in man["hardware"]  # the measured-table metric is an objective
    assert man["task"]["model"] == "SmallNet"
