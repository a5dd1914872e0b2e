"""Sweeps: one `plan` per point of a grid, resumable, on local processes or
on a Dask cluster.

A grid is the cross product of models, systems, GPU counts, system
overrides and plan options (YAML file or dict):

    name: offload-bandwidth
    models: [1T, 4T, 11T]            # preset names, YAML paths or inline dicts
    systems: [h100-80g-nvl8]
    gpus: [4096, 8192]
    overrides:                       # each a value or a list of values to sweep
      offload_gib: [0, 1024]
      offload_gbps: [50, 100, unlimited]
    options:                         # max_batch and datatype may be lists too
      max_batch: 3072
      datatype: fp8                  # default: each system's best (fp8, else bf16, ...)

Every finished point is appended to the results file (JSON lines) at once,
so an interrupted sweep resumes where it stopped and no finished point is
solved again. A point is identified by its inputs as written in the grid.
"""

from __future__ import annotations

import concurrent.futures as cf
import csv
import dataclasses
import functools
import hashlib
import itertools
import json
import math
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping


from . import knobs
from .errors import ConfigError
from .evaluate import BREAKDOWN
from .space import normalise_pins
from .spec import (DATATYPES, MAX_GPUS, MAX_INT_FIELD, SYSTEM_OVERRIDES, default_datatype, load_model,
                   load_system, read_yaml_mapping)

OPTION_KEYS = ("max_batch", "datatype", "pin", "time_limit_s", "even_stages")
SWEPT_OPTIONS = ("max_batch", "datatype")
# datatype None: each system's best (spec.default_datatype), filled in per point
DEFAULT_OPTIONS = {"max_batch": 3072, "datatype": None}
EXECUTORS = ("local", "serial", "dask")
MAX_TIME_LIMIT_S = 1e7        # a plan's time limit in a grid (about 4 months)
DASK_CONNECT_S = 10           # seconds to reach a scheduler given by address
STRATEGY_COLUMNS = knobs.NAMES
CSV_COLUMNS = ("model", "system", "gpus", *SYSTEM_OVERRIDES, "max_batch", "datatype", "status",
               "samples_per_s", "mfu", "hfu", "time_per_batch_s", "tokens_per_s",
               *(f"{k}_s" for k in BREAKDOWN), *STRATEGY_COLUMNS,
               "hbm_used_gib", "offload_used_gib", "offload_gbps_required", "space_size", "evaluated",
               "solver_calls", "gap", "solve_s", "explanation")


# ------------------------------------------------------------------ grid

@dataclass
class Grid:
    """A sweep's points, each {model, system, gpus, overrides, options} with
    paths made absolute, and where they came from."""

    name: str
    points: list
    source: str
    fingerprints: list = field(default_factory=list)   # one per point, see fingerprint()


def _as_list(r_source, key, value) -> list:
    values = value if isinstance(value, list) else [value]
    if not values:
        raise ConfigError(r_source, key, value, "a value or a non-empty list of values")
    return values


def _resolve(spec, base: Path):
    """A model or system entry: a path relative to the grid file is made
    absolute; names and dicts pass as they are."""
    if isinstance(spec, str) and (spec.endswith((".yaml", ".yml")) or "/" in spec):
        path = Path(spec)
        return str(path if path.is_absolute() else (base / path).resolve())
    return spec


