"""The atomic genome claims that keep workers from training the same genome twice."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from evomp.search._worker import Claims


def test_claims_one_owner_per_genome(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'claims.db'}"
    a, b = Claims(url, "s"), Claims(url, "s")  # two workers, one database
    assert a.claim("h1", 3) is None  # first claim wins
    assert b.claim("h1", 2) == 3  # a lower trial number does not steal it
    assert a.claim("h1", 3) is None  # re-claiming one's own genome is fine
    assert b.claim("h2", 4) is None
    assert Claims(url, "other").claim("h1", 9) is None  # claims are per study
    a.close()
    b.close()


def test_concurrent_claims_have_exactly_one_winner(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'claims.db'}"
    Claims(url, "s").close()  # create the table once

    def claim(i: int) -> int | None:
        c = Claims(url, "s")
        try:
            return c.claim("same", i)
        finally:
            c.close()

    with ThreadPoolExecutor(8) as ex:
        owners = list(ex.map(claim, range(16)))
    winners = [i for i, o in enumerate(owners) if o is None]
    assert len(winners) == 1
    assert all(o == winners[0] for o in owners if o is not None)
