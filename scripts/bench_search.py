"""Search speed: the CP-SAT search's bars, medians over the repeats.

    python scripts/bench_search.py [--repeats 3] [--quick | --bars]

1. For megatron-1T and the family's 1T on 4,096 / 8,192 / 12,288 / 16,384
   GPUs of h100-80g-nvl8, fp8, batch <= 3072 (a variable), with and without
   1 TiB / 100 GB/s offload: status, median seconds, CP-SAT solves, the
   model's table rows, space size, strategies evaluated exactly.
   Bars: 1T on 16,384 (no offload tier) proven in under 1 s; table rows
   at most 50,000.
2. llama3.1-405B on 16,384 H100s at sequence 131,072 (bar: proven, < 5 s).
3. The fewest GPUs for 1T at 150 samples/s over 1,024..32,768 in steps of
   8 (bar: proven, < 30 s), capped at FEWEST_CAP_S.
4. megatron-22B on 8 GPUs with 512 GiB of offload (one run): offload on
   few GPUs, where the bound stays loose over many families.
5. Brute force on a case it can finish, against plan on the same case in
   the same run, as a speed-up (the same optimum).
6. Infeasible cases: solve time (proving nothing fits) against the time to
   explain it (minimal conflict and every fix), as a ratio.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

from optimizer.master import forget_block_tables  # noqa: E402
from optimizer.search import plan  # noqa: E402
from optimizer.spec import load_model, load_system  # noqa: E402


FEWEST_CAP_S = 300       # the fewest-GPUs case's time limit (it once ran over 15 minutes uncapped)


def timed(fn, repeats):
    """The median over `repeats` runs, each from a cold start (no block
    tables kept from an earlier plan: master.forget_block_tables)."""
    times, res = [], None
    for _ in range(repeats):
        forget_block_tables()
        t0 = time.perf_counter()
        res = fn()
        times.append(time.perf_counter() - t0)
    return res, statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    which = ap.add_mutually_exclusive_group()
    which.add_argument("--quick", action="store_true", help="two cases only, one repeat")
    which.add_argument("--bars", action="store_true",
                    help="only the issue's bars: 1T on 16,384 (with and without offload), 405B, fewest GPUs")
    args = ap.parse_args()
    plain = load_system("h100-80g-nvl8")
    offload = load_system("h100-80g-nvl8", offload_gib=1024, offload_gbps=100)
    cases = [(m, g, s) for m in ("megatron-1T", "1T") for g in (4096, 8192, 12288, 16384)
             for s in (plain, offload)]
    if args.quick:
        cases, args.repeats = cases[:2], 1
    if args.bars:
        cases = [c for c in cases if c[0] == "1T" and c[1] == 16384]
    print(f"{'model':<12} {'gpus':>6} {'offload':<10} {'status':<8} {'median s':>9} {'solves':>6} {'rows':>6} "
          f"{'space':>13} {'evaluated':>9} {'samples/s':>10} {'MFU':>6}")
    worst_t = worst_share = 0.0
    t_16k = {}                  # offload or not -> median seconds
    worst_rows = 0
    all_optimal = True
    for model, gpus, system in cases:
        res, t = timed(lambda: plan(model, system, gpus), args.repeats)
        share = res.stats["evaluated"] / res.stats["space_size"]
        worst_t, worst_share = max(worst_t, t), max(worst_share, share)
        all_optimal &= res.status == "optimal"
        sps = f"{res.best.samples_per_s:10.2f}" if res.best else f"{'-':>10}"
        mfu = f"{100 * res.best.mfu:5.1f}%" if res.best else f"{'-':>6}"
        off = "1TiB/100" if system.offload_gib else "none"
        print(f"{model:<12} {gpus:>6} {off:<10} {res.status:<8} {t:>9.3f} {res.stats['solver_calls']:>6} "
              f"{res.stats['table_rows']:>6,} {res.stats['space_size']:>13,} {res.stats['evaluated']:>9,} "
              f"{sps} {mfu}", flush=True)
        worst_rows = max(worst_rows, res.stats["table_rows"])
        if model == "1T" and gpus == 16384:
            t_16k[bool(system.offload_gib)] = t
    print(f"\n1T on 16,384 (the default system, no offload tier): {t_16k.get(False, math.nan):.2f} s (bar 1 s); "
          f"with 1 TiB of offload {t_16k.get(True, math.nan):.2f} s; most table rows {worst_rows:,} (bar 50,000); "
          f"worst median {worst_t:.2f} s; all optimal: {all_optimal}")

    # long sequences: llama3.1-405B at 131,072 tokens
    res, t = timed(lambda: plan(load_model("llama3.1-405B", seq_len=131072), plain, 16384), args.repeats)
    print(f"\nllama3.1-405B, sequence 131,072, 16,384 GPUs: {res.status} in {t:.2f} s (bar 5 s)"
          + (f", {res.best.samples_per_s:.2f} samples/s" if res.best else "")
          + (f"; {res.explanation['summary']}" if res.explanation else ""), flush=True)

    # the GPU count as a variable
    if not args.quick:
        # capped: unproven after the cap is reported as such (status feasible or unknown)
        res, t = timed(lambda: plan("1T", plain, range(1024, 32769, 8), target_samples_per_s=150,
                                    time_limit_s=FEWEST_CAP_S), args.repeats)
        f = res.stats.get("fewest", {})
        print(f"fewest GPUs for 1T at 150 samples/s over 1,024..32,768 step 8: "
              f"{res.best.strategy.gpus if res.best else None} ({res.status}, "
              f"{'proven' if f.get('proven') else 'not proven'}) in {t:.2f} s (bar 30 s); "
              f"{f.get('below_work_floor', '?')} counts below the work floor, {f.get('windows', '?')} windows, "
              f"{f.get('families_opened', '?')} famil{'y' if f.get('families_opened') == 1 else 'ies'} opened, "
              f"{f.get('solver_calls', '?')} CP-SAT solves "
              f"(capped at {FEWEST_CAP_S} s)", flush=True)

    if args.bars:
        return 0 if all_optimal else 1

    # offload on few GPUs: the bound stays loose over many families
    if not args.quick:
        few = load_system("h100-80g-nvl8", offload_gib=512, offload_gbps=100)
        res, t = timed(lambda: plan("megatron-22B", few, 8), 1)
        print(f"\nmegatron-22B on 8 GPUs with 512 GiB / 100 GB/s offload: {res.status} in {t:.1f} s (one run), "
              f"{res.stats['solver_calls']} CP-SAT solves", flush=True)

    # brute force against plan, same case, same run
    model, gpus, system, mb = ("megatron-22B", 16, plain, 16) if args.quick else ("megatron-22B", 64, offload, 64)
    fast, t_plan = timed(lambda: plan(model, system, gpus, max_batch=mb), args.repeats)
    slow, t_brute = timed(lambda: plan(model, system, gpus, max_batch=mb, method="enumerate"), 1)
    same = abs(fast.best.samples_per_s - slow.best.samples_per_s) <= 1e-9 * slow.best.samples_per_s
    print(f"\nbrute force, {model} on {gpus} GPUs, batch <= {mb}: {slow.stats['evaluated']:,} strategies in {t_brute:.2f} s "
          f"({slow.stats['evaluated'] / t_brute:,.0f}/s); plan {t_plan:.3f} s; speed-up {t_brute / t_plan:.1f}x; "
          f"same optimum: {same}")

    # explanations: solve (the infeasibility proof) against explain, same run
    big = load_system("h100-80g-nvl8-off2t-100gbps")
    hard = [("18T", 4096, plain, {"zero": 1}), ("128T", 4096, big, {"zero": 1}), ("1T", 4096, plain, {"tp": 1}),
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
