"""System variant names -> base file + overrides, against the numbers the
old per-variant files held; and the new hardware files' derivation rule."""

import math
from pathlib import Path

import pytest
import yaml

import optimizer as opt
from optimizer.presets import BASES, resolve_system_name, system_variant_names

OLD = yaml.safe_load((Path(__file__).parent / "data" / "old_system_variants.yaml").read_text())


def test_every_old_name_is_listed():
    assert sorted(OLD) == system_variant_names()
    assert len(OLD) == 27


@pytest.mark.parametrize("name", sorted(OLD))
def test_variant_yields_the_old_files_numbers(name):
    base, overrides = resolve_system_name(name)
    assert base == "h100-80g-nvl8"
    s = opt.load_system(base, **overrides)
    want = OLD[name]
    gbps = math.inf if want["offload_gbps"] == "unlimited" else want["offload_gbps"]
    assert (s.hbm_gib, s.offload_gib, s.offload_gbps, s.networks[0].size) == (
        want["hbm_gib"], want["offload_gib"], gbps, want["nvlink_size"])
    # the rest is the H100 file's: curves, rates, the outer tier
    h100 = opt.load_system("h100-80g-nvl8")
    assert s.matrix_efficiency == h100.matrix_efficiency and s.networks[1] == h100.networks[1]


def test_examples_and_other_gpus():
    assert resolve_system_name("h100-120g-nvl16") == ("h100-80g-nvl8", {"hbm_gib": 120, "nvlink_size": 16})
    assert resolve_system_name("h100-80g-nvl8-off1t-100gbps") == (
        "h100-80g-nvl8", {"offload_gib": 1024, "offload_gbps": 100})
    assert resolve_system_name("b200-180g-nvl8-off2t-unlimited") == (
        "b200-180g-nvl8", {"offload_gib": 2048, "offload_gbps": "unlimited"})
    assert resolve_system_name("gb200-186g-nvl72-off512g-50gbps") == (
        "gb200-186g-nvl72", {"offload_gib": 512, "offload_gbps": 50})
    base, overrides = resolve_system_name("h200-141g-nvl8-off1t-unlimited")
    s = opt.load_system(base, **overrides)
    assert s.offload_gib == 1024 and math.isinf(s.offload_gbps) and s.hbm_gib == 141


@pytest.mark.parametrize("name", ["h100-80g-nvl8", "a100-80g", "gb200-186g-nvl72", "x100-80g-nvl8",
                                  "h100-80g-nvl8-off1t", "h100-80g-nvl8-off1t-100", "h100", "",
                                  "h100-80g-nvl8.yaml", "h100-0g-nvl8", "h100-80g-nvl8-off0g-50gbps"])
def test_not_a_variant(name):
    assert resolve_system_name(name) is None


def test_bases_exist_and_match_their_names():
    for gpu, (base, hbm, nvl) in BASES.items():
        s = opt.load_system(base)
        assert (s.hbm_gib, s.nvlink_size) == (hbm, nvl), base


# ------------------------------------------------------------ new hardware

H100 = opt.load_system("h100-80g-nvl8")


@pytest.mark.parametrize("name, bf16, fp8, hbm_gib, hbm_gbps, nvl, nvl_gbps", [
    # data sheets: H200 (141 GB, 4.8 TB/s, H100 compute, NVLink 4);
    # DGX B200 (180 GB, 8 TB/s, 2.25 / 4.5 PFLOP/s dense, NVLink 5 1.8 TB/s both ways);
    # GB200 NVL72 (186 GB, 8 TB/s, 2.5 / 5 PFLOP/s dense, 72-GPU NVLink 5 domain)
    ("h200-141g-nvl8", 989, 1979, 141, 4800, 8, 450),
    ("b200-180g-nvl8", 2250, 4500, 180, 8000, 8, 900),
    ("gb200-186g-nvl72", 2500, 5000, 186, 8000, 72, 900),
])
def test_new_hardware(name, bf16, fp8, hbm_gib, hbm_gbps, nvl, nvl_gbps):
    s = opt.load_system(name)
    assert (s.matrix_tflops["bf16"], s.matrix_tflops["fp8"]) == (bf16, fp8)
    assert (s.hbm_gib, s.hbm_gbps, s.nvlink_size, s.networks[0].gbps) == (hbm_gib, hbm_gbps, nvl, nvl_gbps)
    assert s.networks[1].gbps == 50                       # one 400 Gb/s port per GPU
    assert s.networks[1].size % s.networks[0].size == 0
    # the rule: the H100 matrix curve with sizes scaled by the bf16 peak ratio
    ratio = bf16 / H100.matrix_tflops["bf16"]
    for (x, e), (hx, he) in zip(s.matrix_efficiency, H100.matrix_efficiency, strict=True):
        assert e == he and x == pytest.approx(hx * ratio, rel=1e-5)
    assert s.vector_efficiency == H100.vector_efficiency and s.hbm_efficiency == H100.hbm_efficiency


def test_h100_is_calibrated_and_says_so():
    # the H100 file comes from `optimize calibrate` on the Megatron-Core runs
    # (scripts/calibrate_all.py --write), not from the A100's curve
    prov = H100.provenance
    assert prov and prov["runs_file"].endswith("h100_megatron_core.yaml")
    assert prov["errors_pct"]["after"]["mean"] <= 5.0 and prov["errors_pct"]["leave_one_out"]["mean"] <= 7.0


def test_gb200_outer_tier_holds_whole_racks():
    s = opt.load_system("gb200-186g-nvl72")
    assert s.networks[1].size == 72 * 1024


# ------------------------------------------------------------ model presets

def test_every_model_preset_has_a_description_with_a_year():
    import re
    from optimizer.spec import preset_names
    root = Path(__file__).parent.parent / "models"
    for name in preset_names("models"):
        data = yaml.safe_load((root / f"{name}.yaml").read_text())
        assert re.search(r"\b(19|20)\d\d\b", data.get("description", "")), name


def test_presets_carry_their_vocabularies():
    # Megatron's padded GPT-2 vocabulary for the Selene models; the study's
    # family states none
    for name in ("megatron-22B", "gpt3-175B", "turing-530B", "megatron-1T"):
        assert opt.load_model(name).vocab == 51200, name
    for name in ("1T", "128T"):
        assert opt.load_model(name).vocab == 0, name
    for name in ("llama3-8B", "llama3-70B", "llama3.1-405B"):
        m = opt.load_model(name)
        assert (m.vocab, m.kv_heads, m.gated_mlp, m.norm, m.tied_embeddings, m.seq_len) == (
            128256, 8, True, "rmsnorm", False, 8192)
