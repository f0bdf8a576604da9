from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from evomp._errors import SpecError
from evomp._spec import load_spec, parse_spec, spec_to_toml

ROOT = Path(__file__).resolve().parents[2]


def test_demo_spec_parses() -> None:
    s = load_spec(ROOT / "runs" / "demo.toml")
    assert s.name == "demo" and s.task.name == "mnist1d" and s.task.model == "cnn1d"
    assert s.space.w_bits == (0, 2, 4, 8) and s.space.a_bits == (2, 4, 8)


def test_resolved_spec_roundtrips() -> None:
    s = load_spec(ROOT / "runs" / "demo.toml")
    again = parse_spec(tomllib.loads(spec_to_toml(s)), source=s.source)
    assert again == s


@pytest.mark.parametrize(
    "data, match",
    [
        ({}, "needs a top-level 'name'"),
        ({"name": "x", "colour": 1}, r"unknown key\(s\) \['colour'\] in the top level"),
        ({"name": "x", "task": {"nam": "mnist1d"}}, r"unknown key\(s\) \['nam'\] in \[task\]"),
        ({"name": "x", "task": {"name": "cifar"}}, "task.name must be"),
        ({"name": "x", "task": {"name": "npz"}}, "task.path is required"),
        ({"name": "x", "qat": {"steps": "many"}}, "qat.steps must be an integer"),
        ({"name": "x", "qat": {"lr": True}}, "qat.lr must be a number"),
        ({"name": "x", "space": {"w_bits": []}}, "space.w_bits is empty"),
        ({"name": "x", "space": {"a_bits": [4, 2]}}, "space.a_bits must be increasing"),
        ({"name": "x", "space": {"w_bits": [0, 2.5]}}, "space.w_bits must hold integers"),
        ({"name": "x", "space": {"granularity": "tensor"}}, "space.granularity"),
        ({"name": "x", "search": {"engine": "cmaes"}}, "search.engine"),
        ({"name": "x", "search": {"objectives": ["memory_bytes"]}}, "must include 'accuracy'"),
        ({"name": "x", "search": {"initial": 50, "budget": 10}}, "exceeds search.budget"),
        ({"name": "../up"}, "plain directory name"),
        ({"name": "x", "device": "tpu"}, "device must be"),
        ({"name": "x", "task": 3}, r"\[task\] must be a table"),
    ],
)
def test_bad_specs_name_the_key(data: dict, match: str) -> None:
    with pytest.raises(SpecError, match=match):
        parse_spec(data)


def test_missing_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="does not exist"):
        load_spec(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = \n")
    with pytest.raises(SpecError, match="not valid TOML"):
        load_spec(bad)
