"""One strategy through the analytical model: a readable report, or an
InfeasibleStrategy that names the broken rule and its numbers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import perf
from .errors import InfeasibleStrategy
from .spec import Model, Strategy, System, load_model, load_strategy, load_system

BREAKDOWN = ("forward", "backward", "recompute", "optimizer", "bubble",
             "tp_comm", "pp_comm", "dp_comm", "offload")
MEMORY = ("weights", "gradients", "optimizer", "activations", "checkpoints")


@dataclass(frozen=True)
class Report:
    """The model's answer for one strategy. Times in seconds per batch,
    memory in bytes per GPU (first pipeline stage)."""

    model: str
    system: str
    strategy: Strategy
    time_s: float
    samples_per_s: float
    tokens_per_s: float
    mfu: float
    hfu: float
    breakdown: dict
    memory: dict
    offload_gbps_required: float

    def to_dict(self) -> dict:
        return {"model": self.model, "system": self.system,
                "strategy": self.strategy.to_dict(), "time_s": self.time_s,
                "samples_per_s": self.samples_per_s, "tokens_per_s": self.tokens_per_s,
                "mfu": self.mfu, "hfu": self.hfu, "breakdown_s": dict(self.breakdown),
                "memory_bytes": dict(self.memory),
                "offload_gbps_required": self.offload_gbps_required}


def strategy_knobs(strategy: Strategy) -> dict:
    """A Strategy as the model's knob dict (scalars)."""
    return {k: getattr(strategy, k) for k in perf.KNOBS}


def report_from_arrays(model: Model, system: System, strategy: Strategy, r: dict, i=()) -> Report:
    """Read entry `i` of an evaluate_arrays result into a Report."""
    g = lambda name: float(np.asarray(r[name])[i])  # noqa: E731
    memory = {n: g(f"{n}_bytes") for n in MEMORY}
    memory["hbm_total"] = g("hbm_bytes")
    memory["offload_total"] = g("offload_bytes")
    return Report(model=model.name, system=system.name, strategy=strategy,
                  time_s=g("time_s"), samples_per_s=g("samples_per_s"),
                  tokens_per_s=g("tokens_per_s"), mfu=g("mfu"), hfu=g("hfu"),
                  breakdown={n: g(f"{n}_s") for n in BREAKDOWN}, memory=memory,
                  offload_gbps_required=g("offload_gbps_required"))


def _explain_rule(rule: str, model: Model, system: System, s: Strategy, r: dict) -> str:
    """The broken rule in words, with the numbers that break it."""
    gib = perf.GIB
    facts = {
        "rule_tp_divides_heads": f"tp={s.tp}, heads={model.heads}",
        "rule_tp_divides_hidden": f"tp={s.tp}, hidden={model.hidden}, feedforward={model.feedforward}",
        "rule_pp_divides_blocks": f"pp={s.pp}, blocks={model.blocks}",
        "rule_interleave_divides_stage": f"interleave={s.interleave}, blocks per stage={model.blocks / s.pp:g}",
        "rule_dp_divides_batch": f"dp={s.dp}, batch={s.batch}",
        "rule_microbatch_divides_local_batch": f"microbatch={s.microbatch}, local batch={s.batch / s.dp:g}",
        "rule_interleave_schedule": f"interleave={s.interleave}, pp={s.pp}, microbatches={s.batch // s.dp // s.microbatch}",
        "rule_sequence_split": f"tp={s.tp}, seq_len={model.seq_len}",
        "rule_overlap_needs_tp": f"tp_overlap={s.tp_overlap}, tp={s.tp}",
        "rule_ring_needs_p2p": f"tp_overlap={s.tp_overlap}, tp_comm={s.tp_comm}",
        "rule_network_tier": f"tp_net={s.tp_net}, pp_net={s.pp_net}, dp_net={s.dp_net}, "
                             f"tiers={len(system.networks)}",
        "rule_network_size": "tiers " + ", ".join(
            f"{n.name} (size {n.size}{', must be filled' if n.must_fill else ''})" for n in system.networks)
            + f"; tp={s.tp} on {s.tp_net}, pp={s.pp} on {s.pp_net}, dp={s.dp} on {s.dp_net}",
        "rule_datatype": f"datatype={s.datatype}, system rates for {', '.join(system.matrix_tflops)}",
        "rule_offload_tier": f"offload gib={system.offload_gib:g}, gbps={system.offload_gbps:g}",
        "rule_hbm_capacity": lambda: f"needs {float(r['hbm_bytes']) / gib:.2f} GiB per GPU, "
                                     f"HBM holds {system.hbm_gib:g} GiB",
        "rule_offload_capacity": lambda: f"needs {float(r['offload_bytes']) / gib:.2f} GiB per GPU, "
                                         f"offload tier holds {system.offload_gib:g} GiB",
    }[rule]
    return f"{perf.RULES[rule]} ({facts() if callable(facts) else facts})"


def evaluate(model, system, strategy) -> Report:
    """The analytical model for one strategy. `model` and `system` accept a
    preset name, a YAML path, a dict or a loaded object; `strategy` a
    Strategy, a dict or a YAML path. Raises InfeasibleStrategy if the
    strategy breaks a rule."""
    model, system, strategy = load_model(model), load_system(system), load_strategy(strategy)
    r = perf.evaluate_arrays(model, system, strategy.datatype, strategy_knobs(strategy))
    for rule in perf.RULES:
        if rule in r and bool(np.asarray(r[rule])):
            raise InfeasibleStrategy(rule.removeprefix("rule_"), _explain_rule(rule, model, system, strategy, r))
    return report_from_arrays(model, system, strategy, r)
