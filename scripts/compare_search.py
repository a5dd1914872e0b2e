"""Two checkouts of the project on the same search problems, in one run.

    python scripts/compare_search.py OLD_DIR NEW_DIR [--repeats 1] [--cases 1T megatron-1T ...]
                                     [--old-params JSON] [--new-params JSON]

Each problem is planned in a fresh subprocess with PYTHONPATH set to each
checkout in turn (old, new, old, new, ...), so both see the same machine
state. Prints per problem and checkout the median wall time of plan(), the
CP-SAT solves, the status and the best samples/s, then new / old as a
ratio. `git worktree add /tmp/old <commit>` gives an old checkout.
--old-params / --new-params: CP-SAT settings over the master's own
(optimizer.master.SOLVER_PARAMETERS) on that side, e.g. the same checkout
twice: `compare_search.py . . --new-params '{"cp_model_use_sat_presolve": false}'`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

CASES = {
    "1T": "opt.plan('1T', 'h100-80g-nvl8', 16384)",
    "megatron-1T": "opt.plan('megatron-1T', 'h100-80g-nvl8', 16384)",
    "1T-offload": "opt.plan('1T', load_system('h100-80g-nvl8', offload_gib=1024, offload_gbps=100), 16384)",
    "18T-offload-zero1": "opt.plan('18T', 'h100-80g-nvl8-off1t-100gbps', 4096, pin={'zero': 1})",
    "405B-seq131072": "opt.plan(load_model('llama3.1-405B', seq_len=131072), 'h100-80g-nvl8', 16384)",
    "8B-8gpus": "opt.plan('llama3-8B', 'h100-80g-nvl8', 8)",
    "22B-8gpus-offload": "opt.plan('megatron-22B', load_system('h100-80g-nvl8', offload_gib=512, offload_gbps=100), 8)",
    # a study point (strong scaling, finding 5)
    "1T-12288-nvl16-offload": "opt.plan('1T', load_system('h100-80g-nvl8', nvlink_size=16, offload_gib=1024, "
                              "offload_gbps=100), 12288, pin={'zero': [0, 1]})",
    # the study's slowest point (offload capacity, finding 4): many families within 0.5% of the optimum
    "96T-16384-offload": "opt.plan('96T', load_system('h100-80g-nvl8', offload_gib=1024, offload_gbps=100), 16384, "
                         "pin={'zero': [0, 1]})",
}

CHILD = """
import json, time
import optimizer as opt
import optimizer.master
from optimizer.spec import load_model, load_system
if json.loads({params!r}):      # a checkout from before the settings were a dict has none to change
    optimizer.master.SOLVER_PARAMETERS.update(json.loads({params!r}))
t = time.perf_counter()
r = {call}
print(json.dumps({{"s": time.perf_counter() - t, "solves": r.stats.get("solver_calls", 0), "status": r.status,
                  "sps": r.best.samples_per_s if r.best else None}}))
"""


def run(checkout: str, case: str, params: str = "{}") -> dict:
    env = {**os.environ, "PYTHONPATH": os.path.abspath(checkout)}
    # cwd too: `python -c` puts the working directory first on the path
    out = subprocess.run([sys.executable, "-c", CHILD.format(call=CASES[case], params=params)], env=env, cwd=checkout,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--cases", nargs="+", default=[c for c in CASES if c != "22B-8gpus-offload"],
                    choices=sorted(CASES))
    ap.add_argument("--old-params", default="{}", help="CP-SAT settings (JSON) for the old side")
    ap.add_argument("--new-params", default="{}", help="CP-SAT settings (JSON) for the new side")
    a = ap.parse_args()
    for flag, text in (("--old-params", a.old_params), ("--new-params", a.new_params)):
        try:
            if not isinstance(json.loads(text), dict):
                raise ValueError
        except ValueError:
            print(f"compare_search.py: {flag}: expected a JSON object of CP-SAT settings, got {text!r}",
                  file=sys.stderr)
            return 2
    params = {"old": a.old_params, "new": a.new_params}
    print(f"{'problem':20s} {'old s':>8s} {'new s':>8s} {'new/old':>8s} {'solves':>9s}  result (old | new)")
    for case in a.cases:
        res = {"old": [], "new": []}
        for _ in range(a.repeats):
            for side, path in (("old", a.old), ("new", a.new)):
                res[side].append(run(path, case, params[side]))
        med = {k: statistics.median(x["s"] for x in v) for k, v in res.items()}
        last = {k: v[-1] for k, v in res.items()}
        fmt = lambda x: f"{x['status']} {x['sps']:.2f}" if x["sps"] else x["status"]  # noqa: E731
        print(f"{case:20s} {med['old']:8.2f} {med['new']:8.2f} {med['new'] / med['old']:8.2f} "
              f"{last['old']['solves']:4d}/{last['new']['solves']:<4d}  {fmt(last['old'])} | {fmt(last['new'])}",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
