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


def evaluate_arrays(model: Model, system: System, datatype: str, knobs: dict) -> dict:
    """The model over arrays of strategies. Returns a dict of arrays: times
    (seconds per batch, and its breakdown), throughput, MFU/HFU, memory per
    GPU (bytes, per item and per tier), required offload bandwidth, and one
    boolean array per rule (`rule_*`, True where the rule is broken)."""
    k, shape = _as_arrays(knobs)
    e = BYTES_PER_ELEMENT[datatype]
    h, f, s = float(model.hidden), float(model.feedforward), float(model.seq_len)
    a, d, A = float(model.heads), float(model.head_dim), float(model.attn_width)
    L = model.blocks

    t = k["tp"].astype(float)
    pp = k["pp"].astype(float)
    dp = k["dp"].astype(float)
    batch = k["batch"].astype(float)
    b = k["microbatch"].astype(float)
    v = k["interleave"].astype(float)
    rec = k["recompute"]
    sp = k["tp_comm"] > 0                      # sequence parallelism
    ag_redo = k["ag_redo"].astype(bool) & sp
    fused = k["fused_activation"].astype(bool)
    tp_net = normalise_tier(system, k["tp_net"])
    pp_net = normalise_tier(system, k["pp_net"])
    dp_net = normalise_tier(system, k["dp_net"])
    ntiers = len(system.networks)
    tp_net_c, pp_net_c, dp_net_c = (np.clip(x, 0, ntiers - 1) for x in (tp_net, pp_net, dp_net))

    r = {}
    # ---- rules that need no numbers (divisibility and placement)
    with np.errstate(divide="ignore", invalid="ignore"):
        r["rule_tp_divides_heads"] = (model.heads % k["tp"]) != 0
        r["rule_tp_divides_hidden"] = ((model.hidden % k["tp"]) != 0) | ((model.feedforward % k["tp"]) != 0)
        r["rule_pp_divides_blocks"] = (L % k["pp"]) != 0
        blocks_per_stage = L // k["pp"]
        r["rule_interleave_divides_stage"] = (blocks_per_stage % k["interleave"]) != 0
        r["rule_dp_divides_batch"] = (k["batch"] % k["dp"]) != 0
        local_batch = k["batch"] // k["dp"]
        r["rule_microbatch_divides_local_batch"] = (local_batch % k["microbatch"]) != 0
        micro = np.maximum(local_batch // k["microbatch"], 1)
        r["rule_interleave_schedule"] = (k["interleave"] > 1) & ((k["pp"] == 1) | (micro % k["pp"] != 0))
        r["rule_sequence_split"] = sp & ((model.seq_len % k["tp"]) != 0)
        r["rule_overlap_needs_tp"] = (k["tp_overlap"] > 0) & (k["tp"] == 1)
        r["rule_ring_needs_p2p"] = (k["tp_overlap"] == 1) & (k["tp_comm"] != 2)
    r["rule_network_tier"] = ((tp_net < 0) | (tp_net >= ntiers) | (pp_net < 0) | (pp_net >= ntiers)
                              | (dp_net < 0) | (dp_net >= ntiers))
    tier_fit = np.zeros(shape, dtype=bool)
    for i, net in enumerate(system.networks):
        used = (np.where((tp_net == i) & (k["tp"] > 1), k["tp"], 1)
                * np.where((pp_net == i) & (k["pp"] > 1), k["pp"], 1)
                * np.where((dp_net == i) & (k["dp"] > 1), k["dp"], 1))
        bad = used > net.size
        if net.must_fill:
            bad |= (used > 1) & (net.size % used != 0)
        tier_fit |= bad
    r["rule_network_size"] = tier_fit
    r["rule_datatype"] = np.full(shape, not system.supports(datatype))
    any_offload = (k["offload_weights"].astype(bool) | k["offload_activations"].astype(bool)
                   | k["offload_optimizer"].astype(bool))
    r["rule_offload_tier"] = any_offload & ((system.offload_gib <= 0) | (system.offload_gbps <= 0))
    if not system.supports(datatype):
        # No rate to time against: report the rule, leave times infinite.
        r.update({n: np.full(shape, np.inf) for n in ("time_s",)})
        r["feasible"] = np.zeros(shape, dtype=bool)
        return r

    n_s = np.maximum(L / pp, 1.0)                # blocks per stage
    m = np.maximum(np.floor(batch / np.maximum(dp, 1) / np.maximum(b, 1)), 1.0)
    tok = b * s                                  # tokens per microbatch
    sp_div = np.where(sp, t, 1.0)                # sharding of the h-wide tensors
    heads_g = a / t                              # heads per GPU
    att = b * heads_g * s * s                    # attention score elements per GPU

    def mm(flops, nbytes):
        return _op_time(system, datatype, flops, nbytes, True)

    def vec(flops, nbytes):
        return _op_time(system, datatype, flops, nbytes, False)

    # ---- forward matrix ops: (flops, bytes) per GPU for one microbatch
    lin = {
        "qkv": (2 * tok * h * 3 * A / t, (tok * h + h * 3 * A / t + tok * 3 * A / t) * e),
        "proj": (2 * tok * A * h / t, (tok * A / t + A * h / t + tok * h) * e),
        "mlp1": (2 * tok * h * f / t, (tok * h + h * f / t + tok * f / t) * e),
        "mlp2": (2 * tok * f * h / t, (tok * f / t + f * h / t + tok * h) * e),
    }
    scores = (2 * att * d, (2 * tok * A / t + att) * e)
    attn_v = (2 * att * d, (att + 2 * tok * A / t) * e)
    lin_t = {n: mm(*fb) for n, fb in lin.items()}
    scores_t, attn_v_t = mm(*scores), mm(*attn_v)
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
    u_tp = _tier_table(system, "processor_share")[tp_net_c]
    ar = collective_time(system, "all_reduce", act_bytes, t, tp_net_c)
    rs = collective_time(system, "reduce_scatter", act_bytes, t, tp_net_c)
    ag = collective_time(system, "all_gather", act_bytes, t, tp_net_c)
    chunks = np.where(k["tp_overlap"] == 1, t, PIPE_CHUNKS)
    overlap = k["tp_overlap"] > 0

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
    tp_comm_total = np.where(sp, 4 * ag + 4 * rs + np.where(ag_redo, 2 * ag, 0.0), 4 * ar)
    tp_comm_total = tp_comm_total + np.where(rec == 2, np.where(sp, 2 * ag + 2 * rs, 2 * ar), 0.0)

    # ---- parameters and memory per GPU (first stage)
    p_block = block_params(model) / t
    p_stage = p_block * n_s
    opt_bpp = OPTIMIZER_BYTES_PER_PARAM[datatype]
    shard = np.where(k["optimizer_sharding"].astype(bool), dp, 1.0)
    weights_b = p_stage * e
    grads_b = p_stage * GRAD_BYTES_PER_PARAM
    optim_b = p_stage * opt_bpp / shard

    # Activations kept for the backward of one block and one microbatch
    # (Korthikanti et al. 2022, sec. 4: 34 + 5as/h bytes per s*b*h in fp16).
    mask = 1.0                                       # dropout masks: one byte per element
    full_in = tok * h * e / sp_div                   # a block's input, as passed between blocks
    gathered = tok * h * e / np.where(ag_redo, t, 1.0)  # qkv's and mlp1's input
    gathered = np.where(sp, gathered, tok * h * e)
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
    chunks_live = in_flight_chunks(pp, v, m)
    blocks_live = chunks_live * n_s / v              # block-microbatches held
    act_total = stored * blocks_live
    working = np.where(rec == 2, stored_none, 0.0)   # the block being recomputed

    # ---- offload: which bytes live in the second tier, and what moves
    ow = k["offload_weights"].astype(bool)
    oa = k["offload_activations"].astype(bool)
    oo = k["offload_optimizer"].astype(bool)
    w_block = p_block * e
    g_block = p_block * GRAD_BYTES_PER_PARAM
    # HBM keeps two blocks' worth of what is offloaded: the one computing and
    # the one being prefetched (or written back).
    hbm_weights = np.where(ow, np.minimum(2, n_s) * w_block, weights_b)
    hbm_grads = np.where(ow, np.minimum(2, n_s) * g_block, grads_b)
    hbm_optim = np.where(oo, np.minimum(2, n_s) * p_block * opt_bpp / shard, optim_b)
    hbm_acts = np.where(oa, np.minimum(2, blocks_live) * stored, act_total)
    ckpt = np.where(rec == 2, hbm_acts, 0.0)
    acts = np.where(rec == 2, working, hbm_acts)
    hbm_total = hbm_weights + hbm_grads + hbm_optim + ckpt + acts
    off_total = (np.where(ow, weights_b + grads_b, 0.0) + np.where(oo, optim_b, 0.0)
                 + np.where(oa, act_total, 0.0))

    # Bytes over the offload link per block per microbatch, each direction:
    # forward reads the weights and writes the activations; backward reads
    # weights, activations and the gradient accumulator, and writes it back.
    fw_in = np.where(ow, w_block, 0.0)
    fw_out = np.where(oa, stored, 0.0)
    bw_in = np.where(ow, w_block + g_block, 0.0) + np.where(oa, stored, 0.0)
    bw_out = np.where(ow, g_block, 0.0)
    off_bw = system.offload_gbps * 1e9
    fw_pass = fw_compute + fw_tp
    bw_pass = bw_compute + bw_tp + re_compute + re_tp
    with np.errstate(divide="ignore", invalid="ignore"):
        fw_move = np.maximum(fw_in, fw_out) / off_bw if off_bw > 0 else np.zeros(shape)
        bw_move = np.maximum(bw_in, bw_out) / off_bw if off_bw > 0 else np.zeros(shape)
        need_gbps = np.maximum(np.maximum(fw_in, fw_out) / fw_pass,
                               np.maximum(bw_in, bw_out) / bw_pass) / 1e9
    offload_over = np.maximum(fw_move - fw_pass, 0.0) + np.maximum(bw_move - bw_pass, 0.0)

    # ---- pipeline: one microbatch through this stage, and the bubble
    # Megatron's scatter/gather optimisation (Narayanan et al. 2021, sec.
    # 4.1): each TP rank sends 1/tp of the activations across the stage
    # boundary; without sequence parallelism the receiver all-gathers them
    # over the TP network.
    p2p = collective_time(system, "p2p", tok * h * e / t, np.where(pp > 1, 2, 1), pp_net_c)
    p2p = p2p + np.where((pp > 1) & ~sp, ag, 0.0)
    # Each microbatch crosses the stage boundary once per model chunk, forward
    # and backward; Megatron's sends are not overlapped with compute.
    pp_mb = 2 * v * p2p
    mb_fw = n_s * fw_compute
    mb_bw = n_s * bw_compute
    mb_re = n_s * re_compute
    mb_tp = n_s * (fw_tp + bw_tp + re_tp)
    mb_off = n_s * offload_over
    t_mb = mb_fw + mb_bw + mb_re + mb_tp + mb_off + pp_mb
    bubble = (pp - 1) / v * t_mb

    # ---- optimizer step (Adam), on this GPU's shard
    p_opt = p_stage / shard
    opt_bytes = p_opt * (2 * opt_bpp + GRAD_BYTES_PER_PARAM + e)
    optimizer_t = vec(ADAM_FLOPS_PER_PARAM * p_opt, np.where(oo, 0.0, opt_bytes))
    opt_move = np.where(oo, p_opt * opt_bpp / off_bw if off_bw > 0 else np.inf, 0.0)
    optimizer_t = np.where(oo, np.maximum(optimizer_t, opt_move), optimizer_t)

    # ---- DP: reduce the gradients (and gather the weights when sharded)
    gcomm = p_stage * GRAD_COMM_BYTES[datatype]
    dp_time = np.where(k["optimizer_sharding"].astype(bool),
                       collective_time(system, "reduce_scatter", gcomm, dp, dp_net_c)
                       + collective_time(system, "all_gather", weights_b, dp, dp_net_c),
                       collective_time(system, "all_reduce", gcomm, dp, dp_net_c))
    # Overlapped, it hides behind the backward of the last microbatch (the
    # gradients are final only then), which it slows by its processor share.
    u_dp = _tier_table(system, "processor_share")[dp_net_c]
    window = mb_bw + mb_re
    dp_ovl = k["dp_overlap"].astype(bool) & (dp > 1)
    dp_exposed = np.where(dp_ovl, np.maximum(dp_time - window, 0.0) + u_dp * np.minimum(dp_time, window),
                          dp_time)

    time_s = m * t_mb + bubble + optimizer_t + dp_exposed

    # ---- throughput and utilisation
    gpus = t * pp * dp
    peak = system.matrix_tflops[datatype] * 1e12
    model_flops = 3 * block_matrix_flops(model, batch * s) * L
    recompute_flops = batch * L * np.select(
        [rec == 2, rec == 1], [block_matrix_flops(model, s), 4 * s * s * A], 0.0)
    r.update(
        time_s=time_s,
        samples_per_s=batch / time_s,
        tokens_per_s=batch * s / time_s,
        mfu=model_flops / (time_s * gpus * peak),
        hfu=(model_flops + recompute_flops) / (time_s * gpus * peak),
        forward_s=m * mb_fw, backward_s=m * mb_bw, recompute_s=m * mb_re,
        optimizer_s=optimizer_t, bubble_s=bubble,
        tp_comm_s=m * mb_tp, pp_comm_s=m * pp_mb, dp_comm_s=dp_exposed,
        offload_s=m * mb_off,
        tp_comm_total_s=m * n_s * tp_comm_total, dp_comm_total_s=dp_time,
        microbatches=m, blocks_per_stage=n_s,
        weights_bytes=hbm_weights, gradients_bytes=hbm_grads, optimizer_bytes=hbm_optim,
        activations_bytes=acts, checkpoints_bytes=ckpt,
        stored_activations_bytes=act_total,
        hbm_bytes=hbm_total, offload_bytes=off_total,
        offload_gbps_required=np.where(any_offload, need_gbps, 0.0),
    )
    r["rule_hbm_capacity"] = hbm_total > system.hbm_gib * GIB
    r["rule_offload_capacity"] = off_total > system.offload_gib * GIB
    r["feasible"] = ~np.logical_or.reduce([r[n] for n in r if n.startswith("rule_")])
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
