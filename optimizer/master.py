"""The planning problem as a CP-SAT model.

The knobs that fix a family of structures (tp, cp, pp, dp, microbatch,
interleave) and the batch, as microbatches per replica n, are solver
variables; so are the group knobs memory and time depend on most (the
activation signature sigma, the ZeRO stage and sharding group, the offload
flags). The limits are constraints:

  tp * cp * pp * dp = gpus             three multiplication equalities
  shard divides dp, G = shard * cp     a (dp, shard) table and a product
  batch = dp * microbatch * n          <= max_batch, or among the pinned batches
  divisibility                         tp and pp by their domains (the rules
                                       that read them alone), interleave by
                                       an allowed (pp, interleave) table,
                                       n = pp * q when interleaved
  HBM capacity                         a sum of terms, each tabulated over
                                       the few knobs it reads and joined by
                                       element constraints (below)

The objective is a lower bound on seconds per sample, a sum of terms built
the same way:

  main    Bmax(pp) * pp  x  tau(tp, cp, microbatch, sigma, tp_net, cp_net) * tp * cp
          / (microbatch * gpus)
          the slowest stage's blocks times the least time of one block (over
          the TP and CP choices), per sample: t_mb / (dp * microbatch)
  bubble  main * (pp - 1) / (interleave * n)
  DP      the gradient reduction's bandwidth term (tp, pp, dp x cp, its
          tier, ZeRO stage 0-2) / batch, which hides at most behind the
          backward kernels of the last microbatch: added to main x (1 - 1/n)
          plus the rest of that microbatch; and the tier's processor share
          of it, added to main whole (Master._dp_floor)
  ZeRO-3  a block takes at least its gathers and reduce-scatter over the
          sharding group G ((G - 1) / G of the bytes each), and at least
          its compute plus the tier's processor share of them
  offload a block takes at least max(in, F) + max(back, B): the link's
          forward and backward bytes hide behind its forward F and
          backward B apart, each at least its least share of the block
          table's pass (Master._offload_floor)

Memory per GPU of each stage that can be the fullest (first, busiest
middle, last: perf.pipeline_memory's) is at least its state (tp, pp, ZeRO
stage, offload of weights and optimizer): weights / s3 + gradients / s2 +
optimizer / s1, s_k = the sharding group G from ZeRO stage k on and 1 below
it (G = shard x cp, shard a solver variable dividing dp), plus ZeRO-3's two
gathered blocks, plus microbatch x
(stored activations per block(tp, cp, sigma) x blocks in flight + working
bytes(tp, cp, sigma)), blocks in flight min(cap(pp, interleave), n * the
stage's blocks(pp)), one block when activations are offloaded. Every table
is floored (time) or kept below the exact value (memory), so the model is a relaxation: it never cuts a
strategy the exact model accepts and its objective never exceeds an exact
time. Tables are indexed by the knobs' own index variables, so their rows
are the products of a few domains each: the model grows with the sum of the
domains, not their product.

Times for microbatches beyond MB_TABLE use the peak-rate bound: a block at
the best efficiency of the system's curves over latency-free links (no
kernel or collective runs faster; _bound_system), per sequence at the batch
limit (per sequence it only falls as the microbatch grows: the weights are
read once per microbatch).
"""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np
from ortools.sat.python import cp_model

from . import knobs as K
from . import perf
from .knobs import Recompute
from .space import (SIGMA, TP_CHOICE, Kept, Problem, capacity_free_key, divisors, forget_kept, keep, sigmas,
                    tp_choices, tp_choices_for, unique_rows)

MB_TABLE = 32            # microbatches tabulated exactly; larger ones share the peak-rate row
MB_BUCKETS = np.array([1, 2, 3, 5, 9, 17])   # microbatch buckets of the time table: [1], [2], [3, 4], ... [17, 32]
LOG_UNITS = 2 ** 12      # units per natural log of seconds: a relative resolution of 1e-6
CP_TIER_STEP = LOG_UNITS // 256   # what cp's tier adds to a block (Master's block table), in 1/256 of a log
BLOCK_STEP = LOG_UNITS // 512     # the block table's time per sample, in 1/512 of a log (0.2%)
REST_STEP = LOG_UNITS // 32   # the DP floor's unhidden share of a pass (Master._dp_floor), in 1/32 of a log
AMGM_WEIGHTS = (0.995, 0.99, 0.98, 0.97, 0.96, 0.95, 0.93, 0.9, 0.85, 0.8, 0.7)   # log-sums whose first term dominates
EITHER_WEIGHTS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.07, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.93,
                  0.95, 0.97, 0.98, 0.99, 0.995)   # either term may (the DP and offload floors)
DP_FLOOR_LEVELS = 4      # n >= 2, 4, 8, 16: the compute's share (1 - 1/n) in the DP floor
# a block's class: the signature knobs that couple its time and its memory
# most (recomputation, fused attention, the all-gather redone for the
# weight gradient), tabulated jointly; the others taken at their best for each
CLASS_KNOBS = ("recompute", "flash_attention", "ag_redo")
TANGENTS = np.arange(-10.0, 10.01, 0.25)   # where the bubble share's tangents touch
MEM_UNIT = 1024 / 64     # memory in 1/64 KiB: blocks in flight count in 1/64 block


def _peak_system(system):
    """The system at the best efficiency of each curve, everywhere: no
    kernel is faster on the real one."""
    flat = lambda curve: ((1.0, max(e for _, e in curve)),)  # noqa: E731
    return dataclasses.replace(system, matrix_efficiency=flat(system.matrix_efficiency),
                               vector_efficiency=flat(system.vector_efficiency),
                               hbm_efficiency=flat(system.hbm_efficiency))


def _no_latency(system):
    """The system with every network's latency 0: a collective's time is its
    bandwidth term, linear in its bytes."""
    return dataclasses.replace(system, networks=tuple(dataclasses.replace(net, latency_s=0.0)
                                                      for net in system.networks))


def _bound_system(system):
    """The system at the best efficiency of each curve (_peak_system) and
    with no network latency: every kernel and collective at most as long
    as on the real one, each linear in its bytes and FLOPs (a kernel's
    weights aside)."""
    return _no_latency(_peak_system(system))


def _rising_curves(system) -> bool:
    """Whether each efficiency curve of the system is non-decreasing in size.
    Then a block's seconds per sequence only fall as the microbatch grows:
    each kernel's FLOPs and activation bytes grow with it (its weights
    stay), so per sequence its time at a rising efficiency only falls; a
    collective's latency is shared by more sequences and its bytes per
    sequence stay; and an operator's time with what its communication
    leaves exposed is a max and sum of those (perf.overlapped,
    perf._cp_exposed). So the least over a microbatch bucket is at its
    largest microbatch (tests/test_master.py checks it over every one)."""
    curves = (sorted(c) for c in (system.matrix_efficiency, system.vector_efficiency, system.hbm_efficiency))
    return all(all(a[1] <= b[1] for a, b in zip(c, c[1:])) for c in curves)


def _comm_only_system(system):
    """The system with compute and memory a million million times faster and
    no network latency: a block's exposed communication on it is its
    communication's bandwidth term (nothing left to hide behind), linear in
    the bytes, which the real system can only exceed."""
    fast = 1e12
    return _no_latency(dataclasses.replace(
        system, matrix_tflops={d: r * fast for d, r in system.matrix_tflops.items()},
        vector_tflops={d: r * fast for d, r in system.vector_tflops.items()}, hbm_gbps=system.hbm_gbps * fast))


def _first_blocks(blocks: int, pp) -> np.ndarray:
    return perf.stage_layout(blocks, np.asarray(pp))[0]


def _max_blocks(blocks: int, pp) -> np.ndarray:
    f, mid, last = perf.stage_layout(blocks, np.asarray(pp))
    return np.maximum(np.maximum(f, mid), last)


def _signatures(p: Problem, tc_tp, tc_cp):
    """sigmas(p, tc_tp, tc_cp) and `has`: per (tp, cp) pair and signature,
    valid and with some block choice (tp_choices) left."""
    sig = sigmas(p, tc_tp, tc_cp)
    has = sig["ok"].copy()
    tp_choices_for(p, tc_tp, tc_cp)
    for a in range(len(tc_tp)):
        for g in np.flatnonzero(has[a]):
            has[a, g] = len(tp_choices(p, int(tc_tp[a]), int(tc_cp[a]), bool(sig["sp"][g]))) > 0
    return sig, has


def _at_or_beyond(table):
    """The least over each tier and the tiers beyond it (tiers on axis 1):
    a group placed at or beyond a tier never pays less."""
    return np.minimum.accumulate(table[:, ::-1], axis=1)[:, ::-1]


def _least_share(part, whole):
    """Per ((tp, cp) pair, class): the least part / whole over the block
    tables' rows (microbatch buckets and tiers); 1e-9 (no floor) where no
    row is finite. A strategy's part is at least its row's, so at least this
    share of the row's whole."""
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(np.isfinite(whole) & (whole > 0), part / whole, np.inf)
    r = r.min(axis=(1, 3, 4))
    return np.where(np.isfinite(r), r, 1e-9)


def _log_cut(seconds: float) -> int:
    """The bound's cut at `seconds` per sample, in LOG_UNITS: rounded up,
    with a few units for the tables' rounding."""
    return math.ceil(math.log(seconds) * LOG_UNITS) + 4


def work_floor(p: Problem) -> float:
    """GPU-seconds per sample that no strategy on any GPU count goes below:
    every block and the extras once per sequence at the peak-rate bound
    (each kernel at the best efficiency of the system's curves, at the
    largest microbatch: its weights read once for the most sequences; the work
    split over tp x cp GPUs costs at least what it costs on one), the least
    over every signature, pins left out (the least of a larger set). The
    seconds per sample on g GPUs are at least this / g: the slowest stage
    times pp holds every block and the extras once, per dp x microbatch
    sequences."""
    q = dataclasses.replace(p, pins={})
    one = np.array([1])
    sig, has = _signatures(q, one, one)
    if not has.any():
        return 0.0
    bare = Master.__new__(Master)
    bare.p = q
    passes, _, _, _, _, ext = bare._block_tables(one, one, sig, has)
    block = float(passes[0, 0, -1].min())      # the whole pass, the last bucket: the peak-rate row
    extras = float(ext[0, -1]) if ext is not None else 0.0
    total = p.model.blocks * block + extras
    return total if math.isfinite(total) else 0.0


# warm_start's copy keeps context parallelism up to WARM_CP and
# microbatches up to WARM_MB (or the least each allows, when more). Over
# compare_search's 9 problems, two runs each (scripts/compare_search.py,
# one checkout with the limits as variables): 19.6 s summed at cp 1 and
# microbatches up to 8, 18.5 s at cp 2 and 2 (1T on 16,384 GPUs: 1.22 s ->
# 0.73 s, its optimum at cp 2 and microbatch 1 found by the warm start),
# 18.3 s at 2 and 1, 19.7 s at 4 and 2, 19.2 s at 1 and 2; on 74 study
# points 83.2 s and 202 solves became 79.4 s and 189, the same answers.
WARM_CP = 2
WARM_MB = 2

