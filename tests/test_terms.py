"""Each term of the analytical model against numbers worked out here, by hand.

The expected values below are written from the papers' formulas (cited in
each test's docstring), never from optimizer/perf.py. They use a tiny model
and a hand-made system with round numbers, and efficiency curves flat at 1.0,
so that every kernel takes exactly FLOPs / peak + bytes / HBM bandwidth and
every collective exactly latency + factor * bytes / (bandwidth * efficiency).

Sources:
  [K22] Korthikanti et al., "Reducing Activation Recomputation in Large
        Transformer Models", 2022 (arXiv:2205.05198), sec. 4 and 5.
  [N21] Narayanan et al., "Efficient Large-Scale Language Model Training on
        GPU Clusters Using Megatron-LM", SC'21 (arXiv:2104.04473).
  [T05] Thakur, Rabenseifner, Gropp, "Optimization of Collective
        Communication Operations in MPICH", IJHPCA 2005 (ring algorithms).
  [R20] Rajbhandari et al., "ZeRO: Memory Optimizations Toward Training
        Trillion Parameter Models", SC'20.
  [KB15] Kingma and Ba, "Adam", ICLR 2015 (the update rule).
  [I23] Isaev et al., "Calculon", SC'23 (TP overlap, processor share, offload).
"""

import dataclasses
import math

import numpy as np
import pytest

import optimizer as opt
from optimizer import knobs, perf, rules
from optimizer.knobs import CpComm, Recompute, TpComm, TpOverlap

# ------------------------------------------------------------------ fixtures

# A tiny GPT: h = 1024, a = 8 heads of 128 (a * d = h), f = 4h, s = 512,
# L = 8 blocks, no vocabulary. Then 5as/h = 20 exactly.
H, A_HEADS, D_HEAD, FF, S, L = 1024, 8, 128, 4096, 512, 8
TINY = dict(name="tiny", hidden=H, feedforward=FF, seq_len=S, heads=A_HEADS, head_dim=D_HEAD, blocks=L)
VOCAB = 32768
TINY_V = dict(TINY, name="tiny-vocab", vocab=VOCAB)

FLAT = [[1e-9, 1.0], [1e12, 1.0]]
PEAK_TFLOPS = {"fp8": 400, "bf16": 200, "fp16": 200, "fp32": 100}     # matrix
VECTOR_TFLOPS = {"fp8": 20, "bf16": 20, "fp16": 20, "fp32": 10}
HBM_GBPS = 1000
# tier 0: 8 GPUs, 100 GB/s at 50% efficiency (50 GB/s), 2 us, share 0.2
# tier 1: the rest, 10 GB/s at 80% (8 GB/s), 10 us, share 0.1
NVL_BW, NVL_LAT, NVL_SHARE = 100e9 * 0.5, 2e-6, 0.2
NET_BW, NET_LAT, NET_SHARE = 10e9 * 0.8, 10e-6, 0.1
BYTES = {"fp8": 1, "bf16": 2, "fp16": 2, "fp32": 4}


def system_dict(**changes):
    d = {
        "name": "round",
        "matrix_tflops": dict(PEAK_TFLOPS),
        "vector_tflops": dict(VECTOR_TFLOPS),
        "matrix_efficiency": FLAT,
        "vector_efficiency": FLAT,
        "hbm": {"gib": 1e6, "gbps": HBM_GBPS, "efficiency": FLAT},
        "offload": {"gib": 0, "gbps": 0},
        "networks": [
            {"name": "fast", "size": 8, "gbps": 100, "efficiency": 0.5, "latency_us": 2,
             "must_fill": False, "processor_share": NVL_SHARE},
            {"name": "slow", "size": 1024, "gbps": 10, "efficiency": 0.8, "latency_us": 10,
             "must_fill": False, "processor_share": NET_SHARE},
        ],
    }
    d.update(changes)
    return d


SYSTEM = opt.load_system(system_dict())
MODEL = opt.load_model(TINY)
MODEL_V = opt.load_model(TINY_V)


def run(strategy, model=MODEL, system=SYSTEM):
    return opt.evaluate(model, system, strategy)


def close(a, b, rel=1e-12):
    return math.isclose(a, b, rel_tol=rel, abs_tol=1e-300)


# hand formulas for the collectives on the two tiers [T05]
def ring(op, n, nbytes, bw, lat):
    if n == 1:
        return 0.0
    factor = {"all_reduce": 2 * (n - 1) / n, "reduce_scatter": (n - 1) / n,
              "all_gather": (n - 1) / n, "p2p": 1.0}[op]
    return lat + factor * nbytes / bw


def nvl(op, n, nbytes):
    return ring(op, n, nbytes, NVL_BW, NVL_LAT)


def net(op, n, nbytes):
    return ring(op, n, nbytes, NET_BW, NET_LAT)


def block_params(h=H, f=FF):
    """GPT block with biases [N21 sec. 5.1 counts 12h^2 weights]: qkv 3h^2+3h,
    projection h^2+h, MLP 4h^2+4h and 4h^2+h, two layer norms 2h each."""
    return 12 * h * h + 13 * h


def linear_s(tok, n_in, n_out, t, column, e=2, dt="bf16"):
    """One linear layer split over t GPUs, by the roofline: 2 * tok * n_in *
    n_out / t FLOPs at the matrix peak, plus reading the input and weights and
    writing the output at the HBM bandwidth. Column-parallel: whole input,
    1/t of the output; row-parallel: 1/t of the input, whole output."""
    w = n_in * n_out / t
    x_in = tok * n_in / (1 if column else t)
    x_out = tok * n_out / (t if column else 1)
    return 2 * tok * w / (PEAK_TFLOPS[dt] * 1e12) + (x_in + w + x_out) * e / (HBM_GBPS * 1e9)


# ------------------------------------------------- activations per block [K22]

def block_knobs(tp=1, b=1, recompute=Recompute.NONE, tp_comm=TpComm.AR, ag_redo=False, fused=False,
                flash=False, tp_overlap=TpOverlap.NONE, tp_net=0, cp=1, cp_comm=CpComm.RING, cp_net=0):
    """The block knobs (knobs.BLOCK) as perf.block_terms takes them."""
    k = dict(tp=tp, microbatch=b, recompute=recompute, tp_comm=tp_comm, tp_overlap=tp_overlap,
             ag_redo=ag_redo, fused_activation=fused, flash_attention=flash, tp_net=tp_net, cp=cp,
             cp_comm=cp_comm, cp_net=cp_net)
    assert set(k) == set(knobs.BLOCK)
    return k


def kept(tp=1, b=1, recompute=Recompute.NONE, tp_comm=TpComm.AR, ag_redo=False, fused=False, model=MODEL,
         flash=False, datatype="bf16"):
    return float(perf.block_terms(model, SYSTEM, datatype, block_knobs(tp, b, recompute, tp_comm, ag_redo, fused,
                                                                       flash))["stored"])


SBH = S * 1 * H
ATT = 5 * A_HEADS * S / H      # 5as/h = 20


def test_activations_no_parallelism():
    """[K22] eq. 1: activations per layer, 16-bit, no recomputation, no
    parallelism: sbh(34 + 5as/h) bytes (dropout masks 1 byte)."""
    assert ATT == 20
    assert kept() == SBH * (34 + 20)
    assert kept(b=2) == 2 * SBH * (34 + 20)


@pytest.mark.parametrize("t", [2, 4, 8])
def test_activations_tensor_parallel(t):
    """[K22] eq. 2: with tensor parallelism over t, no sequence parallelism:
    sbh(10 + 24/t + 5as/(ht)). The 10 sbh are the two layer-norm inputs, the
    qkv and mlp1 inputs and the two dropout masks, not split."""
    assert close(kept(tp=t), SBH * (10 + 24 / t + ATT / t))


@pytest.mark.parametrize("t", [2, 4, 8])
def test_activations_sequence_parallel(t):
    """[K22] eq. 4: tensor plus sequence parallelism: sbh/t (34 + 5as/h),
    with Megatron's implementation that keeps the qkv and mlp1 inputs
    sharded and all-gathers them again in the backward (ag_redo). Keeping
    the gathered inputs instead (ag_redo off) leaves those two 2sbh tensors
    whole: sbh(4 + 30/t + 5as/(ht))."""
    assert close(kept(tp=t, tp_comm=TpComm.RS_AG, ag_redo=True), SBH / t * (34 + ATT))
    assert close(kept(tp=t, tp_comm=TpComm.P2P_RS_AG, ag_redo=True), SBH / t * (34 + ATT))
    assert close(kept(tp=t, tp_comm=TpComm.RS_AG), SBH * (4 + 30 / t + ATT / t))
    # ag_redo means nothing without sequence parallelism
    assert close(kept(tp=t, tp_comm=TpComm.AR, ag_redo=True), SBH * (10 + 24 / t + ATT / t))


@pytest.mark.parametrize("t", [1, 2, 8])
def test_activations_selective_recompute(t):
    """[K22] sec. 5 (Table 2): selective recomputation drops the 5as/h term
    (softmax output, its dropout mask, the dropout output): with sequence
    parallelism sbh * 34/t; with tensor parallelism alone sbh(10 + 24/t)."""
    sp = TpComm.RS_AG if t > 1 else TpComm.AR
    assert close(kept(tp=t, recompute=Recompute.ATTN, tp_comm=sp, ag_redo=True), SBH * 34 / t)
    assert close(kept(tp=t, recompute=Recompute.ATTN), SBH * (10 + 24 / t))


@pytest.mark.parametrize("t", [1, 2, 8])
def test_activations_full_recompute(t):
    """[K22] sec. 5 (Table 2): full recomputation keeps only the block's
    input: 2sbh (2sbh/t when sequence parallelism shards it)."""
    assert kept(tp=t, recompute=Recompute.FULL) == 2 * SBH
    if t > 1:
        assert close(kept(tp=t, recompute=Recompute.FULL, tp_comm=TpComm.RS_AG), 2 * SBH / t)


def test_activations_fused_activation():
    """A fused activation function is recomputed inside mlp2's backward, so
    its 4h-wide output (8sbh/t of [K22]'s 24/t) is not kept."""
    assert close(kept(tp=2, fused=True), SBH * (10 + 16 / 2 + ATT / 2))
    assert close(kept(tp=1, fused=True), SBH * (34 - 8 + ATT))


@pytest.mark.parametrize("t", [1, 2, 8])
def test_activations_flash_attention(t):
    """Fused attention (FlashAttention, Dao et al. 2022) stores no s x s
    tensor: of [K22]'s core attention it keeps what the unfused path keeps
    besides the 5as/h term (Q and K 4sbh/t, V 2sbh/t, now as the fused
    kernel's inputs) plus the softmax statistics, one fp32 per row: 4 bytes
    x b (a/t) s. So sbh(10 + 24/t) + 4 b a s / t; with sequence
    parallelism (ag_redo) sbh/t * 34 + 4 b a s / t. Full recomputation
    keeps the block's input alone, as unfused. fp8 training keeps the same
    bf16 activations."""
    b = 2
    stats = 4 * b * A_HEADS * S / t
    assert close(kept(tp=t, b=b, flash=True), b * SBH * (10 + 24 / t) + stats)
    if t > 1:
        assert close(kept(tp=t, b=b, flash=True, tp_comm=TpComm.RS_AG, ag_redo=True), b * SBH / t * 34 + stats)
    assert close(kept(tp=t, b=b, flash=True, recompute=Recompute.FULL), b * 2 * SBH)
    assert close(kept(tp=t, b=b, flash=True, datatype="fp8"), b * SBH * (10 + 24 / t) + stats)
    assert close(kept(tp=t, b=b, datatype="fp8"), b * SBH * (10 + 24 / t + ATT / t))


def test_activations_gated_mlp():
    """A gated MLP (SwiGLU) with feedforward f: mlp1 writes gate and up
    (2 * 2sbf), the activation's product is mlp2's input (2sbf). With f = 4h
    that is 24sbh where [K22]'s GeLU MLP keeps 16sbh: sbh(42 + 5as/h)."""
    gated = opt.load_model(dict(TINY, gated_mlp=True, norm="rmsnorm"))
    assert kept(model=gated) == SBH * (42 + ATT)


def test_activations_end_to_end():
    """The whole model with pp = 1: L blocks' activations, (34 + 5as/h) sbh
    each [K22], in HBM; with full recomputation L checkpoints of 2sbh plus
    one block's full activations while it is recomputed."""
    r = run(dict(tp=1, pp=1, dp=1, batch=4, microbatch=2))
    assert r.memory["activations"] == L * 2 * SBH * (34 + ATT)
    assert r.memory["checkpoints"] == 0
    r = run(dict(tp=4, pp=1, dp=1, batch=4, microbatch=2, tp_comm="rs_ag", ag_redo=True))
    assert close(r.memory["activations"], L * 2 * SBH / 4 * (34 + ATT))
    r = run(dict(tp=1, pp=1, dp=1, batch=4, microbatch=2, recompute="full"))
    assert r.memory["checkpoints"] == L * 2 * 2 * SBH
    assert r.memory["activations"] == 2 * SBH * (34 + ATT)
    total = sum(r.memory[k] for k in ("weights", "gradients", "optimizer", "activations", "checkpoints"))
    assert close(r.memory["hbm_total"], total)


