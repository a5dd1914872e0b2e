"""Finding 5 (Fig. 7): strong scaling of 1T from 4,096 to 16,384 H100s, with
NVLink domains of 8 and of 16, without offload and with 1 TiB at 100 GB/s.

    python scripts/study/strong_scaling.py [--quick]

Scaling efficiency at n GPUs: throughput(n) / throughput(4,096) / (n / 4,096).
"Scales well" below means at least 80% of it; NVLink 16 "needed" means it
is over 10% faster than 8, "suffices" that 16 gains under 5% at every
count up to 12,288. "Reproduced" needs all four claims to hold with and
without offload.
"""

import sys

import common as c

NAME = "strong_scaling"
TITLE = "Strong scaling of 1T, NVLink 8 against 16 (Fig. 7)"
CLAIM = ("1T scales well from 4,096 to 12,288 GPUs and suffers at 16,384. NVLink domains of 8 suffice "
         "up to 12,288 GPUs; 16,384 needs 16. Larger TP splits matrices too finely and turns messages "
         "latency-bound, overlap hides less, PP costs bubble or interleaving memory, and the batch cap "
         "of 3,072 caps DP.")
GPUS = [4096, 6144, 8192, 10240, 12288, 14336, 16384]
WELL, NEEDED, SUFFICES = 0.8, 0.10, 0.05


def grid(quick):
    return {"name": NAME, "models": ["1T"], "systems": [c.SYSTEM], "gpus": [4096, 16384] if quick else GPUS,
            "overrides": {"nvlink_size": [8, 16], "offload_gib": [0] if quick else [0, 1024],
                          "offload_gbps": 100},
            "options": c.options()}


def _series(rows, nvl, off):
    return sorted(c.pick(rows, nvlink_size=nvl, offload_gib=off), key=lambda r: r["gpus"])


def plot(rows, path):
    plt = c.pyplot()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6))
    for off, ls in ((0, "-"), (1024, "--")):
        for nvl in (8, 16):
            s = _series(rows, nvl, off)
            if not s:
                continue
            label = f"NVLink {nvl}" + (", 1 TiB offload" if off else "")
            xs = [r["gpus"] for r in s]
            a1.plot(xs, [c.sps(r) for r in s], ls, marker="o", label=label)
            base = c.sps(s[0])
            a2.plot(xs, [100 * c.sps(r) / base / (r["gpus"] / s[0]["gpus"]) for r in s], ls, marker="o",
                    label=label)
    xs = sorted({r["gpus"] for r in rows})
    ideal = [c.sps(_series(rows, 8, 0)[0]) * n / xs[0] for n in xs]
    a1.plot(xs, ideal, ":", color="grey", label="linear from 4,096")
    a1.set_ylabel("samples/s")
    a2.set_ylabel("scaling efficiency (%)")
    a2.axhline(100 * WELL, color="grey", ls=":", lw=1)
    for a in (a1, a2):
        a.set_xlabel("GPUs")
        a.set_xticks(xs, [f"{n // 1024}k" for n in xs])
        a.legend(fontsize=8)
    a1.set_title("1T throughput")
    a2.set_title("1T scaling efficiency against 4,096 GPUs")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _dip(eff, row) -> str:
    """A GPU count that scales badly, with the microbatches its best strategy gets."""
    st = row["result"]["strategy"]
    micro = st["batch"] // st["dp"] // st["microbatch"]
    return (f"{100 * eff:.0f}% at {row['gpus']:,} ({c.strategy_text(row)}: {micro} microbatches per replica "
            f"for {st['pp']} stages" + (", not a multiple, so no interleaving" if micro % st["pp"] else "") + ")")


def analyse(rows):
    offs = sorted({r["offload_gib"] for r in rows})
    body = []
    for off in offs:
        s8, s16 = _series(rows, 8, off), _series(rows, 16, off)
        for r8, r16 in zip(s8, s16):
            eff8 = c.sps(r8) / c.sps(s8[0]) / (r8["gpus"] / s8[0]["gpus"])
            body.append([f"{r8['gpus']:,}", f"{off} GiB", f"{c.sps(r8):.1f}", f"{100 * eff8:.0f}%",
                         c.pct(c.mfu(r8)), c.strategy_text(r8), f"{c.sps(r16):.1f}",
                         f"{100 * (c.sps(r16) / c.sps(r8) - 1):+.1f}%", c.strategy_text(r16)])
    table = c.md_table(["GPUs", "offload", "samples/s NVL8", "scaling eff. NVL8", "MFU NVL8", "best NVL8",
                        "samples/s NVL16", "NVL16 gain", "best NVL16"], body)
    parts, holds = [], {}
    for off in offs:
        s8, s16 = _series(rows, 8, off), _series(rows, 16, off)
        eff = {r["gpus"]: c.sps(r) / c.sps(s8[0]) / (r["gpus"] / s8[0]["gpus"]) for r in s8}
        gain = {a["gpus"]: c.sps(b) / c.sps(a) - 1 for a, b in zip(s8, s16)}
        top, mid = max(eff), max(n for n in eff if n <= 12288)
        low = [n for n in eff if n <= 12288 and eff[n] < WELL]
        r_top = s8[-1]
        sh8, sh16 = c.shares(r_top), c.shares(s16[-1])
        st = r_top["result"]["strategy"]
        parts.append(
            f"{'Without offload' if off == 0 else f'With {off} GiB offload'}: NVLink 8 keeps "
            f"{100 * eff[mid]:.0f}% scaling efficiency at {mid:,} GPUs and {100 * eff[top]:.0f}% at {top:,}"
            + (", but only " + ", ".join(_dip(eff[n], c.one(s8, gpus=n)) for n in low) if low else "")
            + "; "
            f"NVLink 16 gains {100 * max(gain[n] for n in gain if n <= 12288):.1f}% at most up to 12,288 and "
            f"{100 * gain[top]:.1f}% at {top:,}. At {top:,} GPUs with NVLink 8 the best is "
            f"{c.strategy_text(r_top)}: the batch cap of 3,072 leaves each of the {st['dp']} replicas "
            f"{st['batch'] // st['dp']} sequences, {st['batch'] // st['dp'] // st['microbatch']} microbatches "
            f"for {st['pp']} stages, and the bubble takes {c.pct(sh8['bubble'])} of the batch time (exposed "
            f"TP communication {c.pct(sh8['tp_comm'])}); with NVLink 16 the best is "
            f"{c.strategy_text(s16[-1])}, bubble {c.pct(sh16['bubble'])}, TP communication "
            f"{c.pct(sh16['tp_comm'])}.")
        holds[off] = {"scales well to 12,288": not low, "suffers at 16,384": eff[top] < WELL,
                      "NVLink 8 suffices to 12,288": max(gain[n] for n in gain if n <= 12288) < SUFFICES,
                      "16,384 needs NVLink 16": gain[top] > NEEDED}
    for off, h in holds.items():
        parts.append(f"Claims {'without' if off == 0 else 'with'} offload: "
                     + "; ".join(f"{k}: {'holds' if v else 'does not hold'}" for k, v in h.items()) + ".")
    verdict = "reproduced" if all(all(h.values()) for h in holds.values()) else "differs"
    return table, verdict, " ".join(parts)


if __name__ == "__main__":
    c.main(sys.modules[__name__])
