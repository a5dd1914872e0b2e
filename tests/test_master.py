"""The CP-SAT model is a relaxation of the exact one: every strategy the
exact model accepts, the model accepts too, with a bound no larger than its
exact time per sample. Random strategies from the space of random problems
(the relaxation's whole claim; the search's exactness rests on it)."""

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ortools.sat.python import cp_model

from optimizer import perf
from optimizer.master import LOG_UNITS, Master, work_floor
from optimizer.space import enumerate_all, knob_rows_to_strategy, make_problem
from optimizer.spec import load_model, load_system

from conftest import tiered_system

SLACK = 8 / LOG_UNITS           # the model's integer rounding, in log units


def _tiny(hidden, heads, blocks, seq, vocab, gated, kv):
    return load_model({"name": "t", "hidden": hidden, "feedforward": 4 * hidden, "seq_len": seq, "heads": heads,
                       "head_dim": hidden // heads, "blocks": blocks, "vocab": vocab, "gated_mlp": gated,
                       "kv_heads": kv})


def check_problem(p, rng, n=25):
    """Up to n random feasible strategies of p's whole space: each accepted
    by the model with a bound at most its exact time per sample. The space
    is evaluated chunk by chunk (enumerate_all's), only feasible rows kept."""
    master = Master(p)
    kept, exact = [], []
    for r in enumerate_all(p):
        res = perf.evaluate_arrays(p.model, p.system, p.datatype, r)
        ok = res["feasible"]
        kept.append({k: np.asarray(v)[ok] for k, v in r.items()})
        exact.append(res["time_s"][ok] / r["batch"][ok])
    if not kept:
        return 0
    knobs = {k: np.concatenate([c[k] for c in kept]) for k in kept[0]}
    exact = np.concatenate(exact)
    # the work floor, on any GPU count: below every feasible strategy's time
    if len(exact):
        assert work_floor(p) / p.gpus <= exact.min() * (1 + 1e-9), (work_floor(p) / p.gpus, exact.min())
    checked = 0
    for i in rng.choice(len(exact), size=min(n, len(exact)), replace=False):
        s = knob_rows_to_strategy(knobs, i, p.datatype)
        bound = master.bound_of(s)
        assert bound is not None, f"the model rejects a feasible strategy: {s}"
        assert math.log(bound) <= math.log(float(exact[i])) + SLACK, (s, bound, exact[i])
        checked += 1
    return checked


@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
@given(hidden=st.sampled_from([512, 1024, 2048]), heads=st.sampled_from([8, 16]), blocks=st.integers(2, 9),
       seq=st.sampled_from([512, 2048]), vocab=st.sampled_from([0, 32000]), gated=st.booleans(),
       kv=st.sampled_from([2, 8]), gpus=st.sampled_from([4, 8, 12, 16]), max_batch=st.sampled_from([4, 8, 12]),
       hbm=st.sampled_from([1.0, 2.0, 4.0]), tiers=st.integers(1, 4), offload=st.booleans(),
       cp=st.sampled_from([[1], [1, 2]]), seed=st.integers(0, 2 ** 16))
def test_model_is_a_relaxation(hidden, heads, blocks, seq, vocab, gated, kv, gpus, max_batch, hbm, tiers, offload,
                               cp, seed):
    """cp at most 2 here (the spaces stay small enough to enumerate); cp up
    to 4 on both CP tiers: test_relaxation_with_context_parallelism."""
    m = _tiny(hidden, heads, blocks, seq, vocab, gated, kv)
    if tiers == 1:
        s = load_system("h100-80g-nvl8-off256g-50gbps" if offload else "h100-80g-nvl8", hbm_gib=hbm)
    else:
        s = tiered_system(tiers, hbm_gib=hbm, first=2, growth=2, **({"offload_gib": 16, "offload_gbps": 20}
                                                                     if offload else {}))
    p = make_problem(m, s, gpus, max_batch, "bf16", {"cp": cp})
    check_problem(p, np.random.default_rng(seed))


def test_relaxation_on_a_large_model():
    """1T-class blocks on 64 GPUs with the batch limit small enough to enumerate."""
    p = make_problem(load_model("megatron-22B"), load_system("h100-80g-nvl8"), 16, 8, "bf16")
    assert check_problem(p, np.random.default_rng(0), n=80) > 40


