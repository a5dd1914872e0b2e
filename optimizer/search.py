"""The search: the fastest strategy in the space, with a proof.

Objective: time per sample (seconds per batch / batch), minimised; that is
samples per second, maximised, since the batch may differ between
strategies. Ties are broken by the strategy's knobs, in perf.KNOBS order.

How the proof works (see space.py for the levels):

1. Tables. The model's own term functions are evaluated on small tuples:
   block terms on (tp, microbatch, sigma, tp_comm, tp_overlap, tp_net),
   the rest on groups (structure x sigma x ZeRO stage x sharding group x
   offload flags). Memory
   per GPU depends on the group alone, so a group's HBM and offload
   footprints are exact. Its time bound takes, for each term, the best any
   member can do (least exposed TP communication, cheapest PP and DP
   placement, offload against the longest pass); every term of the model is
   non-decreasing in those, so the bound never exceeds any member's exact
   time (tests check this over random strategies).
2. The master problem, in CP-SAT: which structure to open next. Its
   variables are the structure's knobs (tp, pp, dp, microbatch, interleave,
   tied to one index), its constraints the rules (tp*pp*dp = gpus, batch
   limit, memory: at least one group of the structure fits HBM and the
   offload tier), its objective the structure's bound (the best bound of its
   fitting groups) scaled to integers and rounded down.
3. The loop. Open the structure CP-SAT proposes; take its fitting groups in
   order of bound and evaluate their members with the exact model while the
   bound can still beat the k-th best time; then exclude the structure and
   cut the objective at the k-th best time (rounded up). The other
   families the solve passed on its way to its optimum (Master.passed) are
   opened and excluded the same way while their objective there can still
   beat the k-th best: under the cut, the proof would have to open each of
   them anyway, one solve apiece; so are the siblings that share its row
   of the block table (`siblings`: the master barely tells them apart).
   Then solve again.
   When CP-SAT proves the master infeasible, no unopened structure can beat
   the incumbent: the incumbent is optimal.
"""

from __future__ import annotations

import dataclasses
import math
import textwrap
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from . import knobs as K
from . import perf
from .errors import ConfigError
from .evaluate import Report, evaluate, plain_json
from .explain import explain, feasible
from .spec import MAX_GPUS, MAX_INT_FIELD, default_datatype, fmt_limit, load_model, load_system
from .knobs import describe
from .master import FAMILY_KEYS, MB_BUCKETS, MB_TABLE, Master, block_cache_for, work_floor
from .space import (GROUP_REST, MEMBER, SIGMA, TP_CHOICE, Kept, Problem, batches_of, capacity_free_key, count_space,
                    enumerate_all, families, group_rest, group_rows, keep, knob_rows_to_strategy, make_problem,
                    members_of, sigmas, structures, tp_choices, tp_choices_for, unique_rows)

RELATIVE_SLACK = 1e-9     # a bound within this of the incumbent is still explored
MEMBER_BATCH = 4          # members of a group evaluated exactly at a time
NEAR_KEPT = 48            # near ties a plan passes on (PlanResult.near), and opens first (_plan's `near`)
# limits on plan's own arguments (README, "Limits on inputs")
MAX_TOP_K = 1000          # strategies listed: each is evaluated again for its report
MAX_THREADS = 1024        # CP-SAT workers
MAX_TIME_LIMIT_S = 1e7    # about four months
METHODS = ("cpsat", "enumerate")
STATUSES = ("optimal", "feasible", "infeasible", "unknown")


@dataclass
class PlanResult:
    """What `plan` answers. `status` is one of

      optimal     the best strategy, proven (gap 0)
      feasible    the time limit ran out after a strategy was found: the
                  best found and its gap to the proven bound
      infeasible  nothing in the space fits, proven, with an explanation
      unknown     the time limit ran out before any strategy was found:
                  nothing proven either way

    `lower_bound` is the proven lower bound on time per sample over the
    whole space (seconds; 0 when nothing is proven); `bound_samples_per_s`
    the matching ceiling on throughput; `gap` the relative distance of the
    best found to it (0 when optimal). `summary()` is the text the CLI
    prints, `to_dict()` the JSON it prints (strict: no NaN or infinity)."""

    status: str
    best: Report | None
    top: list
    lower_bound: float
    gap: float
    stats: dict
    problem: dict
    explanation: dict | None = None
    messages: list = field(default_factory=list)
    system: object = field(default=None, repr=False, compare=False)   # the System, for capacities in summary()
    # the families (FAMILY_KEYS but gpus) the solves returned under the
    # incumbent, for a neighbouring problem to open first (_plan's `near`)
    near: list = field(default_factory=list, repr=False, compare=False)

    @property
    def bound_samples_per_s(self) -> float:
        return 1.0 / self.lower_bound if self.lower_bound > 0 else math.inf

    def to_dict(self) -> dict:
        """Plain, strict-JSON values: a non-finite bound or gap is None."""
        return plain_json({"status": self.status, "problem": self.problem,
                           "best": self.best.to_dict() if self.best else None,
                           "top": [r.to_dict() for r in self.top],
                           "lower_bound_s_per_sample": self.lower_bound,
                           "bound_samples_per_s": self.bound_samples_per_s,
                           "gap": self.gap, "stats": self.stats, "explanation": self.explanation,
                           "messages": self.messages})

    def summary(self) -> str:
        """The result as the CLI prints it: the problem and status, the best
        strategy's report, the top list, and the proof (or the explanation)."""
        pr, st = self.problem, self.stats
        batch = f"batch {pr['batch']}" if pr.get("batch") else f"batch <= {pr['max_batch']}"
        head = f"{pr['model']} on {pr['gpus']:,} x {pr['system']}, {pr['datatype']}, {batch}: {self.status}"
        calls = f"{st['solver_calls']} CP-SAT solves, " if "solver_calls" in st else ""
        proof = (f"space {st['space_size']:,} strategies ({st['structures']:,} structures), "
                 f"{st['evaluated']:,} evaluated exactly ({100 * st['evaluated_fraction']:.4f}%), "
                 f"{calls}{st['solve_s']:.2f} s"
                 + (f" (explained in {st['explain_s']:.2f} s)" if "explain_s" in st else ""))
        if self.best is None:
            if self.status == "unknown":
                what = ("time limit reached before a strategy was found; no proof either way"
                        + (f" (allow more than {st['time_limit_s']:g} s)" if st.get("time_limit_s") else ""))
            elif self.explanation:
                what = format_explanation(self.explanation)
                if self.explanation["summary"] in self.messages:
                    return "\n".join([head, what])
            else:
                what = "no strategy in the space fits"
            return "\n".join([head, what, proof])
        lines = [head, *self.messages, self.best.summary(self.system)]
        if len(self.top) > 1:
            lines.append(f"top {len(self.top)}")
            for i, r in enumerate(self.top, 1):
                lines.append(f"  {i:>2}. {r.samples_per_s:10.3f} samples/s  MFU {100 * r.mfu:5.1f}%  "
                             + describe(r.strategy))
        if self.status == "optimal":
            verdict = "proven optimal"
        elif math.isfinite(self.gap):
            verdict = f"gap {100 * self.gap:.2f}% (time limit)"
        else:
            verdict = "no bound proven (time limit)"
        bound = (f"no strategy exceeds {self.bound_samples_per_s:,.3f} samples/s"
                 if math.isfinite(self.bound_samples_per_s) else "no ceiling on samples/s proven")
        lines.append(f"proof  {verdict}: {bound}; {proof}")
        return "\n".join(lines)


