from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from evomp import SearchSpace


class TinyNet(nn.Module):
    """Conv1d + depthwise Conv1d + Linear; every quantizable kind but Conv2d."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(2, 6, 3, padding=1)
        self.bn = nn.BatchNorm1d(6)
        self.dw = nn.Conv1d(6, 6, 3, padding=1, groups=6)
        self.fc = nn.Linear(6 * 8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.conv(x)))
        x = torch.relu(self.dw(x))
        return self.fc(x.flatten(1))


@pytest.fixture
def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return TinyNet()


@pytest.fixture
def tiny_input() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(16, 2, 8)


@pytest.fixture
def tiny_space(tiny_model: nn.Module, tiny_input: torch.Tensor) -> SearchSpace:
    return SearchSpace.from_model(tiny_model, tiny_input)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


# ------------------------------------------------------------------ tiny end-to-end runs
#: the one tiny spec of the end-to-end tests (mnist1d, a width-8 CNN, 3 float epochs); every
#: field in braces can be changed per test, the task and pretraining never are, so that all
#: runs of the session start from the same cached float model
TINY_SPEC = """
name = "{name}"
seed = 0
threads = 1

[task]
name = "mnist1d"
model = "cnn1d"
model_kwargs = {{ width = 8 }}

[pretrain]
epochs = 3

[qat]
steps = {steps}
final_steps = {final_steps}

[search]
engine = "{engine}"
objectives = {objectives}
hardware = {hardware}
budget = {budget}
initial = {initial}
per_round = {per_round}
generations = {generations}
population = {population}
probes = 2
final_max = {final_max}
{search}
{extra}
"""

TINY_FIELDS: dict[str, Any] = {
    "name": "tiny", "steps": 15, "final_steps": 30, "engine": "pymoo",
    "objectives": ["accuracy", "memory_bytes"], "hardware": ["memory", "mpic", "pulp"],
    "budget": 10, "initial": 6, "per_round": 2, "generations": 3, "population": 12,
    "final_max": 4, "search": "", "extra": "",
}


def _toml_list(v: Any) -> str:
    return "[" + ", ".join(f'"{x}"' for x in v) + "]" if isinstance(v, list | tuple) else str(v)


def write_tiny_spec(where: Path, file: str | None = None, **fields: Any) -> Path:
    """Write the tiny spec into ``where`` (``tiny-<engine>.toml`` unless ``file``).

    Args:
        where: the folder.
        file: the file name.
        **fields: :data:`TINY_FIELDS` to change; ``search`` is extra ``[search]`` lines,
            ``extra`` extra tables after it (e.g. ``[baselines.dnas-channel]``).
    """
    unknown = set(fields) - set(TINY_FIELDS)
    if unknown:
        raise TypeError(f"the tiny spec has no field(s) {sorted(unknown)}")
    f = {**TINY_FIELDS, **fields}
    text = TINY_SPEC.format(**{k: _toml_list(v) for k, v in f.items()})
    where.mkdir(parents=True, exist_ok=True)
    p = where / (file or f"tiny-{f['engine']}.toml")
    p.write_text(text)
    return p


@dataclass(frozen=True)
class TinyRuns:
    """The session's warm state for tiny end-to-end runs.

    Attributes:
        cache: the shared ``.cache`` folder holding the tiny spec's pretrained float model
            (``float-<key>.pt``; :func:`evomp.run.open_run` looks for it in
            ``<run dir>/../.cache``).
        profile: the tiny float model's sensitivity profile (Hutchinson, 2 probes, the
            spec's seed), as a run directory's ``sensitivity.npz``.
    """

    cache: Path
    profile: Path

    def share(self, where: Path) -> Path:
        """Make run directories made in ``where`` use the session's float model (a
        ``where/.cache`` link); returns ``where``."""
        link = where / ".cache"
        if not link.exists():
            where.mkdir(parents=True, exist_ok=True)
            link.symlink_to(self.cache, target_is_directory=True)
        return where

    def out(self, where: Path, name: str) -> Path:
        """A fresh run directory ``where/name`` that starts from the session's float model
        and already holds its sensitivity profile (what every run computes first)."""
        self.share(where)
        out = where / name
        out.mkdir(parents=True, exist_ok=False)
        shutil.copyfile(self.profile, out / self.profile.name)
        return out

    spec = staticmethod(write_tiny_spec)


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory: pytest.TempPathFactory) -> TinyRuns:
    """Pretrain the tiny spec's float model and compute its profile once per session."""
    from evomp.evaluation import run_profile
    from evomp.run import load_spec, open_run

    root = tmp_path_factory.mktemp("tiny-runs")
    spec = load_spec(write_tiny_spec(root))
    ctx = open_run(spec, root / "warm", 1)
    try:
        run_profile(ctx, spec.search.sensitivity, spec.search.probes)
    finally:
        ctx.close()
    return TinyRuns(cache=root / ".cache", profile=ctx.run_dir.sensitivity)


