"""Sweep executors on one grid, in one run: serial, local processes, a Dask
cluster started for the sweep, and an already running Dask cluster.

    python scripts/bench_sweep.py [--repeats 3] [--workers 2]

The grid: 1T, 2T, 4T x 4,096 / 8,192 GPUs x no offload / 1 TiB at 100 GB/s
(12 points). Median wall seconds over the repeats, and each executor's
speed-up over serial. Also the time to start a local Dask cluster alone.
Every executor's rows are checked equal to serial's (timings aside).
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("OMP_NUM_THREADS", "1")

import optimizer as opt  # noqa: E402
from optimizer.sweep import comparable  # noqa: E402
from bench_search import timed  # noqa: E402  (scripts/ is on the path when run as a script)

GRID = {"name": "bench", "models": ["1T", "2T", "4T"], "gpus": [4096, 8192],
        "overrides": {"offload_gib": [0, 1024], "offload_gbps": 100}}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    args = ap.parse_args()
    from distributed import LocalCluster

    def start_cluster():
        return LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                            dashboard_address=None)

    serial, t_serial = timed(lambda: opt.sweep(GRID, executor="serial"), args.repeats)
    results = {"serial": (serial, t_serial)}
    results[f"local ({args.workers} processes)"] = timed(
        lambda: opt.sweep(GRID, executor="local", workers=args.workers), args.repeats)
    results[f"dask, cluster started per sweep ({args.workers} workers)"] = timed(
        lambda: opt.sweep(GRID, executor="dask", workers=args.workers), args.repeats)
    with start_cluster() as cluster:
        results["dask, running cluster by address"] = timed(
            lambda: opt.sweep(GRID, executor="dask", address=cluster.scheduler_address), args.repeats)

    def start_stop():
        with start_cluster():
            pass
    _, t_start = timed(start_stop, args.repeats)

    n = len(serial.rows)
    print(f"{n} points, median of {args.repeats}, {os.cpu_count()} cores")
    print(f"  {'executor':<46} {'seconds':>8} {'vs serial':>10}")
    for name, (res, t) in results.items():
        same = [comparable(r) for r in res.rows] == [comparable(r) for r in serial.rows]
        if not same:
            print(f"rows of {name} differ from serial", file=sys.stderr)
            return 1
        print(f"  {name:<46} {t:8.2f} {t_serial / t:9.2f}x")
    print(f"  starting and stopping a local Dask cluster alone: {t_start:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
