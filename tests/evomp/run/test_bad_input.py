"""Bad input gives one ``evomp: error: ...`` line that says what to fix, a non-zero exit,
and writes nothing (issue 16, the input-side cases). Each case runs the real CLI in-process
on real files."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from evomp.cli import main

ROOT = Path(__file__).resolve().parents[3]


def _error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """Run the CLI, expecting exit 2 and exactly one ``evomp: error:`` line on stderr."""
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("evomp: error: "), err
    assert "Traceback" not in err
    return lines[0]


# ------------------------------------------------------------------------------ the spec
def test_binary_spec(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "s.toml"
    spec.write_bytes(b'name = "x"\n\x89PNG\r\n\x1a\n\x00\xff\xfe')
    msg = _error(capsys, ["space", str(spec)])
    assert f"{spec} is not a text file (byte 11 on line 2 is not UTF-8)" in msg
    assert "a spec is a TOML text file" in msg


@pytest.mark.parametrize("text, where", [
    ('name = "x"\nseed = \n', "line 2, column 8"),
    ('name = "x"\n[qat\nsteps = 1\n', "line 2, column 5"),
    ('name = "x"\nw = [1,\n', "line 2 (end of file)"),
])
def test_invalid_toml_names_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          text: str, where: str) -> None:
    spec = tmp_path / "s.toml"
    spec.write_text(text)
    msg = _error(capsys, ["space", str(spec)])
    assert f"{spec}, {where}: not valid TOML: " in msg


# --------------------------------------------------------------------------- .npz tasks
def _arrays(n: int = 64, m: int = 16) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"x_train": rng.normal(size=(n, 1, 16)).astype(np.float32),
            "y_train": rng.integers(0, 3, n), "x_test": rng.normal(size=(m, 1, 16)),
            "y_test": rng.integers(0, 3, m)}


def _with(**changes: object) -> dict[str, object]:
    a: dict[str, object] = dict(_arrays())
    for k, v in changes.items():
        if v is None:
            a.pop(k)
        else:
            a[k] = v
    return a


def _nan_inputs() -> np.ndarray:
    x = _arrays()["x_train"].copy()
    x[5, 0, 3] = np.nan
    x[9, 0, :2] = np.inf
    return x


NPZ_CASES = {
    "lacks y_test": (_with(y_test=None), r"lacks arrays \['y_test'\]; it needs x_train, y_train"),
    "lacks x_train": (_with(x_train=None), r"lacks arrays \['x_train'\]"),
    "empty archive": ({}, r"lacks arrays \['x_train', 'y_train', 'x_test', 'y_test'\]; .* "
                          r"\(the archive is empty\)"),
    "empty x_test": (_with(x_test=np.zeros((0, 1, 16)), y_test=np.zeros(0, np.int64)),
                     r"x_test is empty \(shape \(0, 1, 16\)\); give at least one sample"),
    "NaN inputs": (_with(x_train=_nan_inputs()),
                   r"the data holds non-finite values: x_train has 3 NaN or inf value\(s\) in "
                   r"2 of its 64 samples \(the first at index 5\); replace or drop"),
    "inf test inputs": (_with(x_test=np.full((16, 1, 16), -np.inf)),
                        r"non-finite values: x_test has 256 NaN or inf"),
    "negative labels": (_with(y_train=np.r_[-1, -3, np.zeros(62, np.int64)]),
                        r"y_train holds 2 negative label\(s\) \(the smallest is -3\); labels "
                        r"are class indices 0\.\.C-1"),
    "fractional labels": (_with(y_train=np.linspace(0, 2, 64)),
                          r"y_train must hold integer class labels 0\.\.C-1, got dtype float64 "
                          r"holding 0\.0317"),
    "whole float labels": (_with(y_test=np.ones(16)),
                           r"y_test must hold integer class labels .*\(whole numbers: save them "
                           r"with \.astype\(np\.int64\)\)"),
    "lengths differ": (_with(y_train=np.zeros(60, np.int64)),
                       r"x_train holds 64 samples but y_train holds 60 labels; give one label "
                       r"per sample"),
    "pickled objects": (_with(y_test=np.array([1, "a", None] * 5 + [2], dtype=object)),
                        r"y_test is a pickled object array, which evomp never loads "
                        r"\(unpickling can run code\)"),
}


@pytest.mark.parametrize("case", sorted(NPZ_CASES))
def test_bad_npz_task(tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str) -> None:
    arrays, match = NPZ_CASES[case]
    data = tmp_path / "data.npz"
    np.savez(data, **arrays)  # type: ignore[arg-type]
    spec = tmp_path / "s.toml"
    spec.write_text(f'name = "x"\n[task]\nname = "npz"\npath = "{data}"\n'
                    '[pretrain]\nepochs = 1\n[qat]\nsteps = 1\nfinal_steps = 1\n')
    out = tmp_path / "run"
    msg = _error(capsys, ["run", str(spec), "--out", str(out), "--quiet"])
    assert msg.startswith(f"evomp: error: {data}")
    assert re.search(match, msg), msg
    assert not out.exists() or not any(out.iterdir())  # nothing written, nothing trained


def test_npz_that_is_not_an_archive(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data.npz"
    data.write_text("x_train,y_train\n1,2\n")
    spec = tmp_path / "s.toml"
    spec.write_text(f'name = "x"\n[task]\nname = "npz"\npath = "{data}"\n')
    msg = _error(capsys, ["space", str(spec)])
    assert f"{data} is not an .npz archive; save the four arrays with np.savez(path, " in msg


# ------------------------------------------------------------------------ command line
def test_hw_cost_unknown_parameter(capsys: pytest.CaptureFixture[str]) -> None:
    msg = _error(capsys, ["hw", "cost", str(ROOT / "runs" / "demo.toml"), "--uniform", "8/8",
                          "--param", "pulp.nokey=3"])
    assert msg == ("evomp: error: --param pulp.nokey: 'nokey' is not a parameter of hardware "
                   "model 'pulp'; its parameters are ['cores', 'depthwise_slowdown', "
                   "'freq_mhz', 'l2_bytes_per_cycle', 'last_output_bits', 'launch_cycles', "
                   "'macs_per_cycle', 'preset', 'unpack_cycles_per_element'] (see 'evomp hw "
                   "list')")
    msg = _error(capsys, ["hw", "cost", str(ROOT / "runs" / "demo.toml"), "--uniform", "8/8",
                          "--param", "bitops.x=1"])
    assert "'x' is not a parameter of hardware model 'bitops'; it takes no parameters" in msg


def test_negative_threads_on_the_command_line(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "s.toml"
    spec.write_text('name = "x"\n[pretrain]\nepochs = 1\n')
    out = tmp_path / "run"
    msg = _error(capsys, ["run", str(spec), "--out", str(out), "--threads", "-1", "--quiet"])
    assert msg == ("evomp: error: threads (the spec's threads, or --threads) must be >= 0 "
                   "(0 = automatic: this process's share of the usable CPUs), got -1")
    assert not out.exists()
