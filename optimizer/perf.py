"""The analytical model: time and memory of one training iteration of a dense
decoder-only transformer under tensor (TP), pipeline (PP) and data (DP)
parallelism, on one GPU of the first pipeline stage (the one that holds the
most activations and finishes last).

Every function takes NumPy arrays of strategies as readily as scalars, so the
same formulas serve a single evaluation, a brute-force sweep and the search's
tables and bounds. Method after Calculon (Isaev et al., SC'23) and the
Megatron-LM papers (Narayanan et al., SC'21; Korthikanti et al., 2022, whose
activation-memory expressions section 4 of that paper derives, and which the
per-tensor accounting below reproduces exactly for the published models).

Strategy knobs come in as a dict of arrays (see KNOBS); enums as codes:
recompute 0 none / 1 attn / 2 full; tp_comm 0 ar / 1 rs_ag / 2 p2p_rs_ag;
tp_overlap 0 none / 1 ring / 2 pipe.
"""

from __future__ import annotations

import numpy as np

from .spec import BYTES_PER_ELEMENT, RECOMPUTE, TP_COMM, TP_OVERLAP, Model, System

KNOBS = ("tp", "pp", "dp", "batch", "microbatch", "interleave", "recompute", "tp_comm",
         "tp_overlap", "ag_redo", "dp_overlap", "optimizer_sharding", "fused_activation",
         "offload_weights", "offload_activations", "offload_optimizer",
         "tp_net", "pp_net", "dp_net")
ENUMS = {"recompute": RECOMPUTE, "tp_comm": TP_COMM, "tp_overlap": TP_OVERLAP}

GIB = 1024 ** 3
# Adam with mixed precision: fp32 master weights and two fp32 moments (the
# master copy is the weights themselves when training in fp32).
OPTIMIZER_BYTES_PER_PARAM = {"fp8": 12, "bf16": 12, "fp16": 12, "fp32": 8}
# Weight gradients accumulate in fp32 across microbatches (Megatron's main_grad).
GRAD_BYTES_PER_PARAM = 4
# Gradients cross the DP network in 16 bits (fp32 when training in fp32).
GRAD_COMM_BYTES = {"fp8": 2, "bf16": 2, "fp16": 2, "fp32": 4}
ADAM_FLOPS_PER_PARAM = 11
# The pipelined TP overlap splits each linear layer and its collective in
# this many chunks; the ring overlap uses one chunk per TP rank.
PIPE_CHUNKS = 4


# ------------------------------------------------------------ model counts

def block_params(model: Model) -> int:
    """Parameters of one transformer block: QKV, projection, two MLP
    matrices, their biases and two layer norms (scale and shift)."""
    h, f, A = model.hidden, model.feedforward, model.attn_width
    return h * 3 * A + 3 * A + A * h + h + 2 * h * f + f + h + 4 * h


def model_params(model: Model) -> int:
    return block_params(model) * model.blocks


def block_matrix_flops(model: Model, tokens):
    """Forward matrix FLOPs of one block for `tokens` tokens (b*s), whole
    block, no sharding: 2*tokens*(4hA + 2hf) for the linears plus
    4*tokens*s*A for the attention scores and their product with V. With
    A = h and f = 4h that is the classic 24*b*s*h^2*(1 + s/6h)."""
    h, f, A, s = model.hidden, model.feedforward, model.attn_width, model.seq_len
    return 2.0 * tokens * (4 * h * A + 2 * h * f) + 4.0 * tokens * s * A


# ----------------------------------------------------------- efficiencies

def efficiency(curve, size):
    """Efficiency at `size` from (size, eff) points, linear in log(size),
    clamped at both ends."""
    xs = np.log([p[0] for p in curve])
    ys = np.array([p[1] for p in curve])
    return np.interp(np.log(np.maximum(size, 1e-30)), xs, ys)


