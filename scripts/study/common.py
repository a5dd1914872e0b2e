"""What every finding script of the study shares: arguments, running its
grid as a resumable sweep, the CSV, plots and markdown tables.

A finding is a module with NAME, TITLE, CLAIM, grid(quick) -> dict,
plot(rows, path) and analyse(rows) -> (markdown table, verdict, reason);
`main(module)` runs one from the command line, report.py runs them all.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import yaml  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import optimizer as opt  # noqa: E402
from optimizer.sweep import EXECUTORS, offload_letters, progress_printer  # noqa: E402

MODELS = ["1T", "2T", "4T", "7T", "11T", "18T", "26T", "37T", "53T", "72T", "96T", "128T"]
SYSTEM = "h100-80g-nvl8"
# The study's space is Megatron's: the optimizer state may be sharded over
# the data-parallel group (ZeRO-1, the distributed optimizer) but gradients
# and weights are not. ZeRO-2/3 would change its findings (18T fits on 4,096
# GPUs with ZeRO-3, at 1.7% MFU), so every grid pins the stage to 0 or 1.
STUDY_PIN = {"zero": [0, 1]}


def options(**more) -> dict:
    """A grid's options: the study's space, and any of the finding's own."""
    return {"pin": dict(STUDY_PIN), **more}


def parser(doc: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a few points per finding (smoke test)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "study"),
                    help="where grids, CSVs and plots go (default docs/study)")
    ap.add_argument("--cache", default=str(ROOT / "build" / "study-cache"),
                    help="results files of the sweeps, so a rerun solves only new points")
    ap.add_argument("--executor", default="local", choices=EXECUTORS)
    ap.add_argument("--workers", type=int)
    ap.add_argument("--address", help="Dask scheduler address (with --executor dask)")
    ap.add_argument("--fresh", action="store_true", help="solve every point again")
    ap.add_argument("--quiet", action="store_true")
    return ap


def run_grid(finding, args):
    """Sweep the finding's grid (resumable through the cache) and write its
    grid YAML and CSV into args.out."""
    out, cache = Path(args.out), Path(args.cache)
    out.mkdir(parents=True, exist_ok=True)
    cache.mkdir(parents=True, exist_ok=True)
    grid = finding.grid(args.quick)
    (out / f"{finding.NAME}.grid.yaml").write_text(yaml.safe_dump(grid, sort_keys=False))
    if not args.quiet:
        print(f"{finding.NAME}: {finding.TITLE}", file=sys.stderr)
    res = opt.sweep(grid, executor=args.executor, workers=args.workers, address=args.address,
                    results=cache / f"{finding.NAME}{'-quick' if args.quick else ''}.jsonl",
                    fresh=args.fresh, progress=None if args.quiet else progress_printer())
    res.to_csv(out / f"{finding.NAME}.csv")
    return res


def run(finding, args) -> dict:
    """Sweep, plot and analyse one finding."""
    res = run_grid(finding, args)
    rows = res.rows
    plot_path = Path(args.out) / f"{finding.NAME}.png"
    finding.plot(rows, plot_path)
    table, verdict, reason = finding.analyse(rows)
    return {"name": finding.NAME, "title": finding.TITLE, "claim": finding.CLAIM, "rows": rows,
            "method": method_text(finding.__doc__),
            "table": table, "verdict": verdict, "reason": reason, "plot": plot_path, "solved": res.solved,
            "solve_s": sum(row["seconds"]["total"] for row in rows)}


def method_text(doc: str) -> str:
    """A finding's docstring without its usage line, as paragraphs."""
    keep = [line for line in doc.strip().splitlines() if not line.strip().startswith("python scripts/")]
    paragraphs = " ".join(line.strip() or "\n\n" for line in keep).split("\n\n")
    return "\n\n".join(" ".join(p.split()) for p in paragraphs if p.strip())


