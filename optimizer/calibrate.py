"""Calibration: a system's efficiency numbers fitted to measured runs, and
the model checked against runs, in or out of sample.

A runs file lists benchmark jobs on one cluster (see `load_runs`): a model,
a GPU count, a datatype, the knobs that were used (`pin`; the rest the
optimizer chooses, as it would for the user) and one measurement. The fit
moves a few global numbers of the system, never one per run:

  matrix   the matrix efficiency curve, eff(x) = top * x / (x + half) for an
           operation of x GFLOP (a fixed overhead of half / (top * peak) per
           matrix operation), sampled at MATRIX_SIZES_GFLOP. The System has
           one matrix curve for all datatypes, so runs in several datatypes
           share it.
  hbm      the HBM efficiency curve, its shape kept, scaled by one factor.
  network  each network tier's efficiency.
  overlap  each tier's processor share (what overlapped collectives cost).

A group is free when the runs inform it (some run's time depends on it) or
when `fit` names it. The loss is least squares on relative errors of
seconds per batch (scipy.optimize.least_squares). The predicted time of a
run is the time of the best plan under the candidate system, which changes
with the parameters; the fit alternates: plan every run, fit the numbers
with those strategies fixed (perf.evaluate_arrays, fast), plan again, until
the strategies stop changing (at most `max_rounds`). Leave-one-out: each run
is predicted by a fit that never saw it.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Mapping

import numpy as np
import yaml

from . import knobs as K
from . import perf
from .errors import ConfigError, OptimizerError, one_line
from .evaluate import Report, strategy_knobs
from .space import normalise_pins
from .spec import (DATATYPES, MAX_GPUS, Model, Strategy, System, _Reader, load_model, load_system,
                   preset_path, read_yaml_mapping)

MEASUREMENTS = ("seconds_per_batch", "tokens_per_s_per_gpu", "tflops_per_gpu")
FIT_GROUPS = ("matrix", "hbm", "network", "overlap")
# where the fitted matrix curve is sampled: four points a decade, 0.01 to
# 100,000 GFLOP per operation (log-linear interpolation between them stays
# within 0.5% of the saturating form)
MATRIX_SIZES_GFLOP = tuple(float(f"{10 ** (k / 4):.6g}") for k in range(-8, 21))
MAX_ROUNDS = 5
SIGNIFICANT = 6          # digits kept of every fitted number written out
INFORMED = 1e-9          # a relative change of a run's time below this: the parameter does not matter

SUITES = {"selene": "selene_a100.yaml", "h100-core": "h100_megatron_core.yaml",
          "h100-bridge": "h100_bridge_dense.yaml"}
FILE_KEYS = ("name", "description", "source", "system", "defaults", "runs")
DEFAULT_KEYS = ("model", "gpus", "datatype", "batch", "pin", "source")
RUN_KEYS = ("name",) + DEFAULT_KEYS + MEASUREMENTS


# ------------------------------------------------------------------ runs

def megatron_flops(model: Model, batch: int) -> float:
    """FLOPs of one global batch as Megatron-LM counts them for its
    throughput figures (Narayanan et al., SC'21, "Efficient Large-Scale
    Language Model Training on GPU Clusters Using Megatron-LM", appendix,
    without the recomputation term; the formula in the header of
    optimizer/data/h100_public.yaml):

        F = 72 * gbs * seq * layers * hidden^2
              * (1 + seq / (6 * hidden) + vocab / (12 * layers * hidden))

    forward and backward of the blocks (feedforward 4 x hidden, attention
    without the causal mask) and of the logits; no recomputation."""
    b, s, L, h, V = (float(x) for x in (batch, model.seq_len, model.blocks, model.hidden, model.vocab))
    return 72.0 * b * s * L * h * h * (1.0 + s / (6.0 * h) + V / (12.0 * L * h))


@dataclass(frozen=True)
class Run:
    """One measured job: `measured_s` seconds per global batch of `batch`
    sequences on `gpus` GPUs, with the knobs in `pin` fixed (batch too)."""

    name: str
    model: Model
    gpus: int
    datatype: str
    batch: int
    pin: Mapping
    measured_s: float
    measurement: tuple          # (key, value) as given
    source: str = ""
    index: int = 0              # position in the runs file

    def plan_pins(self) -> dict:
        return {**self.pin, "batch": self.batch}


@dataclass(frozen=True)
class RunSet:
    """The runs of one file, where they came from and the system they name."""

    name: str
    runs: tuple
    source: str
    sha256: str
    system: str | None = None
    description: str = ""


def suite_path(name: str) -> Path:
    """The file of a built-in suite (`SUITES`)."""
    if name not in SUITES:
        raise ConfigError("--suite", "suite", name, f"one of {', '.join(SUITES)}")
    return Path(str(resources.files("optimizer.data").joinpath("runs", SUITES[name])))


def _resolve(spec, base: Path):
    """A model or system given as a path is relative to the runs file."""
    if isinstance(spec, str) and (spec.endswith((".yaml", ".yml")) or "/" in spec):
        path = Path(spec)
        return str(path if path.is_absolute() else (base / path).resolve())
    return spec


def _reraise(source, key, load):
    try:
        return load()
    except ConfigError as e:
        raise ConfigError(source, key, e.value,
                          f"{e.expected} (from {e.source or 'the entry'}, key '{e.key}')") from None


def _seconds(run_key: str, value: float, model: Model, batch: int, gpus: int) -> float:
    if run_key == "seconds_per_batch":
        return value
    if run_key == "tokens_per_s_per_gpu":
        return batch * model.seq_len / (value * gpus)
    return megatron_flops(model, batch) / (value * 1e12 * gpus)


def _run(i: int, raw, defaults: dict, source: str, base: Path) -> Run:
    where = f"runs[{i}]"
    if not isinstance(raw, dict):
        raise ConfigError(source, where, raw, "a mapping of run keys")
    data = {**defaults, **raw}
    if isinstance(defaults.get("pin"), dict) and isinstance(raw.get("pin"), dict):
        data["pin"] = {**defaults["pin"], **raw["pin"]}
    if isinstance(defaults.get("model"), dict) and isinstance(raw.get("model"), dict):
        data["model"] = {**defaults["model"], **raw["model"]}
    r = _Reader(data, source, f"{where}.")
    name = data.get("name", f"run {i}")
    r.used.add("name")
    if isinstance(name, bool) or not isinstance(name, (str, int)):
        raise ConfigError(source, f"{where}.name", name, "a name (text)")
    name = str(name)
    if "model" not in data:
        raise ConfigError(source, f"{where}.model", "<missing>",
                          "a model preset name, a YAML path (relative to the runs file) or a mapping")
    spec = data["model"]
    r.used.add("model")
    if not isinstance(spec, (str, dict)):
        raise ConfigError(source, f"{where}.model", spec,
                          "a model preset name, a YAML path (relative to the runs file) or a mapping")
    model = _reraise(source, f"{where}.model", lambda: load_model(_resolve(spec, base)))
    gpus = r.get("gpus", int, low=1, high=MAX_GPUS)
    batch = r.get("batch", int, low=1)
    datatype = r.get("datatype", str, choices=DATATYPES)
    run_source = r.get("source", str, default="")
    pin = dict(r.get("pin", dict, default={}))
    _reraise(source, f"{where}.pin", lambda: normalise_pins(pin, "pin"))
    if "batch" in pin:
        if pin.pop("batch") != batch:
            raise ConfigError(source, f"{where}.pin.batch", data["pin"]["batch"],
                              f"the run's batch ({batch}), or no pin: the batch is pinned anyway")
    single = {k: pin[k] for k in ("tp", "cp", "pp", "dp") if k in pin and not isinstance(pin[k], (list, tuple))}
    prod = math.prod(single.values())
    if len(single) == 4 and prod != gpus:
        raise ConfigError(source, f"{where}.gpus", gpus,
                          "tp x cp x pp x dp of the pins (" + " x ".join(str(v) for v in single.values())
                          + f" = {prod})")
    if gpus % prod:
        raise ConfigError(source, f"{where}.gpus", gpus,
                          f"a multiple of the pinned {' x '.join(single)} ({prod}): the GPUs must split "
                          "into tp x cp x pp x dp")
    if "dp" in single and batch % single["dp"]:
        raise ConfigError(source, f"{where}.batch", batch, f"a multiple of the pinned dp ({single['dp']})")
    given = [k for k in MEASUREMENTS if k in data]
    if not given:
        raise ConfigError(source, f"{where}.seconds_per_batch", "<missing>",
                          "one measurement per run: seconds_per_batch, tokens_per_s_per_gpu or tflops_per_gpu")
    if len(given) > 1:
        raise ConfigError(source, f"{where}.{given[1]}", data[given[1]],
                          f"one measurement per run (also given: {given[0]})")
    value = r.get(given[0], float, positive=True)
    r.done()
    return Run(name=name, model=model, gpus=gpus, datatype=datatype, batch=batch, pin=pin,
               measured_s=_seconds(given[0], value, model, batch, gpus), measurement=(given[0], value),
               source=run_source, index=i)


def load_runs(x) -> RunSet:
    """A RunSet from a runs YAML path, a built-in suite name (`SUITES`) or a
    mapping. The file:

        name: my-cluster             # optional
        system: h100-80g-nvl8        # optional: the system these runs were on
        defaults: {datatype: bf16, pin: {flash_attention: true}}   # optional, merged into each run
        runs:
          - name: 7B on 64             # optional
            model: llama3-8B           # preset, YAML path (relative to this file) or a mapping
            gpus: 64
            datatype: bf16
            batch: 512                 # the global batch, pinned
            pin: {tp: 2, pp: 1, dp: 32}    # the knobs used; the rest the optimizer chooses
            tokens_per_s_per_gpu: 9000     # or seconds_per_batch, or tflops_per_gpu (Megatron's count)
            source: job 1234           # optional

    Every run is checked on load; a mistake is a ConfigError naming the
    file and the key (runs[3].gpus)."""
    if isinstance(x, RunSet):
        return x
    if isinstance(x, Mapping):
        data, source, base = dict(x), "<runs dict>", Path.cwd()
        digest = hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()
    elif isinstance(x, (str, Path)):
        path = Path(x)
        if isinstance(x, str) and x in SUITES and not path.exists():
            path = suite_path(x)
        data, source, base = read_yaml_mapping(path, "runs"), str(path), path.resolve().parent
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    else:
        raise ConfigError(None, "runs", x, "a runs YAML path, a suite name or a mapping")
    for k in data:
        if k not in FILE_KEYS:
            raise ConfigError(source, k, data[k], f"no such key (known: {', '.join(FILE_KEYS)})")
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise ConfigError(source, "defaults", defaults, f"a mapping of {', '.join(DEFAULT_KEYS)}")
    for k in defaults:
        if k not in DEFAULT_KEYS:
            raise ConfigError(source, f"defaults.{k}", defaults[k],
                              f"one of {', '.join(DEFAULT_KEYS)} (measurements belong to each run)")
    raw = data.get("runs")
    if not isinstance(raw, list) or not raw:
        raise ConfigError(source, "runs", "<missing>" if raw is None else raw, "a non-empty list of runs")
    runs = tuple(_run(i, r, defaults, source, base) for i, r in enumerate(raw))
    system = data.get("system")
    if system is not None and not isinstance(system, str):
        raise ConfigError(source, "system", system, "a system preset name or a YAML path")
    for k in ("name", "description", "source"):
        if k in data and not isinstance(data[k], str):
            raise ConfigError(source, k, data[k], "text")
    name = data.get("name") or (Path(source).stem if not source.startswith("<") else "runs")
    return RunSet(name=name, runs=runs, source=source, sha256=digest,
                  system=_resolve(system, base) if system else None,
                  description=data.get("description", ""))


# ------------------------------------------------------------ prediction

def plan_run(run: Run, system: System, source: str = "runs") -> Report:
    """The optimizer's best strategy for a run under `system` (its pins
    and batch fixed), as a Report; a run nothing fits is a ConfigError."""
    from .search import plan
    where = f"runs[{run.index}]"
    res = _reraise(source, f"{where}.pin", lambda: plan(
        run.model, system, run.gpus, max_batch=run.batch, datatype=run.datatype, pin=run.plan_pins()))
    if res.best is None:
        why = res.explanation.get("summary", "") if res.explanation else ""
        raise ConfigError(source, where, run.name,
                          f"a run the model can place on {system.name} (no strategy fits: {one_line(why, 200)})")
    return res.best


def time_of(run: Run, system: System, strategy: Strategy) -> float:
    """Seconds per batch of one fixed strategy (the model, no search)."""
    r = perf.evaluate_arrays(run.model, system, strategy.datatype, strategy_knobs(strategy))
    return float(np.asarray(r["time_s"]))


def _error_pct(predicted: float, measured: float) -> float:
    return 100.0 * (predicted - measured) / measured


def _stats(errors) -> dict:
    a = [abs(e) for e in errors]
    return {"mean_abs_error_pct": float(np.mean(a)) if a else 0.0,
            "max_abs_error_pct": float(np.max(a)) if a else 0.0}


def validate_runs(runs, system=None) -> dict:
    """Each run's measured and predicted seconds per batch (the best plan
    under `system`; default the system the runs file names), the error, the
    knobs chosen; mean and max |error|."""
    rs = load_runs(runs)
    system = _system_for(rs, system)
    rows = []
    for run in rs.runs:
        rep = plan_run(run, system, rs.source)
        rows.append({"name": run.name, "model": run.model.name, "gpus": run.gpus, "datatype": run.datatype,
                     "batch": run.batch, "measurement": dict([run.measurement]), "measured_s": run.measured_s,
                     "predicted_s": rep.time_s, "error_pct": _error_pct(rep.time_s, run.measured_s),
                     "mfu": rep.mfu, "strategy": rep.strategy.to_dict(), "knobs": K.describe(rep.strategy)})
    return {"runs": rs.name, "source": rs.source, "system": system.name, "rows": rows,
            **_stats(r["error_pct"] for r in rows)}


def _system_for(rs: RunSet, system) -> System:
    if system is None:
        if rs.system is None:
            raise ConfigError(rs.source, "system", "<missing>",
                              "a system: give --system, or a `system:` key in the runs file")
        system = rs.system
    return _reraise(rs.source if system is rs.system else "--system", "system", lambda: load_system(system))


# ------------------------------------------------------------ parameters

@dataclass(frozen=True)
class Param:
    """One fitted number: its group (FIT_GROUPS), bounds, the network tier
    it belongs to, and whether the fit moves its logarithm."""

    name: str
    group: str
    low: float
    high: float
    tier: int | None = None
    log: bool = False


def _shown_path(source: str) -> str:
    """A runs file as written into a system file: relative to the package
    for the built-in suites, as given otherwise."""
    try:
        return str(Path(source).resolve().relative_to(Path(__file__).resolve().parent.parent))
    except ValueError:
        return source


def parameters(base: System) -> tuple:
    """Every number the fit can move, for this system."""
    names = [n.name for n in base.networks]
    label = [n if names.count(n) == 1 else f"networks[{i}]" for i, n in enumerate(names)]
    hbm_top = max(e for _, e in base.hbm_efficiency)
    # Bounds are physical priors, not tuning: a dense GEMM reaches at most
    # about 90% of the data-sheet peak; HBM and networks deliver at least a
    # third to two thirds of their nominal bandwidth; an overlapped
    # collective takes at most half the processor.
    out = [Param("matrix_top", "matrix", 0.3, 0.9),
           Param("matrix_half_gflop", "matrix", 1e-2, 1e4, log=True),
           Param("hbm_scale", "hbm", 0.6, 1.0 / hbm_top)]
    out += [Param(f"{label[i]}.efficiency", "network", 0.3, 1.0, tier=i) for i in range(len(names))]
    out += [Param(f"{label[i]}.processor_share", "overlap", 0.0, 0.5, tier=i) for i in range(len(names))]
    return tuple(out)


def matrix_curve(top: float, half_gflop: float) -> tuple:
    """eff(x) = top * x / (x + half) at MATRIX_SIZES_GFLOP."""
    return tuple((x, max(top * x / (x + half_gflop), 1e-6)) for x in MATRIX_SIZES_GFLOP)


def _fit_saturating(curve) -> tuple[float, float]:
    """(top, half) of the saturating form closest to a curve (least squares
    on efficiency, so clamped floor points weigh little): where the fit
    starts from."""
    optimize = _scipy_optimize()
    x = np.array([p[0] for p in curve])
    y = np.array([p[1] for p in curve])
    if len(x) < 2:
        return float(y[0]), 1.0

    def res(u):
        return u[0] * x / (x + np.exp(u[1])) - y

    sol = optimize.least_squares(res, [max(y.max(), 0.05), np.log(np.median(x))],
                                 bounds=([0.02, np.log(1e-4)], [1.0, np.log(1e5)]))
    return float(sol.x[0]), float(np.exp(sol.x[1]))


def initial_values(base: System) -> dict:
    """The base system's own values of every parameter."""
    top, half = _fit_saturating(base.matrix_efficiency)
    v = {"matrix_top": top, "matrix_half_gflop": half, "hbm_scale": 1.0}
    for p in parameters(base):
        if p.tier is not None:
            attr = "efficiency" if p.group == "network" else "processor_share"
            v[p.name] = getattr(base.networks[p.tier], attr)
    return v