def test_relaxation_with_context_parallelism():
    """Only strategies with cp > 1 (ring and all-gather, on the CP tier of
    a 3-tier system, ZeRO over dp x cp): the model accepts each and its
    bound stays below the exact time."""
    m = _tiny(1024, 16, 4, 2048, 0, True, 8)
    s = tiered_system(3, hbm_gib=2.0, first=2, growth=4)
    p = make_problem(m, s, 8, 8, "bf16", {"cp": [2, 4], "flash_attention": True})
    assert check_problem(p, np.random.default_rng(1), n=40) >= 20


def test_relaxation_beyond_the_microbatch_table():
    """Microbatches past MB_TABLE share one row per block choice: the block
    at the peak rate over latency-free links, per sequence at the batch
    limit. With TP and CP groups on slow tiers (communication above the
    compute) and offloading (its transfers bound a block too), the model
    still accepts every strategy, below its exact time."""
    m = _tiny(1024, 16, 4, 512, 0, True, 8)
    s = tiered_system(3, hbm_gib=4.0, first=2, growth=2, offload_gib=64, offload_gbps=20)
    p = make_problem(m, s, 8, 128, "bf16", {"microbatch": [33, 40, 64], "cp": [1, 2], "interleave": 1,
                                            "zero": [1, 3]})
    assert check_problem(p, np.random.default_rng(2), n=60) >= 30


def test_relaxation_with_an_unlimited_offload_link():
    """An unlimited offload link moves the offloaded bytes for free: the
    transfer floors must not apply (a floor of 0 / inf was once taken as
    one second per block, and plan returned a batch-14 strategy as
    optimal over the batch-16 one, 260.7 against 275.4 samples/s)."""
    m = _tiny(4096, 32, 16, 512, 0, False, 32)
    s = load_system("h100-80g-nvl8-off256g-50gbps", hbm_gib=3, offload_gbps=math.inf)
    p = make_problem(m, s, 16, 16, "fp8", {"offload_activations": True, "cp": 1})
    assert check_problem(p, np.random.default_rng(3), n=40) >= 20


def test_the_extras_join_the_stage_bound():
    """The embedding and the output layer take about a tenth of llama3-8B's
    time (a 128,256-token vocabulary against 32 blocks). With one stage, no
    TP or CP and nothing to communicate but the hidden DP reduction, the
    bound is the blocks plus the extras: within 1% of the exact time (it
    was 10% below when the bound left the extras out)."""
    from optimizer import evaluate
    from optimizer.spec import Strategy
    p = make_problem(load_model("llama3-8B"), load_system("h100-80g-nvl8"), 8, 3072, "fp8")
    st = Strategy(tp=1, cp=1, pp=1, dp=8, batch=3072, microbatch=1, zero=2, dp_overlap=True, flash_attention=True,
                  fused_activation=True, datatype="fp8")
    exact = evaluate("llama3-8B", "h100-80g-nvl8", st)
    per_sample = exact.time_s / st.batch
    bound = Master(p).bound_of(st)
    assert bound <= per_sample * (1 + 1e-9)
    assert bound >= 0.99 * per_sample, (bound, per_sample)


def test_relaxation_with_zero3_shard_groups():
    """ZeRO-3 alone, over sharding groups from 2 to the whole dp x cp, on a
    3-tier system whose tiers take a processor share and slow by 30x a
    tier, with short sequences (the collectives outlast the compute, so a
    floor that took a group of G as one of 2 would cut): the collectives move
    (G - 1) / G of the bytes over the group G and the compute loses the
    share while they run; the model accepts each strategy below its time."""
    m = _tiny(4096, 32, 4, 128, 0, True, 8)      # short sequences: the collectives outlast the compute
    s = tiered_system(3, hbm_gib=4.0, first=2, growth=4, falloff=30)
    p = make_problem(m, s, 16, 16, "bf16", {"zero": 3, "cp": [1, 2]})
    assert check_problem(p, np.random.default_rng(4), n=40) >= 20


