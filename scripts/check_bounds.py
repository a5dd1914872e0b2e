"""Run the bound property (tests/test_bounds.py) over many random problems
and count the strategies checked: no group or member bound of the search may
exceed the exact time.

    python scripts/check_bounds.py [--examples 400]
"""

import argparse
import os
import sys
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent / "tests"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--examples", type=int, default=400, help="random problems (default 400)")
    args = ap.parse_args()
    os.environ["BOUND_EXAMPLES"] = str(args.examples)
    sys.path.insert(0, str(TESTS))
    import test_bounds                      # reads BOUND_EXAMPLES on import
    t0 = time.perf_counter()
    test_bounds.test_no_bound_exceeds_the_exact_time()
    c = test_bounds.CHECKED
    print(f"{c['strategies']:,} strategies in {c['problems']} random problems (1-5 network tiers): "
          f"no bound above the exact time ({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
