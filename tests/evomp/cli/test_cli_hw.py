"""``evomp hw list`` and ``evomp hw cost`` on the demo spec."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evomp.cli import main

DEMO = str(Path(__file__).resolve().parents[3] / "runs" / "demo.toml")


def run(capsys, *argv: str) -> tuple[int, str, str]:  # type: ignore[no-untyped-def]
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_hw_list(capsys) -> None:  # type: ignore[no-untyped-def]
    rc, out, _ = run(capsys, "hw", "list")
    assert rc == 0
    for name in ("memory", "bitops", "mpic", "pulp", "table", "callable"):
        assert f"\n{name}: " in "\n" + out
    for metric in ("memory_bytes", "energy_uj", "latency_cycles", "bitops"):
        assert metric in out
    assert "preset='gap8'" in out and "not vectorized" in out
    rc, out, _ = run(capsys, "hw", "list", "--json")
    doc = json.loads(out)
    assert {m["name"] for m in doc["models"]} >= {"memory", "pulp"}


@pytest.fixture(scope="module")
def demo_costs() -> dict:
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["hw", "cost", DEMO, "--uniform", "8/8", "--uniform", "4/4", "--uniform",
                   "2/2", "--layers", "--json"])
    assert rc == 0
    return json.loads(buf.getvalue())


def test_hw_cost_demo_pulp_slower_and_mpic_faster_at_2_bit(demo_costs: dict) -> None:
    by = {c["uniform"]: c for c in demo_costs["configs"]}
    assert set(by) == {"8/8", "4/4", "2/2"}
    pulp = {k: c["metrics"]["pulp"]["latency_cycles"] for k, c in by.items()}
    mpic = {k: c["metrics"]["mpic"]["mpic_cycles"] for k, c in by.items()}
    mem = {k: c["metrics"]["memory"]["memory_bytes"] for k, c in by.items()}
    assert pulp["2/2"] > pulp["8/8"]  # GAP8 unpacks sub-byte weights in software
    assert mpic["2/2"] < mpic["4/4"] < mpic["8/8"]
    assert mem["2/2"] < mem["4/4"] < mem["8/8"]
    # on the compute-bound convolutions, layer by layer
    for lay8, lay2 in zip(by["8/8"]["layers"]["pulp"], by["2/2"]["layers"]["pulp"], strict=True):
        if lay8["compute_cycles"] > lay8["transfer_cycles"] and lay8["kind"] == "conv1d":
            assert lay2["latency_cycles"] > lay8["latency_cycles"]
    assert set(demo_costs["skipped"]) == {"table", "callable"}


def test_hw_cost_text_and_params(capsys) -> None:  # type: ignore[no-untyped-def]
    rc, out, _ = run(capsys, "hw", "cost", DEMO, "--uniform", "8/8", "--uniform", "2/2",
                     "--model", "pulp", "--param", "pulp.preset=xpulpnn")
    assert rc == 0
    line = next(x for x in out.splitlines() if x.startswith("pulp") and "latency_cycles" in x)
    c8, c2 = (float(v.replace(",", "")) for v in line.split()[2:4])
    assert c2 < c8  # sub-byte SIMD makes 2 bit faster


def test_hw_cost_bits_outside_choices(capsys) -> None:  # type: ignore[no-untyped-def]
    rc, out, _ = run(capsys, "hw", "cost", DEMO, "--uniform", "3/3", "--model", "mpic",
                     "--model", "memory")
    assert rc == 0
    assert "n/a" in out and "no MACs-per-cycle figure" in out
    assert "memory_bytes" in out


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--uniform", "8"], "is not W/A"),
        (["--uniform", "8/0"], "activation bits"),
        (["--uniform", "8/8", "--model", "nosuch"], "unknown hardware model"),
        (["--uniform", "8/8", "--param", "pulp=3"], "MODEL.KEY=VALUE"),
        (["--uniform", "8/8", "--model", "pulp", "--param", "pulp.cores=0"], "cores"),
        (["--uniform", "8/8", "--model", "table"], "path="),
    ],
)
def test_hw_cost_user_errors(capsys, argv: list[str], match: str) -> None:  # type: ignore[no-untyped-def]
    rc, _, err = run(capsys, "hw", "cost", DEMO, *argv)
    assert rc == 2
    assert match in err


def test_output_into_a_closed_pipe_is_quiet() -> None:
    """``evomp hw list | head -0``: the reader is gone before the first line is written;
    no traceback, and the exit status of a process stopped by SIGPIPE."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "evomp", "hw", "list"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # well before the interpreter has imported evomp
    err = proc.stderr.read().decode()
    rc = proc.wait(timeout=60)
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert rc == 141