FIX_LABELS = (("hbm_gib", "HBM per GPU", "GiB"), ("offload_gib", "offload memory per GPU", "GiB"),
              ("gpus", "GPU count", "GPUs"), ("max_batch", "max batch", "sequences"),
              ("nvlink_size", "NVLink domain", "GPUs"))


def format_explanation(ex: dict) -> str:
    """An explanation (explain.explain) as a wrapped paragraph and a table of single fixes."""
    lines = textwrap.wrap(ex["summary"], width=88)
    if not ex.get("fixes"):
        return "\n".join(lines)
    lines.append("smallest single change that fits (each alone, all else as asked):")
    for key, label, unit in FIX_LABELS:
        value = ex["fixes"].get(key)
        lines.append(f"  {label:<24} {f'{value:,} {unit}' if value is not None else 'does not help':>18}")
    return "\n".join(lines)


# ------------------------------------------------------------------ tables

class Tables:
    """Exact memory and bounded time of every group, from the model's term
    functions evaluated on small tuples and composed by perf's own
    composition (microbatch_time, iteration_time, memory_terms) with relaxed
    inputs: for each term the least any member of the group can do."""

    def __init__(self, p: Problem, S: dict):
        self.p, self.S = p, S
        m, sys_, dt = p.model, p.system, p.datatype
        T = len(sys_.networks)
        nS = len(S["tp"])
        S_f = {k: v.astype(float) for k, v in S.items()}
        self.micro = S_f["batch"] / S_f["dp"] / S_f["microbatch"]

        # ---- block terms on (tp, cp, microbatch) x sigma x block choice (TP_CHOICE)
        pairs, inv = unique_rows(np.stack([S["tp"], S["cp"], S["microbatch"]], 1), return_inverse=True)
        inv = inv.reshape(-1)
        sig = sigmas(p, pairs[:, 0], pairs[:, 1])
        nU, nG = sig["ok"].shape
        parts = []       # rows (u, sigma, *TP_CHOICE)
        tp_choices_for(p, pairs[:, 0], pairs[:, 1])
        for u in range(nU):
            for sp in (False, True):
                js = np.flatnonzero(sig["ok"][u] & (sig["sp"] == sp))
                c = tp_choices(p, int(pairs[u, 0]), int(pairs[u, 1]), sp)
                if len(js) and len(c):
                    parts.append(np.column_stack([np.full(len(js) * len(c), u), np.repeat(js, len(c)),
                                                  np.tile(c, (len(js), 1))]))
        rows = np.concatenate(parts) if parts else np.zeros((0, 2 + len(TP_CHOICE)), dtype=np.int64)
        u, j = rows[:, 0], rows[:, 1]
        blk = perf.block_terms(m, sys_, dt, {"tp": pairs[u, 0], "cp": pairs[u, 1], "microbatch": pairs[u, 2],
                                             **{n: sig[n][j] for n in SIGMA},
                                             **{n: rows[:, 2 + c] for c, n in enumerate(TP_CHOICE)}})
        flat = u * nG + j

        def reduce(values, how, fill):
            out = np.full(nU * nG, fill)
            how.at(out, flat, values)
            return out.reshape(nU, nG)

        compute = blk["fw_compute"] + blk["bw_compute"] + blk["re_compute"]
        tpx = blk["fw_tp"] + blk["bw_tp"] + blk["re_tp"] + blk["fw_cp"] + blk["bw_cp"] + blk["re_cp"]
        fw_pass = blk["fw_compute"] + blk["fw_tp"] + blk["fw_cp"]
        bw_pass = blk["bw_compute"] + blk["bw_tp"] + blk["bw_cp"] + blk["re_compute"] + blk["re_tp"] + blk["re_cp"]
        # per block choice, for refining a group's bound member by member; a
        # choice is known by its index in the product of its knobs' domains
        self.choice_dims = tuple(len(K.BY_NAME[n].enum) if K.BY_NAME[n].kind == "enum" else T for n in TP_CHOICE)
        by = np.argsort(flat, kind="stable")
        self.n_choices = int(np.prod(self.choice_dims))
        # a row by (pair, signature, choice): its position in by-order, sorted by that key
        self.row_keys = flat[by] * self.n_choices + np.ravel_multi_index(tuple(rows[by][:, 2:].T), self.choice_dims)
        self.row_by_key = np.argsort(self.row_keys, kind="stable")
        self.row_compute, self.row_tpx, self.row_ag = compute[by], tpx[by], blk["ag"][by]
        self.row_fw_pass, self.row_bw_pass = fw_pass[by], bw_pass[by]
        self.pairs_inv, self.nG = inv, nG
        self.has = reduce(np.ones(len(rows), bool), np.logical_or, False)
        self.comp = reduce(compute, np.minimum, np.inf)
        self.comp_max = reduce(compute, np.maximum, 0.0)
        self.window_blk = reduce(blk["bw_compute"] + blk["re_compute"], np.maximum, 0.0)
        self.tpx_min = reduce(tpx, np.minimum, np.inf)
        self.fw_pass_max = reduce(fw_pass, np.maximum, 0.0)
        self.bw_pass_max = reduce(bw_pass, np.maximum, 0.0)
        self.stored = reduce(blk["stored"], np.maximum, 0.0)
        self.working = reduce(blk["working"], np.maximum, 0.0)
        self.ag_min = reduce(blk["ag"], np.minimum, np.inf)
        # the stage extras (embedding, logits): their state and stored bytes
        # exactly, their times at the least any TP choice takes
        self.extras = None
        if m.vocab > 0:
            c_ = {n: rows[:, 2 + c] for c, n in enumerate(TP_CHOICE)}
            ends = perf.extras_terms(m, sys_, dt, pairs[u, 0], pairs[u, 2], sig["recompute"][j],
                                     c_["tp_comm"], c_["tp_overlap"], c_["tp_net"], pairs[u, 1])
            self.extras = [{key: reduce(np.broadcast_to(x[key], flat.shape),
                                        np.maximum if key in ("params", "stored") else np.minimum,
                                        0.0 if key in ("params", "stored") else np.inf)
                            for key in ("params", "stored") + perf.EXTRA_TIMES} for x in ends]
        self.sig = sig

        # ---- groups: structure x sigma x the rest of the group key (ZeRO, shard, offload flags)
        valid = self.has[inv]                                   # nS x nG
        gi, gj, gr = [], [], []
        vi, vj = np.nonzero(valid)
        for dp, cp in unique_rows(np.stack([S["dp"], S["cp"]], 1)):
            rr = group_rest(p, int(dp), int(cp))
            at = (S["dp"][vi] == dp) & (S["cp"][vi] == cp)
            gi.append(np.repeat(vi[at], len(rr)))
            gj.append(np.repeat(vj[at], len(rr)))
            gr.append(np.tile(rr, (int(at.sum()), 1)))
        gi = np.concatenate(gi) if gi else np.zeros(0, dtype=np.int64)
        gj = np.concatenate(gj) if gj else np.zeros(0, dtype=np.int64)
        ex = np.concatenate(gr) if gr else np.zeros((0, len(GROUP_REST)), dtype=np.int64)
        self.g_struct, self.g_sigma, self.g_rest = gi, gj, ex
        self.g_zero, self.g_shard, self.g_ow, self.g_oa, self.g_oo = (ex[:, GROUP_REST.index(n)] for n in (
            "zero", "shard", "offload_weights", "offload_activations", "offload_optimizer"))
        ug = inv[gi]
        tp, cp, pp, dp = S_f["tp"][gi], S_f["cp"][gi], S_f["pp"][gi], S_f["dp"][gi]
        rep_dp, rep_shard = perf.grad_group(dp, cp, self.g_shard)
        v, mb, batch = S_f["interleave"][gi], S_f["microbatch"][gi], S_f["batch"][gi]
        micro = self.micro[gi]
        sp = sig["sp"][gj]

        mem, stages = self.pipeline(np.arange(len(gi)))
        self.g_hbm, self.g_offload = mem["hbm"], mem["offload"]
        self.g_fits = (mem["hbm"] <= sys_.hbm_gib * perf.GIB) & (mem["offload"] <= sys_.offload_gib * perf.GIB)

        stored = self.stored[ug, gj]
        traffic = perf.offload_traffic(dt, stages[0][1]["p_block"], stored, self.g_ow, self.g_oa)
        off_lb, _ = perf.offload_overhead(sys_, traffic, self.fw_pass_max[ug, gj], self.bw_pass_max[ug, gj])
        pp_lb = np.min([perf.pipeline_p2p_time(m, sys_, dt, tp, mb, sp, pp, v, n, self.ag_min[ug, gj], cp)
                        for n in range(T)], axis=0)
        # ZeRO-3's exposed gathers: the best tier for the dp x cp group against the longest
        # compute (non-increasing in the compute, and members differ only in tiers and compute)
        p_block = stages[0][1]["p_block"]
        z3_lb = np.min([perf.zero3_comm_time(sys_, dt, p_block, rep_dp, self.g_zero, rep_shard, n,
                                             self.comp_max[ug, gj]) for n in range(T)], axis=0)
        t_mb, _ = perf.slowest_stage(stages, self.comp[ug, gj], self.tpx_min[ug, gj], off_lb, pp_lb, z3_lb)
        # DP hides behind the last backward of the slowest stage: at most its blocks
        window = self.max_blocks(stages) * self.window_blk[ug, gj]
        dp_lb = np.full(len(gi), np.inf)
        for n in range(T):
            opt, dpt = perf.step_times(sys_, dt, stages, rep_dp, self.g_zero, rep_shard, n, self.g_oo)
            for dov in (0, 1):
                dp_lb = np.minimum(dp_lb, perf.dp_exposed_time(sys_, dpt, window, (dov == 1) & (rep_dp > 1), n))
        self.g_bound = perf.iteration_time(micro, pp, v, t_mb, opt, dp_lb) / batch
        self.g_opt = opt
        self.g_traffic = traffic

        # ---- per structure: best bound over its fitting groups
        self.s_bound = np.full(nS, np.inf)
        fit = self.g_fits
        np.minimum.at(self.s_bound, gi[fit], self.g_bound[fit])
        order = np.lexsort((self.g_bound, gi))
        self.order = order
        self.starts = np.searchsorted(gi[order], np.arange(nS + 1))
        self.n_groups = len(gi)

    def pipeline(self, g):
        """perf.pipeline_memory for groups `g`: the fullest stage's memory,
        and the stages that can be the fullest or the slowest."""
        S, p = self.S, self.p
        i, j = self.g_struct[g], self.g_sigma[g]
        u = self.pairs_inv[i]
        extras = ([{key: x[key][u, j] for key in x} for x in self.extras] if self.extras else (None, None))
        rep_dp, rep_shard = perf.grad_group(S["dp"][i].astype(float), S["cp"][i], self.g_shard[g])
        return perf.pipeline_memory(p.model, p.datatype, S["tp"][i], S["pp"][i], rep_dp,
                                    S["interleave"][i].astype(float), self.micro[i], self.g_zero[g], rep_shard,
                                    self.stored[u, j], self.working[u, j], self.sig["recompute"][j],
                                    (self.g_ow[g], self.g_oa[g], self.g_oo[g]), *extras)

    @staticmethod
    def max_blocks(stages):
        return np.max([np.where(exists, blocks, 0) for blocks, _, _, exists in stages], axis=0)

    def groups_of(self, i: int) -> np.ndarray:
        """Group indices of structure i, best bound first."""
        return self.order[self.starts[i]:self.starts[i + 1]]

    def member_bounds(self, g, knobs: dict) -> np.ndarray:
        """The bound of each member's group refined to its TP choice
        (tp_comm, tp_overlap, tp_net): that choice's compute, exposed TP
        communication and offload overhead, and the best PP and DP
        placement (and DP overlap) that the placement rule allows beside
        its tp_net. `g`: the group of every member (one index, or one per
        member, as `members` gives them). One value per member: the bound
        of the TP choice it belongs to."""
        p, S = self.p, self.S
        g = np.broadcast_to(np.asarray(g, dtype=np.int64), np.shape(knobs["tp"]))
        i, j = self.g_struct[g], self.g_sigma[g]
        u = self.pairs_inv[i]
        key = np.ravel_multi_index(tuple(knobs[n] for n in TP_CHOICE), self.choice_dims)
        pos = self.row_by_key[np.searchsorted(self.row_keys, (u * self.nG + j) * self.n_choices + key,
                                              sorter=self.row_by_key)]
        traffic = tuple(np.asarray(x)[g] for x in self.g_traffic)
        off, _ = perf.offload_overhead(p.system, traffic, self.row_fw_pass[pos], self.row_bw_pass[pos])
        tp, cp, pp, dp = (S[k][i].astype(float) for k in ("tp", "cp", "pp", "dp"))
        v, batch, micro = S["interleave"][i].astype(float), S["batch"][i].astype(float), self.micro[i]
        pp_m = perf.pipeline_p2p_time(p.model, p.system, p.datatype, tp, S["microbatch"][i].astype(float),
                                      self.sig["sp"][j], pp, v, knobs["pp_net"], self.row_ag[pos], cp)
        _, stages = self.pipeline(g)
        window = self.max_blocks(stages) * self.window_blk[u, j]
        rep_dp, rep_shard = perf.grad_group(dp, cp, self.g_shard[g])
        rep_net = perf.grad_tier(p.system, dp, cp, knobs["dp_net"], knobs["cp_net"])
        _, dpt = perf.step_times(p.system, p.datatype, stages, rep_dp, self.g_zero[g], rep_shard,
                                 rep_net, self.g_oo[g])
        dp_m = perf.dp_exposed_time(p.system, dpt, window, knobs["dp_overlap"].astype(bool) & (rep_dp > 1),
                                    rep_net)
        z3 = perf.zero3_comm_time(p.system, p.datatype, stages[0][1]["p_block"], rep_dp, self.g_zero[g],
                                  rep_shard, rep_net, self.row_compute[pos])
        t_mb, _ = perf.slowest_stage(stages, self.row_compute[pos], self.row_tpx[pos], off, pp_m, z3)
        per_member = perf.iteration_time(micro, pp, v, t_mb, self.g_opt[g], dp_m) / batch
        # the bound of a TP choice: the best over its members' placements
        _, choice = unique_rows(np.stack([g, key], 1), return_inverse=True)
        choice = choice.reshape(-1)
        best = np.full(choice.max() + 1 if len(choice) else 0, np.inf)
        np.minimum.at(best, choice, per_member)
        return best[choice]

    def members(self, g):
        """Every member strategy of group g, as knob arrays; for an array of
        groups, theirs one after another and the group of each member:
        (knobs, groups)."""
        one = np.ndim(g) == 0
        gs = np.atleast_1d(np.asarray(g, dtype=np.int64))
        p, S = self.p, self.S
        i, j = self.g_struct[gs], self.g_sigma[gs]
        sp = self.sig["sp"][j].astype(bool)
        mems, per_group = {}, []                 # members by (structure, view), and each group's
        for s, b in zip(i.tolist(), sp.tolist()):
            if (s, b) not in mems:
                mems[s, b] = members_of(p, int(S["tp"][s]), int(S["cp"][s]), int(S["pp"][s]), int(S["dp"][s]), b)
            per_group.append(mems[s, b])
        owner = np.repeat(np.arange(len(gs)), [len(x) for x in per_group]).astype(np.int64)
        mem = np.concatenate(per_group) if per_group else np.zeros((0, len(MEMBER)), dtype=np.int64)
        knobs = group_rows(S, i[owner], self.sig, j[owner], self.g_rest[gs][owner], mem)
        return knobs if one else (knobs, gs[owner])


