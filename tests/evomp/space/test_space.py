from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from evomp import BitConfig, EvompError, SearchSpace


def test_layer_table_records(tiny_space) -> None:
    t = tiny_space.table
    assert [x.name for x in t.layers] == ["conv", "dw", "fc"]
    conv, dw, fc = t.layers
    assert (conv.fan_in, conv.macs_per_channel, conv.in_shape, conv.out_shape) == (
        6, 48, (2, 8), (6, 8))
    assert dw.groups == 6 and dw.fan_in == 3 and dw.is_depthwise
    assert not dw.a_signed and conv.a_signed  # the dw input follows a ReLU
    assert fc.kind == "linear" and fc.fan_in == 48 and fc.macs == 48 * 4
    assert t.n_genes == 6 + 6 + 4 + 3
    json.loads(t.to_json())


def test_layer_granularity_and_pins(tiny_model, tiny_input) -> None:
    s = SearchSpace.from_model(tiny_model, tiny_input, granularity="layer", pin={"fc": 8})
    assert s.n_genes == 2 + 2  # conv, dw weights; conv, dw activations
    wb, ab = s.decode(s.uniform(2, 4))
    assert (wb[0, -4:] == 8).all() and ab[0, -1] == 8
    s2 = SearchSpace.from_model(tiny_model, tiny_input, pin={"conv": [4, 8]}, exclude=["fc"])
    assert s2.layer_names == ["conv", "dw"]
    assert s2.layers[0].w_pinned == 4 and s2.layers[0].a_pinned == 8
    assert s.with_granularity("channel").n_genes == 6 + 6 + 2


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), gran=st.sampled_from(["channel", "layer"]),
       pin_fc=st.booleans())
def test_genome_config_roundtrip(seed: int, gran: str, pin_fc: bool) -> None:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv1d(2, 6, 3, padding=1), nn.ReLU(),
                      nn.Conv1d(6, 6, 3, padding=1, groups=6), nn.Flatten(), nn.Linear(48, 4))
    x = torch.randn(4, 2, 8)
    s = SearchSpace.from_model(m, x, granularity=gran, pin={"4": 8} if pin_fc else None)
    g = s.random(7, seed)
    cfgs = s.to_configs(g)
    back = s.from_configs(cfgs)
    np.testing.assert_array_equal(back, g)
    for c in cfgs:
        assert BitConfig.from_json(c.to_json()) == c
    wb, ab = s.decode(g)
    assert s.table.encode(wb, ab).tolist() == g.tolist()


def test_to_configs_vectorized_matches_rowwise(tiny_space, rng) -> None:
    g = tiny_space.random(5, rng)
    batch = tiny_space.to_configs(g)
    assert batch == [tiny_space.to_config(row) for row in g]
    assert batch[0].weights["conv"] == tuple(int(b) for b in tiny_space.decode(g[:1])[0][0, :6])


def test_errors_name_the_fix(tiny_model, tiny_input, tiny_space) -> None:
    with pytest.raises(EvompError, match="no quantizable layer"):
        SearchSpace.from_model(nn.Sequential(nn.ReLU()), tiny_input)
    with pytest.raises(EvompError, match=r"pin names \['nope'\] not in the model"):
        SearchSpace.from_model(tiny_model, tiny_input, pin={"nope": 8})
    with pytest.raises(EvompError, match=r"exclude names \['bn'\] that are not"):
        SearchSpace.from_model(tiny_model, tiny_input, exclude=["bn"])
    with pytest.raises(EvompError, match="w_choices is empty"):
        SearchSpace.from_model(tiny_model, tiny_input, w_bits=())
    with pytest.raises(EvompError, match="strictly increasing"):
        SearchSpace.from_model(tiny_model, tiny_input, a_bits=(8, 4))
    with pytest.raises(EvompError, match="a_choices must lie in 1..16"):
        SearchSpace.from_model(tiny_model, tiny_input, a_bits=(0, 4))
    with pytest.raises(EvompError, match="granularity"):
        SearchSpace.from_model(tiny_model, tiny_input, granularity="tensor")
    with pytest.raises(EvompError, match="genome length 3 does not match"):
        tiny_space.check(np.zeros((1, 3), dtype=np.int8))
    g = tiny_space.uniform(8, 8)
    g[0, 2] = 9
    with pytest.raises(EvompError, match="gene 2 of genome 0 is 9, outside 0..3"):
        tiny_space.check(g)
    cfg = tiny_space.to_config(tiny_space.uniform(8, 8))
    bad = BitConfig(weights={**cfg.weights, "conv": (8,) * 5}, activations=cfg.activations)
    with pytest.raises(EvompError, match="weights\\['conv'\\] has 5 channels"):
        tiny_space.from_configs([bad])
    missing = BitConfig(weights={"conv": (8,) * 6}, activations=cfg.activations)
    with pytest.raises(EvompError, match="lacks layers"):
        tiny_space.from_configs([missing])
    off_choice = BitConfig(weights={**cfg.weights, "conv": (3,) * 6}, activations=cfg.activations)
    with pytest.raises(EvompError, match="weight bit-width 3 is not one of the choices"):
        tiny_space.from_configs([off_choice])
    with pytest.raises(ValueError, match="outside 0..16"):
        BitConfig(weights={"conv": (17,)}, activations={})
    with pytest.raises(EvompError, match="not in the choices"):
        tiny_space.uniform(3, 8)