def system_with(base: System, values: Mapping, free: tuple) -> System:
    """`base` with the free parameters set to `values`; a group none of
    whose parameters is free keeps the base's own numbers (its curve
    unsampled)."""
    by = {p.name: p for p in parameters(base)}
    groups = {by[n].group for n in free}
    changes = {}
    if "matrix" in groups:
        changes["matrix_efficiency"] = matrix_curve(values["matrix_top"], values["matrix_half_gflop"])
    if "hbm" in groups:
        s = values["hbm_scale"]
        changes["hbm_efficiency"] = tuple((x, min(1.0, e * s)) for x, e in base.hbm_efficiency)
    nets = list(base.networks)
    for n in free:
        p = by[n]
        if p.tier is not None:
            attr = "efficiency" if p.group == "network" else "processor_share"
            nets[p.tier] = dataclasses.replace(nets[p.tier], **{attr: float(values[n])})
    changes["networks"] = tuple(nets)
    return dataclasses.replace(base, **changes)


def _round(v: float) -> float:
    return float(f"{v:.{SIGNIFICANT}g}")


def _rounded_system(base: System, values: Mapping, free: tuple) -> System:
    """The system as written out: parameters and curve points rounded to
    SIGNIFICANT digits (its predictions are the ones reported)."""
    s = system_with(base, {k: _round(v) for k, v in values.items()}, free)
    return dataclasses.replace(
        s, matrix_efficiency=tuple((x, _round(e)) for x, e in s.matrix_efficiency),
        hbm_efficiency=tuple((x, _round(e)) for x, e in s.hbm_efficiency))


