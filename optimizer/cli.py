"""The `optimize` command.

    optimize --model 1T --gpus 16384            best strategy, proven (plan)
    optimize evaluate --model M --system S --set tp=8 --set pp=64 ...
    optimize sweep grid.yaml --csv grid.csv     plan every point of a grid, resumable
    optimize validate [RUNS.yaml | --suite S]   the model against Megatron on Selene, or against runs
    optimize calibrate RUNS.yaml --out NEW.yaml fit a system's efficiency numbers to measured runs
    optimize list [models|systems] [--json]     the presets, with their sizes
    optimize --version

Exit codes: 0 success; 1 an answer that is "no" (infeasible problem or
strategy, explained); 2 bad input (one line naming the source, the key and
what was expected); 3 an internal error (a bug: one line, please report it);
4 no answer: the time limit ran out before any strategy was found (status
'unknown', nothing proven); 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

from . import __version__, knobs
from .errors import ConfigError, InfeasibleStrategy, OptimizerError, one_line
from .evaluate import evaluate, plain_json
from .search import MAX_THREADS, MAX_TIME_LIMIT_S, MAX_TOP_K as MAX_TOP
from .presets import resolve_system_name
from .sweep import EXECUTORS
from .spec import (DATATYPES, MAX_GBPS, MAX_GIB, MAX_GPUS, MAX_INT_FIELD, SYSTEM_OVERRIDES, check_input_file, fmt_limit, load_model, load_system, parse_value, preset_names, preset_path, read_yaml_mapping,
                   strategy_from_dict)

EXIT_OK, EXIT_INFEASIBLE, EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_UNKNOWN, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130
PROGRESS_EVERY_S = 0.2          # a progress line on a terminal at most this often


# ------------------------------------------------------------- rendering

def _print_json(obj):
    """One strict JSON document (RFC 8259: no NaN or Infinity; a
    non-finite number, an infinite bound or gap, is null)."""
    print(json.dumps(plain_json(obj), indent=2, allow_nan=False))


_jsonable = plain_json          # the one conversion, in evaluate.py (Report and PlanResult use it too)


# ------------------------------------------------------------- commands

def _system_overrides(args) -> dict:
    out = {}
    for k in SYSTEM_OVERRIDES:
        v = getattr(args, k, None)
        if v is not None:
            out[k] = v
    return out


def _pairs(items, what) -> dict:
    """KEY=VALUE arguments as a dict; each key once."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--{what}", item, item, "key=value")
        k, v = item.split("=", 1)
        k = k.strip()
        if not k:
            raise ConfigError(f"--{what}", item, item, "key=value with a key")
        if k in out:
            raise ConfigError(f"--{what}", k, v, f"each key once (also given as {k}={out[k]})")
        out[k] = parse_value(v)
    return out


def strategy_in_file(path) -> dict:
    """The strategy keys of a YAML or JSON file: a bare strategy mapping,
    an evaluate result (`optimize evaluate --json`: its `strategy`) or a
    plan result (`optimize plan --json`: its `best.strategy`)."""
    data = read_yaml_mapping(path, "strategy", empty_ok=True)
    if "best" in data and "status" in data:                 # a plan result
        best = data["best"]
        if not isinstance(best, dict) or not isinstance(best.get("strategy"), dict):
            raise ConfigError(str(path), "best.strategy", best,
                              f"a plan result with a best strategy (this one is {one_line(data['status'], 40)})")
        return best["strategy"]
    if isinstance(data.get("strategy"), dict):               # an evaluate result
        return data["strategy"]
    return data


def cmd_evaluate(args) -> int:
    model = load_model(args.model, seq_len=args.seq_len)
    system = load_system(args.system, **_system_overrides(args))
    base = strategy_from_dict(strategy_in_file(args.strategy), args.strategy).to_dict() if args.strategy else {}
    base.update(_pairs(args.set, "set"))
    missing = [k for k in ("tp", "pp", "dp", "batch") if k not in base]
    if missing:
        raise ConfigError("--set", missing[0], "<missing>", "an integer (tp, pp, dp and batch are required)")
    strategy = strategy_from_dict(base, "--strategy/--set")
    try:
        rep = evaluate(model, system, strategy)
    except InfeasibleStrategy as e:
        if args.json:
            _print_json({"status": "infeasible", "rule": e.rule, "message": str(e),
                         "strategy": strategy.to_dict()})
        else:
            print(f"infeasible strategy: {e}")
        return EXIT_INFEASIBLE
    if args.json:
        _print_json({"status": "ok", **rep.to_dict()})
    else:
        print(rep.summary(system))
    return EXIT_OK


