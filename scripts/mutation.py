"""Mutation testing of the model's module-level code, which mutmut 3 leaves
alone (it mutates function bodies only): the constants of perf.py (bytes per
parameter, Adam FLOPs, pipe chunks, mask bytes, ring factors), the rules'
lambdas in rules.py and the knobs' `matters` lambdas in knobs.py.

Each mutant is one small change (a number + 1 or set to 0, an arithmetic
operator swapped, a comparison flipped or loosened, & and | swapped) to one
module-level expression, applied to a copy of the package in a temporary
directory; the fast model tests then run against that copy. A mutant is
killed when a test fails.

    python scripts/mutation.py                 # all modules
    python scripts/mutation.py optimizer/perf.py --list

Run from the repository root. Prints each survivor and the score.
"""

from __future__ import annotations

import argparse
import ast
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODULES = ("optimizer/perf.py", "optimizer/rules.py", "optimizer/knobs.py")
TESTS = ("tests/test_terms.py", "tests/test_perf.py", "tests/test_spec.py", "tests/test_counts.py")
# as in pyproject's [tool.mutmut]: the two slow hypothesis properties are left out
DESELECT = ("tests/test_perf.py::test_more_hbm_never_hurts", "tests/test_perf.py::test_more_bandwidth_never_slower")

BINOP_SWAP = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult,
              ast.FloorDiv: ast.Div, ast.Mod: ast.FloorDiv, ast.Pow: ast.Mult,
              ast.BitAnd: ast.BitOr, ast.BitOr: ast.BitAnd}
CMP_SWAP = {ast.Eq: [ast.NotEq], ast.NotEq: [ast.Eq], ast.Gt: [ast.GtE, ast.Lt], ast.GtE: [ast.Gt],
            ast.Lt: [ast.LtE, ast.Gt], ast.LtE: [ast.Lt]}


def _module_level_nodes(tree: ast.Module):
    """Expression nodes outside any def (lambdas included: mutmut does not
    reach them at module level), docstrings excluded."""
    for stmt in tree.body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Import, ast.ImportFrom)):
            continue
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
            continue          # a docstring
        if isinstance(stmt, ast.ClassDef):
            # class-level attributes only (methods are mutmut's)
            for sub in stmt.body:
                if isinstance(sub, (ast.Assign, ast.AnnAssign)) and sub.value is not None:
                    yield from ast.walk(sub.value)
            continue
        yield from ast.walk(stmt)


def mutants(source: str):
    """(line, description, new_source) for each mutant of one module."""
    tree = ast.parse(source)
    lines = source.splitlines(keepends=True)
    offsets = [0]
    for ln in lines:
        offsets.append(offsets[-1] + len(ln))

    def span(node):
        return (offsets[node.lineno - 1] + node.col_offset, offsets[node.end_lineno - 1] + node.end_col_offset)

    def replaced(node, new_node):
        a, b = span(node)
        return source[:a] + "(" + ast.unparse(new_node) + ")" + source[b:]

    for node in _module_level_nodes(tree):
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            for new in {node.value + 1, 0} - {node.value}:
                yield node.lineno, f"col {node.col_offset}: {node.value!r} -> {new!r}", replaced(node, ast.Constant(new))
        elif isinstance(node, ast.BinOp) and type(node.op) in BINOP_SWAP:
            new = ast.BinOp(node.left, BINOP_SWAP[type(node.op)](), node.right)
            yield node.lineno, f"{ast.unparse(node)[:60]!r}: {type(node.op).__name__} -> " \
                               f"{type(new.op).__name__}", replaced(node, new)
        elif isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in CMP_SWAP:
            for op in CMP_SWAP[type(node.ops[0])]:
                new = ast.Compare(node.left, [op()], node.comparators)
                yield node.lineno, f"{ast.unparse(node)[:60]!r}: {type(node.ops[0]).__name__} -> " \
                                   f"{op.__name__}", replaced(node, new)
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Invert):
            yield node.lineno, f"{ast.unparse(node)[:60]!r}: drop ~", replaced(node, node.operand)


def run_tests(pkg_root: Path, tests) -> bool:
    """True when the tests pass (the mutant survives)."""
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
           *[str(ROOT / t) for t in tests], *[a for d in DESELECT for a in ("--deselect", d)]]
    env = {"PYTHONPATH": str(pkg_root), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1",
           "HYPOTHESIS_STORAGE_DIRECTORY": str(pkg_root / ".hypothesis")}
    out = subprocess.run(cmd, cwd=pkg_root, env=env, capture_output=True, text=True)
    return out.returncode == 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("modules", nargs="*", default=MODULES)
    ap.add_argument("--list", action="store_true", help="list the mutants, run nothing")
    ap.add_argument("--tests", nargs="*", default=TESTS)
    args = ap.parse_args(argv)

    killed = survived = 0
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        pkg = Path(tmp)
        for d in ("optimizer", "models", "systems"):
            shutil.copytree(ROOT / d, pkg / d, ignore=shutil.ignore_patterns("__pycache__"))
        if not args.list and not run_tests(pkg, args.tests):
            sys.exit("the tests fail on the unmutated code")
        for mod in args.modules:
            original = (ROOT / mod).read_text()
            for line, what, text in mutants(original):
                if args.list:
                    print(f"{mod}:{line}: {what}")
                    continue
                (pkg / mod).write_text(text)
                alive = run_tests(pkg, args.tests)
                (pkg / mod).write_text(original)
                if alive:
                    survived += 1
                    print(f"SURVIVED {mod}:{line}: {what}", flush=True)
                else:
                    killed += 1
    if not args.list:
        total = killed + survived
        print(f"{killed}/{total} killed ({100 * killed / max(total, 1):.1f}%), {survived} survived, "
              f"{time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