def test_zero3_bound_follows_the_sharding_group():
    """1T on 8,920 GPUs with one stage: the weights fit only sharded over
    hundreds of GPUs (shard 223 of dp 1,115), so ZeRO-3's gathers move
    nearly all their bytes. The bound was 37% below the exact time when the
    collectives were floored at a group of 2 while memory was sharded over
    the whole dp; with the group a variable of both, within 5%."""
    from optimizer import evaluate
    from optimizer.spec import Strategy
    s = load_system("h100-80g-nvl8")
    p = make_problem(load_model("1T"), s, 8920, 3072, "fp8")
    st = Strategy(tp=8, cp=1, pp=1, dp=1115, batch=2230, microbatch=2, recompute="full", tp_comm="p2p_rs_ag",
                  tp_overlap="ring", dp_overlap=True, zero=3, shard=223, flash_attention=True, tp_net=0, dp_net=1,
                  datatype="fp8")
    per_sample = evaluate("1T", s, st).time_s / st.batch
    bound = Master(p).bound_of(st)
    assert bound <= per_sample * (1 + 1e-9)
    assert bound >= 0.95 * per_sample, (bound, per_sample)


def test_block_tables_shared_across_windows_are_the_same():
    """The fewest-GPUs windows share each (tp, cp) pair's block tables
    (block_cache): a model built after another window filled the cache
    (with pairs of its own and some in common) equals one built alone:
    the same CP-SAT model, byte for byte, and the same first solve."""
    m = _tiny(1024, 16, 8, 512, 32000, True, 8)
    s = tiered_system(2, hbm_gib=4.0, first=4, growth=4)
    p = make_problem(m, s, 24, 24, "bf16", {"cp": [1, 2]})
    cache = {}
    Master(p, counts=[4, 6, 8], block_cache=cache)
    shared, alone = Master(p, counts=[8, 12, 16, 24], block_cache=cache), Master(p, counts=[8, 12, 16, 24])
    assert len(cache) > 1 and shared.stats() == alone.stats()
    assert str(shared.model.Proto()) == str(alone.model.Proto())
    a, b = shared.next(None), alone.next(None)
    assert a[0] == b[0] and a[1] == pytest.approx(b[1], rel=1e-12)


def _long_reduction_system(share):
    """Two tiers, the outer slow and taking `share` of the processor while
    its collectives run (what a hidden DP reduction costs the backward)."""
    import optimizer as opt
    nets = [{"name": "fast", "size": 2, "gbps": 450.0, "efficiency": 0.9, "latency_us": 5.0, "must_fill": False,
             "processor_share": 0.1},
            {"name": "slow", "size": 1024, "gbps": 200.0, "efficiency": 0.7, "latency_us": 20.0,
             "processor_share": share}]
    return opt.load_system({
        "name": "slow-dp", "matrix_tflops": {"bf16": 989}, "vector_tflops": {"bf16": 134},
        "matrix_efficiency": [[0.03, 0.01], [3.0, 0.14], [300, 0.74], [30000, 0.78]],
        "vector_efficiency": [[0.001, 0.1], [0.1, 0.5], [10, 0.9]],
        "hbm": {"gib": 32.0, "gbps": 3352, "efficiency": [[0.1, 0.3], [10, 0.8], [1000, 0.95]]},
        "networks": nets})


@pytest.mark.parametrize("share", [0.0, 0.3, 0.9])
def test_relaxation_with_a_long_dp_reduction(share):
    """Wide blocks on one stage over a slow DP tier, where the gradient
    reduction takes about as long as the backward it hides behind, and
    `share` of the processor while it runs. ZeRO 0-2, the reduction hidden
    or not, one to many microbatches per replica: the floors that add u x
    the reduction to every microbatch's time, and the reduction less one
    microbatch for any n >= 2, stay below each exact time (a floor that
    added the whole reduction where it hides, or a microbatch share four
    times too small, fails here)."""
    m = _tiny(4096, 32, 4, 2048, 0, False, 32)
    p = make_problem(m, _long_reduction_system(share), 16, 64, "bf16",
                     {"cp": 1, "tp": 1, "pp": 1, "zero": [0, 1, 2], "recompute": "none"})
    assert check_problem(p, np.random.default_rng(5), n=60) >= 30


