"""The search space, derived from the knob registry and the rules, defined
once for the solver and for brute force.

A strategy is split in the three levels of optimizer.knobs:

- the *structure* (tp, cp, pp, dp, batch, microbatch, interleave);
- a *group* adds what memory depends on: the group knobs (recompute,
  ag_redo, fused_activation, cp_comm, zero, shard, offload flags) and the
  memory view of the member knobs (sequence parallelism or not, from
  tp_comm); the search splits it into the activation signature sigma
  (what block terms read) and the rest;
- a *member* adds what only time depends on (tp_comm within its view,
  tp_overlap, dp_overlap, the network tiers).

A group's signature sigma is valid per (tp, cp): cp_comm matters only with
cp > 1, and cp > 1 needs fused attention.

Each level is the product of its knobs' domains, filtered by every rule
(optimizer.rules) whose knobs are known once the level's are, by the pins,
and by the registry's `matters`: a knob without effect stays at its idle
code (and a pin on it says nothing there), so no two strategies of the
space are the same to the model. The
domains are the values a knob can take at all:

  tp          divisors of gpus
  cp          divisors of gpus / tp (2 x cp dividing the sequence: a rule)
  pp          divisors of gpus / (tp * cp) (uneven stages allowed: perf.stage_layout;
              the option even_stages keeps pp dividing the blocks)
  dp          gpus / (tp * cp * pp), at most the batch limit
  batch       every multiple of dp up to the batch limit (a variable: the
              planner's `batch=N` pins it to N)
  microbatch  divisors of batch / dp
  interleave  divisors of blocks / pp
  zero        0..3 (its `values`)
  shard       0 (the whole DP group) and the divisors of dp strictly
              between 1 and dp (group_rest)
  enums, booleans   every value; tiers   every tier of the system

A test enumerates the raw product of all knobs on tiny problems, filters it
with the rules and compares it with this space (tests/test_space.py).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from . import knobs as K
from . import rules as R
from .errors import ConfigError
from .spec import DATATYPES, MAX_GPUS, MAX_INT_FIELD, POSITIVE_KNOBS, Model, Strategy, System, resolve_aliases

STRUCTURE = tuple(k.name for k in K.at_level("structure"))
MEMBER = tuple(k.name for k in K.at_level("member"))
# the knobs of a group the block terms read (with the memory view of tp_comm): sigma
SIGMA = tuple(k.name for k in K.KNOBS if k.block and (k.level == "group" or k.memory_view is not None))
# the other group knobs: the rest of a group's key
GROUP_REST = tuple(k.name for k in K.at_level("group") if k.name not in SIGMA)


@functools.lru_cache(maxsize=4096)
def _divisors(n: int) -> tuple:
    small = [d for d in range(1, int(n ** 0.5) + 1) if n % d == 0]
    return tuple(sorted(set(small + [n // d for d in small])))


def divisors(n: int) -> np.ndarray:
    """The divisors of n, ascending (memoised: the same counts recur)."""
    return np.array(_divisors(int(n)), dtype=np.int64)


_KEPT = weakref.WeakSet()      # every Kept of the process (forget_kept)


class Kept:
    """What a process keeps between plans, by key, up to `most` in weight
    (`weight` of a value, one each by default), the least recently used
    dropped first; a value of more than a quarter of it is not kept (it
    would push out most of the rest). Thread-safe. The values are shared:
    read them, do not change them."""

    def __init__(self, most: float, weight=None):
        self.most, self.weight = most, weight or (lambda value: 1)
        self._store: OrderedDict = OrderedDict()    # key -> (value, weight)
        self._held = 0
        self._lock = threading.Lock()
        _KEPT.add(self)

    def get(self, key, make):
        """The value kept for `key`, or make()'s, kept."""
        with self._lock:
            if key in self._store:
                self._store.move_to_end(key)
                return self._store[key][0]
        value = make()
        w = self.weight(value)
        if w <= self.most / 4:
            with self._lock:
                if key not in self._store:
                    self._store[key] = (value, w)
                    self._held += w
                while self._held > self.most:
                    self._held -= self._store.popitem(last=False)[1][1]
        return value

    def clear(self):
        with self._lock:
            self._store.clear()
            self._held = 0