def _scipy_optimize():
    try:
        from scipy import optimize
    except ImportError:
        raise OptimizerError("calibration needs SciPy: pip install -e '.[calibrate]'") from None
    return optimize


# ------------------------------------------------------------------ fit

class _Problem:
    """Runs, the base system and the free parameters: residuals of fixed
    strategies, and the least-squares fit over them."""

    def __init__(self, runs: tuple, base: System, free: tuple, start: dict):
        self.runs, self.base, self.free, self.start = runs, base, free, start
        by = {p.name: p for p in parameters(base)}
        self.params = [by[n] for n in free]

    def to_x(self, values: Mapping) -> np.ndarray:
        x = []
        for p in self.params:
            v = min(max(values[p.name], p.low), p.high)
            x.append(math.log(v) if p.log else v)
        return np.array(x, dtype=float)

    def values(self, x) -> dict:
        v = dict(self.start)
        for p, xi in zip(self.params, x):
            v[p.name] = float(math.exp(xi) if p.log else xi)
        return v

    def at_bound(self, values) -> list:
        """The free parameters the fit left on a bound (the data would move
        them further: a sign the model, not the number, is off)."""
        return [p.name for p in self.params
                if math.isclose(values[p.name], p.low, rel_tol=1e-4, abs_tol=1e-9)
                or math.isclose(values[p.name], p.high, rel_tol=1e-4)]

    def bounds(self):
        lo = [math.log(p.low) if p.log else p.low for p in self.params]
        hi = [math.log(p.high) if p.log else p.high for p in self.params]
        return np.array(lo), np.array(hi)

    def system(self, values) -> System:
        return system_with(self.base, values, self.free)

    def residuals(self, values, runs, strategies) -> np.ndarray:
        s = self.system(values)
        return np.array([time_of(r, s, st) / r.measured_s - 1.0 for r, st in zip(runs, strategies)])

    def fit(self, values, runs, strategies) -> dict:
        """Least squares on relative errors with the strategies fixed."""
        if not self.params:
            return dict(values)
        optimize = _scipy_optimize()
        lo, hi = self.bounds()
        x0 = np.clip(self.to_x(values), lo, hi)
        sol = optimize.least_squares(lambda x: self.residuals(self.values(x), runs, strategies), x0,
                                     bounds=(lo, hi), x_scale="jac", diff_step=1e-6, max_nfev=200)
        return self.values(sol.x)


