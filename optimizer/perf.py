"""The analytical model: time and memory of one training iteration of a
decoder-only transformer under tensor (TP), pipeline (PP) and data (DP)
parallelism.

The model reads in three layers:

1. **Operators.** A block is a list of operator records (`block_ops`): each
   knows its forward FLOPs and bytes, its activation-gradient and
   weight-gradient kernels, the parameters it holds, the tensors it keeps
   for the backward (and which recomputation drops them), which
   recomputation modes redo it, and the TP collective attached to it
   (Megatron's column- and row-parallel linears). A stage is a list of
   blocks plus extras: the embedding on the first stage, the final norm,
   logits and loss on the last (`stage_extras`, empty when the model has no
   vocabulary). Parameters, model FLOPs, time and memory are sums over
   these lists.
2. **Terms.** Per block and microbatch (`block_terms`), per stage
   (`state_bytes`, `memory_terms`, offload, PP sends), per iteration
   (optimizer, DP reduction).
3. **One composition** of time (`microbatch_time`, `iteration_time`) and of
   memory (`memory_terms`). `evaluate_arrays` calls them with the exact
   terms; the search calls the very same functions with relaxed terms (the
   least any member of a group can do) to bound a group, and explain with
   the least-memory terms. A bound is never a second formula.

Every function takes NumPy arrays of strategies as readily as scalars. The
method follows Calculon (Isaev et al., SC'23) and the Megatron-LM papers
(Narayanan et al., SC'21; Korthikanti et al., 2022, whose activation-memory
accounting, section 4, the kept tensors below reproduce tensor by tensor).
Knob codes are those of optimizer.knobs; rules live in optimizer.rules.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import numpy as np

from . import knobs as K
from .knobs import CpComm, Recompute, TpComm, TpOverlap
from .rules import TEXT, check, normalise_tier, placement_violation  # noqa: F401 (re-exported)
from .spec import BYTES_PER_ELEMENT, Model, System

KNOBS = K.NAMES
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
# With fp8 training only the linear layers' matrix multiplies run in fp8
# (Transformer Engine's recipe, as in the published H100 runs): their
# operands are cast to fp8 as they go in; parameters, activations,
# attention, element-wise work and communication stay in bf16.
ACTIVATION_DTYPE = {"fp8": "bf16", "bf16": "bf16", "fp16": "fp16", "fp32": "fp32"}


def act_bytes(datatype: str) -> int:
    """Bytes per element of activations, stored weights and messages."""
    return BYTES_PER_ELEMENT[ACTIVATION_DTYPE[datatype]]


# Dropout masks: one byte per element.
MASK_BYTES = 1
# The loss reads the logits in fp32 (Megatron's vocab-parallel cross entropy).
LOGIT_BYTES = 4
ALL_MODES = frozenset({Recompute.ATTN, Recompute.FULL})
FULL_ONLY = frozenset({Recompute.FULL})
NEVER = frozenset()


# ------------------------------------------------------------ operators

@dataclass(frozen=True)
class Op:
    """One operator of a block or stage extra, per GPU, for one microbatch.
    Array fields broadcast over strategies.

    fw          (flops, bytes) of the forward
    ig, wg      activation-gradient and weight-gradient kernels, each a
                tuple of (flops, bytes)
    params      parameters this GPU holds for it
    kept        tensors kept for the backward: (bytes, recomputation modes
                that do not keep them)
    redo        recomputation modes that run it again in the backward
    low         timed at the training datatype's matrix rate (the linear
                layers); everything else at the activations' datatype
    tp          TP collective: 'column' (input gathered with sequence
                parallelism, input gradient reduced), 'row' (output
                reduced), or None
    model_flops forward matrix FLOPs of the whole layer, unsharded (MFU)
    exchange    bytes of this GPU's K and V chunk that context parallelism
                passes to the other CP ranks (the core attention), or 0"""

    name: str
    matrix: bool
    fw: tuple
    ig: tuple
    wg: tuple = ()
    params: object = 0.0
    kept: tuple = ()
    redo: frozenset = FULL_ONLY
    tp: str | None = None
    model_flops: object = 0.0
    low: bool = False
    exchange: object = 0.0


def _linear(name, tok, n_in, n_out, t, e, tp_role, kept_in, bias=True, redo=FULL_ONLY, e_mm=None):
    """A linear layer split over t GPUs (column- or row-parallel): `tok`
    tokens, n_in -> n_out whole. Its input gradient and weight gradient are
    matmuls of the forward's size, each reading two operands (`e_mm` bytes
    an element, fp8 in fp8 training) and writing one (`e` bytes), as the
    forward does."""
    e_mm = e if e_mm is None else e_mm
    col = tp_role == "column"
    w = n_in * n_out / t
    x_in = tok * (n_in if col else n_in / t)
    x_out = tok * (n_out / t if col else n_out)
    kernel = (2 * tok * w, (x_in + w) * e_mm + x_out * e)
    b = (n_out / t if col else n_out) if bias else 0.0
    return Op(name, True, kernel, (kernel,), (kernel,), params=w + b, kept=kept_in, redo=redo,
              tp=tp_role, model_flops=2.0 * tok * n_in * n_out, low=True)


def _cast(linear: Op, tok, n_in, n_out, t, e, e_mm):
    """fp8 casts around a linear layer: its input on the way in (with the
    scaling's max), the output gradient on the way back; read e, write e_mm
    bytes an element. (Weights are cast once a step, not per microbatch.)"""
    col = linear.tp == "column"
    x_in = tok * (n_in if col else n_in / t)
    x_out = tok * (n_out / t if col else n_out)
    return Op(linear.name + "_cast", False, (2 * x_in, x_in * (e + e_mm)), ((2 * x_out, x_out * (e + e_mm)),))


def _vector(name, flops, nbytes, kept=(), redo=FULL_ONLY, params=0.0):
    """An elementwise or normalisation op. Its backward reads the saved
    input and the incoming gradient and writes one: charged as two passes
    of the forward's kernel."""
    k = (flops, nbytes)
    return Op(name, False, k, (k, k), params=params, kept=kept, redo=redo)


def _norm(model, name, n_tokens_h, e, h, drop=FULL_ONLY):
    """A layer norm (5 FLOPs an element, scale and shift) or RMS norm (4,
    scale only), keeping its input (dropped by the modes in `drop`)."""
    flops = 5 if model.norm == "layernorm" else 4
    params = 2 * h if model.norm == "layernorm" else h
    return _vector(name, flops * n_tokens_h, 2 * n_tokens_h * e, kept=((n_tokens_h * e, drop),),
                   params=params)


def _gated(op: Op, on) -> Op:
    """`op` where `on` (a boolean array) holds, nothing elsewhere: its
    kernels and kept bytes scaled by 0 or 1 (a kernel shared by several
    passes stays shared)."""
    w = np.asarray(on, dtype=float)
    scaled = {}

    def k(kernel):
        if id(kernel) not in scaled:
            scaled[id(kernel)] = (kernel[0] * w, kernel[1] * w)
        return scaled[id(kernel)]

    return Op(op.name, op.matrix, k(op.fw), tuple(map(k, op.ig)), tuple(map(k, op.wg)), params=op.params,
              kept=tuple((b * w, drop) for b, drop in op.kept), redo=op.redo, tp=op.tp,
              model_flops=op.model_flops, exchange=op.exchange * w)


def block_ops(model: Model, datatype: str, tp, microbatch, sp, ag_redo, fused, flash=False, cp=1,
              cp_comm=CpComm.RING) -> list:
    """The operators of one block for one microbatch on one GPU, in order.
    `sp`: sequence parallelism (the h-wide tensors sharded over tp);
    `ag_redo`: qkv's and mlp1's inputs kept sharded and gathered again for
    the backward; `fused`: the activation function fused into mlp1;
    `flash`: the core attention as one fused kernel (FlashAttention);
    `cp`: context parallelism, this GPU's share of each sequence 1/cp (two
    chunks, one from each end: the causal work balanced), `cp_comm` how its
    attention gets the other ranks' K and V (CpComm)."""
    e, e_mm = act_bytes(datatype), BYTES_PER_ELEMENT[datatype]
    h, f, s = float(model.hidden), float(model.feedforward), float(model.seq_len)
    a, d = float(model.heads), float(model.head_dim)
    A, KV = float(model.attn_width), float(model.kv_width)
    t = np.asarray(tp, dtype=float)
    c = np.asarray(cp, dtype=float)
    tok = np.asarray(microbatch, dtype=float) * s / c      # tokens per microbatch on this GPU
    sp = np.asarray(sp, dtype=bool)
    ag_redo = np.asarray(ag_redo, dtype=bool) & sp
    fused = np.asarray(fused, dtype=bool)
    bias = model.norm == "layernorm"                        # GPT-style blocks carry biases
    sp_div = np.where(sp, t, 1.0)
    nh = tok * h / sp_div                                   # an h-wide tensor on this GPU
    gathered = np.where(sp, tok * h * e / np.where(ag_redo, t, 1.0), tok * h * e)
    # score elements per GPU: this rank's s/cp queries against the s keys;
    # with the load-balanced causal split its share of the masked work is
    # 1/cp of the whole too (the fused kernel's causal factor below)
    att = np.asarray(microbatch, dtype=float) * (a / t) * s * s / c
    q, kv = tok * A / t, tok * KV / np.minimum(t, model.kv_heads)  # K, V replicated when tp > kv_heads
    width = f * (2 if model.gated_mlp else 1)               # mlp1's output (gate and up when gated)
    nf = tok * f / t
    core = ALL_MODES                                        # selective recomputation redoes these

    def bmm(name, flops, nbytes, kept):
        # both operands are activations: two gradient matmuls, no weights
        k = (flops, nbytes)
        return Op(name, True, k, (k, k), kept=kept, redo=core, model_flops=flops * t)

    # the core attention, unfused: scores, softmax, dropout, product with V
    unfused = [
        bmm("scores", 2 * att * d, (q + kv + att) * e, ((q * e + kv * e, FULL_ONLY),)),
        _vector("softmax", 5 * att, 2 * att * e, kept=((att * e, ALL_MODES),), redo=core),
        _vector("attn_dropout", att, 2 * att * e + att * MASK_BYTES,
                kept=((att * MASK_BYTES, ALL_MODES),), redo=core),
        bmm("attn_v", 2 * att * d, (att + q + kv) * e, ((att * e, ALL_MODES), (kv * e, FULL_ONLY))),
    ]
    # fused (Dao et al. 2022): one kernel reads Q, K, V and writes the output
    # and the softmax statistics (4 bytes per row); nothing s x s reaches
    # HBM. It skips the tiles the causal mask blanks out: half the score
    # matrix (the unfused path computes all of it and masks). Its backward
    # recomputes the scores and runs four more matmuls of the forward's
    # size (dV, dP, dQ, dK): 5/2 of the forward's FLOPs. The output is the
    # projection's input, kept there. (MFU counts attention without the
    # mask, as Megatron's formula does: model_flops are the unfused ones.)
    # With context parallelism the kernel reads the K and V of the whole
    # sequence (cp chunks: passed round the ring, or gathered) and writes dK
    # and dV for all of them (reduced back to their owners). The all-gather
    # variant keeps the gathered K and V for the backward (it gathers once);
    # the ring keeps this rank's chunk and passes the others again.
    flash = np.asarray(flash, dtype=bool)
    stats = tok * (a / t) * 4.0
    causal = 0.5
    kv_all = kv * c
    kv_kept = np.where((np.asarray(cp_comm) == CpComm.ALLGATHER) & (c > 1), kv_all, kv)
    fw_fused = (causal * 4 * att * d, (2 * q + 2 * kv_all) * e + stats)
    bw_fused = (causal * 10 * att * d, (3 * q + 2 * kv_all) * e + stats + (q + 2 * kv_all) * e)
    fused_attn = Op("flash_attention", True, fw_fused, (bw_fused,), kept=((q * e + 2 * kv_kept * e, FULL_ONLY),
                                                                           (stats, FULL_ONLY)),
                    exchange=np.where(c > 1, 2 * kv * e, 0.0))
    if flash.any():
        attention = [_gated(op, ~flash) for op in unfused] + [_gated(fused_attn, flash)]
    else:
        attention = unfused
    ops = [
        # the block's input: what full recomputation keeps (its checkpoint)
        _norm(model, "ln1", nh, e, h, drop=NEVER),
        _linear("qkv", tok, h, A + 2 * KV, t, e, "column", ((gathered, FULL_ONLY),), bias, e_mm=e_mm),
        *attention,
        _linear("proj", tok, A, h, t, e, "row", ((q * e, FULL_ONLY),), bias, e_mm=e_mm),
        _vector("residual1", 2 * nh, 3 * nh * e + nh * MASK_BYTES, kept=((nh * MASK_BYTES, FULL_ONLY),)),
        _norm(model, "ln2", nh, e, h),
        _linear("mlp1", tok, h, width, t, e, "column", ((gathered, FULL_ONLY),), bias, e_mm=e_mm),
        # the activation (and the gate's product when gated) reads mlp1's
        # output; fused into mlp1's epilogue it writes nothing to HBM and
        # its output is recomputed for mlp2's weight gradient, not kept
        _vector("activation", (8 + (1 if model.gated_mlp else 0)) * nf,
                np.where(fused, 0.0, (width / f + 1) * nf * e),
                kept=((width / f * nf * e, FULL_ONLY), (np.where(fused, 0.0, nf * e), FULL_ONLY))),
        _linear("mlp2", tok, f, h, t, e, "row", (), bias, e_mm=e_mm),
        _vector("residual2", 2 * nh, 3 * nh * e + nh * MASK_BYTES, kept=((nh * MASK_BYTES, FULL_ONLY),)),
    ]
    if e_mm != e:
        shapes = {"qkv": (h, A + 2 * KV), "proj": (A, h), "mlp1": (h, width), "mlp2": (f, h)}
        ops = [x for op in ops for x in ([op, _cast(op, tok, *shapes[op.name], t, e, e_mm)]
                                          if op.name in shapes else [op])]
    return ops


def stage_extras(model: Model, datatype: str, tp, microbatch, sp, cp=1) -> tuple[list, list]:
    """Operators outside the blocks: (first stage, last stage). The
    embedding lookup on the first; the final norm, the logits matmul and
    the softmax cross-entropy on the last, vocabulary-parallel over tp as in
    Megatron, each GPU on its 1/cp of the sequence. Empty without a
    vocabulary."""
    if model.vocab <= 0:
        return [], []
    e = act_bytes(datatype)                     # the output layer stays in 16 bits
    h, V = float(model.hidden), float(model.vocab)
    t = np.asarray(tp, dtype=float)
    tok = np.asarray(microbatch, dtype=float) * model.seq_len / np.asarray(cp, dtype=float)
    sp = np.asarray(sp, dtype=bool)
    nh = tok * h / np.where(sp, t, 1.0)
    emb_params = V * h / t
    # lookup: read the rows, write the activations; the gradient scatters back
    embedding = Op("embedding", False, (0.0, 2 * tok * h * e), ((0.0, 2 * tok * h * e),),
                   params=emb_params, tp="row")
    logits = dataclasses.replace(_linear("logits", tok, h, V, t, e, "column",
                                         ((np.where(sp, tok * h * e / t, tok * h * e), FULL_ONLY),), bias=False),
                                 low=False)
    if model.tied_embeddings:
        # the last stage holds its own copy when the pipeline splits them
        # (Megatron); counted once in the parameter total (model_params)
        logits = dataclasses.replace(logits, params=emb_params)
    nv = tok * V / t
    loss = _vector("cross_entropy", 5 * nv, 2 * nv * LOGIT_BYTES, kept=((nv * LOGIT_BYTES, FULL_ONLY),))
    return [embedding], [_norm(model, "final_norm", nh, e, h), logits, loss]


@functools.lru_cache(maxsize=256)
def _whole_block(model: Model) -> dict:
    """Sums over one whole (unsharded) block's operators, per sequence:
    parameters, forward matrix FLOPs, and the FLOPs each recomputation mode
    redoes."""
    ops = block_ops(model, "bf16", 1, 1, False, False, False)
    flops = {mode: sum(float(np.sum(op.model_flops)) for op in ops if op.matrix and mode in op.redo)
             for mode in (Recompute.ATTN, Recompute.FULL)}
    return {"params": float(sum(np.sum(op.params) for op in ops)),
            "flops": sum(float(np.sum(op.model_flops)) for op in ops if op.matrix),
            "redo_flops": flops}


def block_params(model: Model) -> float:
    """Parameters of one transformer block (whole, unsharded)."""
    return _whole_block(model)["params"]


def model_params(model: Model) -> float:
    """Parameters of the whole model: blocks, and the embedding and output
    layer (once when tied)."""
    first, last = stage_extras(model, "bf16", 1, 1, False)
    extra = sum(float(np.sum(op.params)) for op in first + last)
    if model.tied_embeddings and first:
        extra -= model.vocab * model.hidden
    return block_params(model) * model.blocks + extra


def model_flops_per_sequence(model: Model) -> float:
    """Forward matrix FLOPs of one sequence through the whole model:
    the blocks and the logits (Megatron's throughput formula counts these,
    times 3 for the backward, attention without the causal mask)."""
    _, last = stage_extras(model, "bf16", 1, 1, False)
    return _whole_block(model)["flops"] * model.blocks + sum(float(np.sum(op.model_flops))
                                                             for op in last if op.matrix)


def block_matrix_flops(model: Model, tokens):
    """Forward matrix FLOPs of one block for `tokens` tokens, unsharded."""
    return _whole_block(model)["flops"] * np.asarray(tokens, dtype=float) / model.seq_len


# ----------------------------------------------------------- efficiencies

@functools.lru_cache(maxsize=64)
def _log_curve(curve: tuple):
    return np.log([p[0] for p in curve]), np.array([p[1] for p in curve])


def efficiency(curve, size):
    """Efficiency at `size` from (size, eff) points, linear in log(size),
    clamped at both ends."""
    xs, ys = _log_curve(tuple(curve))
    return np.interp(np.log(np.maximum(size, 1e-30)), xs, ys)


def op_time(system: System, datatype: str, flops, nbytes, matrix: bool):
    """Time of one kernel: its FLOPs at the (matrix or vector) peak times
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


COLLECTIVE_FACTOR = {
    # bytes each GPU sends, per byte of the full buffer, in a ring of n
    "all_reduce": lambda n: 2 * (n - 1) / n,
    "reduce_scatter": lambda n: (n - 1) / n,
    "all_gather": lambda n: (n - 1) / n,
    "p2p": lambda n: np.ones_like(n),
}


def collective_time(system: System, op: str, nbytes, group, tier):
    """Seconds for one collective of `nbytes` (the full buffer) among `group`
    GPUs on network tier `tier`: ring algorithms, so all-reduce moves
    2(n-1)/n of the buffer per GPU, reduce-scatter and all-gather (n-1)/n,
    and p2p sends the buffer once. Zero for a group of one."""
    group = np.asarray(group, dtype=float)
    tier = np.asarray(tier, dtype=np.int64)
    gbps = _tier_table(system, "gbps")[tier]
    eff = _tier_table(system, "efficiency")[tier]
    lat = _tier_table(system, "latency_s")[tier]
    n = np.maximum(group, 1.0)
    t = lat + COLLECTIVE_FACTOR[op](n) * np.asarray(nbytes, dtype=float) / (gbps * 1e9 * eff)
    return np.where(group > 1, t, 0.0)


def overlapped(comm, compute, chunks, share):
    """Exposed time of a collective run alongside `compute` (the matmul it
    feeds or follows, or the backward DP hides behind), both split in
    `chunks`. While the collective runs it takes `share` of the processor
    (the network's kernels occupy compute units), so the compute loses
    share x comm; the two end together at max(comm, compute + share x comm);
    one chunk of the shorter side cannot hide (pipeline fill). Returns that
    total minus the compute alone: non-decreasing in comm, and with
    chunks = inf non-increasing in compute."""
    total = np.maximum(comm, compute + share * comm)
    with np.errstate(divide="ignore", invalid="ignore"):
        fill = np.where(np.isinf(chunks), 0.0, np.minimum(comm, compute) / chunks)
    return total + fill - compute


def _tp_exposed(system, datatype, ops, times, tp, sp, ag_redo, tp_overlap, tp_net, tok_h_bytes):
    """Exposed TP communication of a list of operators: (forward, backward,
    the all-gather time). A column-parallel linear gathers its input in the
    forward (with sequence parallelism) and reduces its input gradient in
    the backward (reduce-scatter, or all-reduce without sequence
    parallelism); with `ag_redo` it gathers its input once more for the
    weight gradient. A row-parallel linear reduces its output in the
    forward (reduce-scatter, or all-reduce) and gathers the gradient in the
    backward with sequence parallelism. Each collective hides behind the
    operator's forward kernel when overlapped."""
    t = np.asarray(tp, dtype=float)
    tier = normalise_tier(system, tp_net)
    share = _tier_table(system, "processor_share")[tier]
    ar = collective_time(system, "all_reduce", tok_h_bytes, t, tier)
    ag = collective_time(system, "all_gather", tok_h_bytes, t, tier)
    rs = ag             # a ring reduce-scatter moves what an all-gather does
    tp_overlap = np.asarray(tp_overlap)
    chunks = np.where(tp_overlap == TpOverlap.RING, t, PIPE_CHUNKS)
    on = tp_overlap > TpOverlap.NONE

    def exposed(comm, compute):
        return np.where(on, overlapped(comm, compute, chunks, share), comm)

    fw = bw = 0.0
    for op, tm in zip(ops, times):
        if op.tp is not None and op.matrix:
            x_ag, x_ar = exposed(ag, tm), exposed(ar, tm)
            x_rs = x_ag if rs is ag else exposed(rs, tm)
        if op.tp == "column":
            fw = fw + np.where(sp, x_ag, 0.0)
            bw = bw + np.where(sp, x_rs + np.where(ag_redo, x_ag, 0.0), x_ar)
        elif op.tp == "row" and op.matrix:
            fw = fw + np.where(sp, x_rs, x_ar)
            bw = bw + np.where(sp, x_ag, 0.0)
        elif op.tp == "row":
            # the embedding's output is reduced over the vocabulary shards
            fw = fw + np.where(sp, rs, ar)
            bw = bw + np.where(sp, ag, 0.0)
    return fw, bw, ag


def _cp_exposed(system, ops, fw_times, bw_times, cp, cp_comm, cp_net):
    """Exposed K and V exchange of context parallelism (forward, backward)
    for the operators that carry one (Op.exchange: this GPU's K and V
    chunk), over the CP group on its tier. Ring (Liu et al. 2023, ring
    attention; Megatron-Core's p2p CP): cp - 1 steps each passing a chunk
    to the next rank while the kernel computes on the one it holds; the
    backward passes K and V again and dK and dV with them, twice the bytes;
    each pass exposes what its kernel does not cover, max(0, comm -
    kernel). All-gather: K and V gathered before the forward (the whole
    sequence's, cp chunks), dK and dV reduce-scattered after the backward;
    not overlapped."""
    c = np.asarray(cp, dtype=float)
    tier = normalise_tier(system, cp_net)
    ring = np.asarray(cp_comm) == CpComm.RING
    fw = bw = 0.0
    for op, tf, tb in zip(ops, fw_times, bw_times):
        if not np.any(np.asarray(op.exchange) > 0):
            continue
        step = collective_time(system, "p2p", op.exchange, c, tier)
        ring_fw = np.maximum((c - 1) * step - tf, 0.0)
        ring_bw = np.maximum(2 * (c - 1) * step - tb, 0.0)
        gather = collective_time(system, "all_gather", op.exchange * c, c, tier)
        scatter = collective_time(system, "reduce_scatter", op.exchange * c, c, tier)
        fw = fw + np.where(ring, ring_fw, gather)
        bw = bw + np.where(ring, ring_bw, scatter)
    return fw, bw


def ops_terms(system: System, datatype: str, ops: list, tp, sp, ag_redo, tp_overlap, tp_net,
              tok_h_bytes, recompute, cp=1, cp_comm=CpComm.RING, cp_net=0) -> dict:
    """Sums over a list of operators for one microbatch: forward, backward
    and recomputation compute times, their exposed TP communication and
    exposed CP exchange (`*_cp`), and the bytes kept for the backward (per
    recomputation mode: what the mode keeps; `working`, what a fully
    recomputed block holds while it runs)."""
    rec = np.asarray(recompute)
    if not ops:
        zero = np.zeros(np.broadcast(rec, np.asarray(tp)).shape)
        return dict(fw_compute=zero, bw_compute=zero, re_compute=zero, fw_tp=zero, bw_tp=zero,
                    re_tp=zero, fw_cp=zero, bw_cp=zero, re_cp=zero, ag=zero, stored=zero, working=zero)
    is_mode = {mode: rec == mode for mode in (Recompute.ATTN, Recompute.FULL)}
    timed = {}          # a kernel shared by several passes is timed once

    def kernel_time(op, k):
        if id(k) not in timed:
            timed[id(k)] = op_time(system, datatype if op.low else ACTIVATION_DTYPE[datatype], *k, op.matrix)
        return timed[id(k)]

    fw_t = [kernel_time(op, op.fw) for op in ops]
    fw = sum(fw_t, 0.0)
    bw_t = [sum((kernel_time(op, k) for k in op.ig + op.wg), 0.0) for op in ops]
    bw = sum(bw_t, 0.0)
    # recomputation: the forward of every operator the mode redoes
    re = 0.0
    for mode, on in is_mode.items():
        redone = sum((tm for op, tm in zip(ops, fw_t) if mode in op.redo), 0.0)
        re = re + np.where(on, redone, 0.0)
    fw_tp, bw_tp, ag = _tp_exposed(system, datatype, ops, fw_t, tp, sp, ag_redo, tp_overlap, tp_net,
                                   tok_h_bytes)
    re_tp = np.where(is_mode[Recompute.FULL], fw_tp, 0.0)
    fw_cp, bw_cp = _cp_exposed(system, ops, fw_t, bw_t, cp, cp_comm, cp_net)
    re_cp = np.where(is_mode[Recompute.FULL], fw_cp, 0.0)     # the redone forward exchanges again
    # kept tensors by the modes that drop them: none, full only, both
    by_drop = {}
    for op in ops:
        for nbytes, drop in op.kept:
            by_drop[drop] = by_drop.get(drop, 0.0) + nbytes
    kept = {mode: sum((v for drop, v in by_drop.items() if mode not in drop), 0.0) for mode in Recompute}
    stored = np.where(is_mode[Recompute.FULL], kept[Recompute.FULL],
                      np.where(is_mode[Recompute.ATTN], kept[Recompute.ATTN], kept[Recompute.NONE]))
    return dict(fw_compute=fw, bw_compute=bw, re_compute=re, fw_tp=fw_tp, bw_tp=bw_tp, re_tp=re_tp,
                fw_cp=fw_cp, bw_cp=bw_cp, re_cp=re_cp, ag=ag, stored=stored, working=np.where(is_mode[Recompute.FULL], kept[Recompute.NONE], 0.0))


def block_terms(model: Model, system: System, datatype: str, k: dict) -> dict:
    """One block, one microbatch, on one GPU: compute times of the forward,
    backward and recomputation, exposed TP communication of each, and the
    activation bytes kept for the backward. `k` holds the codes of the
    knobs the block reads (knobs.BLOCK) and nothing about the pipeline or
    data parallelism, so the search tabulates these terms over them alone."""
    sp = np.asarray(k["tp_comm"]) > TpComm.AR
    ag_redo = np.asarray(k["ag_redo"]).astype(bool) & sp
    ops = block_ops(model, datatype, k["tp"], k["microbatch"], sp, ag_redo, k["fused_activation"],
                    k["flash_attention"], k["cp"], k["cp_comm"])
    tok_h_bytes = (np.asarray(k["microbatch"], dtype=float) * model.seq_len / np.asarray(k["cp"], dtype=float)
                   * model.hidden * act_bytes(datatype))
    return ops_terms(system, datatype, ops, k["tp"], sp, ag_redo, k["tp_overlap"], k["tp_net"], tok_h_bytes,
                     k["recompute"], k["cp"], k["cp_comm"], k["cp_net"])


def extras_terms(model: Model, system: System, datatype: str, tp, microbatch, recompute, tp_comm,
                 tp_overlap, tp_net, cp=1) -> tuple[dict, dict]:
    """The stage extras' terms (first stage, last stage), as block_terms;
    their parameters under 'params'. Zero without a vocabulary."""
    sp = np.asarray(tp_comm) > TpComm.AR
    first, last = stage_extras(model, datatype, tp, microbatch, sp, cp)
    tok_h_bytes = (np.asarray(microbatch, dtype=float) * model.seq_len / np.asarray(cp, dtype=float)
                   * model.hidden * act_bytes(datatype))
    out = []
    for ops in (first, last):
        terms = ops_terms(system, datatype, ops, tp, sp, False, tp_overlap, tp_net, tok_h_bytes, recompute)
        terms["params"] = sum((op.params for op in ops), 0.0)
        out.append(terms)
    return out[0], out[1]


# ------------------------------------------------------------- pipeline

def in_flight_chunks(pp, interleave, microbatches, stage=0):
    """Model chunks (each blocks/(pp*interleave) blocks for one microbatch)
    whose activations pipeline stage `stage` holds at its peak: pp - stage
    microbatches for the plain 1F1B schedule; (v-1)*pp + 2*(pp-1-stage) + 1
    for the interleaved one (Narayanan et al. 2021; at stage 0 that is
    Korthikanti's (1 + (p-1)/(p*v)) factor); never more than the chunks the
    batch has. The first stage holds the most."""
    pp, v, m = (np.asarray(x) for x in (pp, interleave, microbatches))
    plain = np.minimum(pp - stage, m)
    inter = np.minimum((v - 1) * pp + 2 * (pp - 1 - stage) + 1, m * v)
    return np.where(v > 1, inter, plain)


def pipeline_p2p_time(model: Model, system: System, datatype: str, tp, microbatch, sp,
                      pp, interleave, pp_net, ag, cp=1):
    """PP communication on the critical path of one microbatch through one
    stage. Megatron's scatter/gather optimisation (Narayanan et al. 2021,
    sec. 4.1): each TP rank sends 1/tp of the activations across the stage
    boundary; without sequence parallelism the receiver all-gathers them over
    the TP network (`ag`). Each microbatch crosses the boundary once per model
    chunk, forward and backward; the sends are not overlapped with compute.
    Each CP rank sends its own 1/cp of the sequence."""
    e = act_bytes(datatype)
    pp = np.asarray(pp, dtype=float)
    tok = np.asarray(microbatch, dtype=float) * model.seq_len / np.asarray(cp, dtype=float)
    p2p = collective_time(system, "p2p", tok * model.hidden * e / np.asarray(tp, dtype=float),
                          np.where(pp > 1, 2, 1), normalise_tier(system, pp_net))
    p2p = p2p + np.where((pp > 1) & ~np.asarray(sp, dtype=bool), ag, 0.0)
    return 2 * np.asarray(interleave, dtype=float) * p2p


def microbatch_time(blocks, compute, tp_exposed, offload, pp_comm, extra=0.0, zero3=0.0):
    """Seconds of one microbatch through one stage: its blocks' compute,
    exposed TP (and CP) communication, offload overhead and exposed ZeRO-3
    communication, the stage extras' time, and the PP sends."""
    return blocks * (compute + tp_exposed + offload + zero3) + extra + pp_comm


EXTRA_TIMES = ("fw_compute", "bw_compute", "re_compute", "fw_tp", "bw_tp", "re_tp")


def slowest_stage(stages, compute, tp_exposed, offload, pp_comm, zero3=0.0):
    """The microbatch time of the slowest of `stages` (pipeline_memory's
    list), and that stage's blocks and extras' times: every stage's blocks
    (microbatch_time) plus its extras' time."""
    t_mb, slow = None, None
    for blocks, _, x, exists in stages:
        ex = {n: np.asarray(x.get(n, 0.0)) for n in EXTRA_TIMES}
        t = np.where(exists, microbatch_time(blocks, compute, tp_exposed, offload, pp_comm, sum(ex.values()),
                                             zero3), -np.inf)
        if t_mb is None:
            t_mb, slow = t, {"blocks": blocks, **ex}
        else:
            more = t > t_mb
            t_mb = np.where(more, t, t_mb)
            slow = {"blocks": np.where(more, blocks, slow["blocks"]),
                    **{n: np.where(more, ex[n], slow[n]) for n in EXTRA_TIMES}}
    return t_mb, slow


def step_times(system: System, datatype: str, stages, dp, zero, shard, dp_net, offload_optimizer):
    """The optimizer step and the DP gradient reduction of the stage that
    takes longest (each stage steps and reduces its own parameters)."""
    optimizer_t = dp_time = 0.0
    for _, states, _, exists in stages:
        optimizer_t = np.maximum(optimizer_t, np.where(
            exists, optimizer_time(system, datatype, states, offload_optimizer), 0.0))
        dp_time = np.maximum(dp_time, np.where(
            exists, dp_comm_time(system, datatype, states, dp, zero, shard, dp_net), 0.0))
    return optimizer_t, dp_time


def iteration_time(microbatches, pp, interleave, t_mb, optimizer, dp_exposed):
    """Seconds per batch: the 1F1B schedule runs m microbatches plus a bubble
    of (pp-1)/v microbatch times of the slowest stage, then the optimizer
    step and the exposed DP communication."""
    return (microbatches + (pp - 1) / interleave) * t_mb + optimizer + dp_exposed


# --------------------------------------------------------------- memory

def grad_group(dp, cp, shard):
    """The GPUs that hold the same weights and reduce their gradients, and
    the ZeRO sharding group among them: context parallelism replicates the
    weights like DP does, so both span dp x cp (Megatron-Core reduces over
    its DP x CP group); the sharding group `shard` (a divisor of dp, 0 the
    whole) times cp. Returns (dp x cp, shard x cp)."""
    c = np.asarray(cp)
    return np.asarray(dp) * c, np.asarray(shard) * c


def grad_tier(system: System, dp, cp, dp_net, cp_net):
    """The tier the gradient reduction over dp x cp runs on: the outer of
    the DP and CP groups' tiers (its ring crosses both; a group of one GPU
    adds none)."""
    d = np.where(np.asarray(dp) > 1, normalise_tier(system, dp_net), 0)
    c = np.where(np.asarray(cp) > 1, normalise_tier(system, cp_net), 0)
    return np.maximum(d, c)


def shard_group(dp, shard):
    """GPUs in the ZeRO sharding group: `shard`, or the whole DP group
    when it is 0."""
    shard = np.asarray(shard, dtype=float)
    return np.where(shard > 0, shard, np.asarray(dp, dtype=float))


def state_bytes(model: Model, datatype: str, tp, blocks, dp, zero, shard, extra_params=0.0) -> dict:
    """Parameters of one block on one GPU, and the weights, weight gradients
    and optimizer state of a whole stage of `blocks` blocks and the extras'
    `extra_params` (bytes per GPU). ZeRO (Rajbhandari et al. 2020) divides
    by the sharding group S (shard_group): the optimizer state from stage
    1, the gradients from 2, the weights at 3, which then also holds two
    blocks' weights whole (`gathered`: the one computing and the one being
    prefetched). The factors per item: `shard` (optimizer), `grad_shard`,
    `weight_shard`."""
    p_block = block_params(model) / np.asarray(tp, dtype=float)
    n_s = np.asarray(blocks, dtype=float)
    p_stage = p_block * n_s + extra_params
    zero = np.asarray(zero)
    group = shard_group(dp, shard)
    opt_shard, grad_shard, weight_shard = (np.where(zero >= stage, group, 1.0) for stage in (1, 2, 3))
    gathered = np.where(zero >= 3, np.minimum(2, n_s) * p_block * act_bytes(datatype), 0.0)
    return dict(p_block=p_block, p_stage=p_stage, n_s=n_s, shard=opt_shard, grad_shard=grad_shard,
                weight_shard=weight_shard, gathered=gathered,
                weights=p_stage * act_bytes(datatype) / weight_shard + gathered,
                gradients=p_stage * GRAD_BYTES_PER_PARAM / grad_shard,
                optimizer=p_stage * OPTIMIZER_BYTES_PER_PARAM[datatype] / opt_shard)


def stage_layout(blocks: int, pp):
    """Blocks on the stages that can be the fullest or the slowest: (first,
    busiest middle, last). Balanced: no stage holds more than c =
    ceil(blocks / pp); the pp*c - blocks blocks short are taken from the
    last stage (it carries the logits) and the first (the embedding), half
    each, then one each from the middle stages nearest the end (the first
    stages hold the most microbatches in flight). pp dividing the blocks
    gives every stage blocks / pp; one stage holds them all."""
    pp = np.asarray(pp, dtype=np.int64)
    c = -(-blocks // pp)
    short = pp * c - blocks
    last = np.maximum(c - (short + 1) // 2, 0)
    first = np.maximum(c - short // 2, 0)
    rest = short - (c - last) - (c - first)            # middle stages holding c - 1
    middle = np.where(pp - 2 - rest >= 1, c, c - 1)
    one = pp == 1
    return np.where(one, blocks, first), np.where(pp >= 3, middle, 0), np.where(one, blocks, last)


def state_memory(datatype: str, states: dict, offload_weights, offload_optimizer) -> dict:
    """A stage's weights, gradients and optimizer state per GPU: in HBM
    (`hbm`, per item) and in the offload tier (`offload`). What is
    offloaded is the blocks' (weights with their gradients, optimizer
    state); HBM keeps two blocks' worth of it: the one computing and the
    one being prefetched (or written back). What is offloaded is this
    GPU's ZeRO shard of each item (states' factors); ZeRO-3's two gathered
    blocks and the extras' state stay in HBM."""
    ow, oo = (np.asarray(x).astype(bool) for x in (offload_weights, offload_optimizer))
    two = np.minimum(2, states["n_s"])
    e, opt_bpp = act_bytes(datatype), OPTIMIZER_BYTES_PER_PARAM[datatype]
    p_blocks, p_extra = states["p_block"] * states["n_s"], states["p_stage"] - states["p_block"] * states["n_s"]
    kept = two * states["p_block"] + p_extra                # parameters whose state stays in HBM
    w_sh, g_sh = states["weight_shard"], states["grad_shard"]
    weights = np.where(ow, kept * e / w_sh + states["gathered"], states["weights"])
    grads = np.where(ow, kept * GRAD_BYTES_PER_PARAM / g_sh, states["gradients"])
    optim = np.where(oo, kept * opt_bpp / states["shard"], states["optimizer"])
    return dict(weights=weights, gradients=grads, optimizer=optim, hbm=weights + grads + optim,
                offload=(np.where(ow, p_blocks * (e / w_sh + GRAD_BYTES_PER_PARAM / g_sh), 0.0)
                         + np.where(oo, p_blocks * opt_bpp / states["shard"], 0.0)))


def activation_memory(stored, working, blocks_live, recompute, offload_activations, extra_stored=0.0) -> dict:
    """A stage's activations per GPU: `stored` bytes per block for
    `blocks_live` blocks in flight, the `working` bytes of the block
    computing (full recomputation keeps only its inputs, `checkpoints`,
    and rebuilds the rest), the extras' `extra_stored`. Offloaded
    activations leave two blocks' worth in HBM; the extras' stay."""
    oa = np.asarray(offload_activations).astype(bool)
    act_total = stored * blocks_live
    acts_hbm = np.where(oa, np.minimum(2, blocks_live) * stored, act_total)
    full = np.asarray(recompute) == Recompute.FULL
    ckpt = np.where(full, acts_hbm, 0.0)
    acts = np.where(full, working, acts_hbm) + extra_stored
    return dict(activations=acts, checkpoints=ckpt, stored_total=act_total + extra_stored, hbm=ckpt + acts,
                offload=np.where(oa, act_total, 0.0))


def memory_terms(datatype: str, states: dict, stored, working, blocks_live, recompute,
                 offload_weights, offload_activations, offload_optimizer, extra_stored=0.0) -> dict:
    """Bytes per GPU in HBM, per item, and in the offload tier: the state's
    (state_memory) and the activations' (activation_memory) summed."""
    st = state_memory(datatype, states, offload_weights, offload_optimizer)
    ac = activation_memory(stored, working, blocks_live, recompute, offload_activations, extra_stored)
    return _summed(st, ac)


def _summed(st: dict, ac: dict) -> dict:
    """The state's and the activations' items, HBM and offload summed."""
    return {**st, **ac, "hbm": st["hbm"] + ac["hbm"], "offload": st["offload"] + ac["offload"]}


def stage_memories(model: Model, datatype: str, tp, pp, dp, interleave, microbatches, zero, shard,
                   stored, working, recompute, offloads, first=None, last=None) -> list:
    """Every stage that can be the fullest or the slowest, [(blocks,
    states, extras, exists, state memory, activation memory)]: the first
    (the embedding, the most microbatches in flight), the busiest middle
    one, the last (the logits, one microbatch in flight in the plain
    schedule). `first` and `last`: the extras' terms (params, stored), or
    None. One stage (pp = 1) carries both ends. The state's memory
    (state_memory) takes the shapes of tp, pp, dp, zero, shard and the
    weight and optimizer offload flags; the activations' (activation_memory)
    those of stored, working, recompute and the activation flag."""
    pp = np.asarray(pp)
    f_blocks, m_blocks, l_blocks = stage_layout(model.blocks, pp)
    none = {"params": 0.0, "stored": 0.0}
    first, last = first or none, last or none
    one = pp == 1
    tied = model.tied_embeddings
    both = {key: first[key] + (np.where(tied, 0.0, last[key]) if key == "params" else last[key])
            for key in first}
    ends = [(f_blocks, np.zeros_like(pp), {key: np.where(one, both[key], first[key]) for key in both}, True)]
    if np.any(pp >= 3):
        ends.append((m_blocks, np.ones_like(pp), none, pp >= 3))
    if np.any(pp >= 2):
        ends.append((l_blocks, pp - 1, last, pp >= 2))
    ow, oa, oo = offloads
    out = []
    for blocks, stage, x, exists in ends:
        stage = np.minimum(stage, np.maximum(pp - 1, 0))
        states = state_bytes(model, datatype, tp, blocks, dp, zero, shard, x["params"])
        chunks = in_flight_chunks(pp, interleave, microbatches, stage)
        live = chunks * np.asarray(blocks, dtype=float) / np.asarray(interleave)
        out.append((blocks, states, x, exists, state_memory(datatype, states, ow, oo),
                    activation_memory(stored, working, live, recompute, oa,
                                      np.minimum(pp - stage, microbatches) * x["stored"])))
    return out


def pipeline_memory(model: Model, datatype: str, tp, pp, dp, interleave, microbatches, zero, shard,
                    stored, working, recompute, offloads, first=None, last=None, keys=None) -> tuple[dict, list]:
    """The memory of the fullest stage (the most HBM), but for its offload:
    the most any stage keeps on the offload tier (each GPU has its own
    share of it, and the stage with the most HBM need not be the one with
    the most offloaded: with activations offloaded, a middle stage of more
    blocks can hold more than the first, 96T on 12,288 GPUs at pp 24 2,147
    GiB against the first stage's 1,754), and the stages that can be the
    fullest or the slowest, [(blocks, states, extras, exists)]
    (stage_memories'). `keys`: only these items."""
    fullest, most_offloaded, out = None, None, []
    for blocks, states, x, exists, st, ac in stage_memories(model, datatype, tp, pp, dp, interleave, microbatches,
                                                            zero, shard, stored, working, recompute, offloads,
                                                            first, last):
        mem = _summed(st, ac)
        off = np.where(exists, mem["offload"], 0.0)
        most_offloaded = off if most_offloaded is None else np.maximum(most_offloaded, off)
        mem = mem if keys is None else {key: mem[key] for key in keys}
        if fullest is None:
            fullest = mem
        else:
            more = exists & (mem["hbm"] > fullest["hbm"])
            fullest = {key: np.where(more, mem[key], fullest[key]) for key in mem}
        out.append((blocks, states, x, exists))
    if "offload" in fullest:
        fullest["offload"] = most_offloaded
    return fullest, out


# -------------------------------------------------------------- offload

def offload_traffic(datatype: str, p_block, stored, offload_weights, offload_activations):
    """Bytes over the offload link per block per microbatch, (forward in,
    forward out, backward in, backward out): forward reads the weights and
    writes the activations; backward reads weights, activations and the
    gradient accumulator, and writes it back."""
    ow = np.asarray(offload_weights).astype(bool)
    oa = np.asarray(offload_activations).astype(bool)
    w = p_block * act_bytes(datatype)
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


# ----------------------------------------------------------- iteration

def optimizer_time(system: System, datatype: str, states: dict, offload_optimizer):
    """Adam on this GPU's shard; with the state offloaded, streamed over the
    offload link (per direction) instead of read from HBM."""
    oo = np.asarray(offload_optimizer).astype(bool)
    opt_bpp = OPTIMIZER_BYTES_PER_PARAM[datatype]
    p_opt = states["p_stage"] / states["shard"]
    hbm_bytes = p_opt * (2 * opt_bpp + GRAD_BYTES_PER_PARAM + act_bytes(datatype))
    t = op_time(system, datatype, ADAM_FLOPS_PER_PARAM * p_opt, np.where(oo, 0.0, hbm_bytes), False)
    link = system.offload_gbps * 1e9
    move = p_opt * opt_bpp / link if link > 0 else np.full(np.shape(p_opt), np.inf)
    return np.where(oo, np.maximum(t, move), t)


def dp_comm_time(system: System, datatype: str, states: dict, dp, zero, shard, dp_net):
    """DP communication once per batch. ZeRO 0: an all-reduce of the
    gradients over dp. ZeRO 1 and 2: a reduce-scatter of the gradients and
    an all-gather of the updated weights over the sharding group S. ZeRO 3:
    nothing more per batch (its gathers and reduce-scatters run per
    microbatch: zero3_comm_time). With hybrid sharding (S < dp) every stage
    1..3 also all-reduces its gradient shard across the dp / S replicas.
    Everything on the DP tier."""
    tier = normalise_tier(system, dp_net)
    zero = np.asarray(zero)
    group = shard_group(dp, shard)
    replicas = np.asarray(dp, dtype=float) / group
    gcomm = states["p_stage"] * GRAD_COMM_BYTES[datatype]
    sharded = (collective_time(system, "reduce_scatter", gcomm, group, tier)
               + collective_time(system, "all_gather", states["p_stage"] * act_bytes(datatype), group, tier))
    across = collective_time(system, "all_reduce", gcomm / group, replicas, tier)
    return np.select([zero == 0, zero < 3], [collective_time(system, "all_reduce", gcomm, dp, tier),
                                             sharded + across], across)


def zero3_comm_time(system: System, datatype: str, p_block, dp, zero, shard, dp_net, compute):
    """ZeRO-3's exposed communication per block and microbatch: two
    all-gathers of the block's weights over the sharding group (before its
    forward and before its backward) and a reduce-scatter of its gradients,
    on the DP tier, prefetched so that they hide behind the block's compute
    (`compute`: its forward, backward and recomputation), which they slow
    by the tier's processor share (`overlapped`, no pipeline fill). Zero
    below stage 3. Non-increasing in `compute`."""
    tier = normalise_tier(system, dp_net)
    group = shard_group(dp, shard)
    comm = (2 * collective_time(system, "all_gather", p_block * act_bytes(datatype), group, tier)
            + collective_time(system, "reduce_scatter", p_block * GRAD_COMM_BYTES[datatype], group, tier))
    u = _tier_table(system, "processor_share")[tier]
    return np.where(np.asarray(zero) >= 3, overlapped(comm, compute, np.inf, u), 0.0)


def dp_exposed_time(system: System, dp_time, window, dp_overlap, dp_net):
    """DP time on the critical path. Overlapped, it hides behind the backward
    of the last microbatch (`window`: the gradients are final only then),
    which it slows by the network's processor share (`overlapped`).
    Non-increasing in the window."""
    u = _tier_table(system, "processor_share")[normalise_tier(system, dp_net)]
    hidden = overlapped(dp_time, window, np.inf, u)      # gradient buckets stream: no fill
    return np.where(np.asarray(dp_overlap).astype(bool), hidden, dp_time)


# ------------------------------------------------------------ the model

DISTINCT_FROM = 4096     # below this many strategies, computing per row is cheaper


def distinct_rows(cols: list):
    """(the distinct rows of equal-length integer columns, as columns; the
    index of each row among them), or (cols, None) for short inputs."""
    n = np.asarray(cols[0]).size
    if n < DISTINCT_FROM:
        return cols, None
    key = np.zeros(n, dtype=np.int64)
    radix = 1
    for c in cols:
        c = np.asarray(c).reshape(-1)
        lo, hi = int(c.min()), int(c.max())
        if (hi - lo + 1) * radix >= 2 ** 62:           # would overflow: factorise the column first
            values, c = np.unique(c, return_inverse=True)
            lo, hi = 0, len(values) - 1
        key += (c - lo) * radix
        radix *= hi - lo + 1
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    return [np.asarray(c).reshape(-1)[first] for c in cols], inverse.reshape(np.shape(cols[0]))


def _as_arrays(knobs: dict):
    k = K.codes(knobs)
    shape = np.broadcast(*k.values()).shape
    return {n: np.broadcast_to(v, shape) for n, v in k.items()}, shape


def check_rules(model: Model, system: System, datatype: str, k: dict, shape) -> dict:
    """The rules that need no timing (optimizer.rules), one boolean array
    per rule, True where broken."""
    return check(model, system, datatype, k, shape)


def evaluate_arrays(model: Model, system: System, datatype: str, knobs: dict) -> dict:
    """The model over arrays of strategies. Returns a dict of arrays: times
    (seconds per batch, and its breakdown), throughput, MFU/HFU, memory per
    GPU (bytes, per item and per tier), required offload bandwidth, and one
    boolean array per rule (`rule_*`, True where the rule is broken)."""
    k, shape = _as_arrays(knobs)
    r = check_rules(model, system, datatype, k, shape)
    if not system.supports(datatype) or r["rule_network_tier"].any():
        # No rate or no tier to time against: report the rules, leave times infinite.
        r["time_s"] = np.full(shape, np.inf)
        r["feasible"] = np.zeros(shape, dtype=bool)
        return r

    pp = k["pp"].astype(float)
    dp = k["dp"].astype(float)
    batch = k["batch"].astype(float)
    v = k["interleave"].astype(float)
    sp = k["tp_comm"] > TpComm.AR
    m = np.maximum(np.floor(batch / np.maximum(dp, 1) / np.maximum(k["microbatch"], 1)), 1.0)

    # block and extras terms depend on a few knobs: computed once per distinct tuple
    distinct, inverse = distinct_rows([k[c] for c in K.BLOCK])
    u = dict(zip(K.BLOCK, distinct))
    terms = [block_terms(model, system, datatype, u)]
    if model.vocab > 0:                     # the embedding and the output layer
        terms += extras_terms(model, system, datatype, u["tp"], u["microbatch"], u["recompute"],
                              u["tp_comm"], u["tp_overlap"], u["tp_net"], u["cp"])
    if inverse is not None:
        terms = [{key: np.asarray(x)[inverse] if np.ndim(x) else x for key, x in d.items()} for d in terms]
    blk, ends = terms[0], terms[1:] or [None, None]
    offloads = (k["offload_weights"], k["offload_activations"], k["offload_optimizer"])
    # ZeRO and its sharding group only where they have an effect (knobs.canonical);
    # the weights' replicas and the sharding group span dp x cp (grad_group)
    cp = k["cp"].astype(float)
    zero = np.where(dp * cp > 1, k["zero"], 0)
    shard = np.where((zero >= 1) & (dp > 1), k["shard"], 0)
    rep_dp, rep_shard = grad_group(dp, cp, shard)
    rep_net = grad_tier(system, dp, cp, k["dp_net"], k["cp_net"])
    mem, stages = pipeline_memory(model, datatype, k["tp"], k["pp"], rep_dp, v, m, zero, rep_shard,
                                  blk["stored"], blk["working"], k["recompute"], offloads, *ends)
    p_block = stages[0][1]["p_block"]
    fw_pass = blk["fw_compute"] + blk["fw_tp"] + blk["fw_cp"]
    bw_pass = blk["bw_compute"] + blk["bw_tp"] + blk["bw_cp"] + blk["re_compute"] + blk["re_tp"] + blk["re_cp"]
    traffic = offload_traffic(datatype, p_block, blk["stored"], *offloads[:2])
    off_over, need_gbps = offload_overhead(system, traffic, fw_pass, bw_pass)
    pp_mb = pipeline_p2p_time(model, system, datatype, k["tp"], k["microbatch"], sp, pp, v,
                              k["pp_net"], blk["ag"], cp)

    compute = blk["fw_compute"] + blk["bw_compute"] + blk["re_compute"]
    cp_x = blk["fw_cp"] + blk["bw_cp"] + blk["re_cp"]
    tp_x = blk["fw_tp"] + blk["bw_tp"] + blk["re_tp"] + cp_x
    zero3 = zero3_comm_time(system, datatype, p_block, rep_dp, zero, rep_shard, rep_net, compute)
    t_mb, slow = slowest_stage(stages, compute, tp_x, off_over, pp_mb, zero3)
    n_s = slow["blocks"]
    mb = dict(forward=n_s * blk["fw_compute"] + slow["fw_compute"],
              backward=n_s * blk["bw_compute"] + slow["bw_compute"],
              recompute=n_s * blk["re_compute"] + slow["re_compute"],
              tp_comm=n_s * (tp_x - cp_x) + slow["fw_tp"] + slow["bw_tp"] + slow["re_tp"],
              cp_comm=n_s * cp_x,
              offload=n_s * off_over, zero3=n_s * zero3, pp_comm=pp_mb)
    optimizer_t, dp_time = step_times(system, datatype, stages, rep_dp, zero, rep_shard, rep_net,
                                      k["offload_optimizer"])
    dp_exposed = dp_exposed_time(system, dp_time, n_s * blk["bw_compute"] + n_s * blk["re_compute"],
                                 k["dp_overlap"] & (rep_dp > 1), rep_net)
    time_s = iteration_time(m, pp, v, t_mb, optimizer_t, dp_exposed)
    with np.errstate(invalid="ignore"):         # an infinite stage (offload without a link) on pp = 1
        bubble = np.where(pp > 1, (pp - 1) / v * t_mb, 0.0)

    # ---- throughput and utilisation
    gpus = k["tp"] * cp * pp * dp
    s = model.seq_len
    rec = k["recompute"]
    peak = system.matrix_tflops[datatype] * 1e12
    model_flops = 3 * model_flops_per_sequence(model) * batch
    redone = _whole_block(model)["redo_flops"]
    recompute_flops = batch * model.blocks * np.select(
        [rec == Recompute.FULL, rec == Recompute.ATTN], [redone[Recompute.FULL], redone[Recompute.ATTN]], 0.0)
    any_offload = (k["offload_weights"].astype(bool) | k["offload_activations"].astype(bool)
                   | k["offload_optimizer"].astype(bool))
    r.update(
        time_s=time_s,
        samples_per_s=batch / time_s,
        tokens_per_s=batch * s / time_s,
        tokens_per_s_per_gpu=batch * s / time_s / gpus,
        mfu=model_flops / (time_s * gpus * peak),
        hfu=(model_flops + recompute_flops) / (time_s * gpus * peak),
        **{f"{name}_s": m * x for name, x in mb.items()},
        optimizer_s=optimizer_t, bubble_s=bubble, dp_comm_s=dp_exposed,
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


RULES = {f"rule_{name}": text for name, text in TEXT.items()}