# ---------------------------------------------------------------- top-k

class TopK:
    """The k best (time per sample, knobs) seen, ties broken by the knobs."""

    def __init__(self, k: int, cap: float = math.inf):
        self.k, self.items, self.cap = k, [], cap     # cap: nothing slower is of interest

    @property
    def threshold(self) -> float:
        return min(self.cap, self.items[-1][0] if len(self.items) >= self.k else math.inf)

    def offer(self, knobs: dict, r: dict):
        tps = r["time_s"] / knobs["batch"]
        ok = np.flatnonzero(r["feasible"] & (tps <= self.threshold))
        if len(ok) == 0:
            return
        ok = ok[np.argsort(tps[ok], kind="stable")][: self.k + 64]
        for i in ok:
            key = tuple(int(np.asarray(knobs[name])[i]) for name in perf.KNOBS)
            self.items.append((float(tps[i]), key))
        self.items = sorted(set(self.items))[: self.k]


# ------------------------------------------------------------ families

def family_structures(p: Problem, fam: dict, top_k: int) -> dict:
    """The structures of a family worth opening: every batch whose
    microbatches in flight are fewer than the largest batch's (memory
    differs), and the top_k largest batches. Time per sample falls as the
    batch grows and nothing else changes (the bubble, the step and the DP
    reduction are paid once per batch), and memory stops growing once the
    pipeline is full: any other batch is beaten by a larger one of the
    same strategy."""
    tp, cp, pp, dp, mb, v = (int(fam[k]) for k in ("tp", "cp", "pp", "dp", "microbatch", "interleave"))
    b = batches_of(p, dp, mb, pp, v)
    n = b // (dp * mb)
    chunks = perf.in_flight_chunks(pp, v, n)
    keep_ = (chunks < chunks.max()) | (np.arange(len(b)) >= len(b) - top_k)
    b = b[keep_]
    return {"tp": np.full(len(b), tp), "cp": np.full(len(b), cp), "pp": np.full(len(b), pp),
            "dp": np.full(len(b), dp), "batch": b,
            "microbatch": np.full(len(b), mb), "interleave": np.full(len(b), v)}


