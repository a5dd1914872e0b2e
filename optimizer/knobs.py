"""The strategy knobs, declared once.

Every knob of a parallel execution is one `Knob` record: its name, its kind
(integer, boolean, named choice, network tier), which level of the search it
belongs to, whether it can be pinned, which group a tier knob places, when it
matters at all, and a line saying what it means. Everything else is derived
from this table: the Strategy type (spec.py), the evaluator's inputs
(perf.py), pins and the space's levels (space.py), explain's pin groups, the
CLI help, sweep columns and the one-line strategy text.

Inside the model a knob is an integer code: booleans 0/1, named choices by
their IntEnum below (`Recompute.FULL`, never a bare 2), tiers as indices into
the system's networks (-1 the outermost, on input).

Levels of the search (see space.py):
  structure  what fixes the GPU split, the batch and the schedule
  group      what the memory per GPU depends on, beyond the structure
  member     what only the time depends on
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Callable

import numpy as np


class Recompute(IntEnum):
    NONE = 0     # keep every activation the backward needs
    ATTN = 1     # selective: redo the core attention (Korthikanti et al. 2022, sec. 5)
    FULL = 2     # keep each block's input, redo its whole forward in the backward


class TpComm(IntEnum):
    AR = 0           # all-reduce after the projection and the second MLP matrix
    RS_AG = 1        # sequence parallelism: reduce-scatter + all-gather
    P2P_RS_AG = 2    # the same, built from point-to-point sends (ring overlap needs it)


class CpComm(IntEnum):
    RING = 0         # K and V passed rank to rank while the attention computes (ring attention)
    ALLGATHER = 1    # K and V all-gathered before the attention, dK and dV reduce-scattered after


class TpOverlap(IntEnum):
    NONE = 0     # TP collectives run alone
    RING = 1     # hidden behind the matmul, one chunk per TP rank
    PIPE = 2     # hidden behind the matmul, split in a fixed number of chunks


LEVELS = ("structure", "group", "member")


@dataclass(frozen=True)
class Knob:
    """One strategy knob. `kind` is 'int', 'bool', 'enum' or 'tier';
    `default` None means the knob is required in a Strategy. A tier knob
    places the group of the size knob `places`. `matters` says, from the
    codes of the knobs `matters_reads`, where the knob has any effect;
    elsewhere the space holds it at its canonical code (`idle`).
    `memory_view`, for a member knob, is the part of its value that memory
    reads (its group key). `block`: the per-block terms read it (the search
    tabulates those terms over these knobs alone). `values`: the whole
    domain of a small integer knob (empty: any positive integer, or a
    domain the space derives, as shard's from dp)."""

    name: str
    kind: str
    level: str
    meaning: str
    default: object = None
    enum: type | None = None
    places: str | None = None
    pinnable: bool = True
    matters: Callable | None = None
    matters_reads: tuple = ()
    idle: int = 0
    memory_view: Callable | None = None
    block: bool = False
    values: tuple = ()

    @property
    def choices(self) -> tuple:
        """The values a user writes: names for enums, True/False for
        booleans; empty for integers and tiers (any in range)."""
        if self.kind == "enum":
            return tuple(e.name.lower() for e in self.enum)
        if self.kind == "bool":
            return (False, True)
        return ()

    def code(self, value) -> int:
        """The model's integer code of a user value (already checked)."""
        if self.kind == "enum":
            return int(self.enum[value.upper()]) if isinstance(value, str) else int(self.enum(value))
        return int(value)

    def value(self, code):
        """The user value of a code."""
        code = int(code)
        if self.kind == "enum":
            return self.enum(code).name.lower()
        if self.kind == "bool":
            return bool(code)
        return code

    def help(self) -> str:
        vals = ("|".join(self.choices) if self.kind == "enum"
                else "|".join(map(str, self.values)) if self.values
                else {"bool": "true|false", "tier": "tier index", "int": "integer"}[self.kind])
        return f"{self.name} ({vals}): {self.meaning}"


def _replicated(k):
    """Where the weights have more than one replica: dp x cp GPUs hold the
    same weights (context parallelism replicates them too) and reduce their
    gradients."""
    return np.asarray(k["dp"]) * np.asarray(k["cp"]) > 1


def _sharded(k):
    """Where a hybrid sharding group can exist: ZeRO 1 or more over more
    than one DP replica (the group is a divisor of dp)."""
    return (np.asarray(k["dp"]) > 1) & (np.asarray(k["zero"]) >= 1)


def _cp_gt_1(k):
    return np.asarray(k["cp"]) > 1


class Zero(IntEnum):
    """ZeRO stages (Rajbhandari et al. 2020): what is sharded over the DP
    sharding group (the knob `shard`)."""
    NONE = 0         # gradients all-reduced over DP; everything replicated
    OPTIMIZER = 1    # optimizer state (Megatron's distributed optimizer)
    GRADIENTS = 2    # ... and the gradients, reduce-scattered as they are produced
    WEIGHTS = 3      # ... and the weights, gathered block by block (FSDP)


KNOBS: tuple[Knob, ...] = (
    Knob("tp", "int", "structure", "tensor-parallel degree: each block's matrices split over tp GPUs",
         block=True),
    Knob("cp", "int", "structure", "context-parallel degree: each sequence split over cp GPUs (two chunks "
         "each, the causal load balanced), K and V exchanged for the attention", default=1, block=True),
    Knob("pp", "int", "structure", "pipeline-parallel degree: the blocks split into pp stages"),
    Knob("dp", "int", "structure", "data-parallel degree: replicas that split the batch"),
    Knob("batch", "int", "structure", "global batch in sequences"),
    Knob("microbatch", "int", "structure", "sequences per microbatch on one replica", default=1, block=True),
    Knob("interleave", "int", "structure",
         "virtual stages per GPU (interleaved 1F1B schedule); 1 is the plain schedule", default=1),
    Knob("recompute", "enum", "group", "activation recomputation: none, attn (core attention only) "
         "or full (each block's forward again)", default="none", enum=Recompute, block=True),
    Knob("tp_comm", "enum", "member", "TP communication: ar (all-reduce), rs_ag (sequence parallel: "
         "reduce-scatter + all-gather) or p2p_rs_ag (the same from point-to-point sends)",
         default="ar", enum=TpComm, memory_view=lambda c: np.asarray(c) > TpComm.AR, block=True),
    Knob("tp_overlap", "enum", "member", "TP communication hidden behind the matmuls: none, ring "
         "(a chunk per rank, needs p2p_rs_ag) or pipe (fixed chunks); costs the network's processor "
         "share", default="none", enum=TpOverlap, block=True),
    Knob("ag_redo", "bool", "group", "with sequence parallelism, gather the inputs of qkv and mlp1 "
         "again for the weight gradients instead of keeping them whole", default=False,
         matters=lambda k: np.asarray(k["tp_comm"]) > TpComm.AR, matters_reads=("tp_comm",), block=True),
    Knob("cp_comm", "enum", "group", "context parallelism's K and V exchange: ring (passed to the "
         "next rank while the attention computes, overlapped) or allgather (gathered before the attention "
         "and kept for the backward, dK and dV reduce-scattered after; not overlapped)", default="ring",
         enum=CpComm, matters=_cp_gt_1, matters_reads=("cp",), block=True),
    Knob("dp_overlap", "bool", "member", "DP gradient reduction hidden behind the last backward",
         default=False, matters=_replicated, matters_reads=("dp", "cp")),
    Knob("zero", "int", "group", "ZeRO stage over the dp x cp GPUs that replicate the weights: 0 "
         "gradients all-reduced; 1 optimizer state sharded over the sharding group (gradients reduce-scattered, weights all-gathered after the "
         "step); 2 also the gradients; 3 also the weights, each block's gathered before its forward "
         "and its backward (prefetched behind the previous block), gradients reduce-scattered per "
         "microbatch (FSDP)", default=0, values=tuple(int(z) for z in Zero), matters=_replicated,
         matters_reads=("dp", "cp")),
    Knob("shard", "int", "group", "sharding group of ZeRO: 0 the whole DP group, else its size, a "
         "divisor of dp strictly between 1 and dp (times cp: the group spans the CP ranks); the dp/shard groups replicate and all-reduce the "
         "sharded gradients once per batch (hybrid sharding, HSDP)", default=0, matters=_sharded,
         matters_reads=("dp", "zero")),
    Knob("fused_activation", "bool", "group", "activation function fused into the first MLP matmul "
         "(its output recomputed, not stored)", default=False, block=True),
    Knob("flash_attention", "bool", "group", "fused attention (FlashAttention): no sequence x sequence "
         "tensors stored; the backward recomputes the scores inside the kernel", default=False, block=True),
    Knob("offload_weights", "bool", "group", "weights and their gradients kept in the offload tier, "
         "two blocks' worth in HBM", default=False),
    Knob("offload_activations", "bool", "group", "stored activations kept in the offload tier",
         default=False),
    Knob("offload_optimizer", "bool", "group", "optimizer state kept in the offload tier and "
         "streamed through the step", default=False),
    Knob("tp_net", "tier", "member", "network tier of the TP groups (0 = NVLink)", default=0,
         places="tp", matters=lambda k: np.asarray(k["tp"]) > 1, matters_reads=("tp",), block=True),
    Knob("cp_net", "tier", "member", "network tier of the CP groups (0 = NVLink)", default=0,
         places="cp", matters=_cp_gt_1, matters_reads=("cp",), block=True),
    Knob("pp_net", "tier", "member", "network tier of the pipeline sends (-1 = outermost)", default=-1,
         places="pp", matters=lambda k: np.asarray(k["pp"]) > 1, matters_reads=("pp",)),
    Knob("dp_net", "tier", "member", "network tier of the DP groups (-1 = outermost)", default=-1,
         places="dp", matters=lambda k: np.asarray(k["dp"]) > 1, matters_reads=("dp",)),
)

BY_NAME = {k.name: k for k in KNOBS}
NAMES = tuple(k.name for k in KNOBS)
PINNABLE = tuple(k.name for k in KNOBS if k.pinnable)
TIERS = tuple(k for k in KNOBS if k.kind == "tier")


BLOCK = tuple(k.name for k in KNOBS if k.block)

# Names accepted on input only: alias -> (knob, {alias value: knob value}).
# optimizer_sharding was the ZeRO-1 flag before ZeRO had stages.
ALIASES = {"optimizer_sharding": ("zero", {False: 0, True: 1})}


def at_level(level: str) -> tuple[Knob, ...]:
    return tuple(k for k in KNOBS if k.level == level)


def codes(knobs: dict) -> dict:
    """Knob values (names, booleans, ints, or arrays of codes) as arrays of
    integer codes, every knob present."""
    out = {}
    for k in KNOBS:
        v = knobs[k.name]
        if k.kind == "enum" and isinstance(v, str):
            v = k.code(v)
        out[k.name] = np.asarray(v)
    return out


def canonical(knobs: dict) -> dict:
    """Codes with every knob that has no effect held at its idle code (a
    group of one GPU on tier 0, ag_redo off without sequence parallelism,
    DP options off without replicas, no sharding group without ZeRO, CP
    options off with cp = 1): two strategies the model cannot tell apart
    become one."""
    k = codes(knobs)
    shape = np.broadcast(*k.values()).shape
    out = {}
    for knob in KNOBS:
        v = np.broadcast_to(k[knob.name], shape)
        out[knob.name] = v if knob.matters is None else np.where(knob.matters(k), v, knob.idle)
    return out


def describe(strategy) -> str:
    """A strategy on one line: the structure, then every knob away from its
    default (booleans by name), tiers as tp/cp/pp/dp@tier."""
    d = strategy if isinstance(strategy, dict) else strategy.to_dict()
    parts = [f"{k.name}={d[k.name]}" for k in at_level("structure")]
    for k in KNOBS:
        if k.level == "structure" or k.kind == "tier" or d[k.name] == k.default:
            continue
        parts.append(k.name if k.kind == "bool" else f"{k.name}={d[k.name]}")
    parts.append("nets " + "/".join(t.places for t in TIERS) + "="
                 + "/".join(str(d[t.name]) for t in TIERS))
    return " ".join(parts)


def glossary() -> str:
    """Every knob with its values and meaning, for --help and the README."""
    return "\n".join("  " + k.help() for k in KNOBS)