def informed(runs: tuple, base: System, values: Mapping, strategies: list) -> dict:
    """Per parameter, whether some run's time (with its strategy fixed)
    moves when the parameter moves by a tenth of its range."""
    out = {}
    for p in parameters(base):
        prob = _Problem(runs, base, (p.name,), values)
        ref = prob.residuals(values, runs, strategies)
        lo, hi = prob.bounds()
        x = prob.to_x(values)
        step = 0.1 * (hi - lo)
        moved = np.where(x + step <= hi, x + step, x - step)
        r = prob.residuals(prob.values(moved), runs, strategies)
        out[p.name] = bool(np.max(np.abs(r - ref)) > INFORMED)
    return out


def choose_free(runs: tuple, base: System, values: Mapping, strategies: list, fit=None,
                source="--fit") -> tuple[tuple, tuple]:
    """(free parameters, parameters not informed by the runs). `fit`: the
    groups asked for (None: every group the runs inform). A group asked for
    that no run informs, or as many free numbers as runs, is refused."""
    if fit is not None:
        groups = [g.strip() for g in (fit.split(",") if isinstance(fit, str) else fit) if g.strip()]
        for g in groups:
            if g not in FIT_GROUPS:
                raise ConfigError(source, "fit", g, f"groups among {', '.join(FIT_GROUPS)}")
        if not groups:
            raise ConfigError(source, "fit", fit, f"at least one of {', '.join(FIT_GROUPS)}")
    else:
        groups = list(FIT_GROUPS)
    inf = informed(runs, base, values, strategies)
    params = parameters(base)
    free = tuple(p.name for p in params if p.group in groups and inf[p.name])
    idle = tuple(p.name for p in params if p.group in groups and not inf[p.name])
    if fit is not None:
        for g in groups:
            if not any(p.group == g and inf[p.name] for p in params):
                raise ConfigError(source, "fit", g, "a group the runs inform (no run's time depends on "
                                  f"{', '.join(p.name for p in params if p.group == g)})")
    if len(free) >= len(runs):
        raise ConfigError(source, "fit", ",".join(groups),
                          f"fewer free numbers than runs: {len(free)} free ({', '.join(free)}) for "
                          f"{len(runs)} runs; fit fewer groups (--fit) or add runs")
    return free, idle


