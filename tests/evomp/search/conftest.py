"""A throw-away PostgreSQL server on loopback for the cluster tests."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    cands = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return cands[-1] if cands else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres_url():  # type: ignore[no-untyped-def]
    psycopg = pytest.importorskip("psycopg")
    initdb, postgres = _pg_bin("initdb"), _pg_bin("postgres")
    if not initdb or not postgres:
        pytest.skip("PostgreSQL is not installed ('make test' installs it with apt-get)")
    base = Path(tempfile.mkdtemp(prefix="evomp-pg-", dir="/tmp"))
    prefix: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root
        import pwd

        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the server")
        os.chown(base, pw.pw_uid, pw.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    os.chmod(base, 0o755)
    data = base / "data"
    subprocess.run(prefix + [initdb, "-D", str(data), "-A", "trust", "-U", "postgres",
                             "--no-sync"], check=True, capture_output=True)
    port = _free_port()
    server = subprocess.Popen(
        prefix + [postgres, "-D", str(data), "-p", str(port), "-k", str(base),
                  "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 30
        while True:
            try:
                conn = psycopg.connect(host="127.0.0.1", port=port, user="postgres",
                                       dbname="postgres", autocommit=True)
                break
            except psycopg.OperationalError:
                if time.time() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.2)
        conn.execute("CREATE DATABASE evomp_test")
        conn.close()
        yield f"postgresql://postgres@127.0.0.1:{port}/evomp_test"
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(base, ignore_errors=True)
