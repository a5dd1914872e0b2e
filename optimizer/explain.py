"""Why nothing fits, and the smallest single change that would.

Time never makes a strategy infeasible: the rules and memory do. Memory per
GPU depends only on a strategy's group (structure, activation signature,
ZeRO stage and sharding group, offload flags), and within a structure it is smallest at microbatch
1 without interleaving: stored activations times the blocks in flight,
mb * min(pp, local/mb), does not decrease with the microbatch, and the
interleaved schedule keeps pp + (pp-1)/v stages' worth of blocks against
pp for the plain one. So feasibility is decided on rows (tp, pp, dp, batch,
microbatch, interleave) with microbatch and interleave at 1 or at their
pinned values, each row checked against every group it has. That is exact:
`feasible(p)` agrees with `plan` (tests check it).

Limit groups, each one literal of the core's CP-SAT models:

  gpu_count         tp * cp * pp * dp equals the GPU count
  divisibility      tp divides heads, hidden and feedforward; 2 x cp the
                    sequence; pp the blocks; dp the batch; the microbatch
                    the local batch; the interleaving the stage and the
                    microbatches
  max_batch         the batch is at most the limit
  nvlink_domain     the groups can be placed on the network tiers
  hbm_capacity      some group's HBM footprint fits
  offload_capacity  ... with its offloaded bytes within the second tier
  pin:<knob>        each pin

The rows for the core go beyond the GPU count (tp from the divisors of the
count and of the model's heads, at most the heads; pp likewise, at most the
blocks; dp from the divisors of the count and any GPU-count fix found), so
that dropping a group has something to relax into. A row whose structural
bits another row that fits every capacity check also has is left out
before its memory is computed (it can never be needed). Rows collapse to
their distinct signatures. The core is the smallest set of groups that
no signature meets, found by CP-SAT in one solve (a hitting set: each
signature misses some column the kept groups make hold); of cores equally
small, the one that keeps the structural limits over the capacities.

Fixes are computed exactly on the same rows, each with every other limit in
force: at the value the problem is feasible, one step below it is not (one
GiB, one node of GPUs, one batch, the previous NVLink size of the list).
"""

from __future__ import annotations

import contextvars
import dataclasses
import hashlib
import itertools
import math
import time

import numpy as np
from ortools.sat.python import cp_model

from . import knobs as K
from . import perf
from . import rules as R
from .space import (GROUP_REST, SIGMA, STRUCTURE, Kept, Problem, capacity_free_key, divisors, domain, group_rest,
                    group_rest_for, knob_rows_to_strategy, shard_domain, sigmas, tp_choices, tp_choices_for,
                    unique_rows)
from .errors import ConfigError
from .spec import Strategy, load_system

GIB = perf.GIB
NVLINK_SIZES = (8, 16, 32, 72)
STRUCT_PINS = STRUCTURE
NET_PINS = tuple(t.name for t in K.TIERS)
GROUP_PINS = tuple(n for n in K.PINNABLE if n not in STRUCT_PINS + NET_PINS)
FIX_PP_ALL = 512                 # up to this many blocks, the GPU-count fix tries every pp
FIX_CHUNK = 32                   # pairs (tp, cp, pp) fix_gpus bisects first (then twice as many each time)
MEMORY_CHUNK = 512               # rows per slab of the memory grid (_fit_table)
MAX_SEPARATE_GROUP_PINS = 4      # beyond this, group pins share one literal (2^k columns otherwise)
STRUCT_LIMITS = ("gpu_count", "divisibility", "max_batch")
# of cores equally small, the one that keeps the last of these (the first cost the most to keep):
# "pin:" stands for every pin
KEEP_ORDER = ("hbm_capacity", "offload_capacity", "nvlink_domain", "pin:", "divisibility", "gpu_count",
              "max_batch")
LIMIT_NAMES = {
    "gpu_count": "the GPU count",
    "divisibility": "divisibility",
    "max_batch": "the batch limit",
    "nvlink_domain": "the network tiers",
    "hbm_capacity": "HBM capacity",
    "offload_capacity": "offload capacity",
}

_DEADLINE = contextvars.ContextVar("explain_deadline", default=None)   # time.perf_counter() to stop at


class _OutOfTime(Exception):
    """The explanation's deadline passed (checked between slabs)."""


def _check_time():
    deadline = _DEADLINE.get()
    if deadline is not None and time.perf_counter() >= deadline:
        raise _OutOfTime


def _divisibility_rules(p: Problem) -> tuple:
    """The divisibility rules of the plan that a structure alone decides."""
    return tuple(r for r in p.rules if r.limit == "divisibility" and set(r.reads) <= set(STRUCTURE))


def _tp_unit(m) -> int:
    """What tp must divide: heads, hidden and feedforward."""
    return math.gcd(m.heads, math.gcd(m.hidden, m.feedforward))


def _mb_v(p: Problem):
    """Microbatch and interleave candidates: 1 and the pinned values."""
    return (sorted({1} | set(p.pins.get("microbatch", ()))), sorted({1} | set(p.pins.get("interleave", ()))))


def _without_pins(p: Problem, knobs) -> Problem:
    """p without the pins on `knobs`: one Problem per set of knobs dropped,
    kept in p.memo, so that what is derived from it (its own memo) is
    derived once per explanation."""
    drop = frozenset(k for k in knobs if k in p.pins)
    if not drop:
        return p                   # its memo too: the search's own tables are those explain reads
    return _derived(p, ("without_pins", drop),
                    lambda: dataclasses.replace(p, pins={k: v for k, v in p.pins.items() if k not in drop}))


def _derived(p: Problem, key: tuple, make) -> Problem:
    """A problem derived from p (make()), kept in p.memo under `key`."""
    if key not in p.memo:
        p.memo[key] = make()
    return p.memo[key]


# ------------------------------------------------------------------ rows

def _rows(p: Problem, triples, local=None) -> dict:
    """Rows for (tp, cp, pp, dp) splits, times the microbatch and interleave
    candidates (1 and the pinned values), at the batch that needs the least
    memory: the smallest the row admits (one microbatch per replica, pp
    when interleaved: memory does not decrease with the microbatches), or
    each pinned batch; or dp * local when `local` (one per triple) is given."""
    t = np.asarray(triples, dtype=np.int64).reshape(-1, 4)
    mbs, vs = _mb_v(p)
    mv = np.array(list(itertools.product(mbs, vs)), dtype=np.int64)
    if local is None and "batch" in p.pins:
        b = np.array(sorted(p.pins["batch"]), dtype=np.int64)
        mv = np.column_stack([np.repeat(mv, len(b), axis=0), np.tile(b, len(mv))])
    k = len(mv)
    tp, cp, pp, dp = (np.repeat(t[:, i], k) for i in range(4))
    mb, v = np.tile(mv[:, 0], len(t)), np.tile(mv[:, 1], len(t))
    if local is not None:
        batch = dp * np.repeat(np.asarray(local, dtype=np.int64), k)
    elif "batch" in p.pins:
        batch = np.tile(mv[:, 2], len(t))
    else:
        batch = dp * mb * np.where(v > 1, pp, 1)
    return {"tp": tp, "cp": cp, "pp": pp, "dp": dp, "batch": batch, "microbatch": mb, "interleave": v}