def _op_time(system: System, datatype: str, flops, nbytes, matrix: bool):
    """Time of one operation: its FLOPs at the (matrix or vector) peak times
    the efficiency for its size, and its HBM traffic at the HBM bandwidth
    times the efficiency for its size; summed, or overlapped (max) where the
    system says compute and memory overlap."""
    rates = system.matrix_tflops if matrix else system.vector_tflops
    curve = system.matrix_efficiency if matrix else system.vector_efficiency
    flops = np.asarray(flops, dtype=float)
    nbytes = np.asarray(nbytes, dtype=float)
    t_flops = flops / (rates[datatype] * 1e12 * efficiency(curve, flops / 1e9))
    t_mem = nbytes / (system.hbm_gbps * 1e9 * efficiency(system.hbm_efficiency, nbytes / 1e6))
    if system.compute_memory_overlap:
        return np.maximum(t_flops, t_mem)
    return t_flops + t_mem


# ---------------------------------------------------------- communication

def _tier_table(system: System, attr: str):
    return np.array([getattr(n, attr) for n in system.networks], dtype=float)


def collective_time(system: System, op: str, nbytes, group, tier):
    """Seconds for one collective of `nbytes` (the full buffer) among `group`
    GPUs on network tier `tier`: ring algorithms, so all-reduce moves
    2(n-1)/n of the buffer per GPU, reduce-scatter and all-gather (n-1)/n,
    and p2p sends the buffer once. Zero for a group of one."""
    group = np.asarray(group, dtype=float)
    tier = np.asarray(tier, dtype=int)
    gbps = _tier_table(system, "gbps")[tier]
    eff = _tier_table(system, "efficiency")[tier]
    lat = _tier_table(system, "latency_s")[tier]
    n = np.maximum(group, 1.0)
    factor = {"all_reduce": 2 * (n - 1) / n, "reduce_scatter": (n - 1) / n,
              "all_gather": (n - 1) / n, "p2p": np.ones_like(n)}[op]
    t = lat + factor * np.asarray(nbytes, dtype=float) / (gbps * 1e9 * eff)
    return np.where(group > 1, t, 0.0)


def _overlapped(comm, compute, chunks, share):
    """A collective hidden behind the linear layer it feeds or follows, split
    in `chunks`: the compute runs slower by the processor share the network's
    collectives take, one chunk of the shorter side cannot hide. Returns the
    exposed time (total minus the compute alone)."""
    slowed = compute / (1.0 - share)
    total = np.maximum(slowed, comm) + np.minimum(slowed, comm) / chunks
    return total - compute


# ------------------------------------------------------------ the model

def _as_arrays(knobs: dict):
    out = {}
    for k in KNOBS:
        v = knobs[k]
        if k in ENUMS and isinstance(v, str):
            v = ENUMS[k].index(v)
        out[k] = np.asarray(v)
    shape = np.broadcast(*out.values()).shape
    return {k: np.broadcast_to(v, shape) for k, v in out.items()}, shape


def normalise_tier(system: System, tier):
    """Tier indices with -1 meaning the outermost tier."""
    tier = np.asarray(tier, dtype=int)
    return np.where(tier < 0, tier + len(system.networks), tier)


def in_flight_chunks(pp, interleave, microbatches):
    """Model chunks (each blocks/(pp*interleave) blocks for one microbatch)
    whose activations the first stage holds at its peak: pp microbatches for
    the plain 1F1B schedule; (v-1)*pp + 2*(pp-1) + 1 for the interleaved one
    (Narayanan et al. 2021), which is Korthikanti's (1 + (p-1)/(p*v)) factor;
    never more than the chunks the batch has."""
    pp, v, m = (np.asarray(x) for x in (pp, interleave, microbatches))
    plain = np.minimum(pp, m)
    inter = np.minimum((v - 1) * pp + 2 * (pp - 1) + 1, m * v)
    return np.where(v > 1, inter, plain)