@pytest.mark.parametrize("p, v, m, expected_blocks", [
    (4, 1, 8, L),                           # p microbatches of L/p blocks on stage 0
    (4, 1, 2, 2 * L / 4),                   # fewer microbatches than stages: all of them
    (4, 2, 8, L * (1 + 3 / 8)),             # interleaved: (1 + (p-1)/(pv)) [K22 sec. 4.2.3]
    (2, 2, 4, L * (1 + 1 / 4)),
    (2, 4, 8, L * (1 + 1 / 8)),
    (4, 2, 4, 4 * L / 4),                   # capped at the batch's m * L/p blocks
    (1, 1, 4, L),
])
def test_activations_in_flight(p, v, m, expected_blocks):
    """[N21] sec. 2.2 / [K22] sec. 4.2.3: with 1F1B the first stage holds p
    microbatches of its L/p blocks, L blocks' worth (never more than the
    batch); interleaved over v chunks, L(1 + (p-1)/(pv)) blocks' worth."""
    r = run(dict(tp=1, pp=p, dp=1, batch=m, microbatch=1, interleave=v))
    assert close(r.memory["activations"], expected_blocks * SBH * (34 + ATT))


def test_weights_gradients_optimizer_memory():
    """Mixed-precision Adam [R20 sec. 3.1]: 2 bytes of 16-bit weights, 4 of fp32
    gradients (Megatron's main_grad), 12 of optimizer state (fp32 master
    weights and two moments) per parameter; fp32 training: 4 + 4 + 8. ZeRO-1
    [R20] shards the optimizer state over dp. fp8 training (Transformer
    Engine's recipe) casts the linears' operands to fp8 per kernel but
    stores the weights in bf16: 2 bytes a parameter, as bf16."""
    P = L * block_params()
    r = run(dict(tp=1, pp=1, dp=4, batch=4))
    assert (r.memory["weights"], r.memory["gradients"], r.memory["optimizer"]) == (2 * P, 4 * P, 12 * P)
    r = run(dict(tp=1, pp=2, dp=4, batch=4, zero=1))
    assert (r.memory["weights"], r.memory["gradients"], r.memory["optimizer"]) == (P, 2 * P, 12 * P / 2 / 4)
    r = run(dict(tp=1, pp=1, dp=2, batch=4, datatype="fp32"))
    assert (r.memory["weights"], r.memory["gradients"], r.memory["optimizer"]) == (4 * P, 4 * P, 8 * P)
    r = run(dict(tp=1, pp=1, dp=2, batch=4, datatype="fp8"))
    assert (r.memory["weights"], r.memory["gradients"], r.memory["optimizer"]) == (2 * P, 4 * P, 12 * P)


def test_block_parameters():
    """12h^2 + 13h per GPT block [N21]; a gated RMS-norm block (Llama): 4 h^2
    of attention, 3hf of MLP, 2h of norms, no biases."""
    assert perf.block_params(MODEL) == block_params()
    gated = opt.load_model(dict(TINY, gated_mlp=True, norm="rmsnorm", feedforward=2816))
    assert perf.block_params(gated) == 4 * H * H + 3 * H * 2816 + 2 * H
    gqa = opt.load_model(dict(TINY, kv_heads=2))
    # q and output projection h^2 each, K and V 2 heads of 128 each: 2 * h * 256
    assert perf.block_params(gqa) == 2 * H * H + 2 * H * 256 + (H + 2 * 256) + H + 8 * H * H + 5 * H + 4 * H


def test_megatron_preset_parameters():
    """GPT-3 175B as Megatron runs it [N21 Table 1]: h = 12288, L = 96,
    the GPT-2 vocabulary padded to V = 51200, the input and output
    embeddings tied (one V h matrix), a final layer norm (2h):
    96 (12h^2 + 13h) + V h + 2h = 174,590,681,088 parameters (the
    "175B"); the blocks alone (vocab 0) 96 (12h^2 + 13h)."""
    m = opt.load_model("gpt3-175B")
    h = 12288
    assert (m.hidden, m.blocks, m.vocab, m.tied_embeddings) == (h, 96, 51200, True)
    assert perf.model_params(m) == 96 * (12 * h * h + 13 * h) + 51200 * h + 2 * h == 174_590_681_088
    blocks_only = dataclasses.replace(m, vocab=0)
    assert perf.model_params(blocks_only) == 96 * (12 * h * h + 13 * h)


# ------------------------------------------------------------ collectives [T05]

@pytest.mark.parametrize("n", [2, 4, 8])
def test_collective_times(n):
    """Ring algorithms [T05]: all-reduce moves 2(n-1)/n of the buffer per
    GPU, reduce-scatter and all-gather (n-1)/n, a p2p send the buffer once;
    each after the tier's latency, at bandwidth x efficiency."""
    size = 1e8
    for op in ("all_reduce", "reduce_scatter", "all_gather"):
        assert close(perf.collective_time(SYSTEM, op, size, n, 0), nvl(op, n, size))
        assert close(perf.collective_time(SYSTEM, op, size, n, 1), net(op, n, size))
    assert close(perf.collective_time(SYSTEM, "all_reduce", size, n, 0), NVL_LAT + 2 * (n - 1) / n * size / 50e9)
    assert close(perf.collective_time(SYSTEM, "all_gather", size, n, 1), NET_LAT + (n - 1) / n * size / 8e9)
    assert close(perf.collective_time(SYSTEM, "p2p", size, 2, 1), NET_LAT + size / 8e9)


def test_collective_of_one_is_free():
    """A group of one GPU communicates with nobody: zero, latency included."""
    for op in ("all_reduce", "reduce_scatter", "all_gather", "p2p"):
        assert perf.collective_time(SYSTEM, op, 1e8, 1, 0) == 0.0
    got = perf.collective_time(SYSTEM, "all_reduce", 1e8, np.array([1, 2, 4]), np.array([0, 0, 1]))
    assert np.allclose(got, [0.0, nvl("all_reduce", 2, 1e8), net("all_reduce", 4, 1e8)], rtol=1e-12)


# ------------------------------------------------------- TP communication

def tp_case(t, tp_comm, b=1, m=2, recompute="none", ag_redo=False, tp_overlap="none", tp_net=0, model=MODEL):
    return run(dict(tp=t, pp=1, dp=1, batch=m * b, microbatch=b, recompute=recompute, tp_comm=tp_comm,
                    ag_redo=ag_redo, tp_overlap=tp_overlap, tp_net=tp_net), model=model)


@pytest.mark.parametrize("t", [2, 4, 8])
def test_tp_all_reduce(t):
    """[N21] sec. 2.3 (Fig. 5): without sequence parallelism each block runs
    two all-reduces of the bsh activations in the forward (after the
    attention projection and mlp2) and two in the backward (the input
    gradients of qkv and mlp1). Full recomputation repeats the forward's."""
    b, m = 2, 3
    ar = nvl("all_reduce", t, b * S * H * 2)
    r = tp_case(t, "ar", b=b, m=m)
    assert close(r.breakdown["tp_comm"], m * L * 4 * ar)
    r = tp_case(t, "ar", b=b, m=m, recompute="full")
    assert close(r.breakdown["tp_comm"], m * L * 6 * ar)
    r = tp_case(t, "ar", b=b, m=m, recompute="attn")
    assert close(r.breakdown["tp_comm"], m * L * 4 * ar)
    # the same group on the slow tier
    r = tp_case(t, "ar", b=b, m=m, tp_net=1)
    assert close(r.breakdown["tp_comm"], m * L * 4 * net("all_reduce", t, b * S * H * 2))


@pytest.mark.parametrize("t", [2, 4, 8])
@pytest.mark.parametrize("tp_comm", ["rs_ag", "p2p_rs_ag"])
def test_tp_sequence_parallel(t, tp_comm):
    """[K22] sec. 4.2.2 (Fig. 5): with sequence parallelism each all-reduce
    becomes a reduce-scatter plus an all-gather: forward 2 all-gathers (qkv,
    mlp1 inputs) and 2 reduce-scatters (projection, mlp2 outputs); backward
    the reverse, 2 + 2. Re-gathering the inputs for the weight gradients
    (ag_redo, [K22] sec. 4.2.2) adds 2 all-gathers to the backward."""
    b, m = 1, 2
    rs, ag = nvl("reduce_scatter", t, b * S * H * 2), nvl("all_gather", t, b * S * H * 2)
    r = tp_case(t, tp_comm, b=b, m=m)
    assert close(r.breakdown["tp_comm"], m * L * (4 * rs + 4 * ag))
    r = tp_case(t, tp_comm, b=b, m=m, ag_redo=True)
    assert close(r.breakdown["tp_comm"], m * L * (4 * rs + 6 * ag))
    r = tp_case(t, tp_comm, b=b, m=m, ag_redo=True, recompute="full")
    assert close(r.breakdown["tp_comm"], m * L * (6 * rs + 8 * ag))


def test_tp_of_one_is_free():
    r = tp_case(1, "ar")
    assert r.breakdown["tp_comm"] == 0.0


def exposed(comm, compute, chunks, share):
    """[I23] overlap, as the model documents it (perf.overlapped): while the
    collective runs (comm seconds) it takes `share` of the processor, so
    the matmul loses share x comm of its progress. Two cases, by which side
    finishes last:
      comm-bound, comm >= compute + share x comm, i.e. comm (1 - share) >=
        compute: the matmul is done before the collective; exposed
        comm - compute;
      compute-bound otherwise: the collective ends inside the matmul, which
        it stretched by share x comm; exposed share x comm.
    Split in `chunks`, one chunk of the shorter side cannot hide (pipeline
    fill): + min(comm, compute) / chunks (nothing for chunks = inf)."""
    if comm * (1 - share) >= compute:
        body = comm - compute
    else:
        body = share * comm
    return body + (0.0 if math.isinf(chunks) else min(comm, compute) / chunks)


def test_overlap_formula_by_hand():
    # comm 3, compute 2, share 0.2: 3 x 0.8 = 2.4 >= 2, comm-bound: 3 - 2 = 1;
    # fill min(3, 2) / 4 = 0.5: 1.5
    assert close(perf.overlapped(3.0, 2.0, 4, 0.2), 1.5)
    # compute 4: 2.4 < 4, compute-bound: 0.2 x 3 = 0.6; fill 3/2 = 1.5: 2.1
    assert close(perf.overlapped(3.0, 4.0, 2, 0.2), 2.1)
    # no share: the collective is free inside the matmul, only the fill 3/2 shows
    assert close(perf.overlapped(3.0, 4.0, 2, 0.0), 1.5)
    # chunks = inf (DP): no fill; comm-bound 3 - 2 = 1, compute-bound 0.2 x 1 = 0.2
    assert close(perf.overlapped(3.0, 2.0, math.inf, 0.2), 1.0)
    assert close(perf.overlapped(1.0, 4.0, math.inf, 0.2), 0.2)
    # at the edge comm (1 - share) = compute both cases agree: 2.5 x 0.8 = 2
    assert close(perf.overlapped(2.5, 2.0, math.inf, 0.2), 0.5)
    assert close(perf.overlapped(2.5, 2.0, math.inf, 0.2), 0.2 * 2.5)
    for comm, compute, chunks, share in ((3.0, 2.0, 4, 0.2), (3.0, 4.0, 2, 0.2), (0.5, 7.0, 8, 0.1)):
        assert close(perf.overlapped(comm, compute, chunks, share), exposed(comm, compute, chunks, share))


def block_linears(t, b):
    tok = b * S
    return dict(qkv=linear_s(tok, H, 3 * H, t, True), proj=linear_s(tok, H, H, t, False),
                mlp1=linear_s(tok, H, FF, t, True), mlp2=linear_s(tok, FF, H, t, False))


@pytest.mark.parametrize("t", [2, 8])
def test_tp_overlap_pipe_all_reduce(t):
    """Pipelined overlap [I23]: each collective hides behind the matmul it
    follows or feeds, split in 4 chunks, slowing it by the tier's processor
    share (0.2 here). Forward: the all-reduces behind proj and mlp2;
    backward: behind qkv and mlp1 (each timed by its forward kernel)."""
    b, m = 2, 2
    ar = nvl("all_reduce", t, b * S * H * 2)
    lin = block_linears(t, b)
    per_block = sum(exposed(ar, lin[k], 4, NVL_SHARE) for k in ("proj", "mlp2", "qkv", "mlp1"))
    r = tp_case(t, "ar", b=b, m=m, tp_overlap="pipe")
    assert close(r.breakdown["tp_comm"], m * L * per_block)
    # overlap is not free: it costs something over the compute-bound limit,
    # and it is cheaper than not overlapping
    assert 0 < r.breakdown["tp_comm"] < tp_case(t, "ar", b=b, m=m).breakdown["tp_comm"]


