"""Parameter counts (perf.model_params, the sum over the operator records)
against published totals, and the formula's properties."""

import dataclasses
from pathlib import Path

import pytest

import optimizer as opt
from optimizer import perf
from optimizer.hf import model_dict_from_hf, read_hf_config
from optimizer.spec import preset_names

HF = Path(__file__).parent / "data" / "hf"


def hf_model(name):
    path = HF / name / "config.json"
    # seq_len does not change the count; 4096 fits Mistral's sliding window
    return opt.load_model(model_dict_from_hf(read_hf_config(path), str(path), seq_len=4096))


# Published totals. Sources: the Hugging Face model pages' parameter counts
# for meta-llama/Meta-Llama-3-8B (8.03B), meta-llama/Meta-Llama-3-70B (70.6B)
# and meta-llama/Llama-3.1-405B (405.9B, "405B" on the Llama 3.1 model card);
# mistralai/Mistral-7B-v0.1 (7.24B); the Qwen2.5-7B model card ("Number of
# Parameters: 7.61B, non-embedding 6.53B"); the Qwen3-8B model card ("8.2B,
# non-embedding 6.95B").
@pytest.mark.parametrize("name, published", [
    ("llama3-8B", 8.03e9), ("llama3-70B", 70.6e9), ("llama3.1-405B", 405.9e9),
    ("mistral-7B", 7.24e9), ("qwen2.5-7B", 7.61e9), ("qwen3-8B", 8.2e9),
])
def test_published_totals_within_half_a_percent(name, published):
    assert perf.model_params(hf_model(name)) == pytest.approx(published, rel=0.005)


@pytest.mark.parametrize("name, non_embedding", [("qwen2.5-7B", 6.53e9), ("qwen3-8B", 6.95e9)])
def test_published_non_embedding_counts(name, non_embedding):
    m = hf_model(name)
    assert perf.model_params(m) - _embeddings(m) == pytest.approx(non_embedding, rel=0.005)


def test_presets_match_the_huggingface_import():
    for name in ("llama3-8B", "llama3-70B", "llama3.1-405B"):
        assert perf.model_params(opt.load_model(name)) == perf.model_params(hf_model(name))


def test_gpt2_small_124m():
    # GPT-2 small: 124,439,808 parameters (124.4M; the count nanoGPT prints
    # for the Hugging Face gpt2 checkpoint, position embeddings included).
    m = hf_model("gpt2")
    assert (perf.model_params(m) + 1024 * 768) == pytest.approx(124.4e6, rel=0.005)
    assert (perf.model_params(m) + 1024 * 768) == 124_439_808
    # The Model has no key for learned positions: without them, 1024*768 fewer.
    assert perf.model_params(m) == 124_439_808 - 1024 * 768


def test_pythia_160m_exact():
    # Pythia README (EleutherAI, Biderman et al. 2023), model table:
    # pythia-160m has 162,322,944 parameters, 85,056,000 non-embedding.
    m = hf_model("pythia-160m")
    assert perf.model_params(m) == 162_322_944
    assert perf.model_params(m) - _embeddings(m) == 85_056_000


def test_blocks_agree_with_the_time_models_count_for_todays_presets():
    # Today's presets are LayerNorm, ungated, full multi-head: the same
    # GPT-style accounting as perf.block_params.
    for name in preset_names("models"):
        m = opt.load_model(name)
        if m.norm == "layernorm" and not m.gated_mlp and m.kv_heads == m.heads:
            assert perf.block_params(m) == perf.block_params(m), name


def test_properties():
    m = hf_model("llama3-8B")
    h, f, hd = m.hidden, m.feedforward, m.head_dim
    # a gate matrix is h*f more per block
    ungated = dataclasses.replace(m, gated_mlp=False)
    assert perf.model_params(m) - perf.model_params(ungated) == m.blocks * h * f
    # tying removes the output matrix
    tied = dataclasses.replace(m, tied_embeddings=True)
    assert perf.model_params(m) - perf.model_params(tied) == m.vocab * h
    # full multi-head attention: k and v grow from 8 to 32 heads
    mha = dataclasses.replace(m, kv_heads=m.heads)
    assert perf.model_params(mha) - perf.model_params(m) == m.blocks * 2 * h * (m.heads - m.kv_heads) * hd
    # vocabulary 0 leaves the embeddings out entirely
    assert _embeddings(dataclasses.replace(m, vocab=0)) == 0
    # layernorm with GPT biases always counts more than rmsnorm without
    assert perf.block_params(dataclasses.replace(m, norm="layernorm")) > perf.block_params(m)


def _embeddings(m):
    """The input table, and the output matrix unless tied (vocab x hidden each)."""
    return (1 if m.tied_embeddings else 2) * m.vocab * m.hidden