def _pins(args) -> dict:
    pins = {}
    for k, v in _pairs(args.pin, "pin").items():
        if isinstance(v, str) and "," in v:
            v = [parse_value(x) for x in v.split(",")]
        pins[k] = v
    return pins


def _progress(method: str, stream=None):
    """plan's progress callback on a terminal (stderr, redrawn in place at
    most every PROGRESS_EVERY_S), or None when stderr is not one."""
    stream = stream or sys.stderr
    if not stream.isatty():
        return None
    what = "structures opened" if method == "cpsat" else "strategies evaluated"
    last = [0.0]

    def show(n, best):
        now = time.monotonic()
        if now - last[0] < PROGRESS_EVERY_S:
            return
        last[0] = now
        rate = f"{1 / best:,.3f} samples/s" if 0 < best < math.inf else "none yet"
        print(f"\r  searching: {n:,} {what}, best {rate}   ", end="", file=stream, flush=True)
    show.clear = lambda: print("\r" + " " * 79 + "\r", end="", file=stream, flush=True)
    return show


def cmd_plan(args) -> int:
    from .search import plan
    model = load_model(args.model, seq_len=args.seq_len)
    system = load_system(args.system, **_system_overrides(args))
    progress = None if args.json else _progress(args.method)
    try:
        if isinstance(args.gpus, range) and args.target is None:
            raise ConfigError("--target-samples-per-s", "target", None, "a number of samples per second "
                              "(a range of --gpus asks for the fewest GPUs reaching it)")
        res = plan(model, system, args.gpus, max_batch=args.max_batch, batch=args.batch, datatype=args.datatype,
                   target_samples_per_s=args.target,
                   pin=_pins(args), top_k=args.top, time_limit_s=args.time_limit, threads=args.threads,
                   method=args.method, progress=progress, even_stages=args.even_stages)
    finally:
        if progress:
            progress.clear()
    if args.json:
        _print_json(res.to_dict())
    else:
        print(res.summary())
    return {"infeasible": EXIT_INFEASIBLE, "unknown": EXIT_UNKNOWN}.get(res.status, EXIT_OK)


