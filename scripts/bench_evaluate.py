"""Strategies per second of the vectorised model (one core).

    python scripts/bench_evaluate.py [--n 200000] [--repeats 5]

Draws random strategies for the family's 1T on h100-80g-nvl8 with 1 TiB /
100 GB/s offload (most break a rule; the model computes all of them anyway),
times evaluate_arrays over them, and prints the median rate over the repeats.
The bar is 100,000 strategies per second.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from optimizer import perf  # noqa: E402
from optimizer.spec import load_model, load_system  # noqa: E402


def random_knobs(n, rng):
    pow2 = 2 ** np.arange(0, 8)
    return {
        "tp": rng.choice(pow2[:6], n), "pp": rng.choice(pow2, n), "dp": rng.choice(pow2 * 4, n),
        "batch": np.full(n, 3072), "microbatch": rng.choice([1, 2, 4, 8], n),
        "interleave": rng.choice([1, 2, 4], n), "recompute": rng.integers(0, 3, n),
        "tp_comm": rng.integers(0, 3, n), "tp_overlap": rng.integers(0, 3, n),
        **{k: rng.integers(0, 2, n).astype(bool) for k in
           ("ag_redo", "dp_overlap", "fused_activation", "flash_attention",
            "offload_weights", "offload_activations", "offload_optimizer")},
        "zero": rng.integers(0, 4, n), "shard": np.zeros(n, int),
        "tp_net": np.zeros(n, int), "pp_net": rng.integers(0, 2, n), "dp_net": np.ones(n, int),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    model = load_model("1T")
    system = load_system("h100-80g-nvl8", offload_gib=1024, offload_gbps=100)
    knobs = random_knobs(args.n, np.random.default_rng(0))
    rates = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        r = perf.evaluate_arrays(model, system, "fp8", knobs)
        rates.append(args.n / (time.perf_counter() - t0))
    print(f"strategies: {args.n:,} per run, {int(r['feasible'].sum()):,} feasible")
    print(f"rate: median {statistics.median(rates):,.0f} strategies/s "
          f"(min {min(rates):,.0f}, max {max(rates):,.0f}) over {args.repeats} runs")


if __name__ == "__main__":
    main()
