"""Hand-computed values of every built-in model on the two-layer toy, and model specifics.

Toy (hwmodels.testing.toy_table): ``conv`` Conv1d 2->4, k3, in (2,10), out (4,8),
fan-in 6, 48 MACs/channel, bias; ``fc`` Linear 32->3, fan-in 32, 32 MACs/channel, no bias.

Configuration A is uniform 8/8. Configuration B: conv weights [0, 2, 2, 8] with 4-bit
input; fc weights [4, 4, 0] with 2-bit input.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import hwmodels
from hwmodels import testing

T = testing.toy_table()
A = T.uniform(8, 8)
# weight genes index (0, 2, 4, 8); activation genes index (2, 4, 8)
B = np.array([[0, 1, 1, 3, 2, 2, 0, 1, 0]], dtype=np.int8)


def cost(name: str, g: np.ndarray, **params: object) -> dict[str, float]:
    out = hwmodels.get(name, table=T, **params).cost(T, g)
    return {k: float(v[0]) for k, v in out.items()}


def test_genome_b_decodes_as_documented() -> None:
    assert T.weight_bits(B).tolist() == [[0, 2, 2, 8, 4, 4, 0]]
    assert T.act_bits(B).tolist() == [[4, 2]]


# ------------------------------------------------------------------------------ memory
def test_memory_uniform_8() -> None:
    c = cost("memory", A)
    # conv: 4x6x8 weight bits + 4 x (32 scale + 32 bias) = 448 bits; fc: 3x32x8 + 3x32 = 864
    assert c["weight_bytes"] == pytest.approx((448 + 864) / 8)
    # conv: input 20x8 + output 32x8 = 416 bits; fc: 32x8 + 3x32 (int32 logits) = 352 bits
    assert c["activation_bytes"] == pytest.approx(416 / 8)
    assert c["memory_bytes"] == pytest.approx((448 + 864 + 416) / 8)


def test_memory_mixed() -> None:
    c = cost("memory", B)
    # conv: 6 x (0+2+2+8) + 3 kept x 64 = 264 bits; fc: 32 x 8 + 2 kept x 32 = 320 bits
    assert c["weight_bytes"] == pytest.approx((264 + 320) / 8)
    # conv: 20x4 + 32 x 3/4 (kept) x 2 (fc's input bits) = 128; fc: 32x2 + 3 x 2/3 x 32 = 128
    assert c["activation_bytes"] == pytest.approx(16.0)
    assert c["memory_bytes"] == pytest.approx(73.0 + 16.0)


def test_memory_parameters() -> None:
    c = cost("memory", A, qparam_bits=0, bias_bits=0, last_output_bits=8)
    assert c["weight_bytes"] == pytest.approx((192 + 768) / 8)
    assert c["activation_bytes"] == pytest.approx(max(20 * 8 + 32 * 8, 32 * 8 + 3 * 8) / 8)
    with pytest.raises(ValueError, match="qparam_bits"):
        hwmodels.get("memory", qparam_bits=-1)


def test_pruned_channels_cost_nothing() -> None:
    w = T.weight_bits(A)
    w[0, :4] = 0  # prune all of conv
    c = hwmodels.get("memory").cost_bits(T, w, T.act_bits(A))
    assert c["weight_bytes"][0] == pytest.approx(864 / 8)


# ------------------------------------------------------------------------------ bitops
def test_bitops() -> None:
    assert cost("bitops", A)["bitops"] == 4 * 48 * 64 + 3 * 32 * 64
    assert cost("bitops", B)["bitops"] == 48 * 12 * 4 + 32 * 8 * 2


# -------------------------------------------------------------------------------- mpic
def test_mpic_uniform_8() -> None:
    c = cost("mpic", A)
    cycles = (4 * 48 + 3 * 32) / 2.1
    assert c["mpic_cycles"] == pytest.approx(cycles)
    assert c["energy_uj"] == pytest.approx(cycles / 250e6 * 5.38e-3 * 1e6)


def test_mpic_mixed_per_precision_group() -> None:
    # conv at a=4: two channels at w=2 (3.9 MACs/cycle), one at w=8 (2.1); fc a=2, w=4 (4.0)
    cycles = 2 * 48 / 3.9 + 48 / 2.1 + 2 * 32 / 4.0
    assert cost("mpic", B)["mpic_cycles"] == pytest.approx(cycles)
    # 3 precision groups in all (conv: 2 and 8 bit; fc: 4 bit)
    assert cost("mpic", B, group_overhead_cycles=10.0)["mpic_cycles"] == pytest.approx(
        cycles + 30)


def test_mpic_faster_at_low_bits() -> None:
    c = [cost("mpic", T.uniform(b, b))["mpic_cycles"] for b in (8, 4, 2)]
    assert c[0] > c[1] > c[2]


def test_mpic_rejects_bits_outside_its_table_at_construction() -> None:
    t = testing.toy_table(w_choices=(0, 3, 8))
    with pytest.raises(ValueError, match=r"\(2, 3\).*macs_per_cycle"):
        hwmodels.get("mpic", table=t)
    # extending the table fixes it
    m = hwmodels.get("mpic", table=t, macs_per_cycle={(a, 3): 3.0 for a in (2, 4, 8)})
    assert m.cost(T, A)["mpic_cycles"][0] > 0
    # decoded bits outside the table raise too, never a silent zero
    w = np.full((1, T.n_channels), 16)
    with pytest.raises(ValueError, match="no MACs-per-cycle"):
        hwmodels.get("mpic").cost_bits(T, w, T.act_bits(A))


def test_mpic_custom_rates_json_form() -> None:
    m = hwmodels.get("mpic", macs_per_cycle={"8": {"8": 4.2}})
    assert m.cost(T, A)["mpic_cycles"][0] == pytest.approx((4 * 48 + 3 * 32) / 4.2)
    with pytest.raises(ValueError, match="positive"):
        hwmodels.get("mpic", macs_per_cycle={(8, 8): 0})


# -------------------------------------------------------------------------------- pulp
def test_pulp_mixed_by_hand() -> None:
    launch = 1000.0
    # conv (a=4, unpacked in im2col: 20 elements x 2 cycles / 8 cores = 5 per sub-kernel)
    g2 = max(2 * 48 / (0.62 * 8) + 5, (2 * 6 * 2 / 8 + 20 * 4 / 8 + 32 * 2 / 4 * 2 / 8) / 8)
    g8 = max(48 / (1.95 * 8) + 5, (6 * 8 / 8 + 20 * 4 / 8 + 32 * 1 / 4 * 2 / 8) / 8)
    # fc (a=2: 32 x 2 / 8 = 8 unpack cycles), two channels at 4 bit, output int32
    f4 = max(2 * 32 / (0.62 * 8) + 8, (2 * 32 * 4 / 8 + 32 * 2 / 8 + 3 * 2 / 3 * 32 / 8) / 8)
    expect = g2 + g8 + f4 + 3 * launch
    c = cost("pulp", B)
    assert c["latency_cycles"] == pytest.approx(expect)
    assert c["latency_ms"] == pytest.approx(expect / 175e3)


def test_pulp_gap8_sub_byte_weights_slower_when_compute_bound() -> None:
    big = hwmodels.Layer("c", "conv2d", 64, 64, (3, 3), 1, 576, 576 * 256,
                         (64, 16, 16), (64, 16, 16))
    t = hwmodels.LayerTable((big,), (0, 2, 4, 8), (2, 4, 8))
    gap8, xp = hwmodels.get("pulp", table=t), hwmodels.get("pulp", table=t, preset="xpulpnn")
    lat = {b: gap8.cost(t, t.uniform(b, 8))["latency_cycles"][0] for b in (2, 4, 8)}
    assert lat[2] > 2.5 * lat[8] and lat[4] > 2.5 * lat[8]
    lat = {b: xp.cost(t, t.uniform(b, b))["latency_cycles"][0] for b in (2, 4, 8)}
    assert lat[2] < lat[4] < lat[8]


def test_pulp_activation_unpack_scales_with_input_not_macs() -> None:
    def layer(in_len: int) -> hwmodels.LayerTable:
        lay = hwmodels.Layer("c", "conv1d", 8, 8, (1,), 1, 8, 8 * 4, (8, in_len), (8, 4))
        return hwmodels.LayerTable((lay,), (8,), (2, 8))

    m = hwmodels.get("pulp", launch_cycles=0.0, l2_bytes_per_cycle=1e9)
    extra = []
    for n in (100, 1000):
        t = layer(n)
        c2, c8 = (m.cost(t, t.uniform(8, a))["latency_cycles"][0] for a in (2, 8))
        extra.append(c2 - c8)
    assert extra[1] == pytest.approx(10 * extra[0])
    assert extra[0] == pytest.approx(8 * 100 * 2.0 / 8)


def test_pulp_fragmenting_a_layer_has_a_price() -> None:
    w = T.weight_bits(A)
    one = hwmodels.get("pulp").cost_bits(T, w, T.act_bits(A))["latency_cycles"][0]
    w[0, 0] = 4  # one conv channel at 4 bit: a second sub-kernel
    two = hwmodels.get("pulp").cost_bits(T, w, T.act_bits(A))["latency_cycles"][0]
    assert two > one + 1000 - 1e-9


def test_pulp_memory_bound_term() -> None:
    slow_bus = hwmodels.get("pulp", l2_bytes_per_cycle=0.01, launch_cycles=0.0)
    c = slow_bus.cost(T, A)["latency_cycles"][0]
    moved = (4 * 6 + 20 + 32) + (3 * 32 + 32 + 3 * 4)  # bytes per layer at 8 bit, int32 out
    assert c == pytest.approx(moved / 0.01)


def test_pulp_bad_parameters() -> None:
    with pytest.raises(ValueError, match="preset"):
        hwmodels.get("pulp", preset="gap9")
    with pytest.raises(ValueError, match="cores"):
        hwmodels.get("pulp", cores=0)
    with pytest.raises(ValueError, match="unexpected keyword.*parameters are"):
        hwmodels.get("pulp", core=8)
    with pytest.raises(ValueError, match=r"\(16, 8\)"):
        hwmodels.get("pulp", table=testing.toy_table(a_choices=(8, 16)))


# ------------------------------------------------------------------------------- table
def _rows() -> list[dict]:
    return testing.synthetic_measurements(T)


def test_table_mixed_shares_and_overhead() -> None:
    # value = macs x (a + w) / 8 per full layer; conv macs 192, fc 96
    conv = 192 * (4 + 2) / 8 * 2 / 4 + 192 * (4 + 8) / 8 * 1 / 4
    fc = 96 * (2 + 4) / 8 * 2 / 3
    m = hwmodels.get("table", table=T, data=_rows(), group_overhead=5.0)
    assert m.cost(T, B)["measured_cycles"][0] == pytest.approx(conv + fc + 5.0)  # conv: 2 groups
    assert m.cost(T, A)["measured_cycles"][0] == pytest.approx(192 * 2 + 96 * 2)


def test_table_csv_json_and_geometry_keys(tmp_path) -> None:  # type: ignore[no-untyped-def]
    rows = _rows()
    geo = hwmodels.geometry_key(T.layers[0])
    assert geo == "conv1d:2x10->4x8:k3:g1"
    assert hwmodels.geometry_key(T.layers[1]) == "linear:32->3"
    for r in rows:
        if r["layer"] == "conv":
            r["layer"] = geo
    csv = tmp_path / "m.csv"
    csv.write_text("layer,a_bits,w_bits,measured_cycles\n"
                   + "\n".join(f"{r['layer']},{r['a_bits']},{r['w_bits']},{r['measured_cycles']}"
                               for r in rows))
    js = tmp_path / "m.json"
    js.write_text(json.dumps({"units": {"measured_cycles": "cycles"}, "entries": rows}))
    ref = hwmodels.get("table", table=T, data=_rows()).cost(T, B)["measured_cycles"]
    for p in (csv, js, str(csv)):
        m = hwmodels.get("table", table=T, path=p)
        assert m.cost(T, B)["measured_cycles"] == pytest.approx(ref)
    assert hwmodels.get("table", path=js).metrics == {"measured_cycles": "cycles"}
    # a row keyed by name beats the geometry row
    named = rows + [{"layer": "conv", "a_bits": 8, "w_bits": 8, "measured_cycles": 0.0}]
    m = hwmodels.get("table", table=T, data=named)
    assert m.cost(T, A)["measured_cycles"][0] == pytest.approx(96 * 2)


def test_table_lists_every_missing_entry_in_one_error() -> None:
    rows = [r for r in _rows() if not (r["w_bits"] == 2 or (r["layer"] == "fc"
                                                            and r["a_bits"] == 8))]
    with pytest.raises(ValueError) as e:
        hwmodels.get("table", table=T, data=rows)
    msg = str(e.value)
    # conv: 3 a-bits at w=2; fc: 3 a-bits at w=2 and w=4, w=8 at a=8 -> 3 + 5 entries
    assert "lacks 8 entries" in msg
    assert "conv (conv1d:2x10->4x8:k3:g1): a_bits=2, w_bits=2" in msg
    assert "fc (linear:32->3): a_bits=8, w_bits=8" in msg


@pytest.mark.parametrize(
    "data, match",
    [
        ([], "no rows"),
        ([{"layer": "conv", "a_bits": 8, "w_bits": 8}], "no metric column"),
        ([{"layer": "conv", "a_bits": 8, "x": 1}], "lacks"),
        ([{"layer": "conv", "a_bits": "eight", "w_bits": 8, "x": 1}], "integers"),
        ([{"layer": "conv", "a_bits": 8, "w_bits": 0, "x": 1}], "pruned"),
        ([{"layer": "conv", "a_bits": 8, "w_bits": 8, "x": -1}], ">= 0"),
        ([{"layer": "conv", "a_bits": 8, "w_bits": 8, "x": "fast"}], "not a number"),
        ([{"layer": "c", "a_bits": 8, "w_bits": 8, "x": 1}] * 2, "repeats"),
    ],
)
def test_table_bad_data(data: list, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        hwmodels.get("table", data=data)


def test_table_bad_source(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="exactly one"):
        hwmodels.get("table")
    with pytest.raises(ValueError, match="does not exist"):
        hwmodels.get("table", path=tmp_path / "nope.csv")
    (tmp_path / "m.txt").write_text("x")
    with pytest.raises(ValueError, match=".csv or .json"):
        hwmodels.get("table", path=tmp_path / "m.txt")


# ---------------------------------------------------------------------------- callable
def test_callable_json_form_and_factory() -> None:
    seen = []

    def fn(cfg: dict) -> float:
        seen.append(cfg)
        return sum(sum(v) for v in cfg["weights"].values())

    m = hwmodels.get("callable", fn=fn, metrics=["device_ms"])
    assert m.cost(T, B)["device_ms"].tolist() == [20.0]
    assert seen[0] == {"weights": {"conv": [0, 2, 2, 8], "fc": [4, 4, 0]},
                       "activations": {"conv": 4, "fc": 2}}
    assert not m.vectorized

    class Cfg:
        def __init__(self, d: dict) -> None:
            self.d = d

    m = hwmodels.get("callable", fn=lambda c: {"a_ms": c.d["activations"]["fc"]},
                     metrics={"a_ms": "ms"}, config_factory=Cfg)
    assert m.cost(T, np.vstack([A, B]))["a_ms"].tolist() == [8.0, 2.0]


def test_callable_errors() -> None:
    with pytest.raises(ValueError, match="fn="):
        hwmodels.get("callable")
    with pytest.raises(ValueError, match="monotone names"):
        hwmodels.get("callable", fn=len, metrics=["x"], monotone=["y"])
    m = hwmodels.get("callable", fn=lambda c: {"y": 1}, metrics=["x"])
    with pytest.raises(ValueError, match="no value for metric 'x'"):
        m.cost(T, A)
    m = hwmodels.get("callable", fn=lambda c: "slow", metrics=["x"])
    with pytest.raises(ValueError, match="return a dict"):
        m.cost(T, A)


# ---------------------------------------------------------------------------- general
def test_breakdown_rows() -> None:
    rows = hwmodels.get("pulp").breakdown(T, B[0])
    assert [r["layer"] for r in rows] == ["conv", "fc"]
    assert rows[0]["w_bits"] == "0x1 2x2 8x1" and rows[0]["groups"] == 2
    assert rows[1]["a_bits"] == 2 and rows[1]["launch_cycles"] == 1000.0
    with pytest.raises(ValueError, match="one genome"):
        hwmodels.get("pulp").breakdown(T, np.vstack([A, B]))


def test_bad_genomes_are_reported_clearly() -> None:
    m = hwmodels.get("memory")
    with pytest.raises(ValueError, match="outside 0..3"):
        m.cost(T, np.full((1, T.n_genes), 7))
    with pytest.raises(ValueError, match="genome length"):
        m.cost(T, np.zeros((1, 3), dtype=np.int8))
    with pytest.raises(ValueError, match="weight bits must lie"):
        m.cost_bits(T, np.full((1, T.n_channels), 17), T.act_bits(A))


def test_evaluate_decodes_once_and_refuses_clashes() -> None:
    ms = [hwmodels.get(n) for n in ("memory", "bitops", "mpic", "pulp")]
    out = hwmodels.evaluate(ms, T, np.vstack([A, B]))
    assert set(out) == {"memory_bytes", "weight_bytes", "activation_bytes", "bitops",
                        "mpic_cycles", "energy_uj", "latency_cycles", "latency_ms"}
    assert out["bitops"].tolist() == [18432.0, 2816.0]
    with pytest.raises(ValueError, match="both"):
        hwmodels.evaluate([hwmodels.get("bitops"), hwmodels.get("bitops")], T, A)