def forget_kept():
    """Empty everything the process keeps between plans (every Kept: the
    block tables, the spaces' counts, explain's memory grids): the next
    plan of every kind computes its own again (a benchmark's cold start)."""
    for kept in list(_KEPT):
        kept.clear()


def capacity_free_key(p: Problem) -> str:
    """What p is but for its memory capacities and offload link speed
    (whether an offload tier exists stays: the rule that offload needs one
    reads it): a key for what a process keeps across a sweep's capacities
    (the space's counts, explain's memory grids), whose values read none
    of them."""
    tier = float(p.has_offload)
    system = dataclasses.replace(p.system, name="", overrides=(), hbm_gib=0.0, offload_gib=tier, offload_gbps=tier)
    return repr((p.model, system, p.gpus, p.datatype, sorted((k, sorted(v)) for k, v in p.pins.items()), p.max_batch,
                 p.even_stages))


def unique_rows(a, return_index=False, return_inverse=False):
    """np.unique(a, axis=0) for a 2-D integer (or boolean) array, with the
    same rows in the same (lexicographic) order, indices and inverse: each
    row read as one number in a mixed radix (its columns' ranges) when they
    fit in 62 bits, which sorts one column, not rows of many (a tenth of
    the time on 200,000 rows); np.unique's own way when they do not."""
    a = np.asarray(a)
    if a.ndim != 2 or a.shape[1] == 0 or a.shape[0] == 0 or a.dtype.kind not in "biu":
        return np.unique(a, axis=0, return_index=return_index, return_inverse=return_inverse)
    x = a.astype(np.int64)
    lo = x.min(axis=0)
    span = x.max(axis=0) - lo + 1
    if float(np.prod(span.astype(float))) >= 2.0 ** 62:
        return np.unique(a, axis=0, return_index=return_index, return_inverse=return_inverse)
    key = np.zeros(len(x), dtype=np.int64)
    for c in range(x.shape[1]):
        key = key * int(span[c]) + (x[:, c] - lo[c])
    _, first, inv = np.unique(key, return_index=True, return_inverse=True)
    out = (a[first],)
    if return_index:
        out += (first,)
    if return_inverse:
        out += (inv.reshape(-1),)
    return out[0] if len(out) == 1 else out


@dataclass(frozen=True)
class Problem:
    """One planning question: a model on `gpus` GPUs of a system, a batch
    limit, a datatype, pins (knob -> allowed values, as codes), and whether
    pipeline stages must be even (pp dividing the blocks)."""

    model: Model
    system: System
    gpus: int
    max_batch: int
    datatype: str
    pins: dict = field(default_factory=dict)
    even_stages: bool = False
    memo: dict = field(default_factory=dict, init=False, compare=False, repr=False)  # derived levels, by key

    @property
    def rules(self) -> tuple:
        return R.for_planning(self.even_stages)

    @property
    def has_offload(self) -> bool:
        return self.system.offload_gib > 0 and self.system.offload_gbps > 0

    def allowed(self, knob, values):
        """Mask of `values` that the pins on `knob` admit."""
        values = np.asarray(values)
        if knob not in self.pins:
            return np.ones(values.shape, dtype=bool)
        return np.isin(values, np.array(sorted(self.pins[knob])))


