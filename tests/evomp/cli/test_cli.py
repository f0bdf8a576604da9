from __future__ import annotations

import json
from pathlib import Path

import pytest

from evomp.cli import main

ROOT = Path(__file__).resolve().parents[3]


def test_space_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["space", str(ROOT / "runs" / "demo.toml")]) == 0
    out = capsys.readouterr().out
    assert "conv1" in out and "303 genes (298 weight, 5 activation)" in out
    assert main(["space", str(ROOT / "runs" / "demo.toml"), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["n_genes"] == 303 and d["layers"][0]["name"] == "conv1"


def test_bad_spec_is_a_clean_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "s.toml"
    p.write_text('name = "x"\n[space]\nw_bits = []\n')
    assert main(["space", str(p)]) == 2
    assert "space.w_bits is empty" in capsys.readouterr().err