def cmd_sweep(args) -> int:
    from .sweep import check_output, format_rows, progress_printer, sweep
    check_input_file(args.grid, "grid")
    out = args.out or str(Path(args.grid).with_suffix(".results.jsonl"))
    if args.csv:
        check_output(args.csv, "--csv")
    progress = None if args.quiet else progress_printer()
    try:
        res = sweep(args.grid, executor=args.executor, workers=args.workers, address=args.address,
                    results=out, fresh=args.fresh, progress=progress)
    except KeyboardInterrupt:
        print(f"\ninterrupted: finished points are in {out}; run the same command to resume",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    if args.csv:
        res.to_csv(args.csv)
    if args.json:
        _print_json({"name": res.name, "results": res.results_path, "solved": res.solved,
                     "reused": res.reused, "stale": res.stale, "seconds": res.seconds, "rows": res.rows})
    else:
        print(format_rows(res.rows))
        n_inf = sum(r["status"] == "infeasible" for r in res.rows)
        n_err = sum(r["status"] == "error" for r in res.rows)
        print(f"\n{res.name}: {len(res.rows)} points ({res.solved} solved now, {res.reused} from "
              f"{res.results_path}), {n_inf} infeasible, {n_err} errors, {res.seconds:.1f} s"
              + (f"; {res.stale} stored rows were stale (model, system or optimizer code changed) and "
                 f"were solved again" if res.stale else "")
              + (f"; table in {args.csv}" if args.csv else ""))
    return EXIT_OK


def cmd_validate(args) -> int:
    if args.runs is not None or args.suite is not None:
        return _validate_runs(args)
    from .validate import validate
    v = validate(args.system or "a100-80g")
    if args.json:
        _print_json(v)
        return EXIT_OK
    print(f"Megatron-LM on Selene (Korthikanti et al. 2022) against the model on {v['system']}")
    titles = {"iteration_time": "iteration time (s), Table 5",
              "memory": "memory per GPU (GiB), Figure 1",
              "activation_percent": "activation memory (% of none), Figure 7"}
    for key, title in titles.items():
        sec = v[key]
        print(f"\n{title}")
        print(f"  {'model':<14} {'variant':<17} {'published':>10} {'model':>10} {'error':>8}")
        for p in sec["points"]:
            print(f"  {p['model']:<14} {p['variant']:<17} {p['published']:>10.3f} "
                  f"{p['model_value']:>10.3f} {p['error_pct']:>+7.2f}%")
        print(f"  mean |error| {sec['mean_abs_error_pct']:.2f}%   max |error| {sec['max_abs_error_pct']:.2f}%")
    return EXIT_OK


def _runs_arg(args):
    from .calibrate import suite_path
    if args.runs is not None and getattr(args, "suite", None) is not None:
        raise ConfigError("validate", "--suite", args.suite, "either a runs file or --suite, not both")
    if getattr(args, "suite", None) is not None:
        return suite_path(args.suite)
    check_input_file(args.runs, "runs")
    return args.runs


def _validate_runs(args) -> int:
    from .calibrate import validate_runs
    v = validate_runs(_runs_arg(args), args.system)
    if args.json:
        _print_json(v)
        return EXIT_OK
    print(f"{v['runs']} ({v['source']}) against the model on {v['system']}: the optimizer's best "
          "strategy per run, pinned knobs kept")
    print(f"  {'run':<24} {'measured s':>11} {'model s':>10} {'error':>8}  knobs chosen")
    for r in v["rows"]:
        print(f"  {r['name']:<24} {r['measured_s']:>11.4g} {r['predicted_s']:>10.4g} {r['error_pct']:>+7.2f}%  "
              f"{r['knobs']}")
    print(f"  mean |error| {v['mean_abs_error_pct']:.2f}%   max |error| {v['max_abs_error_pct']:.2f}%")
    return EXIT_OK


def cmd_calibrate(args) -> int:
    from .calibrate import calibrate, check_out, write_system
    check_out(args.out)
    cal = calibrate(_runs_arg(args), args.system, fit=args.fit, max_rounds=args.max_rounds,
                    loo=not args.no_loo)
    path = write_system(cal, args.out)
    if args.json:
        _print_json({**cal.to_dict(), "out": str(path)})
        return EXIT_OK
    print(format_calibration(cal))
    print(f"wrote {path} (system {cal.system.name}); check it with "
          f"`optimize validate {cal.runs.source} --system {path}`")
    return EXIT_OK


def format_calibration(cal) -> str:
    """The fit in words and tables: parameters, per-run errors, summaries."""
    n, k = len(cal.runs.runs), len(cal.free)
    lines = [f"calibrate {cal.base.name} against {n} runs of {cal.runs.name} ({cal.runs.source})",
             f"free: {k} numbers for {n} runs"
             + (f"; not informed by these runs (kept): {', '.join(cal.uninformed)}" if cal.uninformed else ""),
             f"alternation: {cal.rounds} round(s), strategies "
             + ("stable" if cal.converged else "still changing at the last round"),
             f"  {'parameter':<28} {'base':>10} {'fitted':>10}"]
    for name in cal.free:
        flag = "  (at its bound)" if name in cal.at_bound else ""
        lines.append(f"  {name:<28} {cal.initial[name]:>10.4g} {cal.fitted[name]:>10.4g}{flag}")
    loo = "leave_one_out" in cal.errors
    lines.append("")
    lines.append(f"  {'run':<24} {'measured s':>10} {'before':>8} {'after':>8}" + (f" {'LOO':>8}" if loo else "")
                 + "  (error; each the optimizer's choice under that system)")
    for r in cal.rows:
        lines.append(f"  {r['name']:<24} {r['measured_s']:>10.4g} {r['before_error_pct']:>+7.2f}% "
                     f"{r['after_error_pct']:>+7.2f}%" + (f" {r['loo_error_pct']:>+7.2f}%" if loo else ""))
        lines.append(f"  {'':<24} knobs after: {r['after_knobs']}")
    e = cal.errors
    for what, key in (("mean |error|", "mean_abs_error_pct"), ("max |error|", "max_abs_error_pct")):
        lines.append(f"  {what:<24} {'':>10} {e['before'][key]:>7.2f}% {e['after'][key]:>7.2f}%"
                     + (f" {e['leave_one_out'][key]:>7.2f}%" if loo else ""))
    return "\n".join(lines)


MODEL_SIZE_KEYS = ("hidden", "feedforward", "seq_len", "heads", "head_dim", "kv_heads", "blocks", "vocab")


def _fmt_count(n: float) -> str:
    for div, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M")):
        if n >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:,.0f}"


