from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from evomp._errors import SpecError
from evomp.run._spec import load_spec, parse_spec, spec_to_toml

ROOT = Path(__file__).resolve().parents[3]


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


def _search(**kw: object) -> dict:
    return {"name": "x", "search": kw}


@pytest.mark.parametrize(
    "data, match",
    [
        # [pretrain] and [qat] numbers
        ({"name": "x", "pretrain": {"epochs": 0}}, r"pretrain\.epochs must be > 0, got 0"),
        ({"name": "x", "pretrain": {"lr": -1.0}}, r"pretrain\.lr must be > 0, got -1\.0"),
        ({"name": "x", "pretrain": {"lr": float("nan")}}, r"pretrain\.lr must be a finite"),
        ({"name": "x", "pretrain": {"batch_size": 0}}, r"pretrain\.batch_size must be > 0"),
        ({"name": "x", "pretrain": {"weight_decay": -0.1}},
         r"pretrain\.weight_decay must be >= 0"),
        ({"name": "x", "qat": {"steps": -1}}, r"qat\.steps must be >= 0, got -1"),
        ({"name": "x", "qat": {"final_steps": -5}}, r"qat\.final_steps must be >= 0"),
        ({"name": "x", "qat": {"lr": 0}}, r"qat\.lr must be > 0, got 0"),
        ({"name": "x", "qat": {"quant_lr": 0.0}}, r"qat\.quant_lr must be > 0"),
        ({"name": "x", "qat": {"batch_size": 0}}, r"qat\.batch_size must be > 0"),
        # [search] choices
        (_search(selection="x"),
         r"search\.selection must be one of 'ehvi', 'uncertainty', 'diverse', got 'x'"),
        (_search(surrogate="svm"), r"search\.surrogate must be one of 'auto', 'gp', 'forest'"),
        (_search(sensitivity="exact"),
         r"search\.sensitivity must be one of 'hutchinson', 'fisher'"),
        (_search(algorithm="cmaes"), r"search\.algorithm must be one of 'nsga2'"),
        (_search(sampler="random"), r"search\.sampler must be one of 'nsga2', 'nsga3', 'tpe'"),
        (_search(engine="ray"), r"search\.engine must be one of 'optuna', 'pymoo'"),
        # [search] objectives, constraints, hardware
        (_search(objectives=["accuracy"]), "at least one hardware metric"),
        (_search(objectives="accuracy"), r"search\.objectives must be a list"),
        (_search(objectives=["accuracy", 3]), r"search\.objectives must hold non-empty strings"),
        (_search(objectives=["accuracy", "memory_bytes", "accuracy"]), "repeat a metric"),
        (_search(objectives=["accuracy", "joules"]),
         r"search\.objectives names metric 'joules' that no hardware model provides"),
        (_search(constraints=["memory_bytes < 3"]),
         r"search\.constraints: constraint 'memory_bytes < 3' is not of the form"),
        (_search(constraints=["joules <= 3"]),
         r"search\.constraints names metric 'joules'"),
        (_search(constraints="memory_bytes <= 3"),
         r"search\.constraints must be a list"),
        (_search(hardware=["memory", "fpga"]),
         r"search\.hardware names unknown model\(s\) \['fpga'\]"),
        # [search] numbers
        (_search(probes=0), r"search\.probes must be >= 1, got 0"),
        (_search(time_limit_s=-1.0), r"search\.time_limit_s must be >= 0"),
        (_search(final_max=0), r"search\.final_max must be >= 1"),
        (_search(final_min_accuracy=1.5), r"search\.final_min_accuracy must lie in \[0, 1\]"),
        (_search(final_min_accuracy=-0.1), r"search\.final_min_accuracy must lie in \[0, 1\]"),
        (_search(budget=0), r"search\.budget must be >= 1, got 0"),
        (_search(initial=0), r"search\.initial must be >= 1, got 0"),
        (_search(per_round=0), r"search\.per_round must be >= 1, got 0"),
        (_search(population=1), r"search\.population must be >= 2, got 1"),
        (_search(generations=0), r"search\.generations must be >= 1, got 0"),
        (_search(jobs=-1), r"search\.jobs must be >= 0, got -1"),
        (_search(mode="sync"), r"search\.mode must be one of"),
        (_search(final_gap=2), r"search\.final_gap must lie in \[0, 1\]"),
        # [search] screening (successive halving over cheap fidelities)
        (_search(screen="ptq"), r"search\.screen must be a list, got .ptq."),
        (_search(screen=["short"]), r"search\.screen names unknown fidelities \['short'\]"),
        (_search(screen=["tiny", "ptq"]),
         r"search\.screen must list each fidelity once, cheapest first: \['ptq', 'tiny'\]"),
        (_search(screen=["ptq", "ptq"]), r"search\.screen must list each fidelity once"),
        (_search(screen=["ptq"], screen_factor=1), r"search\.screen_factor must be >= 2"),
        ({"name": "x", "qat": {"tiny_steps": -1}}, r"qat\.tiny_steps must be"),
        # [space]
        ({"name": "x", "space": {"exclude": "fc"}}, r"space\.exclude must be a list"),
        ({"name": "x", "space": {"exclude": [1]}}, r"space\.exclude must hold non-empty strings"),
        ({"name": "x", "space": {"pin": {"fc": 17}}},
         r"space\.pin\.fc: pin\['fc'\] weight bits 17 outside 0\.\.16"),
        ({"name": "x", "space": {"pin": {"fc": [8, 0]}}},
         r"space\.pin\.fc: .*activation bits 0 outside 1\.\.16"),
        ({"name": "x", "space": {"pin": {"fc": "8"}}}, r"space\.pin\.fc: .*must be bits"),
        ({"name": "x", "space": {"pin": {"fc": {"w": 8, "x": 2}}}},
         r"space\.pin\.fc: .*accepts keys 'w' and 'a'"),
        ({"name": "x", "space": {"pin": {"fc": 8}, "exclude": ["fc"]}},
         r"space\.pin and space\.exclude both name \['fc'\]"),
        # [task], top level
        ({"name": "x", "task": {"model": "resnet8"}},
         r"task\.model must be one of 'cnn1d', 'dscnn1d' for task\.name = 'mnist1d'"),
        ({"name": "x", "task": {"val_fraction": 1.0}}, r"task\.val_fraction must lie in"),
        ({"name": "x", "seed": -1}, "seed must be >= 0"),
        ({"name": "x", "threads": -2}, "threads must be >= 0"),
        # [hw.<model>]
        ({"name": "x", "hw": {"fpga": {"clock": 1}}},
         r"\[hw\.fpga\] names no registered hardware model"),
        ({"name": "x", "hw": {"pulp": {"preset": "gap8", "cores_": 4}}},
         r"hw\.pulp\.cores_ is not a parameter of hardware model 'pulp'; its parameters "
         r"are \[.*'cores'"),
        ({"name": "x", "hw": {"pulp": 3}}, r"\[hw\.pulp\] must be a table"),
        ({"name": "x", "hw": 3}, "hw must be a table"),
        ({"name": "x", "baselines": {"dnas-channel": 3}},
         r"\[baselines\.dnas-channel\] must be a table"),
    ],
)
def test_bad_values_name_the_key(data: dict, match: str) -> None:
    with pytest.raises(SpecError, match=match):
        parse_spec(data)


def test_good_values_parse() -> None:
    s = parse_spec({
        "name": "x",
        "space": {"pin": {"conv1": 8, "fc": [8, 4], "conv2": {"w": 4}}, "exclude": ["conv3"]},
        "qat": {"steps": 0, "final_steps": 0},
        "search": {"objectives": ["accuracy", "latency_us"], "constraints": ["latency_us <= 9"],
                   "hardware": ["memory", "table"], "selection": "diverse",
                   "surrogate": "forest", "sensitivity": "fisher", "engine": "optuna",
                   "sampler": "tpe", "algorithm": "smsemoa", "population": 2,
                   "final_min_accuracy": 1, "time_limit_s": 0},
        "hw": {"table": {"path": "measured.csv"}, "pulp": {"preset": "xpulpnn", "cores": 4}},
    })
    # a measured metric is accepted because a table model is listed
    assert s.search.objectives == ("accuracy", "latency_us")
    assert s.space.exclude == ("conv3",)
    again = parse_spec(tomllib.loads(spec_to_toml(s)))
    assert again == s