def alternate(prob: _Problem, runs: tuple, values: dict, strategies: list, max_rounds=MAX_ROUNDS,
              source="runs"):
    """Fit with strategies fixed, re-plan, until the strategies stop
    changing: (values, strategies planned under them, rounds, converged)."""
    rounds, converged = 0, False
    for rounds in range(1, max_rounds + 1):
        values = prob.fit(values, runs, strategies)
        s = prob.system(values)
        new = [plan_run(r, s, source).strategy for r in runs]
        converged = new == list(strategies)
        strategies = new
        if converged:
            break
    return values, strategies, rounds, converged


@dataclass
class Calibration:
    """What `calibrate` found: the fitted system (with provenance), the
    free and the uninformed parameters, per-run rows (before, after,
    leave-one-out) and the error summaries."""

    runs: RunSet
    base: System
    system: System
    free: tuple
    uninformed: tuple
    initial: dict
    fitted: dict
    rows: list
    errors: dict
    rounds: int
    converged: bool
    loo: list = field(default_factory=list)
    at_bound: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"runs": self.runs.name, "source": self.runs.source, "runs_sha256": self.runs.sha256,
                "base_system": self.base.name, "free": list(self.free),
                "uninformed": list(self.uninformed), "at_bound": list(self.at_bound),
                "bounds": {p.name: [p.low, p.high] for p in parameters(self.base) if p.name in self.free},
                "initial": {k: self.initial[k] for k in self.free},
                "fitted": {k: self.fitted[k] for k in self.free},
                "rounds": self.rounds, "converged": self.converged,
                "rows": self.rows, "errors": self.errors, "provenance": self.system.provenance}


