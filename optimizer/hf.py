"""Hugging Face `config.json` as a model input.

`model_dict_from_hf` maps the config of a supported dense decoder-only
architecture onto the project's model keys (the dict `spec.load_model`
takes). Anything the Model cannot describe yet (mixture-of-experts, MLA, an
unknown architecture) is a one-line ConfigError saying what is missing,
never a silently wrong model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

from .errors import ConfigError

# How each supported architecture spells its keys, and the facts the config
# does not state (norm, gating, whether embeddings are tied by default: the
# default of each transformers config class).
_LLAMA_KEYS = {"hidden": "hidden_size", "feedforward": "intermediate_size",
               "heads": "num_attention_heads", "blocks": "num_hidden_layers",
               "kv_heads": "num_key_value_heads", "vocab": "vocab_size",
               "seq_len": "max_position_embeddings"}
_GPT2_KEYS = {"hidden": "n_embd", "feedforward": "n_inner", "heads": "n_head",
              "blocks": "n_layer", "vocab": "vocab_size", "seq_len": "n_positions"}

ARCHITECTURES = {
    # Llama 2 and 3, Mistral, Qwen2/2.5, Qwen3: RMSNorm, SwiGLU, rotary, GQA.
    "LlamaForCausalLM": dict(keys=_LLAMA_KEYS, gated_mlp=True, norm="rmsnorm", tied=False),
    "MistralForCausalLM": dict(keys=_LLAMA_KEYS, gated_mlp=True, norm="rmsnorm", tied=False),
    "Qwen2ForCausalLM": dict(keys=_LLAMA_KEYS, gated_mlp=True, norm="rmsnorm", tied=False),
    "Qwen3ForCausalLM": dict(keys=_LLAMA_KEYS, gated_mlp=True, norm="rmsnorm", tied=False),
    # Pythia and GPT-NeoX-20B: LayerNorm, plain GELU MLP, rotary, untied.
    "GPTNeoXForCausalLM": dict(keys={**_LLAMA_KEYS, "kv_heads": None}, gated_mlp=False,
                               norm="layernorm", tied=False),
    # GPT-2: LayerNorm, GELU MLP of n_inner (4 x n_embd when null), learned
    # positions, output matrix tied to the input embedding.
    "GPT2LMHeadModel": dict(keys=_GPT2_KEYS, gated_mlp=False, norm="layernorm", tied=True),
}
_MODEL_TYPES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM",
                "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM",
                "gpt_neox": "GPTNeoXForCausalLM", "gpt2": "GPT2LMHeadModel",
                "mixtral": "MixtralForCausalLM", "qwen2_moe": "Qwen2MoeForCausalLM",
                "qwen3_moe": "Qwen3MoeForCausalLM", "deepseek_v3": "DeepseekV3ForCausalLM",
                "gpt_oss": "GptOssForCausalLM"}

# Known architectures the Model cannot describe yet, and what it lacks.
_MOE = "mixture-of-experts is not modelled yet"
UNSUPPORTED = {
    "MixtralForCausalLM": _MOE,
    "Qwen2MoeForCausalLM": _MOE,
    "Qwen3MoeForCausalLM": _MOE,
    "DeepseekV2ForCausalLM": f"{_MOE} (nor is multi-head latent attention)",
    "DeepseekV3ForCausalLM": f"{_MOE} (nor is multi-head latent attention)",
    "GptOssForCausalLM": f"{_MOE} (nor are sliding-window layers)",
    "DbrxForCausalLM": _MOE,
    "JambaForCausalLM": f"{_MOE} (nor are Mamba layers)",
    "OlmoeForCausalLM": _MOE,
    "GraniteMoeForCausalLM": _MOE,
    "PhimoeForCausalLM": _MOE,
    "Llama4ForConditionalGeneration": _MOE,
}
_MOE_KEYS = ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts")


def is_hf_config(data: Mapping) -> bool:
    """Whether a mapping looks like a Hugging Face config (it names its
    architecture or model type), as opposed to the project's model keys."""
    return isinstance(data, Mapping) and ("architectures" in data or "model_type" in data)


