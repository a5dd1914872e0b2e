"""One strategy through the analytical model: a readable report, or an
InfeasibleStrategy that names the broken rule and its numbers."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import perf, rules
from .errors import InfeasibleStrategy
from .spec import Model, Strategy, System, load_model, load_strategy, load_system

BREAKDOWN = ("forward", "backward", "recompute", "optimizer", "bubble",
             "tp_comm", "cp_comm", "pp_comm", "dp_comm", "zero3", "offload")
MEMORY = ("weights", "gradients", "optimizer", "activations", "checkpoints")


def plain_json(x):
    """`x` as plain, strict-JSON values (RFC 8259): objects with to_dict()
    and NumPy scalars converted, tuples and sets as lists, non-finite
    floats (an infinite bound or gap) as None."""
    if isinstance(x, bool) or x is None or isinstance(x, (int, str)):
        return x
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): plain_json(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, set, frozenset)):
        return [plain_json(v) for v in x]
    if hasattr(x, "to_dict"):
        return plain_json(x.to_dict())
    if hasattr(x, "item"):
        return plain_json(x.item())
    raise TypeError(f"not serialisable: {type(x).__name__}")


def fmt_time(x: float) -> str:
    """Seconds as s, ms or us, with the precision a reader needs."""
    if not math.isfinite(x):
        return str(x)
    if x >= 1:
        return f"{x:.3f} s"
    if x >= 1e-3:
        return f"{x * 1e3:.2f} ms"
    return f"{x * 1e6:.1f} us"


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
    tokens_per_s_per_gpu: float = 0.0

    def to_dict(self) -> dict:
        """Plain, strict-JSON values; memory in bytes and in GiB."""
        return plain_json({
            "model": self.model, "system": self.system,
            "strategy": self.strategy.to_dict(), "time_s": self.time_s,
            "samples_per_s": self.samples_per_s, "tokens_per_s": self.tokens_per_s,
            "tokens_per_s_per_gpu": self.tokens_per_s_per_gpu, "mfu": self.mfu, "hfu": self.hfu,
            "breakdown_s": dict(self.breakdown),
            "memory_bytes": dict(self.memory),
            "memory_gib": {k: v / perf.GIB for k, v in self.memory.items()},
            "offload_gbps_required": self.offload_gbps_required})

    def summary(self, system: System | None = None) -> str:
        """The report as the CLI prints it; with the `system`, memory is
        shown against its capacities."""
        from .knobs import describe
        lines = [f"{self.model} on {self.system}",
                 f"strategy  {describe(self.strategy)} datatype={self.strategy.datatype}",
                 f"time per batch {fmt_time(self.time_s)}   samples/s {self.samples_per_s:,.2f}   "
                 f"tokens/s {self.tokens_per_s:,.0f} ({self.tokens_per_s_per_gpu:,.0f} per GPU)   "
                 f"MFU {100 * self.mfu:.1f}%   HFU {100 * self.hfu:.1f}%",
                 "time breakdown"]
        for k in BREAKDOWN:
            v = self.breakdown[k]
            if v > 0:
                lines.append(f"  {k:<10} {fmt_time(v):>12}  {100 * v / self.time_s:5.1f}%")
        lines.append("memory per GPU (GiB)")
        for k in MEMORY:
            lines.append(f"  {k:<12} {self.memory[k] / perf.GIB:10.2f}")
        hbm_cap = f" of {system.hbm_gib:g}" if system is not None else ""
        lines.append(f"  {'HBM total':<12} {self.memory['hbm_total'] / perf.GIB:10.2f}{hbm_cap}")
        if self.memory["offload_total"] > 0:
            off_cap = f" of {system.offload_gib:g}" if system is not None else ""
            lines.append(f"  {'offload':<12} {self.memory['offload_total'] / perf.GIB:10.2f}{off_cap}"
                         f"   needs {self.offload_gbps_required:.1f} GB/s per direction")
        return "\n".join(lines)


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
                  offload_gbps_required=g("offload_gbps_required"),
                  tokens_per_s_per_gpu=g("tokens_per_s_per_gpu"))


def _explain_rule(rule: str, model: Model, system: System, s: Strategy, r: dict) -> str:
    """The broken rule in words, with the numbers that break it."""
    name = rule.removeprefix("rule_")
    if name == "hbm_capacity":
        facts = f"needs {float(r['hbm_bytes']) / perf.GIB:.2f} GiB per GPU, HBM holds {system.hbm_gib:g} GiB"
    elif name == "offload_capacity":
        facts = (f"needs {float(r['offload_bytes']) / perf.GIB:.2f} GiB per GPU, "
                 f"offload tier holds {system.offload_gib:g} GiB")
    else:
        facts = rules.BY_NAME[name].facts(model, system, s)
    return f"{perf.RULES[rule]} ({facts})"


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