@pytest.mark.parametrize("t", [2, 8])
def test_tp_overlap_ring(t):
    """Ring overlap [I23]: one chunk per TP rank (t chunks), p2p sends with
    sequence parallelism. Forward: all-gather behind qkv and mlp1,
    reduce-scatter behind proj and mlp2; backward: reduce-scatter behind qkv
    and mlp1 (plus the re-gather with ag_redo), all-gather behind proj and
    mlp2. On the slow tier the share is 0.1."""
    b, m = 1, 3
    lin = block_linears(t, b)
    for tier, coll, share in ((0, nvl, NVL_SHARE), (1, net, NET_SHARE)):
        rs, ag = coll("reduce_scatter", t, b * S * H * 2), coll("all_gather", t, b * S * H * 2)
        fw = (exposed(ag, lin["qkv"], t, share) + exposed(ag, lin["mlp1"], t, share)
              + exposed(rs, lin["proj"], t, share) + exposed(rs, lin["mlp2"], t, share))
        bw = (exposed(rs, lin["qkv"], t, share) + exposed(rs, lin["mlp1"], t, share)
              + exposed(ag, lin["proj"], t, share) + exposed(ag, lin["mlp2"], t, share))
        redo = exposed(ag, lin["qkv"], t, share) + exposed(ag, lin["mlp1"], t, share)
        r = tp_case(t, "p2p_rs_ag", b=b, m=m, tp_overlap="ring", tp_net=tier)
        assert close(r.breakdown["tp_comm"], m * L * (fw + bw))
        r = tp_case(t, "p2p_rs_ag", b=b, m=m, tp_overlap="ring", tp_net=tier, ag_redo=True, recompute="full")
        assert close(r.breakdown["tp_comm"], m * L * (2 * fw + bw + redo))
        # pipe on the same collectives: 4 chunks
        fw4 = (exposed(ag, lin["qkv"], 4, share) + exposed(ag, lin["mlp1"], 4, share)
               + exposed(rs, lin["proj"], 4, share) + exposed(rs, lin["mlp2"], 4, share))
        r = tp_case(t, "rs_ag", b=b, m=m, tp_overlap="pipe", tp_net=tier)
        bw4 = (exposed(rs, lin["qkv"], 4, share) + exposed(rs, lin["mlp1"], 4, share)
               + exposed(ag, lin["proj"], 4, share) + exposed(ag, lin["mlp2"], 4, share))
        assert close(r.breakdown["tp_comm"], m * L * (fw4 + bw4))


def test_tp_comm_of_the_vocabulary():
    """Megatron's vocabulary-parallel embedding all-reduces its output (a
    reduce-scatter with sequence parallelism; the gradient all-gathered
    back); the logits are a column-parallel linear (input gathered with
    sequence parallelism, input gradient all-reduced or reduce-scattered).
    With pp = 1 one stage runs both; never overlapped for the embedding."""
    t, b, m = 4, 1, 2
    x = b * S * H * 2
    ar, rs, ag = nvl("all_reduce", t, x), nvl("reduce_scatter", t, x), nvl("all_gather", t, x)
    extra = tp_case(t, "ar", b=b, m=m, model=MODEL_V).breakdown["tp_comm"] - tp_case(t, "ar", b=b, m=m).breakdown["tp_comm"]
    assert close(extra, m * 2 * ar, rel=1e-9)
    extra = (tp_case(t, "rs_ag", b=b, m=m, model=MODEL_V).breakdown["tp_comm"]
             - tp_case(t, "rs_ag", b=b, m=m).breakdown["tp_comm"])
    assert close(extra, m * 2 * (rs + ag), rel=1e-9)


# ------------------------------------------------------------- pipeline [N21]

@pytest.mark.parametrize("t, tp_comm, v", [(2, "ar", 1), (2, "ar", 2), (4, "rs_ag", 1), (4, "rs_ag", 2), (1, "ar", 2)])
def test_pipeline_sends(t, tp_comm, v):
    """[N21] sec. 4.1: with the scatter/gather optimisation each TP rank
    sends bsh/t of the activations across a stage boundary (2 bytes each),
    and the receiver all-gathers them over the TP group (not needed with
    sequence parallelism, whose activations are already split). Every
    microbatch crosses each of its v chunks' boundaries forward and
    backward: 2v sends per microbatch, none overlapped."""
    p, b, m = 4, 2, 8
    x = b * S * H * 2
    send = net("p2p", 2, x / t) + (nvl("all_gather", t, x) if tp_comm == "ar" else 0.0)
    r = run(dict(tp=t, pp=p, dp=1, batch=m * b, microbatch=b, interleave=v, tp_comm=tp_comm, pp_net=1))
    assert close(r.breakdown["pp_comm"], m * 2 * v * send)
    r = run(dict(tp=t, pp=1, dp=1, batch=m * b, microbatch=b, tp_comm=tp_comm))
    assert r.breakdown["pp_comm"] == 0.0


@pytest.mark.parametrize("p, v, m", [(8, 1, 64), (8, 1, 8), (4, 2, 32), (2, 4, 8), (4, 1, 3), (1, 1, 16)])
def test_bubble_fraction(p, v, m):
    """[N21] sec. 2.2: the 1F1B bubble takes (p-1)/(v m) of the ideal time
    (m microbatches of the slowest stage), i.e. (p-1)/v microbatch times."""
    r = run(dict(tp=1, pp=p, dp=1, batch=m, microbatch=1, interleave=v, recompute="full", pp_net=1))
    parts = ("forward", "backward", "recompute", "tp_comm", "pp_comm", "offload")
    ideal = sum(r.breakdown[k] for k in parts)
    assert close(r.breakdown["bubble"], (p - 1) / (v * m) * ideal)
    assert close(r.time_s, ideal + r.breakdown["bubble"] + r.breakdown["optimizer"] + r.breakdown["dp_comm"])


def resource_time(strategy, resource, model=MODEL):
    """The forward, backward and recompute seconds that one resource
    ('matrix', 'vector' or 'hbm') accounts for at SYSTEM's rates. With flat
    efficiencies a kernel takes FLOPs / rate + bytes / bandwidth, so halving
    one resource's rates adds exactly its own time once more: the time is
    the difference of two runs. (The system loader caps rates at 1e6
    TFLOP/s, so the other resources cannot be made practically infinite.)"""
    d = system_dict()
    if resource == "matrix":
        d["matrix_tflops"] = {k: v / 2 for k, v in PEAK_TFLOPS.items()}
    elif resource == "vector":
        d["vector_tflops"] = {k: v / 2 for k, v in VECTOR_TFLOPS.items()}
    else:
        d["hbm"] = dict(d["hbm"], gbps=HBM_GBPS / 2)
    slow, base = run(strategy, model=model, system=opt.load_system(d)), run(strategy, model=model)
    return {k: slow.breakdown[k] - base.breakdown[k] for k in ("forward", "backward", "recompute")}


def test_stage_compute_by_matrix_flops():
    """[N21] sec. 5.1: a block's forward matrix FLOPs are
    24 b s h^2 (1 + s/(6h)), split over t; the backward twice the forward;
    full recomputation one forward more, selective [K22] the attention
    matmuls (QK^T and scores x V: 4 b s^2 h). The matrix units' share of
    the time is these FLOPs at the peak.

    fp8 (Transformer Engine): only the linears' 24 b s h^2 run at the fp8
    peak (400); the attention matmuls' 4 b s^2 h stay at bf16's (200).

    Fused attention [Dao et al. 2022] skips the causally masked half: its
    forward is 0.5 x 4 b s^2 h (QK^T and PV), its backward 0.5 x 10 b s^2 h
    (QK^T again, dV, dP, dQ, dK); split over t."""
    t, p, b, m = 2, 2, 2, 4
    peak = PEAK_TFLOPS["bf16"] * 1e12
    lin, attn = 24 * b * S * H * H / t, 4 * b * S * S * H / t
    assert close(lin + attn, 24 * b * S * H * H * (1 + S / (6 * H)) / t)
    fw = (lin + attn) / peak
    for rec, redo in (("none", 0.0), ("full", fw), ("attn", attn / peak)):
        r = resource_time(dict(tp=t, pp=p, dp=1, batch=m * b, microbatch=b, recompute=rec), "matrix")
        assert math.isclose(r["forward"], m * L / p * fw, rel_tol=1e-9)
        assert math.isclose(r["backward"], 2 * m * L / p * fw, rel_tol=1e-9)
        assert math.isclose(r["recompute"], m * L / p * redo, rel_tol=1e-9, abs_tol=1e-15)
    # fp8: the linears at 400, attention at 200
    r = resource_time(dict(tp=t, pp=p, dp=1, batch=m * b, microbatch=b, datatype="fp8"), "matrix")
    fw8 = lin / (PEAK_TFLOPS["fp8"] * 1e12) + attn / peak
    assert math.isclose(r["forward"], m * L / p * fw8, rel_tol=1e-9)
    assert math.isclose(r["backward"], 2 * m * L / p * fw8, rel_tol=1e-9)
    # fused attention, bf16 and under full recomputation (the forward again)
    for rec in ("none", "full"):
        r = resource_time(dict(tp=t, pp=p, dp=1, batch=m * b, microbatch=b, flash_attention=True,
                               recompute=rec), "matrix")
        ffw = (lin + 0.5 * attn) / peak
        assert math.isclose(r["forward"], m * L / p * ffw, rel_tol=1e-9)
        assert math.isclose(r["backward"], m * L / p * (2 * lin + 0.5 * 10 / 4 * attn) / peak, rel_tol=1e-9)
        assert math.isclose(r["recompute"], m * L / p * (ffw if rec == "full" else 0.0), rel_tol=1e-9,
                            abs_tol=1e-15)


# ---------------------------------------------------------------- data parallel

P_MODEL = L * block_params()


@pytest.mark.parametrize("d, dt", [(2, "bf16"), (4, "fp8"), (8, "fp16"), (4, "fp32")])
def test_dp_all_reduce(d, dt):
    """[N21] sec. 3.2: data parallelism all-reduces the stage's gradients,
    in 16 bits (fp8 and bf16 training communicate bf16 gradients), in 32
    bits for fp32 training."""
    grad_bytes = 4 if dt == "fp32" else 2
    for p in (1, 2):
        r = run(dict(tp=1, pp=p, dp=d, batch=d, datatype=dt, dp_net=1))
        assert close(r.breakdown["dp_comm"], net("all_reduce", d, P_MODEL / p * grad_bytes))
    r = run(dict(tp=1, pp=1, dp=d, batch=d, datatype=dt, dp_net=0))
    assert close(r.breakdown["dp_comm"], nvl("all_reduce", d, P_MODEL * grad_bytes))


@pytest.mark.parametrize("d, dt", [(2, "bf16"), (8, "bf16"), (4, "fp32")])
def test_dp_zero1(d, dt):
    """ZeRO-1 [R20 sec. 5]: the gradients are reduce-scattered (each rank
    updates its 1/dp of the state), then the updated 16-bit weights
    all-gathered: the same volume as one all-reduce."""
    e = BYTES[dt]
    grad = 4 if dt == "fp32" else 2
    r = run(dict(tp=1, pp=1, dp=d, batch=d, datatype=dt, dp_net=1, zero=1))
    assert close(r.breakdown["dp_comm"], net("reduce_scatter", d, P_MODEL * grad) + net("all_gather", d, P_MODEL * e))


def test_dp_of_one_is_free():
    r = run(dict(tp=1, pp=1, dp=1, batch=2, dp_overlap=True, zero=1))
    assert r.breakdown["dp_comm"] == 0.0


@pytest.mark.parametrize("rec", ["none", "full"])
def test_dp_overlap(rec):
    """Overlapped DP [N21 sec. 3.2, I23]: the reduction can start only when
    the last microbatch's backward produces the final gradients, so it hides
    behind that backward (W, recomputation included); while it runs it
    takes the tier's processor share u, so the backward stretches to
    W + uD. Exposed: D - W when the reduction ends last (D(1 - u) >= W),
    else uD (gradient buckets stream: no pipeline fill)."""
    d, m = 4, 3
    for dp_net, share, coll in ((1, NET_SHARE, net), (0, NVL_SHARE, nvl)):
        D = coll("all_reduce", d, P_MODEL * 2)
        r = run(dict(tp=1, pp=1, dp=d, batch=d * m, recompute=rec, dp_overlap=True, dp_net=dp_net))
        W = (r.breakdown["backward"] + r.breakdown["recompute"]) / m
        assert close(r.breakdown["dp_comm"], exposed(D, W, math.inf, share))
        assert close(r.breakdown["dp_comm"], D - W if D * (1 - share) >= W else share * D)
    # a window longer than the reduction (microbatch of 8): only the share shows
    r = run(dict(tp=1, pp=1, dp=d, batch=d * 8, microbatch=8, recompute=rec, dp_overlap=True, dp_net=0))
    W = r.breakdown["backward"] + r.breakdown["recompute"]
    D = nvl("all_reduce", d, P_MODEL * 2)
    assert W > D * (1 - NVL_SHARE)
    assert close(r.breakdown["dp_comm"], NVL_SHARE * D)


# --------------------------------------------------------------- optimizer

@pytest.mark.parametrize("dt, d, shard", [("bf16", 1, False), ("bf16", 4, True), ("fp32", 2, False),
                                          ("fp32", 2, True), ("bf16", 4, False)])
def test_adam_step(dt, d, shard):
    """Adam [KB15] per parameter: m = b1 m + (1-b1) g (3 FLOPs),
    v = b2 v + (1-b2) g^2 (4), w -= lr m / (sqrt(v) + eps) (4): 11 FLOPs at
    the vector rate. HBM traffic: the optimizer state read and written
    (2 x 12 bytes mixed precision, 2 x 8 fp32), the fp32 gradient read (4)
    and the working weights written (2 bf16, 4 fp32). ZeRO-1 [R20] runs it
    on 1/dp of the parameters."""
    state = 8 if dt == "fp32" else 12
    p = P_MODEL / (d if shard else 1)
    expected = 11 * p / (VECTOR_TFLOPS[dt] * 1e12) + p * (2 * state + 4 + BYTES[dt]) / (HBM_GBPS * 1e9)
    r = run(dict(tp=1, pp=1, dp=d, batch=d, datatype=dt, zero=int(shard)))
    assert close(r.breakdown["optimizer"], expected)


def test_adam_step_offloaded():
    """With the optimizer state in the offload tier, the step streams it over
    the link (12 bytes a parameter each way, per direction concurrently)
    while the vector units do the 11 FLOPs: the slower of the two."""
    for gbps in (1, 1000):
        sysd = opt.load_system(system_dict(offload={"gib": 1e6, "gbps": gbps}))
        r = run(dict(tp=1, pp=1, dp=2, batch=2, offload_optimizer=True), system=sysd)
        expected = max(11 * P_MODEL / (VECTOR_TFLOPS["bf16"] * 1e12), P_MODEL * 12 / (gbps * 1e9))
        assert close(r.breakdown["optimizer"], expected)