def test_reused_module_is_rejected(tiny_input) -> None:
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c = nn.Conv1d(2, 2, 1)

        def forward(self, x):  # type: ignore[no-untyped-def]
            return self.c(self.c(x))

    with pytest.raises(EvompError, match="called more than once"):
        SearchSpace.from_model(Twice(), tiny_input)


def test_space_dict_roundtrip(tiny_space) -> None:
    s2 = SearchSpace.from_dict(json.loads(json.dumps(tiny_space.to_dict())))
    g = tiny_space.random(3, 0)
    for a, b in zip(tiny_space.decode(g), s2.decode(g)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"w_bits": (0, 2.5, 8)},
         r"w_bits must hold integer bit-widths, got non-integers \[2\.5\]"),
        ({"a_bits": (2, 4.5)}, r"a_bits must hold integer bit-widths, got non-integers \[4\.5\]"),
        ({"a_bits": (2, True)}, "a_bits must hold integer bit-widths"),
        ({"a_bits": (2, "8")}, "a_bits must hold integer bit-widths"),
        ({"w_bits": 8}, "w_bits must be a list of integer bit-widths"),
    ],
)
def test_non_integer_bit_choices_are_rejected(tiny_model, tiny_input, kw, match) -> None:
    with pytest.raises(EvompError, match=match):
        SearchSpace.from_model(tiny_model, tiny_input, **kw)


def test_integral_bit_choices_are_accepted(tiny_model, tiny_input) -> None:
    s = SearchSpace.from_model(tiny_model, tiny_input, w_bits=np.array([0, 4, 8]),
                               a_bits=(4.0, 8))
    assert s.w_bits == (0, 4, 8) and s.a_bits == (4, 8)
    assert all(type(b) is int for b in s.w_bits + s.a_bits)


def test_unknown_excluded_and_bad_pins(tiny_model, tiny_input) -> None:
    with pytest.raises(EvompError, match=r"exclude names \['nope'\] not in the model; "
                                         r"quantizable layers are \['conv', 'dw', 'fc'\]"):
        SearchSpace.from_model(tiny_model, tiny_input, exclude=["nope"])
    with pytest.raises(EvompError, match="exclude must be a list of module names"):
        SearchSpace.from_model(tiny_model, tiny_input, exclude="fc")
    with pytest.raises(EvompError, match=r"pin\['fc'\] must hold integer bits"):
        SearchSpace.from_model(tiny_model, tiny_input, pin={"fc": [8, 2.5]})
    with pytest.raises(EvompError, match=r"pin\['fc'\] must be bits"):
        SearchSpace.from_model(tiny_model, tiny_input, pin={"fc": "88"})
    with pytest.raises(EvompError, match=r"pin\['fc'\] activation bits 0 outside 1..16"):
        SearchSpace.from_model(tiny_model, tiny_input, pin={"fc": {"a": 0}})


@pytest.mark.parametrize("weights, activations, match", [
    ({"conv": "8888"}, {}, r"weights\['conv'\] must be a sequence of integer bit-widths, one "
                           r"per output channel \(e\.g\. \[8, 8, 4\]\), got '8888'"),
    ({"conv": 8}, {}, r"weights\['conv'\] must be a sequence .* got 8"),
    ({"conv": (8, 7.9)}, {}, r"weights\['conv'\] holds 7\.9 \(float\): bit-widths are integers"),
    ({"conv": (8, True)}, {}, r"weights\['conv'\] holds True \(bool\)"),
    ({}, {"conv": 8.0}, r"activations\['conv'\] holds 8\.0 \(float\)"),
    ({}, {"conv": "8"}, r"activations\['conv'\] holds '8' \(str\)"),
    ({}, {"conv": np.bool_(True)}, r"activations\['conv'\] holds np\.True_ \(bool\)"),
])
def test_bitconfig_takes_integer_bits_only(weights: dict, activations: dict, match: str) -> None:
    with pytest.raises(EvompError, match=match):
        BitConfig(weights=weights, activations=activations)
    # the JSON form is checked the same way
    with pytest.raises(EvompError, match=match):
        BitConfig.from_dict({"weights": weights, "activations": activations})


def test_bitconfig_accepts_numpy_integers() -> None:
    c = BitConfig(weights={"conv": np.array([8, 4], dtype=np.int8)},
                  activations={"conv": np.int64(8)})
    assert c.weights["conv"] == (8, 4) and type(c.activations["conv"]) is int