def normalise_pins(pins, source="pin") -> dict:
    """Pins as {knob: frozenset of codes}. `pins` is a mapping of knob ->
    value or non-empty list (tuple, set) of values: enum values by name,
    booleans as bools, integers as ints within MAX_INT_FIELD (among the
    knob's `values` when it has them; 0 allowed where the default is 0);
    anything else is a ConfigError. Aliases (knobs.ALIASES) are read as
    their knob."""
    if pins is None:
        return {}
    if not isinstance(pins, Mapping):
        raise ConfigError(source, "pin", pins, "a mapping of knob -> value or list of values, e.g. {'tp': 8}")
    out = {}
    for name, value in resolve_aliases(pins, source, lists=True).items():
        if not isinstance(name, str) or name not in K.PINNABLE:
            raise ConfigError(source, name, value, f"a knob among {', '.join(K.PINNABLE)}")
        knob = K.BY_NAME[name]
        values = value if isinstance(value, (list, tuple, set, frozenset)) else [value]
        if not values:
            raise ConfigError(source, name, value, "at least one value")
        codes = set()
        for v in values:
            if knob.kind == "enum":
                if not isinstance(v, str) or v not in knob.choices:
                    raise ConfigError(source, name, v, f"one of {', '.join(knob.choices)}")
            elif knob.kind == "bool":
                if not isinstance(v, (bool, np.bool_)):
                    raise ConfigError(source, name, v, "true or false")
                v = bool(v)
            elif knob.values:
                if isinstance(v, (bool, np.bool_)) or v not in knob.values:
                    raise ConfigError(source, name, v, f"one of {', '.join(map(str, knob.values))}")
            elif (isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer))
                  or not (1 if name in POSITIVE_KNOBS else 0) <= v <= MAX_INT_FIELD):
                raise ConfigError(source, name, v, f"a tier index in [0, {MAX_INT_FIELD}]" if knob.kind == "tier"
                                  else f"an integer in [{1 if name in POSITIVE_KNOBS else 0}, {MAX_INT_FIELD}]")
            codes.add(knob.code(v))
        out[name] = frozenset(codes)
    return out


def make_problem(model: Model, system: System, gpus, max_batch, datatype, pins=None,
                 even_stages=False) -> Problem:
    """One planning question, every argument checked (ConfigError): gpus in
    [1, MAX_GPUS], max_batch in [1, MAX_INT_FIELD], a datatype the system
    has rates for, pins as normalise_pins takes them."""
    if isinstance(gpus, bool) or not isinstance(gpus, (int, np.integer)) or not 1 <= gpus <= MAX_GPUS:
        raise ConfigError("plan", "gpus", gpus, f"an integer in [1, {MAX_GPUS}]")
    if (isinstance(max_batch, bool) or not isinstance(max_batch, (int, np.integer))
            or not 1 <= max_batch <= MAX_INT_FIELD):
        raise ConfigError("plan", "max_batch", max_batch, f"an integer in [1, {MAX_INT_FIELD}]")
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        raise ConfigError("plan", "datatype", datatype, f"one of {', '.join(DATATYPES)}")
    if not system.supports(datatype):
        raise ConfigError("plan", "datatype", datatype,
                          f"a datatype {system.name} has rates for ({', '.join(system.matrix_tflops)})")
    pins = normalise_pins(pins)
    for t in K.TIERS:
        bad = [v for v in pins.get(t.name, ()) if v >= len(system.networks)]
        if bad:
            raise ConfigError("pin", t.name, bad[0], f"a tier index below {len(system.networks)}")
    if not isinstance(even_stages, bool):
        raise ConfigError("plan", "even_stages", even_stages, "true or false")
    return Problem(model, system, int(gpus), int(max_batch), datatype, pins, even_stages)


# ------------------------------------------------------------ domains

def domain(p: Problem, name: str) -> np.ndarray:
    """The codes a non-structure knob can take, before rules and pins
    (shard's depends on dp: shard_domain)."""
    knob = K.BY_NAME[name]
    if knob.values:
        return np.array(knob.values, dtype=np.int64)
    if knob.kind == "enum":
        return np.array([int(e) for e in knob.enum], dtype=np.int64)
    if knob.kind == "bool":
        return np.array([0, 1], dtype=np.int64)
    if knob.kind == "tier":
        return np.arange(len(p.system.networks), dtype=np.int64)
    raise KeyError(name)


def shard_domain(dp: int) -> np.ndarray:
    """The sharding groups of a dp: 0 (the whole DP group), then the
    divisors of dp strictly between 1 and dp (hybrid sharding)."""
    d = divisors(dp)
    return np.concatenate([[0], d[(d > 1) & (d < dp)]]).astype(np.int64)