def read_hf_config(path) -> dict:
    """The JSON mapping in a `config.json`; unreadable JSON or anything but a
    mapping is a ConfigError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(str(path), "<file>", str(path), "an existing config.json")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(str(path), "<file>", "unparsable JSON", f"valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(str(path), "<file>", type(data).__name__, "a JSON object")
    return data


def _architecture(config: Mapping, source: str) -> str:
    archs = config.get("architectures")
    if archs is not None:
        if not (isinstance(archs, list) and archs and all(isinstance(a, str) for a in archs)):
            raise ConfigError(source, "architectures", archs, "a list of architecture names")
        arch = archs[0]
    elif isinstance(config.get("model_type"), str):
        arch = _MODEL_TYPES.get(config["model_type"], config["model_type"])
    else:
        raise ConfigError(source, "architectures", "<missing>",
                          "a Hugging Face config naming its architecture (or model_type)")
    if arch in UNSUPPORTED:
        raise ConfigError(source, "architectures", arch, f"a dense architecture: {UNSUPPORTED[arch]}")
    if arch not in ARCHITECTURES:
        raise ConfigError(source, "architectures", arch,
                          f"one of {', '.join(ARCHITECTURES)} (other architectures are not modelled yet)")
    moe = [k for k in _MOE_KEYS if config.get(k)]
    if moe:
        raise ConfigError(source, moe[0], config[moe[0]], f"a dense model: {_MOE}")
    return arch


def _int(config: Mapping, key: str, source: str, default=...) -> int:
    v = config.get(key)
    if v is None:
        if default is ...:
            raise ConfigError(source, key, "<missing>", "a positive integer")
        return default
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise ConfigError(source, key, v, "a positive integer")
    return v


def _name(config: Mapping, source: str, arch: str) -> str:
    name = config.get("_name_or_path")
    if isinstance(name, str) and name.strip():
        return Path(name.strip().rstrip("/")).name
    path = Path(source)
    if path.suffix == ".json" and path.parent.name not in ("", "."):
        return path.parent.name
    return arch


def _check_sliding_window(config: Mapping, arch: str, seq_len: int, source: str):
    """Sliding-window attention (Mistral 7B v0.1; Qwen2 when switched on) is
    full attention for sequences up to the window, which is all the Model
    describes; longer sequences would overstate the attention cost."""
    window = config.get("sliding_window")
    if arch == "Qwen2ForCausalLM" and not config.get("use_sliding_window", False):
        return
    if arch in ("MistralForCausalLM", "Qwen2ForCausalLM") and isinstance(window, int) \
            and not isinstance(window, bool) and 0 < window < seq_len:
        raise ConfigError(source, "sliding_window", window,
                          f"no window shorter than seq_len {seq_len}: sliding-window attention "
                          f"is not modelled yet (pass seq_len <= {window})")


def model_dict_from_hf(config: Mapping, source: str, seq_len: int | None = None) -> dict:
    """The project's model keys for a Hugging Face config. `seq_len`
    replaces the config's longest position (max_position_embeddings, or
    n_positions for GPT-2), which is usually far more than one trains at."""
    if not isinstance(config, Mapping):
        raise ConfigError(source, "<config>", type(config).__name__, "a Hugging Face config mapping")
    arch = _architecture(config, source)
    spec = ARCHITECTURES[arch]
    keys = spec["keys"]
    hidden = _int(config, keys["hidden"], source)
    heads = _int(config, keys["heads"], source)
    kv_key = keys["kv_heads"] if "kv_heads" in keys else None
    kv_heads = _int(config, kv_key, source, default=heads) if kv_key else heads
    if heads % kv_heads:
        raise ConfigError(source, kv_key, kv_heads, f"a divisor of {keys['heads']} ({heads})")
    if arch == "GPT2LMHeadModel":   # n_inner null means 4 x n_embd
        feedforward = _int(config, keys["feedforward"], source, default=4 * hidden)
    else:
        feedforward = _int(config, keys["feedforward"], source)
    head_dim = config.get("head_dim")
    if head_dim is None:
        if hidden % heads:
            raise ConfigError(source, keys["heads"], heads,
                              f"a divisor of {keys['hidden']} ({hidden}), or a head_dim key")
        head_dim = hidden // heads
    else:
        head_dim = _int(config, "head_dim", source)
    if seq_len is None:
        seq_len = _int(config, keys["seq_len"], source)
    elif isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len <= 0:
        raise ConfigError(source, "seq_len", seq_len, "a positive integer")
    _check_sliding_window(config, arch, seq_len, source)
    tied = config.get("tie_word_embeddings", spec["tied"])
    if not isinstance(tied, bool):
        raise ConfigError(source, "tie_word_embeddings", tied, "true or false")
    return {
        "name": _name(config, source, arch),
        "description": f"from Hugging Face config ({arch}), {source}",
        "hidden": hidden,
        "feedforward": feedforward,
        "seq_len": seq_len,
        "heads": heads,
        "head_dim": head_dim,
        "blocks": _int(config, keys["blocks"], source),
        "kv_heads": kv_heads,
        "gated_mlp": spec["gated_mlp"],
        "norm": spec["norm"],
        "vocab": _int(config, keys["vocab"], source),
        "tied_embeddings": tied,
    }


__all__ = ["model_dict_from_hf", "read_hf_config", "is_hf_config", "ARCHITECTURES", "UNSUPPORTED"]
