"""System variant names: one YAML file per piece of hardware under
`systems/`, and the study's variants (more HBM, a larger NVLink domain, an
offload tier) as names that resolve to a base file plus overrides.

    h100-120g-nvl16                   -> h100-80g-nvl8, hbm_gib 120, nvlink_size 16
    h100-80g-nvl8-off1t-100gbps       -> h100-80g-nvl8, offload 1024 GiB at 100 GB/s
    h100-120g-nvl8-off256g-unlimited  -> h100-80g-nvl8, hbm_gib 120, offload 256 GiB, unlimited

Grammar: <gpu>-<hbm>g[-nvl<size>][-off<capacity><g|t>-<gbps>gbps|unlimited],
GiB and TiB for the sizes, GB/s per direction for the bandwidth.

Plain data and the standard library only: spec.py imports this module.
"""

from __future__ import annotations

import re

# The file each GPU's variants start from, with the HBM and NVLink domain its
# name encodes (a100-80g has no NVLink part: its domain is 8).
BASES = {
    "a100": ("a100-80g", 80, 8),
    "h100": ("h100-80g-nvl8", 80, 8),
    "h200": ("h200-141g-nvl8", 141, 8),
    "b200": ("b200-180g-nvl8", 180, 8),
    "gb200": ("gb200-186g-nvl72", 186, 72),
}

_NAME = re.compile(
    r"(?P<gpu>[a-z]+\d+)-(?P<hbm>\d+)g(?:-nvl(?P<nvl>\d+))?"
    r"(?:-off(?P<cap>\d+)(?P<unit>[gt])-(?P<bw>\d+gbps|unlimited))?")

# The study's variants (Isaev, McDonald, Vuduc; see docs/multi_trillion_study.md):
# H100 with 80 or 120 GiB, NVLink 8 or 16, and offload tiers of 256 GiB to
# 2 TiB at 50 or 100 GB/s per direction or unlimited, on NVLink 8.
_STUDY_HBM = (80, 120)
_STUDY_NVL = (8, 16)
_STUDY_OFFLOAD_CAP = ("256g", "512g", "1t", "2t")
_STUDY_OFFLOAD_BW = ("50gbps", "100gbps", "unlimited")


def resolve_system_name(name: str) -> tuple[str, dict] | None:
    """(base file name, overrides for spec.load_system) for a variant name,
    or None when `name` is not a variant (a base file's own name included)."""
    if not isinstance(name, str):
        return None
    name = name.strip()
    m = _NAME.fullmatch(name)
    if m is None or m["gpu"] not in BASES:
        return None
    base, base_hbm, base_nvl = BASES[m["gpu"]]
    if name == base:
        return None
    overrides: dict = {}
    hbm = int(m["hbm"])
    if hbm != base_hbm:
        overrides["hbm_gib"] = hbm
    nvl = int(m["nvl"]) if m["nvl"] else base_nvl
    if nvl != base_nvl:
        overrides["nvlink_size"] = nvl
    if m["cap"]:
        cap = int(m["cap"]) * (1024 if m["unit"] == "t" else 1)
        overrides["offload_gib"] = cap
        overrides["offload_gbps"] = "unlimited" if m["bw"] == "unlimited" else int(m["bw"][:-4])
    if hbm <= 0 or nvl <= 0 or overrides.get("offload_gib", 1) <= 0:
        return None
    return base, overrides


def system_variant_names() -> list[str]:
    """The study's variant names (the files systems/ held before they were
    collapsed into one file per GPU), so `optimize list` can show them."""
    names = []
    for hbm in _STUDY_HBM:
        for nvl in _STUDY_NVL:
            names.append(f"h100-{hbm}g-nvl{nvl}")
        for cap in _STUDY_OFFLOAD_CAP:
            for bw in _STUDY_OFFLOAD_BW:
                names.append(f"h100-{hbm}g-nvl8-off{cap}-{bw}")
    return sorted(n for n in names if n != BASES["h100"][0])


__all__ = ["resolve_system_name", "system_variant_names", "BASES"]