def load_grid(x) -> Grid:
    """A Grid from a YAML path or a dict. Every point is checked before any
    is solved: models and systems load, overrides and options are known and
    in range."""
    if isinstance(x, Grid):
        return x
    if isinstance(x, Mapping):
        data, source, base = dict(x), "<grid dict>", Path.cwd()
    elif isinstance(x, (str, Path)):
        path = Path(x)
        data, source, base = read_yaml_mapping(path, "grid"), str(path), path.resolve().parent
    else:
        raise ConfigError(None, "grid", x, "a grid YAML path or a dict")

    known = ("name", "models", "systems", "gpus", "overrides", "options")
    for k in data:
        if k not in known:
            raise ConfigError(source, k, data[k], f"no such key (known: {', '.join(known)})")
    if "name" in data and not isinstance(data["name"], (str, int)) or isinstance(data.get("name"), bool):
        raise ConfigError(source, "name", data["name"], "a name for the sweep (text)")
    for k in ("models", "gpus"):
        if k not in data:
            raise ConfigError(source, k, "<missing>", "a value or a list of values")
    models = [_resolve(m, base) for m in _as_list(source, "models", data["models"])]
    systems = [_resolve(s, base) for s in _as_list(source, "systems", data.get("systems", "h100-80g-nvl8"))]
    gpus = _as_list(source, "gpus", data["gpus"])
    for g in gpus:
        if isinstance(g, bool) or not isinstance(g, int) or not 1 <= g <= MAX_GPUS:
            raise ConfigError(source, "gpus", g, f"an integer in [1, {MAX_GPUS}] or a list of them")

    overrides = _section(data, source, "overrides", SYSTEM_OVERRIDES)
    over_axes = [[(k, _unlimited(v)) for v in _as_list(source, f"overrides.{k}", overrides[k])]
                 for k in overrides]

    options = _section(data, source, "options", OPTION_KEYS)
    opts = {**DEFAULT_OPTIONS, **options}
    opt_axes = [[(k, v) for v in _as_list(source, f"options.{k}", opts[k])] for k in SWEPT_OPTIONS]
    for k, v in itertools.chain(*opt_axes):
        if k == "max_batch" and (isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= MAX_INT_FIELD):
            raise ConfigError(source, "options.max_batch", v,
                              f"an integer in [1, {MAX_INT_FIELD}] or a list of them")
        if k == "datatype" and v is not None and (not isinstance(v, str) or v not in DATATYPES):
            raise ConfigError(source, "options.datatype", v, f"one of {', '.join(DATATYPES)}")
    fixed = {k: opts[k] for k in ("pin", "time_limit_s", "even_stages") if k in opts}
    if not isinstance(fixed.get("even_stages", False), bool):
        raise ConfigError(source, "options.even_stages", fixed["even_stages"], "true or false")
    if "pin" in fixed:
        if not isinstance(fixed["pin"], dict):
            raise ConfigError(source, "options.pin", fixed["pin"], "a mapping knob: value")
        normalise_pins(fixed["pin"], f"{source}: options.pin")
    tl = fixed.get("time_limit_s")
    if tl is not None and (isinstance(tl, bool) or not isinstance(tl, (int, float))
                           or not 0 < tl <= MAX_TIME_LIMIT_S):        # also refuses NaN and inf
        raise ConfigError(source, "options.time_limit_s", tl,
                          f"a number of seconds in (0, {MAX_TIME_LIMIT_S:.0f}]")

    # load every model and system (with each override set) once, so that a
    # bad entry fails here, named, and not in a worker; the loaded inputs
    # give each point its fingerprint
    loaded_models = [_reraise_in(source, "models", lambda: load_model(m)) for m in models]
    loaded_systems = {(i, combo): _reraise_in(source, "systems", lambda: load_system(s, **dict(combo)))
                      for i, s in enumerate(systems) for combo in itertools.product(*over_axes)}

    points, fingerprints = [], []
    for (mi, m), (si, s), g, over, opt in itertools.product(
            enumerate(models), enumerate(systems), gpus, itertools.product(*over_axes),
            itertools.product(*opt_axes)):
        system = loaded_systems[si, over]
        fingerprints.append(fingerprint(loaded_models[mi], system))
        opt = dict(opt)
        if opt.get("datatype") is None:          # not asked for: the best this system has
            opt["datatype"] = _reraise_in(source, "systems", lambda: default_datatype(system))
        points.append({"model": m, "system": s, "gpus": g, "overrides": dict(over),
                       "options": {**opt, **fixed}})
    name = data.get("name", Path(source).stem if source != "<grid dict>" else "sweep")
    return Grid(name=str(name), points=points, source=source, fingerprints=fingerprints)


def _section(data, source, name, known) -> dict:
    """A sub-mapping of the grid whose keys must be among `known`."""
    section = data.get(name) or {}
    if not isinstance(section, dict):
        raise ConfigError(source, name, section, f"a mapping of {', '.join(known)}")
    for k in section:
        if k not in known:
            raise ConfigError(source, f"{name}.{k}", section[k], f"one of {', '.join(known)}")
    return section


def _reraise_in(source, key, load):
    """Run a loader; a ConfigError from it is reported as part of the grid
    (a bad override under its own key)."""
    try:
        return load()
    except ConfigError as e:
        if e.source == "override":
            raise ConfigError(source, f"overrides.{e.key}", e.value, e.expected) from None
        raise ConfigError(source, key, e.value, f"{e.expected} (from {e.source or 'the entry'}, key '{e.key}')") from None