# ----------------------------------------------------------------- offload

def offload_case(gbps, ow=True, oa=True, oo=False, rec="none", m=2, b=1):
    sysd = opt.load_system(system_dict(offload={"gib": 1e6, "gbps": gbps}))
    return run(dict(tp=1, pp=1, dp=1, batch=m * b, microbatch=b, recompute=rec, offload_weights=ow,
                    offload_activations=oa, offload_optimizer=oo), system=sysd)


@pytest.mark.parametrize("ow, oa", [(True, False), (False, True), (True, True)])
@pytest.mark.parametrize("rec", ["none", "full"])
def test_offload_overhead_and_bandwidth(ow, oa, rec):
    """Offload [I23]: per block and microbatch the forward reads the block's
    weights (2 bytes a parameter) and writes its kept activations; the
    backward reads the weights, the fp32 gradient accumulator (4) and the
    activations, and writes the accumulator back. Each direction streams
    concurrently; what does not hide behind the pass (forward, or backward
    with its recomputation) is exposed. The bandwidth that hides it all is
    the larger of bytes/pass over the two passes."""
    m, b = 2, 1
    pb = block_params()
    stored = (2 if rec == "full" else 34 + ATT) * SBH * b
    fw_in, fw_out = (2 * pb if ow else 0), (stored if oa else 0)
    bw_in, bw_out = (6 * pb if ow else 0) + (stored if oa else 0), (4 * pb if ow else 0)
    fw_bytes, bw_bytes = max(fw_in, fw_out), max(bw_in, bw_out)
    base = offload_case(math.inf, ow, oa, rec=rec, m=m, b=b)
    assert base.breakdown["offload"] == 0.0
    fw_pass = base.breakdown["forward"] / (m * L)
    bw_pass = (base.breakdown["backward"] + base.breakdown["recompute"]) / (m * L)
    need = max(fw_bytes / fw_pass, bw_bytes / bw_pass) / 1e9
    assert close(base.offload_gbps_required, need)
    for gbps in (need * 1.01, need / 2, need / 50):
        r = offload_case(gbps, ow, oa, rec=rec, m=m, b=b)
        over = max(fw_bytes / (gbps * 1e9) - fw_pass, 0) + max(bw_bytes / (gbps * 1e9) - bw_pass, 0)
        assert close(r.breakdown["offload"], m * L * over, rel=1e-9)
        assert close(r.offload_gbps_required, need)
    assert offload_case(need * 1.01, ow, oa, rec=rec).breakdown["offload"] == 0.0
    assert offload_case(need / 2, ow, oa, rec=rec).breakdown["offload"] > 0.0


def test_offload_memory():
    """Offloaded, HBM keeps two blocks' worth (the one computing and the one
    in flight): weights 2 x 2, gradients 2 x 4 bytes a parameter of a block,
    optimizer state of two blocks, activations of two blocks; the offload
    tier holds the whole stage's."""
    pb, m = block_params(), 4
    stored = (34 + ATT) * SBH
    r = offload_case(100, ow=True, oa=True, oo=True, m=m)
    mem = r.memory
    assert mem["weights"] == 2 * 2 * pb and mem["gradients"] == 2 * 4 * pb
    assert close(mem["optimizer"], 2 * 12 * pb)
    assert mem["activations"] == 2 * stored
    assert close(mem["offload_total"], L * pb * (2 + 4 + 12) + L * stored)
    assert close(mem["hbm_total"], pb * (4 + 8 + 24) + 2 * stored)
    # with full recomputation the checkpoints are offloaded; one block runs whole
    r = offload_case(100, ow=False, oa=True, rec="full", m=m)
    assert r.memory["checkpoints"] == 2 * 2 * SBH
    assert r.memory["activations"] == stored
    assert close(r.memory["offload_total"], L * 2 * SBH)
    # nothing offloaded: nothing in the tier, no bandwidth needed
    r = offload_case(100, ow=False, oa=False, m=m)
    assert r.memory["offload_total"] == 0 and r.offload_gbps_required == 0


# -------------------------------------------------------------------- MFU

@pytest.mark.parametrize("model, V", [(MODEL, 0), (MODEL_V, VOCAB)])
@pytest.mark.parametrize("rec", ["none", "attn", "full"])
def test_mfu_and_hfu(model, V, rec):
    """[N21] sec. 5.1 (eq. 3): model FLOPs per batch of B sequences are
    72 B s L h^2 (1 + s/(6h) + V/(12 L h)) (V = 0 without a vocabulary);
    MFU = that / (time x GPUs x matrix peak). HFU adds the recomputed
    FLOPs: a forward of the blocks, 24 B s L h^2 (1 + s/(6h)), with full
    recomputation; the attention matmuls, 4 B s^2 h L, with selective."""
    B, t, p, d = 8, 2, 2, 2
    r = run(dict(tp=t, pp=p, dp=d, batch=B, recompute=rec, dp_net=1, pp_net=1), model=model)
    F = 72 * B * S * L * H * H * (1 + S / (6 * H) + V / (12 * L * H))
    denom = r.time_s * t * p * d * PEAK_TFLOPS["bf16"] * 1e12
    assert close(r.mfu, F / denom)
    redo = {"none": 0.0, "full": 24 * B * S * L * H * H * (1 + S / (6 * H)), "attn": 4 * B * S * S * H * L}[rec]
    assert close(r.hfu, (F + redo) / denom)
    assert close(r.samples_per_s, B / r.time_s)
    assert close(r.tokens_per_s, B * S / r.time_s)
    assert close(r.tokens_per_s_per_gpu, B * S / r.time_s / (t * p * d))


def test_mfu_fp8_peak():
    """MFU is against the peak of the training datatype."""
    r = run(dict(tp=1, pp=1, dp=1, batch=2, datatype="fp8"))
    F = 72 * 2 * S * L * H * H * (1 + S / (6 * H))
    assert close(r.mfu, F / (r.time_s * PEAK_TFLOPS["fp8"] * 1e12))


# ------------------------------------------------------------------ rules

def broken_rule(strategy, model=MODEL, system=SYSTEM):
    try:
        opt.evaluate(model, system, strategy)
    except opt.InfeasibleStrategy as e:
        return e.rule
    return None


BASE = dict(tp=1, pp=1, dp=1, batch=8)


@pytest.mark.parametrize("rule, ok, bad", [
    ("tp_divides_heads", dict(tp=2), dict(tp=3)),
    ("pp_at_most_blocks", dict(pp=8), dict(pp=9)),
    ("pp_at_most_blocks", dict(pp=3), dict(pp=16)),          # uneven stages are allowed
    ("interleave_divides_stage", dict(pp=2, interleave=4), dict(pp=2, interleave=3)),
    # 8 blocks on 3 stages: no even chunks to interleave (batch 6: 6 microbatches, 3 divides them)
    ("interleave_divides_stage", dict(pp=2, interleave=2, batch=6), dict(pp=3, interleave=2, batch=6)),
    ("selective_needs_unfused", dict(recompute="attn"), dict(recompute="attn", flash_attention=True)),
    ("selective_needs_unfused", dict(recompute="full", flash_attention=True),
     dict(recompute="attn", flash_attention=True)),
    ("dp_divides_batch", dict(dp=4), dict(dp=3)),
    ("microbatch_divides_local_batch", dict(dp=2, microbatch=2), dict(dp=2, microbatch=3)),
    ("interleave_schedule", dict(pp=2, interleave=2, batch=4), dict(pp=1, interleave=2)),
    ("interleave_schedule", dict(pp=2, interleave=2, batch=4), dict(pp=2, interleave=2, batch=3)),
    ("interleave_schedule", dict(pp=4, interleave=2, batch=8, microbatch=2),
     dict(pp=4, interleave=2, batch=8, microbatch=4)),
    ("sequence_split", dict(tp=2, tp_comm="rs_ag"), dict(tp=1, tp_comm="rs_ag")),
    ("sequence_split", dict(tp=2, tp_comm="p2p_rs_ag"), dict(tp=1, tp_comm="p2p_rs_ag")),
    ("overlap_needs_tp", dict(tp=2, tp_overlap="pipe"), dict(tp=1, tp_overlap="pipe")),
    ("ring_needs_p2p", dict(tp=2, tp_overlap="ring", tp_comm="p2p_rs_ag"),
     dict(tp=2, tp_overlap="ring", tp_comm="rs_ag")),
    ("ring_needs_p2p", dict(tp=2, tp_overlap="pipe", tp_comm="ar"), dict(tp=2, tp_overlap="ring", tp_comm="ar")),
    ("network_tier", dict(tp=2, tp_net=-2), dict(tp=2, tp_net=2)),
    ("network_tier", dict(pp=2, pp_net=1), dict(pp=2, pp_net=-3)),
    ("network_tier", dict(dp=2, dp_net=0), dict(dp=2, dp_net=5)),
    ("network_size", dict(tp=8, tp_net=0), dict(tp=16, tp_net=0, batch=8)),
    ("network_size", dict(tp=4, pp=2, pp_net=0), dict(tp=8, pp=2, pp_net=0)),
    ("network_size", dict(tp=8, dp=1, dp_net=0), dict(tp=8, dp=2, dp_net=0)),
    ("network_size", dict(tp=2, dp=4, dp_net=0), dict(tp=4, dp=4, dp_net=0)),
])
def test_rule_passes_and_breaks(rule, ok, bad):
    """Each rule: a strategy that keeps it evaluates; one that breaks it
    raises InfeasibleStrategy naming it."""
    model = opt.load_model(dict(TINY, heads=16, head_dim=64)) if rule == "network_size" else MODEL
    assert broken_rule({**BASE, **ok}, model=model) is None
    assert broken_rule({**BASE, **bad}, model=model) == rule


def test_rule_tp_divides_kv_heads():
    """GQA: tp must divide the KV heads or be a multiple of them (the KV
    heads are then replicated)."""
    m = opt.load_model(dict(TINY, heads=12, kv_heads=4, head_dim=128, hidden=1536, feedforward=6144))
    assert broken_rule(dict(BASE, tp=6, batch=8), model=m) == "tp_divides_heads"
    assert broken_rule(dict(BASE, tp=3, batch=8), model=m) == "tp_divides_heads"
    assert broken_rule(dict(BASE, tp=2, batch=8), model=m) is None
    assert broken_rule(dict(BASE, tp=12, tp_net=1, batch=8), model=m) is None


def test_rule_tp_divides_hidden_and_feedforward():
    m = opt.load_model(dict(TINY, hidden=1020, feedforward=4080))
    assert broken_rule(dict(BASE, tp=8), model=m) == "tp_divides_hidden"
    assert broken_rule(dict(BASE, tp=4), model=m) is None
    m = opt.load_model(dict(TINY, feedforward=4100))
    assert broken_rule(dict(BASE, tp=8), model=m) == "tp_divides_hidden"
    assert broken_rule(dict(BASE, tp=4), model=m) is None


def test_rule_sequence_split_by_length():
    m = opt.load_model(dict(TINY, seq_len=510))
    assert broken_rule(dict(BASE, tp=4, tp_comm="rs_ag"), model=m) == "sequence_split"
    assert broken_rule(dict(BASE, tp=2, tp_comm="rs_ag"), model=m) is None
    assert broken_rule(dict(BASE, tp=4, tp_comm="ar"), model=m) is None


def test_rule_must_fill():
    """A tier that must be filled (an NVLink domain scheduled whole) takes
    only groups that tile it: the product of the group sizes placed on it
    must divide its size. 2 x 3 = 6 on a domain of 8 fits but does not tile;
    2 x 4 = 8 and 2 alone (4 copies) do. A group of one uses no network."""
    nets = system_dict()["networks"]
    filled = opt.load_system(system_dict(networks=[dict(nets[0], must_fill=True), nets[1]]))
    s = dict(tp=2, pp=1, dp=3, batch=6, dp_net=0)
    assert broken_rule(s, system=SYSTEM) is None
    assert broken_rule(s, system=filled) == "network_size"
    assert broken_rule(dict(s, dp=4, batch=8), system=filled) is None
    assert broken_rule(dict(s, dp_net=1), system=filled) is None
    assert broken_rule(dict(tp=1, pp=1, dp=1, batch=2, tp_net=0, dp_net=0, pp_net=0), system=filled) is None
    # on the outer tier: 3 does not tile a must-fill tier of 1024
    outer = opt.load_system(system_dict(networks=[nets[0], dict(nets[1], must_fill=True)]))
    assert broken_rule(dict(tp=1, pp=1, dp=3, batch=6, dp_net=1), system=outer) == "network_size"
    assert broken_rule(dict(tp=1, pp=1, dp=4, batch=8, dp_net=1), system=outer) is None


def test_rule_placement_vectorised():
    """placement_violation over arrays: the same answers as one by one."""
    nets = system_dict()["networks"]
    filled = opt.load_system(system_dict(networks=[dict(nets[0], must_fill=True), nets[1]]))
    k = dict(tp=np.array([2, 2, 2, 16, 1]), pp=np.array([1, 1, 2, 1, 1]), dp=np.array([3, 4, 3, 1, 7]),
             tp_net=np.array([0, 0, 0, 0, 0]), pp_net=np.array([1, 1, 0, 1, 1]), dp_net=np.array([0, 0, 1, 1, 0]),
             cp=np.ones(5, dtype=int), cp_net=np.zeros(5, dtype=int))
    assert rules.placement_violation(filled, k).tolist() == [True, False, False, True, True]
    assert rules.placement_violation(SYSTEM, k).tolist() == [False, False, False, True, False]


