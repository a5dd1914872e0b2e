"""How the A100 efficiency curves in systems/a100-80g.yaml were chosen.

One global fit over all eight published iteration times (never per point):
the matrix efficiency curve is a saturating function of the operation size,
eff(x) = top * x / (x + half) (x in GFLOP), sampled at fixed sizes; the HBM
curve is scaled by one factor; NVLink and InfiniBand each get one efficiency.
Four to five numbers for eight points, fitted by Nelder-Mead on
mean + max absolute error. Prints the fitted values and the YAML lines.

    python scripts/calibrate.py
"""

from __future__ import annotations

import dataclasses
import sys

import numpy as np

from optimizer.spec import load_system
from optimizer.validate import validate

MATRIX_SIZES = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0)
BASE = load_system("a100-80g")
HBM_SHAPE = ((0.1, 0.3), (1.0, 0.6), (10.0, 0.8), (100.0, 0.9), (1000.0, 0.95))


def system_for(params):
    top, half, hbm_scale, nvl, ib = params
    matrix = tuple((x, round(float(min(1.0, max(0.01, top * x / (x + half)))), 4)) for x in MATRIX_SIZES)
    hbm = tuple((x, round(float(min(1.0, e * hbm_scale)), 4)) for x, e in HBM_SHAPE)
    nets = (dataclasses.replace(BASE.networks[0], efficiency=float(min(1.0, nvl))),
            dataclasses.replace(BASE.networks[1], efficiency=float(min(1.0, ib))))
    return dataclasses.replace(BASE, matrix_efficiency=matrix, hbm_efficiency=hbm, networks=nets)


def objective(params):
    top, half, hbm_scale, nvl, ib = params
    if not (0.3 < top <= 1.0 and 0 < half < 1000 and 0.3 < hbm_scale <= 1.0 and 0.3 < nvl <= 1 and 0.3 < ib <= 1):
        return 1e9
    v = validate(system_for(params))["iteration_time"]
    return v["mean_abs_error_pct"] + v["max_abs_error_pct"]


def nelder_mead(f, x0, step, iters=400):
    pts = [np.array(x0, float)] + [np.array(x0, float) + np.eye(len(x0))[i] * step[i] for i in range(len(x0))]
    vals = [f(p) for p in pts]
    for _ in range(iters):
        order = np.argsort(vals)
        pts, vals = [pts[i] for i in order], [vals[i] for i in order]
        centroid = np.mean(pts[:-1], axis=0)
        refl = centroid + (centroid - pts[-1])
        fr = f(refl)
        if fr < vals[0]:
            exp = centroid + 2 * (centroid - pts[-1])
            fe = f(exp)
            pts[-1], vals[-1] = (exp, fe) if fe < fr else (refl, fr)
        elif fr < vals[-2]:
            pts[-1], vals[-1] = refl, fr
        else:
            con = centroid + 0.5 * (pts[-1] - centroid)
            fc = f(con)
            if fc < vals[-1]:
                pts[-1], vals[-1] = con, fc
            else:
                pts = [pts[0] + 0.5 * (p - pts[0]) for p in pts]
                vals = [f(p) for p in pts]
    i = int(np.argmin(vals))
    return pts[i], vals[i]


def main():
    x0 = [0.85, 3.0, 0.9, 0.75, 0.9]
    best, val = nelder_mead(objective, x0, [0.05, 2.0, 0.1, 0.1, 0.05])
    sys_ = system_for(best)
    v = validate(sys_)["iteration_time"]
    print(f"top={best[0]:.4f} half={best[1]:.4f} hbm_scale={best[2]:.4f} nvlink={best[3]:.4f} ib={best[4]:.4f}")
    print(f"mean {v['mean_abs_error_pct']:.2f}%  max {v['max_abs_error_pct']:.2f}%")
    for p in v["points"]:
        print(f"  {p['model']:14s} {p['variant']:7s} {p['published']:7.2f} {p['model_value']:7.2f} {p['error_pct']:+6.2f}%")
    print("matrix_efficiency:", [list(p) for p in sys_.matrix_efficiency])
    print("hbm efficiency:", [list(p) for p in sys_.hbm_efficiency])
    print("nvlink efficiency:", round(sys_.networks[0].efficiency, 4), "ib efficiency:", round(sys_.networks[1].efficiency, 4))
    return 0


if __name__ == "__main__":
    sys.exit(main())
