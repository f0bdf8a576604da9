"""A throw-away PostgreSQL server on loopback for the cluster tests."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture
def postgres_url(pg_server: Any) -> str:
    return pg_server()