def test_the_dp_reduction_joins_the_bound():
    """Where the hidden DP reduction is the gap: the optimum of 1T on 12,288
    GPUs in NVLink domains of 16 with 1 TiB of offload (one stage, one
    microbatch per replica; the reduction hides behind the whole backward
    but takes the InfiniBand tier's 12.6% of the processor: 0.83 s of
    13.10 s), and that of 1T on 16,384 (48 microbatches per replica, the
    reduction outlasting the last one's backward: 0.70 s of 11.96 s). The
    bound was 6.8% and 5.6% below the exact times before the floors of
    _dp_floor's `tighten`; now within 1% and 3%. And a family near the
    optimum of 26T on 4,096 GPUs with 2 TiB of offload at 100 GB/s (64
    microbatches; the reduction, 14 s of 1,597 s exposed, outlasts the last
    backward's kernels, but not a whole microbatch of TP-bound blocks):
    2.3% below with the floor that let it hide behind a whole microbatch,
    1.5% now that only the backward kernels count."""
    from optimizer import evaluate
    from optimizer.spec import Strategy
    cases = [
        (load_system("h100-80g-nvl8", nvlink_size=16, offload_gib=1024, offload_gbps=100), 12288, {"zero": [0, 1]},
         Strategy(tp=16, cp=1, pp=1, dp=768, batch=3072, microbatch=4, tp_comm="p2p_rs_ag", tp_overlap="ring",
                  ag_redo=True, dp_overlap=True, zero=1, fused_activation=True, flash_attention=True,
                  offload_weights=True, offload_activations=True, tp_net=0, dp_net=1, datatype="fp8"), 0.99),
        (load_system("h100-80g-nvl8"), 16384, None,
         Strategy(tp=8, cp=2, pp=16, dp=64, batch=3072, microbatch=1, interleave=8, tp_comm="p2p_rs_ag",
                  tp_overlap="ring", ag_redo=True, dp_overlap=True, zero=2, fused_activation=True,
                  flash_attention=True, tp_net=0, cp_net=1, pp_net=1, dp_net=1, datatype="fp8"), 0.97),
        (load_system("h100-80g-nvl8", offload_gib=2048, offload_gbps=100), 4096, {"zero": [0, 1]},
         Strategy(tp=16, cp=2, pp=8, dp=16, batch=3072, microbatch=3, interleave=40, tp_comm="p2p_rs_ag",
                  tp_overlap="ring", ag_redo=True, dp_overlap=True, zero=1, fused_activation=True,
                  flash_attention=True, offload_weights=True, offload_activations=True, offload_optimizer=True,
                  tp_net=1, cp_net=0, pp_net=1, dp_net=1, datatype="fp8"), 0.982, "26T"),
    ]
    for s, gpus, pin, strat, within, *model in cases:
        model = model[0] if model else "1T"
        per_sample = evaluate(model, s, strat).time_s / strat.batch
        bound = Master(make_problem(load_model(model), s, gpus, 3072, "fp8", pin)).bound_of(strat)
        assert bound <= per_sample * (1 + 1e-9)
        assert bound >= within * per_sample, (gpus, bound, per_sample)


def test_cp_s_tier_joins_the_block_time():
    """The block table's rows hold cp's tier as a column of what it adds:
    with cp's tier taken at its best, the model put cp = 2 on InfiniBand at
    no cost and the pipeline's sends on NVLink, where the exact model has
    cp on NVLink and pp on InfiniBand (26T on 4,096 GPUs with 2 TiB of
    offload, a family near the optimum): the bound was 1.5% below the
    exact time, now 0.4%."""
    from optimizer import evaluate
    from optimizer.spec import Strategy
    s = load_system("h100-80g-nvl8", offload_gib=2048, offload_gbps=100)
    strat = Strategy(tp=16, cp=2, pp=8, dp=16, batch=3072, microbatch=3, interleave=40, tp_comm="p2p_rs_ag",
                     tp_overlap="ring", ag_redo=True, dp_overlap=True, zero=1, fused_activation=True,
                     flash_attention=True, offload_weights=True, offload_activations=True, offload_optimizer=True,
                     tp_net=1, cp_net=0, pp_net=1, dp_net=1, datatype="fp8")
    per_sample = evaluate("26T", s, strat).time_s / strat.batch
    bound = Master(make_problem(load_model("26T"), s, 4096, 3072, "fp8", {"zero": [0, 1]})).bound_of(strat)
    assert per_sample * 0.994 <= bound <= per_sample * (1 + 1e-9), bound / per_sample