def calibrate(runs, system=None, fit=None, max_rounds=MAX_ROUNDS, loo=True, name=None) -> Calibration:
    """Fit `system`'s efficiency numbers (FIT_GROUPS named in `fit`, default
    every one the runs inform) to the runs; report each run before (the base
    system), after (the fitted one) and left out (a fit without it)."""
    rs = load_runs(runs)
    base = _system_for(rs, system)
    runs_t = rs.runs
    start = initial_values(base)
    before = [plan_run(r, base, rs.source) for r in runs_t]
    # the fit starts from the base's strategies, the base's values where a
    # group stays fixed, and the sampled saturating form where it moves
    strategies0 = [rep.strategy for rep in before]
    free, idle = choose_free(runs_t, base, start, strategies0, fit)
    prob = _Problem(runs_t, base, free, start)
    values, _, rounds, converged = alternate(prob, runs_t, start, strategies0, max_rounds, rs.source)
    final = _rounded_system(base, values, free)
    after = [plan_run(r, final, rs.source) for r in runs_t]

    loo_rows = []
    if loo:
        for i, held in enumerate(runs_t):
            rest = runs_t[:i] + runs_t[i + 1:]
            rest_st = strategies0[:i] + strategies0[i + 1:]
            v, _, n, ok = alternate(prob, rest, start, rest_st, max_rounds, rs.source)
            rep = plan_run(held, prob.system(v), rs.source)
            loo_rows.append({"predicted_s": rep.time_s, "error_pct": _error_pct(rep.time_s, held.measured_s),
                             "knobs": K.describe(rep.strategy), "rounds": n, "converged": ok,
                             "fitted": {k: v[k] for k in free}})

    rows = []
    for i, (r, b, a) in enumerate(zip(runs_t, before, after)):
        row = {"name": r.name, "model": r.model.name, "gpus": r.gpus, "datatype": r.datatype, "batch": r.batch,
               "measurement": dict([r.measurement]), "measured_s": r.measured_s,
               "before_s": b.time_s, "before_error_pct": _error_pct(b.time_s, r.measured_s),
               "before_knobs": K.describe(b.strategy),
               "after_s": a.time_s, "after_error_pct": _error_pct(a.time_s, r.measured_s),
               "after_knobs": K.describe(a.strategy), "strategy": a.strategy.to_dict(), "mfu": a.mfu}
        if loo:
            row.update(loo_s=loo_rows[i]["predicted_s"], loo_error_pct=loo_rows[i]["error_pct"],
                       loo_knobs=loo_rows[i]["knobs"])
        rows.append(row)
    errors = {"before": _stats(r["before_error_pct"] for r in rows),
              "after": _stats(r["after_error_pct"] for r in rows)}
    if loo:
        errors["leave_one_out"] = _stats(r["loo_error_pct"] for r in rows)
    fitted = {k: _round(values[k]) for k in free}
    from . import __version__
    provenance = {
        "tool": "optimize calibrate",
        "optimizer_version": __version__,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "runs": rs.name,
        "runs_file": _shown_path(rs.source),
        "runs_sha256": rs.sha256,
        "run_count": len(runs_t),
        "base_system": base.name,
        "matrix_curve": ("efficiency = matrix_top * x / (x + matrix_half_gflop), x in GFLOP per "
                         "operation, one curve for every datatype" if "matrix_top" in free else "base, unchanged"),
        "parameters": fitted,
        "base_parameters": {k: _round(start[k]) for k in free},
        "not_informed": list(idle),
        "at_bound": prob.at_bound(values),
        "alternation": {"rounds": rounds, "strategies_stable": converged},
        "errors_pct": {k: {"mean": round(v["mean_abs_error_pct"], 3), "max": round(v["max_abs_error_pct"], 3)}
                       for k, v in errors.items()},
    }
    out_name = name or f"{base.name}-calibrated"
    fitted_system = dataclasses.replace(final, name=out_name, base=out_name, overrides=(), provenance=provenance)
    return Calibration(runs=rs, base=base, system=fitted_system, free=free, uninformed=idle,
                       initial={k: start[k] for k in parameters_names(base)},
                       fitted={k: values[k] for k in free}, rows=rows, errors=errors, rounds=rounds,
                       converged=converged, loo=loo_rows, at_bound=prob.at_bound(values))