def block_terms(model: Model, system: System, datatype: str, tp, microbatch, recompute,
                tp_comm, tp_overlap, ag_redo, fused_activation, tp_net) -> dict:
    """One block, one microbatch, on one GPU: compute times of the forward,
    backward and recomputation, exposed TP communication of each, and the
    activation bytes kept for the backward. Depends on nothing about the
    pipeline or data parallelism, so the search tabulates it over
    (tp, microbatch, recomputation, TP communication) alone."""
    e = BYTES_PER_ELEMENT[datatype]
    h, f, s = float(model.hidden), float(model.feedforward), float(model.seq_len)
    a, d, A = float(model.heads), float(model.head_dim), float(model.attn_width)
    t = np.asarray(tp, dtype=float)
    b = np.asarray(microbatch, dtype=float)
    rec = np.asarray(recompute)
    tp_overlap = np.asarray(tp_overlap)
    sp = np.asarray(tp_comm) > 0                  # sequence parallelism
    ag_redo = np.asarray(ag_redo).astype(bool) & sp
    fused = np.asarray(fused_activation).astype(bool)
    tok = b * s                                  # tokens per microbatch
    sp_div = np.where(sp, t, 1.0)                # sharding of the h-wide tensors
    att = b * (a / t) * s * s                    # attention score elements per GPU

    def mm(flops, nbytes):
        return _op_time(system, datatype, flops, nbytes, True)

    def vec(flops, nbytes):
        return _op_time(system, datatype, flops, nbytes, False)

    # ---- forward matrix ops: (flops, bytes) per GPU for one microbatch
    lin_t = {
        "qkv": mm(2 * tok * h * 3 * A / t, (tok * h + h * 3 * A / t + tok * 3 * A / t) * e),
        "proj": mm(2 * tok * A * h / t, (tok * A / t + A * h / t + tok * h) * e),
        "mlp1": mm(2 * tok * h * f / t, (tok * h + h * f / t + tok * f / t) * e),
        "mlp2": mm(2 * tok * f * h / t, (tok * f / t + f * h / t + tok * h) * e),
    }
    scores_t = mm(2 * att * d, (2 * tok * A / t + att) * e)
    attn_v_t = mm(2 * att * d, (att + 2 * tok * A / t) * e)
    # ---- forward vector ops
    nh = tok * h / sp_div
    ln_t = vec(5 * nh, 2 * nh * e)                        # one layer norm
    softmax_t = vec(5 * att, 2 * att * e)
    attn_drop_t = vec(att, 2 * att * e + att)             # + 1-byte mask
    nf = tok * f / t
    gelu_t = vec(8 * nf, np.where(fused, 0.0, 2 * nf * e))  # fused into mlp1's epilogue
    resid_t = vec(2 * nh, 3 * nh * e + nh)                # dropout + residual add

    fw_matrix = sum(lin_t.values()) + scores_t + attn_v_t
    fw_vector = 2 * ln_t + softmax_t + attn_drop_t + gelu_t + 2 * resid_t
    fw_compute = fw_matrix + fw_vector
    # Backward: each linear needs the input gradient and the weight gradient
    # (2x the forward FLOPs); the two batched matmuls of attention likewise;
    # vector ops read the saved input and the incoming gradient and write one.
    bw_compute = 2 * fw_matrix + 2 * fw_vector
    # Selective recomputation redoes the core attention (Korthikanti et al.
    # 2022, sec. 5): scores, softmax, dropout and the product with V.
    attn_core = scores_t + softmax_t + attn_drop_t + attn_v_t
    re_compute = np.select([rec == 2, rec == 1], [fw_compute, attn_core], 0.0)

    # ---- TP communication per block per microbatch
    act_bytes = tok * h * e
    tier = normalise_tier(system, tp_net)
    u_tp = _tier_table(system, "processor_share")[tier]
    ar = collective_time(system, "all_reduce", act_bytes, t, tier)
    rs = collective_time(system, "reduce_scatter", act_bytes, t, tier)
    ag = collective_time(system, "all_gather", act_bytes, t, tier)
    chunks = np.where(tp_overlap == 1, t, PIPE_CHUNKS)
    overlap = tp_overlap > 0

    def exposed(comm, compute):
        return np.where(overlap, _overlapped(comm, compute, chunks, u_tp), comm)

    # Forward: with all-reduce, after the projection and after mlp2; with
    # sequence parallelism, an all-gather into qkv and mlp1 and a
    # reduce-scatter out of the projection and mlp2. Backward mirrors it
    # (the gradient of an all-gather is a reduce-scatter) against the input
    # gradient matmuls; ag_redo gathers qkv's and mlp1's inputs once more for
    # the weight gradients instead of keeping them whole.
    fw_tp = np.where(sp,
                     exposed(ag, lin_t["qkv"]) + exposed(rs, lin_t["proj"])
                     + exposed(ag, lin_t["mlp1"]) + exposed(rs, lin_t["mlp2"]),
                     exposed(ar, lin_t["proj"]) + exposed(ar, lin_t["mlp2"]))
    bw_tp = np.where(sp,
                     exposed(rs, lin_t["qkv"]) + exposed(ag, lin_t["proj"])
                     + exposed(rs, lin_t["mlp1"]) + exposed(ag, lin_t["mlp2"])
                     + np.where(ag_redo, exposed(ag, lin_t["qkv"]) + exposed(ag, lin_t["mlp1"]), 0.0),
                     exposed(ar, lin_t["qkv"]) + exposed(ar, lin_t["mlp1"]))
    re_tp = np.where(rec == 2, fw_tp, 0.0)
    tp_total = np.where(sp, 4 * ag + 4 * rs + np.where(ag_redo, 2 * ag, 0.0), 4 * ar)
    tp_total = tp_total + np.where(rec == 2, np.where(sp, 2 * ag + 2 * rs, 2 * ar), 0.0)

    # Activations kept for the backward of one block and one microbatch
    # (Korthikanti et al. 2022, sec. 4: 34 + 5as/h bytes per s*b*h in fp16).
    mask = 1.0                                       # dropout masks: one byte per element
    full_in = tok * h * e / sp_div                   # a block's input, as passed between blocks
    gathered = np.where(sp, tok * h * e / np.where(ag_redo, t, 1.0), tok * h * e)  # qkv/mlp1 input
    attn_s2 = att * (2 * e + mask)                   # softmax output, dropout mask and output
    stored_none = (2 * full_in                       # two layer-norm inputs
                   + 2 * gathered                    # qkv and mlp1 inputs
                   + 3 * tok * A / t * e             # Q, K, V
                   + attn_s2
                   + tok * A / t * e                 # projection input
                   + 2 * tok * h / sp_div * mask     # two residual dropout masks
                   + tok * f / t * e                 # activation-function input
                   + np.where(fused, 0.0, tok * f / t * e))  # its output (fused: recomputed)
    stored = np.select([rec == 2, rec == 1], [full_in, stored_none - attn_s2], stored_none)
    return dict(fw_compute=fw_compute, bw_compute=bw_compute, re_compute=re_compute,
                fw_tp=fw_tp, bw_tp=bw_tp, re_tp=re_tp, tp_total=tp_total, ag=ag,
                stored=stored, working=np.where(rec == 2, stored_none, 0.0))