def _structure_domain(p: Problem, name: str, row: dict) -> np.ndarray:
    """The values a structure knob can take given the ones before it."""
    if name == "tp":
        return divisors(p.gpus)
    if name == "cp":
        return divisors(p.gpus // row["tp"])
    if name == "pp":
        return divisors(p.gpus // (row["tp"] * row["cp"]))
    if name == "dp":
        dp = p.gpus // (row["tp"] * row["cp"] * row["pp"])
        return np.array([dp] if dp <= p.max_batch else [], dtype=np.int64)
    if name == "batch":
        if "batch" in p.pins:
            return np.array(sorted(b for b in p.pins["batch"] if b <= p.max_batch and b % row["dp"] == 0),
                            dtype=np.int64)
        return np.arange(row["dp"], p.max_batch + 1, row["dp"], dtype=np.int64)
    if name == "microbatch":
        return divisors(row["batch"] // row["dp"])
    if name == "interleave":
        return divisors(max(p.model.blocks // row["pp"], 1))
    raise KeyError(name)


def _domain_key(name: str, k: dict, n: int) -> np.ndarray:
    """What _structure_domain reads of the knobs before `name`, one integer
    per row (of n): rows with one key share one domain."""
    if name == "tp":
        return np.zeros(n, dtype=np.int64)
    if name == "microbatch":                               # the local batch
        return k["batch"] // k["dp"]
    key = {"cp": ("tp",), "pp": ("tp", "cp"), "dp": ("tp", "cp", "pp"), "batch": ("dp",), "interleave": ("pp",)}
    return np.prod([k[c] for c in key[name]], axis=0)


def keep(p: Problem, k: dict, new: tuple, known: tuple) -> np.ndarray:
    """Mask of the rows `k` (codes) that the pins on the `new` knobs admit,
    that break no rule readable from `known` which reads a new knob, and
    whose new knobs without effect sit at their idle code."""
    shape = np.broadcast(*(np.asarray(k[n]) for n in known)).shape
    ok = np.ones(shape, dtype=bool)
    for n in new:
        knob = K.BY_NAME[n]
        if knob.matters is not None and set(knob.matters_reads) <= set(known):
            # without effect, a knob sits at its idle code and its pin says nothing
            matters = knob.matters(k)
            ok &= np.where(matters, p.allowed(n, k[n]), np.asarray(k[n]) == knob.idle)
        else:
            ok &= p.allowed(n, k[n])
    known_set = set(known)
    for rule in p.rules:
        if set(rule.reads) <= known_set and set(rule.reads) & set(new):
            ok &= ~np.asarray(rule.broken(p.model, p.system, p.datatype, k))
    return ok


def _product(p: Problem, base: dict, names: tuple, domains: list) -> dict:
    """`base` (arrays of one length n, or scalars) times the product of
    `domains`, as flat arrays."""
    grid = np.array(list(itertools.product(*domains)), dtype=np.int64).reshape(-1, len(names))
    n = len(np.atleast_1d(next(iter(base.values())))) if base else 1
    out = {k: np.repeat(np.broadcast_to(np.asarray(v), (n,)), len(grid)) for k, v in base.items()}
    for i, name in enumerate(names):
        out[name] = np.tile(grid[:, i], n)
    return out


# ------------------------------------------------------------- structures

def structures(p: Problem, names: tuple = STRUCTURE) -> dict:
    """Every structure of the space, as arrays, knob by knob: each knob's
    domain given the ones before it, filtered by the rules they make
    readable and the pins (one mask per knob over all rows). Built from
    divisor lists, never from the product of all knobs. `names`: a prefix
    of STRUCTURE, for the distinct values of those knobs alone."""
    cols = {n: np.zeros(0, dtype=np.int64) for n in names}
    count = 1                                  # rows so far (one empty row)
    known: tuple = ()
    for name in names:
        # one domain per distinct key (_domain_key), laid out row by row
        _, first, inv = np.unique(_domain_key(name, cols, count), return_index=True, return_inverse=True)
        doms = [_structure_domain(p, name, {n: int(cols[n][i]) for n in known}) for i in first]
        size = np.array([len(d) for d in doms], dtype=np.int64)
        flat = np.concatenate(doms + [np.zeros(0)]).astype(np.int64)
        lens = size[inv.reshape(-1)]
        starts = (np.cumsum(size) - size)[inv.reshape(-1)]
        k = {n: np.repeat(cols[n], lens) for n in known}
        k[name] = flat[np.repeat(starts - (np.cumsum(lens) - lens), lens) + np.arange(int(lens.sum()))]
        known = known + (name,)
        ok = np.broadcast_to(keep(p, k, (name,), known), k[name].shape) if len(k[name]) else k[name] > 0
        cols.update({n: k[n][ok] for n in known})
        count = int(ok.sum())
    return {n: cols[n] for n in names}


# ----------------------------------------------------- levels of choices

def sigmas(p: Problem, tp, cp) -> dict:
    """Activation signatures valid for each (tp, cp) (arrays of one
    length): the product of the sigma knobs' domains, tp_comm by its memory
    view (one representative code per view: all-reduce, or sequence
    parallel), filtered by the rules and pins, cp_comm idle with cp = 1;
    arrays of the signatures with a mask (rows of (tp, cp) x signature)."""
    view = K.BY_NAME["tp_comm"].memory_view
    comm = domain(p, "tp_comm")
    reps = [int(comm[view(comm) == v][0]) for v in (False, True)]
    grid = np.array(list(itertools.product(*(reps if n == "tp_comm" else domain(p, n) for n in SIGMA))),
                    dtype=np.int64)
    sig = {n: grid[:, i] for i, n in enumerate(SIGMA)}
    tp = np.asarray(tp)[:, None]
    k = {"tp": tp, "cp": np.broadcast_to(np.asarray(cp), (tp.shape[0],))[:, None],
         **{n: v[None, :] for n, v in sig.items()}}
    pins_view = dict(p.pins)
    if "tp_comm" in p.pins:            # a view is allowed if any pinned code has it
        pins_view["tp_comm"] = frozenset(reps[int(v)] for v in view(np.array(sorted(p.pins["tp_comm"]))))
    q = dataclasses.replace(p, pins=pins_view)
    ok = np.broadcast_to(keep(q, k, SIGMA, ("tp", "cp") + SIGMA), (tp.shape[0], len(grid))).copy()
    return {**sig, "sp": view(sig["tp_comm"]), "ok": ok}


def _memo(f):
    """Cache a level's rows on the problem, by the function and its arguments."""
    def cached(p: Problem, *args):
        key = (f.__name__,) + tuple(int(a) for a in args)
        if key not in p.memo:
            p.memo[key] = f(p, *args)
        return p.memo[key]
    cached.__doc__, cached.__name__ = f.__doc__, f.__name__
    return cached


def group_rest(p: Problem, dp, cp) -> np.ndarray:
    """Rows of the other group knobs (ZeRO stage, sharding group, offload
    flags) valid for a dp and cp (ZeRO acts over dp x cp): shape (n,
    len(GROUP_REST)). Kept on p; `group_rest_for` builds many at once."""
    key = ("group_rest", int(dp), int(cp))
    if key not in p.memo:
        group_rest_for(p, [dp], [cp])
    return p.memo[key]


def group_rest_for(p: Problem, dp, cp):
    """group_rest of every (dp, cp) pair given (arrays of one length), kept
    where group_rest keeps them: one pass of the rules over all the pairs'
    rows (explain's fixes try many GPU counts, each a problem of its own)."""
    pairs = unique_rows(np.stack([np.asarray(dp, dtype=np.int64), np.asarray(cp, dtype=np.int64)], 1))
    pairs = pairs[[("group_rest", d, c) not in p.memo for d, c in pairs.tolist()]]
    if not len(pairs):
        return
    grids = {}                     # the product of the domains, per dp (itertools.product's order)
    doms = [None if n == "shard" else domain(p, n) for n in GROUP_REST]
    for d in np.unique(pairs[:, 0]).tolist():
        axes = [shard_domain(d) if x is None else x for x in doms]
        grids[d] = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, len(GROUP_REST)).astype(np.int64)
    sizes = np.array([len(grids[d]) for d in pairs[:, 0].tolist()], dtype=np.int64)
    rows = np.concatenate([grids[d] for d in pairs[:, 0].tolist()])
    k = {"dp": np.repeat(pairs[:, 0], sizes), "cp": np.repeat(pairs[:, 1], sizes),
         **{n: rows[:, c] for c, n in enumerate(GROUP_REST)}}
    ok = keep(p, k, GROUP_REST, ("dp", "cp") + GROUP_REST)
    cut = np.concatenate([[0], np.cumsum(sizes)])
    for i, (d, c) in enumerate(pairs):
        p.memo[("group_rest", int(d), int(c))] = rows[cut[i]:cut[i + 1]][ok[cut[i]:cut[i + 1]]]


@_memo
def members_of(p: Problem, tp, cp, pp, dp, sp) -> np.ndarray:
    """Member choices of a group: rows in MEMBER order, tp_comm restricted
    to the group's memory view `sp`."""
    k = _product(p, {"tp": np.array([tp]), "cp": np.array([cp]), "pp": np.array([pp]), "dp": np.array([dp])},
                 MEMBER, [domain(p, n) for n in MEMBER])
    ok = keep(p, k, MEMBER, ("tp", "cp", "pp", "dp") + MEMBER)
    ok &= K.BY_NAME["tp_comm"].memory_view(k["tp_comm"]) == bool(sp)
    return np.stack([k[n][ok] for n in MEMBER], 1).reshape(-1, len(MEMBER))


# the member knobs the block terms read: the block's own choices
TP_CHOICE = tuple(k.name for k in K.KNOBS if k.level == "member" and k.block)


def _unpinned_groups(p: Problem) -> Problem:
    """p with the pins on the PP and DP groups' knobs lifted (tp_choices)."""
    return dataclasses.replace(p, pins={k: v for k, v in p.pins.items() if k not in MEMBER or k in TP_CHOICE})


def tp_choices(p: Problem, tp, cp, sp) -> np.ndarray:
    """The block's choices (TP_CHOICE: tp_comm, tp_overlap, tp_net, cp_net)
    a (tp, cp) admits on its own: the members of a structure whose PP and
    DP groups are single GPUs, with the pins on those groups' knobs lifted,
    those of the memory view `sp`. Every member of any structure with this
    tp and cp makes one of these choices (the placement rule only tightens
    with more groups on a tier). Kept on p; `tp_choices_for` builds many
    pairs' at once."""
    key = ("tp_choices", int(tp), int(cp), int(sp))
    if key not in p.memo:
        tp_choices_for(p, [tp], [cp])
    return p.memo[key]


def tp_choices_for(p: Problem, tp, cp):
    """tp_choices of every (tp, cp) pair given (arrays of one length), both
    memory views, kept where tp_choices keeps them: one pass of the rules
    over all the pairs' members (one pass a pair costs a millisecond, and a
    problem has hundreds of pairs)."""
    pairs = unique_rows(np.stack([np.asarray(tp, dtype=np.int64), np.asarray(cp, dtype=np.int64)], 1))
    pairs = pairs[[any(("tp_choices", t, c, sp) not in p.memo for sp in (0, 1)) for t, c in pairs.tolist()]]
    if not len(pairs):
        return
    q = _unpinned_groups(p)
    one = np.ones(len(pairs), dtype=np.int64)
    k = _product(q, {"tp": pairs[:, 0], "cp": pairs[:, 1], "pp": one, "dp": one}, MEMBER,
                 [domain(q, n) for n in MEMBER])
    ok = keep(q, k, MEMBER, ("tp", "cp", "pp", "dp") + MEMBER)
    view = K.BY_NAME["tp_comm"].memory_view(k["tp_comm"])
    owner = np.repeat(np.arange(len(pairs)), len(k["tp"]) // len(pairs))
    # the distinct (pair, view, choice) rows, sorted: each pair's view a run
    rows = unique_rows(np.stack([owner, view.astype(np.int64)] + [k[n] for n in TP_CHOICE], 1)[ok])
    cut = np.searchsorted(rows[:, 0] * 2 + rows[:, 1], np.arange(2 * len(pairs) + 1))
    for i, (t, c) in enumerate(pairs):
        for sp in (0, 1):
            p.memo[("tp_choices", int(t), int(c), sp)] = rows[cut[2 * i + sp]:cut[2 * i + sp + 1], 2:]


# rules families() meets by construction (batch = dp x microbatch x n, n a
# multiple of pp when interleaved): with no other reader of the microbatch
# or the batch, a family's structures are counted in closed form
_BY_CONSTRUCTION = {"dp_divides_batch", "microbatch_divides_local_batch", "interleave_schedule"}


def _divisor_sum(n: int) -> int:
    """sum of n // m for m in 1..n, in O(sqrt n) (runs of equal quotients)."""
    total, m = 0, 1
    while m <= n:
        q = n // m
        top = n // q
        total += q * (top - m + 1)
        m = top + 1
    return total


def families(p: Problem) -> dict:
    """The space per (tp, cp, pp, dp) key: `families`, how many families
    (microbatch, interleave) it has, and `batches`, how many structures
    (a family's batches summed). The batch is dp * microbatch * n for n
    microbatches per replica (n a multiple of pp when interleaved), up to
    the limit or among the pinned batches. Rules are checked on the
    family's smallest batch (n = 1, or pp when interleaved): no rule reads
    the batch except through n's divisibility. Where nothing but the rules
    met by construction reads the microbatch or the batch, the counts are
    closed forms (L = local batch // unit microbatches: L families and
    sum L // mb structures); otherwise every microbatch is listed. Built
    from divisor lists and arithmetic, never from the batches themselves
    (tests/test_space.py checks the count against the enumeration)."""
    q = dataclasses.replace(p, pins={k: v for k, v in p.pins.items() if k != "batch"})
    pinned = np.array(sorted(p.pins["batch"]), dtype=np.int64) if "batch" in p.pins else None
    closed = (pinned is None and "microbatch" not in q.pins
              and all(r.name in _BY_CONSTRUCTION for r in q.rules if {"microbatch", "batch"} & set(r.reads)))
    keys = structures(q, STRUCTURE[:4])               # the (tp, cp, pp, dp) keys
    # every key's (microbatch, interleave) pairs, laid out key by key, checked at once
    grids = []
    for i, (pp, dp) in enumerate(zip(keys["pp"].tolist(), keys["dp"].tolist())):
        vs = divisors(max(p.model.blocks // pp, 1))
        mb = np.arange(1, (1 if closed else p.max_batch // dp) + 1, dtype=np.int64)
        grids.append((np.full(len(mb) * len(vs), i), *(x.reshape(-1) for x in np.meshgrid(mb, vs, indexing="ij"))))
    owner, mb_g, v_g = (np.concatenate([g[c] for g in grids]) if grids else np.zeros(0, dtype=np.int64)
                        for c in range(3))
    k = {n: keys[n][owner] for n in keys}
    dp = k["dp"]
    unit = np.where(v_g > 1, k["pp"], 1)                  # n must be a multiple of this
    k.update(microbatch=mb_g, interleave=v_g, batch=dp * mb_g * unit)
    ok = keep(q, k, ("batch", "microbatch", "interleave"), STRUCTURE) & (k["batch"] <= p.max_batch)
    local = p.max_batch // dp
    if closed:
        # per interleave: microbatches 1..L, each with L // microbatch batches
        length = np.where(ok, local // unit, 0)
        n_fam = np.bincount(owner, weights=length, minlength=len(keys["tp"])).astype(np.int64)
        n_str = np.zeros(len(keys["tp"]), dtype=object)
        for i, n in zip(owner[ok].tolist(), length[ok].tolist()):
            n_str[i] += _divisor_sum(n)
    else:
        if pinned is None:
            count = local // (mb_g * unit)
        else:
            count = ((pinned[None, :] % (dp * mb_g * unit)[:, None] == 0)
                     & (pinned[None, :] <= p.max_batch)).sum(axis=1)
        ok &= count > 0
        n_fam = np.bincount(owner[ok], minlength=len(keys["tp"])).astype(np.int64)
        n_str = np.zeros(len(keys["tp"]), dtype=object)
        for i, n in zip(owner[ok].tolist(), count[ok].tolist()):
            n_str[i] += n
    has = n_fam > 0
    out = {n: keys[n][has] for n in keys}
    return {**out, "families": np.array(n_fam[has].tolist(), dtype=object), "batches": n_str[has]}


def batches_of(p: Problem, dp: int, microbatch: int, pp: int, interleave: int) -> np.ndarray:
    """The batches a family takes, ascending."""
    unit = dp * microbatch * (pp if interleave > 1 else 1)
    if "batch" in p.pins:
        return np.array(sorted(b for b in p.pins["batch"] if b % unit == 0 and b <= p.max_batch), dtype=np.int64)
    return np.arange(unit, p.max_batch + 1, unit, dtype=np.int64)


COUNT_ROWS = 1 << 20      # (key, member) rows checked at a time when counting the space


def count_space(p: Problem, fam: dict | None = None) -> int:
    """Strategies in the space, counted per (tp, cp, pp, dp) key from the
    domain sizes (never enumerated): signatures x members of their memory
    view x the rest of the group x structures. The members are checked for
    many keys at once, as members_of checks one key's."""
    fam = families(p) if fam is None else fam
    keys = ("tp", "cp", "pp", "dp")
    n_keys = len(fam["tp"])
    if n_keys == 0:
        return 0
    domains = [domain(p, n) for n in MEMBER]
    step = max(COUNT_ROWS // max(math.prod(len(d) for d in domains), 1), 1)
    view = K.BY_NAME["tp_comm"].memory_view
    sig = sigmas(p, fam["tp"], fam["cp"])
    group_rest_for(p, fam["dp"], fam["cp"])
    total = 0
    for lo in range(0, n_keys, step):
        part = {n: np.asarray(fam[n][lo:lo + step]) for n in keys}
        k = _product(p, part, MEMBER, domains)
        ok = keep(p, k, MEMBER, keys + MEMBER).reshape(len(part["tp"]), -1)
        sp = view(k["tp_comm"]).reshape(ok.shape)
        sig_ok = sig["ok"][lo:lo + step]
        members = ((sig_ok & ~sig["sp"]).sum(1) * (ok & ~sp).sum(1)
                   + (sig_ok & sig["sp"]).sum(1) * (ok & sp).sum(1))
        for m, cp, dp, n_str in zip(members.tolist(), part["cp"].tolist(), part["dp"].tolist(),
                                    fam["batches"][lo:lo + step].tolist()):
            total += m * len(group_rest(p, dp, cp)) * n_str
    return int(total)


def knob_rows_to_strategy(rows: dict, i: int, datatype: str) -> Strategy:
    """Row `i` of knob code arrays as a Strategy."""
    return Strategy(datatype=datatype, **{k.name: k.value(np.asarray(rows[k.name])[i]) for k in K.KNOBS})


def group_rows(S: dict, i, sig: dict, j, rest, mem: np.ndarray) -> dict:
    """The strategies of one group (structure i, signature j, the rest of
    the group key) with its members `mem`, as knob code arrays; or of
    several, with i, j and the rows of `rest` given per member."""
    n = len(mem)
    each = lambda x: np.array(np.broadcast_to(x, (n,)))  # noqa: E731
    rest = np.broadcast_to(np.asarray(rest).reshape(-1, len(GROUP_REST)), (n, len(GROUP_REST)))
    out = {name: each(S[name][i]) for name in STRUCTURE}
    out.update({name: each(sig[name][j]) for name in SIGMA if name != "tp_comm"})
    out.update({name: np.array(rest[:, c]) for c, name in enumerate(GROUP_REST)})
    out.update({name: mem[:, c] for c, name in enumerate(MEMBER)})
    return out


# strategies per chunk of brute force: a time limit is checked between chunks
CHUNK = 20_000


def enumerate_all(p: Problem, S: dict | None = None):
    """Every strategy of the space as knob arrays (for brute force), yielded
    in chunks of whole structures."""
    S = structures(p) if S is None else S
    if len(S["tp"]) == 0:
        return
    sig = sigmas(p, S["tp"], S["cp"])
    chunk, size = [], 0
    for i in range(len(S["tp"])):
        tp, cp, pp, dp = int(S["tp"][i]), int(S["cp"][i]), int(S["pp"][i]), int(S["dp"][i])
        rests = group_rest(p, dp, cp)
        for j in np.flatnonzero(sig["ok"][i]):
            mem = members_of(p, tp, cp, pp, dp, bool(sig["sp"][j]))
            if len(mem) == 0:
                continue
            for rest in rests:
                chunk.append(group_rows(S, i, sig, j, rest, mem))
                size += len(mem)
        if size > CHUNK:
            yield {k: np.concatenate([c[k] for c in chunk]) for k in chunk[0]}
            chunk, size = [], 0
    if chunk:
        yield {k: np.concatenate([c[k] for c in chunk]) for k in chunk[0]}
