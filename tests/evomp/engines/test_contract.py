"""The engine contract (evomp.engines.testing) over every registered engine and variant."""

from __future__ import annotations

import pytest

from evomp.engines import ENGINES
from evomp.engines import testing as contract

CASES = [(e, v) for e in ENGINES for v in contract.variants(e)]


@pytest.mark.parametrize(("engine", "variant"), CASES, ids=[f"{e}-{v}" for e, v in CASES])
def test_engine_contract(engine: str, variant: str) -> None:
    contract.check_engine(engine, contract.toy_parts(engine, variant))


@pytest.mark.parametrize("engine", ["pymoo", "optuna"])
def test_engine_contract_with_latency_repair(engine: str) -> None:
    contract.check_engine(engine, contract.toy_parts(engine, "nsga2", repair=True))


@pytest.mark.parametrize("engine", list(ENGINES))
def test_variants_build_their_own_class_and_search_differently(engine: str) -> None:
    contract.check_variants_differ(engine, lambda v: contract.toy_parts(engine, v))


def test_the_contract_catches_a_variant_that_builds_another() -> None:
    """A registry entry whose builder silently builds NSGA-II fails the contract."""
    from evomp.engines import ALGORITHMS

    real = ALGORITHMS._items["smsemoa"]
    ALGORITHMS._items["smsemoa"] = ALGORITHMS.get("nsga2")
    try:
        with pytest.raises(AssertionError, match="smsemoa"):
            contract.check_variants_differ("pymoo", lambda v: contract.toy_parts("pymoo", v))
    finally:
        ALGORITHMS._items["smsemoa"] = real