def _cp_values(p: Problem, n=None) -> list:
    """cp values for the rows: those 2 x cp divides the sequence with (the
    divisors of n among them, when given), and the pinned ones."""
    half = max(p.model.seq_len // 2, 1)
    ok = divisors(half).tolist() if n is None else [c for c in divisors(n).tolist() if half % c == 0]
    return sorted(set(ok) | set(p.pins.get("cp", ())))


def _count_triples(p: Problem, n: int) -> np.ndarray:
    """(tp, cp, pp, dp) with tp * cp * pp * dp = n."""
    out = [(tp, cp, pp, n // (tp * cp * pp)) for tp in divisors(n) for cp in divisors(n // tp)
           for pp in divisors(n // (tp * cp))]
    return np.array(out, dtype=np.int64).reshape(-1, 4)


def _relaxed_triples(p: Problem, extra_dp=()) -> np.ndarray:
    m, n = p.model, p.gpus
    tps = set(divisors(n).tolist()) | set(divisors(_tp_unit(m)).tolist()) | set(p.pins.get("tp", ()))
    cps = set(_cp_values(p, n))
    pps = set(divisors(n).tolist()) | set(divisors(m.blocks).tolist()) | set(p.pins.get("pp", ()))
    dps = set(divisors(n).tolist()) | set(p.pins.get("dp", ())) | set(extra_dp)
    tps = sorted(x for x in tps if x <= m.heads)
    pps = sorted(x for x in pps if x <= m.blocks)
    return np.array(list(itertools.product(tps, sorted(cps), pps, sorted(dps))), dtype=np.int64).reshape(-1, 4)


def _struct_bits(p: Problem, r: dict) -> dict:
    """One boolean per row for each structural limit group and pin."""
    broken = R.check(p.model, p.system, p.datatype, r, r["tp"].shape, _divisibility_rules(p))
    bits = {
        "gpu_count": r["tp"] * r["cp"] * r["pp"] * r["dp"] == p.gpus,
        "divisibility": ~np.logical_or.reduce(list(broken.values())),
        "max_batch": r["batch"] <= p.max_batch,
    }
    for k in STRUCT_PINS:
        if k in p.pins:
            bits[f"pin:{k}"] = np.isin(r[k], sorted(p.pins[k]))
    return bits


def _placeable(q: Problem, r: dict) -> np.ndarray:
    """Per row: is there a placement of the groups (TP, CP, PP, DP) on the
    tiers (with q's net pins) that the placement rule accepts."""
    T = len(q.system.networks)
    trip = np.array(list(itertools.product(range(T), repeat=len(NET_PINS))), dtype=np.int64)
    sizes = [r[t.places][:, None] for t in K.TIERS]
    ok = np.ones((len(r["tp"]), len(trip)), dtype=bool)
    for i, knob in enumerate(NET_PINS):
        # a group of one GPU sits on tier 0 (it uses no network; a pin says nothing there)
        ok &= np.where(sizes[i] > 1, q.allowed(knob, trip[:, i]), trip[:, i] == 0)
    bad = perf.placement_violation(q.system, {**{t.places: sizes[i] for i, t in enumerate(K.TIERS)},
                                              **{k: trip[:, i] for i, k in enumerate(NET_PINS)}})
    return (ok & ~bad).any(axis=1)


# ---------------------------------------------------------------- memory

def _axis_sizes(p: Problem) -> tuple:
    """The memory grid's axis per GROUP_REST knob: its domain's size; for
    shard two cells, the whole DP group (0) and the least-memory proper
    sharding group the pins allow (_best_shard): memory falls as the group
    grows, so those two are all a row needs (the whole group is allowed
    wherever a pin on shard is dropped)."""
    return tuple(2 if n == "shard" else len(domain(p, n)) for n in GROUP_REST)


def _best_shard(p: Problem, dp) -> np.ndarray:
    """Per dp: the largest sharding group below dp the pins allow (its
    knob code), or 0 when none is."""
    dps, inv = np.unique(np.asarray(dp, dtype=np.int64).reshape(-1), return_inverse=True)
    best = np.zeros(len(dps), dtype=np.int64)
    for i, d in enumerate(dps):
        s = shard_domain(int(d))[1:]
        s = s[p.allowed("shard", s)]
        best[i] = int(s.max()) if len(s) else 0
    return best[inv.reshape(-1)]


PARTS_KEPT_BYTES = 256 * 2 ** 20     # memory grids' parts a process keeps (_memory_parts), by their arrays' size
_parts = Kept(PARTS_KEPT_BYTES, lambda out: sum(x.nbytes for stage in out[0] for x in stage) + out[1].nbytes)


def _memory_parts(p: Problem, r: dict) -> tuple:
    """_grid_parts(p, r), kept for the same rows of a problem that differs
    only in its capacities and offload link (space.capacity_free_key: the
    parts read none of them): explain's checks ask for the same rows again,
    within one explanation and across a sweep's capacities. The parts are
    shared: read them, do not change them."""
    h = hashlib.sha1(capacity_free_key(p).encode())
    for k in sorted(r):
        a = np.ascontiguousarray(r[k])
        h.update(f"{k}:{a.dtype}:{a.shape}".encode())
        h.update(a.tobytes())
    return _parts.get(h.hexdigest(), lambda: _grid_parts(p, r))


def _grid_parts(p: Problem, r: dict) -> tuple:
    """The memory of every group of every row, in parts: per stage that
    can be the fullest (perf.stage_memories), (exists, state HBM, state
    offload, activation HBM, activation offload), the state's of shape
    (rows, 1, GROUP_REST axes: _axis_sizes) and the activations' of shape
    (rows, U, 1, ..., offload_activations axis, ...), U the distinct
    activation columns; and `of_sig`, each signature's column. Signatures
    with the same memory terms on every (tp, cp, microbatch) share a
    column. _combine sums the parts; which groups exist is `_allowed`'s
    business."""
    m, dt = p.model, p.datatype
    pairs, inv = unique_rows(np.stack([r["tp"], r["cp"], r["microbatch"]], 1), return_inverse=True)
    inv = inv.reshape(-1)
    sig = sigmas(p, pairs[:, 0], pairs[:, 1])
    G = len(sig["recompute"])
    blk = perf.block_terms(m, p.system, dt, {"tp": pairs[:, :1], "cp": pairs[:, 1:2], "microbatch": pairs[:, 2:],
                                             "tp_overlap": 0, "tp_net": 0, "cp_net": 0,
                                             **{n: sig[n][None, :] for n in SIGMA}})
    R_ = len(r["tp"])
    one = (1,) * len(GROUP_REST)
    full = lambda x: np.broadcast_to(np.asarray(x, dtype=float), (len(pairs), G))  # noqa: E731
    parts = [full(blk["stored"]), full(blk["working"]), full(sig["recompute"][None, :])]
    ends = None
    if m.vocab > 0:
        ends = perf.extras_terms(m, p.system, dt, pairs[:, :1], pairs[:, 2:], sig["recompute"][None, :],
                                 sig["tp_comm"][None, :], 0, 0, pairs[:, 1:2])
        parts += [full(x[key]) for x in ends for key in ("params", "stored")]
    keys = np.concatenate(parts, axis=0).T                      # (G, terms x pairs)
    _, first, of_sig = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    U = len(first)
    per_row = lambda x: full(x)[:, first][inv].reshape(R_, U, *one)  # noqa: E731
    extras = (None, None)
    if ends is not None:
        # the extras' parameters are state: one value per (tp, cp, microbatch), none per
        # column (broadcast_to refuses one that varies), so the state's parts stay per row
        per_pair = lambda x: np.broadcast_to(np.asarray(x, dtype=float), (len(pairs), 1))[inv].reshape(R_, 1, *one)  # noqa: E731
        extras = [{"params": per_pair(x["params"]), "stored": per_row(x["stored"])} for x in ends]
    col = lambda x: np.asarray(x, dtype=float).reshape(R_, 1, *one)  # noqa: E731
    ax = _group_axes(p, r["dp"])
    micro = np.maximum(np.floor(col(r["batch"]) / col(r["dp"]) / col(r["microbatch"])), 1)
    rep_dp, rep_shard = perf.grad_group(col(r["dp"]), col(r["cp"]), ax["shard"])
    stages = perf.stage_memories(m, dt, col(r["tp"]), np.asarray(r["pp"]).reshape(R_, 1, *one), rep_dp,
                                 col(r["interleave"]), micro, ax["zero"], rep_shard, per_row(blk["stored"]),
                                 per_row(blk["working"]), sig["recompute"][first].reshape(1, U, *one),
                                 (ax["offload_weights"], ax["offload_activations"], ax["offload_optimizer"]),
                                 *extras)
    out = [(np.broadcast_to(exists, (R_,) + (1,) * (1 + len(one))), st["hbm"], st["offload"], ac["hbm"], ac["offload"])
           for _, _, _, exists, st, ac in stages]
    return out, of_sig.reshape(-1)


def _combine(parts: tuple, rows=slice(None), spread=True, cols=None) -> tuple:
    """HBM bytes of the fullest stage (the most HBM, as
    perf.pipeline_memory takes it) and the most offload bytes of any stage
    (as it takes those) for `rows`, per signature: shape (rows, G,
    GROUP_REST axes); per distinct column (U) if not `spread`. With `cols`
    (indices as long as `rows`): only the (row, column) pairs they name,
    shape (pairs, GROUP_REST axes)."""
    stages, of_sig = parts
    if cols is None:
        at = lambda x: x[rows]  # noqa: E731
    else:
        at = lambda x: x[rows, cols if x.shape[1] > 1 else 0]  # noqa: E731
    hbm = off = h = o = more = None
    for exists, sh, so, ah, ao in stages:
        if hbm is None:
            hbm, off = at(sh) + at(ah), at(so) + at(ao)
            h, o, more = np.empty_like(hbm), np.empty_like(off), np.empty(hbm.shape, dtype=bool)
            continue
        # in place: the slabs run to millions of cells
        np.add(at(sh), at(ah), out=h)
        np.greater(h, hbm, out=more)
        more &= at(exists)
        np.copyto(hbm, h, where=more)
        np.add(at(so), at(ao), out=o)
        np.greater(o, off, out=more)
        more &= at(exists)
        np.copyto(off, o, where=more)
    if not spread or cols is not None:
        return hbm, off
    return np.take(hbm, of_sig, axis=1), np.take(off, of_sig, axis=1)


def _memory(p: Problem, r: dict):
    """HBM and offload bytes of every group of every row, shape (rows, G
    activation signatures, then one axis per GROUP_REST knob: _axis_sizes);
    which groups exist is `_allowed`'s business."""
    return _combine(_memory_parts(p, r))


def _fit_table(p: Problem, r: dict, checks: list) -> np.ndarray:
    """Per row and check (allowed, HBM cap, offload cap), allowed an
    `_allowed` pair: does some existing group fit both capacities. Rows
    go MEMORY_CHUNK at a time (the memory grid of all rows at once runs
    to gigabytes with cp); most are settled by `_quick_fit`, the rest
    (the same answer, on every group) by the whole grid."""
    parts = _memory_parts(p, r)
    stages, of_sig = parts
    to_col = _to_columns(of_sig)
    R_ = len(r["tp"])
    out = np.zeros((R_, len(checks)), dtype=bool)
    for start in range(0, R_, MEMORY_CHUNK):
        _check_time()
        rows = np.arange(start, min(start + MEMORY_CHUNK, R_))
        open_ = np.zeros((len(rows), len(checks)), dtype=bool)
        at_rows = _stages_at(stages, rows, checks[0][0][1].shape[1:]) if checks else None
        cols = [_columns(ok[rows], to_col) for (ok, _), _, _ in checks]
        for c, ((_, flags), cap_h, cap_o) in enumerate(checks):
            out[rows, c], settled = _quick_fit(at_rows, cols[c], flags[rows], cap_h, cap_o)
            open_[:, c] = ~settled
        left = np.flatnonzero(open_.any(axis=1))
        if not len(left):
            continue
        at = rows[left]
        # the grid only at the (row, distinct column) pairs some open check
        # allows (a column is allowed where any of its signatures is):
        # about a third of them
        allowed = [cols[c][left] & open_[left, c][:, None] for c in range(len(checks))]
        ri, ui = np.nonzero(np.logical_or.reduce(allowed))
        hbm, off = _combine(parts, at[ri], cols=ui)
        fit = {}
        for c, ((_, flags), cap_h, cap_o) in enumerate(checks):
            if not open_[left, c].any():
                continue
            if (cap_h, cap_o) not in fit:
                fit[cap_h, cap_o] = (hbm <= cap_h) & (off <= cap_o)
            a = (fit[cap_h, cap_o] & flags[at][ri]).reshape(len(ri), -1).any(axis=1) & allowed[c][ri, ui]
            out[at, c] = np.where(open_[left, c], np.bincount(ri[a], minlength=len(at)) > 0, out[at, c])
    return out


def _to_columns(of_sig: np.ndarray) -> np.ndarray:
    """Signatures x distinct activation columns (`of_sig`, each signature's
    column), 1 where the signature has the column, for _columns."""
    to_col = np.zeros((len(of_sig), int(of_sig.max()) + 1), dtype=np.float32)
    to_col[np.arange(len(of_sig)), of_sig] = 1
    return to_col


def _columns(ok: np.ndarray, to_col: np.ndarray) -> np.ndarray:
    """Per row (of `ok`, rows x signatures) and distinct activation column
    (`to_col`, _to_columns'): does the row allow any of the column's
    signatures. A product in float32 (BLAS; the counts, at most the
    signatures, are exact in it)."""
    return (ok.astype(np.float32) @ to_col) > 0


def _stages_at(stages, rows, cells) -> tuple:
    """The stages' parts (_memory_parts) at `rows`, for _quick_fit: whether
    each stage exists, and its (state HBM, state offload, activation HBM,
    activation offload), the state's over the grid's `cells`, the
    activations' flat over theirs."""
    n = len(rows)
    per = lambda x: np.broadcast_to(x, (len(x),) + x.shape[1:])[rows]  # noqa: E731
    state = lambda x: np.broadcast_to(per(x)[:, 0], (n,) + cells)  # noqa: E731
    act = lambda x: per(x).reshape(n, x.shape[1], -1)  # noqa: E731
    return ([per(st[0]).reshape(n) for st in stages],
            [(state(sh), state(so), act(ah), act(ao)) for _, sh, so, ah, ao in stages],
            stages[0][3].shape[2:])


def _quick_fit(at_rows, cols, flags, cap_h, cap_o) -> tuple:
    """Per row: (fits, settled) without the memory grid, from the stages'
    parts at the rows (_stages_at). No stage is
    fuller than the fullest, so each stage's least HBM over the allowed
    groups (the least activation column per offload flag, `cols` the
    allowed ones, plus the state, over the allowed cells `flags`) is a
    floor, and so is their largest: above the cap, no group fits. The
    group that reaches each stage's floor is then evaluated whole (its
    fullest stage's HBM, its most offload of any stage): one within both
    caps fits. Rows neither rules out nor
    in are not settled."""
    exists, parts, act_shape = at_rows
    n, cells = len(flags), flags.shape[1:]
    ix = np.arange(n)
    floor, picks = np.full(n, -np.inf), []
    for there, (sh, _, ah, _) in zip(exists, parts):
        a = np.where(cols[:, :, None], ah, np.inf)                            # (n, U, activation cells)
        col = a.argmin(axis=1)
        least = np.take_along_axis(a, col[:, None], axis=1)[:, 0]
        total = np.where(flags, sh + least.reshape((n,) + act_shape), np.inf).reshape(n, -1)
        cell = total.argmin(axis=1)
        floor = np.where(there, np.maximum(floor, total[ix, cell]), floor)
        at = np.unravel_index(cell, cells)
        a_cell = np.ravel_multi_index(tuple(at[j] if act_shape[j] > 1 else 0 * at[j] for j in range(len(cells))),
                                      act_shape)
        picks.append((at, col[ix, a_cell], a_cell))
    fits = np.zeros(n, dtype=bool)
    for at, u, a_cell in picks:
        hbm = off = None
        for there, (sh, so, ah, ao) in zip(exists, parts):
            h = sh[(ix,) + at] + ah[ix, u, a_cell]
            o = so[(ix,) + at] + ao[ix, u, a_cell]
            if hbm is None:
                hbm, off = h, o
            else:
                hbm = np.where(there & (h > hbm), h, hbm)
                off = np.where(there & (o > off), o, off)
        fits |= np.isfinite(floor) & (hbm <= cap_h) & (off <= cap_o)
    return fits, fits | ~np.isfinite(floor) | (floor > cap_h)


def _group_axes(p: Problem, dp) -> dict:
    """The knob codes along each GROUP_REST axis, after rows and
    signatures: a knob's domain, or for shard 0 and the row's _best_shard."""
    sizes = _axis_sizes(p)
    n = len(GROUP_REST)
    out = {}
    for j, name in enumerate(GROUP_REST):
        if name == "shard":
            codes = np.stack([np.zeros(len(dp), dtype=np.int64), _best_shard(p, dp)], 1)
            out[name] = codes.reshape([len(dp), 1] + [sizes[j] if i == j else 1 for i in range(n)])
        else:
            out[name] = domain(p, name).reshape([1, 1] + [sizes[j] if i == j else 1 for i in range(n)])
    return out


def _cells(rows: np.ndarray) -> tuple:
    """The memory grid's cell of each group_rest row: each knob's index in
    its domain, shard's 0 for the whole DP group and 1 for a proper one."""
    out = []
    for c, name in enumerate(GROUP_REST):
        x = rows[:, c]
        out.append((x > 0).astype(np.int64) if name == "shard" else x)    # domains here are 0..n-1
    return tuple(out)


def _allowed(q: Problem, r: dict, tier: bool) -> np.ndarray:
    """Which groups of each row exist under q's pins: the signature valid
    for tp with some TP choice, the other group flags as the space derives
    them for the row's dp (offload only with a tier, `tier`), and some
    dp_overlap value. Two factors: per row and signature (rows, G), per
    row and GROUP_REST cell (rows, _axis_sizes); a group exists where
    both hold (_allowed_grid)."""
    R_ = len(r["tp"])
    tcs, inv = unique_rows(np.stack([r["tp"], r["cp"]], 1), return_inverse=True)
    sig = sigmas(q, tcs[:, 0], tcs[:, 1])
    ok = sig["ok"].copy()
    # TP choices apart from their placement (the nvlink_domain limit's business):
    # one tier that holds any group, no tier pins
    outer = dataclasses.replace(q.system.networks[-1], size=2 ** 62, must_fill=False)
    unplaced = _derived(q, ("unplaced",), lambda: dataclasses.replace(
        q, system=dataclasses.replace(q.system, networks=(outer,)),
        pins={k: v for k, v in q.pins.items() if k not in NET_PINS}))
    tp_choices_for(unplaced, tcs[:, 0], tcs[:, 1])
    for i, (t, c) in enumerate(tcs):
        has = [len(tp_choices(unplaced, int(t), int(c), sp)) > 0 for sp in (False, True)]
        ok[i] &= np.where(sig["sp"].astype(bool), has[1], has[0])
    sizes = _axis_sizes(q)
    flags = np.zeros((R_,) + sizes, dtype=bool)
    # the space's own group flags per dp, on a system with (or without) the tier
    qq = q if tier == q.has_offload else _derived(q, ("tier", tier), lambda: dataclasses.replace(
        q, system=dataclasses.replace(q.system, offload_gib=max(q.system.offload_gib, 1.0) if tier else 0.0,
                                      offload_gbps=max(q.system.offload_gbps, 1.0) if tier else 0.0)))
    dps, dinv = unique_rows(np.stack([r["dp"], r["cp"]], 1), return_inverse=True)
    group_rest_for(qq, dps[:, 0], dps[:, 1])
    for d_i, (d, c) in enumerate(dps):
        rows = group_rest(qq, int(d), int(c))
        # some dp_overlap value the pins admit (where it has no effect, any)
        has_overlap = (not K.BY_NAME["dp_overlap"].matters({"dp": d, "cp": c})
                       or q.allowed("dp_overlap", [0, 1]).any())
        if has_overlap and len(rows):
            f = np.zeros(sizes, dtype=bool)
            f[_cells(rows)] = True
            flags[dinv.reshape(-1) == d_i] = f
    return ok[inv.reshape(-1)], flags


def _allowed_grid(allowed: tuple) -> np.ndarray:
    """An `_allowed` pair as one boolean per group: (rows, G, GROUP_REST axes)."""
    ok, flags = allowed
    return ok.reshape(ok.shape + (1,) * (flags.ndim - 1)) & flags[:, None]


def _caps(p: Problem):
    return p.system.hbm_gib * GIB, p.system.offload_gib * GIB


def _tier(p: Problem) -> bool:
    return p.system.offload_gbps > 0


# ---------------------------------------------------------- feasibility

def _rules_ok(p: Problem, r: dict, skip=()) -> np.ndarray:
    """Per row: the structural limits and the placement not in `skip` hold."""
    ok = np.ones(len(r["tp"]), dtype=bool)
    for name, bit in _struct_bits(p, r).items():
        if name not in skip:
            ok &= bit
    if "nvlink_domain" not in skip and ok.any():
        ok[ok] = _placeable(p, _sub(r, ok))
    return ok


def _good(p: Problem, r: dict, skip=()) -> np.ndarray:
    """Per row: every limit not in `skip` holds (a skipped pin is dropped)."""
    p = _without_pins(p, {k for n in skip if n.startswith("pin:") for k in n[4:].split("+")})
    ok = _rules_ok(p, r, skip)
    if ok.any():
        sub = _sub(r, ok)
        ok[ok] = _fit_table(p, sub, [(_allowed(p, sub, _tier(p)), *_caps(p))])[:, 0]
    return ok


def _sub(r: dict, mask) -> dict:
    return {k: v[mask] for k, v in r.items()}


def feasible(p: Problem) -> bool:
    """Does any strategy of the space fit (the search's own question)."""
    return bool(_good(p, _rows(p, _count_triples(p, p.gpus))).any())


def _smallest(p: Problem) -> dict:
    """{'hbm': ..., 'offload': ...}: the smallest HBM footprint (bytes) of
    any strategy that meets every other limit, and the smallest offload
    footprint, each with its strategy; (inf, None) where none does. For
    offload the tier is assumed present (its bandwidth does not bear on
    fitting). Both read one memory grid of the same rows."""
    r = _rows(p, _count_triples(p, p.gpus))
    ok = _rules_ok(p, r)
    if not ok.any():
        return {which: (math.inf, None) for which in ("hbm", "offload")}
    r = _sub(r, ok)
    parts = _memory_parts(p, r)
    cap_h, cap_o = _caps(p)
    return {"hbm": _least_of(p, r, parts, _allowed(p, r, _tier(p)), lambda h, o: (h, o <= cap_o)),
            "offload": _least_of(p, r, parts, _allowed(p, r, True), lambda h, o: (o, h <= cap_h))}


def _least_of(p: Problem, r: dict, parts: tuple, allowed: tuple, value) -> tuple:
    """The least `value` (of HBM and offload bytes: the value and whether
    the group fits) over the groups that `allowed` (an `_allowed` pair)
    admits and that fit, with the strategy at it, the first in the memory
    grid's order (row, signature, cell) of those at the least; (inf, None)
    when none does. The grid is evaluated only where a row allows a
    distinct column (_combine's pairs)."""
    ok, flags = allowed
    of_sig = parts[1]
    ri, ui = np.nonzero(_columns(ok, _to_columns(of_sig)))
    if not len(ri):
        return math.inf, None
    hbm, off = _combine(parts, ri, cols=ui)
    v, fits = value(hbm, off)
    v = np.where(flags[ri] & fits, v, np.inf)
    best = float(v.min())
    if not math.isfinite(best):
        return math.inf, None
    m, cell = np.nonzero(v.reshape(len(ri), -1) == best)
    i = int(ri[m].min())
    m, cell = m[ri[m] == i], cell[ri[m] == i]
    j, c = min((int(np.flatnonzero(ok[i] & (of_sig == ui[a]))[0]), int(b)) for a, b in zip(m, cell))
    cells = np.unravel_index(c, v.shape[1:])
    sig = sigmas(p, r["tp"][i:i + 1], r["cp"][i:i + 1])
    tp = int(r["tp"][i])
    ax = _group_axes(p, r["dp"][i:i + 1])
    knobs = {k: int(r[k][i]) for k in STRUCT_PINS} | {k: int(sig[k][j]) for k in SIGMA} | {
        k: int(ax[k].reshape(-1)[c]) for k, c in zip(GROUP_REST, cells)} | {
        "tp_overlap": 0, "dp_overlap": 0,
        "tp_net": 0 if tp <= p.system.nvlink_size else -1, "cp_net": -1, "pp_net": -1, "dp_net": -1}
    return best, knob_rows_to_strategy({k: [v] for k, v in knobs.items()}, 0, p.datatype)


# ----------------------------------------------------------------- fixes

def _whole_gib(need: float):
    """The smallest whole GiB holding `need` bytes: the HBM fix from the
    smallest HBM footprint, the offload fix (with a tier, if the system has
    none) from the smallest offloaded bytes."""
    return None if not math.isfinite(need) else max(1, math.ceil(need / GIB))


def fix_max_batch(p: Problem):
    """Smallest batch limit at which the problem is feasible. Within a
    structure, memory does not decrease with the local batch, so the
    smallest local batch a (microbatch, interleave) row admits decides:
    the microbatch itself (times pp when interleaved), or a pinned batch."""
    t = _count_triples(p, p.gpus)
    mbs, vs = _mb_v(p)
    cands = [(tuple(x), mb * (x[2] if v > 1 else 1)) for x in t for mb in mbs for v in vs]
    for b in p.pins.get("batch", ()):
        cands += [(tuple(x), b // x[3]) for x in t if b % x[3] == 0]
    cands = sorted(set(cands))
    trip = np.array([c[0] for c in cands], dtype=np.int64).reshape(-1, 4)
    local = np.array([c[1] for c in cands], dtype=np.int64)
    r = _rows(dataclasses.replace(p, max_batch=10 ** 12), trip, local)
    ok = _good(p, r, skip=("max_batch",))
    return int(r["batch"][ok].min()) if ok.any() else None


def fix_gpus(p: Problem):
    """Smallest GPU count above the current one, in whole NVLink domains
    up to the outermost tier, at which the problem is feasible; with its
    (tp, pp, dp). For a fixed (tp, pp) memory does not grow with dp
    (local batch and microbatches in flight shrink, ZeRO shards finer),
    so a bisection on dp at the least-memory row gives a first candidate
    and the exact check goes up from there. Pairs (tp, cp, pp) go in order
    of the least count they can reach: once a count is found, those that
    cannot go below it are skipped. Of equal counts, the first found
    names the split."""
    step = p.system.nvlink_size
    limit = p.system.networks[-1].size
    m = p.model
    tps = [t for t in divisors(_tp_unit(m)).tolist() if p.allowed("tp", [t])[0]]
    pp_all = divisors(m.blocks)
    if not p.even_stages:
        # uneven stages: every pp up to the blocks when they are few; past
        # FIX_PP_ALL blocks, the divisors and the powers of two (the search
        # for a fix stays small; the fix is then exact over those)
        extra = (np.arange(1, m.blocks + 1) if m.blocks <= FIX_PP_ALL
                 else 2 ** np.arange(int(np.log2(m.blocks)) + 1))
        pp_all = np.union1d(pp_all, extra)
    pps = [x for x in pp_all.tolist() if p.allowed("pp", [x])[0]]
    cps = [c for c in _cp_values(p) if p.allowed("cp", [c])[0]]
    pairs = np.array([(t, c, x) for t in tps for c in cps for x in pps], dtype=np.int64).reshape(-1, 3)
    if len(pairs) == 0:
        return None, None
    per_dp = pairs[:, 0] * pairs[:, 1] * pairs[:, 2]                  # GPUs of one replica
    unit = step // np.gcd(step, per_dp)        # dp multiple making whole domains
    hi = np.minimum(p.max_batch, limit // per_dp) // unit
    lo = p.gpus // (per_dp * unit) + 1              # counts above the current one
    live = hi >= lo
    pairs, per_dp, unit, hi, lo = pairs[live], per_dp[live], unit[live], hi[live], lo[live]
    if len(pairs) == 0:
        return None, None
    # memory-only bisection at the least-memory row (smallest pinned microbatch and interleave)
    mb0 = min(p.pins.get("microbatch", {1}))
    v0 = min(p.pins.get("interleave", {1}))
    q = _without_pins(p, STRUCT_PINS)
    cap_h, cap_o = _caps(p)

    def mem_fits(k, at):
        """Does each pair `at` (indices) fit memory at dp = k x its unit."""
        dp = k * unit[at]
        pr = pairs[at]
        r = {"tp": pr[:, 0], "cp": pr[:, 1], "pp": pr[:, 2], "dp": dp,
             "batch": dp * mb0 * np.where(v0 > 1, pr[:, 2], 1),
             "microbatch": np.full(len(dp), mb0), "interleave": np.full(len(dp), v0)}
        return _fit_table(q, r, [(_allowed(q, r, _tier(p)), cap_h, cap_o)])[:, 0]

    def first_fit(at):
        """The pairs of `at` that fit memory at their largest dp (memory
        falls as dp grows: the others never do), and for each the least k
        at which it fits."""
        at = at[mem_fits(hi[at], at)]
        a, b = lo[at].copy(), hi[at].copy()
        while (a < b).any():
            open_ = np.flatnonzero(a < b)                  # pairs still bisecting
            mid = (a[open_] + b[open_]) // 2
            f = mem_fits(mid, at[open_])
            b[open_] = np.where(f, mid, b[open_])
            a[open_] = np.where(~f, mid + 1, a[open_])
        return at, a

    # pairs in order of the least count they can reach, in chunks of
    # FIX_CHUNK pairs, doubling: once a count is found, a pair that cannot
    # go below it is not looked at
    best, witness = None, None
    least = per_dp * unit * lo
    order = np.argsort(least, kind="stable")
    start, size = 0, FIX_CHUNK
    while start < len(order):
        at = order[start:start + size]
        start, size = start + size, 2 * size
        if best is not None:
            at = at[least[at] < best]
            if not len(at):
                break                                   # the rest start higher still
        at, k0 = first_fit(at)
        if not len(at):
            continue
        # exact check upwards from the first candidate, nearest counts first
        for i, k in sorted(zip(at.tolist(), k0.tolist()), key=lambda x: per_dp[x[0]] * unit[x[0]] * x[1]):
            tp, cp, pp = (int(x) for x in pairs[i])
            per = tp * cp * pp * int(unit[i])
            if best is not None and per * k >= best:
                continue
            last = int(hi[i]) if best is None else min(int(hi[i]), (best - 1) // per)
            ks = np.arange(k, last + 1)
            for s0 in range(0, len(ks), 64):
                chunk = ks[s0:s0 + 64]
                dps = chunk * int(unit[i])
                trip = np.stack([np.full(len(dps), tp), np.full(len(dps), cp), np.full(len(dps), pp), dps], 1)
                r = _rows(p, trip)
                ok = _good(p, r, skip=("gpu_count",))        # each row is a split of its own count
                if ok.any():
                    j = int(np.flatnonzero(ok)[0])
                    n = int(r["tp"][j] * r["cp"][j] * r["pp"][j] * r["dp"][j])
                    if best is None or n < best:
                        best, witness = n, (tp, cp, pp, int(r["dp"][j]))
                    break
    return best, witness


def fix_nvlink(p: Problem, sizes=NVLINK_SIZES):
    """Smallest NVLink domain size of `sizes` (other than the current one)
    at which the problem is feasible."""
    nets = p.system.networks
    for n in sorted(sizes):
        if n == p.system.nvlink_size or (len(nets) > 1 and n > nets[1].size):
            continue
        if feasible(dataclasses.replace(p, system=load_system(p.system, nvlink_size=n))):
            return n
    return None


def _undominated_fits(p: Problem, r: dict, struct: np.ndarray, checks_of) -> tuple:
    """The fit columns (`_fit_table` with `checks_of(rows)`) of the rows the
    core needs, and those rows. A row is never needed when another row has
    every structural bit it has (`struct`, rows x columns) and fits every
    check: whatever set of limits the first meets, the second meets too. So
    the rows go by structural pattern, those with the most bits first, and
    within one the most GPUs first (the least memory, as a rule); a pattern
    is skipped once a row that fits every check has all its bits, and its
    rows stop at the first such row. The skipped rows, most of the relaxed
    ones when the GPU count is the conflict, never have their memory
    computed."""
    pats, inv = unique_rows(struct, return_inverse=True)
    inv = inv.reshape(-1)
    gpus = r["tp"] * r["cp"] * r["pp"] * r["dp"]
    full = []                                       # patterns of rows that fit every check
    kept, fits = [], []
    for k in np.argsort(-pats.sum(axis=1), kind="stable"):
        if any((f >= pats[k]).all() for f in full):
            continue
        rows = np.flatnonzero(inv == k)
        rows = rows[np.argsort(-gpus[rows], kind="stable")]
        for start in range(0, len(rows), MEMORY_CHUNK):
            at = rows[start:start + MEMORY_CHUNK]
            sub = _sub(r, at)
            f = _fit_table(p, sub, checks_of(sub))
            kept.append(at)
            fits.append(f)
            if f.all(axis=1).any():
                full.append(pats[k])
                break
    return np.concatenate(kept), np.concatenate(fits)


# ------------------------------------------------------------------ core

class _Core:
    """Rows collapsed to signatures, with one literal per limit group; the
    smallest core."""

    def __init__(self, p: Problem, r: dict):
        self.p = p
        bits = _struct_bits(p, r)
        net_pins = [k for k in NET_PINS if k in p.pins]
        group_pins = [k for k in GROUP_PINS if k in p.pins]
        # group pins beyond a few share one literal
        units = [[k] for k in group_pins] if len(group_pins) <= MAX_SEPARATE_GROUP_PINS else [group_pins]
        unit_names = ["pin:" + "+".join(u) for u in units]
        self.limits = (list(STRUCT_LIMITS) + ["nvlink_domain", "hbm_capacity", "offload_capacity"]
                       + [k for k in bits if k.startswith("pin:")] + [f"pin:{k}" for k in net_pins] + unit_names)
        columns = []      # (conditions {limit: value}, bit per row)
        for name, bit in bits.items():
            columns.append(({name: True}, bit))
        for active in itertools.product((False, True), repeat=len(net_pins)):
            q = _without_pins(p, [k for k, a in zip(net_pins, active) if not a])
            cond = {"nvlink_domain": True} | {f"pin:{k}": a for k, a in zip(net_pins, active)}
            columns.append((cond, _placeable(q, r)))
        cap_h, cap_o = _caps(p)
        conds, plans = [], []        # per fit column: its conditions, and (pins kept, offload on, HBM on)
        for active in itertools.product((False, True), repeat=len(units)):
            on = {k for u, a in zip(units, active) if a for k in u}
            for off_on in (False, True):
                for hbm_on in (False, True):
                    conds.append({"hbm_capacity": hbm_on, "offload_capacity": off_on} | dict(zip(unit_names, active)))
                    plans.append((frozenset(set(group_pins) - on), off_on, hbm_on))

        def checks_of(sub):
            allowed = {}
            for drop, off_on, _ in plans:
                if (drop, off_on) not in allowed:
                    allowed[drop, off_on] = _allowed(_without_pins(p, drop), sub, _tier(p) or not off_on)
            return [(allowed[drop, off_on], cap_h if hbm_on else math.inf, cap_o if off_on else math.inf)
                    for drop, off_on, hbm_on in plans]

        struct = np.stack([c[1] for c in columns], axis=1)
        at, fits = _undominated_fits(p, r, struct, checks_of)
        self.rows_fitted = len(at)
        columns = [(c[0], c[1][at]) for c in columns] + list(zip(conds, fits.T))
        table = np.stack([c[1] for c in columns], axis=1).astype(np.int64)
        self.sig = unique_rows(table)
        self.conditions = [c[0] for c in columns]
        self.solves = 0

    def _solve(self, active: set) -> bool:
        """Does some row meet every limit group in `active`."""
        self.solves += 1
        model = cp_model.CpModel()
        row = model.NewIntVar(0, len(self.sig) - 1, "signature")
        lit = {n: model.NewBoolVar(n) for n in self.limits}
        for c, cond in enumerate(self.conditions):
            b = model.NewBoolVar(f"col{c}")
            model.AddElement(row, self.sig[:, c].tolist(), b)
            model.Add(b == 1).OnlyEnforceIf([lit[n] if v else lit[n].Not() for n, v in cond.items()])
        for n in self.limits:
            model.Add(lit[n] == int(n in active))
        solver = cp_model.CpSolver()
        solver.parameters.num_workers = 1
        return solver.Solve(model) != cp_model.INFEASIBLE

    def minimal(self) -> list:
        """A smallest core, in one CP-SAT solve: a literal per limit group
        (kept or dropped) and one per table column (its conditions hold);
        every row must miss some column that holds (no split meets the
        kept groups), and the objective counts the kept groups. Of cores
        equally small, the one that keeps the structural limits and drops
        the capacities (KEEP_ORDER: the first in it cost the most to
        keep). A smallest core is also minimal: dropping any one of its
        groups makes the rest feasible."""
        if self._solve(set(self.limits)):
            return []
        md = cp_model.CpModel()
        keep = {n: md.NewBoolVar(n) for n in self.limits}
        holds = []
        for c, cond in enumerate(self.conditions):
            b = md.NewBoolVar(f"col{c}")
            terms = [keep[n] if v else keep[n].Not() for n, v in cond.items()]
            md.AddBoolAnd(terms).OnlyEnforceIf(b)
            md.AddBoolOr([t.Not() for t in terms]).OnlyEnforceIf(b.Not())
            holds.append(b)
        for row in self.sig:
            md.AddBoolOr([holds[c] for c in np.flatnonzero(row == 0)])
        cost = {n: len(KEEP_ORDER) - _keep_rank(n) for n in self.limits}
        size = sum(cost.values()) + 1                 # one group more always costs more
        md.Minimize(sum((size + cost[n]) * keep[n] for n in self.limits))
        solver = cp_model.CpSolver()
        solver.parameters.num_workers = 1
        deadline = _DEADLINE.get()
        if deadline is not None:
            solver.parameters.max_time_in_seconds = max(deadline - time.perf_counter(), 1e-3)
        self.solves += 1
        status = solver.Solve(md)
        if status != cp_model.OPTIMAL:
            if deadline is not None:
                raise _OutOfTime                   # stopped by the time left
            raise RuntimeError("the smallest core's model has no optimum")   # the rows say there is one
        return [n for n in self.limits if solver.Value(keep[n])]


def _keep_rank(name: str) -> int:
    return KEEP_ORDER.index(name) if name in KEEP_ORDER else KEEP_ORDER.index("pin:")


# ----------------------------------------------------------- explanation

def _pin_values(p: Problem, k: str) -> list:
    return [K.BY_NAME[k].value(v) for v in sorted(p.pins[k])]


def _describe(st: Strategy) -> str:
    extras = [f"recompute={st.recompute}"]
    if st.tp_comm != "ar":
        extras.append("sequence parallel")
    if st.zero:
        extras.append(f"ZeRO-{st.zero}" + (f" over groups of {st.shard}" if st.shard else ""))
    off = [n for n, on in (("weights", st.offload_weights), ("activations", st.offload_activations),
                           ("optimizer", st.offload_optimizer)) if on]
    if off:
        extras.append("offloading " + "+".join(off))
    return f"tp={st.tp} cp={st.cp} pp={st.pp} dp={st.dp}, " + ", ".join(extras)


def explain(p: Problem, deadline: float | None = None) -> dict:
    """For an infeasible problem: a minimal set of conflicting limit groups
    (`conflicts`), the numbers behind each (`details`, in words and fields),
    and the smallest single change of each kind that restores feasibility
    (`fixes`: limit -> value, None when that change alone cannot);
    `complete` True. With a `deadline` (time.perf_counter()) that passes
    first: no conflicts or fixes, `complete` False, and a summary that says
    so."""
    for knob, codes in p.pins.items():         # a Problem built by hand, past make_problem's checks
        if not codes:
            raise ConfigError("pin", knob, sorted(codes), "at least one value")
    token = _DEADLINE.set(deadline)
    try:
        return _explain(p)
    except _OutOfTime:
        return {"conflicts": [], "details": {}, "fixes": {}, "complete": False, "core_solves": 0,
                "summary": "No strategy fits (proven). The time limit came before the explanation was "
                           "complete: plan again without it for the conflicting limits and their fixes."}
    finally:
        _DEADLINE.reset(token)


def _explain(p: Problem) -> dict:
    gpus, witness = fix_gpus(p)
    smallest = _smallest(p)
    fixes = {"hbm_gib": _whole_gib(smallest["hbm"][0]), "offload_gib": _whole_gib(smallest["offload"][0]),
             "gpus": gpus, "max_batch": fix_max_batch(p), "nvlink_size": fix_nvlink(p)}
    rows = _rows(p, _relaxed_triples(p, [witness[3]] if witness else ()))
    core = _Core(p, rows)
    conflicts = core.minimal()
    details = {name: _detail(p, name, fixes, witness, smallest, rows) for name in conflicts}
    words = [LIMIT_NAMES.get(n, "the pin " + n[4:]) for n in conflicts]
    if len(words) > 1:
        head = f"No strategy fits: {', '.join(words[:-1])} and {words[-1]} cannot all hold."
    elif words:
        head = f"No strategy fits: {words[0]} cannot hold."
    else:
        head = "No strategy fits."
    body = " ".join(d["text"][0].upper() + d["text"][1:] + "." for d in details.values())
    if not any(v is not None for v in fixes.values()):
        body += " No single change suffices."
    return {"conflicts": conflicts, "details": details, "fixes": fixes, "complete": True,
            "summary": (head + " " + body).strip(), "core_solves": core.solves}


def _detail(p: Problem, name: str, fixes: dict, witness, smallest: dict, rows: dict) -> dict:
    m, s = p.model, p.system
    if name == "hbm_capacity":
        need, st = smallest["hbm"]
        if st is None:
            return {"capacity_gib": s.hbm_gib, "smallest_footprint_gib": None, "strategy": None,
                    "text": "no strategy meeting the other limits fits any HBM"}
        return {"capacity_gib": s.hbm_gib, "smallest_footprint_gib": need / GIB, "strategy": st.to_dict(),
                "text": f"the smallest HBM footprint any strategy reaches is {need / GIB:.1f} GiB per GPU "
                        f"({_describe(st)}), against {s.hbm_gib:g} GiB"}
    if name == "offload_capacity":
        need, st = smallest["offload"]
        if st is None:
            return {"capacity_gib": s.offload_gib, "smallest_offload_gib": None, "strategy": None,
                    "text": "no amount of offload memory makes HBM fit"}
        tier = (f"the offload tier holds {s.offload_gib:g} GiB" if _tier(p) and s.offload_gib > 0
                else "the system has no offload tier")
        return {"capacity_gib": s.offload_gib, "smallest_offload_gib": need / GIB, "strategy": st.to_dict(),
                "text": f"fitting HBM needs at least {need / GIB:.1f} GiB per GPU offloaded "
                        f"({_describe(st)}); {tier}"}
    if name == "max_batch":
        b = fixes["max_batch"]
        return {"max_batch": p.max_batch, "smallest_batch": b,
                "text": (f"the smallest batch any fitting split takes is {b}, the limit is {p.max_batch}"
                         if b is not None else f"no batch makes a split of {p.gpus} GPUs fit")}
    if name == "nvlink_domain":
        ok = _good(p, rows, skip=("nvlink_domain",))
        tp = int(rows["tp"][ok].min()) if ok.any() else None
        return {"nvlink_size": s.nvlink_size, "smallest_tp": tp,
                "text": (f"the smallest TP group of any fitting strategy is {tp} GPUs, the NVLink domain "
                         f"holds {s.nvlink_size}" if tp else
                         f"the groups cannot be placed on {', '.join(f'{n.name} ({n.size})' for n in s.networks)}")}
    if name == "gpu_count":
        more = (f"; {fixes['gpus']} GPUs would ({_split(witness)})" if fixes["gpus"] else "")
        return {"gpus": p.gpus,
                "text": f"no split of {p.gpus} GPUs into tp x cp x pp x dp meets the other limits{more}"}
    w = _witness(p, name, rows)
    but = f"; without it {_split(w)} would fit" if w else ""
    if name == "divisibility":
        g = _tp_unit(m)
        pp_rule = (f"divide the {m.blocks} blocks (even stages asked for)" if p.even_stages
                   else f"be at most the {m.blocks} blocks")
        bad_cp = sorted(c for c in p.pins.get("cp", ()) if m.seq_len % (2 * c))
        cp_rule = (f", and 2 x cp must divide the sequence length {m.seq_len} (each CP rank holds two chunks; "
                   f"cp={','.join(map(str, bad_cp))} does not)" if bad_cp else "")
        return {"tp_divides": g, "pp_divides": m.blocks if p.even_stages else None, "pp_at_most": m.blocks,
                "cp_divides_half_sequence": m.seq_len // 2, "witness": w,
                "text": f"the TP degree must divide {g} (heads, hidden and feedforward) and the PP degree "
                        f"{pp_rule}{cp_rule}{but}"}
    knobs = name[4:].split("+")
    vals = {k: _pin_values(p, k) for k in knobs}
    return {"pins": vals, "witness": w,
            "text": "the pin " + ", ".join(f"{k}={','.join(map(str, v))}" for k, v in vals.items()) + but}


def _split(w) -> str:
    return f"tp={w[0]} cp={w[1]} pp={w[2]} dp={w[3]}"


def _witness(p: Problem, name: str, r: dict):
    """(tp, cp, pp, dp) of a row meeting every limit but `name`, with the
    fewest GPUs and then the smallest tp and cp, or None."""
    ok = _good(p, r, skip=(name,))
    if not ok.any():
        return None
    n = r["tp"] * r["cp"] * r["pp"] * r["dp"]
    i = min(np.flatnonzero(ok), key=lambda j: (n[j], r["tp"][j], r["cp"][j]))
    return int(r["tp"][i]), int(r["cp"][i]), int(r["pp"][i]), int(r["dp"][i])