def test_block_tables_shared_across_problems():
    """plan's problems share block tables (block_cache_for) when the GPU
    count, HBM and offload capacities differ and nothing the tables read
    does: a model built after two others filled the cache equals one built
    alone, byte for byte; a different batch limit (the peak-rate row's
    microbatch) or pin gets tables of its own."""
    from optimizer.master import block_cache_for
    m = _tiny(1024, 16, 8, 512, 32000, True, 8)
    s = tiered_system(2, hbm_gib=4.0, first=4, growth=4)
    bigger = tiered_system(2, hbm_gib=8.0, first=4, growth=4, offload_gib=64, offload_gbps=20)
    p = make_problem(m, s, 16, 24, "bf16", {"cp": [1, 2]})
    q, r = make_problem(m, bigger, 24, 24, "bf16", {"cp": [1, 2]}), make_problem(m, s, 12, 24, "bf16", {"cp": [1, 2]})
    Master(p, block_cache=block_cache_for(p))
    Master(r, block_cache=block_cache_for(r))
    assert block_cache_for(q) is block_cache_for(p) is block_cache_for(r)
    shared, alone = Master(q, block_cache=block_cache_for(q)), Master(q)
    assert str(shared.model.Proto()) == str(alone.model.Proto())
    assert block_cache_for(make_problem(m, s, 16, 32, "bf16", {"cp": [1, 2]})) is not block_cache_for(p)
    assert block_cache_for(make_problem(m, s, 16, 24, "bf16", {"cp": 1})) is not block_cache_for(p)
    # a system's capacities given as overrides (a sweep's points: load_system
    # records them in the name and `overrides`) share too
    small, large = (load_system("h100-80g-nvl8", hbm_gib=h, offload_gib=o, offload_gbps=g)
                    for h, o, g in ((80, 256, 100), (120, 2048, 50)))
    assert small.overrides != large.overrides
    assert (block_cache_for(make_problem(m, small, 16, 24, "bf16", {"cp": [1, 2]}))
            is block_cache_for(make_problem(m, large, 32, 24, "bf16", {"cp": [1, 2]})))


def _offload_case(gbps, pins, seq=1024):
    m = _tiny(2048, 16, 8, seq, 0, False, 16)
    s = load_system("h100-80g-nvl8-off256g-50gbps", hbm_gib=80, offload_gbps=gbps)
    return m, s, make_problem(m, s, 8, 16, "fp8", {"cp": 1, **pins})


@pytest.mark.parametrize("gbps, seq", [(2, 1024), (50, 4096)])
def test_relaxation_over_a_slow_offload_link(gbps, seq):
    """Offloaded weights and activations over links where their transfers
    outlast the forward or the backward they hide behind: at 2 GB/s every
    strategy's do; at 50 GB/s on sequences of 4,096, 29% outlast the
    forward and 10% only the backward (where the floor of the backward's
    bytes plus the least forward binds). The offload floors
    (Master._offload_floor) stay below every exact time."""
    _, _, p = _offload_case(gbps, {"tp": [1, 2], "pp": [1, 2], "recompute": ["none", "full"]}, seq)
    assert check_problem(p, np.random.default_rng(7), n=50) >= 30


@pytest.mark.parametrize("pins", [{"offload_weights": True}, {"offload_activations": True},
                                  {"offload_weights": True, "offload_activations": True}],
                         ids=["weights", "activations", "both"])
def test_the_offload_transfers_join_the_bound(pins):
    """Where the transfers are the gap: at 5 GB/s the optimum's offload
    overhead is 21-55% of its time. The transfers hide behind the forward
    and the backward apart, so a block takes at least the backward's bytes
    plus its forward (and the forward's bytes plus its backward); one floor
    per flag, the bytes of both directions summed, left the bound 15-16%
    below the exact times with activations offloaded; now within 3%."""
    from optimizer import plan
    m, s, p = _offload_case(5, pins)
    best = plan(m, s, 8, max_batch=16, datatype="fp8", pin={"cp": 1, **pins}).best
    assert best.breakdown["offload"] > 0.2 * best.time_s
    per_sample = best.time_s / best.strategy.batch
    bound = Master(p).bound_of(best.strategy)
    assert per_sample * 0.97 <= bound <= per_sample * (1 + 1e-9)