def parameters_names(base: System) -> list:
    return [p.name for p in parameters(base)]


# --------------------------------------------------------------- output

def system_to_dict(s: System, description: str = "") -> dict:
    """A System as a system file's mapping (what load_system reads)."""
    def num(v):
        return int(v) if float(v).is_integer() else float(v)

    def curve(c):
        return [[num(x), num(e)] for x, e in c]

    out = {"name": s.name}
    if description:
        out["description"] = description
    out.update({
        "matrix_tflops": {k: num(v) for k, v in s.matrix_tflops.items()},
        "vector_tflops": {k: num(v) for k, v in s.vector_tflops.items()},
        "matrix_efficiency": curve(s.matrix_efficiency),
        "vector_efficiency": curve(s.vector_efficiency),
        "compute_memory_overlap": s.compute_memory_overlap,
        "hbm": {"gib": num(s.hbm_gib), "gbps": num(s.hbm_gbps), "efficiency": curve(s.hbm_efficiency)},
        "offload": {"gib": num(s.offload_gib),
                    "gbps": "unlimited" if math.isinf(s.offload_gbps) else num(s.offload_gbps)},
        "networks": [{"name": n.name, "size": n.size, "gbps": num(n.gbps), "efficiency": num(_round(n.efficiency)),
                      "latency_us": num(_round(n.latency_s * 1e6)), "must_fill": n.must_fill,
                      "processor_share": num(_round(n.processor_share))} for n in s.networks],
    })
    if s.provenance is not None:
        out["provenance"] = dict(s.provenance)
    return out


