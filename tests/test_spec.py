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
    d["networks"][1]["size"] = 4         # smaller than the NVLink domain of 8
    with pytest.raises(opt.ConfigError) as e:
        opt.load_system(d)
    assert e.value.key == "networks[1].size"
    # a middle tier must hold whole domains of the one inside it
    d["networks"][1]["size"] = 12
    d["networks"].append(dict(d["networks"][1], name="spine", size=1536))
    with pytest.raises(opt.ConfigError) as e:
        opt.load_system(d)
    assert e.value.key == "networks[1].size" and "multiple" in str(e.value)
    # the outermost tier (the fabric) is a capacity, unless it must be filled
    d["networks"].pop()
    assert opt.load_system(d).networks[1].size == 12
    d["networks"][1]["must_fill"] = True
    with pytest.raises(opt.ConfigError, match="multiple"):
        opt.load_system(d)


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


# ------------------------------------------------------- input hardening (issue 13)

from optimizer.errors import ConfigError, short_repr
from optimizer.spec import (MAX_GPUS, MAX_INT_FIELD, default_datatype, load_system,
                            override_suffix)

TINY = {"hidden": 512, "feedforward": 2048, "seq_len": 256, "heads": 8, "head_dim": 64, "blocks": 4}


def _system_dict(name="a100-80g"):
    return yaml.safe_load(open(opt.spec._preset_dirs("systems")[0] / f"{name}.yaml"))


def _one_line_error(excinfo, *parts):
    msg = str(excinfo.value)
    assert "\n" not in msg and len(msg) < 700, msg
    for p in parts:
        assert p in msg, (p, msg)


@pytest.mark.parametrize("loader", [opt.load_model, opt.load_system, opt.load_strategy, opt.load_grid])
def test_not_utf8_names_the_file(tmp_path, loader):
    p = tmp_path / "b.yaml"
    p.write_bytes(b"\xff\xfe x\n")
    with pytest.raises(ConfigError) as e:
        loader(str(p))
    _one_line_error(e, str(p), "UTF-8")


@pytest.mark.parametrize("loader", [opt.load_model, opt.load_system, opt.load_strategy, opt.load_grid])
@pytest.mark.parametrize("where", ["dir", "", "nul", "long"])
def test_directory_or_empty_path(tmp_path, loader, where):
    x = {"dir": str(tmp_path), "": "", "nul": "a\x00b.yaml", "long": "x" * 5000 + ".yaml"}[where]
    with pytest.raises(ConfigError) as e:
        loader(x)
    _one_line_error(e)


def test_deeply_nested_yaml(tmp_path):
    p = tmp_path / "deep.yaml"
    p.write_text("hidden: " + "[" * 3000 + "]" * 3000 + "\n")
    with pytest.raises(ConfigError) as e:
        opt.load_model(str(p))
    _one_line_error(e, str(p), "nested")
    # a nesting that PyYAML itself survives is still refused, before any construction
    p.write_text("hidden: " + "[" * 100 + "]" * 100 + "\n")
    with pytest.raises(ConfigError, match="nested"):
        opt.load_model(str(p))


def test_unknown_keys_not_strings(tmp_path):
    p = tmp_path / "m.yaml"
    p.write_text(yaml.safe_dump(TINY) + "1: x\nfoo: y\n")
    with pytest.raises(ConfigError) as e:
        opt.load_model(str(p))
    assert e.value.key in ("1", "foo")
    _one_line_error(e, "no such key")
    with pytest.raises(ConfigError):
        opt.load_model({**TINY, 1: "x", None: "y", (1, 2): "z"})


@pytest.mark.parametrize("field, value", [
    ("hidden", 2 ** 63), ("hidden", 10 ** 30), ("blocks", 1e308), ("heads", float("inf")),
    ("heads", float("nan")), ("vocab", MAX_INT_FIELD + 1), ("seq_len", -2 ** 70)])
def test_huge_integers_are_refused(field, value):
    with pytest.raises(ConfigError) as e:
        opt.load_model({**TINY, field: value})
    assert e.value.key == field
    _one_line_error(e)


def test_huge_strategy_integers_are_refused():
    with pytest.raises(ConfigError) as e:
        opt.load_strategy({"tp": 10 ** 30, "pp": 1, "dp": 1, "batch": 8})
    assert e.value.key == "tp"
    assert opt.load_strategy({"tp": 8.0, "pp": 1, "dp": 1, "batch": MAX_INT_FIELD}).batch == MAX_INT_FIELD