@pytest.fixture
def tiny_tmp(tiny_runs: TinyRuns, tmp_path: Path) -> Path:
    """``tmp_path``, whose run directories start from the session's float model."""
    return tiny_runs.share(tmp_path)


# --------------------------------------------------------------------------- PostgreSQL
def _pg_bin(name: str) -> str | None:
    import glob

    found = shutil.which(name)
    if found:
        return found
    cands = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return cands[-1] if cands else None


@pytest.fixture
def pg_server(request: pytest.FixtureRequest) -> Any:
    """``start(password=None) -> url``: a throw-away PostgreSQL server on loopback with a
    database ``evomp_test`` (trust, or scram-sha-256 with ``password``), stopped and removed
    after the test. Skips where PostgreSQL or psycopg is missing."""
    import os
    import socket
    import subprocess
    import tempfile
    import time
    from urllib.parse import quote

    psycopg = pytest.importorskip("psycopg")
    initdb, postgres = _pg_bin("initdb"), _pg_bin("postgres")
    if not initdb or not postgres:
        pytest.skip("PostgreSQL is not installed ('make test' installs it with apt-get)")

    def start(password: str | None = None) -> str:
        base = Path(tempfile.mkdtemp(prefix="evomp-pg-", dir="/tmp"))
        request.addfinalizer(lambda: shutil.rmtree(base, ignore_errors=True))
        prefix: list[str] = []
        if os.geteuid() == 0:  # the server refuses to run as root
            import pwd

            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                pytest.skip("running as root and there is no 'postgres' user for the server")
            os.chown(base, pw.pw_uid, pw.pw_gid)
            prefix = ["runuser", "-u", "postgres", "--"]
        os.chmod(base, 0o755)
        auth = ["-A", "trust"]
        if password is not None:
            pwfile = base / "pw"
            pwfile.write_text(password + "\n")
            os.chmod(pwfile, 0o644)
            auth = ["-A", "scram-sha-256", f"--pwfile={pwfile}"]
        subprocess.run(prefix + [initdb, "-D", str(base / "data"), *auth, "-U", "postgres",
                                 "--no-sync"], check=True, capture_output=True)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        servers: list[subprocess.Popen[bytes]] = []

        def run() -> psycopg.Connection:
            servers.append(subprocess.Popen(
                prefix + [postgres, "-D", str(base / "data"), "-p", str(port), "-k",
                          str(base), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            deadline = time.time() + 60
            while True:
                try:
                    return psycopg.connect(host="127.0.0.1", port=port, user="postgres",
                                           password=password, dbname="postgres",
                                           autocommit=True)
                except psycopg.OperationalError:
                    if time.time() > deadline or servers[-1].poll() is not None:
                        raise
                    time.sleep(0.2)

        def stop() -> None:
            server = servers[-1]
            server.terminate()  # a fast shutdown: clients are cut off
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        request.addfinalizer(lambda: stop() if servers[-1].poll() is None else None)
        conn = run()
        conn.execute("CREATE DATABASE evomp_test")
        conn.close()
        auth_part = "" if password is None else ":" + quote(password, safe="")
        url = f"postgresql://postgres{auth_part}@127.0.0.1:{port}/evomp_test"
        start.control[url] = (stop, lambda: run().close())
        return url

    start.control = {}  # url -> (stop the server, start it again on its data and port)
    return start
