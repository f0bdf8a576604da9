"""``evaluations.jsonl`` is strict JSON (non-finite floats as null, read back as NaN), and
the automatic torch thread count never oversubscribes the CPUs this process may use."""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from evomp import Evaluator, SearchSpace
from evomp._errors import EvompError
from evomp.evaluation import EvalResult, _parallel, threads_per_worker, usable_cores
from evomp.tasks import Task, from_arrays, get_task


def _strict(line: str) -> dict:
    def refuse(token: str) -> None:
        raise ValueError(f"not JSON: {token}")

    return json.loads(line, parse_constant=refuse)


def _task() -> Task:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(48, 2, 8)).astype(np.float32)
    y = rng.integers(0, 3, 48)

    def model() -> nn.Module:
        return nn.Sequential(nn.Conv1d(2, 4, 3, padding=1), nn.Flatten(), nn.Linear(32, 3))

    return from_arrays(x[:40], y[:40], x[40:], y[40:], model, name="t", seed=0)


def test_evaluations_jsonl_is_strict_json(tmp_path: Path) -> None:
    task = _task()
    torch.manual_seed(0)
    model = task.model_factory()
    space = SearchSpace.from_model(model, task.example_input())
    cache = tmp_path / "evaluations.jsonl"
    ev = Evaluator(task, space, model, cache_file=cache)
    failed = EvalResult("aa", "short", float("nan"), 0.5, None, float("inf"), 1.0, True,
                        "QAT diverged")
    scored = EvalResult("bb", "final", 0.75, 0.5, float("nan"), 0.3, 2.0)
    ev.remember(failed)
    ev.remember(scored)
    lines = cache.read_text().splitlines()
    assert [_strict(ln)["val_accuracy"] for ln in lines] == [None, 0.75]
    assert _strict(lines[0])["val_loss"] is None
    # an older file with bare NaN tokens still loads, beside the new lines
    with cache.open("a") as f:
        f.write('{"genome_hash": "cc", "fidelity": "short", "val_accuracy": NaN, '
                '"ptq_accuracy": NaN, "test_accuracy": null, "val_loss": NaN, "seconds": 1.0, '
                '"failed": true, "reason": "old", "cpu_seconds": 0.5}\n')
    again = Evaluator(task, space, model, cache_file=cache).cache
    assert set(again) == {("aa", "short"), ("bb", "final"), ("cc", "short")}
    a = again[("aa", "short")]
    assert math.isnan(a.val_accuracy) and math.isnan(a.val_loss) and a.failed
    assert a.test_accuracy is None and a.ptq_accuracy == 0.5
    assert again[("bb", "final")].test_accuracy is None  # null test accuracy: not scored
    assert math.isnan(again[("cc", "short")].ptq_accuracy)


# ------------------------------------------------------------------------------ threads
def _cgroup(tmp_path: Path, files: dict[str, str], membership: str) -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    proc = tmp_path / "proc_cgroup"
    proc.write_text(membership)
    return root, proc


def test_cgroup_quota_v2_and_v1(tmp_path: Path) -> None:
    # v2: the smallest quota of the process's cgroup and those above it
    root, proc = _cgroup(tmp_path / "v2", {"cpu.max": "max 100000\n",
                                          "a/cpu.max": "300000 100000\n",
                                          "a/b/cpu.max": "150000 100000\n"}, "0::/a/b\n")
    assert _parallel.cgroup_cpu_limit(root, proc) == 1.5
    root, proc = _cgroup(tmp_path / "v2max", {"cpu.max": "max 100000\n"}, "0::/\n")
    assert _parallel.cgroup_cpu_limit(root, proc) is None
    # v1: cfs quota over period, -1 unlimited
    root, proc = _cgroup(tmp_path / "v1", {"cpu,cpuacct/cpu.cfs_quota_us": "-1\n",
                                          "cpu,cpuacct/cpu.cfs_period_us": "100000\n",
                                          "cpu,cpuacct/job/cpu.cfs_quota_us": "50000\n",
                                          "cpu,cpuacct/job/cpu.cfs_period_us": "100000\n"},
                         "4:memory:/job\n3:cpu,cpuacct:/job\n")
    assert _parallel.cgroup_cpu_limit(root, proc) == 0.5
    assert _parallel.cgroup_cpu_limit(tmp_path / "none", tmp_path / "missing") is None


def test_usable_cores_within_affinity_and_quota() -> None:
    n = usable_cores()
    assert 1 <= n <= len(os.sched_getaffinity(0))
    limit = _parallel.cgroup_cpu_limit()
    assert limit is None or n <= max(1, int(limit))


def test_threads_automatic_rule() -> None:
    cores = usable_cores()
    assert threads_per_worker(1, requested=3) == 3  # asked for: used as given
    assert threads_per_worker(1) == cores  # no model known: the whole share
    assert threads_per_worker(2) == max(1, cores // 2)
    assert threads_per_worker(4 * cores) == 1
    # the demo's model is small: one intra-op thread per evaluation
    task = get_task("mnist1d")
    assert _parallel.macs_per_sample(task) == 381440
    assert _parallel.macs_per_sample(task) < _parallel.SMALL_MODEL_MACS
    state = torch.random.get_rng_state()
    assert threads_per_worker(1, task) == 1
    assert torch.equal(state, torch.random.get_rng_state())  # building it drew no numbers
    for bad in (-1, True, 1.5):
        with pytest.raises(EvompError, match=r"threads .* must be >= 0 \(0 = automatic"):
            threads_per_worker(1, requested=bad)  # type: ignore[arg-type]


def test_oversubscription_is_warned_once(monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str],
                                         caplog: pytest.LogCaptureFixture) -> None:
    if os.getloadavg()[0] <= 0.0:  # pragma: no cover - an idle machine has no load to see
        pytest.skip("load average is 0")
    monkeypatch.setattr(_parallel, "_warned", False)  # a fresh process's state
    with caplog.at_level(logging.WARNING, logger="evomp"):
        # the real load average against 0 usable CPUs: oversubscribed whatever else runs
        assert _parallel.warn_oversubscribed(0)
        assert _parallel.warn_oversubscribed(0)
    assert capsys.readouterr().err.count("evomp: warning: the machine is oversubscribed") == 1
    assert sum("oversubscribed: load average" in r.message for r in caplog.records) == 2
    assert not _parallel.warn_oversubscribed(10**6)  # no machine carries that load
