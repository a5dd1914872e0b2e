"""The analytical model against hand-derived values and properties."""

import dataclasses
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import optimizer as opt
from optimizer import perf

A100 = opt.load_system("a100-80g")


def test_block_params_megatron():
    m = opt.load_model("megatron-22B")
    h = m.hidden
    # 12 h^2 weights plus 13 h of biases and layer-norm parameters
    assert perf.block_params(m) == 12 * h * h + 13 * h


def test_block_flops_classic_expression():
    # 24 b s h^2 (1 + s / 6h) when heads * head_dim = h and feedforward = 4h
    m = opt.load_model("gpt3-175B")
    b, s, h = 4, m.seq_len, m.hidden
    assert math.isclose(perf.block_matrix_flops(m, b * s), 24 * b * s * h * h * (1 + s / (6 * h)), rel_tol=1e-12)


def test_block_flops_with_own_head_size():
    m = opt.load_model("2T")       # 160 heads of 205: attention width 32800 != hidden 32768
    assert m.attn_width != m.hidden
    b, s, h, f, A = 1, m.seq_len, m.hidden, m.feedforward, m.attn_width
    matmuls = [(b * s, h, 3 * A), (b * s, A, h), (b * s, h, f), (b * s, f, h)]
    expected = sum(2 * x * y * z for x, y, z in matmuls)
    expected += 2 * (2 * b * m.heads * s * s * m.head_dim)     # scores and scores x V
    assert math.isclose(perf.block_matrix_flops(m, b * s), expected, rel_tol=1e-12)


def test_state_bytes_per_parameter():
    # fp16 mixed precision: 2 (weights) + 4 (fp32 gradients) + 12 (master, two moments)
    m = dataclasses.replace(opt.load_model("megatron-22B"), vocab=0)      # the blocks alone
    s = opt.Strategy(tp=8, pp=1, dp=4, batch=16, datatype="fp16")
    r = opt.evaluate(m, opt.load_system(A100, hbm_gib=1e4), s)
    per_gpu = perf.model_params(m) / 8
    total = r.memory["weights"] + r.memory["gradients"] + r.memory["optimizer"]
    assert math.isclose(total, 18 * per_gpu, rel_tol=1e-12)
    sharded = opt.evaluate(m, opt.load_system(A100, hbm_gib=1e4),
                           dataclasses.replace(s, zero=1))
    assert math.isclose(sharded.memory["optimizer"], 12 * per_gpu / 4, rel_tol=1e-12)


def test_infeasible_names_rule_and_numbers():
    with pytest.raises(opt.InfeasibleStrategy) as e:
        opt.evaluate("megatron-1T", "a100-80g", {"tp": 8, "pp": 64, "dp": 1, "batch": 512})
    assert e.value.rule == "hbm_capacity" and "GiB" in str(e.value) and "80" in str(e.value)
    with pytest.raises(opt.InfeasibleStrategy) as e:
        opt.evaluate("megatron-1T", "a100-80g", {"tp": 8, "pp": 129, "dp": 1, "batch": 512})
    assert e.value.rule == "pp_at_most_blocks" and "blocks=128" in str(e.value)
    with pytest.raises(opt.InfeasibleStrategy) as e:   # tp=16 does not fit NVLink of 8
        opt.evaluate("megatron-1T", "a100-80g", {"tp": 16, "pp": 64, "dp": 1, "batch": 512, "tp_net": 0})
    assert e.value.rule == "network_size"
    with pytest.raises(opt.InfeasibleStrategy) as e:
        opt.evaluate("megatron-22B", "a100-80g", {"tp": 8, "pp": 1, "dp": 1, "batch": 4, "datatype": "fp8"})
    assert e.value.rule == "datatype"


def test_offload_moves_memory_and_costs_with_bandwidth():
    m = opt.load_model("1T")
    s = opt.Strategy(tp=8, pp=16, dp=8, batch=512, microbatch=1, interleave=1, recompute="full",
                     datatype="fp8", offload_weights=True, offload_optimizer=True, offload_activations=True)
    base = dict(tp=8, pp=16, dp=8, batch=512, recompute="full", datatype="fp8")
    roomy = opt.load_system("h100-80g-nvl8", hbm_gib=1e4)
    plain = opt.evaluate(m, roomy, base)
    slow = opt.evaluate(m, opt.load_system(roomy, offload_gib=4096, offload_gbps=5), s)
    fast = opt.evaluate(m, opt.load_system(roomy, offload_gib=4096, offload_gbps="unlimited"), s)
    assert slow.memory["hbm_total"] < plain.memory["hbm_total"]
    assert slow.memory["offload_total"] > 0 and plain.memory["offload_total"] == 0
    assert fast.breakdown["offload"] == 0 and slow.breakdown["offload"] > 0
    assert slow.offload_gbps_required > 5
    with pytest.raises(opt.InfeasibleStrategy) as e:
        opt.evaluate(m, roomy, s)
    assert e.value.rule == "offload_tier"


def test_breakdown_sums_to_time():
    r = opt.evaluate("gpt3-175B", opt.load_system("h100-80g-nvl8", hbm_gib=200, offload_gib=512, offload_gbps=50),
                     dict(tp=8, pp=4, dp=4, batch=128, microbatch=2, interleave=3, recompute="attn",
                          tp_comm="rs_ag", ag_redo=True, dp_overlap=True, offload_weights=True,
                          datatype="fp8"))
    assert math.isclose(sum(r.breakdown.values()), r.time_s, rel_tol=1e-12)


