"""The shared contract suite (hwmodels.testing) over every registered model and layout."""

from __future__ import annotations

import pytest

import hwmodels
from hwmodels import testing

TABLES = testing.contract_tables()


@pytest.fixture(params=hwmodels.available())
def model_name(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.mark.parametrize("layout", sorted(TABLES))
@pytest.mark.parametrize("check", testing.CHECKS, ids=lambda c: c.__name__)
def test_contract(model_name: str, layout: str, check) -> None:  # type: ignore[no-untyped-def]
    table = TABLES[layout]
    check(testing.example_model(model_name, table), table)


@pytest.mark.parametrize(
    "name, params",
    [
        ("mpic", {"group_overhead_cycles": 50.0}),
        ("pulp", {"preset": "xpulpnn"}),
        ("pulp", {"launch_cycles": 0.0, "l2_bytes_per_cycle": 0.5}),
        ("memory", {"qparam_bits": 0, "bias_bits": 0}),
        ("table", {"group_overhead": 10.0}),
    ],
)
def test_contract_with_params(name: str, params: dict) -> None:
    for table in TABLES.values():
        if name == "table":
            model = hwmodels.get(name, table=table, data=testing.synthetic_measurements(table),
                                 **params)
        else:
            model = hwmodels.get(name, table=table, **params)
        testing.run_contract(model, table)


def test_monotone_declarations() -> None:
    """The models say where they are monotone, and the contract checks exactly that."""
    t = testing.toy_table()
    assert hwmodels.get("memory").monotone == {"memory_bytes", "weight_bytes",
                                               "activation_bytes"}
    assert hwmodels.get("bitops").monotone == {"bitops"}
    assert hwmodels.get("mpic").monotone == {"mpic_cycles", "energy_uj"}
    assert hwmodels.get("mpic", group_overhead_cycles=1.0).monotone == frozenset()
    assert hwmodels.get("pulp").monotone == frozenset()
    tm = testing.example_model("table", t)
    assert tm.monotone == {"measured_cycles"}  # the synthetic data grows with bits


def test_prune_monotone_declarations() -> None:
    """The issue requires: pruning a channel never raises memory or bitops.

    The contract checks ``prune_monotone`` metrics only, so these models must declare it
    for every metric; dropping the declaration would silently skip the check.
    """
    for name in ("memory", "bitops"):
        cls = hwmodels.model_class(name)
        assert cls.prune_monotone == frozenset(cls.metrics), name
        assert hwmodels.get(name).prune_monotone == frozenset(cls.metrics), name
    assert hwmodels.get("memory").prune_monotone == {"memory_bytes", "weight_bytes",
                                                     "activation_bytes"}
    assert hwmodels.get("bitops").prune_monotone == {"bitops"}


def test_contract_catches_a_broken_model() -> None:
    """A model that claims monotonicity it lacks fails the suite."""

    class Liar(hwmodels.HardwareModel):
        name = "liar"
        metrics = {"liar_cost": "made up"}
        monotone = frozenset(metrics)

        def _layer_cost(self, batch):  # type: ignore[no-untyped-def]
            return {"liar_cost": 100.0 - batch.w_bit_sum}

    t = testing.toy_table()
    with pytest.raises(AssertionError, match="declares it monotone"):
        testing.check_monotone(Liar(), t)


def test_contract_catches_a_model_that_grows_when_pruned() -> None:
    class Grows(hwmodels.HardwareModel):
        name = "grows"
        metrics = {"grows_cost": "made up"}
        prune_monotone = frozenset(metrics)

        def _layer_cost(self, batch):  # type: ignore[no-untyped-def]
            return {"grows_cost": 1000.0 - batch.kept * 1.0}

    with pytest.raises(AssertionError, match="pruning gene"):
        testing.check_prune_monotone(Grows(), testing.toy_table())