# ------------------------------------------------------------------ plan

def _problem_dict(p: Problem) -> dict:
    fixed = sorted(p.pins["batch"])[0] if len(p.pins.get("batch", ())) == 1 else None
    return {"model": p.model.name, "system": p.system.name, "gpus": p.gpus, "max_batch": p.max_batch,
            "batch": fixed,
            "datatype": p.datatype,
            "pins": {k: sorted(v) for k, v in p.pins.items()}, "even_stages": p.even_stages}


def _reports(p: Problem, top: TopK) -> list:
    out = []
    for _, key in top.items:
        knobs = dict(zip(perf.KNOBS, key))
        out.append(evaluate(p.model, p.system, knob_rows_to_strategy(
            {k: np.array([v]) for k, v in knobs.items()}, 0, p.datatype)))
    return out


def _check_int(key: str, v, low: int, high: int, none_ok=False):
    """An integer argument of plan in [low, high] (not a bool, not text)."""
    if v is None and none_ok:
        return
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not low <= v <= high:
        raise ConfigError("plan", key, v, f"an integer in [{fmt_limit(low)}, {fmt_limit(high)}]")


def _check_options(gpus, top_k, time_limit_s, threads, method, progress):
    """plan's own arguments, each against its limit (README, "Limits on inputs")."""
    _check_int("gpus", gpus, 1, MAX_GPUS)
    _check_int("top_k", top_k, 1, MAX_TOP_K)
    _check_int("threads", threads, 1, MAX_THREADS, none_ok=True)
    if time_limit_s is not None and (isinstance(time_limit_s, bool)
                                     or not isinstance(time_limit_s, (int, float, np.integer, np.floating))
                                     or not 0 < time_limit_s <= MAX_TIME_LIMIT_S):   # refuses NaN and inf too
        raise ConfigError("plan", "time_limit_s", time_limit_s,
                          f"a number of seconds in (0, {fmt_limit(MAX_TIME_LIMIT_S)}] or None")
    if not isinstance(method, str) or method not in METHODS:
        raise ConfigError("plan", "method", method, " or ".join(METHODS))
    if progress is not None and not callable(progress):
        raise ConfigError("plan", "progress", progress, "a function progress(n, best_s_per_sample) or None")