# ---- properties over random strategies

knob_sets = st.fixed_dictionaries({
    "tp": st.sampled_from([1, 2, 4, 8]), "pp": st.sampled_from([1, 2, 4, 8, 16]),
    "dp": st.sampled_from([1, 2, 4, 8]), "microbatch": st.sampled_from([1, 2]),
    "interleave": st.sampled_from([1, 2]), "recompute": st.sampled_from(["none", "attn", "full"]),
    "tp_comm": st.sampled_from(["ar", "rs_ag", "p2p_rs_ag"]),
    "tp_overlap": st.sampled_from(["none", "ring", "pipe"]),
    "ag_redo": st.booleans(), "dp_overlap": st.booleans(), "zero": st.sampled_from([0, 1, 2, 3]), "shard": st.sampled_from([0, 2]),
    "fused_activation": st.booleans(), "offload_weights": st.booleans(),
    "offload_activations": st.booleans(), "offload_optimizer": st.booleans(),
    "pp_net": st.sampled_from([0, 1]), "dp_net": st.sampled_from([0, 1]),
})


def _try(model, system, s):
    try:
        return opt.evaluate(model, system, s)
    except opt.InfeasibleStrategy as e:
        return e


@settings(max_examples=300, deadline=None)
@given(knob_sets)
def test_more_hbm_never_hurts(k):
    m = opt.load_model("gpt3-175B")
    s = opt.Strategy(batch=64 * k["dp"], datatype="fp8", **k)
    small = opt.load_system("h100-80g-nvl8-off512g-100gbps")
    big = opt.load_system(small, hbm_gib=200, offload_gib=2048)
    a, b = _try(m, small, s), _try(m, big, s)
    if isinstance(a, opt.Report):
        assert isinstance(b, opt.Report) and b.time_s == a.time_s


@settings(max_examples=300, deadline=None)
@given(knob_sets, st.floats(1.0, 8.0))
def test_more_bandwidth_never_slower(k, factor):
    m = opt.load_model("gpt3-175B")
    s = opt.Strategy(batch=64 * k["dp"], datatype="fp8", **k)
    base = opt.load_system("h100-80g-nvl8-off1t-50gbps", hbm_gib=1e4, offload_gib=1e5)
    faster = dataclasses.replace(
        base, hbm_gbps=base.hbm_gbps * factor, offload_gbps=base.offload_gbps * factor,
        networks=tuple(dataclasses.replace(n, gbps=n.gbps * factor) for n in base.networks))
    a, b = _try(m, base, s), _try(m, faster, s)
    assert type(a) is type(b)
    if isinstance(a, opt.Report):
        assert b.time_s <= a.time_s * (1 + 1e-12)


def test_offload_must_fit_on_every_stage():
    """Each GPU has its own share of the offload tier, so every stage's
    offload must fit, not only the stage with the most HBM's. 96T on
    12,288 GPUs, tp 64, cp 8, pp 24, microbatch 7, all offloaded: the first
    stage (15 blocks and the embedding, 24 microbatches in flight) holds
    the most HBM and offloads 1,400.4 GiB of activations and 353.3 GiB of
    state; a middle stage (19 blocks, 23 in flight) offloads 19 x 23 / (15
    x 24) of those activations, 1,699.9 GiB, and about 19/15 of that
    state, 447.5 GiB: 2,147.4 GiB, over the 2,048 GiB tier. (Read off the
    first stage alone, the strategy fitted, at 1,753.7 GiB, and the search
    could return it.)"""
    import numpy as np
    from optimizer import knobs as K
    s = opt.load_system("h100-80g-nvl8", offload_gib=2048, offload_gbps=100)
    strat = {"tp": 64, "pp": 24, "dp": 1, "batch": 3066, "cp": 8, "microbatch": 7, "interleave": 1, "recompute": "none",
          "tp_comm": "p2p_rs_ag", "tp_overlap": "ring", "ag_redo": False, "cp_comm": "ring", "dp_overlap": True,
          "zero": 1, "shard": 0, "fused_activation": True, "flash_attention": True, "offload_weights": True,
          "offload_activations": True, "offload_optimizer": True, "tp_net": 1, "cp_net": 0, "pp_net": 1, "dp_net": 0}
    k = {n: np.array([int(v)]) for n, v in K.canonical({**strat, "datatype": "fp8"}).items() if n in perf.KNOBS}
    m = opt.load_model("96T")
    assert [int(x[0]) for x in perf.stage_layout(m.blocks, np.array([24]))] == [15, 19, 15]
    r = perf.evaluate_arrays(m, s, "fp8", k)
    gib = 2 ** 30
    first_acts = float(r["stored_activations_bytes"][0]) / gib          # the HBM-fullest stage's
    assert first_acts == pytest.approx(1400.36, rel=1e-4)
    middle = first_acts * 19 * 23 / (15 * 24) + 353.3 * 19 / 15
    assert float(r["offload_bytes"][0]) / gib == pytest.approx(middle, rel=1e-3)
    assert float(r["offload_bytes"][0]) > 2048 * gib and not r["feasible"][0] and r["rule_offload_capacity"][0]