FAMILY_KEYS = ("gpus", "tp", "cp", "pp", "dp", "microbatch", "interleave")   # what `exclude` forbids

SHARED_TABLES = 16       # problems whose block tables a process keeps (block_cache_for)
_shared_tables = Kept(SHARED_TABLES)


def forget_block_tables():
    """Empty what the process keeps between plans (space.forget_kept: the
    block tables and the rest): the next plan of every kind computes its
    own again (a benchmark's cold start)."""
    forget_kept()


def block_cache_for(p: Problem) -> dict:
    """Master's `block_cache` for p, shared with every problem whose block
    tables are p's: those read the model, the system's rates, curves and
    networks, the datatype, the pins, the stages rule and the batch limit
    (the peak-rate row's microbatch), not the GPU count, the memory
    capacities or whether an offload tier exists (no rule the signatures
    and block choices meet reads them). A sweep's points over GPU counts,
    HBM and offload share one. The process keeps the last SHARED_TABLES."""
    key = capacity_free_key(dataclasses.replace(p, gpus=0, system=dataclasses.replace(
        p.system, offload_gib=0.0, offload_gbps=0.0)))
    return _shared_tables.get(key, dict)


# CP-SAT's settings for the master. The model is small and its tables
# already tight: one presolve pass without probing (measured 2-3x faster
# than the default on 1T at 16,384 GPUs and over a range of counts, and
# than no presolve); the search restarting quickly from a portfolio of
# heuristics (the fixed search stalled for a second between the first two
# solutions of 1T on 16,384 GPUs). `scripts/compare_search.py . .
# --new-params JSON` measures a change to these.
# No LP relaxation (linearization level 0): with an incumbent to cut at,
# the cut does the pruning the LP would, and each node is cheaper (0.66-0.94x
# the time on compare_search's cases); warm_start's copy, kept to the
# exact microbatch table, solves in 0.5 s at level 0 and 1.4 s at level 1
# (1T on 16,384 GPUs).
# No clause minimisation between restarts (inprocessing_minimization_dtime
# 0) and no SAT inprocessing at all (use_sat_inprocessing off): most of a
# loop's solve is CP-SAT loading the model and probing it at the root (a
# native profile of 188 solves of the study: 21% loading, 11% expanding
# the tables, 33% inprocessing, 3% taking decisions); without the
# minimisation those solves take 0.91x the time (medians 0.153 s against
# 0.171 s), and without the inprocessing 0.79x again (0.120 s against
# 0.160 s), the same answers; the in-process study's solves 0.75x in all.
SOLVER_PARAMETERS = {
    "max_presolve_iterations": 1,
    "cp_model_probing_level": 0,
    "search_branching": cp_model.PORTFOLIO_WITH_QUICK_RESTART_SEARCH,
    "linearization_level": 0,
    "inprocessing_minimization_dtime": 0.0,
    "use_sat_inprocessing": False,
}


# The loop's solves run without CP-SAT's presolve: once the cut has pruned
# the tables (Master._prune) the model is small and loading it is quicker
# than presolving it (53T on 4,096 GPUs with offload: 1.2 s of proof solves
# without presolve, 4.4 s with it). warm_start's copy, with no cut yet, keeps it.
# The warm start first tries copies with only the block rows whose least
# bound is within these margins (natural log) of the least row: a small
# model whose optimum is usually the whole copy's, or close (1T on 16,384
# GPUs: 0.11 s, against 0.52 s for the whole copy).
WARM_MARGINS = (0.5, 1.5)


class _Passed(cp_model.CpSolverSolutionCallback):
    """The solutions a solve passes through on its way to the optimum:
    (family knobs, the objective there in seconds per sample, at least that
    family's bound)."""

    def __init__(self, variables: dict, bound):
        super().__init__()
        self.variables, self.bound, self.found = variables, bound, []

    def on_solution_callback(self):
        self.found.append(({k: int(self.Value(x)) for k, x in self.variables.items()},
                           math.exp(float(self.Value(self.bound)) / LOG_UNITS)))