def check_out(path) -> Path:
    """A system file to write: a .yaml path in an existing directory, not a directory."""
    if path is None or (isinstance(path, str) and not path.strip()):
        raise ConfigError("calibrate", "--out", path, "a path for the new system file")
    path = Path(path)
    if path.suffix not in (".yaml", ".yml"):
        raise ConfigError("calibrate", "--out", str(path), "a path ending in .yaml or .yml")
    if path.is_dir() or (path.exists() and not path.is_file()):
        raise ConfigError("calibrate", "--out", str(path), "a regular file path, not a directory")
    if not path.parent.is_dir():
        raise ConfigError("calibrate", "--out", str(path), f"a file in an existing directory ({path.parent} is not one)")
    return path


def write_system(cal: Calibration, out) -> Path:
    """Write the fitted system file, named after the file (its stem), with
    a header saying where it came from; it loads with load_system."""
    path = check_out(out)
    s = dataclasses.replace(cal.system, name=path.stem, base=path.stem)
    e = cal.errors
    base_file = preset_path("systems", getattr(cal.base, "base", None) or cal.base.name)
    base_desc = read_yaml_mapping(base_file, "system").get("description", "") if base_file else ""
    desc = "; ".join(x for x in (str(base_desc).split("; calibrated")[0],
                                 f"calibrated against {len(cal.runs.runs)} runs of {cal.runs.name}") if x)
    header = [
        f"# Written by `optimize calibrate` from {_shown_path(cal.runs.source)} on {s.provenance['date']}",
        f"# (base system {cal.base.name}; see `provenance` below). Fitted: {', '.join(cal.free)}.",
        f"# Relative error of seconds per batch, mean / max |error|: before {e['before']['mean_abs_error_pct']:.2f}% / "
        f"{e['before']['max_abs_error_pct']:.2f}%, after {e['after']['mean_abs_error_pct']:.2f}% / "
        f"{e['after']['max_abs_error_pct']:.2f}%"
        + (f", leave-one-out {e['leave_one_out']['mean_abs_error_pct']:.2f}% / "
           f"{e['leave_one_out']['max_abs_error_pct']:.2f}%." if "leave_one_out" in e else "."),
    ]
    text = yaml.safe_dump(system_to_dict(s, desc), sort_keys=False, default_flow_style=None, width=120)
    path.write_text("\n".join(header) + "\n" + text)
    cal.system = s
    return path


__all__ = ["megatron_flops", "load_runs", "validate_runs", "calibrate", "write_system", "Calibration",
           "Run", "RunSet", "SUITES", "FIT_GROUPS", "suite_path", "system_to_dict"]