def pipeline_p2p_time(model: Model, system: System, datatype: str, tp, microbatch, sp,
                      pp, interleave, pp_net, ag):
    """PP communication on the critical path of one microbatch through one
    stage. Megatron's scatter/gather optimisation (Narayanan et al. 2021,
    sec. 4.1): each TP rank sends 1/tp of the activations across the stage
    boundary; without sequence parallelism the receiver all-gathers them over
    the TP network (`ag`). Each microbatch crosses the boundary once per model
    chunk, forward and backward; the sends are not overlapped with compute."""
    e = BYTES_PER_ELEMENT[datatype]
    pp = np.asarray(pp, dtype=float)
    tok = np.asarray(microbatch, dtype=float) * model.seq_len
    p2p = collective_time(system, "p2p", tok * model.hidden * e / np.asarray(tp, dtype=float),
                          np.where(pp > 1, 2, 1), normalise_tier(system, pp_net))
    p2p = p2p + np.where((pp > 1) & ~np.asarray(sp, dtype=bool), ag, 0.0)
    return 2 * np.asarray(interleave, dtype=float) * p2p


def state_bytes(model: Model, datatype: str, tp, pp, dp, optimizer_sharding) -> dict:
    """Parameters of one block on one GPU, and the weights, weight gradients
    and optimizer state of a whole stage (bytes per GPU)."""
    p_block = block_params(model) / np.asarray(tp, dtype=float)
    p_stage = p_block * np.maximum(model.blocks / np.asarray(pp, dtype=float), 1.0)
    shard = np.where(np.asarray(optimizer_sharding).astype(bool), np.asarray(dp, dtype=float), 1.0)
    return dict(p_block=p_block, p_stage=p_stage, shard=shard,
                weights=p_stage * BYTES_PER_ELEMENT[datatype],
                gradients=p_stage * GRAD_BYTES_PER_PARAM,
                optimizer=p_stage * OPTIMIZER_BYTES_PER_PARAM[datatype] / shard)