def _unlimited(v):
    """'unlimited', 'inf' and an infinite float are one value: 'unlimited'."""
    if isinstance(v, float) and math.isinf(v) and v > 0:
        return "unlimited"
    if isinstance(v, str) and v.strip().lower() in ("inf", "unlimited"):
        return "unlimited"
    return v


def point_key(point: dict) -> str:
    """The identity of a point: its inputs as written, as canonical JSON."""
    return json.dumps(point, sort_keys=True, default=str)


# modules whose code decides a row; a change to any of them makes stored rows stale
RESULT_MODULES = ("spec", "knobs", "rules", "perf", "evaluate", "space", "search", "explain")


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    h = hashlib.sha1()
    for name in RESULT_MODULES:
        h.update((Path(__file__).parent / f"{name}.py").read_bytes())
    return h.hexdigest()


def fingerprint(model, system) -> str:
    """What a row depends on besides its key: the loaded model and system
    (file contents, not names) and the code of the model and search."""
    data = json.dumps([dataclasses.asdict(model), dataclasses.asdict(system), code_fingerprint()],
                      sort_keys=True, default=str)
    return hashlib.sha1(data.encode()).hexdigest()


# ------------------------------------------------------------------ one point

# The best strategy of the points a process solved last, by what a point's
# space depends on (model, system, GPU count, options; not the overrides of
# capacities and links): the next such point opens its family first
# (search._plan's `hint`), and when the strategy fits there too, skips
# Master.warm_start's solve. Neighbouring points of a grid (the overrides
# vary fastest) tend to share the optimum's family, and a search that
# starts from a good incumbent proves faster. The answers do not depend on
# it; the solve counts do (comparable leaves them out).
HINTS_KEPT = 64
_hints: dict = {}
_hints_lock = threading.Lock()      # a thread pool's points share them


def _hint_key(point: dict, model) -> str:
    return json.dumps([dataclasses.asdict(model), point["system"], point["gpus"], point["options"]],
                      sort_keys=True, default=str)


def solve_point(point: dict) -> dict:
    """Plan one point and return its row (a plain JSON-able dict). Runs in a
    worker process; a ConfigError becomes a row with status 'error'."""
    from .search import _plan
    t0 = time.perf_counter()
    opts = point["options"]
    row = {"key": point_key(point), "point": point}
    try:
        model = load_model(point["model"])
        system = load_system(point["system"], **point["overrides"])
        row.update({"model": model.name, "system": system.name, "gpus": point["gpus"],
                    **{k: point["overrides"].get(k) for k in SYSTEM_OVERRIDES},
                    "max_batch": opts["max_batch"], "datatype": opts.get("datatype"),
                    "fingerprint": fingerprint(model, system)})
        hint = _hint_key(point, model)
        with _hints_lock:
            last, near = _hints.get(hint, (None, None))
        # plan()'s own defaults, named, with the hint
        res = _plan(model, system, point["gpus"], max_batch=opts["max_batch"], datatype=opts.get("datatype"),
                    pin=opts.get("pin"), even_stages=opts.get("even_stages", False), batch=None,
                    target_samples_per_s=None, top_k=1, time_limit_s=opts.get("time_limit_s"), threads=None,
                    method="cpsat", progress=None, hint=last, near=near)
        row["datatype"] = res.problem["datatype"]
        if res.best is not None:
            with _hints_lock:
                _hints.pop(hint, None)
                _hints[hint] = ({n: int(v) for n, v in knobs.canonical(res.best.strategy.to_dict()).items()},
                                res.near)
                while len(_hints) > HINTS_KEPT:
                    _hints.pop(next(iter(_hints)))
    except ConfigError as e:
        row.update({"status": "error", "message": str(e), "seconds": {"total": time.perf_counter() - t0}})
        return row
    except Exception as e:          # a bug must not end a long sweep; the row says what happened
        row.update({"status": "error", "message": f"internal error ({type(e).__name__}: {e})",
                    "seconds": {"total": time.perf_counter() - t0}})
        return row
    best = res.best
    row["status"] = res.status
    if res.status == "unknown":
        row["message"] = "time limit reached before a strategy was found; no proof either way"
    row["result"] = None if best is None else {
        "samples_per_s": best.samples_per_s, "mfu": best.mfu, "hfu": best.hfu,
        "time_per_batch_s": best.time_s, "tokens_per_s": best.tokens_per_s,
        "strategy": best.strategy.to_dict(), "breakdown_s": dict(best.breakdown),
        "hbm_used_gib": best.memory["hbm_total"] / 2 ** 30,
        "offload_used_gib": best.memory["offload_total"] / 2 ** 30,
        "offload_gbps_required": best.offload_gbps_required}
    st = res.stats
    row["proof"] = {"space_size": st["space_size"], "structures": st["structures"],
                    "evaluated": st["evaluated"], "solver_calls": st.get("solver_calls", 0),
                    "gap": res.gap if math.isfinite(res.gap) else None,
                    "bound_samples_per_s": res.bound_samples_per_s if math.isfinite(res.lower_bound) else None}
    row["explanation"] = None if res.explanation is None else {
        k: res.explanation[k] for k in ("summary", "conflicts", "fixes")}
    row["seconds"] = {"solve": st["solve_s"], "explain": st.get("explain_s", 0.0),
                      "total": time.perf_counter() - t0}
    return row