@pytest.mark.parametrize("bad", [8, 8.5, None, ["tp", 8], object()])
def test_strategy_neither_mapping_nor_path(bad):
    with pytest.raises(ConfigError) as e:
        opt.load_strategy(bad)
    assert e.value.key == "strategy"


@pytest.mark.parametrize("path, value", [
    (("networks", 0, "latency_us"), 2 ** 63), (("networks", 0, "latency_us"), 1e6 + 1),
    (("networks", 0, "latency_us"), float("nan")), (("networks", 0, "gbps"), float("inf")),
    (("networks", 0, "gbps"), 1e7), (("networks", 1, "size"), MAX_GPUS + 1),
    (("networks", 0, "processor_share"), float("nan")), (("networks", 0, "efficiency"), float("nan")),
    (("hbm", "gib"), float("inf")), (("hbm", "gib"), 1e12), (("hbm", "gbps"), float("nan")),
    (("offload", "gib"), float("nan")), (("offload", "gbps"), float("nan")), (("offload", "gbps"), 1e7),
    (("matrix_tflops", "bf16"), float("nan")), (("matrix_tflops", "bf16"), float("inf")),
    (("matrix_tflops", "bf16"), 1e-4), (("vector_tflops", "fp32"), 1e7),
    (("matrix_efficiency", 0), [float("nan"), 0.5]), (("matrix_efficiency", 0), [1e300, 0.5]),
    (("hbm", "efficiency", 0), [0.1, float("nan")]),
])
def test_system_floats_are_finite_and_sensible(path, value):
    d = _system_dict()
    node = d
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    with pytest.raises(ConfigError) as e:
        load_system(d)
    _one_line_error(e)


def test_unlimited_offload_is_the_one_infinity():
    d = _system_dict()
    d["offload"] = {"gib": 1024, "gbps": "unlimited"}
    assert math.isinf(load_system(d).offload_gbps)
    d["offload"] = {"gib": "unlimited", "gbps": 100}
    with pytest.raises(ConfigError):
        load_system(d)


def test_system_needs_a_datatype_in_both_tables():
    d = _system_dict()
    d["vector_tflops"] = {"fp8": 100}       # a100 has no fp8 matrix rate
    with pytest.raises(ConfigError, match="datatype"):
        load_system(d)


def test_error_message_is_one_bounded_line():
    bomb = [["x" * 50] * 9] * 9
    for _ in range(5):
        bomb = [bomb] * 9
    e = ConfigError("file\nwith newline.yaml", "key\nx", bomb, "a value\n  on two lines")
    assert "\n" not in str(e) and len(str(e)) < 300
    assert len(short_repr("y" * 10 ** 6)) <= 80
    deep = []
    for _ in range(5000):
        deep = [deep]
    assert len(short_repr(deep)) <= 80


def test_yaml_alias_bomb_message_is_short(tmp_path):
    lines = ['a: &a ["xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"]']
    for prev, cur in zip("abcdefgh", "bcdefghi"):
        lines.append(f"{cur}: &{cur} [{', '.join([f'*{prev}'] * 9)}]")
    p = tmp_path / "bomb.yaml"
    p.write_text("\n".join(lines) + "\nhidden: *i\n")
    with pytest.raises(ConfigError) as e:
        opt.load_model(str(p))
    _one_line_error(e, str(p), "hidden")