def main(finding):
    args = parser(finding.__doc__).parse_args()
    r = run(finding, args)
    print(f"\n## {r['title']}\n\n{r['table']}\n\n**{r['verdict']}**: {r['reason']}\n\nplot: {r['plot']}")


# ------------------------------------------------------------------ rows

def pick(rows, **where) -> list:
    """Rows whose fields equal `where` (None matches a missing override)."""
    return [r for r in rows if all(r.get(k) == v for k, v in where.items())]


def one(rows, **where) -> dict:
    found = pick(rows, **where)
    if len(found) != 1:
        raise LookupError(f"{len(found)} rows match {where}")
    return found[0]


def mfu(row) -> float | None:
    return row["result"]["mfu"] if row.get("result") else None


def sps(row) -> float | None:
    return row["result"]["samples_per_s"] if row.get("result") else None


def num(x) -> str:
    """A count with thousands separators; 'no amount' for a fix that does not exist."""
    return "no amount" if x is None else f"{x:,}"


def pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def strategy_text(row) -> str:
    if not row.get("result"):
        ex = row.get("explanation")
        return "no fit: " + ", ".join(ex["conflicts"]) if ex else row.get("message", row["status"])
    s = row["result"]["strategy"]
    off = offload_letters(s)
    return (f"tp{s['tp']} pp{s['pp']} dp{s['dp']} mb{s['microbatch']} v{s['interleave']} "
            f"{s['recompute']}" + (f" off:{off}" if off else ""))


def shares(row) -> dict:
    """The best strategy's time breakdown as fractions of the batch time."""
    b = row["result"]["breakdown_s"]
    total = row["result"]["time_per_batch_s"]
    return {k: v / total for k, v in b.items()}


def compute_share(row) -> float:
    """Fraction of the batch time spent in forward and backward passes."""
    sh = shares(row)
    return sh["forward"] + sh["backward"]


def overhead_text(row) -> str:
    """Where the batch time goes beyond the passes themselves, in words."""
    sh = shares(row)
    compute = compute_share(row)
    rest = sorted(((v, k) for k, v in sh.items() if k not in ("forward", "backward") and v >= 0.005),
                  reverse=True)
    return (f"forward and backward passes take {pct(compute)} of the batch time (MFU would be "
            f"{pct(mfu(row) / compute)} were that all); the rest is "
            + ", ".join(f"{k.replace('_', ' ')} {pct(v)}" for v, k in rest))


def md_table(headers, body) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in body]
    return "\n".join(lines)


def mfu_table(rows, columns) -> str:
    """MFU by model (one line each) under columns of (header, row filter)."""
    models = sorted({r["model"] for r in rows}, key=model_index)
    body = [[m] + [pct(mfu(one(rows, model=m, **where))) for _, where in columns] for m in models]
    return md_table(["model"] + [h for h, _ in columns], body)


def model_index(name) -> int:
    return MODELS.index(name) if name in MODELS else len(MODELS)


# ------------------------------------------------------------------ plots

def pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    plt.rcParams.update({"figure.dpi": 110, "axes.grid": True, "grid.alpha": 0.3, "font.size": 9})
    return plt


def mfu_by_model(ax, rows, label, **style):
    """One line of MFU against model (x = position in MODELS); infeasible
    models are marked with an x at 0."""
    rows = sorted(rows, key=lambda r: model_index(r["model"]))
    xs = [model_index(r["model"]) for r in rows]
    ys = [100 * mfu(r) if mfu(r) is not None else math.nan for r in rows]
    line, = ax.plot(xs, ys, marker="o", label=label, **style)
    bad = [x for x, y in zip(xs, ys) if math.isnan(y)]
    if bad:
        ax.plot(bad, [0] * len(bad), "x", color=line.get_color(), markersize=8)
    names = sorted({r["model"] for r in rows}, key=model_index)
    ax.set_xticks([model_index(n) for n in names], names, rotation=45)
    ax.set_ylabel("MFU (%)")
    ax.set_xlabel("model (x at 0: nothing fits)")
    ax.set_ylim(-3, 85)
    return line