def _description(kind: str, name: str) -> str:
    """The preset's `description`; a system variant name gets its base's,
    with the overrides the name stands for."""
    path = preset_path(kind, name)
    variant = resolve_system_name(name) if kind == "systems" and path is None else None
    if variant is not None:
        base = _description(kind, variant[0])
        return one_line(f"{base}; {', '.join(f'{k}={v}' for k, v in variant[1].items())}", 200)
    desc = read_yaml_mapping(path, kind[:-1]).get("description", "") if path else ""
    return one_line(desc, 200) if isinstance(desc, str) else ""


def preset_info(kind: str, name: str) -> dict:
    """What `optimize list` shows of one preset: a model's parameter count
    and size keys, a system's memories, NVLink domain and peak rates; the
    description where the file has one."""
    from .perf import model_params
    if kind == "models":
        m = load_model(name)
        info = {"params": model_params(m), **{k: getattr(m, k) for k in MODEL_SIZE_KEYS}}
    else:
        s = load_system(name)
        info = {"hbm_gib": s.hbm_gib, "hbm_gbps": s.hbm_gbps, "nvlink_size": s.nvlink_size,
                "offload_gib": s.offload_gib, "offload_gbps": s.offload_gbps,
                "matrix_tflops": dict(s.matrix_tflops), "vector_tflops": dict(s.vector_tflops)}
    info["description"] = _description(kind, name)
    return info


def _format_info(kind: str, name: str, info: dict) -> str:
    if "error" in info:
        return f"{name:<16} (does not load: {info['error']})"
    if kind == "models":
        sizes = (f"hidden {info['hidden']}  ff {info['feedforward']}  seq {info['seq_len']}  "
                 f"heads {info['heads']}x{info['head_dim']}"
                 + (f" (kv {info['kv_heads']})" if info["kv_heads"] != info["heads"] else "")
                 + f"  blocks {info['blocks']}" + (f"  vocab {info['vocab']}" if info["vocab"] else ""))
        line = f"{name:<16} {_fmt_count(info['params']):>6} params  {sizes}"
    else:
        off = ("no offload" if not info["offload_gib"] or not info["offload_gbps"] else
               f"offload {info['offload_gib']:g} GiB at "
               + ("unlimited" if math.isinf(info["offload_gbps"]) else f"{info['offload_gbps']:g} GB/s"))
        peaks = "/".join(f"{v:g}" for v in info["matrix_tflops"].values())
        line = (f"{name:<32} HBM {info['hbm_gib']:g} GiB  NVLink {info['nvlink_size']}  {off}  "
                f"peak {peaks} TFLOP/s ({'/'.join(info['matrix_tflops'])})")
    return line + (f"\n{'':<6}{info['description']}" if info["description"] else "")


