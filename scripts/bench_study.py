"""The study's points, each planned once, and the seconds they take: the
summed time the search issue's bar counts (solve and explain of every
point; the baseline of 154 s was measured on the 2021 space, before cp,
ZeRO 2/3 and shard groups).

    python scripts/bench_study.py [--findings model_size,mappings] [--workers 1]
                                  [--results build/bench-study.jsonl] [--json]

Each finding's full grid (scripts/study/*.py, without --quick) is swept
with the given workers (1 by default, so that a point's seconds are not
shared with another point's). Prints, per finding: points, infeasible
points, summed solve and explain seconds, and the slowest points. With
--results the rows are kept, and a rerun that names the same file solves
only the points not yet in it.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts" / "study"))

import optimizer as opt  # noqa: E402

FINDINGS = ["mappings", "model_size", "strong_scaling", "offload_bandwidth", "offload_capacity", "beyond_10t"]


def summary(name: str, rows: list) -> dict:
    secs = [r.get("seconds", {}) for r in rows]
    slow = sorted(rows, key=lambda r: -r.get("seconds", {}).get("total", 0.0))[:3]
    return {"finding": name, "points": len(rows),
            "infeasible": sum(r["status"] == "infeasible" for r in rows),
            "errors": sum(r["status"] == "error" for r in rows),
            "solve_s": sum(s.get("solve", 0.0) for s in secs),
            "explain_s": sum(s.get("explain", 0.0) for s in secs),
            "total_s": sum(s.get("total", 0.0) for s in secs),
            "slowest": [{"model": r.get("model"), "gpus": r.get("gpus"), "status": r["status"],
                         "overrides": r["point"]["overrides"], "seconds": r.get("seconds")} for r in slow]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--findings", default=",".join(FINDINGS),
                    help=f"comma-separated, of: {', '.join(FINDINGS)} (default all)")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--results", help="a JSON-lines file to keep the rows in (one per finding: NAME is appended)")
    ap.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = ap.parse_args()
    names = [n.strip() for n in args.findings.split(",") if n.strip()]
    for n in names:
        if n not in FINDINGS:
            print(f"bench_study.py: --findings: no finding {n!r} (known: {', '.join(FINDINGS)})", file=sys.stderr)
            sys.exit(2)
    out = []
    for n in names:
        finding = importlib.import_module(n)
        results = None if args.results is None else f"{args.results}.{n}.jsonl"
        res = opt.sweep(finding.grid(False), executor="serial" if args.workers == 1 else "local",
                        workers=None if args.workers == 1 else args.workers, results=results,
                        )
        s = summary(n, res.rows)
        out.append(s)
        if not args.json:
            print(f"{n}: {s['points']} points, {s['infeasible']} infeasible, {s['errors']} errors; "
                  f"solve {s['solve_s']:.1f} s + explain {s['explain_s']:.1f} s = {s['total_s']:.1f} s",
                  flush=True)
            for r in s["slowest"]:
                print(f"    {r['model']} on {r['gpus']} {r['overrides']} {r['status']}: "
                      f"{r['seconds'].get('total', 0):.1f} s (explain {r['seconds'].get('explain', 0):.1f})",
                      flush=True)
    total = {k: sum(s[k] for s in out) for k in ("points", "infeasible", "errors", "solve_s", "explain_s", "total_s")}
    if args.json:
        print(json.dumps({"findings": out, "total": total}, indent=1))
    else:
        print(f"all: {total['points']} points, {total['infeasible']} infeasible; solve {total['solve_s']:.1f} s "
              f"+ explain {total['explain_s']:.1f} s = {total['total_s']:.1f} s")


if __name__ == "__main__":
    main()
