"""Finding 4 (Fig. 6): offload capacity across system sizes. The family on
4,096 / 8,192 / 12,288 / 16,384 H100s of 80 GiB with 256 GiB to 2 TiB of
offload memory per GPU at 100 GB/s per direction.

    python scripts/study/offload_capacity.py [--quick]

"Enough" capacity below means: at least 90% of the throughput the same
model reaches on the same system with the most capacity in the grid.
"Reproduced" needs each of the four claims checked at the end of the verdict
to hold.
"""

import statistics
import sys

import common as c

NAME = "offload_capacity"
TITLE = "Offload capacity across system sizes, 100 GB/s (Fig. 6)"
CLAIM = ("At 100 GB/s on 4,096 to 16,384 GPUs: small models on large systems and large models on small "
         "systems are inefficient; 256 GiB rarely gives good efficiency; 512 GiB is usually enough at "
         "8k-16k GPUs; 1 TiB is almost the same as 2 TiB.")
CAPACITIES = [256, 512, 1024, 2048]
GPUS = [4096, 8192, 12288, 16384]
ENOUGH = 0.9


def grid(quick):
    return {"name": NAME, "models": ["1T", "26T"] if quick else c.MODELS, "systems": [c.SYSTEM],
            "gpus": [4096, 16384] if quick else GPUS,
            "overrides": {"offload_gib": [256, 2048] if quick else CAPACITIES, "offload_gbps": 100},
            "options": c.options()}


def plot(rows, path):
    plt = c.pyplot()
    gpus = sorted({r["gpus"] for r in rows})
    cols = min(2, len(gpus))
    rows_ = (len(gpus) + cols - 1) // cols
    fig, axes = plt.subplots(rows_, cols, figsize=(5.5 * cols, 3.4 * rows_), sharey=True, squeeze=False)
    for ax, n in zip(axes.flat, gpus):
        for cap in sorted({r["offload_gib"] for r in rows}):
            c.mfu_by_model(ax, c.pick(rows, gpus=n, offload_gib=cap), f"{cap} GiB")
        ax.set_title(f"{n:,} GPUs, 80 GiB HBM, 100 GB/s")
    axes[0][0].legend(title="offload per GPU")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _share_of_best(rows):
    """{(model, gpus): {capacity: throughput / best throughput over capacities}}."""
    out = {}
    for r in rows:
        key = (r["model"], r["gpus"])
        best = max((c.sps(x) or 0.0) for x in c.pick(rows, model=r["model"], gpus=r["gpus"]))
        if best > 0:
            out.setdefault(key, {})[r["offload_gib"]] = (c.sps(r) or 0.0) / best
    return out


def _mfu_number(row) -> str:
    return "-" if c.mfu(row) is None else f"{100 * c.mfu(row):.1f}"


def analyse(rows):
    caps = sorted({r["offload_gib"] for r in rows})
    gpus = sorted({r["gpus"] for r in rows})
    models = sorted({r["model"] for r in rows}, key=c.model_index)
    body = []
    for m in models:
        body.append([m] + [" / ".join(_mfu_number(c.one(rows, model=m, gpus=n, offload_gib=cap))
                                      for cap in caps) for n in gpus])
    table = ("MFU (%) at " + " / ".join(f"{cap} GiB" for cap in caps) + " of offload per GPU "
             "(- where nothing fits):\n\n"
             + c.md_table(["model"] + [f"{n:,} GPUs" for n in gpus], body))
    share = _share_of_best(rows)
    n_pairs = len(share)
    enough = {cap: [k for k, v in share.items() if v.get(cap, 0) >= ENOUGH] for cap in caps}
    parts = []
    small, big = caps[0], caps[-1]
    parts.append(f"{small} GiB is enough for {len(enough[small])} of {n_pairs} (model, system) pairs that "
                 f"fit at all.")
    if 512 in caps:
        large = [k for k in share if k[1] >= 8192]
        ok512 = [k for k in large if share[k].get(512, 0) >= ENOUGH]
        short = sorted({k[0] for k in large if k not in ok512}, key=c.model_index)
        parts.append(f"512 GiB is enough for {len(ok512)} of {len(large)} pairs at 8k-16k GPUs; it falls "
                     f"short for {', '.join(short) or 'none'}: in our model, 512 GiB forces those models "
                     f"into deeper pipelines or full recomputation that a larger tier avoids.")
    if 1024 in caps:
        ratios = [v[1024] / v[big] for v in share.values() if v.get(big)]
        parts.append(f"1 TiB gives a median {100 * statistics.median(ratios):.0f}% of 2 TiB's throughput "
                     f"(at least 95% in {sum(x >= 0.95 for x in ratios)} of {len(ratios)} pairs).")
    best = {(m, n): max((c.mfu(r) or 0) for r in c.pick(rows, model=m, gpus=n)) for m in models for n in gpus}
    fitting = [m for m in models if best[m, gpus[-1]] > 0 and best[m, gpus[0]] > 0]
    m_small, m_big, n_small, n_big = fitting[0], fitting[-1], gpus[0], gpus[-1]
    parts.append(f"Of the models that fit on every size, best MFU of {m_small}: {c.pct(best[m_small, n_small])} on {n_small:,} GPUs, "
                 f"{c.pct(best[m_small, n_big])} on {n_big:,}; of {m_big}: {c.pct(best[m_big, n_small])} on "
                 f"{n_small:,}, {c.pct(best[m_big, n_big])} on {n_big:,}.")
    rare256 = len(enough[small]) <= n_pairs / 2
    usually512 = 512 not in caps or len(ok512) >= len(large) / 2
    same1t = 1024 not in caps or statistics.median(ratios) >= 0.95
    corners = best[m_small, n_big] < best[m_small, n_small] and best[m_big, n_small] < best[m_big, n_big]
    verdict = "reproduced" if rare256 and usually512 and same1t and corners else "differs"
    checks = {"256 GiB rarely enough": rare256, "512 GiB usually enough at 8k-16k": usually512,
              "1 TiB about 2 TiB": same1t, "small-on-large and large-on-small inefficient": corners}
    parts.append("Claims: " + "; ".join(f"{k}: {'holds' if v else 'does not hold'}" for k, v in checks.items())
                 + ".")
    return table, verdict, " ".join(parts)


if __name__ == "__main__":
    c.main(sys.modules[__name__])