# ------------------------------------------------------------------ results file

def read_results(path: Path) -> dict:
    """Rows already in a results file, by key (a later row of a key wins).
    A last line cut short (the sweep was killed while writing it, maybe in
    the middle of a character) is dropped from the file, a complete last
    line missing its newline gets one; a bad line elsewhere (not JSON, not
    UTF-8, not a row) is an error naming the file and line."""
    rows = {}
    path = Path(path)
    if not path.exists():
        return rows
    if path.is_dir() or not path.is_file():
        raise ConfigError(str(path), "results", str(path), "a results file, not a directory or a device")
    data = _read_bytes(path)
    lines = data.splitlines(keepends=True)
    for n, raw in enumerate(lines, 1):
        try:
            line = raw.decode("utf-8")
            row = json.loads(line)
            if not isinstance(row, dict) or not isinstance(row.get("key"), str) or "status" not in row:
                raise ValueError
        except (ValueError, RecursionError):     # UnicodeDecodeError is a ValueError
            if n == len(lines) and not raw.endswith(b"\n"):
                path.write_bytes(b"".join(lines[:-1]))
                break
            raise ConfigError(f"{path}:{n}", "<line>", raw[:60].decode("utf-8", "replace"),
                              "one JSON row (UTF-8) with 'key' and 'status' per line") from None
        rows[row["key"]] = row
    else:
        if lines and not data.endswith(b"\n"):
            with path.open("ab") as f:
                f.write(b"\n")
    return rows


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise ConfigError(str(path), "results", str(path),
                          f"a readable results file ({e.strerror or type(e).__name__})") from None


def check_output(path, key) -> Path:
    """A file the sweep will write: not a directory, in a directory that exists."""
    if isinstance(path, str) and not path.strip():
        raise ConfigError("sweep", key, path, "a file path, not empty")
    path = Path(path)
    try:
        is_dir = path.is_dir()
    except (OSError, ValueError) as e:
        raise ConfigError("sweep", key, str(path), f"a usable file name ({type(e).__name__})") from None
    if is_dir:
        raise ConfigError("sweep", key, str(path), "a file path, not a directory")
    if path.exists() and not path.is_file():
        raise ConfigError("sweep", key, str(path), "a regular file (not a device or a pipe)")
    if not path.parent.is_dir():
        raise ConfigError("sweep", key, str(path), f"a file in an existing directory ({path.parent} is not one)")
    return path


# ------------------------------------------------------------------ executors

def _check_executor(executor):
    ok = executor in EXECUTORS if isinstance(executor, str) else (
        hasattr(executor, "get_executor") or isinstance(executor, cf.Executor))
    if not ok:
        raise ConfigError("sweep", "executor", executor,
                          f"one of {', '.join(EXECUTORS)}, a concurrent.futures executor or a distributed.Client")