def plan(model, system="h100-80g-nvl8", gpus=None, max_batch=3072, datatype=None, pin=None,
         even_stages=False, batch=None, target_samples_per_s=None,
         top_k=1, time_limit_s=None, threads=None, method="cpsat", progress=None) -> PlanResult:
    """The fastest strategy for `model` on `gpus` GPUs of `system`, proven
    optimal under the analytical model (status 'optimal'), the best found
    with its gap when `time_limit_s` runs out ('feasible'), 'infeasible'
    (explained), or 'unknown' when the time limit runs out before any
    strategy is found. `datatype` None is the best the system has rates
    for (spec.default_datatype). method='enumerate' runs the plain brute
    force over the same space. progress(n, best) is called as the search
    goes: n structures opened (cpsat) or strategies evaluated (enumerate),
    best the best time per sample so far (inf before any).

    Bad arguments raise ConfigError: gpus in [1, MAX_GPUS], max_batch in
    [1, MAX_INT_FIELD], top_k in [1, MAX_TOP_K], threads in [1,
    MAX_THREADS], time_limit_s in (0, MAX_TIME_LIMIT_S], pin a mapping of
    knob -> value or non-empty list of values.

    `gpus` a range (or list) of counts with `target_samples_per_s`: the
    fewest GPUs in it whose best strategy reaches the target, the GPU
    count a variable of the solver; the result is the plan at that count,
    with a proof that no smaller count in the range reaches the target
    (stats['fewest']), or 'infeasible' when none does. `batch` N: exactly
    that global batch (max_batch follows it)."""
    return _plan(model, system, gpus, max_batch, datatype, pin, even_stages, batch, target_samples_per_s, top_k,
                 time_limit_s, threads, method, progress)


def _plan(model, system, gpus, max_batch, datatype, pin, even_stages, batch, target_samples_per_s, top_k,
          time_limit_s, threads, method, progress, warm=None, hint=None, near=None) -> PlanResult:
    """plan(), with `warm` a family of the problem to open first in place of
    Master.warm_start's (the fewest-GPUs search has one that reaches its
    target), `hint` a strategy (knob codes, perf.KNOBS) whose family
    is opened first: in place of Master.warm_start's when the strategy
    fits (a sweep's last optimum, sweep._hints), and `near` families
    (FAMILY_KEYS but gpus) opened next, before any solve: a neighbouring
    problem's near ties (PlanResult.near). None of them changes the answer
    or its proof, only the path to them."""
    t0 = time.perf_counter()
    model, system = load_model(model), load_system(system)
    if not isinstance(gpus, (int, np.integer)) and gpus is not None and not isinstance(gpus, bool):
        return _fewest_gpus(model, system, gpus, target_samples_per_s, t0, max_batch=max_batch,
                            datatype=datatype, pin=pin, even_stages=even_stages, batch=batch, top_k=top_k,
                            time_limit_s=time_limit_s, threads=threads, method=method, progress=progress)
    if target_samples_per_s is not None:
        raise ConfigError("plan", "target_samples_per_s", target_samples_per_s,
                          "None with one GPU count (a target asks for a range of counts: gpus=range(...))")
    _check_options(gpus, top_k, time_limit_s, threads, method, progress)
    if batch is not None:
        # exactly this batch (a planner who fixed it for convergence): the limit follows it
        _check_int("batch", batch, 1, MAX_INT_FIELD)
        if pin is not None and not isinstance(pin, Mapping):
            raise ConfigError("plan", "pin", pin, "a mapping of knob -> value or list of values, e.g. {'tp': 8}")
        if pin and "batch" in pin:
            raise ConfigError("plan", "batch", batch, "either batch= or a pin on batch, not both")
        pin = {**(pin or {}), "batch": int(batch)}
        max_batch = int(batch)
    if datatype is None:
        datatype = default_datatype(system)
    p = make_problem(model, system, gpus, max_batch, datatype, pin, even_stages)
    deadline = None if time_limit_s is None else t0 + float(time_limit_s)
    fam, space = _space_of(p)
    if len(fam["tp"]) == 0 and not p.pins:
        raise ConfigError("plan", "gpus", gpus,
                          f"a GPU count that splits into tp x pp x dp for {p.model.name} (tp dividing "
                          f"{p.model.heads} heads, pp {'dividing' if p.even_stages else 'at most'} {p.model.blocks} blocks, "
                          f"dp at most the "
                          f"batch limit {p.max_batch})")
    base_stats = {"space_size": space, "structures": int(sum(fam["batches"])), "families": int(sum(fam["families"])),
                  "time_limit_s": time_limit_s}
    if space == 0:
        # counted exactly: no strategy at all, whatever the memory (no search needed)
        return _nothing_fits(p, base_stats, t0, method, deadline)
    if method == "enumerate":
        return _explained(p, _enumerate(p, structures(p), base_stats, int(top_k), t0, deadline, progress),
                          deadline)
    if deadline is not None and time.perf_counter() >= deadline:
        # out of time before the tables: nothing evaluated, nothing proven
        return PlanResult(status="unknown", best=None, top=[], lower_bound=0.0, gap=math.inf,
                          stats={**base_stats, "evaluated": 0, "evaluated_fraction": 0.0, "solver_calls": 0,
                                 "solve_s": time.perf_counter() - t0, "method": "cpsat"},
                          problem=_problem_dict(p), system=system)

    hint_fits = hint is not None and _fits(p, hint)
    if not hint_fits and not feasible(p):
        # no split of the count fits the limits and memory (explain.feasible's
        # exact check, on the least-memory rows: a tenth of a second where
        # the master takes seconds to prove the same; a hinted strategy that
        # fits already shows something does)
        return _nothing_fits(p, base_stats, t0, method, deadline)
    master = Master(p, None if threads is None else int(threads), block_cache=block_cache_for(p))
    top = TopK(int(top_k))
    families_opened = 0
    counts = {"structures": 0, "groups": 0, "evaluated": 0}
    status = "optimal"
    last_lb = 0.0
    # families to open first: the caller's (`warm`, `hint`'s) when they are
    # this space's, then Master.warm_start's, unless `warm` was one or the
    # hinted strategy fits here
    firsts = [f for f in (warm, _family_of(p, hint)) if f is not None and is_family(p, f)]
    settled = warm in firsts or (bool(firsts) and hint_fits)
    # then a neighbouring problem's near ties (`near`): the families its
    # solves returned under its incumbent, a solve each there, where they
    # mostly are here too; opened, they cost milliseconds each
    seen = {tuple(f[k] for k in FAMILY_KEYS) for f in firsts}
    for f in (near or [])[:NEAR_KEPT]:
        f = {**f, "gpus": p.gpus}
        if tuple(f.get(k) for k in FAMILY_KEYS) not in seen and is_family(p, f):
            seen.add(tuple(f[k] for k in FAMILY_KEYS))
            firsts.append(f)
    near_ties = []                      # the families this search's solves return under its incumbent
    for first in firsts + ([] if settled else ["warm_start"]):
        if status != "optimal":
            break
        if first == "warm_start":
            first = master.warm_start(deadline)
            if first is None:
                break
        families_opened += 1
        if _open_family(p, first, top, deadline, counts):
            status = "feasible"
        master.exclude(first, top.threshold)
    while status == "optimal":
        nxt = master.next(deadline)
        if nxt is None:
            break
        if nxt == "timeout":
            status = "feasible"
            break
        fam, last_lb = nxt
        if last_lb * (1 - RELATIVE_SLACK) > top.threshold:
            break                              # nothing left can beat the incumbent
        # the optimum first, then the other families the solve passed that
        # the incumbent does not already rule out, then the optimum's
        # siblings in its row of the block table
        opened = {tuple(fam[k] for k in FAMILY_KEYS)}
        for f, b in [(fam, last_lb)] + sorted(master.passed, key=lambda fb: fb[1]) + siblings(p, fam):
            if f is not fam and (tuple(f[k] for k in FAMILY_KEYS) in opened
                                 or b * (1 - RELATIVE_SLACK) > top.threshold):
                continue
            opened.add(tuple(f[k] for k in FAMILY_KEYS))
            if b > 0.0 and b * (1 - RELATIVE_SLACK) <= top.threshold:
                near_ties.append({k: int(f[k]) for k in FAMILY_KEYS if k != "gpus"})
            families_opened += 1
            if _open_family(p, f, top, deadline, counts):
                status = "feasible"
                break
            master.exclude(f, top.threshold)
        if progress:
            progress(families_opened, top.items[0][0] if top.items else math.inf)

    # the proven bound: the incumbent, or the master's last bound if time ran out
    best_tps = top.items[0][0] if top.items else math.inf
    lower = best_tps if status == "optimal" else min(best_tps, last_lb)
    if not top.items:
        # the master proved nothing fits, or time ran out before anything was found
        status = "infeasible" if status == "optimal" else "unknown"
    reports = _reports(p, top)
    stats = {**base_stats, **master.stats(), "families_opened": families_opened,
             "structures_opened": counts["structures"], "groups_opened": counts["groups"],
             "evaluated": counts["evaluated"], "evaluated_fraction": counts["evaluated"] / space if space else 0.0,
             "solver_calls": master.solves, "solve_s": time.perf_counter() - t0, "method": "cpsat"}
    if status == "infeasible":
        lower, gap = math.inf, math.inf
    elif status == "unknown":
        gap = math.inf
    else:
        gap = max((best_tps - lower) / best_tps, 0.0) if math.isfinite(lower) and best_tps > 0 else math.inf
    return _explained(p, PlanResult(status=status, best=reports[0] if reports else None, top=reports,
                                    lower_bound=lower, gap=gap, stats=stats, problem=_problem_dict(p),
                                    system=system, near=near_ties[:NEAR_KEPT]), deadline)