def test_yaml_syntax_error_is_line_and_column(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("hidden: [1,\n  2\n x: 3\n")
    with pytest.raises(ConfigError) as e:
        opt.load_model(str(p))
    _one_line_error(e, str(p), "line 3, column")
    assert "^" not in str(e.value)


@pytest.mark.parametrize("text, key", [("hidden: 1\nhidden: 2\n", "hidden"),
                                       ("hbm:\n  gib: 1\n  gib: 2\n", "gib")])
def test_duplicate_yaml_keys(tmp_path, text, key):
    p = tmp_path / "d.yaml"
    p.write_text(text)
    for loader in (opt.load_model, opt.load_system):
        with pytest.raises(ConfigError) as e:
            loader(str(p))
        assert e.value.key == key
        _one_line_error(e, str(p), "each key once", "line ")


def test_yaml_merge_keys_still_work(tmp_path):
    p = tmp_path / "m.yaml"
    p.write_text("base: &b {hidden: 1, blocks: 4}\n")
    assert opt.spec.read_yaml_mapping(p, "x") == {"base": {"hidden": 1, "blocks": 4}}
    p.write_text("x: &b {hidden: 1, blocks: 4}\ny:\n  <<: *b\n  hidden: 2\n")
    assert opt.spec.read_yaml_mapping(p, "x")["y"] == {"hidden": 2, "blocks": 4}


def test_offload_override_needs_both_on_a_system_without_a_tier():
    for kw, other in (({"offload_gib": 1024}, "offload_gbps"), ({"offload_gbps": 100}, "offload_gib")):
        with pytest.raises(ConfigError) as e:
            load_system("h100-80g-nvl8", **kw)
        _one_line_error(e, other, "--offload-gib", "--offload-gbps")
    s = load_system("h100-80g-nvl8", offload_gib=1024, offload_gbps=100)
    assert (s.offload_gib, s.offload_gbps) == (1024, 100)
    # on a system with a tier, one alone changes that one; zero alone is no tier
    assert load_system("h100-80g-nvl8-off1t-100gbps", offload_gib=2048).offload_gbps == 100
    assert load_system("h100-80g-nvl8", offload_gib=0).offload_gib == 0


def test_overridden_system_is_named_after_its_overrides():
    s = load_system("h100-80g-nvl8", nvlink_size=16, hbm_gib=120)
    assert s.name == "h100-80g-nvl8+hbm120g+nvl16" and s.base == "h100-80g-nvl8"
    s2 = load_system(s, hbm_gib=100)
    assert s2.name == "h100-80g-nvl8+hbm100g+nvl16" and s2.base == "h100-80g-nvl8"
    assert load_system("h100-80g-nvl8", offload_gib=512, offload_gbps="unlimited").name == \
        "h100-80g-nvl8+off512g+unlimited"
    assert override_suffix({"offload_gbps": 50.0, "hbm_gib": 80.5}) == "+hbm80.5g+50gbps"
    plain = load_system("h100-80g-nvl8")
    assert plain.name == plain.base == "h100-80g-nvl8"
    assert opt.evaluate("megatron-22B", s, {"tp": 8, "pp": 1, "dp": 2, "batch": 8, "datatype": "bf16",
                                             "recompute": "full"}).system == s.name


def test_nvlink_override_checked_like_a_file():
    with pytest.raises(ConfigError) as e:
        load_system("h100-80g-nvl8", nvlink_size=131072)     # larger than the fabric
    assert e.value.key == "nvlink_size"
    d = _system_dict()
    d["networks"].append(dict(d["networks"][1], name="spine", size=2048))
    d["networks"][1]["size"] = 256
    with pytest.raises(ConfigError) as e:
        load_system(d, nvlink_size=7)                # 256 GPUs are not whole domains of 7
    assert e.value.key == "nvlink_size" and "divisor" in str(e.value)
    d["networks"][1]["size"] = 252                   # a file saying the same is refused too
    d["networks"][0]["size"] = 8
    with pytest.raises(ConfigError):
        load_system(d)
    assert load_system("h100-80g-nvl8", nvlink_size=72).nvlink_size == 72   # NVL72 on a fabric
    for bad in (0, -8, MAX_GPUS + 1, 2 ** 63, 8.5, float("nan")):
        with pytest.raises(ConfigError):
            load_system("h100-80g-nvl8", nvlink_size=bad)


def test_default_datatype():
    assert default_datatype(load_system("h100-80g-nvl8")) == "fp8"
    assert default_datatype(load_system("a100-80g")) == "bf16"
    d = _system_dict()
    d["matrix_tflops"] = {"fp32": 19.5}
    d["vector_tflops"] = {"fp32": 19.5, "fp16": 78}
    assert default_datatype(load_system(d)) == "fp32"


def test_preset_names_case_and_suggestions():
    assert opt.load_model("1t").name == "1T"
    assert opt.load_model("chinchilla-70b").name == "chinchilla-70B"
    assert opt.load_system("H100-80G-NVL8").name == "h100-80g-nvl8"
    with pytest.raises(ConfigError) as e:
        opt.load_model("megatron-1")
    _one_line_error(e, "did you mean", "megatron-1T")
    assert "palm-540B" not in str(e.value)        # not every name, a few close ones
    with pytest.raises(ConfigError) as e:
        opt.load_model("zzzzzz")
    _one_line_error(e, "optimize list")


def test_preset_names_natural_order():
    names = preset_names("models")
    fam = [n for n in names if n[:-1].isdigit()]
    assert fam == sorted(fam, key=lambda n: int(n[:-1]))
    assert names.index("1T") < names.index("11T") < names.index("128T")


def test_parse_value_keeps_non_finite_as_text():
    from optimizer.spec import parse_value
    assert parse_value("8") == 8 and parse_value("0.5") == 0.5 and parse_value("yes") is True
    for t in ("nan", "inf", "-inf", "1e999"):
        assert isinstance(parse_value(t), str)