def test_the_work_floor_counts_the_whole_pass():
    """1T on 4,096 GPUs: the work floor (every block's forward and backward
    at the peak rate, over the GPUs) is 66% of the optimum's time per
    sample, and below it. Read off the backward's table alone (2/3 of the
    pass) it was 44%, and the fewest-GPUs search ruled out 353 counts by
    it instead of 592."""
    from optimizer import plan
    m, s = load_model("1T"), load_system("h100-80g-nvl8")
    best = plan(m, s, 4096).best
    per_sample = best.time_s / best.strategy.batch
    floor = work_floor(make_problem(m, s, 4096, 3072, "fp8", None)) / 4096
    assert 0.6 * per_sample <= floor <= per_sample


@pytest.mark.parametrize("model, tc", [("26T", [(16, 8), (16, 1), (8, 4), (1, 1)]),
                                       ("llama3-8B", [(1, 1), (8, 1), (4, 2), (16, 1)])])
def test_the_row_beyond_the_table_is_below_every_microbatch_past_it(model, tc):
    """The block tables' last bucket, for microbatches past MB_TABLE, per
    ((tp, cp) pair, class, TP tier, CP tier): below the exact seconds per
    sequence of every block in its cell at microbatches 33 to the batch
    limit (3,072). And close to them, within 3% at 33 (the kernels of
    llama3-8B's are below the peak rate there: 1.2%): for 26T with tp 16
    over two NVLink domains and cp 8, the least exact time is 0.2% above;
    the row as the larger of the peak-rate compute and the communication's
    bandwidth term, block-wide, was 22% below it (each operator's
    communication hides behind its own kernel only)."""
    from optimizer.master import CLASS_KNOBS, MB_TABLE, _signatures
    from optimizer.space import SIGMA, TP_CHOICE, tp_choices
    p = make_problem(load_model(model), load_system("h100-80g-nvl8"), 16384, 3072, "fp8", {}, False)
    tp, cp = np.array([a for a, _ in tc]), np.array([b for _, b in tc])
    sig, has = _signatures(p, tp, cp)
    bare = Master.__new__(Master)
    bare.p = p
    passes, _, _, classes, cls_of, _ = bare._block_tables(tp, cp, sig, has)
    beyond = passes[:, 0, -1]                           # (pair, class, tp tier, cp tier)
    for a in range(len(tc)):
        rows = [(g, *c) for g in np.flatnonzero(has[a])
                for c in tp_choices(p, int(tp[a]), int(cp[a]), bool(sig["sp"][g]))]
        rows = np.array(rows)
        g = rows[:, 0]
        k = {"tp": np.full(len(g), tp[a]), "cp": np.full(len(g), cp[a]),
             **{n: sig[n][g] for n in SIGMA if n != "tp_comm"},
             **{n: rows[:, 1 + i] for i, n in enumerate(TP_CHOICE)}}
        cell = (cls_of[g], k["tp_net"], k["cp_net"])
        row = beyond[a][cell]
        assert np.isfinite(row).all()
        least = np.inf
        for mb in (MB_TABLE + 1, 48, 64, 100, 333, 1024, 3072):
            b = perf.block_terms(p.model, p.system, p.datatype, {**k, "microbatch": np.full(len(g), mb)})
            exact = sum(b[n] for n in ("fw_compute", "bw_compute", "re_compute", "fw_tp", "bw_tp", "re_tp",
                                       "fw_cp", "bw_cp", "re_cp")) / mb
            assert (row <= exact * (1 + 1e-12)).all(), (tc[a], mb, (exact / row).min())
            if mb == MB_TABLE + 1:
                least = exact.min()
        assert least <= 1.03 * row.min(), (tc[a], least / row.min())
        assert len(classes) == len(np.unique(np.stack([sig[n] for n in CLASS_KNOBS], 1), axis=0))


@pytest.mark.parametrize("model, gpus, system", [("1T", 4096, "h100-80g-nvl8"), ("llama3-8B", 64, "h100-80g-nvl8"),
                                                 ("gpt3-175B", 1024, "a100-80g-nvl8")])
