import math

import pytest
import yaml

import optimizer as opt
from optimizer.spec import preset_names


def test_presets_load():
    for name in preset_names("models"):
        m = opt.load_model(name)
        assert m.hidden > 0 and m.blocks > 0
    for name in preset_names("systems"):
        s = opt.load_system(name)
        assert s.hbm_gib > 0 and s.networks


def test_required_presets_exist():
    models = set(preset_names("models"))
    for name in ("megatron-22B", "gpt3-175B", "turing-530B", "megatron-1T", "palm-540B",
                 "chinchilla-70B", "1T", "2T", "4T", "7T", "11T", "18T", "26T", "37T", "53T",
                 "72T", "96T", "128T"):
        assert name in models
    systems = set(preset_names("systems"))
    for name in ("a100-80g", "h100-80g-nvl8", "h100-80g-nvl16", "h100-120g-nvl8",
                 "h100-80g-nvl8-off1t-100gbps", "h100-80g-nvl8-off2t-unlimited",
                 "h100-120g-nvl8-off256g-50gbps"):
        assert name in systems


def test_family_follows_the_studys_rule():
    # head size = round(hidden / blocks), heads = blocks, feedforward = 4 hidden
    for name in ("1T", "11T", "128T"):
        m = opt.load_model(name)
        assert m.heads == m.blocks and m.feedforward == 4 * m.hidden
        assert m.head_dim == round(m.hidden / m.blocks)
        assert m.seq_len == 8192


def test_model_from_dict_and_path(tmp_path):
    d = {"name": "tiny", "hidden": 512, "feedforward": 2048, "seq_len": 256, "heads": 8,
         "head_dim": 64, "blocks": 4}
    assert opt.load_model(d).attn_width == 512
    p = tmp_path / "tiny.yaml"
    p.write_text(yaml.safe_dump(d))
    assert opt.load_model(str(p)) == opt.load_model(d)


@pytest.mark.parametrize("change, key", [
    ({"colour": 3}, "colour"),
    ({"hidden": -5}, "hidden"),
    ({"hidden": "big"}, "hidden"),
    ({"blocks": 0}, "blocks"),
])
def test_bad_model_names_key(change, key):
    d = {"hidden": 512, "feedforward": 2048, "seq_len": 256, "heads": 8, "head_dim": 64, "blocks": 4}
    d.update(change)
    with pytest.raises(opt.ConfigError) as e:
        opt.load_model(d)
    assert e.value.key == key


def test_missing_key_names_file(tmp_path):
    p = tmp_path / "m.yaml"
    p.write_text("hidden: 512\n")
    with pytest.raises(opt.ConfigError) as e:
        opt.load_model(str(p))
    assert str(p) in str(e.value) and e.value.value == "<missing>"


def test_unknown_preset():
    with pytest.raises(opt.ConfigError, match="preset name"):
        opt.load_system("no-such-machine")


def test_system_overrides():
    s = opt.load_system("h100-80g-nvl8", hbm_gib=120, offload_gib=1024, offload_gbps="unlimited",
                        nvlink_size=16)
    assert s.hbm_gib == 120 and s.offload_gib == 1024 and math.isinf(s.offload_gbps)
    assert s.nvlink_size == 16
    with pytest.raises(opt.ConfigError):
        opt.load_system("h100-80g-nvl8", hbm_gib=-1)
    with pytest.raises(opt.ConfigError):
        opt.load_system("h100-80g-nvl8", colour=1)


def test_inconsistent_network_sizes():
    d = yaml.safe_load(open(opt.spec._preset_dirs("systems")[0] / "a100-80g.yaml"))
    d["networks"][1]["size"] = 12        # not a multiple of the NVLink domain of 8
    with pytest.raises(opt.ConfigError) as e:
        opt.load_system(d)
    assert e.value.key == "networks[1].size"


def test_bad_curve():
    d = yaml.safe_load(open(opt.spec._preset_dirs("systems")[0] / "a100-80g.yaml"))
    d["matrix_efficiency"] = [[10, 0.5], [1, 0.9]]
    with pytest.raises(opt.ConfigError, match="increasing"):
        opt.load_system(d)


def test_strategy_checks():
    with pytest.raises(opt.ConfigError) as e:
        opt.load_strategy({"tp": 8, "pp": 1, "dp": 1, "batch": 8, "recompute": "some"})
    assert e.value.key == "recompute"
    with pytest.raises(opt.ConfigError) as e:
        opt.load_strategy({"tp": 8, "pp": 1, "dp": 1, "batch": 8, "speed": 3})
    assert e.value.key == "speed"
    with pytest.raises(opt.ConfigError) as e:
        opt.load_strategy({"tp": 0, "pp": 1, "dp": 1, "batch": 8})
    assert e.value.key == "tp"
