"""This tree against an earlier commit, side by side, in one run: the
evaluator's strategies per second and `plan` for 1T on 16,384 GPUs.

    python scripts/bench_compare.py [--rev 7d47bf9] [--repeats 3]

The earlier commit is extracted with `git archive` into a temporary folder;
each measurement runs in a fresh subprocess, alternating between the two
trees, and the medians are compared as ratios (this / then).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PROBE = r"""
import json, os, sys, time
os.environ.setdefault("OMP_NUM_THREADS", "1")
import numpy as np
from optimizer import perf, plan
from optimizer.spec import load_model, load_system
what = sys.argv[1]
if what == "evaluate":
    rng = np.random.default_rng(0)
    n = 200_000
    pow2 = 2 ** np.arange(0, 8)
    k = {"tp": rng.choice(pow2[:6], n), "pp": rng.choice(pow2, n), "dp": rng.choice(pow2 * 4, n),
         "batch": np.full(n, 3072), "microbatch": rng.choice([1, 2, 4, 8], n),
         "interleave": rng.choice([1, 2, 4], n), "recompute": rng.integers(0, 3, n),
         "tp_comm": rng.integers(0, 3, n), "tp_overlap": rng.integers(0, 3, n),
         **{b: rng.integers(0, 2, n).astype(bool) for b in
            ("ag_redo", "dp_overlap", "optimizer_sharding", "fused_activation", "flash_attention",
             "offload_weights", "offload_activations", "offload_optimizer")},
         # zero and shard for branches with ZeRO stages (older ones read optimizer_sharding)
         "zero": rng.integers(0, 2, n), "shard": np.zeros(n, int),
         "tp_net": np.zeros(n, int), "pp_net": rng.integers(0, 2, n), "dp_net": np.ones(n, int)}
    m, s = load_model("1T"), load_system("h100-80g-nvl8", offload_gib=1024, offload_gbps=100)
    perf.evaluate_arrays(m, s, "fp8", k)
    t0 = time.perf_counter()
    for _ in range(3):
        perf.evaluate_arrays(m, s, "fp8", k)
    print(json.dumps({"rate": 3 * n / (time.perf_counter() - t0)}))
else:
    gpus = int(what)
    t0 = time.perf_counter()
    r = plan("1T", "h100-80g-nvl8", gpus)
    print(json.dumps({"seconds": time.perf_counter() - t0, "status": r.status,
                      "samples_per_s": r.best.samples_per_s, "space": r.stats["space_size"]}))
"""


def run(tree: Path, what: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", PROBE, what], env=env, cwd=tree, capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rev", default="7d47bf9", help="the earlier commit (default: before issue 10)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--gpus", type=int, default=16384)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp)
        archive = subprocess.run(["git", "archive", args.rev], cwd=ROOT, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
        trees = {"this": ROOT, "then": old}
        res = {name: {"evaluate": [], "plan": []} for name in trees}
        for _ in range(args.repeats):
            for name, tree in trees.items():
                res[name]["evaluate"].append(run(tree, "evaluate")["rate"])
                p = run(tree, str(args.gpus))
                res[name]["plan"].append(p["seconds"])
                res[name]["answer"] = (p["status"], round(p["samples_per_s"], 6), p["space"])
    med = {n: {k: statistics.median(v) for k, v in r.items() if k != "answer"} for n, r in res.items()}
    print(f"this tree against {args.rev}, medians of {args.repeats}, one subprocess per measurement")
    print(f"  evaluator   {med['this']['evaluate']:>12,.0f} vs {med['then']['evaluate']:>12,.0f} strategies/s"
          f"   ratio {med['this']['evaluate'] / med['then']['evaluate']:.2f}")
    print(f"  plan 1T on {args.gpus:,} GPUs  {med['this']['plan']:.3f} s vs {med['then']['plan']:.3f} s"
          f"   ratio {med['this']['plan'] / med['then']['plan']:.2f} (process start and import included)")
    print(f"  answers     this {res['this']['answer']}   then {res['then']['answer']}")


if __name__ == "__main__":
    main()
