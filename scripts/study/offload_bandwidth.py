"""Finding 3 (Fig. 4b, 5): offload bandwidth. The family on 4,096 H100s with
1 TiB of offload memory per GPU at 50 GB/s, 100 GB/s and unlimited
bandwidth per direction, with 80 GiB of HBM (the study's node) and 120 GiB.
"Reproduced" needs each of the three claims checked at the end of the
verdict (on 80 GiB) to hold.

    python scripts/study/offload_bandwidth.py [--quick]
"""

import statistics
import sys

import common as c

NAME = "offload_bandwidth"
TITLE = "Offload bandwidth at 4,096 GPUs, 1 TiB per GPU (Fig. 4b, 5)"
CLAIM = ("With 1 TiB of offload memory per GPU at unlimited bandwidth, at least 128T trains on 4,096 "
         "GPUs. At 50 GB/s per direction performance falls markedly as models grow; at 100 GB/s most "
         "systems nearly match unlimited bandwidth, so 100 GB/s is the target.")
BANDWIDTHS = [50, 100, "unlimited"]


def grid(quick):
    return {"name": NAME, "models": ["1T", "11T", "37T"] if quick else c.MODELS, "systems": [c.SYSTEM],
            "gpus": [4096], "overrides": {"hbm_gib": [80] if quick else [80, 120], "offload_gib": 1024,
                                          "offload_gbps": BANDWIDTHS},
            "options": c.options()}


def plot(rows, path):
    plt = c.pyplot()
    hbms = sorted({r["hbm_gib"] for r in rows})
    fig, axes = plt.subplots(1, len(hbms), figsize=(5.5 * len(hbms), 3.6), sharey=True, squeeze=False)
    for ax, hbm in zip(axes[0], hbms):
        for bw in BANDWIDTHS:
            c.mfu_by_model(ax, c.pick(rows, hbm_gib=hbm, offload_gbps=bw),
                           f"{bw} GB/s" if bw != "unlimited" else "unlimited")
        ax.set_title(f"{hbm} GiB HBM + 1 TiB offload, 4,096 GPUs")
        ax.legend(title="offload bandwidth")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _ratio(rows, bw, hbm):
    """Per model that fits at unlimited bandwidth: throughput at `bw` over unlimited."""
    out = {}
    for r in c.pick(rows, hbm_gib=hbm, offload_gbps="unlimited"):
        other = c.one(rows, model=r["model"], hbm_gib=hbm, offload_gbps=bw)
        if c.sps(r):
            out[r["model"]] = (c.sps(other) or 0.0) / c.sps(r)
    return out


def analyse(rows):
    hbms = sorted({r["hbm_gib"] for r in rows})
    table = c.mfu_table(rows, [(f"{hbm} GiB, {bw}", {"hbm_gib": hbm, "offload_gbps": bw})
                               for hbm in hbms for bw in BANDWIDTHS])
    parts, checks = [], {}
    for hbm in hbms:
        unl = c.pick(rows, hbm_gib=hbm, offload_gbps="unlimited")
        largest = max((r for r in unl if c.sps(r)), key=lambda r: c.model_index(r["model"]), default=None)
        r50, r100 = _ratio(rows, 50, hbm), _ratio(rows, 100, hbm)
        small = [r50[m] for m in r50 if c.model_index(m) < c.model_index("11T")]
        large = [r50[m] for m in r50 if c.model_index(m) >= c.model_index("11T")]
        worst = min(r50, key=r50.get)
        near100 = sum(v >= 0.9 for v in r100.values())
        parts.append(
            f"With {hbm} GiB HBM, the largest model that trains at unlimited bandwidth is "
            f"{largest['model'] if largest else 'none'}. At 50 GB/s, models below 11T keep a median "
            f"{c.pct(statistics.median(small)) if small else '-'} of their unlimited throughput, models from "
            f"11T a median {c.pct(statistics.median(large)) if large else '-'} (least: {worst}, "
            f"{c.pct(r50[worst])}); at 100 GB/s {near100} of {len(r100)} models keep at least 90% of it "
            f"(median {c.pct(statistics.median(r100.values()))}).")
        if hbm == 80:
            checks["128T trains with 1 TiB at unlimited bandwidth"] = bool(largest) and largest["model"] == "128T"
            checks["50 GB/s costs models from 11T at least 5 points more (median) than smaller ones"] = \
                bool(small and large) and statistics.median(large) < statistics.median(small) - 0.05
            checks["100 GB/s keeps 90% of unlimited for most models"] = near100 > len(r100) / 2
    for hbm in hbms:
        for r in c.pick(rows, hbm_gib=hbm, offload_gbps="unlimited"):
            if not c.sps(r):
                fx = r["explanation"]["fixes"]
                parts.append(f"{r['model']} with {hbm} GiB HBM does not fit even at unlimited bandwidth "
                             f"({', '.join(r['explanation']['conflicts'])}); alone, {c.num(fx.get('hbm_gib'))} "
                             f"GiB of HBM or {c.num(fx.get('offload_gib'))} GiB of offload memory would make it fit.")
    parts.append("Claims (80 GiB, the study's node): " + "; ".join(
        f"{k}: {'holds' if v else 'does not hold'}" for k, v in checks.items()) + ".")
    verdict = "reproduced" if checks and all(checks.values()) else "differs"
    return table, verdict, " ".join(parts)


if __name__ == "__main__":
    c.main(sys.modules[__name__])
