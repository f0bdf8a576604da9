"""A user's task named by import path in the spec: one controller and two workers on it."""

from __future__ import annotations

import csv
import sys
import textwrap
from pathlib import Path

import pytest

from evomp.cli import main

MODULE = '''
import numpy as np
import torch
from torch import nn

import evomp


class Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(1, 6, 3, padding=1)
        self.fc = nn.Linear(6 * 16, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def make_task():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 600)
    x = rng.normal(size=(600, 1, 16)).astype("float32")
    x[np.arange(600), 0, y * 5] += 3.0  # a learnable signal
    return evomp.tasks.from_arrays(x[:500], y[:500], x[500:], y[500:], Small, name="mine",
                                   model_name="Small", seed=0)


def not_a_task():
    return 42


class Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(5, 3)

    def forward(self, x):
        return self.fc(x)  # the task's inputs are (N, 1, 16): this cannot run


def broken_task():
    t = make_task()
    return evomp.Task(name="b", model_factory=Untraceable, train=t.train, val=t.val,
                      test=t.test)
'''

SPEC = '''
name = "mine"
seed = 0
threads = 1
[task]
factory = "{factory}"
{extra}
[pretrain]
epochs = 2
[qat]
steps = 10
final_steps = 15
[search]
objectives = ["accuracy", "memory_bytes"]
hardware = ["memory"]
budget = 5
initial = 3
per_round = 2
generations = 2
population = 8
probes = 2
final_max = 1
'''


@pytest.fixture
def user_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "user_tasks.py").write_text(textwrap.dedent(MODULE))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("user_tasks", None)


def _spec(d: Path, factory: str, extra: str = "") -> str:
    p = d / f"spec-{abs(hash(factory + extra))}.toml"
    p.write_text(SPEC.format(factory=factory, extra=extra))
    return str(p)


def test_a_controller_and_two_workers_on_a_user_task(user_dir: Path) -> None:
    out = user_dir / "run"
    assert main(["run", _spec(user_dir, "user_tasks:make_task"), "--out", str(out),
                 "--jobs", "2", "--quiet", "--no-reference"]) == 0
    rows = list(csv.DictReader((out / "evaluations.csv").open()))
    assert sum(r["fidelity"] == "short" for r in rows) == 5
    assert list(csv.DictReader((out / "front.csv").open()))
    logs = [p.read_text() for p in (out / "workers").glob("w*/worker.log")]
    assert len(logs) == 2 and not any("Traceback" in t for t in logs)


def test_float_checkpoint_skips_pretraining(user_dir: Path) -> None:
    import torch
    import user_tasks  # type: ignore[import-not-found]

    torch.manual_seed(1)
    model = user_tasks.make_task().model_factory()
    torch.save(model.state_dict(), user_dir / "trained.pt")
    out = user_dir / "ck"
    assert main(["run", _spec(user_dir, "user_tasks:make_task",
                              'float_checkpoint = "trained.pt"'), "--out", str(out),
                 "--quiet", "--no-reference"]) == 0
    saved = torch.load(out / "float.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize(("factory", "message"), [
    ("no_such_module:make_task", "cannot import 'no_such_module'"),
    ("user_tasks:missing", "has no function 'missing'"),
    ("user_tasks:not_a_task", "returned int, not an evomp.Task"),
    ("user_tasks:broken_task", "cannot trace the model"),
    ("user_tasks", "must be 'package.module:function'"),
])
def test_bad_factories_give_one_clear_line(user_dir: Path, factory: str, message: str,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    out = user_dir / "bad"
    assert main(["run", _spec(user_dir, factory), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("evomp: error:") and message in err[0], err
    assert not (out / "spec.toml").exists()  # nothing written