def cmd_list(args) -> int:
    kinds = [args.kind] if args.kind else ["models", "systems"]
    out = {}
    for kind in kinds:
        out[kind] = {}
        for name in preset_names(kind):
            try:
                out[kind][name] = preset_info(kind, name)
            except ConfigError as e:      # one broken file must not hide the others
                out[kind][name] = {"error": str(e)}
    if args.json:
        _print_json(out)
    else:
        for kind, infos in out.items():
            print(f"{kind}:")
            for name, info in infos.items():
                print("  " + _format_info(kind, name, info).replace("\n", "\n  "))
    return EXIT_OK


def _number(kind, low, high, what, unlimited=False, open_low=False):
    """An argparse type: a finite `kind` in [low, high] (or (low, high] with
    `open_low`; 'unlimited' as +inf when allowed), else a one-line usage
    error."""
    def parse(text):
        if unlimited and text.strip().lower() in ("unlimited", "inf"):
            return math.inf
        try:
            v = kind(text)
        except (ValueError, OverflowError):
            v = None
        ok = v is not None and (kind is int or math.isfinite(v)) and (
            low < v <= high if open_low else low <= v <= high)
        if not ok:
            rng = f"{'(' if open_low else '['}{fmt_limit(low)}, {fmt_limit(high)}]"
            raise argparse.ArgumentTypeError(
                f"got {one_line(repr(text), 40)}, expected {what} in {rng}"
                + (" or 'unlimited'" if unlimited else ""))
        return v
    parse.__name__ = what           # argparse names the type in its messages
    return parse


GPUS_ARG = _number(int, 1, MAX_GPUS, "an integer")


def _gpu_counts(text):
    """--gpus for plan: a count, or LO:HI[:STEP] (every STEP-th count from
    LO up to HI, inclusive) for the fewest GPUs reaching a target."""
    if ":" not in text:
        return GPUS_ARG(text)
    parts = text.split(":")
    one = _number(int, 1, MAX_GPUS, "a GPU count")
    try:
        if len(parts) not in (2, 3):
            raise argparse.ArgumentTypeError("")
        lo, hi = one(parts[0]), one(parts[1])
        step = _number(int, 1, MAX_GPUS, "a step")(parts[2]) if len(parts) == 3 else 1
    except argparse.ArgumentTypeError:
        lo = hi = step = None
    if lo is None or hi < lo:
        raise argparse.ArgumentTypeError(f"got {one_line(repr(text), 40)}, expected a GPU count or LO:HI[:STEP] "
                                         f"with 1 <= LO <= HI <= {fmt_limit(MAX_GPUS)}")
    return range(lo, hi + 1, step)


_gpu_counts.__name__ = "a GPU count or LO:HI[:STEP]"
BATCH_ARG = _number(int, 1, MAX_INT_FIELD, "an integer")


class _Parser(argparse.ArgumentParser):
    """argparse, with its usage errors on one line (the house rule for bad
    input) and exit code 2."""

    def error(self, message):
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {one_line(message)} (see `{self.prog} --help`)\n")


def _add_system_args(p):
    p.add_argument("--system", default="h100-80g-nvl8",
                   help="system preset name or YAML path (default: h100-80g-nvl8; see `optimize list`)")
    p.add_argument("--hbm-gib", dest="hbm_gib", type=_number(float, 0, MAX_GIB, "a number", open_low=True),
                   help="override HBM capacity per GPU (GiB)")
    p.add_argument("--offload-gib", dest="offload_gib", type=_number(float, 0, MAX_GIB, "a number"),
                   help="override the offload tier's capacity per GPU (GiB; 0 = none); on a system "
                        "without an offload tier give --offload-gbps too")
    p.add_argument("--offload-gbps", dest="offload_gbps",
                   type=_number(float, 0, MAX_GBPS, "a number", unlimited=True),
                   help="override the offload bandwidth per direction (GB/s, or 'unlimited'); on a "
                        "system without an offload tier give --offload-gib too")
    p.add_argument("--nvlink-size", dest="nvlink_size", type=GPUS_ARG,
                   help="override the NVLink domain size (GPUs)")


