"""One settings dataclass per spec section: ``[pretrain]`` is a TrainConfig, ``[qat]`` a
QATConfig; the seed is the spec's top-level one."""

from __future__ import annotations

import dataclasses
import tomllib

import numpy as np
import pytest

import evomp
from evomp._errors import SpecError
from evomp.run import parse_spec, qat_config, spec_to_toml
from evomp.tasks import QATConfig, TrainConfig


def test_spec_sections_are_the_training_settings() -> None:
    s = parse_spec({"name": "x", "seed": 3, "qat": {"steps": 7}, "pretrain": {"epochs": 2}})
    assert type(s.qat) is QATConfig and type(s.pretrain) is TrainConfig
    assert s.qat == QATConfig(steps=7, seed=3) and s.pretrain == TrainConfig(epochs=2, seed=3)
    assert qat_config(s) is s.qat
    # a new seed reaches both sections; the TOML never holds a section seed
    t = dataclasses.replace(s, seed=5)
    assert t.qat.seed == t.pretrain.seed == 5
    text = spec_to_toml(t)
    assert text.count("seed") == 1
    assert parse_spec(tomllib.loads(text)) == t


def test_section_seed_is_not_a_key() -> None:
    with pytest.raises(SpecError, match=r"unknown key\(s\) \['seed'\] in \[qat\].*top-level"):
        parse_spec({"name": "x", "qat": {"seed": 1}})
    with pytest.raises(SpecError, match=r"\['seed'\] in \[pretrain\]"):
        parse_spec({"name": "x", "pretrain": {"seed": 1}})


def test_python_api_unchanged_and_checked() -> None:
    assert evomp.QATConfig(steps=300).steps == 300 and evomp.QATConfig().final_steps == 1500
    assert evomp.TrainConfig(epochs=3, lr=1e-2, batch_size=32).epochs == 3
    q = QATConfig(steps=np.int64(4))
    assert q.steps == 4 and type(q.steps) is int
    for kw, msg in (({"steps": -1}, r"qat\.steps must be >= 0, got -1"),
                    ({"lr": 0}, r"qat\.lr must be > 0, got 0"),
                    ({"batch_size": 2.5}, r"qat\.batch_size must be an integer"),
                    ({"seed": -1}, r"seed must be >= 0")):
        with pytest.raises(SpecError, match=msg):
            QATConfig(**kw)
    for kw, msg in (({"epochs": 0}, r"pretrain\.epochs must be > 0, got 0"),
                    ({"weight_decay": -0.1}, r"pretrain\.weight_decay must be >= 0"),
                    ({"lr": float("nan")}, r"pretrain\.lr must be a finite number")):
        with pytest.raises(SpecError, match=msg):
            TrainConfig(**kw)