SPACES_KEPT = 64          # problems whose families and space size a process keeps (_space_of)
_spaces = Kept(SPACES_KEPT)


def _space_of(p: Problem) -> tuple:
    """(families(p), count_space(p)), kept for the problems that differ
    from p only in the memory capacities and the offload link's speed: the
    space reads neither, only whether an offload tier exists (the rule
    that offload needs one). A sweep over capacities counts its space
    once. The families are shared: read them, do not change them."""
    def count():
        fam = families(p)
        return fam, count_space(p, fam)
    return _spaces.get(capacity_free_key(p), count)


MAX_COUNTS = 1_000_000       # GPU counts in one range
FEWEST_WINDOW = 16           # GPU counts in the first CP-SAT model of a range, and from each first proposal on
MAX_FEWEST_WINDOW = 128      # doubling to this while empty (a solve near the answer: 3.8 s at 128, 7.7 s at 256)


def _fewest_gpus(model, system, gpus, target, t0, **kw) -> PlanResult:
    """plan() over a range of GPU counts (see plan). Counts whose work
    floor (master.work_floor: every block at the peak rate, over the count)
    is already slower than the target are out before any solve. The rest
    go to CP-SAT a window at a time, fewest GPUs first: FEWEST_WINDOW
    counts, doubling up to MAX_FEWEST_WINDOW while a window's bound
    reaches the target on none of its counts; a large window's first
    proposal narrows the search to FEWEST_WINDOW counts from there (a
    small model solves several times faster than one over thousands).
    In a window, CP-SAT chooses the count with the family; each proposal
    (the least count whose bound reaches the target) is opened at its
    count, and forbidden if no strategy of it reaches the target; so are
    the other families the solve passed (all under the target's cut). A
    family that reaches the target caps the count below it; the fewest is
    proven when the least count proposed reaches it, or nothing is left
    below the cap in its window, every earlier window having been proven
    to hold none."""
    try:
        counts = sorted({int(g) for g in gpus})
    except (TypeError, ValueError):
        raise ConfigError("plan", "gpus", gpus, "an integer or a range (list) of integers") from None
    if not counts or len(counts) > MAX_COUNTS or any(isinstance(g, bool) for g in gpus):
        raise ConfigError("plan", "gpus", gpus, f"a non-empty range of at most {MAX_COUNTS:,} GPU counts")
    for g in counts:
        _check_int("gpus", g, 1, MAX_GPUS)
    if (isinstance(target, bool) or not isinstance(target, (int, float, np.integer, np.floating))
            or not 0 < target < math.inf):
        raise ConfigError("plan", "target_samples_per_s", target,
                          "a positive number of samples per second (needed with a range of GPU counts)")
    if kw["method"] != "cpsat":
        raise ConfigError("plan", "method", kw["method"], "cpsat with a range of GPU counts")
    batch, pin, max_batch = kw["batch"], kw["pin"], kw["max_batch"]
    if batch is not None:
        _check_int("batch", batch, 1, MAX_INT_FIELD)
        pin, max_batch = {**(pin or {}), "batch": int(batch)}, int(batch)
    datatype = kw["datatype"] or default_datatype(system)
    p = make_problem(model, system, counts[-1], max_batch, datatype, pin, kw["even_stages"])
    deadline = None if kw["time_limit_s"] is None else t0 + float(kw["time_limit_s"])
    goal = 1.0 / float(target)
    # no count below the work floor's reaches the goal (work_floor): those
    # are out before any solve; the rest go to CP-SAT a window at a time,
    # fewest GPUs first, the window doubling while none is found
    floor = work_floor(p)
    left = [g for g in counts if floor / g <= goal * (1 + RELATIVE_SLACK)]
    below = len(counts) - len(left)
    opened = {"structures": 0, "groups": 0, "evaluated": 0}
    families_opened, solves, rows, found, reached, proven, timed_out = 0, 0, 0, None, None, False, False
    size, windows, block_cache = FEWEST_WINDOW, 0, block_cache_for(p)
    while left and found is None and not timed_out:
        window, left = left[:size], left[size:]
        windows += 1
        master = Master(p, kw["threads"], counts=window, block_cache=block_cache)
        rows = max(rows, master.rows)
        master.fewest_gpus(goal)
        size = min(2 * size, MAX_FEWEST_WINDOW)      # the next window, if this one is empty
        while not proven:
            nxt = master.next(deadline)
            if nxt is None:
                # nothing left in the window below the count found, or at all
                proven = found is not None
                break
            if nxt == "timeout":
                timed_out = True
                break
            size = FEWEST_WINDOW
            if len(window) > FEWEST_WINDOW and master.optimal and master.solves == 1:
                # a large window's first proposal: no count below it holds a
                # bound that reaches the target; the search narrows to a small
                # window from there (its solves are several times faster)
                left = [g for g in window if g >= nxt[0]["gpus"]] + left
                break
            # the least count's family, then the others the solve passed (every
            # one of them under the goal's cut), fewest GPUs first: a family that
            # reaches the target caps the count, and the solver looks below it
            least = nxt[0]["gpus"] if master.optimal else -1
            seen = set()
            for fam in [nxt[0]] + sorted((f for f, _ in master.passed), key=lambda f: f["gpus"]):
                key = tuple(fam[k] for k in FAMILY_KEYS)
                if (found is not None and fam["gpus"] >= found) or key in seen:
                    continue
                seen.add(key)
                q = dataclasses.replace(p, gpus=fam["gpus"])
                top = TopK(1, cap=goal * (1 + RELATIVE_SLACK))
                families_opened += 1
                if _open_family(q, fam, top, deadline, opened, top_k=1):
                    timed_out = True
                    break
                if top.items and top.items[0][0] <= goal * (1 + RELATIVE_SLACK):
                    found, reached = fam["gpus"], fam
                    proven = found == least        # no count below the solve's least is left
                    master.model.Add(master.vars["gpus"] < found)
                else:
                    master.exclude(fam, goal)
                if kw["progress"]:
                    kw["progress"](families_opened, math.inf)
            if timed_out:
                break
        solves += master.solves
    proven = proven or (found is None and not timed_out)
    fewest = {"counts": len(counts), "smallest": counts[0], "largest": counts[-1], "target_samples_per_s": target,
              "proven": proven, "below_work_floor": below,
              "windows": windows, "families_opened": families_opened, "solver_calls": solves, "table_rows": rows,
              **{f"{k}_opened" if k != "evaluated" else k: v for k, v in opened.items()},
              "search_s": time.perf_counter() - t0}
    span = f"{counts[0]:,}..{counts[-1]:,} ({len(counts):,} counts)"
    opened_text = f"{families_opened} famil{'y' if families_opened == 1 else 'ies'} opened"
    if found is not None:
        left = None if deadline is None else max(deadline - time.perf_counter(), 1e-3)
        res = _plan(p.model, p.system, found, max_batch=max_batch, datatype=datatype, pin=pin,
                    even_stages=kw["even_stages"], batch=None, target_samples_per_s=None, top_k=kw["top_k"],
                    time_limit_s=left, threads=kw["threads"], method="cpsat", progress=None, warm=reached)
        res.stats["fewest"] = fewest
        res.stats["solve_s"] = time.perf_counter() - t0
        res.problem.update(gpus_range=[counts[0], counts[-1], len(counts)], target_samples_per_s=target)
        done = f"{opened_text}, {solves} CP-SAT solves"
        res.messages.append(f"fewest GPUs in {span} reaching {target:g} samples/s: {found:,}; "
                            + (f"no smaller count does (proven: {done})" if proven else
                               f"not proven the fewest: the time limit came before every smaller count "
                               f"was ruled out ({done})"))
        return res
    status = "unknown" if timed_out else "infeasible"
    what = (f"time limit reached before a count in {span} was found to reach {target:g} samples/s"
            if timed_out else f"no GPU count in {span} reaches {target:g} samples/s "
            f"(proven: {opened_text}, {solves} CP-SAT solves); "
            f"more GPUs, a larger batch limit or a faster system would")
    return PlanResult(status=status, best=None, top=[], lower_bound=0.0 if timed_out else math.inf,
                      gap=math.inf, stats={"fewest": fewest, "space_size": 0, "structures": 0, "evaluated":
                                           opened["evaluated"], "evaluated_fraction": 0.0,
                                           "solve_s": time.perf_counter() - t0, "method": "cpsat"},
                      problem={**_problem_dict(p), "gpus_range": [counts[0], counts[-1], len(counts)],
                               "target_samples_per_s": target},
                      explanation=None if timed_out else {"summary": what, "fixes": {}},
                      messages=[what], system=system)