def _add_plan_args(p):
    p.add_argument("--model", required=True, help="model preset name, YAML path or Hugging Face config.json "
                                                   "(see `optimize list`)")
    p.add_argument("--seq-len", dest="seq_len", type=int, default=None,
                       help="sequence length (default: the model's; a config.json's max_position_embeddings)")
    p.add_argument("--gpus", required=True, type=_gpu_counts,
                   help="number of GPUs (tp * pp * dp); or LO:HI[:STEP] with --target-samples-per-s: the fewest "
                        "GPUs in that range whose best strategy reaches the target, proven")
    p.add_argument("--target-samples-per-s", dest="target", type=_number(float, 0, 1e12, "a number", open_low=True),
                   default=None, help="with a range of --gpus: the throughput to reach (samples per second)")
    _add_system_args(p)
    p.add_argument("--max-batch", dest="max_batch", type=BATCH_ARG, default=3072,
                   help="global batch limit in sequences (default 3072); the batch is a variable: any "
                        "multiple of dp x microbatch up to the limit (the search takes the fastest)")
    p.add_argument("--batch", type=BATCH_ARG, default=None,
                   help="exactly this global batch (fixed for convergence); replaces --max-batch")
    p.add_argument("--datatype", default=None, choices=DATATYPES,
                   help="training datatype (default: the fastest the system has rates for: fp8, "
                        "else bf16, fp16, fp32)")
    p.add_argument("--pin", action="append", metavar="KNOB=VALUE",
                   help="fix a knob (repeatable): tp=8, recompute=full, pp=4,8 for a set")
    p.add_argument("--top", type=_number(int, 1, MAX_TOP, "an integer"), default=1, help="also list the K best strategies")
    p.add_argument("--time-limit", dest="time_limit",
                   type=_number(float, 0, MAX_TIME_LIMIT_S, "a number", open_low=True),
                   help="seconds; then the best found and its gap to the proven bound (status feasible), "
                        "or, when none was found in time, status unknown and exit code 4")
    p.add_argument("--threads", type=_number(int, 1, MAX_THREADS, "an integer"), help="CP-SAT workers (default 1)")
    p.add_argument("--even-stages", dest="even_stages", action="store_true",
                   help="pipeline stages of equal blocks only (pp dividing the blocks); by default stages may be "
                        "uneven, balanced, the first and last giving up blocks for the embedding and logits")
    p.add_argument("--method", default="cpsat", choices=["cpsat", "enumerate"],
                   help="cpsat (default) or plain brute force over the same space")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.set_defaults(func=cmd_plan)


