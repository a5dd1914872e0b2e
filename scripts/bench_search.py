"""Search speed: proven optimum for the 1T models on 4k-16k H100s.

    python scripts/bench_search.py [--repeats 3] [--quick]

For megatron-1T and the family's 1T on 4,096 / 8,192 / 12,288 / 16,384 GPUs
of h100-80g-nvl8, fp8, batch <= 3072, with and without 1 TiB / 100 GB/s
offload: status, median seconds over the repeats, space size, strategies
evaluated exactly and their share. Then brute force on one case it can
finish, against plan on the same case in the same run, as a speed-up.
Last, infeasible cases: solve time (proving nothing fits) against the time
to explain it (minimal conflict and every fix), medians, as a ratio.
Bars: every case optimal in under 10 s on 2 cores, under 0.1% evaluated.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

from optimizer.search import plan  # noqa: E402
from optimizer.spec import load_system  # noqa: E402


def timed(fn, repeats):
    times, res = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        res = fn()
        times.append(time.perf_counter() - t0)
    return res, statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="two cases only, one repeat")
    args = ap.parse_args()
    plain = load_system("h100-80g-nvl8")
    offload = load_system("h100-80g-nvl8", offload_gib=1024, offload_gbps=100)
    cases = [(m, g, s) for m in ("megatron-1T", "1T") for g in (4096, 8192, 12288, 16384)
             for s in (plain, offload)]
    if args.quick:
        cases, args.repeats = cases[:2], 1
    print(f"{'model':<12} {'gpus':>6} {'offload':<10} {'status':<8} {'median s':>9} {'space':>11} "
          f"{'evaluated':>9} {'share':>9} {'samples/s':>10} {'MFU':>6}")
    worst_t = worst_share = 0.0
    all_optimal = True
    for model, gpus, system in cases:
        res, t = timed(lambda: plan(model, system, gpus), args.repeats)
        share = res.stats["evaluated"] / res.stats["space_size"]
        worst_t, worst_share = max(worst_t, t), max(worst_share, share)
        all_optimal &= res.status == "optimal"
        sps = f"{res.best.samples_per_s:10.2f}" if res.best else f"{'-':>10}"
        mfu = f"{100 * res.best.mfu:5.1f}%" if res.best else f"{'-':>6}"
        off = "1TiB/100" if system.offload_gib else "none"
        print(f"{model:<12} {gpus:>6} {off:<10} {res.status:<8} {t:>9.3f} {res.stats['space_size']:>11,} "
              f"{res.stats['evaluated']:>9,} {100 * share:>8.4f}% {sps} {mfu}", flush=True)
    print(f"\nworst median time {worst_t:.2f} s (bar 10 s), worst share evaluated "
          f"{100 * worst_share:.4f}% (bar 0.1%), all optimal: {all_optimal}")

    # brute force against plan, same case, same run
    model, gpus, system = ("megatron-22B", 64, plain) if args.quick else ("1T", 4096, offload)
    fast, t_plan = timed(lambda: plan(model, system, gpus), args.repeats)
    slow, t_brute = timed(lambda: plan(model, system, gpus, method="enumerate"), 1)
    same = abs(fast.best.samples_per_s - slow.best.samples_per_s) <= 1e-9 * slow.best.samples_per_s
    print(f"\nbrute force, {model} on {gpus} GPUs: {slow.stats['evaluated']:,} strategies in {t_brute:.2f} s "
          f"({slow.stats['evaluated'] / t_brute:,.0f}/s); plan {t_plan:.3f} s; speed-up {t_brute / t_plan:.1f}x; "
          f"same optimum: {same}")

    # explanations: solve (the infeasibility proof) against explain, same run
    big = load_system("h100-80g-nvl8-off2t-100gbps")
    hard = [("18T", 4096, plain, None), ("128T", 4096, big, None), ("1T", 4096, plain, {"tp": 1}),
            ("1T", 4096, plain, {"tp": 16, "tp_net": 0})]
    if args.quick:
        hard = hard[:1]
    print(f"\n{'infeasible case':<34} {'solve s':>8} {'explain s':>10} {'ratio':>6}  conflicts")
    ratios = []
    for model, gpus, system, pin in hard:
        runs = [plan(model, system, gpus, pin=pin) for _ in range(args.repeats)]
        t_exp = statistics.median(r.stats["explain_s"] for r in runs)
        t_solve = statistics.median(r.stats["solve_s"] for r in runs)
        ratios.append(t_exp / t_solve)
        name = f"{model}/{gpus} {system.name}" + (f" {pin}" if pin else "")
        print(f"{name:<34} {t_solve:>8.3f} {t_exp:>10.3f} {t_exp / t_solve:>6.1f}  "
              f"{', '.join(runs[0].explanation['conflicts'])}", flush=True)
    print(f"explain / solve: median {statistics.median(ratios):.1f}x, worst {max(ratios):.1f}x")
    return 0 if all_optimal and same else 1


if __name__ == "__main__":
    sys.exit(main())