def test_rule_datatype_and_offload_tier():
    no_fp8 = opt.load_system(system_dict(matrix_tflops={"bf16": 200}, vector_tflops={"bf16": 20}))
    assert broken_rule(dict(BASE, datatype="fp8"), system=no_fp8) == "datatype"
    assert broken_rule(dict(BASE, datatype="bf16"), system=no_fp8) is None
    vec_only = opt.load_system(system_dict(vector_tflops={"bf16": 20}))
    assert broken_rule(dict(BASE, datatype="fp8"), system=vec_only) == "datatype"
    for knob in ("offload_weights", "offload_activations", "offload_optimizer"):
        assert broken_rule(dict(BASE, **{knob: True})) == "offload_tier"
        no_bw = opt.load_system(system_dict(offload={"gib": 100, "gbps": 0}))
        assert broken_rule(dict(BASE, **{knob: True}), system=no_bw) == "offload_tier"
        has = opt.load_system(system_dict(offload={"gib": 100, "gbps": 10}))
        assert broken_rule(dict(BASE, **{knob: True}), system=has) is None


def test_rule_capacities_at_the_edge():
    """HBM and offload capacity: a strategy needing exactly the capacity
    fits; a byte less breaks the rule."""
    s = dict(BASE, offload_weights=True)
    need = run(s, system=opt.load_system(system_dict(offload={"gib": 1e6, "gbps": 10})))
    hbm, off = need.memory["hbm_total"], need.memory["offload_total"]
    gib = 1024 ** 3
    exact = opt.load_system(system_dict(hbm={"gib": hbm / gib, "gbps": HBM_GBPS, "efficiency": FLAT},
                                        offload={"gib": off / gib, "gbps": 10}))
    assert broken_rule(s, system=exact) is None
    assert broken_rule(s, system=dataclasses.replace(exact, hbm_gib=(hbm - 1) / gib)) == "hbm_capacity"
    assert broken_rule(s, system=dataclasses.replace(exact, offload_gib=(off - 1) / gib)) == "offload_capacity"


# ------------------------------------------------------------------ knobs

def test_knob_codes_and_values():
    rc = knobs.BY_NAME["recompute"]
    assert rc.code("full") == Recompute.FULL == 2 and rc.code("ATTN") == 1 and rc.code(0) == 0
    assert rc.value(2) == "full" and rc.choices == ("none", "attn", "full")
    b = knobs.BY_NAME["dp_overlap"]
    assert b.value(1) is True and b.value(0) is False and b.choices == (False, True) and b.code(True) == 1
    assert knobs.BY_NAME["tp"].value(np.int64(8)) == 8 and knobs.BY_NAME["tp"].choices == ()
    assert knobs.BY_NAME["tp_net"].choices == ()
    assert knobs.BY_NAME["tp_comm"].help().startswith("tp_comm (ar|rs_ag|p2p_rs_ag): ")
    assert knobs.BY_NAME["ag_redo"].help().startswith("ag_redo (true|false): ")
    assert knobs.BY_NAME["pp_net"].help().startswith("pp_net (tier index): ")
    assert knobs.BY_NAME["batch"].help().startswith("batch (integer): ")
    assert [k.name for k in knobs.at_level("structure")] == ["tp", "cp", "pp", "dp", "batch", "microbatch",
                                                             "interleave"]
    assert len(knobs.glossary().splitlines()) == len(knobs.KNOBS)
    assert all(line.startswith("  ") for line in knobs.glossary().splitlines())


def test_knob_canonical():
    """Knobs without effect go to their idle code: ag_redo without sequence
    parallelism, DP options with dp = 1, tiers of groups of one."""
    s = opt.Strategy(tp=1, pp=1, dp=1, batch=4, ag_redo=True, dp_overlap=True, zero=1,
                     tp_net=1, pp_net=1, dp_net=1, recompute="full")
    c = knobs.canonical(strategy_dict(s))
    assert int(c["ag_redo"]) == 0 and int(c["dp_overlap"]) == 0 and int(c["zero"]) == 0
    assert int(c["tp_net"]) == 0 and int(c["pp_net"]) == 0 and int(c["dp_net"]) == 0
    assert int(c["recompute"]) == Recompute.FULL
    s = opt.Strategy(tp=2, pp=2, dp=2, batch=4, tp_comm="rs_ag", ag_redo=True, dp_overlap=True,
                     zero=1, tp_net=1, pp_net=1, dp_net=1)
    c = knobs.canonical(strategy_dict(s))
    assert [int(c[n]) for n in ("ag_redo", "dp_overlap", "zero", "tp_net", "pp_net", "dp_net")] \
        == [1, 1, 1, 1, 1, 1]
    c = knobs.canonical(dict(strategy_dict(s), tp_comm=np.array([0, 1, 2]), ag_redo=np.array([1, 1, 1])))
    assert c["ag_redo"].tolist() == [0, 1, 1] and c["tp"].shape == (3,)


def strategy_dict(s):
    return {k: getattr(s, k) for k in knobs.NAMES}


def test_knob_describe():
    s = opt.Strategy(tp=2, pp=4, dp=8, batch=64, recompute="full", ag_redo=True, tp_net=0, pp_net=1, dp_net=-1)
    assert knobs.describe(s) == ("tp=2 cp=1 pp=4 dp=8 batch=64 microbatch=1 interleave=1 recompute=full "
                                 "ag_redo nets tp/cp/pp/dp=0/0/1/-1")
    assert knobs.describe(s.to_dict()) == knobs.describe(s)


# ------------------------------------------- kernels: vector FLOPs, HBM bytes



@pytest.mark.parametrize("t, sp", [(1, False), (2, False), (4, True)])
def test_block_vector_flops(t, sp):
    """Elementwise work per block (FLOPs per element, as in ELECTRA's
    flops_computation.py, Clark et al. 2020): layer norm 5, softmax 5, GeLU 8;
    dropout 1 (the mask multiply) and residual-plus-dropout 2. h-wide
    tensors are split over t with sequence parallelism, the scores (b a s^2)
    and the 4h-wide activation always. The backward of an elementwise op
    reads the input and the incoming gradient: charged twice the forward.
    Selective recomputation redoes softmax and dropout; full, everything."""
    b, m = 2, 2
    nh = b * S * H / (t if sp else 1)
    att = b * (A_HEADS / t) * S * S
    fw_flops = 5 * nh + 5 * att + att + 2 * nh + 5 * nh + 8 * b * S * FF / t + 2 * nh
    fw = fw_flops / (VECTOR_TFLOPS["bf16"] * 1e12)
    for rec, redo in (("none", 0.0), ("attn", 6 * att), ("full", fw_flops)):
        r = resource_time(dict(tp=t, pp=1, dp=1, batch=m * b, microbatch=b, recompute=rec,
                               tp_comm="rs_ag" if sp else "ar"), "vector")
        assert math.isclose(r["forward"], m * L * fw, rel_tol=1e-9)
        assert math.isclose(r["backward"], 2 * m * L * fw, rel_tol=1e-9)
        assert math.isclose(r["recompute"], m * L * redo / (VECTOR_TFLOPS["bf16"] * 1e12), rel_tol=1e-9,
                            abs_tol=1e-15)


def test_block_vector_flops_gated_rmsnorm():
    """RMS norm: 4 FLOPs an element (no mean); a gated MLP's activation: the
    SiLU's 8 plus the gate's multiply, 9, over f."""
    gated = opt.load_model(dict(TINY, gated_mlp=True, norm="rmsnorm", feedforward=2048))
    b = 1
    nh, att = b * S * H, b * A_HEADS * S * S
    flops = 4 * nh + 5 * att + att + 2 * nh + 4 * nh + 9 * b * S * 2048 + 2 * nh
    r = resource_time(dict(tp=1, pp=1, dp=1, batch=1), "vector", model=gated)
    assert math.isclose(r["forward"], L * flops / (VECTOR_TFLOPS["bf16"] * 1e12), rel_tol=1e-9)


@pytest.mark.parametrize("t, sp, fused", [(1, False, False), (2, False, False), (4, True, False), (2, False, True)])
def test_block_hbm_bytes(t, sp, fused):
    """HBM traffic of a block's forward by the roofline: each kernel reads
    its inputs once and writes its outputs once, 2 bytes an element, masks 1:
    layer norm x -> y (2 nh); qkv reads x (whole, gathered) and W, writes
    Q, K, V (1/t); scores read Q, K, write b a/t s^2; softmax reads and
    writes them; dropout reads, writes them and its mask; scores x V reads
    the probabilities and V, writes the context; projection reads it and W,
    writes bsh; residual-and-dropout reads two, writes one and the mask (3 nh,
    nh mask); mlp1 reads x, W, writes 4h/t; GeLU reads and writes 4h/t (fused
    into mlp1: nothing); mlp2 reads 4h/t and W, writes bsh."""
    b = 2
    tok = b * S
    nh = tok * H / (t if sp else 1)
    att = b * (A_HEADS / t) * S * S
    q = tok * H / t
    e = 2
    W = lambda n_in, n_out, col: (tok * n_in / (1 if col else t) + n_in * n_out / t  # noqa: E731
                                  + tok * n_out / (t if col else 1)) * e
    nbytes = (2 * nh * e + W(H, 3 * H, True) + (2 * q + att) * e + 2 * att * e + (2 * att * e + att)
              + (att + 2 * q) * e + W(H, H, False) + (3 * nh * e + nh) + 2 * nh * e + W(H, FF, True)
              + (0 if fused else 2 * tok * FF / t * e) + W(FF, H, False) + (3 * nh * e + nh))
    r = resource_time(dict(tp=t, pp=1, dp=1, batch=b, microbatch=b, tp_comm="rs_ag" if sp else "ar",
                           fused_activation=fused), "hbm")
    assert math.isclose(r["forward"], L * nbytes / (HBM_GBPS * 1e9), rel_tol=1e-9)
    assert math.isclose(r["backward"], 2 * L * nbytes / (HBM_GBPS * 1e9), rel_tol=1e-9)


@pytest.mark.parametrize("t", [1, 2])
def test_block_fp8_casts(t):
    """fp8 training (Transformer Engine's recipe): only the four linears'
    matmuls are fp8, reading 1-byte inputs and weights and writing 2-byte
    outputs; a cast kernel before each linear turns its bf16 input into fp8
    (2 FLOPs an element, the scaling's max and the convert; reads 2 bytes,
    writes 1), and in the backward one casts the output gradient. Inputs
    per GPU (no sequence parallelism): qkv and mlp1 the whole b s h, proj
    b s h/t, mlp2 b s f/t; output gradients qkv 3 b s h/t, proj b s h,
    mlp1 b s f/t, mlp2 b s h. Everything else as in bf16 (the two tests
    above): 2-byte attention, vector ops and activations."""
    b = 2
    tok = b * S
    nh, att, q = tok * H, b * (A_HEADS / t) * S * S, tok * H / t
    cast_in = tok * H + tok * H / t + tok * H + tok * FF / t
    cast_out = tok * 3 * H / t + tok * H + tok * FF / t + tok * H
    s = dict(tp=t, pp=1, dp=1, batch=b, microbatch=b)
    # vector FLOPs
    vec = 5 * nh + 5 * att + att + 2 * nh + 5 * nh + 8 * tok * FF / t + 2 * nh
    r, bf = resource_time(dict(s, datatype="fp8"), "vector"), resource_time(s, "vector")
    rate = VECTOR_TFLOPS["bf16"] * 1e12
    assert math.isclose(bf["forward"], L * vec / rate, rel_tol=1e-9)
    assert math.isclose(r["forward"], L * (vec + 2 * cast_in) / rate, rel_tol=1e-9)
    assert math.isclose(r["backward"], L * (2 * vec + 2 * cast_out) / rate, rel_tol=1e-9)

    # HBM bytes
    def W(n_in, n_out, col, e_in):
        return ((tok * n_in / (1 if col else t) + n_in * n_out / t) * e_in + tok * n_out / (t if col else 1) * 2)

    def rest():
        e = 2
        return (2 * nh * e + (2 * q + att) * e + 2 * att * e + (2 * att * e + att) + (att + 2 * q) * e
                + (3 * nh * e + nh) + 2 * nh * e + 2 * tok * FF / t * e + (3 * nh * e + nh))

    lin8 = W(H, 3 * H, True, 1) + W(H, H, False, 1) + W(H, FF, True, 1) + W(FF, H, False, 1)
    lin16 = W(H, 3 * H, True, 2) + W(H, H, False, 2) + W(H, FF, True, 2) + W(FF, H, False, 2)
    r, bf = resource_time(dict(s, datatype="fp8"), "hbm"), resource_time(s, "hbm")
    bw = HBM_GBPS * 1e9
    assert math.isclose(bf["forward"], L * (rest() + lin16) / bw, rel_tol=1e-9)
    assert math.isclose(r["forward"], L * (rest() + lin8 + 3 * cast_in) / bw, rel_tol=1e-9)
    assert math.isclose(r["backward"], L * (2 * (rest() + lin8) + 3 * cast_out) / bw, rel_tol=1e-9)
    # the matrix units: the linears at the fp8 peak, attention's matmuls at bf16's
    r = resource_time(dict(s, datatype="fp8"), "matrix")
    fw = 24 * tok * H * H / t / (PEAK_TFLOPS["fp8"] * 1e12) + 4 * b * S * S * H / t / (PEAK_TFLOPS["bf16"] * 1e12)
    assert math.isclose(r["forward"], L * fw, rel_tol=1e-9)