def _executor(executor, workers, address):
    """(a concurrent.futures executor, a function closing what was opened)."""
    if executor == "serial":
        return None, lambda: None
    if executor == "local":
        ex = cf.ProcessPoolExecutor(max_workers=workers or os.cpu_count() or 1)
        return ex, lambda: ex.shutdown(wait=True, cancel_futures=True)
    if executor == "dask":
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise ConfigError("sweep", "executor", "dask",
                              "the Dask extra installed: pip install 'optimizer[dask]'") from None
        if address:
            try:
                client, cluster = Client(address, timeout=DASK_CONNECT_S), None
            except (OSError, TimeoutError, ValueError) as e:
                raise ConfigError("sweep", "address", address,
                                  f"a reachable Dask scheduler, e.g. tcp://host:8786 ({e})") from None
        else:
            cluster = LocalCluster(n_workers=workers or os.cpu_count() or 1, threads_per_worker=1,
                                   processes=True, dashboard_address=None)
            client = Client(cluster)

        def close():
            client.close()
            if cluster is not None:
                cluster.close()
        return client.get_executor(pure=False), close
    if hasattr(executor, "get_executor"):           # a distributed.Client
        return executor.get_executor(pure=False), lambda: None
    return executor, lambda: None                   # a concurrent.futures executor (_check_executor)


# ------------------------------------------------------------------ the sweep

@dataclass
class SweepResult:
    """Rows in grid order; how many were solved now, how many came from the
    results file, and how many stored rows were stale (their model, system
    or the model's code had changed) and solved again."""

    name: str
    rows: list
    solved: int
    reused: int
    results_path: str | None
    seconds: float
    stale: int = 0

    def to_csv(self, path):
        write_csv(self.rows, path)


def sweep(grid, executor="local", workers=None, address=None, results=None, fresh=False,
          progress: Callable | None = None) -> SweepResult:
    """Plan every point of `grid` (a YAML path, a dict or a Grid).

    executor: 'local' (processes on this machine, the default), 'serial' (in
    this process), 'dask' (a Dask cluster at `address`, or a local one when
    no address is given), a distributed.Client, or any concurrent.futures
    executor. results: a JSON-lines file; points already in it are not
    solved again, new rows are appended as they finish. progress(done,
    total, infeasible, errors, eta_s) is called after each point."""
    t0 = time.perf_counter()
    g = load_grid(grid)
    _check_executor(executor)
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ConfigError("sweep", "workers", workers, "a positive integer")
    path = check_output(results, "results") if results is not None else None
    done = read_results(path) if path is not None and not fresh else {}
    keys = [point_key(p) for p in g.points]
    unique = dict(zip(keys, zip(g.points, g.fingerprints)))
    kept = {k for k, (_, fp) in unique.items() if k in done and done[k].get("fingerprint") == fp}
    todo = [p for k, (p, _) in unique.items() if k not in kept]
    stale = sum(k in done for k in unique) - len(kept)
    reused, total = len(kept), len(unique)
    counts = {"done": reused, "infeasible": 0, "error": 0}
    for k in kept:
        if done[k]["status"] in counts:
            counts[done[k]["status"]] += 1

    started = time.perf_counter()
    written = set()

    def finish(row):
        done[row["key"]] = row
        written.add(row["key"])
        if out is not None:
            out.write(json.dumps(row, default=str) + "\n")
            out.flush()
        counts["done"] += 1
        if row["status"] in counts:
            counts[row["status"]] += 1
        if progress:
            solved = counts["done"] - reused
            eta = (time.perf_counter() - started) / solved * (total - counts["done"])
            progress(counts["done"], total, counts["infeasible"], counts["error"], eta)

    ex, close, out, futures = None, (lambda: None), None, []
    try:
        if todo:
            ex, close = _executor(executor, workers, address)
        # the file is opened (and, when fresh, emptied) only once the executor is up
        out = path.open("w" if fresh else "a") if path is not None else None
        if ex is None:
            for p in todo:
                finish(solve_point(p))
        else:
            futures = [ex.submit(solve_point, p) for p in todo]
            for f in cf.as_completed(futures):
                finish(f.result())
    finally:
        # interrupted: keep every point that did finish before closing
        for f in futures:
            if f.done() and not f.cancelled() and f.exception() is None and f.result()["key"] not in written:
                finish(f.result())
        close()
        if out is not None:
            out.close()
    rows = [done[k] for k in unique]
    return SweepResult(name=g.name, rows=rows, solved=len(todo), reused=reused, stale=stale,
                       results_path=str(path) if path else None,
                       seconds=time.perf_counter() - t0)


# ------------------------------------------------------------------ tables

