"""Fuzz the API and the CLI with the generators of tests/test_fuzz.py, over
many more inputs than the test suite runs, each call in a worker process
with a timeout.

    python scripts/fuzz.py -n 10000                 # API and CLI mixed, 2 workers
    python scripts/fuzz.py -n 2000 --kind cli --workers 1 --seed 7
    python scripts/fuzz.py --replay cli 123         # one input again, in this process, verbose

Input i is generated from random.Random(seed * 10**9 + i) inside the worker,
so every finding is replayed from (kind, number). Counts printed at the end:

  inputs      calls made
  tracebacks  an exception other than OptimizerError escaped the API, or the
              CLI exited 3 (internal error) or printed a traceback
  hangs       a call that took longer than --timeout seconds (killed)
  bad JSON    `--json` output that is not strict JSON
  stderr      a CLI error of more than one line
  bad exit    a CLI exit code other than 0, 1, 2, 3, 4
  known       crashes matching tests/test_fuzz.py KNOWN_BUGS (reported,
              in files this branch does not change); not in tracebacks

Exit code 0 when every count but inputs and known is 0, else 1.
"""

from __future__ import annotations

import argparse
import collections
import multiprocessing as mp
import os
import random
import sys
import tempfile
import time
import traceback
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
sys.path.insert(0, os.path.join(HERE, ".."))

KINDS = ("api", "cli")
OUTCOMES = ("ok", "traceback", "bad_json", "stderr", "bad_exit", "known")


def _rng(seed: int, i: int) -> random.Random:
    return random.Random(seed * 10 ** 9 + i)


def run_one(kind: str, seed: int, i: int, workdir: str, verbose=False) -> tuple[str, str]:
    """(outcome, detail) of input i of `kind`."""
    import test_fuzz as F
    rng = _rng(seed, i)
    if kind == "api":
        try:
            F.run_api(rng, workdir)
        except Exception as e:
            if isinstance(e, F.API_ERRORS):
                return "ok", ""
            text = f"{type(e).__name__}: {e}"
            tb = traceback.format_exc()
            if verbose:
                print(tb, file=sys.stderr)
            if F.known_bug(text):
                return "known", F.known_bug(text)
            return "traceback", tb.strip().splitlines()[-3:][0][:300] + " | " + text[:300]
        return "ok", ""
    argv = F.gen_argv(rng, workdir)
    if verbose:
        print("argv:", argv, file=sys.stderr)
    code, out, err = F.run_cli(argv)
    if verbose:
        print(f"exit {code}\n--- stdout\n{out[-3000:]}\n--- stderr\n{err}", file=sys.stderr)
    if code == 3 and F.known_bug(err):
        return "known", F.known_bug(err)
    problems = F.cli_problems(argv, code, out, err)
    if not problems:
        return "ok", ""
    p = problems[0]
    outcome = ("traceback" if p.startswith("exit 3") or "traceback" in p else
               "bad_json" if p.startswith("bad JSON") else
               "stderr" if "lines on stderr" in p else "bad_exit")
    return outcome, f"{p} | argv={argv!r}"[:600]


def _worker(conn, workdir):
    warnings.simplefilter("ignore")          # NumPy warnings are counted by the CLI's stderr check
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import test_fuzz  # noqa: F401  (import once, before the first timed call)
    conn.send("ready")
    while True:
        job = conn.recv()
        if job is None:
            return
        kind, seed, i = job
        try:
            conn.send(run_one(kind, seed, i, workdir))
        except BaseException as e:       # the harness itself must not die silently
            conn.send(("traceback", f"harness: {type(e).__name__}: {e}"))