def test_pp_sends_and_dp_in_fp8_are_bf16():
    """fp8 training sends bf16 activations between stages (2 bytes an
    element of b s h / t) and bf16 gradients over DP; ZeRO-1's all-gather
    of the weights moves the stored bf16 weights (2 bytes a parameter)."""
    t, p, b, m, d = 2, 2, 1, 2, 2
    x = b * S * H * 2
    r = run(dict(tp=t, pp=p, dp=1, batch=m * b, microbatch=b, pp_net=1, datatype="fp8"))
    assert close(r.breakdown["pp_comm"], m * 2 * (net("p2p", 2, x / t) + nvl("all_gather", t, x)))
    r = run(dict(tp=1, pp=1, dp=d, batch=d, datatype="fp8", dp_net=1, zero=1))
    assert close(r.breakdown["dp_comm"], net("reduce_scatter", d, P_MODEL * 2) + net("all_gather", d, P_MODEL * 2))


def test_kernel_time_efficiency_curves():
    """A kernel's time: FLOPs / (peak x efficiency at its GFLOPs) + bytes /
    (bandwidth x efficiency at its MB), efficiencies linear in log(size) and
    clamped; with compute_memory_overlap, the larger of the two."""
    d = system_dict(matrix_efficiency=[[1, 0.5], [100, 1.0]], vector_efficiency=[[1, 0.2], [10000, 0.6]],
                    hbm={"gib": 1e6, "gbps": HBM_GBPS, "efficiency": [[1, 0.4], [100, 0.8]]})
    sysc = opt.load_system(d)
    # 10 GFLOP: halfway in log between 1 and 100 -> 0.75; 10 MB -> 0.6
    assert close(perf.op_time(sysc, "bf16", 10e9, 10e6, True), 10e9 / (200e12 * 0.75) + 10e6 / (1000e9 * 0.6))
    # 100 GFLOP on the vector curve: halfway between 1 and 1e4 -> 0.4; 1e4 MB clamps at 0.8
    assert close(perf.op_time(sysc, "fp32", 100e9, 1e10, False), 100e9 / (10e12 * 0.4) + 1e10 / (1000e9 * 0.8))
    # below the first point: clamped at 0.5 and 0.4
    assert close(perf.op_time(sysc, "bf16", 1e8, 1e5, True), 1e8 / (200e12 * 0.5) + 1e5 / (1000e9 * 0.4))
    both = opt.load_system(dict(d, compute_memory_overlap=True))
    assert close(perf.op_time(both, "bf16", 10e9, 10e6, True), max(10e9 / (200e12 * 0.75), 10e6 / (1000e9 * 0.6)))
    assert close(perf.op_time(both, "bf16", 1e6, 10e6, True), max(1e6 / (200e12 * 0.5), 10e6 / (1000e9 * 0.6)))
    assert close(float(perf.efficiency(((1, 0.5), (100, 1.0)), 10.0)), 0.75)


# ---------------------------------------------------- the vocabulary's extras

V_BIG = 131072


@pytest.mark.parametrize("t, sp", [(1, False), (2, False), (4, True)])
def test_extras_terms(t, sp):
    """Megatron's vocabulary-parallel ends [N21, K22 sec. 4.3]: the
    embedding (V h / t parameters) on the first stage keeps nothing; the last
    stage keeps the final norm's input (2bsh, /t with sequence parallelism),
    the logits' input (the same) and the fp32 logits for the loss (4 b s V /
    t); it holds the output layer (V h / t) and the final norm (2h)."""
    b = 2
    first, last = perf.extras_terms(MODEL_V, SYSTEM, "bf16", t, b, Recompute.NONE,
                                    TpComm.RS_AG if sp else TpComm.AR, TpOverlap.NONE, 0)
    split = t if sp else 1
    assert first["stored"] == 0 and close(float(first["params"]), VOCAB * H / t)
    assert close(float(last["params"]), VOCAB * H / t + 2 * H)
    assert close(float(last["stored"]), 2 * b * S * H * 2 / split + 4 * b * S * VOCAB / t)
    full = perf.extras_terms(MODEL_V, SYSTEM, "bf16", t, b, Recompute.FULL, TpComm.AR, TpOverlap.NONE, 0)[1]
    assert close(float(full["stored"]), 0.0)
    tied = opt.load_model(dict(TINY_V, tied_embeddings=True))
    assert close(float(perf.extras_terms(tied, SYSTEM, "bf16", t, b, 0, 0, 0, 0)[1]["params"]), VOCAB * H / t + 2 * H)
    none = perf.extras_terms(MODEL, SYSTEM, "bf16", t, b, 0, 0, 0, 0)
    assert none[0]["params"] == 0 and none[1]["stored"] == 0


@pytest.mark.parametrize("t", [1, 2])
def test_extras_time(t):
    """Last stage's forward beyond the blocks: final layer norm (5 FLOPs and
    2 x 2 bytes an element of bsh), the logits matmul (column-parallel h ->
    V), the softmax cross-entropy (5 FLOPs an element of b s V/t, reading
    and writing fp32 logits); the backward twice each. The first stage's
    embedding lookup reads rows and writes bsh (2 x 2 bytes an element); its
    backward scatters the gradient back once (the same traffic)."""
    b, m = 1, 2
    tok = b * S
    final_norm = 5 * tok * H / (VECTOR_TFLOPS["bf16"] * 1e12) + 2 * tok * H * 2 / (HBM_GBPS * 1e9)
    logits = linear_s(tok, H, VOCAB, t, True)
    loss = 5 * tok * VOCAB / t / (VECTOR_TFLOPS["bf16"] * 1e12) + 2 * tok * VOCAB / t * 4 / (HBM_GBPS * 1e9)
    embedding = 2 * tok * H * 2 / (HBM_GBPS * 1e9)
    last = final_norm + logits + loss
    for p, emb in ((2, 0.0), (1, embedding)):
        s = dict(tp=t, pp=p, dp=1, batch=m * b, microbatch=b, pp_net=1)
        with_v, without = run(s, model=MODEL_V), run(s)
        assert close(with_v.breakdown["forward"] - without.breakdown["forward"], m * (last + emb), rel=1e-9)
        assert close(with_v.breakdown["backward"] - without.breakdown["backward"], m * (2 * last + emb), rel=1e-9)
        assert close(with_v.breakdown["recompute"], without.breakdown["recompute"])


@pytest.mark.parametrize("V, b", [(VOCAB, 1), (V_BIG, 1), (V_BIG, 2)])
def test_fuller_stage_sets_the_memory(V, b):
    """With a vocabulary the first stage holds p microbatches of its blocks
    and the embedding; the last one microbatch of its blocks, the output
    layer and the final norm, and the logits kept for the loss. The memory
    reported is the fuller stage's (here tp = 1: 2 + 4 + 12 bytes a
    parameter, activations (34 + 5as/h) sbh a block)."""
    model = opt.load_model(dict(TINY, vocab=V))
    p, m = 2, 4
    blk = (34 + ATT) * S * b * H
    P1 = L / p * block_params() + V * H
    P2 = P1 + 2 * H
    first = 18 * P1 + p * (L / p) * blk
    last = 18 * P2 + (L / p) * blk + 2 * 2 * b * S * H + 4 * b * S * V
    r = run(dict(tp=1, pp=p, dp=1, batch=m * b, microbatch=b, pp_net=1), model=model)
    assert close(r.memory["hbm_total"], max(first, last))
    assert r.memory["weights"] == 2 * (P1 if first >= last else P2)
    if V == VOCAB:
        assert first > last
    else:
        assert last > first


def test_vocab_stage_dp_and_optimizer():
    """DP and the optimizer step run on the larger stage: the last (output
    layer and final norm) with pp = 2."""
    d, p = 2, 2
    P2 = L / p * block_params() + VOCAB * H + 2 * H
    r = run(dict(tp=1, pp=p, dp=d, batch=d * 2, dp_net=1, pp_net=1), model=MODEL_V)
    assert close(r.breakdown["dp_comm"], net("all_reduce", d, 2 * P2))
    adam = 11 * P2 / (VECTOR_TFLOPS["bf16"] * 1e12) + P2 * 30 / (HBM_GBPS * 1e9)
    assert close(r.breakdown["optimizer"], adam)
    r = run(dict(tp=1, pp=1, dp=d, batch=d, dp_net=1), model=MODEL_V)
    P = L * block_params() + 2 * VOCAB * H + 2 * H
    assert close(r.breakdown["dp_comm"], net("all_reduce", d, 2 * P))


@pytest.mark.xfail(strict=True, reason="perf.evaluate_arrays drops the final norm's 2h parameters "
                                       "when tied embeddings share one stage (pp = 1)")
def test_tied_embeddings_one_stage():
    """Tied embeddings on one stage: one V h matrix, plus the final norm's
    2h, as perf.model_params counts them."""
    tied = opt.load_model(dict(TINY_V, tied_embeddings=True))
    r = run(dict(tp=1, pp=1, dp=1, batch=1), model=tied)
    assert r.memory["weights"] == 2 * perf.model_params(tied) == 2 * (L * block_params() + VOCAB * H + 2 * H)


@pytest.mark.parametrize("t", [2, 8])
def test_block_parameters_per_gpu(t):
    """Megatron's TP split of a GPT block: the matrices and the column-parallel
    biases (qkv 3h, mlp1 4h) split over t; the row-parallel biases
    (projection, mlp2: h each) and the two layer norms (2h each)
    replicated: (12h^2 + 7h)/t + 6h per GPU."""
    ops = perf.block_ops(MODEL, "bf16", t, 1, False, False, False)
    assert close(sum(float(np.sum(op.params)) for op in ops), (12 * H * H + 7 * H) / t + 6 * H)


@pytest.mark.xfail(strict=True, reason="perf.state_bytes divides the whole block's parameters by tp, "
                                       "replicated layer norms and row biases included")
def test_weights_per_gpu_with_tp():
    t = 8
    r = run(dict(tp=t, pp=1, dp=1, batch=1))
    assert r.memory["weights"] == 2 * L * ((12 * H * H + 7 * H) / t + 6 * H)


# ------------------------------------------------------ arrays and rule table

def test_evaluate_arrays_matches_one_by_one():
    """The vectorised evaluator gives, strategy by strategy, what evaluate
    gives; its extra outputs (microbatches, blocks per stage, the stored
    activations, feasibility) by hand."""
    ks = [dict(tp=2, pp=2, dp=1, batch=8, microbatch=2, interleave=2, recompute="attn", tp_comm="rs_ag",
               ag_redo=True, dp_net=1, pp_net=1),
          dict(tp=1, pp=4, dp=2, batch=8, microbatch=1, recompute="full", dp_overlap=True, pp_net=1, dp_net=1),
          dict(tp=4, pp=1, dp=2, batch=4, microbatch=2, zero=1, dp_net=1)]
    full = [opt.Strategy(**k) for k in ks]
    arrays = {n: np.array([knobs.BY_NAME[n].code(getattr(s, n)) for s in full]) for n in knobs.NAMES}
    r = perf.evaluate_arrays(MODEL_V, SYSTEM, "bf16", arrays)
    assert r["feasible"].tolist() == [True, True, True]
    assert r["microbatches"].tolist() == [4, 4, 1]
    assert r["blocks_per_stage"].tolist() == [4, 2, 8]
    for i, s in enumerate(full):
        one = run(s, model=MODEL_V)
        assert close(float(r["time_s"][i]), one.time_s)
        assert close(float(r["hbm_bytes"][i]), one.memory["hbm_total"])
    # stored activations: in-flight blocks' and the extras' (pp = 1, one microbatch)
    r = perf.evaluate_arrays(MODEL_V, SYSTEM, "bf16", knobs.codes(dict(
        strategy_dict(opt.Strategy(tp=1, pp=1, dp=1, batch=2, microbatch=2)))))
    assert close(float(r["stored_activations_bytes"]), L * 2 * SBH * (34 + ATT) + 2 * (4 * SBH + 4 * S * VOCAB))
    # infeasible entries are flagged, the others not
    bad = dict(arrays, tp=np.array([2, 3, 4]))
    assert perf.evaluate_arrays(MODEL_V, SYSTEM, "bf16", bad)["feasible"].tolist() == [True, False, True]
    # a tier out of range: no time at all
    r = perf.evaluate_arrays(MODEL_V, SYSTEM, "bf16", dict(arrays, tp_net=np.array([0, 5, 0])))
    assert np.isinf(r["time_s"]).all() and not r["feasible"].any() and r["time_s"].shape == (3,)