def test_each_bucket_is_least_at_its_largest_microbatch(model, gpus, system, monkeypatch):
    """Where the efficiency curves rise, the block tables evaluate each
    microbatch bucket at its largest microbatch only (1, 2, 4, ..., 32: 6
    of 32): a block's seconds per sequence only fall as the microbatch
    grows. The tables equal those over every microbatch of 1 to 32, bit for
    bit (the forward and backward apart, and the extras), but for the pass
    without its backward kernels (the DP floor's), which need not fall: it
    is at most the least over every microbatch, and not far below it."""
    from optimizer import master
    from optimizer.master import _signatures
    p = make_problem(load_model(model), load_system(system), gpus, 3072,
                     "bf16" if system.startswith("a100") else "fp8", {}, False)
    tp, cp = np.array([1, 8, 8, 16, 2]), np.array([1, 1, 4, 2, 16])
    sig, has = _signatures(p, tp, cp)
    bare = Master.__new__(Master)
    bare.p = p
    assert master._rising_curves(p.system)
    tops = bare._block_tables(tp, cp, sig, has)
    monkeypatch.setattr(master, "_rising_curves", lambda system: False)
    every = bare._block_tables(tp, cp, sig, has)
    assert np.array_equal(tops[0][:, :3], every[0][:, :3])
    for a, b in zip(tops[1:], every[1:]):
        if a is not None:
            assert np.array_equal(a, b)
    rest, exact = tops[0][:, 3], every[0][:, 3]
    assert np.array_equal(np.isfinite(rest), np.isfinite(exact))
    ok = np.isfinite(exact)
    assert (rest[ok] <= exact[ok]).all()
    # and close: the bucket's kernels at its smallest microbatch cost the
    # row little, but on small blocks (llama3-8B: 17% on its worst row)
    ratio = rest[ok] / exact[ok]
    assert np.median(ratio) >= 0.99 and ratio.min() >= 0.8, (np.median(ratio), ratio.min())


def test_a_falling_efficiency_curve_keeps_every_microbatch():
    """A system whose matrix efficiency falls between 1 and 100 GFLOP (a
    user's file may say so) is not rising: its tables take every
    microbatch, and the model stays a relaxation on it, with microbatches
    pinned to the bottoms of the buckets (3, 5, 9, 17), where a block's
    seconds per sequence are below those at the tops. (Taking the tops
    there gives a bound above the exact time: this test fails.)"""
    from optimizer import master
    s = tiered_system(2, hbm_gib=8.0, first=4, growth=4)
    falling = s.__class__(**{**s.__dict__, "matrix_efficiency": ((0.03, 0.01), (1.0, 0.8), (100.0, 0.1),
                                                                  (30000.0, 0.78))})
    assert master._rising_curves(s) and not master._rising_curves(falling)
    m = _tiny(1024, 16, 4, 512, 0, True, 8)
    p = make_problem(m, falling, 8, 136, "bf16", {"cp": 1, "microbatch": [3, 5, 9, 17]})
    assert check_problem(p, np.random.default_rng(5), n=30) >= 15


@pytest.mark.parametrize("top", [1, 3, 64, 3072])
def test_log_above_is_at_or_just_above_the_log(top):
    """_log_above's variable for x in [1, top]: at least log x, and by at
    most 2.1% between its tangents, 4.7% past the last (worked out: the
    tangent at a, log a + (x - a) / a, against log x; between a = 2^e and
    1.5 a the worst gap is e^0.0205, from 1.5 a up to 2 a it is 1/3 -
    log(4/3) = 0.046). At a tangent point it is log x to the unit: a batch
    of 3072 under a limit of 3072 reads as 3072 (at the powers of two alone,
    as 2048 e^0.5 = 3377)."""
    from types import SimpleNamespace
    from ortools.sat.python import cp_model
    xs = sorted({x for x in [1, 2, 3, 5, 7, 11, 24, 47, 48, 63, 64, 100, 1025, 1536, 2047, 2880, 3000, 3072]
                 if x <= top})
    for x in xs:
        md = cp_model.CpModel()
        xv = md.NewIntVar(1, top, "x")
        v = Master._log_above(SimpleNamespace(model=md), xv, top, "log_x_above")
        md.Add(xv == x)
        solver = cp_model.CpSolver()
        assert solver.Solve(md) == cp_model.OPTIMAL
        got = solver.Value(v) / LOG_UNITS
        assert got >= math.log(x), (x, got)
        past_last = x > max(a for a in (2 ** e for e in range(13)) if a <= top) * 1.5
        assert got <= math.log(x) + (0.046 if past_last else math.log(1.021)) + 2 / LOG_UNITS, (x, got)
        if x in (1, 2, 3, 48, 1536, 3072):                    # tangent points
            assert got <= math.log(x) + 2 / LOG_UNITS, (x, got)