def flat_row(row: dict) -> dict:
    """One row as flat columns (CSV_COLUMNS)."""
    res = row.get("result") or {}
    strat = res.get("strategy") or {}
    proof = row.get("proof") or {}
    out = {c: row.get(c) for c in ("model", "system", "gpus", *SYSTEM_OVERRIDES, "max_batch",
                                   "datatype", "status")}
    out.update({c: res.get(c) for c in ("samples_per_s", "mfu", "hfu", "time_per_batch_s",
                                        "tokens_per_s", "hbm_used_gib", "offload_used_gib",
                                        "offload_gbps_required")})
    out.update({f"{k}_s": (res.get("breakdown_s") or {}).get(k) for k in BREAKDOWN})
    out.update({c: strat.get(c) for c in STRATEGY_COLUMNS})
    out.update({c: proof.get(c) for c in ("space_size", "evaluated", "solver_calls", "gap")})
    out["solve_s"] = row["seconds"].get("solve")
    ex = row.get("explanation")
    out["explanation"] = ex["summary"] if ex else row.get("message")
    return out


def write_csv(rows, path):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        w.writeheader()
        for row in rows:
            w.writerow({k: ("unlimited" if isinstance(v, float) and math.isinf(v) else v)
                        for k, v in flat_row(row).items()})


EFFORT = ("evaluated", "solver_calls")     # a row's proof counters that depend on the path taken


def comparable(row: dict) -> dict:
    """A row without its timings and its search effort (EFFORT: how many
    strategies were evaluated and solves made depend on the family the
    search opened first, the last point's optimum when the same process
    solved one, _hints): what two runs of the same point share, the answer
    and its proof."""
    out = {k: v for k, v in row.items() if k != "seconds"}
    if isinstance(out.get("proof"), dict):
        out["proof"] = {k: v for k, v in out["proof"].items() if k not in EFFORT}
    return json.loads(json.dumps(out, default=str))


def format_rows(rows) -> str:
    """A terminal table, one line per point."""
    over = [k for k in SYSTEM_OVERRIDES if any(r.get(k) is not None for r in rows)]
    head = (f"{'model':<10} {'system':<18} {'gpus':>6} "
            + "".join(f"{k:>13}" for k in over)
            + f" {'status':<10} {'samples/s':>10} {'MFU':>6}  strategy")
    lines = [head]
    for r in rows:
        res = r.get("result") or {}
        s = res.get("strategy")
        if s:
            offl = offload_letters(s)
            strat = (f"tp={s['tp']} pp={s['pp']} dp={s['dp']} mb={s['microbatch']} v={s['interleave']} "
                     f"rec={s['recompute']}" + (f" off={offl}" if offl else ""))
            perf = f"{res['samples_per_s']:>10.2f} {100 * res['mfu']:>5.1f}%"
        else:
            ex = r.get("explanation")
            strat = ", ".join(ex["conflicts"]) if ex else r.get("message", "")
            perf = f"{'-':>10} {'-':>6}"
        vals = "".join(f"{_fmt_override(r.get(k)):>13}" for k in over)
        lines.append(f"{r.get('model', '?'):<10} {r.get('system', '?'):<18} {r.get('gpus', 0):>6} {vals} "
                     f"{r['status']:<10} {perf}  {strat}")
    return "\n".join(lines)


def offload_letters(strategy: dict) -> str:
    """What a strategy offloads, as letters: w(eights), a(ctivations), o(ptimizer)."""
    return "".join(c for c, k in (("w", "offload_weights"), ("a", "offload_activations"),
                                  ("o", "offload_optimizer")) if strategy[k])


def _fmt_override(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and math.isinf(v) or v == "unlimited":
        return "unlimited"
    return f"{v:g}" if isinstance(v, (int, float)) else str(v)


def progress_printer(stream=None) -> Callable:
    """A progress callback: a bar redrawn in place on a terminal, a line
    every 10% otherwise."""
    stream = stream or sys.stderr
    tty = stream.isatty()
    last = [-1]

    def show(done, total, infeasible, errors, eta):
        frac = done / total if total else 1.0
        text = (f"{done}/{total} points, {infeasible} infeasible"
                + (f", {errors} errors" if errors else "") + f", ETA {_fmt_eta(eta)}")
        if tty:
            bar = "#" * int(24 * frac)
            print(f"\r  sweep [{bar:<24}] {text}   ", end="" if done < total else "\n",
                  file=stream, flush=True)
        elif int(10 * frac) > last[0] or done == total:
            last[0] = int(10 * frac)
            print(f"  sweep: {text}", file=stream, flush=True)
    return show


def _fmt_eta(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"