class Worker:
    def __init__(self, ctx, workdir):
        self.ctx, self.workdir = ctx, workdir
        self.start()

    def start(self):
        self.conn, child = self.ctx.Pipe()
        self.proc = self.ctx.Process(target=_worker, args=(child, self.workdir), daemon=True)
        self.proc.start()
        if not self.conn.poll(120):
            raise RuntimeError("worker did not start")
        self.conn.recv()
        self.job, self.t0 = None, 0.0

    def submit(self, job):
        self.job, self.t0 = job, time.monotonic()
        self.conn.send(job)

    def kill(self):
        self.proc.kill()
        self.proc.join()
        self.start()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=10_000, help="inputs (default 10,000)")
    ap.add_argument("--kind", choices=("mixed",) + KINDS, default="mixed")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds per call before it counts as a hang")
    ap.add_argument("--replay", nargs=2, metavar=("KIND", "NUMBER"), help="run one input in this process")
    ap.add_argument("--show", type=int, default=8, help="findings shown per outcome")
    args = ap.parse_args(argv)

    if args.replay:
        with tempfile.TemporaryDirectory() as d:
            print(run_one(args.replay[0], args.seed, int(args.replay[1]), d, verbose=True))
        return 0

    jobs = [((KINDS[i % 2] if args.kind == "mixed" else args.kind), args.seed, i) for i in range(args.n)]
    counts = collections.Counter()
    by_kind = collections.Counter()
    findings = collections.defaultdict(list)
    slowest = []
    t_start = time.monotonic()
    ctx = mp.get_context("fork")
    with tempfile.TemporaryDirectory() as workdir:
        workers = [Worker(ctx, workdir) for _ in range(max(1, args.workers))]
        pending = list(reversed(jobs))
        done = 0
        while done < len(jobs):
            for w in workers:
                if w.job is None and pending:
                    w.submit(pending.pop())
            busy = [w for w in workers if w.job is not None]
            ready = mp.connection.wait([w.conn for w in busy], timeout=0.1)
            now = time.monotonic()
            for w in busy:
                kind, _, i = w.job
                if w.conn in ready:
                    try:
                        outcome, detail = w.conn.recv()
                    except EOFError:                  # the worker died (a crash in C code)
                        outcome, detail = "traceback", "worker process died"
                        w.kill()
                    elapsed = now - w.t0
                    if elapsed > args.timeout:        # finished, but too late: a hang all the same
                        outcome, detail = "hang", f"{elapsed:.1f} s (then {outcome})"
                elif now - w.t0 > args.timeout:
                    outcome, detail, elapsed = "hang", f"> {args.timeout:g} s", now - w.t0
                    w.kill()
                else:
                    continue
                counts[outcome] += 1
                by_kind[kind] += 1
                slowest.append((elapsed, kind, i))
                if outcome != "ok":
                    findings[outcome].append(f"{kind} {i}: {detail}")
                w.job = None
                done += 1
                if done % 1000 == 0:
                    print(f"  {done:,} inputs, {time.monotonic() - t_start:.0f} s: "
                          + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())), file=sys.stderr, flush=True)
        for w in workers:
            try:
                w.conn.send(None)
            except OSError:
                pass
            w.proc.join(timeout=5)
            if w.proc.is_alive():
                w.proc.kill()

    for outcome in ("traceback", "hang", "bad_json", "stderr", "bad_exit", "known"):
        for line in findings[outcome][:args.show]:
            print(f"{outcome}: {line}")
    slowest.sort(reverse=True)
    print("slowest: " + ", ".join(f"{k} {i} {t:.1f} s" for t, k, i in slowest[:5]))
    print(f"inputs {args.n:,} ({', '.join(f'{k} {v:,}' for k, v in sorted(by_kind.items()))}) in "
          f"{time.monotonic() - t_start:.0f} s, seed {args.seed}, timeout {args.timeout:g} s")
    print(f"tracebacks {counts['traceback']}  hangs {counts['hang']}  bad JSON {counts['bad_json']}  "
          f"stderr > 1 line {counts['stderr']}  bad exit {counts['bad_exit']}  known (reported) {counts['known']}")
    bad = sum(counts[k] for k in ("traceback", "hang", "bad_json", "stderr", "bad_exit"))
    return 0 if bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
