"""Calibrate both built-in suites and report before / after / leave-one-out.

    python scripts/calibrate_all.py            # fits into a temporary directory, prints the figures
    python scripts/calibrate_all.py --write    # and writes systems/a100-80g.yaml, systems/h100-80g-nvl8.yaml

A100: the eight Selene iteration times (Korthikanti et al. 2022, Table 5) on
the a100-80g base. H100: the nine Megatron-Core weak-scaling runs on the
h100-80g-nvl8 base; afterwards the Megatron-Bridge Llama 3 70B fp8 rows are
predicted out of sample by the fitted H100 file (they are not fitted: two
runs, fp8, a different release). The same commands by hand:

    optimize calibrate --suite selene --system a100-80g --out A100.yaml
    optimize calibrate --suite h100-core --system h100-80g-nvl8 --out H100.yaml
    optimize validate --suite h100-bridge --system H100.yaml

Scripts may change systems/ only when asked (--write): the model under the
fit is still changing, so a committed fit goes stale with it.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from optimizer.calibrate import calibrate, validate_runs, write_system
from optimizer.cli import format_calibration

ROOT = Path(__file__).resolve().parent.parent
JOBS = (("selene", "a100-80g"), ("h100-core", "h100-80g-nvl8"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--write", action="store_true", help="write the fitted files over systems/<base>.yaml")
    ap.add_argument("--no-loo", action="store_true", help="skip leave-one-out (faster)")
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="calibrate-"))
    fitted = {}
    for suite, base in JOBS:
        t0 = time.perf_counter()
        cal = calibrate(suite, base, loo=not args.no_loo)
        path = write_system(cal, tmp / f"{base}.yaml")
        fitted[base] = path
        print(format_calibration(cal))
        print(f"({time.perf_counter() - t0:.0f} s; fitted file {path})\n")
    v = validate_runs("h100-bridge", str(fitted["h100-80g-nvl8"]))
    print(f"out of sample: {v['runs']} on the fitted H100 file")
    for r in v["rows"]:
        print(f"  {r['name']:<24} measured {r['measured_s']:.3f} s  model {r['predicted_s']:.3f} s  "
              f"{r['error_pct']:+.2f}%  {r['knobs']}")
    if args.write:
        for base, path in fitted.items():
            dest = ROOT / "systems" / f"{base}.yaml"
            shutil.copyfile(path, dest)
            print(f"wrote {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
