"""The rules a strategy must keep, declared once.

Each rule is one record: a name, the knobs it reads, a vectorised check
(True where the rule is broken), a sentence, and the numbers that explain a
breach. The evaluator checks them all (perf.check_rules); the search builds
its space by applying each rule as soon as the knobs it reads are fixed
(space.py); explain groups them into limits. Capacity (HBM, offload) needs
the memory model, so those two rules are checked in perf after it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .knobs import TIERS, Recompute, TpComm, TpOverlap


@dataclass(frozen=True)
class Rule:
    """`broken(model, system, datatype, k)` gets knob codes as arrays (only
    those in `reads` are needed) and returns True where the rule is broken;
    `facts(model, system, s)` the numbers behind a breach for one Strategy."""

    name: str
    reads: tuple
    text: str
    broken: Callable
    facts: Callable
    limit: str          # which explain limit group the rule belongs to


def normalise_tier(system, tier):
    """Tier indices with -1 meaning the outermost tier."""
    tier = np.asarray(tier, dtype=np.int64)
    return np.where(tier < 0, tier + len(system.networks), tier)


def tiers_in_range(system, k) -> np.ndarray:
    """True where every tier knob names an existing tier."""
    n = len(system.networks)
    ok = True
    for t in TIERS:
        x = normalise_tier(system, k[t.name])
        ok = ok & (x >= 0) & (x < n)
    return np.asarray(ok)


def placement_violation(system, k) -> np.ndarray:
    """True where the groups placed on some network tier do not fit it (or,
    on a tier that must be filled, do not tile it). A group of one GPU uses
    no network. Tiers must be in range (see tiers_in_range)."""
    n = len(system.networks)
    tiers = {t.places: np.clip(normalise_tier(system, k[t.name]), 0, n - 1) for t in TIERS}
    sizes = {t.places: np.asarray(k[t.places]) for t in TIERS}
    shape = np.broadcast(*tiers.values(), *sizes.values()).shape
    bad = np.zeros(shape, dtype=bool)
    for i, net in enumerate(system.networks):
        used = np.ones(shape, dtype=np.int64)
        for g in tiers:
            used = used * np.where((tiers[g] == i) & (sizes[g] > 1), sizes[g], 1)
        bad |= used > net.size
        if net.must_fill:
            bad |= (used > 1) & (np.remainder(net.size, np.maximum(used, 1)) != 0)
    return bad


def _mod(a, b):
    """a % b for positive b (knobs are checked positive on load)."""
    return np.asarray(a) % np.maximum(np.asarray(b), 1)


def _microbatches(k):
    local = np.asarray(k["batch"]) // np.maximum(np.asarray(k["dp"]), 1)
    return np.maximum(local // np.maximum(np.asarray(k["microbatch"]), 1), 1)


def _stage_blocks(m, k):
    return m.blocks // np.maximum(np.asarray(k["pp"]), 1)


RULES: tuple[Rule, ...] = (
    Rule("tp_divides_heads", ("tp",),
         "tp must divide the attention heads, and divide the KV heads or be a multiple of them",
         lambda m, s, dt, k: (_mod(m.heads, k["tp"]) != 0)
         | ((_mod(m.kv_heads, k["tp"]) != 0) & (_mod(k["tp"], m.kv_heads) != 0)),
         lambda m, s, st: f"tp={st.tp}, heads={m.heads}, kv_heads={m.kv_heads}", "divisibility"),
    Rule("tp_divides_hidden", ("tp",), "tp must divide hidden and feedforward",
         lambda m, s, dt, k: (_mod(m.hidden, k["tp"]) != 0) | (_mod(m.feedforward, k["tp"]) != 0),
         lambda m, s, st: f"tp={st.tp}, hidden={m.hidden}, feedforward={m.feedforward}", "divisibility"),
    Rule("pp_at_most_blocks", ("pp",), "pp must be at most the blocks",
         lambda m, s, dt, k: np.asarray(k["pp"]) > m.blocks,
         lambda m, s, st: f"pp={st.pp}, blocks={m.blocks}", "divisibility"),
    # uneven stages (perf.stage_layout) do not interleave: every stage's
    # chunks must hold the same blocks
    Rule("interleave_divides_stage", ("pp", "interleave"),
         "interleave must divide the blocks per stage, which needs pp to divide the blocks",
         lambda m, s, dt, k: (np.asarray(k["interleave"]) > 1)
         & ((_mod(m.blocks, k["pp"]) != 0) | (_mod(_stage_blocks(m, k), k["interleave"]) != 0)),
         lambda m, s, st: f"interleave={st.interleave}, pp={st.pp}, blocks={m.blocks}",
         "divisibility"),
    Rule("dp_divides_batch", ("dp", "batch"), "dp must divide the batch",
         lambda m, s, dt, k: _mod(k["batch"], k["dp"]) != 0,
         lambda m, s, st: f"dp={st.dp}, batch={st.batch}", "divisibility"),
    Rule("microbatch_divides_local_batch", ("dp", "batch", "microbatch"),
         "microbatch must divide the local batch (batch / dp)",
         lambda m, s, dt, k: _mod(np.asarray(k["batch"]) // np.maximum(np.asarray(k["dp"]), 1),
                                  k["microbatch"]) != 0,
         lambda m, s, st: f"microbatch={st.microbatch}, local batch={st.batch / st.dp:g}", "divisibility"),
    Rule("interleave_schedule", ("pp", "dp", "batch", "microbatch", "interleave"),
         "interleave > 1 needs pp > 1 and a microbatch count that pp divides",
         lambda m, s, dt, k: (np.asarray(k["interleave"]) > 1)
         & ((np.asarray(k["pp"]) == 1) | (_mod(_microbatches(k), k["pp"]) != 0)),
         lambda m, s, st: f"interleave={st.interleave}, pp={st.pp}, "
                          f"microbatches={st.batch // st.dp // st.microbatch}", "divisibility"),
    # a sharding group splits DP into dp / shard replicas of equal groups
    Rule("shard_divides_dp", ("dp", "zero", "shard"),
         "shard must be 0 (the whole DP group) or a divisor of dp strictly between 1 and dp",
         lambda m, s, dt, k: (np.asarray(k["shard"]) != 0)
         & ~((np.asarray(k["shard"]) > 1) & (np.asarray(k["shard"]) < np.asarray(k["dp"]))
             & (_mod(k["dp"], k["shard"]) == 0)),
         lambda m, s, st: f"shard={st.shard}, dp={st.dp}, zero={st.zero}", "divisibility"),
    # context parallelism's load-balanced causal split: each CP rank holds
    # two chunks of the sequence, one from each end (Megatron-Core, TE);
    # without context parallelism (cp = 1) the sequence is not split
    Rule("cp_divides_sequence", ("cp",), "with cp > 1, 2 x cp must divide the sequence length (two chunks per CP rank)",
         lambda m, s, dt, k: (np.asarray(k["cp"]) > 1) & (_mod(m.seq_len, 2 * np.asarray(k["cp"])) != 0),
         lambda m, s, st: f"cp={st.cp}, 2 x cp={2 * st.cp}, seq_len={m.seq_len}", "divisibility"),
    # context parallelism runs inside the fused attention kernels (TE's); the
    # unfused path has no CP variant
    Rule("cp_needs_fused", ("cp", "flash_attention"), "cp > 1 needs fused attention",
         lambda m, s, dt, k: (np.asarray(k["cp"]) > 1) & ~np.asarray(k["flash_attention"]).astype(bool),
         lambda m, s, st: f"cp={st.cp}, flash_attention={st.flash_attention}", "divisibility"),
    Rule("sequence_split", ("tp", "cp", "tp_comm"),
         "sequence parallelism needs tp > 1 dividing each CP rank's share of the sequence",
         lambda m, s, dt, k: (np.asarray(k["tp_comm"]) > TpComm.AR)
         & ((np.asarray(k["tp"]) == 1) | (_mod(m.seq_len // np.maximum(np.asarray(k["cp"]), 1), k["tp"]) != 0)),
         lambda m, s, st: f"tp={st.tp}, cp={st.cp}, tp_comm={st.tp_comm}, seq_len={m.seq_len}", "divisibility"),
    Rule("selective_needs_unfused", ("recompute", "flash_attention"),
         "selective recomputation redoes the core attention, which fused attention never stores",
         lambda m, s, dt, k: (np.asarray(k["recompute"]) == Recompute.ATTN)
         & np.asarray(k["flash_attention"]).astype(bool),
         lambda m, s, st: f"recompute={st.recompute}, flash_attention={st.flash_attention}", "divisibility"),
    Rule("overlap_needs_tp", ("tp", "tp_overlap"), "TP overlap needs tp > 1",
         lambda m, s, dt, k: (np.asarray(k["tp_overlap"]) > TpOverlap.NONE) & (np.asarray(k["tp"]) == 1),
         lambda m, s, st: f"tp_overlap={st.tp_overlap}, tp={st.tp}", "divisibility"),
    Rule("ring_needs_p2p", ("tp_overlap", "tp_comm"), "ring overlap needs tp_comm p2p_rs_ag",
         lambda m, s, dt, k: (np.asarray(k["tp_overlap"]) == TpOverlap.RING)
         & (np.asarray(k["tp_comm"]) != TpComm.P2P_RS_AG),
         lambda m, s, st: f"tp_overlap={st.tp_overlap}, tp_comm={st.tp_comm}", "divisibility"),
    Rule("network_tier", tuple(t.name for t in TIERS), "network tier index out of range",
         lambda m, s, dt, k: ~tiers_in_range(s, k),
         lambda m, s, st: ", ".join(f"{t.name}={getattr(st, t.name)}" for t in TIERS)
         + f", tiers={len(s.networks)}", "nvlink_domain"),
    Rule("network_size", tuple(t.name for t in TIERS) + tuple(t.places for t in TIERS),
         "groups placed on a network tier must fit it (and tile it when it must be filled)",
         lambda m, s, dt, k: tiers_in_range(s, k) & placement_violation(s, k),
         lambda m, s, st: "tiers " + ", ".join(
             f"{n.name} (size {n.size}{', must be filled' if n.must_fill else ''})" for n in s.networks)
         + "; " + ", ".join(f"{t.places}={getattr(st, t.places)} on {getattr(st, t.name)}" for t in TIERS),
         "nvlink_domain"),
    Rule("datatype", (), "the system has no rate for this datatype",
         lambda m, s, dt, k: np.asarray(not s.supports(dt)),
         lambda m, s, st: f"datatype={st.datatype}, system rates for {', '.join(s.matrix_tflops)}", "datatype"),
    Rule("offload_tier", ("offload_weights", "offload_activations", "offload_optimizer"),
         "offload needs a second memory tier (offload gib and gbps > 0)",
         lambda m, s, dt, k: (np.asarray(k["offload_weights"]).astype(bool)
                              | np.asarray(k["offload_activations"]).astype(bool)
                              | np.asarray(k["offload_optimizer"]).astype(bool))
         & ((s.offload_gib <= 0) | (s.offload_gbps <= 0)),
         lambda m, s, st: f"offload gib={s.offload_gib:g}, gbps={s.offload_gbps:g}", "offload_capacity"),
)

# The planner's option `even_stages` adds this rule (the space the study counted).
EVEN_STAGES = Rule("pp_divides_blocks", ("pp",), "pp must divide the blocks (even stages asked for)",
                   lambda m, s, dt, k: _mod(m.blocks, k["pp"]) != 0,
                   lambda m, s, st: f"pp={st.pp}, blocks={m.blocks}", "divisibility")

BY_NAME = {r.name: r for r in RULES + (EVEN_STAGES,)}

# The two rules that need the memory model (checked in perf.evaluate_arrays).
CAPACITY = {
    "hbm_capacity": "memory per GPU must fit HBM",
    "offload_capacity": "offloaded memory must fit the offload tier",
}
TEXT = {**{r.name: r.text for r in RULES + (EVEN_STAGES,)}, **CAPACITY}


def check(model, system, datatype, k: dict, shape, rules=RULES) -> dict:
    """One boolean array per rule (`rule_<name>`), True where broken."""
    return {f"rule_{r.name}": np.broadcast_to(r.broken(model, system, datatype, k), shape)
            for r in rules}


def for_planning(even_stages: bool) -> tuple:
    """The rules a plan keeps: all, and pp dividing the blocks when asked."""
    return RULES + ((EVEN_STAGES,) if even_stages else ())
