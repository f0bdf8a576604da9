"""A search keeps the short-QAT states its final QATs continue, pruned to the genomes that
can still reach the front (issue 15)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evomp.cli import main
from evomp.run import load_run_study
from evomp.search import states_dir


def test_final_qats_continue_front_states_and_the_rest_are_pruned(
        tiny_runs: Any, tiny_tmp: Path) -> None:
    spec = tiny_runs.spec(tiny_tmp, steps=10, final_steps=20, budget=8, initial=4,
                          per_round=2, final_max=3)
    out = tiny_runs.out(tiny_tmp, "reuse")
    assert main(["run", str(spec), "--out", str(out), "--quiet"]) == 0
    study = load_run_study(out)
    assert study is not None
    trials = [t for t in study.trials if t.state.name == "COMPLETE"]
    short = {t.user_attrs["genome_hash"] for t in trials if t.user_attrs["fidelity"] == "short"}
    final = [t for t in trials if t.user_attrs["fidelity"] == "final"]
    assert len(short) == 8 and final
    kept = {p.name[:-len("-short.pt")] for p in states_dir(out / "artifacts").glob("*.pt")}
    assert kept and kept < short  # pruned: dominated genomes' states are gone
    # every verified member was still kept when its final QAT ran, and continued it
    assert all(t.user_attrs["start"] == "short" for t in final)
    assert {t.user_attrs["genome_hash"] for t in final} <= kept