def test_tables_over_the_same_keys_become_one():
    """Two tables of functions of the same (a, b) rows become one table with
    a column per function, which pins each function to its own value on
    every row; a table whose keys repeat a row is added as it is."""
    from types import SimpleNamespace
    from ortools.sat.python import cp_model
    md = cp_model.CpModel()
    a, b = md.NewIntVar(0, 2, "a"), md.NewIntVar(0, 1, "b")
    f, g, h = md.NewIntVar(0, 100, "f"), md.NewIntVar(0, 100, "g"), md.NewIntVar(0, 100, "h")
    keys = [(i, j) for i in range(3) for j in range(2)]
    m = SimpleNamespace(model=md, rows=0, _tables={})
    Master._table(m, [a, b, f], [(i, j, 10 * i + j) for i, j in keys])
    Master._table(m, [a, b, g], [(i, j, 7 + i * j) for i, j in keys])
    h_rows = [(0, 1), (0, 2), (1, 3), (2, 4)]                        # a repeats: a relation, kept whole
    Master._table(m, [a, h], h_rows)
    Master._add_tables(m)
    tables = [c.table for c in md.Proto().constraints if c.has_table()]
    assert sorted(len(t.exprs) or len(t.vars) for t in tables) == [2, 4]
    assert m.rows == 6 + 4
    for i, j in keys:
        probe = md.clone()
        probe.Add(probe.GetIntVarFromProtoIndex(a.Index()) == i)
        probe.Add(probe.GetIntVarFromProtoIndex(b.Index()) == j)
        solver = cp_model.CpSolver()
        assert solver.Solve(probe) in (cp_model.OPTIMAL, cp_model.FEASIBLE)
        value = lambda x: solver.Value(probe.GetIntVarFromProtoIndex(x.Index()))  # noqa: E731
        assert (value(f), value(g)) == (10 * i + j, 7 + i * j)
        assert (i, value(h)) in h_rows


@pytest.mark.parametrize("model, gpus, system", [("megatron-22B", 16, "h100-80g-nvl8"),
                                                 ("llama3-8B", 8, "h100-80g-nvl8-off256g-50gbps")])
def test_the_cut_prunes_only_rows_it_forbids(model, gpus, system):
    """Master._prune drops the table rows no solution under the cut can
    take: every feasible strategy whose bound is under the cut keeps the
    same bound in the pruned model, and the pruned model's optimum is the
    unpruned one's under the same cut. Some rows must go, or the test
    would prove nothing."""
    p = make_problem(load_model(model), load_system(system), gpus, 4, "bf16")
    whole = Master(p)
    rng = np.random.default_rng(1)
    picked = []
    for r in enumerate_all(p):
        ok = np.flatnonzero(perf.evaluate_arrays(p.model, p.system, p.datatype, r)["feasible"])
        picked += [knob_rows_to_strategy(r, i, p.datatype) for i in rng.choice(ok, size=min(4, len(ok)),
                                                                                  replace=False)]
    picked = [picked[i] for i in rng.choice(len(picked), size=min(40, len(picked)), replace=False)]
    bounds = [whole.bound_of(s) for s in picked]
    cut_s = float(np.median(bounds))
    pruned = Master(p)
    pruned._cut_at(math.ceil(math.log(cut_s) * LOG_UNITS))
    assert pruned._prune()
    block = pruned.model.Proto().constraints[pruned._block_ct].table
    kept = len(block.values) // (len(block.exprs) or len(block.vars))
    assert 0 < kept < len(whole._cut_rows["block"])
    under = [(s, b) for s, b in zip(picked, bounds) if b <= cut_s]
    assert len(under) >= len(picked) // 2
    for s, b in under:
        assert pruned.bound_of(s) == pytest.approx(b, rel=1e-9), s
    # the optimum under the cut, pruned and not (the whole model solved as it is)
    got = pruned.next(None)
    whole.model.Add(whole.bound <= pruned.cut)
    solver = cp_model.CpSolver()
    assert solver.Solve(whole.model) == cp_model.OPTIMAL
    assert got is not None and got[1] == pytest.approx(math.exp(solver.ObjectiveValue() / LOG_UNITS), rel=1e-9)