def test_rules_one_at_a_time():
    """Each rule reads its own condition: a strategy breaking one rule
    breaks no other (checked on the rule table, not just the first one
    evaluate names)."""
    cases = {
        "pp_at_most_blocks": dict(pp=9),                       # 9 stages for 8 blocks
        "interleave_divides_stage": dict(pp=3, interleave=2, batch=6),   # 2 | 8 // 3, but 3 does not divide 8
        "selective_needs_unfused": dict(recompute="attn", flash_attention=True),
        "interleave_schedule": dict(pp=1, interleave=8),       # 8 blocks on one stage: 8 divides them
        "microbatch_divides_local_batch": dict(batch=10, microbatch=3),
    }
    for rule, change in cases.items():
        s = dict(strategy_dict(opt.Strategy(**{**BASE, **change})))
        k, shape = perf._as_arrays(s)
        broken = {name for name, v in rules.check(MODEL, SYSTEM, "bf16", k, shape).items() if bool(v)}
        assert broken == {f"rule_{rule}"}
    # uneven stages break no default rule; planning with even stages adds pp_divides_blocks
    k, shape = perf._as_arrays(strategy_dict(opt.Strategy(**{**BASE, "pp": 3})))
    assert not any(bool(v) for v in rules.check(MODEL, SYSTEM, "bf16", k, shape).values())
    even = rules.check(MODEL, SYSTEM, "bf16", k, shape, rules=rules.for_planning(even_stages=True))
    assert {name for name, v in even.items() if bool(v)} == {"rule_pp_divides_blocks"}
    assert rules.for_planning(even_stages=False) == rules.RULES
    assert rules.EVEN_STAGES not in rules.RULES and rules.EVEN_STAGES.name == "pp_divides_blocks"
    k, shape = perf._as_arrays(strategy_dict(opt.Strategy(**{**BASE, "pp": 4})))
    assert not any(bool(v) for v in rules.check(MODEL, SYSTEM, "bf16", k, shape, rules.for_planning(True)).values())
    # one microbatch cannot be interleaved over two stages
    k, shape = perf._as_arrays(strategy_dict(opt.Strategy(tp=1, pp=2, dp=1, batch=1, interleave=2)))
    assert bool(rules.BY_NAME["interleave_schedule"].broken(MODEL, SYSTEM, "bf16", k))


def test_rules_applicable():
    """The search (space.keep) applies a rule as soon as every knob it reads
    is fixed, at the level that fixes one of them: the `reads` of each rule
    decide when. tp alone fixes the two divisibility rules on tp; fixing
    tp_comm and tp_overlap next brings the sequence split (which reads tp
    too: it needs tp > 1) and the two overlap rules."""
    def applicable(known, new):
        return {r.name for r in rules.RULES if set(r.reads) <= set(known) | set(new) and set(r.reads) & set(new)}
    assert applicable(set(), {"tp"}) == {"tp_divides_heads", "tp_divides_hidden"}
    assert applicable({"tp", "cp"}, {"tp_comm", "tp_overlap"}) == {"sequence_split", "overlap_needs_tp",
                                                                    "ring_needs_p2p"}
    assert applicable({"tp"}, {"cp"}) == {"cp_divides_sequence"}
    assert applicable(set(), {"pp"}) == {"pp_at_most_blocks"}
    assert applicable({"pp"}, {"interleave"}) == {"interleave_divides_stage"}
    assert applicable(set(), {"recompute", "flash_attention"}) == {"selective_needs_unfused"}
    assert set(rules.BY_NAME["sequence_split"].reads) == {"tp", "cp", "tp_comm"}


def test_placement_edge_cases():
    """must_fill on an odd tier (a group of 2 cannot tile 3); an overfull
    inner tier stays a violation whatever the outer must-fill tier says;
    scalars and arrays mix."""
    nets = system_dict()["networks"]
    odd = opt.load_system(system_dict(networks=[dict(nets[0], size=3, must_fill=True), dict(nets[1], size=1023)]))
    k = dict(tp=2, cp=1, pp=1, dp=1, tp_net=0, cp_net=0, pp_net=1, dp_net=1)
    assert bool(rules.placement_violation(odd, k))
    assert not bool(rules.placement_violation(odd, dict(k, tp=3)))
    outer = opt.load_system(system_dict(networks=[nets[0], dict(nets[1], must_fill=True)]))
    assert bool(rules.placement_violation(outer, dict(k, tp=16)))
    mixed = dict(tp=np.array([2, 16]), cp=1, pp=1, dp=2, tp_net=0, cp_net=0, pp_net=1, dp_net=np.array([0, 1]))
    assert rules.placement_violation(SYSTEM, mixed).tolist() == [False, True]
    mixed = dict(tp=8, cp=1, pp=1, dp=2, tp_net=0, cp_net=0, pp_net=1, dp_net=np.array([0, 1]))
    # the CP group shares a tier with TP: 4 x 2 fills 8, 4 x 4 overflows it
    assert rules.placement_violation(SYSTEM, dict(mixed, tp=4, cp=np.array([2, 4]), dp=1)).tolist() == [False, True]
    assert rules.placement_violation(SYSTEM, mixed).tolist() == [True, False]


# --------------------------------------------------------- a few more edges

def test_dp_overlap_at_two():
    """Overlap applies from dp = 2 on: here the reduction (D, about 25 ms)
    outlasts the one microbatch's backward (W, about 2.6 ms) even at 90%
    of the processor, so D - W is exposed."""
    D = net("all_reduce", 2, P_MODEL * 2)
    r = run(dict(tp=1, pp=1, dp=2, batch=2, dp_overlap=True, dp_net=1))
    W = r.breakdown["backward"]
    assert D * (1 - NET_SHARE) >= W
    assert close(r.breakdown["dp_comm"], D - W)


def test_offload_with_tp_passes_include_tp_comm():
    """The passes an offload transfer hides behind include their exposed TP
    communication: the forward's 2 all-reduces, the backward's 2."""
    t, m = 2, 2
    pb = block_params()
    sysd = opt.load_system(system_dict(offload={"gib": 1e6, "gbps": 1}))
    r = run(dict(tp=t, pp=1, dp=1, batch=m, offload_weights=True), system=sysd)
    ar = nvl("all_reduce", t, S * H * 2)
    fw_pass = r.breakdown["forward"] / (m * L) + 2 * ar
    bw_pass = r.breakdown["backward"] / (m * L) + 2 * ar
    fw_bytes, bw_bytes = 2 * pb / t, 6 * pb / t
    assert close(r.offload_gbps_required, max(fw_bytes / fw_pass, bw_bytes / bw_pass) / 1e9)
    over = max(fw_bytes / 1e9 - fw_pass, 0) + max(bw_bytes / 1e9 - bw_pass, 0)
    assert close(r.breakdown["offload"], m * L * over, rel=1e-9)


