"""The search space, defined once for the solver and for brute force.

A strategy is split in three levels:

- the *structure* S = (tp, pp, dp, microbatch, interleave), with dp =
  gpus / (tp * pp) and the batch the largest multiple of dp not above the
  batch limit;
- a *group* adds what memory depends on: the activation signature
  sigma = (recompute, sequence-parallel mode, fused activation), ZeRO-1
  (optimizer_sharding) and the three offload flags;
- a *member* adds what only time depends on: tp_comm within the sequence-
  parallel mode, tp_overlap, dp_overlap and the network tier of each group.

Domains (the same for `plan` and `enumerate`):

  tp          divisors of gpus that divide heads, hidden and feedforward
  pp          divisors of blocks that divide gpus / tp
  dp          gpus / (tp * pp), at most the batch limit
  batch       the largest multiple of dp not above the batch limit
  microbatch  divisors of batch / dp
  interleave  divisors of blocks / pp; above 1 only with pp > 1 and a
              microbatch count that pp divides (Megatron's schedule)
  recompute   none, attn, full
  tp_comm     ar; rs_ag and p2p_rs_ag (sequence parallelism) when tp > 1
              and tp divides the sequence
  ag_redo     only with sequence parallelism (the sp mode 'redo')
  tp_overlap  none; pipe when tp > 1; ring when tp_comm is p2p_rs_ag
  dp_overlap, optimizer_sharding   only when dp > 1
  fused_activation                 both
  offload_*   only when the system has an offload tier
  *_net       a group of one GPU uses no network (tier 0 by convention);
              otherwise any tier the placement rule admits

Pins restrict any knob to one value or a set of values.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

from . import perf
from .errors import ConfigError
from .spec import DATATYPES, RECOMPUTE, TP_COMM, TP_OVERLAP, Model, Strategy, System

# sequence-parallel modes: 0 all-reduce, 1 rs/ag keeping gathered inputs, 2 rs/ag re-gathering them
SP_MODES = ("ar", "sp", "sp_redo")
BOOL_KNOBS = ("ag_redo", "dp_overlap", "optimizer_sharding", "fused_activation",
              "offload_weights", "offload_activations", "offload_optimizer")
INT_KNOBS = ("tp", "pp", "dp", "batch", "microbatch", "interleave", "tp_net", "pp_net", "dp_net")
ENUM_KNOBS = {"recompute": RECOMPUTE, "tp_comm": TP_COMM, "tp_overlap": TP_OVERLAP}
PINNABLE = INT_KNOBS + BOOL_KNOBS + tuple(ENUM_KNOBS)


def divisors(n: int) -> np.ndarray:
    n = int(n)
    small = [d for d in range(1, int(n ** 0.5) + 1) if n % d == 0]
    return np.array(sorted(set(small + [n // d for d in small])), dtype=np.int64)


@dataclass(frozen=True)
class Problem:
    """One planning question: a model on `gpus` GPUs of a system, a batch
    limit, a datatype, and pins (knob -> allowed values, as codes)."""

    model: Model
    system: System
    gpus: int
    max_batch: int
    datatype: str
    pins: dict = field(default_factory=dict)

    @property
    def has_offload(self) -> bool:
        return self.system.offload_gib > 0 and self.system.offload_gbps > 0

    def allowed(self, knob, values):
        """Mask of `values` that the pins on `knob` admit."""
        values = np.asarray(values)
        if knob not in self.pins:
            return np.ones(values.shape, dtype=bool)
        return np.isin(values, np.array(sorted(self.pins[knob])))


def normalise_pins(pins: dict | None, source="pin") -> dict:
    """Pins as {knob: frozenset of codes}. Enum values by name, booleans as
    bools, integers as ints; a value outside its domain is a ConfigError."""
    out = {}
    for knob, value in (pins or {}).items():
        if knob not in PINNABLE:
            raise ConfigError(source, knob, value, f"a knob among {', '.join(PINNABLE)}")
        values = value if isinstance(value, (list, tuple, set, frozenset)) else [value]
        codes = set()
        for v in values:
            if knob in ENUM_KNOBS:
                if v not in ENUM_KNOBS[knob]:
                    raise ConfigError(source, knob, v, f"one of {', '.join(ENUM_KNOBS[knob])}")
                codes.add(ENUM_KNOBS[knob].index(v))
            elif knob in BOOL_KNOBS:
                if not isinstance(v, bool):
                    raise ConfigError(source, knob, v, "true or false")
                codes.add(int(v))
            else:
                if isinstance(v, bool) or not isinstance(v, int) or (v < 0 if knob.endswith("_net") else v < 1):
                    raise ConfigError(source, knob, v, "a positive integer" if not knob.endswith("_net")
                                      else "a tier index >= 0")
                codes.add(int(v))
        out[knob] = frozenset(codes)
    return out


def make_problem(model: Model, system: System, gpus, max_batch, datatype, pins=None) -> Problem:
    if isinstance(gpus, bool) or not isinstance(gpus, (int, np.integer)) or gpus < 1:
        raise ConfigError("plan", "gpus", gpus, "a positive integer")
    if isinstance(max_batch, bool) or not isinstance(max_batch, (int, np.integer)) or max_batch < 1:
        raise ConfigError("plan", "max_batch", max_batch, "a positive integer")
    if datatype not in DATATYPES:
        raise ConfigError("plan", "datatype", datatype, f"one of {', '.join(DATATYPES)}")
    if not system.supports(datatype):
        raise ConfigError("plan", "datatype", datatype,
                          f"a datatype {system.name} has rates for ({', '.join(system.matrix_tflops)})")
    pins = normalise_pins(pins)
    for knob in ("tp_net", "pp_net", "dp_net"):
        bad = [v for v in pins.get(knob, ()) if v >= len(system.networks)]
        if bad:
            raise ConfigError("pin", knob, bad[0], f"a tier index below {len(system.networks)}")
    return Problem(model, system, int(gpus), int(max_batch), datatype, pins)


# ------------------------------------------------------------- structures

def structures(p: Problem) -> dict:
    """Every structure S of the space, as arrays (tp, pp, dp, batch,
    microbatch, interleave). Built from divisor lists, never from the
    product of all knobs."""
    m = p.model
    tps = divisors(p.gpus)
    tps = tps[(m.heads % tps == 0) & (m.hidden % tps == 0) & (m.feedforward % tps == 0)
              & p.allowed("tp", tps)]
    rows = []
    for tp in tps:
        pps = divisors(p.gpus // tp)
        pps = pps[(m.blocks % pps == 0) & p.allowed("pp", pps)]
        for pp in pps:
            dp = p.gpus // (tp * pp)
            if dp > p.max_batch or not p.allowed("dp", [dp])[0]:
                continue
            batch = (p.max_batch // dp) * dp
            if not p.allowed("batch", [batch])[0]:
                continue
            mbs = divisors(batch // dp)
            mbs = mbs[p.allowed("microbatch", mbs)]
            vs = divisors(m.blocks // pp)
            vs = vs[p.allowed("interleave", vs)]
            for mb in mbs:
                micro = batch // dp // mb
                for v in vs:
                    if v > 1 and (pp == 1 or micro % pp):
                        continue
                    rows.append((tp, pp, dp, batch, mb, v))
    arr = np.array(rows, dtype=np.int64).reshape(-1, 6)
    return {k: arr[:, i] for i, k in enumerate(("tp", "pp", "dp", "batch", "microbatch", "interleave"))}


# ----------------------------------------------------- levels of choices

def sigmas(p: Problem, tp) -> dict:
    """Activation signatures valid for each tp: arrays (rows of tp x sigma)
    with a mask. sigma = (recompute, sp_mode, fused)."""
    combos = np.array(list(itertools.product(range(3), range(3), range(2))), dtype=np.int64)
    rec, spm, fused = combos.T
    tp = np.asarray(tp)[:, None]
    ok = np.ones((tp.shape[0], len(combos)), dtype=bool)
    ok &= (spm == 0) | ((tp > 1) & (p.model.seq_len % tp == 0))
    ok &= p.allowed("recompute", rec) & p.allowed("fused_activation", fused)
    ok &= p.allowed("ag_redo", (spm == 2).astype(int))
    # tp_comm pins: ar <-> mode 0, rs_ag / p2p_rs_ag <-> modes 1 and 2
    if "tp_comm" in p.pins:
        ok &= np.where(spm == 0, 0 in p.pins["tp_comm"], bool(p.pins["tp_comm"] & {1, 2}))
    return {"recompute": rec, "sp_mode": spm, "fused": fused, "ok": ok}


def tp_members(p: Problem, tp, sp_mode) -> list:
    """(tp_comm, tp_overlap) pairs for a tp and a sequence-parallel mode."""
    comms = [0] if sp_mode == 0 else [1, 2]
    out = []
    for c in comms:
        for o in range(3):
            if o > 0 and tp == 1:
                continue
            if o == 1 and c != 2:
                continue
            if p.allowed("tp_comm", [c])[0] and p.allowed("tp_overlap", [o])[0]:
                out.append((c, o))
    return out


def bool_domain(p: Problem, knob, possible: bool):
    vals = np.array([0, 1] if possible else [0])
    return vals[p.allowed(knob, vals)]


def net_triples(p: Problem, tp, pp, dp) -> np.ndarray:
    """Valid (tp_net, pp_net, dp_net) for one (tp, pp, dp)."""
    T = len(p.system.networks)
    opts = []
    for size, knob in ((tp, "tp_net"), (pp, "pp_net"), (dp, "dp_net")):
        vals = np.arange(T) if size > 1 else np.array([0])
        opts.append(vals[p.allowed(knob, vals)])
    trip = np.array(list(itertools.product(*opts)), dtype=np.int64).reshape(-1, 3)
    if len(trip) == 0:
        return trip
    bad = perf.placement_violation(p.system, tp, pp, dp, trip[:, 0], trip[:, 1], trip[:, 2])
    return trip[~bad]


def count_space(p: Problem, S: dict) -> int:
    """Strategies in the space, counted per structure from the domain sizes
    (never enumerated)."""
    total = 0
    sig = sigmas(p, S["tp"]) if len(S["tp"]) else None
    off = len(bool_domain(p, "offload_weights", p.has_offload)) * \
        len(bool_domain(p, "offload_activations", p.has_offload)) * \
        len(bool_domain(p, "offload_optimizer", p.has_offload))
    cache = {}
    for i in range(len(S["tp"])):
        tp, pp, dp = int(S["tp"][i]), int(S["pp"][i]), int(S["dp"][i])
        key = (tp, pp, dp)
        if key not in cache:
            n_sig = sum(len(tp_members(p, tp, int(sig["sp_mode"][j])))
                        for j in np.flatnonzero(sig["ok"][i]))
            n_dp = len(bool_domain(p, "optimizer_sharding", dp > 1)) * len(bool_domain(p, "dp_overlap", dp > 1))
            cache[key] = n_sig * n_dp * off * len(net_triples(p, tp, pp, dp))
        total += cache[key]
    return total


def members_of(p: Problem, tp, pp, dp, sp_mode) -> np.ndarray:
    """Member choices of a group: rows (tp_comm, tp_overlap, dp_overlap,
    tp_net, pp_net, dp_net)."""
    rows = []
    nets = net_triples(p, tp, pp, dp)
    for c, o in tp_members(p, tp, sp_mode):
        for dov in bool_domain(p, "dp_overlap", dp > 1):
            for n in nets:
                rows.append((c, o, int(dov), *n))
    return np.array(rows, dtype=np.int64).reshape(-1, 6)


def strategies_to_knobs(rows: dict) -> dict:
    """Arrays of knobs (as perf.KNOBS) from arrays named by strategy keys."""
    return {k: rows[k] for k in perf.KNOBS}


def knob_rows_to_strategy(rows: dict, i: int, datatype: str) -> Strategy:
    kw = {}
    for k in perf.KNOBS:
        v = int(np.asarray(rows[k])[i])
        if k in ENUM_KNOBS:
            kw[k] = ENUM_KNOBS[k][v]
        elif k in BOOL_KNOBS:
            kw[k] = bool(v)
        else:
            kw[k] = v
    return Strategy(datatype=datatype, **kw)


def enumerate_all(p: Problem, S: dict | None = None):
    """Every strategy of the space as knob arrays (for brute force), yielded
    in chunks of whole structures."""
    S = structures(p) if S is None else S
    if len(S["tp"]) == 0:
        return
    sig = sigmas(p, S["tp"])
    z_dom = {d: bool_domain(p, "optimizer_sharding", d > 1) for d in set(S["dp"].tolist())}
    offs = [bool_domain(p, k, p.has_offload) for k in ("offload_weights", "offload_activations",
                                                         "offload_optimizer")]
    off_rows = np.array(list(itertools.product(*offs)), dtype=np.int64).reshape(-1, 3)
    chunk = []
    size = 0
    for i in range(len(S["tp"])):
        tp, pp, dp = int(S["tp"][i]), int(S["pp"][i]), int(S["dp"][i])
        for j in np.flatnonzero(sig["ok"][i]):
            mem = members_of(p, tp, pp, dp, int(sig["sp_mode"][j]))
            if len(mem) == 0:
                continue
            for z in z_dom[dp]:
                for o in off_rows:
                    n = len(mem)
                    block = {
                        "tp": np.full(n, tp), "pp": np.full(n, pp), "dp": np.full(n, dp),
                        "batch": np.full(n, S["batch"][i]), "microbatch": np.full(n, S["microbatch"][i]),
                        "interleave": np.full(n, S["interleave"][i]),
                        "recompute": np.full(n, sig["recompute"][j]),
                        "ag_redo": np.full(n, int(sig["sp_mode"][j] == 2)),
                        "fused_activation": np.full(n, sig["fused"][j]),
                        "optimizer_sharding": np.full(n, z),
                        "offload_weights": np.full(n, o[0]), "offload_activations": np.full(n, o[1]),
                        "offload_optimizer": np.full(n, o[2]),
                        "tp_comm": mem[:, 0], "tp_overlap": mem[:, 1], "dp_overlap": mem[:, 2],
                        "tp_net": mem[:, 3], "pp_net": mem[:, 4], "dp_net": mem[:, 5],
                    }
                    chunk.append(block)
                    size += n
        if size > 200_000:
            yield {k: np.concatenate([c[k] for c in chunk]) for k in chunk[0]}
            chunk, size = [], 0
    if chunk:
        yield {k: np.concatenate([c[k] for c in chunk]) for k in chunk[0]}
