"""What a sweep's hints save (sweep._hints: a point opens the optimum of
the last point of its kind first, then that point's near ties): a part
of a study grid swept serially
with the hints, then without, each from cold block tables, in one run.

    python scripts/bench_hints.py [--finding offload_capacity] [--models 1T,7T,26T,72T]
                                  [--gpus 4096,12288]

Prints each run's seconds and CP-SAT solves, whether the answers are the
same (status, samples/s and strategy of every point), and the ratio.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts" / "study"))
sys.path.insert(0, str(ROOT))

from optimizer import master  # noqa: E402

sweep = importlib.import_module("optimizer.sweep")


class _Forgetful(dict):
    """Hints that are never kept."""

    def __setitem__(self, key, value):
        pass


def run(grid, hints: bool):
    master.forget_block_tables()
    kept = sweep._hints
    sweep._hints = {} if hints else _Forgetful()
    try:
        t = time.perf_counter()
        rows = sweep.sweep(grid, executor="serial").rows
        return time.perf_counter() - t, rows
    finally:
        sweep._hints = kept


def answer(row):
    res = row.get("result") or {}
    return row["status"], res.get("samples_per_s"), res.get("strategy")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--finding", default="offload_capacity")
    ap.add_argument("--models", default="1T,7T,26T,72T")
    ap.add_argument("--gpus", default="4096,12288")
    args = ap.parse_args()
    grid = importlib.import_module(args.finding).grid(False)
    grid["models"] = args.models.split(",")
    grid["gpus"] = [int(g) for g in args.gpus.split(",")]
    out = {}
    for hints in (True, False):
        seconds, rows = run(grid, hints)
        solves = sum(r.get("proof", {}).get("solver_calls", 0) for r in rows)
        out[hints] = (seconds, rows)
        print(f"{'with' if hints else 'without'} hints: {len(rows)} points, {seconds:.1f} s, {solves} CP-SAT solves",
              flush=True)
    same = [answer(r) for r in out[True][1]] == [answer(r) for r in out[False][1]]
    print(f"same answers: {same}; with / without: {out[True][0] / out[False][0]:.2f}")


if __name__ == "__main__":
    main()
