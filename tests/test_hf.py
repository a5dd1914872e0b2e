"""Hugging Face config.json import: supported architectures, defaults, and
one-line errors for what the Model cannot describe."""

import json
from pathlib import Path

import pytest

import optimizer as opt
from optimizer.errors import ConfigError
from optimizer.hf import is_hf_config, model_dict_from_hf, read_hf_config

HF = Path(__file__).parent / "data" / "hf"


def load(name, **kw):
    path = HF / name / "config.json"
    return model_dict_from_hf(read_hf_config(path), str(path), **kw)


def test_llama3_8b():
    # Llama 3 8B model card / config: 32 layers, 4096 hidden, 14336 SwiGLU,
    # 32 heads, 8 KV heads, 128256 vocabulary, untied, context 8192.
    d = load("llama3-8B")
    assert {k: d[k] for k in ("hidden", "feedforward", "heads", "head_dim", "blocks", "kv_heads",
                              "vocab", "seq_len")} == dict(
        hidden=4096, feedforward=14336, heads=32, head_dim=128, blocks=32, kv_heads=8,
        vocab=128256, seq_len=8192)
    assert d["gated_mlp"] and d["norm"] == "rmsnorm" and not d["tied_embeddings"]
    assert d["name"] == "Meta-Llama-3-8B"
    m = opt.load_model(d)        # the dict is valid model input as it stands
    assert m.kv_width == 1024


def test_seq_len_override_and_405b_context():
    assert load("llama3.1-405B")["seq_len"] == 131072
    assert load("llama3.1-405B", seq_len=8192)["seq_len"] == 8192
    with pytest.raises(ConfigError, match="seq_len"):
        load("llama3.1-405B", seq_len=0)


def test_qwen3_head_dim_key_wins():
    # Qwen3-8B: 32 heads of 128 over hidden 4096 (head_dim given in the config)
    d = load("qwen3-8B")
    assert d["head_dim"] == 128 and d["kv_heads"] == 8 and d["blocks"] == 36
    cfg = read_hf_config(HF / "qwen3-8B" / "config.json")
    cfg["head_dim"] = 96            # a head size that is not hidden / heads
    assert model_dict_from_hf(cfg, "x")["head_dim"] == 96


def test_qwen25_and_mistral():
    q = load("qwen2.5-7B")
    assert (q["hidden"], q["heads"], q["kv_heads"], q["head_dim"]) == (3584, 28, 4, 128)
    # Mistral 7B v0.1: 32768 positions, but a 4096-token sliding window
    with pytest.raises(ConfigError, match="sliding_window.*4096"):
        load("mistral-7B")
    m = load("mistral-7B", seq_len=4096)
    assert (m["vocab"], m["seq_len"], m["kv_heads"]) == (32000, 4096, 8)
    cfg = read_hf_config(HF / "mistral-7B" / "config.json")
    cfg["sliding_window"] = None      # v0.2 and later: no window
    assert model_dict_from_hf(cfg, "x")["seq_len"] == 32768
    # Qwen2.5 carries a window that is switched off
    cfg = read_hf_config(HF / "qwen2.5-7B" / "config.json")
    assert model_dict_from_hf(cfg, "x")["seq_len"] == 131072
    with pytest.raises(ConfigError, match="sliding_window"):
        model_dict_from_hf({**cfg, "use_sliding_window": True, "sliding_window": 4096}, "x")


def test_gpt_neox_and_gpt2():
    p = load("pythia-160m")
    assert not p["gated_mlp"] and p["norm"] == "layernorm" and p["kv_heads"] == p["heads"] == 12
    assert p["feedforward"] == 3072 and not p["tied_embeddings"]
    assert p["name"] == "pythia-160m"   # no _name_or_path: the directory's name
    g = load("gpt2")
    assert g["feedforward"] == 4 * 768 and g["seq_len"] == 1024 and g["tied_embeddings"]
    assert (g["blocks"], g["heads"], g["vocab"]) == (12, 12, 50257)


def test_name_falls_back_to_architecture():
    cfg = read_hf_config(HF / "gpt2" / "config.json")
    assert model_dict_from_hf(cfg, "<dict>")["name"] == "GPT2LMHeadModel"


def test_model_type_alone_is_enough():
    cfg = read_hf_config(HF / "llama3-8B" / "config.json")
    del cfg["architectures"]
    assert is_hf_config(cfg)
    assert model_dict_from_hf(cfg, "x")["hidden"] == 4096


def test_is_hf_config():
    assert is_hf_config({"architectures": ["LlamaForCausalLM"]})
    assert not is_hf_config({"hidden": 512, "blocks": 4})


@pytest.mark.parametrize("arch", ["MixtralForCausalLM", "Qwen2MoeForCausalLM", "Qwen3MoeForCausalLM",
                                  "DeepseekV3ForCausalLM", "GptOssForCausalLM"])
def test_moe_rejected_in_one_line(arch):
    with pytest.raises(ConfigError) as e:
        model_dict_from_hf({"architectures": [arch], "hidden_size": 4096}, "cfg.json")
    msg = str(e.value)
    assert arch in msg and "mixture-of-experts is not modelled yet" in msg and "\n" not in msg


def test_moe_model_type_alone_rejected():
    with pytest.raises(ConfigError, match="MixtralForCausalLM.*mixture-of-experts"):
        model_dict_from_hf({"model_type": "mixtral"}, "x")


def test_moe_sample_file_rejected():
    with pytest.raises(ConfigError, match="Qwen3MoeForCausalLM.*mixture-of-experts"):
        load("qwen3-30B-A3B")


def test_moe_keys_on_a_dense_architecture_rejected():
    cfg = read_hf_config(HF / "llama3-8B" / "config.json")
    cfg["num_local_experts"] = 8
    with pytest.raises(ConfigError, match="num_local_experts.*mixture-of-experts"):
        model_dict_from_hf(cfg, "x")


def test_unknown_architecture_named():
    with pytest.raises(ConfigError, match="T5ForConditionalGeneration"):
        model_dict_from_hf({"architectures": ["T5ForConditionalGeneration"]}, "x")


@pytest.mark.parametrize("key", ["hidden_size", "num_hidden_layers", "vocab_size",
                                 "max_position_embeddings", "intermediate_size"])
def test_missing_key_named(key):
    cfg = read_hf_config(HF / "llama3-8B" / "config.json")
    del cfg[key]
    with pytest.raises(ConfigError, match=f"'{key}'.*missing"):
        model_dict_from_hf(cfg, "x")


def test_bad_values():
    cfg = read_hf_config(HF / "llama3-8B" / "config.json")
    with pytest.raises(ConfigError, match="num_key_value_heads"):
        model_dict_from_hf({**cfg, "num_key_value_heads": 5}, "x")
    with pytest.raises(ConfigError, match="hidden_size"):
        model_dict_from_hf({**cfg, "hidden_size": "big"}, "x")
    with pytest.raises(ConfigError, match="tie_word_embeddings"):
        model_dict_from_hf({**cfg, "tie_word_embeddings": "yes"}, "x")


def test_read_hf_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="existing"):
        read_hf_config(tmp_path / "none.json")
    bad = tmp_path / "config.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="JSON"):
        read_hf_config(bad)
    bad.write_text(json.dumps([1, 2]))
    with pytest.raises(ConfigError, match="object"):
        read_hf_config(bad)