SIBLINGS = 32      # siblings opened with a family beyond the microbatch table: the nearest microbatches


def siblings(p: Problem, fam: dict) -> list:
    """(family, 0.0) for the family's siblings that share its row of the
    master's block table: the same knobs but the microbatch, each with
    batches. Within the exact table (MB_TABLE) a row holds a bucket of
    microbatches (MB_BUCKETS: [5, 8], [9, 16], ...), past it one peak-rate
    row holds them all (the SIBLINGS nearest are taken: on one GPU a batch
    of up to 3072 has 3,040 of them). The master tells them apart only by
    their batch and microbatch counts, so near the optimum they come one
    solve each (llama3-8B on 8 GPUs: cp 4, pp 2, microbatches 5 to 7, each
    at the same bound); opened together (each exactly, its structures
    bounded as any family's) they cost milliseconds each instead. The
    bound 0.0: none is skipped."""
    dp, pp, v, mb = (int(fam[k]) for k in ("dp", "pp", "interleave", "microbatch"))
    if mb <= MB_TABLE:
        b = int(np.searchsorted(MB_BUCKETS, mb, side="right")) - 1
        mbs = np.arange(MB_BUCKETS[b], MB_BUCKETS[b + 1] if b + 1 < len(MB_BUCKETS) else MB_TABLE + 1)
    else:
        mbs = np.arange(MB_TABLE + 1, p.max_batch // dp + 1)
    mbs = mbs[p.allowed("microbatch", mbs)] if len(mbs) else mbs
    mbs = [int(m) for m in mbs if m != mb and len(batches_of(p, dp, int(m), pp, v))]
    mbs = sorted(mbs, key=lambda m: (abs(m - mb), m))[:SIBLINGS]
    return [({**fam, "microbatch": m}, 0.0) for m in mbs]


def _family_of(p: Problem, codes) -> dict | None:
    """The family (FAMILY_KEYS) of a strategy's knob codes on p's GPU count."""
    if codes is None:
        return None
    try:
        return {k: p.gpus if k == "gpus" else int(codes[k]) for k in FAMILY_KEYS}
    except (KeyError, TypeError, ValueError):
        return None


def _fits(p: Problem, codes) -> bool:
    """Whether the strategy of these knob codes is in p's space (the pins)
    and fits its system, breaking no rule."""
    try:
        knobs = {n: np.array([int(codes[n])]) for n in perf.KNOBS}
    except (KeyError, TypeError, ValueError):
        return False
    if not all(p.allowed(n, v)[0] for n, v in knobs.items()):
        return False
    return bool(perf.evaluate_arrays(p.model, p.system, p.datatype, knobs)["feasible"][0])


def is_family(p: Problem, fam) -> bool:
    """Whether `fam` (FAMILY_KEYS to integers) is a family of p's space: its
    knobs multiply to the GPU count, it has a batch, and its knobs meet the
    pins and every rule that reads them alone (as the master's are)."""
    try:
        tp, cp, pp, dp, mb, v = (int(fam[k]) for k in ("tp", "cp", "pp", "dp", "microbatch", "interleave"))
        gpus = int(fam.get("gpus", p.gpus))
    except (KeyError, TypeError, ValueError):
        return False
    if gpus != p.gpus or min(tp, cp, pp, dp, mb, v) < 1 or tp * cp * pp * dp != p.gpus:
        return False
    b = batches_of(p, dp, mb, pp, v)
    if len(b) == 0:
        return False
    names = ("tp", "cp", "pp", "dp", "microbatch", "interleave", "batch")
    k = dict(zip(names, (np.array([x]) for x in (tp, cp, pp, dp, mb, v, int(b[0])))))
    q = dataclasses.replace(p, pins={n: x for n, x in p.pins.items() if n != "batch"})
    return bool(keep(q, k, names, names)[0])


def _open_family(p: Problem, fam: dict, top: TopK, deadline, counts: dict, top_k: int | None = None) -> bool:
    """Evaluate a family's structures (family_structures) against the
    incumbent, in order of bound while it can beat the k-th best: of each,
    the members of the groups whose bound can, in order of their refined
    bound (member_bounds) while that can.
    Counts what it opens in `counts`; True when the deadline cut it short."""
    tables = Tables(p, family_structures(p, fam, top.k if top_k is None else top_k))
    for i in np.argsort(tables.s_bound, kind="stable"):
        if tables.s_bound[i] * (1 - RELATIVE_SLACK) > top.threshold:
            break
        if deadline is not None and time.perf_counter() >= deadline:
            return True
        counts["structures"] += 1
        # the fitting groups whose bound can beat the k-th best, their
        # members bounded together, then evaluated best refined bound first
        gs = tables.groups_of(i)
        gs = gs[tables.g_fits[gs] & (tables.g_bound[gs] * (1 - RELATIVE_SLACK) <= top.threshold)]
        knobs, owner = tables.members(gs)
        if len(owner) == 0:
            continue
        counts["groups"] += len(np.unique(owner))
        mb = tables.member_bounds(owner, knobs)
        order = np.argsort(mb, kind="stable")
        for start in range(0, len(order), MEMBER_BATCH):
            if deadline is not None and time.perf_counter() >= deadline:
                return True
            idx = order[start:start + MEMBER_BATCH]
            idx = idx[mb[idx] * (1 - RELATIVE_SLACK) <= top.threshold]
            if len(idx) == 0:
                break
            sub = {k: v[idx] for k, v in knobs.items()}
            top.offer(sub, perf.evaluate_arrays(p.model, p.system, p.datatype, sub))
            counts["evaluated"] += len(idx)
    return False


def _nothing_fits(p: Problem, base_stats: dict, t0: float, method: str, deadline) -> PlanResult:
    """The result when nothing fits, proven before any search: explained."""
    res = PlanResult(status="infeasible", best=None, top=[], lower_bound=math.inf, gap=math.inf,
                     stats={**base_stats, "evaluated": 0, "evaluated_fraction": 0.0, "solver_calls": 0,
                            "solve_s": time.perf_counter() - t0, "method": method},
                     problem=_problem_dict(p), system=p.system)
    return _explained(p, res, deadline)


def _explained(p: Problem, res: PlanResult, deadline: float | None = None) -> PlanResult:
    """An infeasible result gets its explanation (conflicts and fixes), timed;
    cut short (explanation["complete"] False) when the deadline passes."""
    if res.status == "infeasible":
        t = time.perf_counter()
        res.explanation = explain(p, deadline)
        res.stats["explain_s"] = time.perf_counter() - t
    return res


def _enumerate(p: Problem, S: dict, base_stats: dict, top_k: int, t0: float, deadline=None,
               progress=None) -> PlanResult:
    """Brute force: every strategy of the space through the exact model.
    With a deadline, stops between chunks: the best found ('feasible', no
    bound: brute force proves nothing until it has seen everything), or
    'unknown' when nothing was found yet."""
    top = TopK(top_k)
    evaluated = 0
    finished = True
    for knobs in enumerate_all(p, S):
        r = perf.evaluate_arrays(p.model, p.system, p.datatype, knobs)
        evaluated += len(knobs["tp"])
        top.offer(knobs, r)
        if progress:
            progress(evaluated, top.items[0][0] if top.items else math.inf)
        if deadline is not None and time.perf_counter() >= deadline and evaluated < base_stats["space_size"]:
            finished = False
            break
    reports = _reports(p, top)
    best = top.items[0][0] if top.items else math.inf
    space = base_stats["space_size"]
    stats = {**base_stats, "evaluated": evaluated,
             "evaluated_fraction": evaluated / space if space else 0.0,
             "solve_s": time.perf_counter() - t0, "method": "enumerate"}
    if finished:
        status, lower, gap = ("optimal", best, 0.0) if top.items else ("infeasible", math.inf, math.inf)
    else:
        status, lower, gap = ("feasible", 0.0, 1.0) if top.items else ("unknown", 0.0, math.inf)
    return PlanResult(status=status, best=reports[0] if reports else None, top=reports,
                      lower_bound=lower, gap=gap, stats=stats, problem=_problem_dict(p), system=p.system)