def memory_terms(datatype: str, states: dict, stored, working, blocks_live, recompute,
                 offload_weights, offload_activations, offload_optimizer) -> dict:
    """Bytes per GPU in HBM, per item, and in the offload tier. HBM keeps two
    blocks' worth of what is offloaded: the one computing and the one being
    prefetched (or written back)."""
    ow, oa, oo = (np.asarray(x).astype(bool) for x in
                  (offload_weights, offload_activations, offload_optimizer))
    n_s = states["p_stage"] / states["p_block"]
    two = np.minimum(2, n_s)
    act_total = stored * blocks_live
    weights = np.where(ow, two * states["p_block"] * BYTES_PER_ELEMENT[datatype], states["weights"])
    grads = np.where(ow, two * states["p_block"] * GRAD_BYTES_PER_PARAM, states["gradients"])
    optim = np.where(oo, two * states["optimizer"] / n_s, states["optimizer"])
    acts_hbm = np.where(oa, np.minimum(2, blocks_live) * stored, act_total)
    full = np.asarray(recompute) == 2
    ckpt = np.where(full, acts_hbm, 0.0)
    acts = np.where(full, working, acts_hbm)
    return dict(weights=weights, gradients=grads, optimizer=optim, activations=acts,
                checkpoints=ckpt, stored_total=act_total,
                hbm=weights + grads + optim + ckpt + acts,
                offload=(np.where(ow, states["weights"] + states["gradients"], 0.0)
                         + np.where(oo, states["optimizer"], 0.0) + np.where(oa, act_total, 0.0)))


def offload_traffic(datatype: str, p_block, stored, offload_weights, offload_activations):
    """Bytes over the offload link per block per microbatch, (forward in,
    forward out, backward in, backward out): forward reads the weights and
    writes the activations; backward reads weights, activations and the
    gradient accumulator, and writes it back."""
    ow = np.asarray(offload_weights).astype(bool)
    oa = np.asarray(offload_activations).astype(bool)
    w = p_block * BYTES_PER_ELEMENT[datatype]
    g = p_block * GRAD_BYTES_PER_PARAM
    return (np.where(ow, w, 0.0), np.where(oa, stored, 0.0),
            np.where(ow, w + g, 0.0) + np.where(oa, stored, 0.0), np.where(ow, g, 0.0))