class Master:
    """The CP-SAT model of one problem (fixed GPU count) and the loop's
    cuts: each opened family is forbidden, and the objective kept at or
    below the incumbent."""

    def __init__(self, p: Problem, threads: int | None = None, counts=None, block_cache: dict | None = None):
        """`counts`: the GPU counts the solver may choose among (the GPU
        count a variable); None is p.gpus alone. `block_cache`: a dict
        shared by models of the same problem over other counts (the
        fewest-GPUs windows), keeping each (tp, cp) pair's block tables."""
        self.p = p
        m, sys_, dt = p.model, p.system, p.datatype
        q = dataclasses.replace(p, pins={k: v for k, v in p.pins.items() if k != "batch"})
        counts = np.array([p.gpus] if counts is None else sorted(set(int(c) for c in counts)), dtype=np.int64)
        self.counts = counts
        self.rows = 0
        self.bound_objective = True   # the objective is the bound (fewest_gpus changes it)
        self.solves = 0           # also on an empty model (returned early below)
        self._deferred = None     # floors added by the first solve after warm_start (_dp_floor)
        self.cuts = 0
        self.cut = None           # the least cut on the bound so far (LOG_UNITS), None before any
        self._tables = {}         # tables kept by _table until _add_tables
        md = cp_model.CpModel()
        self.model = md

        # ---- domains of tp, cp, pp, dp: dividing some count; the rules that read each alone; pins
        top = int(counts.max())
        count_divisors = np.unique(np.concatenate([divisors(int(c)) for c in counts]))

        def dom(name, most):
            vals = count_divisors[count_divisors <= most]
            return vals[keep(q, {name: vals}, (name,), (name,))] if len(vals) else vals
        D_tp = dom("tp", max(p.model.heads, 1))
        D_cp = dom("cp", max(p.model.seq_len // 2, 1))
        D_pp = dom("pp", p.model.blocks)
        dps = dom("dp", p.max_batch)
        dps = dps[p.allowed("dp", dps)]
        # (tp, cp) pairs dividing some count: the block terms read both
        TC = np.array([(a, b) for a in range(len(D_tp)) for b in range(len(D_cp))
                       if (counts % (int(D_tp[a]) * int(D_cp[b])) == 0).any()], dtype=np.int64).reshape(-1, 2)
        self.empty = len(D_tp) == 0 or len(D_cp) == 0 or len(D_pp) == 0 or len(dps) == 0 or len(TC) == 0
        if self.empty:
            return
        self.D_tp, self.D_cp, self.D_pp = D_tp, D_cp, D_pp
        tp_i = md.NewIntVar(0, len(D_tp) - 1, "tp_index")
        cp_i = md.NewIntVar(0, len(D_cp) - 1, "cp_index")
        pp_i = md.NewIntVar(0, len(D_pp) - 1, "pp_index")
        tc_i = md.NewIntVar(0, len(TC) - 1, "tp_cp_index")
        tp = md.NewIntVarFromDomain(cp_model.Domain.FromValues(D_tp.tolist()), "tp")
        cp = md.NewIntVarFromDomain(cp_model.Domain.FromValues(D_cp.tolist()), "cp")
        pp = md.NewIntVarFromDomain(cp_model.Domain.FromValues(D_pp.tolist()), "pp")
        self._element(tp_i, D_tp, tp)
        self._element(cp_i, D_cp, cp)
        self._element(pp_i, D_pp, pp)
        self._table([tp_i, cp_i, tc_i], [(int(a), int(b), i) for i, (a, b) in enumerate(TC)])
        dp = md.NewIntVarFromDomain(cp_model.Domain.FromValues(dps.tolist()), "dp")
        gpus = md.NewIntVarFromDomain(cp_model.Domain.FromValues(counts.tolist()), "gpus")
        # the GPU product: tp * cp * pp * dp = gpus
        tp_cp = md.NewIntVar(1, top, "tp_x_cp")
        self._element(tc_i, D_tp[TC[:, 0]] * D_cp[TC[:, 1]], tp_cp)
        products = lambda xs, ys: sorted({int(x) * int(y) for x in xs for y in ys if (counts % (int(x) * int(y)) == 0).any()})  # noqa: E731
        tp_pp = md.NewIntVarFromDomain(cp_model.Domain.FromValues(
            products(sorted(set((D_tp[TC[:, 0]] * D_cp[TC[:, 1]]).tolist())), D_pp)), "tp_x_cp_x_pp")
        md.AddMultiplicationEquality(tp_pp, [tp_cp, pp])
        md.AddMultiplicationEquality(gpus, [tp_pp, dp])
        # the weights' replicas: dp x cp (ZeRO shards over them; perf.grad_group)
        dp_cp = md.NewIntVarFromDomain(cp_model.Domain.FromValues(products(dps, D_cp)), "dp_x_cp")
        md.AddMultiplicationEquality(dp_cp, [dp, cp])
        # the ZeRO sharding group: shard x cp, shard a divisor of dp, at least 2
        # when dp is (perf.grad_group; space.shard_domain, 0 the whole dp)
        divs = sorted({int(d) for x in dps for d in divisors(int(x))})
        shard = md.NewIntVarFromDomain(cp_model.Domain.FromValues(divs), "shard_of_dp")
        dp_i = md.NewIntVar(0, len(dps) - 1, "dp_index")
        self._table([dp_i, shard], [(i, int(d)) for i, x in enumerate(dps) for d in divisors(int(x))])
        dp_big = md.NewBoolVar("dp_at_least_2")
        md.Add(dp >= 2).OnlyEnforceIf(dp_big)
        md.Add(dp == 1).OnlyEnforceIf(dp_big.Not())
        md.Add(shard >= 2).OnlyEnforceIf(dp_big)
        G_vals = np.array(products(divs, D_cp), dtype=np.int64)
        G_i = md.NewIntVar(0, len(G_vals) - 1, "shard_group_index")
        shard_group = md.NewIntVarFromDomain(cp_model.Domain.FromValues(G_vals.tolist()), "shard_group")
        self._element(G_i, G_vals, shard_group)
        md.AddMultiplicationEquality(shard_group, [shard, cp])

        # ---- microbatch, interleave, batch
        local_max = p.max_batch // int(dps.min())
        mbs = np.arange(1, local_max + 1)
        mbs = mbs[p.allowed("microbatch", mbs)]
        if len(mbs) == 0:
            self.empty = True
            return
        mb = md.NewIntVarFromDomain(cp_model.Domain.FromValues(mbs.tolist()), "microbatch")
        pv = []
        for j, x in enumerate(D_pp):
            for v in divisors(max(m.blocks // int(x), 1)):
                pv.append((j, int(x), int(v)))
        pv = np.array(pv, dtype=np.int64)
        k = {"pp": pv[:, 1], "interleave": pv[:, 2]}
        ok = keep(q, k, ("interleave",), ("pp", "interleave")) & ((pv[:, 2] == 1) | (pv[:, 1] > 1))
        pv = pv[ok]
        if len(pv) == 0:
            self.empty = True
            return
        v = md.NewIntVarFromDomain(cp_model.Domain.FromValues(sorted(set(pv[:, 2].tolist()))), "interleave")
        pv_i = md.NewIntVar(0, len(pv) - 1, "pp_interleave_index")
        md.AddAllowedAssignments([pp_i, v, pv_i], [(int(a), int(c), i) for i, (a, _, c) in enumerate(pv)])
        self.rows += len(pv)
        n = md.NewIntVar(1, p.max_batch, "microbatches")
        inter = md.NewBoolVar("interleaved")
        md.Add(v >= 2).OnlyEnforceIf(inter)
        md.Add(v == 1).OnlyEnforceIf(inter.Not())
        qn = md.NewIntVar(1, p.max_batch, "microbatches_per_pp")
        npq = md.NewIntVar(1, p.max_batch * int(D_pp.max()), "pp_x_q")
        md.AddMultiplicationEquality(npq, [pp, qn])
        md.Add(n == npq).OnlyEnforceIf(inter)                   # interleaved: pp divides n
        dp_mb = md.NewIntVar(1, p.max_batch, "local_unit")
        md.AddMultiplicationEquality(dp_mb, [dp, mb])
        if "batch" in p.pins:
            bdom = cp_model.Domain.FromValues(sorted(b for b in p.pins["batch"] if b <= p.max_batch) or [0])
        else:
            bdom = cp_model.Domain(1, p.max_batch)
        batch = md.NewIntVarFromDomain(bdom, "batch")
        md.AddMultiplicationEquality(batch, [dp_mb, n])

        # ---- activation signatures (valid per (tp, cp)) and group flags
        tc_tp, tc_cp = D_tp[TC[:, 0]], D_cp[TC[:, 1]]
        sig, has = _signatures(p, tc_tp, tc_cp)
        pairs = [(a, g) for a in range(len(TC)) for g in np.flatnonzero(has[a])]
        if not pairs:
            self.empty = True
            return
        passes, s1, w1, classes, cls_of, ext = self._cached_block_tables(tc_tp, tc_cp, sig, has, block_cache)
        tau, fwd, bwd, rest = passes[:, 0], passes[:, 1], passes[:, 2], passes[:, 3]
        cpairs = sorted({(int(a), int(cls_of[g])) for a, g in pairs})
        sg = md.NewIntVar(0, len(classes) - 1, "recompute_flash_class")
        self._table([tc_i, sg], cpairs)

        def flag(name, possible=True):
            vals = [c for c in (0, 1) if p.allowed(name, [c])[0] and (possible or c == 0)]
            x = md.NewIntVarFromDomain(cp_model.Domain.FromValues(vals or [0]), name)
            if not vals:
                md.Add(x == 1)                                   # nothing allowed: infeasible
            return x
        # the ZeRO stage matters only with dp x cp > 1 (idle there at 0; a pin says nothing)
        stages = K.BY_NAME["zero"].values
        zero = md.NewIntVar(min(stages), max(stages), "zero")
        dp_gt1 = md.NewBoolVar("replicated")
        md.Add(dp_cp >= 2).OnlyEnforceIf(dp_gt1)
        md.Add(dp_cp == 1).OnlyEnforceIf(dp_gt1.Not())
        md.Add(zero == 0).OnlyEnforceIf(dp_gt1.Not())
        for c in stages:
            if not p.allowed("zero", [c])[0]:
                md.Add(zero != c).OnlyEnforceIf(dp_gt1)
        off = p.has_offload
        ow, oa, oo = (flag(x, off) for x in ("offload_weights", "offload_activations", "offload_optimizer"))

        # ---- the tables
        per = tau * (tc_tp * tc_cp)[:, None, None, None, None]   # per sample over all GPUs (mb divided in)
        # log seconds per sample >= log(Bmax(pp) pp) + log(tau tp / (mb gpus))
        #                            + log(1 + (pp - 1) / (v n))       (the bubble's share)
        lq = self._log(per)
        qv = md.NewIntVar(int(lq.min()), int(lq.max()), "log_block_time_per_sample")
        # the microbatch's bucket: lo[k] <= microbatch <= hi[k]
        lo = np.append(MB_BUCKETS, MB_TABLE + 1)
        hi_ = np.append(MB_BUCKETS[1:] - 1, [MB_TABLE, int(mbs.max())])
        mbk = md.NewIntVar(0, len(lo) - 1, "microbatch_bucket")
        lov, hiv = md.NewIntVar(1, int(lo.max()), "bucket_lo"), md.NewIntVar(1, max(int(hi_.max()), 1), "bucket_hi")
        self._element(mbk, lo, lov)
        self._element(mbk, hi_, hiv)
        md.Add(mb >= lov)
        md.Add(mb <= hiv)
        # the network tiers of the TP, CP, PP and DP groups: the groups on a tier fit it
        # (the product of their sizes, as a sum of logs; filling left out)
        T = len(sys_.networks)
        tn = md.NewIntVar(0, T - 1, "tp_net")
        cn = md.NewIntVar(0, T - 1, "cp_net")
        pn = md.NewIntVar(0, T - 1, "pp_net")
        # cp's tier: the table's rows stay over the TP tier alone (its
        # least over cp's), with a column per tier of what cp there adds
        # (rounded down to CP_TIER_STEP; 0 where cp cannot be there)
        full = lq
        # rounded down to BLOCK_STEP: a column of fewer values, each a
        # literal to CP-SAT (study 0.9x for a bound at most 0.2% lower)
        lq = lq.min(axis=4) // BLOCK_STEP * BLOCK_STEP
        finite = np.isfinite(per)
        cp_tier = np.where(finite, (full - lq[..., None]) // CP_TIER_STEP * CP_TIER_STEP, 0).astype(np.int64)

        ag = np.array(cpairs, dtype=np.int64).reshape(-1, 2)
        a_, c_, t_ = (x.reshape(-1) for x in np.meshgrid(np.arange(len(ag)), np.arange(len(lo)), np.arange(T),
                                                         indexing="ij"))
        a_, g_ = ag[a_, 0], ag[a_, 1]
        some = np.isfinite(tau[a_, c_, g_, t_]).any(axis=-1)
        # the least share of the pass the DP reduction cannot hide behind
        # (_dp_floor's R = qv + this + log(Bmax pp) - log gpus - log n), as a
        # log rounded down to REST_STEP: a column of few values (CP-SAT gives
        # each value of a table's column a literal: the least itself, a
        # column of thousands of values, made the solves half as slow again)
        with np.errstate(divide="ignore", invalid="ignore"):
            share = np.where(np.isfinite(rest) & np.isfinite(tau) & (tau > 0), rest / tau, 1.0).min(axis=4)
        lr_ = (np.floor(np.log(np.clip(share, 1e-6, 1.0)) * LOG_UNITS / REST_STEP) * REST_STEP).astype(np.int64)
        rqv = md.NewIntVar(int(lr_.min()), 0, "log_share_unhidden_by_dp")
        pens = [md.NewIntVar(0, max(int(cp_tier[..., u].max()), 0), f"log_cp_on_tier_{u}_adds") for u in range(T)]
        block_rows = np.stack([a_, c_, g_, t_, lq[a_, c_, g_, t_], lr_[a_, c_, g_, t_]]
                              + [cp_tier[a_, c_, g_, t_, u] for u in range(T)], 1)[some]
        self._block_ct = md.AddAllowedAssignments([tc_i, mbk, sg, tn, qv, rqv] + pens, block_rows.tolist()).Index()
        cp_adds = md.NewIntVar(0, max(int(cp_tier.max()), 0), "log_cp_tier_adds")
        md.AddElement(cn, pens, cp_adds)
        self.rows += len(block_rows)
        ltp, lpp_ = np.floor(np.log(D_tp) * LOG_UNITS).astype(np.int64), np.floor(np.log(D_pp) * LOG_UNITS).astype(np.int64)
        lcp = np.floor(np.log(D_cp) * LOG_UNITS).astype(np.int64)
        ltv = md.NewIntVar(0, int(ltp.max()), "log_tp")
        lcv = md.NewIntVar(0, int(lcp.max()), "log_cp")
        lppv = md.NewIntVar(0, int(lpp_.max()), "log_pp_size")
        self._element(tp_i, ltp, ltv)
        self._element(cp_i, lcp, lcv)
        self._element(pp_i, lpp_, lppv)
        dn = md.NewIntVar(0, T - 1, "dp_net")
        self._element(dp_i, dps, dp)
        ldp = np.floor(np.log(dps) * LOG_UNITS).astype(np.int64)
        ldv = md.NewIntVar(0, int(ldp.max()), "log_dp")
        self._element(dp_i, ldp, ldv)
        for t, netw in enumerate(sys_.networks):
            used = []
            for net, lv, hi_l, name in ((tn, ltv, int(ltp.max()), "tp"), (cn, lcv, int(lcp.max()), "cp"),
                                        (pn, lppv, int(lpp_.max()), "pp"), (dn, ldv, int(ldp.max()), "dp")):
                on = md.NewBoolVar(f"{name}_on_tier_{t}")
                md.Add(net == t).OnlyEnforceIf(on)
                md.Add(net != t).OnlyEnforceIf(on.Not())
                z = md.NewIntVar(0, hi_l, f"log_{name}_on_tier_{t}")
                md.Add(z >= lv).OnlyEnforceIf(on)
                used.append(z)
            md.Add(sum(used) <= int(math.ceil(math.log(netw.size) * LOG_UNITS)))
        for net, name, size in ((tn, "tp_net", tp), (cn, "cp_net", cp), (pn, "pp_net", pp), (dn, "dp_net", dp)):
            if name in p.pins:
                big = md.NewBoolVar(f"{name}_matters")
                md.Add(size >= 2).OnlyEnforceIf(big)
                md.Add(size == 1).OnlyEnforceIf(big.Not())
                for t in range(T):
                    if t not in p.pins[name] and (t - T) not in p.pins[name]:
                        md.Add(net != t).OnlyEnforceIf(big)
        lx = self._log(_max_blocks(m.blocks, D_pp) * D_pp)
        xv = md.NewIntVar(int(lx.min()), int(lx.max()), "log_slowest_stage_blocks_x_pp")
        self._element(pp_i, lx, xv)
        # the bubble's share is softplus(z), z = log((pp-1)/v) - log n: convex,
        # so each tangent bounds it from below
        ratio = np.where(pv[:, 1] > 1, (pv[:, 1] - 1) / pv[:, 2], math.exp(-40))
        lr = np.floor(np.log(ratio) * LOG_UNITS).astype(np.int64)
        rv = md.NewIntVar(int(lr.min()), int(lr.max()), "log_bubble_ratio")
        self._element(pv_i, lr, rv)
        # log n from above (the share only shrinks as it grows): the concave
        # log lies below each tangent, taken at powers of two
        lnv = self._log_above(n, p.max_batch, "log_n_above")
        y_hi = int(math.log1p(float(ratio.max())) * LOG_UNITS) + 2
        y = md.NewIntVar(0, y_hi, "log_bubble_share")
        # scaled by 2^20: a slope rounded down errs by at most one unit per unit
        # of z below 0 (|z| <= z_span), and y takes the ceiling: one more unit
        scale = 2 ** 20
        z_span = int(abs(int(lr.min()))) + int(math.ceil(math.log(p.max_batch) * LOG_UNITS)) + 1
        for z0 in TANGENTS:
            s0, f0 = 1.0 / (1.0 + math.exp(-z0)), math.log1p(math.exp(z0))
            c = int(math.floor(s0 * scale))
            md.Add(scale * y >= c * (rv - lnv) + int(math.floor((f0 - s0 * z0) * scale * LOG_UNITS))
                   - z_span - 2 * scale)
        self.rows += len(TANGENTS)
        # - log gpus from below: log lies under each tangent (exact for one count)
        lg = np.floor(np.log(counts) * LOG_UNITS).astype(np.int64)
        lgv = md.NewIntVar(int(lg.min()), int(lg.max()) + 1, "log_gpus_above")
        if len(counts) == 1:
            md.Add(lgv == int(lg[0]))
        else:
            for g0 in np.unique(np.round(2 ** np.arange(np.log2(counts.min()), np.log2(counts.max()) + 1 / 16,
                                                        1 / 16)).astype(np.int64)):
                g0 = int(g0)
                md.Add(g0 * lgv <= int(math.ceil(g0 * math.log(g0) * LOG_UNITS)) + (gpus - g0) * LOG_UNITS)

        # the PP sends join the slowest stage's time: log(A + B) >= w log(A / w) + (1 - w) log(B / (1 - w))
        # for every w in (0, 1) (the weighted mean of the logs is at most the log of the mean)
        D_v = np.array(sorted(set(pv[:, 2].tolist())), dtype=np.int64)
        v_i = md.NewIntVar(0, len(D_v) - 1, "interleave_index")
        self._element(v_i, D_v, v)
        lp = self._log(self._p2p_table(D_tp, D_v, lo, hi_))                # (tp, bucket, v): seconds per sample
        pv_ = md.NewIntVar(int(lp.min()), int(lp.max()), "log_pp_sends_per_sample")
        pp_rows = np.array([(a, c, j, n, int(lp[a, c, j, n])) for a, c, j, n in np.ndindex(lp.shape)], dtype=np.int64)
        self._pp_ct = md.AddAllowedAssignments([tp_i, mbk, v_i, pn, pv_], pp_rows.tolist()).Index()
        self.rows += len(pp_rows)
        lpp = self._log(D_pp.astype(float))
        ppl = md.NewIntVar(int(lpp.min()), int(lpp.max()), "log_pp")
        self._element(pp_i, lpp, ppl)
        one = md.NewBoolVar("single_stage")
        md.Add(pp == 1).OnlyEnforceIf(one)
        md.Add(pp >= 2).OnlyEnforceIf(one.Not())
        # log microbatch from above (the floors below shrink as it grows)
        lmb = self._log_above(mb, int(mbs.max()), "log_microbatch_above")
        # a block's time per sample (x tp x cp, as the block table) is at least
        # what must cross a link while it runs, whatever hides behind what
        floors = []    # (log table, its variables, its rows, the flag that enforces it, per microbatch, added)
        zero3_share = None
        pb = perf.block_params(m) / D_tp                  # a block's parameters per GPU
        if 3 in K.BY_NAME["zero"].values and p.allowed("zero", [3])[0]:
            # ZeRO-3: its weight gathers and gradient reduce-scatter per block and
            # microbatch, over a group of at least 2 on the DP tier; every CP rank
            # gathers its TP shard
            comm3 = np.stack([2 * perf.collective_time(sys_, "all_gather", pb * perf.act_bytes(dt), 2, t)
                              + perf.collective_time(sys_, "reduce_scatter", pb * perf.GRAD_COMM_BYTES[dt], 2, t)
                              for t in range(T)], 1)                                  # (tp, tier)
            z3 = md.NewBoolVar("zero3")
            md.Add(zero >= 3).OnlyEnforceIf(z3)
            md.Add(zero <= 2).OnlyEnforceIf(z3.Not())
            # per (tp, cp) pair and tier, per sample over all GPUs (as the block table)
            per_pair = lambda x: self._log((x * D_tp[:, None])[TC[:, 0]] * tc_cp[:, None])  # noqa: E731
            t3 = per_pair(comm3)
            floors.append((t3, [tc_i, dn], list(np.ndindex(t3.shape)), z3, True, 0))
            # and over the sharding group itself, G: each collective moves (G - 1) / G
            # of the bytes (the latency left out), on the gradient tier, at or beyond
            # the DP group's (the least over those tiers)
            whole = np.stack([perf.collective_time(_comm_only_system(sys_), "p2p", pb * (
                2 * perf.act_bytes(dt) + perf.GRAD_COMM_BYTES[dt]), 2, t) for t in range(T)], 1)
            whole = _at_or_beyond(whole)
            tw = per_pair(whole)
            share = np.floor(np.log(np.maximum(G_vals - 1, 1e-30) / G_vals) * LOG_UNITS).astype(np.int64)
            share = np.maximum(share, -64 * LOG_UNITS)              # a group of one: no floor worth the name
            gs = md.NewIntVar(int(share.min()), int(share.max()), "log_shard_group_share")
            self._element(G_i, share, gs)
            floors.append((tw, [tc_i, dn], list(np.ndindex(tw.shape)), z3, True, gs))
            # while they run they take the tier's processor share u from the
            # compute (perf.zero3_comm_time): a block takes at least its
            # compute and TP time plus u x the collectives
            u = np.array([net.processor_share for net in sys_.networks])
            if (u > 0).any():
                zero3_share = (per_pair(np.maximum(_at_or_beyond(whole * u[None, :]), 1e-30)), [tc_i, dn], gs)
        link = sys_.offload_gbps * 1e9
        moving = off and 0 < link < math.inf                # an unlimited link moves for free
        hi_floor = max([int(lq.max())] + [int(f[0].max()) for f in floors])
        if moving:
            # the offload link's seconds per block (x tp x cp per sample, as
            # the block table): the weights' in the forward, and with their
            # gradient accumulator's in the backward (per microbatch); the
            # stored activations' out in the forward, in in the backward (per
            # sequence); perf.offload_traffic
            per_byte = pb[TC[:, 0]] * tc_tp * tc_cp / link      # a block's parameters' seconds per byte each
            w_in = self._log(per_byte * perf.act_bytes(dt))
            w_back = self._log(per_byte * (perf.act_bytes(dt) + perf.GRAD_BYTES_PER_PARAM))
            acts = self._log(np.maximum(np.where(np.isfinite(s1), s1, 0.0), 1.0) * (tc_tp * tc_cp)[:, None] / link)
            hi_floor = max(hi_floor, int(w_back.max()), int(acts.max())) + LOG_UNITS    # their sum: at most twice
        blk = md.NewIntVar(int(lq.min()), hi_floor + 40 * LOG_UNITS, "log_block_time")
        md.Add(blk >= qv + cp_adds)
        if moving:
            self._offload_floor(blk, qv, w_in, w_back, acts, lmb, int(mbs.max()), ow, oa, tc_i, sg, cpairs,
                                [_least_share(x, tau) for x in (fwd, bwd)])
        for j, (table, keys, rows, flag, per_mb, added) in enumerate(floors):
            fv = md.NewIntVar(int(table.min()), int(table.max()), f"log_block_floor_{j}")
            self._table(keys + [fv], [(*ix, int(table[ix])) for ix in rows])
            md.Add(blk >= (fv - lmb if per_mb else fv) + added).OnlyEnforceIf(flag)
        if zero3_share is not None:
            table, keys, added = zero3_share
            fv = md.NewIntVar(int(table.min()), int(table.max()), "log_zero3_processor_share")
            self._table(keys + [fv], [(*ix, int(table[ix])) for ix in np.ndindex(table.shape)])
            self._log_sum_below(blk, qv, fv + added - lmb, AMGM_WEIGHTS, z3)
        stage = md.NewIntVar(int(lq.min() + lx.min()), hi_floor + int(lx.max()) + 48 * LOG_UNITS, "log_stage_time")
        md.Add(stage >= blk + xv)
        self._log_sum_below(stage, blk + xv, pv_ + ppl, AMGM_WEIGHTS, one.Not())
        if ext is not None:
            # the stages together hold every block and the extras once: pp x the
            # slowest stage >= blocks x a block + the extras (first and last stage)
            le = self._log(ext * (tc_tp * tc_cp)[:, None])
            ev = md.NewIntVar(int(le.min()), int(le.max()), "log_extras_time_per_sample")
            self._table([tc_i, mbk, ev], [(a, c, int(le[a, c])) for a in range(len(tc_tp)) for c in range(len(lo))])
            self._log_sum_below(stage, blk + int(math.floor(math.log(m.blocks) * LOG_UNITS)), ev, AMGM_WEIGHTS, [])
        self.bound_lo = int(lq.min() + lx.min() - lg.max() - 1)
        # the least bound of a solution on each row of the block table:
        # bound >= stage + y - log gpus >= qv + min log(Bmax(pp) pp) - max log gpus
        # (y >= 0, stage >= blk + xv, blk >= qv); _prune drops the rows
        # above the cut, and the PP sends' rows of no (tp, bucket) left
        self._cut_rows = {"block": block_rows, "block_floor": block_rows[:, 4] + int(lx.min()) - int(lg.max()) - 1,
                          "pp": pp_rows, "tp_of_pair": TC[:, 0], "buckets": len(lo), "at": None}
        self.bound_hi = hi_floor + int(lx.max()) + 48 * LOG_UNITS - int(lg.min()) + y_hi
        self.bound = md.NewIntVar(self.bound_lo, self.bound_hi, "log_time_per_sample_bound")
        md.Add(self.bound >= stage + y - lgv)
        md.Minimize(self.bound)
        self._dp_floor(stage + y - lgv, n, batch, dp_cp, products(dps, D_cp), [(dp, dn, "dp"), (cp, cn, "cp")], zero,
                       tp_i, pp_i, dp_gt1, pb, qv + rqv + xv - lgv - lnv)

        # ---- HBM, stage by stage (first, busiest middle, last: perf.pipeline_memory's
        # stages; every one must fit): state + microbatch x (stored x blocks in flight + working)
        cap = int(sys_.hbm_gib * perf.GIB / MEM_UNIT)
        s1t = np.floor(np.where(np.isfinite(s1), s1, 0.0) / 1024.0).astype(np.int64)   # KiB: x 1/64 block units
        w1t = np.floor(np.where(np.isfinite(w1), w1, 0.0) / MEM_UNIT).astype(np.int64)
        s1v = md.NewIntVar(0, int(s1t.max()), "stored_per_block")
        w1v = md.NewIntVar(0, int(w1t.max()), "working")
        self._table([tc_i, sg, s1v, w1v], [(a, g, int(s1t[a, g]), int(w1t[a, g])) for a, g in cpairs])
        not_oa = self._not(oa)
        zero3 = md.NewBoolVar("zero_3")
        md.Add(zero >= 3).OnlyEnforceIf(zero3)
        md.Add(zero <= 2).OnlyEnforceIf(zero3.Not())
        first_params = self._first_params(D_tp)
        layout = perf.stage_layout(m.blocks, D_pp)
        for kind, blocks, index in (("first", layout[0], np.zeros_like(D_pp)),
                                    ("middle", layout[1], np.minimum(1, D_pp - 1)),
                                    ("last", layout[2], D_pp - 1)):
            exists = {"first": D_pp >= 1, "middle": D_pp >= 3, "last": D_pp >= 2}[kind]
            blocks = np.where(exists, blocks, 0)
            # the stage's state, unsharded: weights and gradients over (tp, pp,
            # offload_weights), optimizer state over (tp, pp, offload_optimizer);
            # each divided by dp from its ZeRO stage on (_sharded_state)
            unsharded = {item: np.zeros((len(D_tp), len(D_pp), 2)) for item in ("weights", "gradients", "optimizer")}
            # what the offload tier holds of the blocks' state, by the same flags
            offl = {item: np.zeros((len(D_tp), len(D_pp), 2)) for item in ("weights", "gradients", "optimizer")}
            per_param = {"weights": perf.act_bytes(dt), "gradients": perf.GRAD_BYTES_PER_PARAM,
                         "optimizer": perf.OPTIMIZER_BYTES_PER_PARAM[dt]}
            # over the (tp, pp) grid at once; a stage that does not exist holds nothing
            t_g, x_g = np.meshgrid(D_tp.astype(float), D_pp, indexing="ij")
            b_g = np.broadcast_to(np.where(exists, blocks, 0)[None, :], t_g.shape)
            extra = {"first": np.where(x_g > 1, first_params[:, None], self._both[:, None]),
                     "middle": np.zeros_like(t_g), "last": np.broadcast_to(self._last[:, None], t_g.shape)}[kind]
            st = perf.state_bytes(m, dt, t_g, b_g, 1, 0, 0, np.where(exists[None, :], extra, 0.0))
            for o in (0, 1):
                mem = perf.memory_terms(dt, st, 0.0, 0.0, 0.0, Recompute.NONE, o, 0, o)
                for item, table in unsharded.items():
                    table[:, :, o] = np.where(exists[None, :], mem[item], 0.0)
                    offl[item][:, :, o] = np.where(exists[None, :], o * st["p_block"] * st["n_s"] * per_param[item],
                                                   0.0)
            sharded = [self._sharded_state(f"{kind}_{item}", unsharded[item], flag, stage, zero, shard_group,
                                           tp_i, pp_i, top)
                       for item, flag, stage in (("weights", ow, 3), ("gradients", ow, 2), ("optimizer", oo, 1))]
            state = sum(x for x, _ in sharded)
            # ZeRO-3 keeps two whole blocks gathered (the one computing, the next)
            gath = np.zeros((len(D_tp), len(D_pp)), dtype=np.int64)
            for a_, t in enumerate(D_tp):
                gath[a_] = np.floor(np.minimum(2, blocks) * perf.block_params(m) / t * perf.act_bytes(dt)
                                    / MEM_UNIT).astype(np.int64)
            gtab = md.NewIntVar(0, int(gath.max()), f"{kind}_gathered_blocks")
            self._table([tp_i, pp_i, gtab], [(a_, b_, int(gath[a_, b_])) for a_, b_ in np.ndindex(gath.shape)])
            gv = md.NewIntVar(0, int(gath.max()), f"{kind}_gathered_if_zero3")
            md.Add(gv >= gtab).OnlyEnforceIf(zero3)
            state = state + gv
            # blocks in flight: min(cap(pp, v), n x the stage's blocks), in 1/64 block
            b64 = 64 * blocks
            bv = md.NewIntVar(0, int(b64.max()), f"{kind}_stage_blocks")
            self._element(pp_i, b64, bv)
            pidx = np.searchsorted(D_pp, pv[:, 1])
            st_i = index[pidx]
            chunks = np.where(pv[:, 2] > 1, (pv[:, 2] - 1) * pv[:, 1] + 2 * (pv[:, 1] - 1 - st_i) + 1,
                              pv[:, 1] - st_i)
            captab = np.floor(chunks * blocks[pidx] * 64 / pv[:, 2]).astype(np.int64)
            capv = md.NewIntVar(0, int(captab.max()), f"{kind}_blocks_in_flight_cap")
            self._element(pv_i, captab, capv)
            bln = md.NewIntVar(0, int(b64.max()) * p.max_batch, f"{kind}_n_x_blocks")
            md.AddMultiplicationEquality(bln, [n, bv])
            bl = md.NewIntVar(0, int(captab.max()), f"{kind}_blocks_in_flight")
            md.AddMinEquality(bl, [capv, bln])
            top_b = max(int(captab.max()), 64)
            one_b = md.NewIntVar(0, 64, f"{kind}_one_block")
            md.AddMinEquality(one_b, [bl, md.NewConstant(64)])
            ble = md.NewIntVar(0, top_b, f"{kind}_blocks_in_flight_in_hbm")
            md.Add(ble >= one_b)                                 # offloaded: one block's worth at least
            md.Add(ble >= bl).OnlyEnforceIf(not_oa)
            hi = int(s1t.max()) * top_b
            sbl = md.NewIntVar(0, hi, f"{kind}_stored_x_blocks")
            md.AddMultiplicationEquality(sbl, [s1v, ble])
            here = md.NewBoolVar(f"{kind}_stage_exists")
            md.AddAllowedAssignments([pp_i, here], [(int(j), int(exists[j])) for j in range(len(D_pp))])
            w_here = md.NewIntVar(0, int(w1t.max()), f"{kind}_working")
            md.Add(w_here == w1v).OnlyEnforceIf(here)
            md.Add(w_here == 0).OnlyEnforceIf(here.Not())
            per_mb = md.NewIntVar(0, hi + int(w1t.max()), f"{kind}_activations_per_sequence")
            md.Add(per_mb == sbl + w_here)
            acts = md.NewIntVar(0, (hi + int(w1t.max())) * int(mbs.max()), f"{kind}_activations")
            md.AddMultiplicationEquality(acts, [per_mb, mb])
            md.Add(state + acts <= cap)
            if off:
                # the offload tier: the blocks' offloaded state (sharded as in HBM) and,
                # offloaded, every stored activation in flight
                moved = [self._sharded_state(f"{kind}_offloaded_{item}", offl[item], flag, stage, zero,
                                             shard_group, tp_i, pp_i, top)
                         for item, flag, stage in (("weights", ow, 3), ("gradients", ow, 2), ("optimizer", oo, 1))]
                all_in = md.NewIntVar(0, int(s1t.max()) * int(captab.max()), f"{kind}_stored_in_flight")
                md.AddMultiplicationEquality(all_in, [s1v, bl])
                all_mb = md.NewIntVar(0, int(s1t.max()) * int(captab.max()) * int(mbs.max()), f"{kind}_stored_all")
                md.AddMultiplicationEquality(all_mb, [all_in, mb])
                act_off = md.NewIntVar(0, int(s1t.max()) * int(captab.max()) * int(mbs.max()), f"{kind}_acts_offloaded")
                md.Add(act_off >= all_mb).OnlyEnforceIf(oa)
                md.Add(sum(x for x, _ in moved) + act_off <= int(sys_.offload_gib * perf.GIB / MEM_UNIT))

        self.knob_vars = {"recompute_flash_class": sg, "zero": zero, "shard_of_dp": shard, "offload_weights": ow,
                          "offload_activations": oa, "offload_optimizer": oo}
        self.classes = [tuple(int(x) for x in c) for c in classes]
        self.vars = {"gpus": gpus, "tp": tp, "cp": cp, "pp": pp, "dp": dp, "microbatch": mb, "interleave": v, "n": n,
                     "batch": batch}
        self.least = {"cp": int(D_cp.min()), "microbatch": int(mbs.min())}     # warm_start's floors
        self.solver = cp_model.CpSolver()
        self.solver.parameters.num_workers = threads or 1
        for key, value in SOLVER_PARAMETERS.items():
            setattr(self.solver.parameters, key, value)
        self._add_tables()

    # ------------------------------------------------------------ helpers

    def _sharded_state(self, item, table, flag, stage, zero, dp, tp_i, pp_i, dp_max):
        """A state item's bytes per GPU (MEM_UNIT), from its unsharded table
        over (tp, pp, its offload flag), divided by `dp` (the sharding
        group, shard x cp) where the ZeRO stage is `stage` or more (else by
        1), rounded down: (variable, upper bound)."""
        md = self.model
        t = np.floor(table / MEM_UNIT).astype(np.int64)
        whole = md.NewIntVar(0, int(t.max()), f"{item}_unsharded")
        self._table([tp_i, pp_i, flag, whole], [(a, b, o, int(t[a, b, o])) for a, b, o in np.ndindex(t.shape)])
        on = md.NewBoolVar(f"{item}_sharded")
        md.Add(zero >= stage).OnlyEnforceIf(on)
        md.Add(zero < stage).OnlyEnforceIf(on.Not())
        group = md.NewIntVar(1, dp_max, f"{item}_shard")
        md.Add(group == dp).OnlyEnforceIf(on)
        md.Add(group == 1).OnlyEnforceIf(on.Not())
        part = md.NewIntVar(0, int(t.max()), item)
        prod = md.NewIntVar(0, int(t.max()) * dp_max, f"{item}_x_shard")
        md.AddMultiplicationEquality(prod, [part, group])
        md.Add(prod >= whole - group + 1)                  # part >= whole / group, rounded down
        return part, int(t.max())

    def _dp_floor(self, A, n, batch, group, values, reducers, zero, tp_i, pp_i, replicated, pb, R):
        """The DP reduction joins the bound. It runs once per batch and hides
        at most behind the backward of the last microbatch (perf.dp_exposed_time),
        which takes less than one microbatch time t_mb, so the iteration
        (M microbatch times, the bubble included) takes at least
        (M - 1) t_mb + dp_time, and M - 1 >= M (1 - 1/n). Per sample, with A
        the bound without the reduction and D = log(dp_time / batch):
            bound >= D,  and with n >= 2^k:  bound >= log(e^(A + log(1 - 2^-k)) + e^D),
        the log-sum taken from below by its tangents (weighted means). More
        closely, the window is the backward and recomputation kernels of the
        last microbatch on the slowest stage, n_s blocks of at most Bmax(pp):
        t_mb - window >= Bmax(pp) x (a block's pass but those kernels), at
        least the block table row's `R` (its least, per sample as the bound:
        a few % of A / n, and the DP reduction often about as much), so
        with n >= 2 (log(1 - 1/n) >= -1/(n - 1)):
            bound >= log(e^(A - 1/(n - 1)) + e^R + e^D)
        (on 26T and 4,096 GPUs with 2 TiB of offload at 100 GB/s the bound
        of the families near the optimum rose by about 0.7%, and the point
        takes 6 solves, not 8). Hidden
        or not, the reduction slows the iteration by at least the DP tier's
        processor share u of its time: bound >= log(e^A + u e^D).
        dp_time is at least its bandwidth term (perf.dp_comm_time without
        latency, linear in the parameters) for the busiest stage's blocks
        alone (`pb`: a block's parameters per GPU, per tp), the sharding
        group at its cheapest divisor of the replica group `group` (its
        values `values`), on a tier at or beyond each of `reducers` (size,
        tier variable, name) larger than one. ZeRO-3 reduces per microbatch
        (its own floor): none here."""
        md, p, m = self.model, self.p, self.p.model
        T = len(p.system.networks)
        fast = _comm_only_system(p.system)
        groups = sorted(int(g) for g in set(values) if g > 1)
        if not groups:
            return
        # seconds per parameter of the busiest stage, per (replica group, tier, ZeRO stage 0..2)
        per = np.full((len(groups), T, 3), np.inf)
        gi = np.concatenate([np.full(len(divisors(g)), i) for i, g in enumerate(groups)])
        shards = np.concatenate([divisors(g) for g in groups]).astype(float)
        size = np.array(groups, dtype=float)[gi]
        for t in range(T):
            for z in range(3):
                np.minimum.at(per[:, t, z], gi, perf.dp_comm_time(fast, p.datatype, {"p_stage": 1.0}, size, z,
                                                                 shards if z else 0.0, t))
        # what the reduction takes from the processor while it hides (the
        # tier's share u of it, perf.dp_exposed_time), at the same tiers
        u = np.array([net.processor_share for net in p.system.networks])
        per_u = _at_or_beyond(per * u[None, :, None])
        per = _at_or_beyond(per)
        lc = self._log(np.maximum(per, 1e-30))
        cv = md.NewIntVar(int(lc.min()), int(lc.max()), "log_dp_seconds_per_param")
        rn = md.NewIntVar(0, T - 1, "gradient_tier_at_least")
        z_ok = md.NewBoolVar("zero_below_3")
        md.Add(zero <= 2).OnlyEnforceIf(z_ok)
        md.Add(zero >= 3).OnlyEnforceIf(z_ok.Not())

        def per_param(logs, var):
            # var = logs[group, tier, ZeRO stage]; one GPU per replica group and
            # ZeRO-3 carry the least value (the floors do not apply there)
            self._table([group, rn, zero, var], [(g, t, z, int(logs[groups.index(g), t, z]) if g > 1 and z < 3
                                                  else int(logs.min()))
                                                 for g in sorted({int(g) for g in values}) for t in range(T)
                                                 for z in K.BY_NAME["zero"].values])
        per_param(lc, cv)
        for size, net, name in reducers:
            big = md.NewBoolVar(f"{name}_reduces")
            md.Add(size >= 2).OnlyEnforceIf(big)
            md.Add(size <= 1).OnlyEnforceIf(big.Not())
            md.Add(rn >= net).OnlyEnforceIf(big)
        # the busiest stage's block parameters per GPU: log(pb(tp)) + log(Bmax(pp))
        lpb = self._log(pb)
        lbm = self._log(_max_blocks(m.blocks, self.D_pp).astype(float))
        pbv = md.NewIntVar(int(lpb.min()), int(lpb.max()), "log_block_params_per_gpu")
        bmv = md.NewIntVar(int(lbm.min()), int(lbm.max()), "log_busiest_stage_blocks")
        self._element(tp_i, lpb, pbv)
        self._element(pp_i, lbm, bmv)
        lbv = self._log_above(batch, p.max_batch, "log_batch_above")
        D = pbv + bmv + cv - lbv
        md.Add(self.bound >= D).OnlyEnforceIf([replicated, z_ok])
        k, at_least = 1, {}          # n >= 2^k, by k
        while 2 ** k <= p.max_batch and k <= DP_FLOOR_LEVELS:
            nk = at_least[k] = md.NewBoolVar(f"microbatches_at_least_{2 ** k}")
            md.Add(n >= 2 ** k).OnlyEnforceIf(nk)
            md.Add(n < 2 ** k).OnlyEnforceIf(nk.Not())
            ck = int(math.floor(math.log(1 - 2.0 ** -k) * LOG_UNITS))
            self._log_sum_below(self.bound, A + ck, D, EITHER_WEIGHTS, [replicated, z_ok, nk])
            k += 1

        def tighten():
            # the floors that close most of the gap left (a few % where the
            # reduction is long) but slow a solve without an incumbent more
            # than they save: added by the first `next`, after warm_start
            if (u > 0).any():
                # hidden or not, the reduction costs the iteration at least u x
                # its time on top of every microbatch: bound >= log(e^A + u e^D)
                lu = self._log(np.maximum(per_u, 1e-30))
                cu = md.NewIntVar(int(lu.min()), int(lu.max()), "log_dp_processor_seconds_per_param")
                per_param(lu, cu)
                self._log_sum_below(self.bound, A, pbv + bmv + cu - lbv, AMGM_WEIGHTS, [replicated, z_ok])
            if 1 in at_least:
                # for any n >= 2: log(1 - 1/n) >= -1/(n - 1), rounded down
                # (ceil(LOG_UNITS / (n - 1)) units off): near exact at large n,
                # where the levels above fall up to half of n short
                less = md.NewIntVar(1, max(p.max_batch - 1, 1), "microbatches_less_one")
                md.AddMaxEquality(less, [n - 1, 1])
                off = md.NewIntVar(1, LOG_UNITS, "log_last_microbatch_share")
                md.AddDivisionEquality(off, less + LOG_UNITS - 1, less)
                # with what the reduction cannot hide behind in the last
                # microbatch: bound >= log(e^(A - off) + e^R + e^D)
                s = md.NewIntVar(self.bound_lo - LOG_UNITS, self.bound_hi + LOG_UNITS,
                                 "log_all_but_the_hidden")
                md.Add(s >= A - off)
                self._log_sum_below(s, A - off, R, AMGM_WEIGHTS, [])
                self._log_sum_below(self.bound, s, D, EITHER_WEIGHTS, [replicated, z_ok, at_least[1]])
        self._deferred = tighten

    def _offload_floor(self, blk, qv, w_in, w_back, acts, lmb, mb_top, ow, oa, tc_i, sg, cpairs, shares):
        """A block's time with offloaded weights or activations: the
        transfers hide behind the forward and the backward apart
        (perf.offload_overhead), so it takes at least max(in, F) + max(back,
        B) >= in + B, back + F and in + back; `in` the forward's bytes over
        the link (the larger of the weights' and the activations'), `back`
        the backward's (their sum). F and B are at least their least share
        of the block's pass (`shares`, per (tp, cp) pair and class) times
        the block table's pass, qv. In log units, by the log-sums'
        tangents."""
        md = self.model
        lmb_hi = int(math.ceil((math.log(mb_top) + 1) * LOG_UNITS)) + 1
        over = lambda x, name: md.NewIntVar(int(x.min()), int(x.max()), name)  # noqa: E731
        wi, wb = over(w_in, "log_offload_weights_in"), over(w_back, "log_offload_weights_back")
        self._element(tc_i, w_in, wi)
        self._element(tc_i, w_back, wb)
        lf, lb = (self._log(x) for x in shares)
        sv, fs, bs = over(acts, "log_offload_activations"), over(lf, "log_forward_share"), over(lb, "log_backward_share")
        self._table([tc_i, sg, sv, fs, bs], [(a, g, int(acts[a, g]), int(lf[a, g]), int(lb[a, g])) for a, g in cpairs])
        lo = min(int(w_in.min()) - lmb_hi, int(acts.min()))
        hi = max(int(w_back.max()), int(acts.max())) + LOG_UNITS
        moved = md.NewBoolVar("offload_moves")
        md.Add(moved >= ow)
        md.Add(moved >= oa)
        md.Add(moved <= ow + oa)
        into, back = md.NewIntVar(lo, hi, "log_offload_forward"), md.NewIntVar(lo, hi, "log_offload_backward")
        md.Add(into >= wi - lmb).OnlyEnforceIf(ow)
        md.Add(into >= sv).OnlyEnforceIf(oa)
        md.Add(back >= wb - lmb).OnlyEnforceIf(ow)
        md.Add(back >= sv).OnlyEnforceIf(oa)
        self._log_sum_below(back, wb - lmb, sv, EITHER_WEIGHTS, [ow, oa])
        self._log_sum_below(blk, back, qv + fs, EITHER_WEIGHTS, moved)
        self._log_sum_below(blk, into, qv + bs, EITHER_WEIGHTS, moved)
        self._log_sum_below(blk, back, into, EITHER_WEIGHTS, moved)

    def _tightened(self):
        """The model with its deferred floors (_dp_floor's) added, once."""
        if self._deferred is not None:
            add, self._deferred = self._deferred, None
            add()
        self._add_tables()

    def _log_sum_below(self, target, x, y, weights, enforce):
        """target >= log(e^x + e^y) (LOG_UNITS), taken from below by its
        tangents: log(X + Y) >= w log X + (1 - w) log Y + H(w) for every w
        in (0, 1), H the entropy (the weighted mean of the logs is at most
        the log of the mean). w rounded to 1/1024, the constant floored and
        one unit of slack; only where `enforce` (a literal or a list) holds."""
        for w in weights:
            a = int(round(w * 1024))
            wr = a / 1024
            h = -(wr * math.log(wr) + (1 - wr) * math.log(1 - wr))
            self.model.Add(1024 * target >= a * x + (1024 - a) * y + int(math.floor(1024 * h * LOG_UNITS)) - 1024
                           ).OnlyEnforceIf(enforce)
        self.rows += len(weights)

    def _log_above(self, x, top: int, name: str):
        """A variable at or above log x (LOG_UNITS) for the integer variable
        x in [1, top]: the least of the concave log's tangents at the powers
        of two and halfway between them (2^e and 3 x 2^(e-1)), log x <= log
        x0 + (x - x0) / x0, each rounded up (one unit past the quotient,
        which CP-SAT truncates toward zero). It errs by at most 2.1% between
        two tangents and 4.7% past the last one; at the powers of two alone
        by 6.1% and 10% (a batch of 3072 read as 3377: the DP floor 10% short,
        and the families it leaves near the optimum opened one solve each).
        A function of x, not a cap: a cap the objective pushes up is raised
        by the search one unit (and one solution) at a time."""
        md = self.model
        v = md.NewIntVar(0, int(math.ceil((math.log(top) + 1) * LOG_UNITS)) + 1, name)   # x < 2 x0
        tangents = []
        octaves = range(int(math.log2(top)) + 1)
        points = [2 ** e for e in octaves] + [3 * 2 ** (e - 1) for e in octaves if e >= 1]
        for x0 in sorted(x0 for x0 in points if x0 <= top):
            t = md.NewIntVar(-LOG_UNITS, top * LOG_UNITS, f"{name}_tangent_{x0}")
            md.AddDivisionEquality(t, int(math.ceil(x0 * math.log(x0) * LOG_UNITS)) + (x - x0) * LOG_UNITS, x0)
            tangents.append(t + 1)
        md.AddMinEquality(v, tangents)
        return v

    def _not(self, x):
        b = self.model.NewBoolVar(f"not_{x.Name()}")
        self.model.Add(x == 0).OnlyEnforceIf(b)
        self.model.Add(x == 1).OnlyEnforceIf(b.Not())
        return b

    @staticmethod
    def _log(x):
        """Natural logs in LOG_UNITS, floored (a lower bound); what is not
        finite (no such choice) maps above every finite value."""
        x = np.asarray(x, dtype=float)
        ok = np.isfinite(x) & (x > 0)
        lg = np.floor(np.log(np.where(ok, x, 1.0)) * LOG_UNITS)
        hi = lg[ok].max() + 1 if ok.any() else 0
        return np.where(ok, lg, hi).astype(np.int64)

    def _table(self, variables, rows):
        """variables[-1] as a function of the others, tabulated by `rows`.
        Tables over the same variables with the same rows but for that last
        column become one (_add_tables), with a column per function: CP-SAT
        gives each row of a table a literal, and the memory terms of each
        stage share (tp, pp, offload flag) or (tp, pp). 26T on 4,096 GPUs
        with offload: 34 tables of 8,788 rows become 16 of 6,646, and its
        solves take about a third less time, with the same answers. Tables
        whose other columns repeat a row are added as they are."""
        rows = np.asarray(rows, dtype=np.int64).tolist()
        keys = tuple(tuple(r[:-1]) for r in rows)
        if len(set(keys)) < len(keys) or not all(isinstance(x, cp_model.IntVar) for x in variables):
            self.model.AddAllowedAssignments(variables, rows)
            self.rows += len(rows)
            return
        key = (tuple(x.Index() for x in variables[:-1]), keys)
        self._tables.setdefault(key, (variables[:-1], []))[1].append((variables[-1], [int(r[-1]) for r in rows]))

    def _add_tables(self):
        """The tables _table keeps, added to the model: one per set of
        variables and rows."""
        for (_, keys), (variables, columns) in self._tables.items():
            self.model.AddAllowedAssignments(list(variables) + [x for x, _ in columns],
                                             [k + tuple(col[i] for _, col in columns) for i, k in enumerate(keys)])
            self.rows += len(keys)
        self._tables = {}

    def _element(self, index, values, target):
        self.model.AddElement(index, [int(x) for x in np.asarray(values).reshape(-1)], target)
        self.rows += int(np.asarray(values).size)

    def _first_params(self, D_tp):
        """Parameters of the extras on the first stage (and on a single
        stage: both ends, the output layer's shared when tied), per tp."""
        m, dt = self.p.model, self.p.datatype
        self._both = np.zeros(len(D_tp))
        self._last = np.zeros(len(D_tp))
        if m.vocab == 0:
            return np.zeros(len(D_tp))
        first, last = perf.extras_terms(m, self.p.system, dt, D_tp.astype(float), 1.0, 0, 0, 0, 0)
        fp = np.broadcast_to(first["params"], D_tp.shape).astype(float)
        lp = np.broadcast_to(last["params"], D_tp.shape).astype(float)
        self._both = fp + (0.0 if m.tied_embeddings else lp)
        self._last = lp
        return fp

    def _p2p_table(self, D_tp, D_v, lo, hi):
        """Least PP send time on a stage's critical path per sequence, per
        (tp, microbatch bucket, interleave), times tp (as the block table):
        sequence parallel (no gather), the fastest tier; beyond the table
        the bandwidth term alone (the latency shrinks per sequence)."""
        p = self.p
        out = np.full((len(D_tp), len(lo), len(D_v), len(p.system.networks)), np.inf)
        tiers = np.arange(len(p.system.networks))
        for c in range(len(lo)):
            mbs = np.arange(lo[c], min(hi[c], MB_TABLE) + 1) if c < len(lo) - 1 else np.array([MB_TABLE])
            t, mb, v, n = np.meshgrid(D_tp, mbs, D_v, tiers, indexing="ij")
            x = perf.pipeline_p2p_time(p.model, p.system, p.datatype, t, mb, True, 2, v, n, 0.0) / mb
            if c == len(lo) - 1:       # any microbatch beyond: no latency
                x = perf.pipeline_p2p_time(p.model, _no_latency(p.system), p.datatype, t, mb, True, 2, v, n,
                                           0.0) / mb
            out[:, c, :, :] = x.min(axis=1)
        return out * D_tp[:, None, None, None]

    def _cached_block_tables(self, tc_tp, tc_cp, sig, has, cache):
        """_block_tables, each (tp, cp) pair's rows kept in `cache` (None:
        no cache) and computed only for the pairs not in it; the classes
        are the signature grid's, the same for every pair."""
        if cache is None:
            return self._block_tables(tc_tp, tc_cp, sig, has)
        keys = [(int(a), int(b)) for a, b in zip(tc_tp, tc_cp)]
        miss = np.array([i for i, k in enumerate(keys) if k not in cache], dtype=np.int64)
        if len(miss):
            passes, s1, w1, classes, cls_of, ext = self._block_tables(tc_tp[miss], tc_cp[miss],
                                                                   {**sig, "ok": sig["ok"][miss]}, has[miss])
            for j, i in enumerate(miss):
                cache[keys[i]] = (passes[j], s1[j], w1[j], None if ext is None else ext[j])
            cache["classes"] = (classes, cls_of)
        rows = [cache[k] for k in keys]
        ext = None if rows[0][3] is None else np.stack([r[3] for r in rows])
        return (np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows]), np.stack([r[2] for r in rows]),
                *cache["classes"], ext)

    def _block_tables(self, tc_tp, tc_cp, sig, has):
        """Per ((tp, cp) pair, pass, microbatch bucket, class, tp_net,
        cp_net): the least seconds of one block per sequence over the
        class's signatures, the bucket's microbatches and the block's other
        choices (TP_CHOICE), for the pass whole, its forward, its backward,
        and the pass but its backward and recomputation kernels (each least
        alone; _dp_floor's); the last bucket is the peak-rate bound
        for any microbatch beyond MB_TABLE. Per ((tp, cp), class): the least stored
        bytes per block and per sequence, and the working bytes of full
        recomputation. A class is a value of CLASS_KNOBS (recompute,
        flash_attention, ag_redo): what couples time and memory most; the
        other signature knobs are taken at their best for each alone."""
        p = self.p
        cls_key = np.stack([sig[n] for n in CLASS_KNOBS], 1)
        classes, cls_of = unique_rows(cls_key, return_inverse=True)
        cls_of = cls_of.reshape(-1)
        rows = []
        for a in range(len(tc_tp)):
            for g in np.flatnonzero(has[a]):
                ch = tp_choices(p, int(tc_tp[a]), int(tc_cp[a]), bool(sig["sp"][g]))
                rows.append(np.column_stack([np.full(len(ch), a), np.full(len(ch), g), ch]))
        rows = np.concatenate(rows)
        # each bucket's least is at its largest microbatch where the curves
        # rise (_rising_curves); else every microbatch is evaluated
        rising = _rising_curves(p.system)
        mbs = np.append(MB_BUCKETS[1:] - 1, MB_TABLE) if rising else np.arange(1, MB_TABLE + 1)
        a_, g_ = np.repeat(rows[:, 0], len(mbs)), np.repeat(rows[:, 1], len(mbs))
        k = {"tp": tc_tp[a_], "cp": tc_cp[a_], **{n: sig[n][g_] for n in SIGMA if n != "tp_comm"},
             "microbatch": np.tile(mbs, len(rows)),
             **{n: np.repeat(rows[:, 2 + c], len(mbs)) for c, n in enumerate(TP_CHOICE)}}
        b = perf.block_terms(p.model, p.system, p.datatype, k)
        per = (b["fw_compute"] + b["bw_compute"] + b["re_compute"] + b["fw_tp"] + b["bw_tp"] + b["re_tp"]
               + b["fw_cp"] + b["bw_cp"] + b["re_cp"]) / k["microbatch"]
        fw = (b["fw_compute"] + b["fw_tp"] + b["fw_cp"]) / k["microbatch"]
        bucket = np.searchsorted(MB_BUCKETS, k["microbatch"], side="right") - 1
        c_ = cls_of[g_]
        nB, nC, T = len(MB_BUCKETS) + 1, len(classes), len(p.system.networks)
        tier, ctier = k["tp_net"], k["cp_net"]
        # the whole pass, and its forward and backward apart (the offload
        # transfers hide behind each separately: perf.offload_overhead)
        tau, fwd, bwd, rest = (np.full((len(tc_tp), nB, nC, T, T), np.inf) for _ in range(4))
        at = (a_, bucket, c_, tier, ctier)
        np.minimum.at(tau, at, per)
        np.minimum.at(fwd, at, fw)
        np.minimum.at(bwd, at, per - fw)
        # the pass but its backward and recomputation kernels, what the DP
        # reduction cannot hide behind (perf.dp_exposed_time's window;
        # _dp_floor). The pass falls as the microbatch grows but this part
        # need not (an exposed collective grows as the kernel it hides
        # behind shrinks), so where only the largest microbatch of a bucket
        # is evaluated, the kernels are taken at the bucket's smallest, where
        # per sequence they are most; at least the forward pass either way
        kernels = (b["bw_compute"] + b["re_compute"]) / k["microbatch"]
        if rising:
            least = MB_BUCKETS[bucket]
            wide = least < k["microbatch"]
            bl = perf.block_terms(p.model, p.system, p.datatype, {**{n: v[wide] for n, v in k.items()},
                                                                   "microbatch": least[wide]})
            kernels[wide] = (bl["bw_compute"] + bl["re_compute"]) / least[wide]
        np.minimum.at(rest, at, np.maximum(per - kernels, fw))
        one = k["microbatch"] == 1
        s1 = np.full((len(tc_tp), nC), np.inf)
        w1 = np.full((len(tc_tp), nC), np.inf)
        np.minimum.at(s1, (a_[one], c_[one]), np.broadcast_to(b["stored"], per.shape)[one])
        full = k["recompute"] == Recompute.FULL
        np.minimum.at(w1, (a_[one], c_[one]), np.where(full, np.broadcast_to(b["working"], per.shape), 0.0)[one])
        # beyond the table, per sequence: the block at the peak rate with
        # latency-free networks (_bound_system), at the largest microbatch any
        # strategy has (the batch limit). Each operator's time, and what its
        # overlapped communication leaves exposed, only grow with its kernel
        # and communication times (perf.overlapped, perf._cp_exposed), so this
        # is below the exact time at the same microbatch; and per sequence it
        # only falls as the microbatch grows: at the peak rate a kernel's time
        # is linear in the microbatch but for its weights, read once per
        # microbatch, and a latency-free collective's is linear, so each
        # operator's, a max and sum of those, is too (at a microbatch of 1 it
        # was no bound: 2.6% above the exact time at 4 on a wide block,
        # test_master)
        k1 = {n: v[one] for n, v in k.items()}
        top = max(p.max_batch, MB_TABLE + 1)
        kt = {**k1, "microbatch": np.full(int(one.sum()), top)}
        bound_sys = _bound_system(p.system)
        bd = perf.block_terms(p.model, bound_sys, p.datatype, kt)
        beyond = (a_[one], nB - 1, c_[one], tier[one], ctier[one])
        fw_b = bd["fw_compute"] + bd["fw_tp"] + bd["fw_cp"]
        bw_b = bd["bw_compute"] + bd["bw_tp"] + bd["bw_cp"] + bd["re_compute"] + bd["re_tp"] + bd["re_cp"]
        np.minimum.at(tau, beyond, (fw_b + bw_b) / top)
        np.minimum.at(fwd, beyond, fw_b / top)
        np.minimum.at(bwd, beyond, bw_b / top)
        np.minimum.at(rest, beyond, fw_b / top)
        # the stage extras (embedding, output layer and loss: first and last
        # stage together), per sequence: the least over every choice but
        # (tp, cp) and the bucket; beyond the table, on _bound_system as the blocks
        ext = None
        if p.model.vocab > 0:
            ext = np.full((len(tc_tp), nB), np.inf)
            args = lambda kk: (kk["tp"], kk["microbatch"], kk["recompute"], kk["tp_comm"], kk["tp_overlap"],  # noqa: E731
                               kk["tp_net"], kk["cp"])
            ends = perf.extras_terms(p.model, p.system, p.datatype, *args(k))
            np.minimum.at(ext, (a_, bucket), sum(e[n] for e in ends for n in perf.EXTRA_TIMES) / k["microbatch"])
            ends = perf.extras_terms(p.model, bound_sys, p.datatype, *args(kt))
            np.minimum.at(ext, (a_[one], nB - 1), sum(e[n] for e in ends for n in perf.EXTRA_TIMES) / top)
        return np.stack([tau, fwd, bwd, rest], 1), s1, w1, classes, cls_of, ext

    # --------------------------------------------------------------- loop

    def stats(self) -> dict:
        self._tightened()
        proto = self.model.Proto()
        return {"model_variables": len(proto.variables), "model_constraints": len(proto.constraints),
                "table_rows": self.rows}

    def next(self, deadline: float | None):
        """(family knobs, bound in seconds per sample) of the least bound
        left, None when nothing is left (the proof), or 'timeout' once the
        deadline (time.perf_counter) has passed. `passed` keeps the other
        solutions the solve went through (_Passed): once the objective is
        cut at the incumbent, each is a family the proof must open too, so
        opening them saves solves."""
        self.passed, self.optimal = [], False
        if self.empty:
            return None
        self._tightened()
        if not self._prune():
            return None
        if deadline is not None:
            time_left = deadline - time.perf_counter()
            if time_left <= 0:
                return "timeout"
            self.solver.parameters.max_time_in_seconds = time_left
        passed = _Passed(self.vars, self.bound)
        self.solver.parameters.cp_model_presolve = not self.bound_objective
        status = self.solver.Solve(self.model, passed)
        self.solves += 1
        self.optimal = status == cp_model.OPTIMAL
        self.passed = passed.found[:-1] if self.optimal else passed.found
        if status == cp_model.INFEASIBLE:
            self.empty = True
            return None
        if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            return "timeout"
        fam = {k: int(self.solver.Value(x)) for k, x in self.vars.items()}
        if self.bound_objective:
            return fam, math.exp(float(self.solver.BestObjectiveBound()) / LOG_UNITS)
        return fam, math.exp(float(self.solver.Value(self.bound)) / LOG_UNITS)

    def fewest_gpus(self, goal: float):
        """Make the model ask for the fewest GPUs reaching `goal` seconds
        per sample: the bound cut at the goal, the count minimised, and
        among a count's families the least bound first (the likeliest to
        reach the goal: the first opened that does ends the search at that
        count). `next` then returns the family's bound, not the
        objective's."""
        if self.empty:
            return
        cut = _log_cut(goal)
        self._cut_at(cut)
        self.model.Minimize(self.vars["gpus"] * (cut - self.bound_lo + 1) + self.bound)
        self.bound_objective = False

    def warm_start(self, deadline: float | None):
        """A family to open first: the least bound with cp at most WARM_CP
        and microbatches up to WARM_MB (or the least each allows), from a
        copy of the model (CP-SAT finds the first optimum of the whole model
        several times slower without an incumbent to cut at, and the small
        cp and microbatches are where optima mostly are). Only a heuristic:
        the family is opened and excluded as any other, and the proof still
        comes from the whole model. Copies with only the block rows within
        WARM_MARGINS of the least are tried first, then the whole copy.
        None when nothing is found."""
        if self.empty:
            return None
        least = int(self._cut_rows["block_floor"].min())
        # (a hinted family opened first may have cut the model already: a
        # margin at or past the cut would keep the rows the whole copy keeps)
        limits = [least + int(x * LOG_UNITS) for x in WARM_MARGINS]
        for limit in [x for x in limits if self.cut is None or x < self.cut] + [None]:
            copy = self.model.clone()
            if limit is not None and not self._keep_rows(copy, limit):
                continue
            for name, most in (("cp", WARM_CP), ("microbatch", WARM_MB)):
                x = copy.GetIntVarFromProtoIndex(self.vars[name].Index())
                copy.Add(x <= max(most, self.least[name]))
            # the bound's least values tried first, among the portfolio's strategies
            copy.AddDecisionStrategy([copy.GetIntVarFromProtoIndex(self.bound.Index())], cp_model.CHOOSE_FIRST,
                                     cp_model.SELECT_MIN_VALUE)
            solver = cp_model.CpSolver()
            solver.parameters.copy_from(self.solver.parameters)
            solver.parameters.cp_model_presolve = True
            if deadline is not None:
                solver.parameters.max_time_in_seconds = max(deadline - time.perf_counter(), 0.0)
            status = solver.Solve(copy)
            self.solves += 1
            if status in (cp_model.OPTIMAL, cp_model.FEASIBLE):
                return {k: int(solver.Value(copy.GetIntVarFromProtoIndex(x.Index()))) for k, x in self.vars.items()}
        return None

    def bound_of(self, s) -> float | None:
        """The model's bound (seconds per sample) for one strategy (a
        Strategy or knob codes), or None when the model rejects it: a
        relaxation never rejects a strategy the exact model accepts, and
        its bound never exceeds the exact time (tests check both)."""
        k = {n: int(v) for n, v in K.canonical(s if isinstance(s, dict) else s.to_dict()).items()}
        if self.empty:
            return None
        self._tightened()
        copy = self.model.clone()
        var = lambda x: copy.GetIntVarFromProtoIndex(x.Index())  # noqa: E731
        fixed = {"gpus": k["tp"] * k["cp"] * k["pp"] * k["dp"], **{n: k[n] for n in ("tp", "cp", "pp", "dp",
                                                                                       "microbatch", "interleave",
                                                                                       "batch")},
                 "zero": k["zero"], "shard_of_dp": k["shard"] if k["shard"] > 0 else k["dp"],
                 "offload_weights": k["offload_weights"],
                 "offload_activations": k["offload_activations"], "offload_optimizer": k["offload_optimizer"]}
        for n, x in fixed.items():
            copy.Add(var(self.vars[n] if n in self.vars else self.knob_vars[n]) == x)
        cls = tuple(k[n] for n in CLASS_KNOBS)
        if cls not in self.classes:
            return None
        copy.Add(var(self.knob_vars["recompute_flash_class"]) == self.classes.index(cls))
        solver = cp_model.CpSolver()
        solver.parameters.num_workers = 1
        status = solver.Solve(copy)
        if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            return None
        return math.exp(solver.ObjectiveValue() / LOG_UNITS)

    def exclude(self, fam: dict, threshold: float):
        """Forbid the family (every batch of it was opened) and cut the
        objective at the incumbent."""
        self.model.AddForbiddenAssignments([self.vars[k] for k in FAMILY_KEYS], [tuple(fam[k] for k in FAMILY_KEYS)])
        self.cuts += 1
        if math.isfinite(threshold):
            self._cut_at(_log_cut(threshold))

    def _cut_at(self, cut: int):
        """The bound at most `cut` (LOG_UNITS) from now on."""
        self.model.Add(self.bound <= cut)
        self.cut = cut if self.cut is None else min(self.cut, cut)

    def _prune(self) -> bool:
        """Drop the rows no solution under the cut can take: the block
        table's rows whose least bound is above it (CP-SAT gives each row
        of a table a literal, and loading them is most of a solve: 26T on
        4,096 GPUs with offload keeps 1,294 of 3,101 rows and its proof
        solves take 0.09 s, not 0.22 s), then the PP sends' rows of a
        (tp, microbatch bucket) no block row is left on. Only rows the cut
        already forbids go, so the model's solutions are the same. False
        when no block row is left: nothing is under the cut."""
        r = self._cut_rows
        if self.cut is None or (r["at"] is not None and self.cut >= r["at"]):
            return True
        r["at"] = self.cut
        return self._keep_rows(self.model, self.cut)

    def _keep_rows(self, model, cut: int) -> bool:
        """Keep in `model` (this model or a clone) the block table's rows
        whose least bound is at most `cut`, and the PP sends' rows of the
        (tp, microbatch bucket) pairs they leave; False when none is left."""
        r = self._cut_rows
        block = r["block"][r["block_floor"] <= cut]
        if len(block) == 0:
            return False
        left = np.unique(r["tp_of_pair"][block[:, 0]] * r["buckets"] + block[:, 1])
        pp = r["pp"][np.isin(r["pp"][:, 0] * r["buckets"] + r["pp"][:, 1], left)]
        proto = model.Proto()
        for index, rows in ((self._block_ct, block), (self._pp_ct, pp)):
            values = proto.constraints[index].table.values
            values.clear()
            values.extend(rows.reshape(-1).tolist())
        return True
