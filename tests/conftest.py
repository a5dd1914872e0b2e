import os

os.environ.setdefault("OMP_NUM_THREADS", "1")


def tiered_system(tiers, offload_gib=0.0, offload_gbps=0.0, hbm_gib=80.0, first=8, growth=8, must_fill=True,
                  falloff=3.0):
    """An H100-like system with `tiers` network tiers: the first of `first`
    GPUs (filled exactly when `must_fill`), each next one `growth` times
    larger, bandwidth (by `falloff` a tier) and efficiency falling and
    latency rising outwards."""
    import optimizer as opt
    nets = [{"name": f"tier{i}", "size": first * growth ** i, "gbps": 450.0 / falloff ** i,
             "efficiency": 0.9 - 0.05 * i, "latency_us": 5.0 * (i + 1), "must_fill": must_fill and i == 0,
             "processor_share": 0.15 / (i + 1)} for i in range(tiers)]
    return opt.load_system({
        "name": f"tiers{tiers}", "matrix_tflops": {"fp8": 1979, "bf16": 989}, "vector_tflops": {"fp8": 134, "bf16": 134},
        "matrix_efficiency": [[0.03, 0.01], [3.0, 0.14], [300, 0.74], [30000, 0.78]],
        "vector_efficiency": [[0.001, 0.1], [0.1, 0.5], [10, 0.9]],
        "hbm": {"gib": hbm_gib, "gbps": 3352, "efficiency": [[0.1, 0.3], [10, 0.8], [1000, 0.95]]},
        "offload": {"gib": offload_gib, "gbps": offload_gbps}, "networks": nets})