def offload_overhead(system: System, traffic, fw_pass, bw_pass):
    """Time the offload transfers add to one block's forward and backward
    pass (what does not hide behind the pass), and the bandwidth per
    direction (GB/s) that would hide them completely. Non-increasing in the
    pass times."""
    fw_in, fw_out, bw_in, bw_out = traffic
    fw_bytes, bw_bytes = np.maximum(fw_in, fw_out), np.maximum(bw_in, bw_out)
    bw_link = system.offload_gbps * 1e9
    if bw_link > 0:
        over = (np.maximum(fw_bytes / bw_link - fw_pass, 0.0)
                + np.maximum(bw_bytes / bw_link - bw_pass, 0.0))
    else:
        over = np.where((fw_bytes > 0) | (bw_bytes > 0), np.inf, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        need = np.maximum(np.where(fw_bytes > 0, fw_bytes / fw_pass, 0.0),
                          np.where(bw_bytes > 0, bw_bytes / bw_pass, 0.0)) / 1e9
    return over, need


def optimizer_time(system: System, datatype: str, states: dict, offload_optimizer):
    """Adam on this GPU's shard; with the state offloaded, streamed over the
    offload link (per direction) instead of read from HBM."""
    oo = np.asarray(offload_optimizer).astype(bool)
    opt_bpp = OPTIMIZER_BYTES_PER_PARAM[datatype]
    p_opt = states["p_stage"] / states["shard"]
    hbm_bytes = p_opt * (2 * opt_bpp + GRAD_BYTES_PER_PARAM + BYTES_PER_ELEMENT[datatype])
    t = _op_time(system, datatype, ADAM_FLOPS_PER_PARAM * p_opt, np.where(oo, 0.0, hbm_bytes), False)
    link = system.offload_gbps * 1e9
    move = p_opt * opt_bpp / link if link > 0 else np.full(np.shape(p_opt), np.inf)
    return np.where(oo, np.maximum(t, move), t)


def dp_comm_time(system: System, datatype: str, states: dict, dp, optimizer_sharding, dp_net):
    """Gradient reduction over DP: an all-reduce, or with ZeRO-1 a
    reduce-scatter of the gradients and an all-gather of the weights."""
    tier = normalise_tier(system, dp_net)
    gcomm = states["p_stage"] * GRAD_COMM_BYTES[datatype]
    return np.where(np.asarray(optimizer_sharding).astype(bool),
                    collective_time(system, "reduce_scatter", gcomm, dp, tier)
                    + collective_time(system, "all_gather", states["weights"], dp, tier),
                    collective_time(system, "all_reduce", gcomm, dp, tier))


def dp_exposed_time(system: System, dp_time, window, dp_overlap, dp_net):
    """DP time on the critical path. Overlapped, it hides behind the backward
    of the last microbatch (`window`: the gradients are final only then),
    which it slows by the network's processor share. Non-increasing in the
    window."""
    u = _tier_table(system, "processor_share")[normalise_tier(system, dp_net)]
    hidden = np.maximum(dp_time - window, 0.0) + u * np.minimum(dp_time, window)
    return np.where(np.asarray(dp_overlap).astype(bool), hidden, dp_time)


def iteration_time(microbatches, pp, interleave, t_mb, optimizer, dp_exposed):
    """Seconds per batch: the 1F1B schedule runs m microbatches plus a bubble
    of (pp-1)/v microbatch times, then the optimizer step and the exposed
    DP communication."""
    return (microbatches + (pp - 1) / interleave) * t_mb + optimizer + dp_exposed


def evaluate_arrays(model: Model, system: System, datatype: str, knobs: dict) -> dict:
    """The model over arrays of strategies. Returns a dict of arrays: times
    (seconds per batch, and its breakdown), throughput, MFU/HFU, memory per
    GPU (bytes, per item and per tier), required offload bandwidth, and one
    boolean array per rule (`rule_*`, True where the rule is broken)."""
    k, shape = _as_arrays(knobs)
    L = model.blocks
    r = check_rules(model, system, datatype, k, shape)
    if not system.supports(datatype):
        # No rate to time against: report the rule, leave times infinite.
        r["time_s"] = np.full(shape, np.inf)
        r["feasible"] = np.zeros(shape, dtype=bool)
        return r

    pp = k["pp"].astype(float)
    dp = k["dp"].astype(float)
    batch = k["batch"].astype(float)
    v = k["interleave"].astype(float)
    sp = k["tp_comm"] > 0
    n_s = np.maximum(L / pp, 1.0)                # blocks per stage
    m = np.maximum(np.floor(batch / np.maximum(dp, 1) / np.maximum(k["microbatch"], 1)), 1.0)

    blk = block_terms(model, system, datatype, k["tp"], k["microbatch"], k["recompute"],
                      k["tp_comm"], k["tp_overlap"], k["ag_redo"], k["fused_activation"], k["tp_net"])
    states = state_bytes(model, datatype, k["tp"], pp, dp, k["optimizer_sharding"])
    blocks_live = in_flight_chunks(pp, v, m) * n_s / v   # block-microbatches held
    mem = memory_terms(datatype, states, blk["stored"], blk["working"], blocks_live, k["recompute"],
                       k["offload_weights"], k["offload_activations"], k["offload_optimizer"])

    fw_pass = blk["fw_compute"] + blk["fw_tp"]
    bw_pass = blk["bw_compute"] + blk["bw_tp"] + blk["re_compute"] + blk["re_tp"]
    traffic = offload_traffic(datatype, states["p_block"], blk["stored"],
                              k["offload_weights"], k["offload_activations"])
    off_over, need_gbps = offload_overhead(system, traffic, fw_pass, bw_pass)

    pp_mb = pipeline_p2p_time(model, system, datatype, k["tp"], k["microbatch"], sp, pp, v,
                              k["pp_net"], blk["ag"])
    mb_fw = n_s * blk["fw_compute"]
    mb_bw = n_s * blk["bw_compute"]
    mb_re = n_s * blk["re_compute"]
    mb_tp = n_s * (blk["fw_tp"] + blk["bw_tp"] + blk["re_tp"])
    mb_off = n_s * off_over
    t_mb = mb_fw + mb_bw + mb_re + mb_tp + mb_off + pp_mb

    optimizer_t = optimizer_time(system, datatype, states, k["offload_optimizer"])
    dp_time = dp_comm_time(system, datatype, states, dp, k["optimizer_sharding"], k["dp_net"])
    dp_exposed = dp_exposed_time(system, dp_time, mb_bw + mb_re, k["dp_overlap"] & (dp > 1), k["dp_net"])
    time_s = iteration_time(m, pp, v, t_mb, optimizer_t, dp_exposed)

    # ---- throughput and utilisation
    gpus = k["tp"] * pp * dp
    s, A = model.seq_len, model.attn_width
    rec = k["recompute"]
    peak = system.matrix_tflops[datatype] * 1e12
    model_flops = 3 * block_matrix_flops(model, batch * s) * L
    recompute_flops = batch * L * np.select(
        [rec == 2, rec == 1], [block_matrix_flops(model, s), 4 * s * s * A], 0.0)
    any_offload = (k["offload_weights"].astype(bool) | k["offload_activations"].astype(bool)
                   | k["offload_optimizer"].astype(bool))
    r.update(
        time_s=time_s,
        samples_per_s=batch / time_s,
        tokens_per_s=batch * s / time_s,
        mfu=model_flops / (time_s * gpus * peak),
        hfu=(model_flops + recompute_flops) / (time_s * gpus * peak),
        forward_s=m * mb_fw, backward_s=m * mb_bw, recompute_s=m * mb_re,
        optimizer_s=optimizer_t, bubble_s=(pp - 1) / v * t_mb,
        tp_comm_s=m * mb_tp, pp_comm_s=m * pp_mb, dp_comm_s=dp_exposed,
        offload_s=m * mb_off,
        tp_comm_total_s=m * n_s * blk["tp_total"], dp_comm_total_s=dp_time,
        microbatches=m, blocks_per_stage=n_s,
        weights_bytes=mem["weights"], gradients_bytes=mem["gradients"],
        optimizer_bytes=mem["optimizer"], activations_bytes=mem["activations"],
        checkpoints_bytes=mem["checkpoints"], stored_activations_bytes=mem["stored_total"],
        hbm_bytes=mem["hbm"], offload_bytes=mem["offload"],
        offload_gbps_required=np.where(any_offload, need_gbps, 0.0),
    )
    r["rule_hbm_capacity"] = mem["hbm"] > system.hbm_gib * GIB
    r["rule_offload_capacity"] = mem["offload"] > system.offload_gib * GIB
    r["feasible"] = ~np.logical_or.reduce([r[n] for n in r if n.startswith("rule_")])
    return r


def placement_violation(system: System, tp, pp, dp, tp_net, pp_net, dp_net):
    """True where the groups placed on some network tier do not fit it (or,
    on a tier that must be filled, do not tile it). Groups of one GPU use no
    network."""
    tp, pp, dp = (np.asarray(x) for x in (tp, pp, dp))
    tp_net, pp_net, dp_net = (normalise_tier(system, x) for x in (tp_net, pp_net, dp_net))
    bad = np.zeros(np.broadcast(tp, pp, dp, tp_net, pp_net, dp_net).shape, dtype=bool)
    for i, net in enumerate(system.networks):
        used = (np.where((tp_net == i) & (tp > 1), tp, 1) * np.where((pp_net == i) & (pp > 1), pp, 1)
                * np.where((dp_net == i) & (dp > 1), dp, 1))
        bad |= used > net.size
        if net.must_fill:
            bad |= (used > 1) & (net.size % used != 0)
    return bad


def check_rules(model: Model, system: System, datatype: str, k: dict, shape) -> dict:
    """The rules that need no timing: divisibility, schedule, placement,
    datatype, offload tier. One boolean array per rule, True where broken."""
    r = {}
    ntiers = len(system.networks)
    tp_net, pp_net, dp_net = (normalise_tier(system, k[n]) for n in ("tp_net", "pp_net", "dp_net"))
    sp = k["tp_comm"] > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        r["rule_tp_divides_heads"] = (model.heads % k["tp"]) != 0
        r["rule_tp_divides_hidden"] = ((model.hidden % k["tp"]) != 0) | ((model.feedforward % k["tp"]) != 0)
        r["rule_pp_divides_blocks"] = (model.blocks % k["pp"]) != 0
        r["rule_interleave_divides_stage"] = ((model.blocks // k["pp"]) % k["interleave"]) != 0
        r["rule_dp_divides_batch"] = (k["batch"] % k["dp"]) != 0
        local_batch = k["batch"] // k["dp"]
        r["rule_microbatch_divides_local_batch"] = (local_batch % k["microbatch"]) != 0
        micro = np.maximum(local_batch // k["microbatch"], 1)
        r["rule_interleave_schedule"] = (k["interleave"] > 1) & ((k["pp"] == 1) | (micro % k["pp"] != 0))
        r["rule_sequence_split"] = sp & ((model.seq_len % k["tp"]) != 0)
    r["rule_overlap_needs_tp"] = (k["tp_overlap"] > 0) & (k["tp"] == 1)
    r["rule_ring_needs_p2p"] = (k["tp_overlap"] == 1) & (k["tp_comm"] != 2)
    out_of_range = ((tp_net < 0) | (tp_net >= ntiers) | (pp_net < 0) | (pp_net >= ntiers)
                    | (dp_net < 0) | (dp_net >= ntiers))
    r["rule_network_tier"] = out_of_range
    clip = lambda x: np.clip(x, 0, ntiers - 1)  # noqa: E731
    r["rule_network_size"] = ~out_of_range & placement_violation(
        system, k["tp"], k["pp"], k["dp"], clip(tp_net), clip(pp_net), clip(dp_net))
    r["rule_datatype"] = np.full(shape, not system.supports(datatype))
    any_offload = (k["offload_weights"].astype(bool) | k["offload_activations"].astype(bool)
                   | k["offload_optimizer"].astype(bool))
    r["rule_offload_tier"] = any_offload & ((system.offload_gib <= 0) | (system.offload_gbps <= 0))
    return r


RULES = {
    "rule_tp_divides_heads": "tp must divide the attention heads",
    "rule_tp_divides_hidden": "tp must divide hidden and feedforward",
    "rule_pp_divides_blocks": "pp must divide the blocks",
    "rule_interleave_divides_stage": "interleave must divide the blocks per stage",
    "rule_dp_divides_batch": "dp must divide the batch",
    "rule_microbatch_divides_local_batch": "microbatch must divide the local batch (batch / dp)",
    "rule_interleave_schedule": "interleave > 1 needs pp > 1 and a microbatch count that pp divides",
    "rule_sequence_split": "sequence parallelism needs tp to divide the sequence length",
    "rule_overlap_needs_tp": "TP overlap needs tp > 1",
    "rule_ring_needs_p2p": "ring overlap needs tp_comm p2p_rs_ag",
    "rule_network_tier": "network tier index out of range",
    "rule_network_size": "groups placed on a network tier must fit it (and tile it when it must be filled)",
    "rule_datatype": "the system has no rate for this datatype",
    "rule_offload_tier": "offload needs a second memory tier (offload gib and gbps > 0)",
    "rule_hbm_capacity": "memory per GPU must fit HBM",
    "rule_offload_capacity": "offloaded memory must fit the offload tier",
}