SUBCOMMANDS = ("plan", "evaluate", "sweep", "validate", "calibrate", "list")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="optimize",
        description="Find the fastest parallel training strategy (TP, PP, DP, microbatch, "
                    "interleaving, recomputation, overlap, offload, ...) for a transformer on a GPU "
                    "system, proven optimal under the analytical model.",
        epilog="Examples:\n"
               "  optimize --model 1T --gpus 16384\n"
               "  optimize --model 1T --gpus 4096 --pin tp=8 --top 3 --json\n"
               "  optimize evaluate --model megatron-1T --system a100-80g --set tp=8 --set pp=64 "
               "--set dp=1 --set batch=512 --set recompute=full --set datatype=fp16\n"
               "  optimize sweep grid.yaml --csv grid.csv\n"
               "  optimize validate\n"
               "  optimize validate --suite h100-core --system h100-80g-nvl8\n"
               "  optimize calibrate runs.yaml --system h100-80g-nvl8 --out systems/my-cluster.yaml\n"
               "Exit codes: 0 success, 1 infeasible (explained), 2 bad input, 3 internal error, "
               "4 time limit reached before any strategy was found (no answer), 130 interrupted.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"optimize {__version__}")
    sub = p.add_subparsers(dest="command", metavar="{plan,evaluate,sweep,validate,calibrate,list}",
                           help="plan is the default: `optimize --model 1T --gpus 16384` = `optimize plan ...`")
    pl = sub.add_parser("plan", help="the fastest strategy, proven optimal (default command)",
                        description="Search the whole strategy space with CP-SAT and prove the optimum "
                                    "under the analytical model.",
                        epilog="Knobs (pin any with --pin KNOB=VALUE, or KNOB=V1,V2 for a set):\n"
                               + knobs.glossary(),
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_plan_args(pl)

    ev = sub.add_parser("evaluate", help="the analytical model for one strategy",
                        description="Evaluate one strategy: time per batch, breakdown, MFU, memory.",
                        epilog="Strategy keys (tp, pp, dp and batch required; datatype too):\n"
                               + knobs.glossary(),
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    ev.add_argument("--model", required=True, help="model preset name, YAML path or Hugging Face config.json "
                                                   "(see `optimize list`)")
    ev.add_argument("--seq-len", dest="seq_len", type=int, default=None,
                       help="sequence length (default: the model's; a config.json's max_position_embeddings)")
    _add_system_args(ev)
    ev.add_argument("--strategy", help="YAML file with strategy keys")
    ev.add_argument("--set", action="append", metavar="KEY=VALUE",
                    help="set one strategy key (repeatable); overrides --strategy")
    ev.add_argument("--json", action="store_true", help="print one JSON document")
    ev.set_defaults(func=cmd_evaluate)

    sw = sub.add_parser(
        "sweep", help="plan every point of a grid (models x systems x GPUs x overrides)",
        description="Plan every point of a grid YAML: the cross product of models, systems, GPU "
                    "counts, system overrides and options. Finished points are appended to the "
                    "results file as they finish; an interrupted sweep resumes where it stopped.",
        epilog="Grid YAML:\n"
               "  name: offload-bandwidth\n"
               "  models: [1T, 4T, 11T]          # preset names, YAML paths (relative to the grid) or dicts\n"
               "  systems: [h100-80g-nvl8]\n"
               "  gpus: [4096, 8192]\n"
               "  overrides:                     # hbm_gib, offload_gib, offload_gbps, nvlink_size\n"
               "    offload_gib: [0, 1024]\n"
               "    offload_gbps: [50, 100, unlimited]\n"
               "  options:                       # max_batch, datatype, pin, time_limit_s\n"
               "    max_batch: 3072\n"
               "Examples:\n"
               "  optimize sweep grid.yaml --csv grid.csv\n"
               "  optimize sweep grid.yaml --executor dask --address tcp://scheduler:8786\n"
               "Exit codes: 0 done (infeasible points are rows, not failures), 2 bad input, "
               "3 internal error, 130 interrupted.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sw.add_argument("grid", help="grid YAML file")
    sw.add_argument("--out", help="results file, JSON lines (default: GRID.results.jsonl beside the grid)")
    sw.add_argument("--csv", help="also write the rows as a CSV table")
    sw.add_argument("--executor", default="local", choices=EXECUTORS,
                    help="local processes (default), serial (this process), or a Dask cluster "
                         "(needs the dask extra)")
    sw.add_argument("--workers", type=_number(int, 1, MAX_THREADS, "an integer"), help="processes (local) or workers of a local Dask "
                                                 "cluster (default: all cores)")
    sw.add_argument("--address", help="Dask scheduler address, e.g. tcp://host:8786 (default: "
                                      "start a local cluster)")
    sw.add_argument("--fresh", action="store_true", help="discard the results file and solve every point")
    sw.add_argument("--quiet", action="store_true", help="no progress bar")
    sw.add_argument("--json", action="store_true", help="print one JSON document with every row")
    sw.set_defaults(func=cmd_sweep)

    from .calibrate import FIT_GROUPS, MAX_ROUNDS, SUITES
    runs_help = ("runs file: a mapping with `runs:` (each a model, gpus, datatype, batch, `pin:` knobs "
                 "and one of seconds_per_batch, tokens_per_s_per_gpu, tflops_per_gpu) and optional "
                 "`defaults:` and `system:`")
    va = sub.add_parser("validate", help="compare the model with published or measured runs",
                        description="Without a runs file: iteration time, memory and activation savings "
                                    "of Megatron-LM on Selene (Korthikanti et al. 2022) against the model. "
                                    "With a runs file (or --suite): per run, the measured and the predicted "
                                    "time of the optimizer's best strategy (pinned knobs kept), the error "
                                    "and the knobs chosen.")
    va.add_argument("runs", nargs="?", help=runs_help)
    va.add_argument("--suite", choices=list(SUITES), help="a built-in runs file: selene (Korthikanti "
                    "Table 5), h100-core (Megatron-Core weak scaling), h100-bridge (Megatron-Bridge "
                    "Llama 3 70B fp8)")
    va.add_argument("--system", default=None, help="system preset or YAML path (default a100-80g for the "
                    "built-in Selene check; a runs file's own `system:`)")
    va.add_argument("--json", action="store_true", help="print one JSON document")
    va.set_defaults(func=cmd_validate)

    ca = sub.add_parser(
        "calibrate", help="fit a system's efficiency numbers to measured runs",
        description="Fit a few global numbers of a system (matrix efficiency curve top * x / (x + half), "
                    "an HBM curve scale, each network tier's efficiency and processor share) to measured "
                    "runs by least squares on relative errors, alternating with the optimizer's choice "
                    "of the unpinned knobs; report each run before, after and left out, and write the "
                    "fitted system with its provenance. Needs SciPy: pip install -e '.[calibrate]'.",
        epilog="Example:\n  optimize calibrate --suite h100-core --system h100-80g-nvl8 --out /tmp/h100.yaml\n"
               "Exit codes: 0 done, 2 bad input (bad runs file, too many free numbers), 3 internal error.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ca.add_argument("runs", nargs="?", help=runs_help)
    ca.add_argument("--suite", choices=list(SUITES), help="a built-in runs file instead")
    ca.add_argument("--system", default=None, help="base system preset or YAML path (default: the runs "
                    "file's `system:`)")
    ca.add_argument("--out", required=True, help="the fitted system file to write (.yaml)")
    ca.add_argument("--fit", default=None, help=f"groups to fit, comma-separated, among {','.join(FIT_GROUPS)} "
                    "(default: every group the runs inform)")
    ca.add_argument("--max-rounds", dest="max_rounds", type=_number(int, 1, 50, "an integer"),
                    default=MAX_ROUNDS, help=f"plan/fit alternations at most (default {MAX_ROUNDS})")
    ca.add_argument("--no-loo", dest="no_loo", action="store_true", help="skip the leave-one-out refits")
    ca.add_argument("--json", action="store_true", help="print one JSON document")
    ca.set_defaults(func=cmd_calibrate)

    ls = sub.add_parser("list", help="list model and system presets, with their sizes",
                        description="The model presets (parameters, size keys) and system presets "
                                    "(HBM, NVLink domain, offload, peak rates), in natural order.")
    ls.add_argument("kind", nargs="?", choices=["models", "systems"])
    ls.add_argument("--json", action="store_true", help="print one JSON document")
    ls.set_defaults(func=cmd_list)
    return p


def main(argv=None) -> int:
    """Run the command; the exit code says how it went (see the module
    docstring). Never a traceback: bad input is one line and 2, a bug one
    line and 3, a closed pipe (`optimize list | head -1`) a quiet 0."""
    try:
        # the model uses inf for "impossible" (offload without a tier, ...) and
        # says so in its answer; NumPy's floating-point warnings about it are
        # not messages for the user (and would break the one-line rule)
        with np.errstate(all="ignore"):
            return _main(argv)
    except BrokenPipeError:
        # the reader went away: nothing more to say, and nothing to say it to;
        # point stdout at /dev/null so the interpreter's final flush is quiet too
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):
            pass
        return EXIT_OK
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:                # a bug: one line, and not 1 (that means "infeasible")
        print(f"optimize: internal error: {type(e).__name__}: {one_line(e, 300)}", file=sys.stderr)
        return EXIT_INTERNAL


def _main(argv) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if argv and argv[0] not in SUBCOMMANDS and argv[0] not in ("-h", "--help", "--version"):
        argv = ["plan", *argv]
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:             # argparse already printed the usage error
        return EXIT_BAD_INPUT if e.code not in (0, None) else EXIT_OK
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_BAD_INPUT
    try:
        return args.func(args)
    except OptimizerError as e:         # ConfigError and the other errors raised on purpose
        print(f"optimize: error: {one_line(e, 1500)}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