def test_composition_defaults():
    """The composition as the search's bound calls it, without the stage
    extras: a stage of blocks only, no extra activations, no extra time.
    state_bytes takes the stage's blocks (here L/2 = 4, the stage of pp = 2)."""
    st = perf.state_bytes(MODEL, "bf16", 1, L // 2, 4, 1, 0)
    assert st["p_stage"] == L / 2 * block_params() and st["shard"] == 4
    assert st["optimizer"] == 12 * L / 2 * block_params() / 4
    assert perf.microbatch_time(4, 1.0, 0.5, 0.25, 0.125) == 4 * 1.75 + 0.125
    mem = perf.memory_terms("bf16", st, 100.0, 0.0, 8, Recompute.NONE, False, False, False)
    assert mem["activations"] == 800 and mem["stored_total"] == 800 and mem["offload"] == 0
    assert perf.iteration_time(8, 4, 2, 1.0, 0.5, 0.25) == (8 + 3 / 2) + 0.75


def test_offload_without_link_is_infinitely_slow():
    """No offload bandwidth: any transfer never finishes; nothing to move
    costs nothing."""
    nolink = opt.load_system(system_dict(offload={"gib": 100, "gbps": 0}))
    over, _ = perf.offload_overhead(nolink, (np.array([1.0, 0.0, 0.0]), 0.0, np.array([0.0, 2.0, 0.0]), 0.0),
                                    1.0, 1.0)
    assert over.tolist() == [math.inf, math.inf, 0.0]
    st = perf.state_bytes(MODEL, "bf16", 1, 1, 1, 0, 0)
    assert perf.optimizer_time(nolink, "bf16", st, True) == math.inf


def test_rule_messages_carry_the_numbers():
    """A breach names the rule and the numbers behind it."""
    cases = [(dict(pp=2, interleave=3), "blocks=8"), (dict(pp=9), "pp=9, blocks=8"),
             (dict(recompute="attn", flash_attention=True), "flash_attention=True"),
             (dict(dp=2, microbatch=3), "local batch=4"),
             (dict(pp=2, interleave=2, batch=3), "microbatches=3"),
             (dict(tp=3), "heads=8"), (dict(dp=3), "batch=8")]
    for change, text in cases:
        with pytest.raises(opt.InfeasibleStrategy) as e:
            run({**BASE, **change})
        assert text in str(e.value)


def test_rule_offload_tier_needs_capacity_too():
    """A tier with bandwidth but no capacity is no tier."""
    no_gib = opt.load_system(system_dict(offload={"gib": 0, "gbps": 10}))
    assert broken_rule(dict(BASE, offload_weights=True), system=no_gib) == "offload_tier"


def test_rule_local_batch_from_whole_replicas():
    """The local batch is batch // dp: with dp not dividing the batch only
    that rule breaks, not the microbatch's."""
    k, shape = perf._as_arrays(strategy_dict(opt.Strategy(tp=1, pp=1, dp=4, batch=10, microbatch=2)))
    broken = {name for name, v in rules.check(MODEL, SYSTEM, "bf16", k, shape).items() if bool(v)}
    assert broken == {"rule_dp_divides_batch"}


def test_knob_enum_codes_are_dense():
    """Named choices are coded 0..n-1 in declaration order (the search packs
    them into keys with ravel_multi_index); what memory reads of tp_comm is
    only whether the sequence is split."""
    for enum in (Recompute, TpComm, TpOverlap):
        assert [int(e) for e in enum] == list(range(len(enum)))
    assert knobs.BY_NAME["tp_comm"].memory_view(np.array([0, 1, 2])).tolist() == [False, True, True]


def test_tied_embeddings_share_one_matrix():
    """Tied embeddings on one stage hold one V h matrix, not two: 2 V h bytes
    fewer than untied (2 bytes a parameter; up to the final norm's 2h)."""
    tied = opt.load_model(dict(TINY_V, tied_embeddings=True))
    s = dict(tp=1, pp=1, dp=1, batch=1)
    diff = run(s, model=MODEL_V).memory["weights"] - run(s, model=tied).memory["weights"]
    assert 2 * VOCAB * H <= diff <= 2 * (VOCAB * H + 2 * H)
    # split over two stages each end keeps its own copy (Megatron)
    s = dict(tp=1, pp=2, dp=1, batch=2, pp_net=1)
    assert run(s, model=MODEL_V).memory["weights"] == run(s, model=tied).memory["weights"]


@pytest.mark.xfail(strict=True, reason="perf recomputes the final norm, logits and loss under full "
                                       "recomputation (and keeps none of their inputs)")
def test_full_recompute_spares_the_output_layer():
    """Megatron's full recomputation checkpoints the transformer layers only
    [K22 sec. 5]; the output layer and loss run once (HFU counts no
    recomputation for them either)."""
    s = dict(tp=1, pp=2, dp=1, batch=2, pp_net=1, recompute="full")
    assert run(s, model=MODEL_V).breakdown["recompute"] == run(s).breakdown["recompute"]


# ------------------------------------------------------------ ZeRO stages

def test_zero_stages_state_bytes():
    """ZeRO [R20 sec. 5] over dp = 4, bf16, tp = pp = 1, P = L x block
    parameters: stage 1 divides the optimizer state (12 bytes a parameter)
    by 4, stage 2 the fp32 gradients (4 bytes) too, stage 3 the bf16
    weights (2 bytes) too, and holds two blocks' weights whole (the one
    computing and the one prefetched): 2 x p_block x 2 bytes.
      stage 2: weights 2P, gradients 4P/4 = P, optimizer 12P/4 = 3P
      stage 3: weights 2P/4 + 4 p_block = P/2 + 4 p_block, gradients P, optimizer 3P"""
    P, pb = L * block_params(), block_params()
    r = run(dict(tp=1, pp=1, dp=4, batch=4, zero=2))
    assert (r.memory["weights"], r.memory["gradients"], r.memory["optimizer"]) == (2 * P, P, 3 * P)
    r = run(dict(tp=1, pp=1, dp=4, batch=4, zero=3))
    assert close(r.memory["weights"], P / 2 + 4 * pb)
    assert (r.memory["gradients"], r.memory["optimizer"]) == (P, 3 * P)
    # one block on the stage (pp = 8): only that block gathered, 1 x p_block x 2
    r = run(dict(tp=1, pp=8, dp=4, batch=4, zero=3))
    assert close(r.memory["weights"], 2 * pb / 4 + 2 * pb)
    # dp = 1: nothing to shard over, ZeRO has no effect
    assert run(dict(tp=1, pp=1, dp=1, batch=4, zero=3)).memory == run(dict(tp=1, pp=1, dp=1, batch=4)).memory


def test_hybrid_shard_state_and_comm():
    """Hybrid sharding over dp = 8 in groups of shard = 2 (4 replicas), on
    the slow tier, bf16, P parameters:
      memory, stage 1: optimizer 12P/2 = 6P (not 12P/8), weights 2P, gradients 4P
      per batch, stages 1 and 2: reduce-scatter of the 2P gradient bytes and
        all-gather of the 2P weight bytes over the group of 2, then the
        gradient shard (2P/2 = P bytes) all-reduced over the 4 replicas;
      stage 3: only that all-reduce per batch (the rest runs per microbatch)."""
    P = L * block_params()
    r = run(dict(tp=1, pp=1, dp=8, batch=8, zero=1, shard=2, dp_net=1))
    assert (r.memory["weights"], r.memory["gradients"], r.memory["optimizer"]) == (2 * P, 4 * P, 6 * P)
    across = net("all_reduce", 4, P)
    expected = net("reduce_scatter", 2, 2 * P) + net("all_gather", 2, 2 * P) + across
    assert close(r.breakdown["dp_comm"], expected)
    assert close(run(dict(tp=1, pp=1, dp=8, batch=8, zero=2, shard=2, dp_net=1)).breakdown["dp_comm"], expected)
    r = run(dict(tp=1, pp=1, dp=8, batch=8, zero=3, shard=2, dp_net=1))
    assert close(r.breakdown["dp_comm"], across)
    assert close(r.memory["weights"], 2 * P / 2 + 2 * 2 * block_params())
    # the whole group (shard 0 = 8): stage 3 has nothing left per batch
    assert run(dict(tp=1, pp=1, dp=8, batch=8, zero=3, dp_net=1)).breakdown["dp_comm"] == 0.0


@pytest.mark.parametrize("dp_net, mb", [(1, 1), (0, 16)])
def test_zero3_per_block_exposed(dp_net, mb):
    """ZeRO-3 per block and microbatch over dp = 4: two all-gathers of the
    block's bf16 weights (2 p_block bytes) and a reduce-scatter of its bf16
    gradients (2 p_block bytes) on the DP tier, prefetched behind the
    block's compute W (forward, backward, recomputation), no fill:
    exposed(comm, W, inf, share), paid L blocks x m microbatches.
    p_block = 12 x 1024^2 + 13 x 1024 = 12,596,224; 2 p_block = 25.19 MB.
      slow tier, microbatch 1: each collective 10 us + 0.75 x 25.19 MB / 8 GB/s
        = 2.37 ms, comm = 7.1 ms against W of about 0.2 ms: comm-bound,
        exposed comm - W
      fast tier, microbatch 16: each 2 us + 0.75 x 25.19 MB / 50 GB/s = 0.38 ms,
        comm = 1.14 ms against W of about 3 ms: hidden, exposed 0.2 x comm"""
    pb, m = block_params(), 2
    coll, share = (net, NET_SHARE) if dp_net == 1 else (nvl, NVL_SHARE)
    r = run(dict(tp=1, pp=1, dp=4, batch=4 * m * mb, microbatch=mb, zero=3, dp_net=dp_net))
    W = (r.breakdown["forward"] + r.breakdown["backward"] + r.breakdown["recompute"]) / (m * L)
    comm = 2 * coll("all_gather", 4, 2 * pb) + coll("reduce_scatter", 4, 2 * pb)
    assert close(r.breakdown["zero3"], m * L * exposed(comm, W, math.inf, share))
    if dp_net == 1:
        assert comm * (1 - share) >= W and close(r.breakdown["zero3"], m * L * (comm - W))
    else:
        assert comm * (1 - share) < W and close(r.breakdown["zero3"], m * L * share * comm)
    # the time adds up: the exposed gathers are part of each microbatch
    assert close(r.time_s, sum(r.breakdown.values()), rel=1e-9)
    # below stage 3 nothing runs per microbatch
    r1 = run(dict(tp=1, pp=1, dp=4, batch=4 * m * mb, microbatch=mb, zero=2, dp_net=dp_net))
    assert r1.breakdown["zero3"] == 0.0


def test_shard_rule():
    """shard is 0 (the whole DP group) or a divisor of dp strictly between 1
    and dp: dp = 8 takes 0, 2, 4 and refuses 1, 3, 8, 16; dp = 2 takes only 0."""
    rule = rules.BY_NAME["shard_divides_dp"]
    shard = np.array([0, 2, 4, 1, 3, 8, 16])
    broken = rule.broken(MODEL, SYSTEM, "bf16", {"dp": np.full(7, 8), "zero": np.ones(7, int), "shard": shard})
    assert broken.tolist() == [False, False, False, True, True, True, True]
    assert rule.broken(MODEL, SYSTEM, "bf16", {"dp": np.array([2, 2]), "zero": 1,
                                               "shard": np.array([0, 2])}).tolist() == [False, True]
    with pytest.raises(opt.InfeasibleStrategy, match="shard_divides_dp"):
        run(dict(tp=1, pp=1, dp=8, batch=8, zero=1, shard=3))


def test_optimizer_sharding_alias():
    """optimizer_sharding, the old ZeRO-1 flag, is read on input as zero =
    1 (true) or 0 (false), in strategies and in pins; never with zero."""
    from optimizer.errors import ConfigError
    from optimizer.space import normalise_pins
    from optimizer.spec import strategy_from_dict
    base = dict(tp=1, pp=1, dp=4, batch=4)
    assert strategy_from_dict({**base, "optimizer_sharding": True}).zero == 1
    assert strategy_from_dict({**base, "optimizer_sharding": False}).zero == 0
    with pytest.raises(ConfigError):
        strategy_from_dict({**base, "optimizer_sharding": True, "zero": 1})
    with pytest.raises(ConfigError):
        strategy_from_dict({**base, "optimizer_sharding": 1})
    assert normalise_pins({"optimizer_sharding": [True, False]}) == {"zero": frozenset({0, 1})}
    assert normalise_pins({"optimizer_sharding": True}) == {"zero": frozenset({1})}
    with pytest.raises(ConfigError):
        normalise_pins({"optimizer_sharding": True, "zero": 2})
    with pytest.raises(ConfigError):
        normalise_pins({"zero": 4})
    assert normalise_pins({"shard": [0, 2]}) == {"shard": frozenset({0, 2})}


# ------------------------------------------------------ context parallelism
# The tiny model without GQA: K and V are each h = 1024 wide (kv_width = a d).
# Context parallelism splits each sequence over c GPUs, two chunks each (the
# load-balanced causal split of Megatron-Core / Transformer Engine), so a GPU
# holds s/c tokens of every microbatch; the attention's queries are its own
# s/c, its keys the whole sequence's, causal and balanced: 1/c of the work.


def cp_terms(c, t=1, b=1, comm=CpComm.RING, net_tier=1, system=SYSTEM, recompute=Recompute.NONE):
    return perf.block_terms(MODEL, system, "bf16", block_knobs(tp=t, b=b, flash=True, cp=c, cp_comm=comm,
                                                               cp_net=net_tier, recompute=recompute))


def flash_kernels(c, t=1, b=1):
    """The fused attention's forward and backward kernel seconds on one GPU,
    by hand: queries q = b (s/c) h/t elements, K and V of the whole sequence
    kv = b s h/t each, scores b (a/t) s (s/c), statistics 4 bytes per query
    row b (a/t) (s/c). Forward 0.5 x 4 x scores x d FLOPs (causal half),
    reading Q, K, V and writing O and the statistics; backward 0.5 x 10 x
    scores x d, reading Q, K, V, O, dO and the statistics and writing dQ, dK,
    dV. At 200 TFLOP/s (bf16 matrix) plus bytes at 1000 GB/s."""
    q, kv = b * (S / c) * H / t, b * S * H / t
    scores = b * (A_HEADS / t) * S * (S / c)
    stats = 4 * b * (A_HEADS / t) * (S / c)
    fw = 0.5 * 4 * scores * D_HEAD / 200e12 + ((2 * q + 2 * kv) * 2 + stats) / 1e12
    bw = 0.5 * 10 * scores * D_HEAD / 200e12 + ((3 * q + 2 * kv) * 2 + stats + (q + 2 * kv) * 2) / 1e12
    return fw, bw


def test_cp_activations_divided_by_cp():
    """Every stored tensor of a block is per token, and a GPU holds s/c of
    them: fused attention's sbh(10 + 24/t) + 4 b a s/t (test above) with s
    replaced by s/c. With c = 2, t = 2, b = 2: 2 x 256 x 1024 x 22 +
    4 x 2 x 4 x 256 = 11,534,336 + 8,192 = 11,542,528 bytes, half of cp = 1's
    23,085,056. All-gather keeps the gathered K and V for the backward: the
    other rank's chunk on top, 2 (K, V) x b (s/c) h/t x 2 bytes = 2 x 2 x
    256 x 512 x 2 = 1,048,576 more."""
    one = float(cp_terms(1, t=2, b=2)["stored"])
    ring = float(cp_terms(2, t=2, b=2)["stored"])
    gathered = float(cp_terms(2, t=2, b=2, comm=CpComm.ALLGATHER)["stored"])
    assert close(one, 23_085_056)
    assert close(ring, 11_542_528)
    assert close(gathered, 11_542_528 + 1_048_576)
    # full recomputation keeps the block's input alone: 2 x 256 x 1024 x 2 bytes per sequence
    assert close(float(cp_terms(2, t=2, b=2, recompute=Recompute.FULL)["stored"]), 2 * 256 * 1024 * 2)


def test_cp_ring_exchange_bytes_and_exposure():
    """Ring attention: c - 1 steps, each passing this GPU's K and V chunk,
    2 x b (s/c) h/t x 2 bytes; the backward passes K, V and dK, dV: twice
    the bytes. Each pass exposes max(0, comm - its attention kernel). With
    c = 2, t = 1, b = 1 on the slow tier (8 GB/s, 10 us): a chunk is 2 x
    256 x 1024 x 2 = 1,048,576 bytes, one step 10 us + 131.072 us =
    141.072 us; the forward kernel takes 1.342 us of FLOPs (268,435,456 at
    200 TFLOP/s) + 3.154 us of bytes (3,153,920 at 1000 GB/s) = 4.496 us, so
    136.576 us show; the backward 2 x 141.072 - 9.655 = 272.489 us. With
    c = 4: three steps of a 524,288-byte chunk."""
    for c in (2, 4):
        chunk = 2 * 1 * (S / c) * H * 2
        fw_k, bw_k = flash_kernels(c)
        steps = (c - 1) * net("p2p", c, chunk)
        r = cp_terms(c)
        assert close(float(r["fw_cp"]), steps - fw_k, 1e-9)
        assert close(float(r["bw_cp"]), 2 * steps - bw_k, 1e-9)
        assert float(r["re_cp"]) == 0.0
    assert close(float(cp_terms(2)["fw_cp"]), 136.576e-6, 1e-4)
    assert close(float(cp_terms(2)["bw_cp"]), 272.489e-6, 1e-4)
    # full recomputation runs the forward's exchange again
    full = cp_terms(2, recompute=Recompute.FULL)
    assert close(float(full["re_cp"]), float(full["fw_cp"]))
    # a tier fast enough hides it: 10,000 GB/s at 50%, 0 latency: one step 0.21 us < 4.5 us
    fast = opt.load_system(system_dict(networks=[
        {"name": "fast", "size": 8, "gbps": 10000, "efficiency": 0.5, "latency_us": 0, "must_fill": False,
         "processor_share": 0.2},
        {"name": "slow", "size": 1024, "gbps": 10, "efficiency": 0.8, "latency_us": 10, "must_fill": False,
         "processor_share": 0.1}]))
    r = cp_terms(2, net_tier=0, system=fast)
    assert float(r["fw_cp"]) == 0.0 and float(r["bw_cp"]) == 0.0


def test_cp_allgather_exchange():
    """All-gather: K and V of the whole sequence (2 x b s h/t x 2 bytes =
    2,097,152 for b = 1, t = 1) gathered before the forward over the c GPUs,
    dK and dV reduce-scattered after the backward; nothing hidden. On the
    slow tier with c = 4: 10 us + 3/4 x 2,097,152 / 8 GB/s = 206.608 us
    each way; on NVLink (50 GB/s, 2 us): 2 + 31.457 = 33.457 us."""
    whole = 2 * 1 * S * H * 2
    r = cp_terms(4, comm=CpComm.ALLGATHER)
    assert close(float(r["fw_cp"]), net("all_gather", 4, whole))
    assert close(float(r["bw_cp"]), net("reduce_scatter", 4, whole))
    assert close(float(r["fw_cp"]), 206.608e-6, 1e-6)
    r = cp_terms(4, comm=CpComm.ALLGATHER, net_tier=0)
    assert close(float(r["fw_cp"]), 33.4572e-6, 1e-4)


def test_cp_gradients_reduced_over_dp_x_cp():
    """Context parallelism replicates the weights: the gradient all-reduce
    spans dp x c GPUs (Megatron-Core's DP x CP group), on the outer of the
    DP and CP tiers; ZeRO shards over dp x c. dp = 2, c = 2 on the slow
    tier: a ring of 4 over P x 2 bytes; dp = 1, c = 2 with the CP group on
    NVLink: a ring of 2 on NVLink; ZeRO-1 keeps 12 P / 4 bytes of optimizer
    state per GPU."""
    base = dict(tp=1, pp=1, batch=2, flash_attention=True)
    r = run(dict(base, cp=2, dp=2, dp_net=1, cp_net=0))
    assert close(r.breakdown["dp_comm"], net("all_reduce", 4, P_MODEL * 2))
    r = run(dict(base, cp=2, dp=1, cp_net=0))
    assert close(r.breakdown["dp_comm"], nvl("all_reduce", 2, P_MODEL * 2))
    r = run(dict(base, cp=2, dp=2, dp_net=1, cp_net=0, zero=1))
    assert close(r.memory["optimizer"], 12 * P_MODEL / 4)
    assert close(r.breakdown["dp_comm"], net("reduce_scatter", 4, P_MODEL * 2) + net("all_gather", 4, P_MODEL * 2))
    assert opt.Strategy(tp=2, cp=4, pp=2, dp=3, batch=3).gpus == 48


def test_rule_cp_divides_sequence():
    """2 x cp divides s = 512: cp = 256 is the largest (two chunks of one
    token); cp = 3 and cp = 512 are not; cp > 1 needs fused attention."""
    ok = dict(tp=1, pp=1, dp=1, batch=1, flash_attention=True)
    assert broken_rule(dict(ok, cp=256, cp_net=1)) is None
    assert broken_rule(dict(ok, cp=3, cp_net=1)) == "cp_divides_sequence"
    assert broken_rule(dict(ok, cp=512, cp_net=1)) == "cp_divides_sequence"
    assert broken_rule(dict(ok, cp=2, flash_attention=False)) == "cp_needs_fused"

