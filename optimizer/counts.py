"""Parameter counts of a Model, from its keys alone (pure functions).

One formula for every architecture the Model describes:

  per block   attention  q: h*heads*hd, k and v: h*kv_heads*hd each,
                         output projection: heads*hd*h
              MLP        3*h*f when gated (gate, up, down), else 2*h*f
              norms      two per block: h each for RMSNorm (scale),
                         2h each for LayerNorm (scale and shift)
  embeddings  vocab*h for the input table, and as much again for the output
              matrix unless the two are tied; a final norm after the last block

Biases: the Model has no bias key, so they follow the norm. LayerNorm models
are counted GPT-style, with a bias on every linear layer (q, k, v, output,
both MLP matrices), as perf.block_params counts them today; RMSNorm models
(Llama, Mistral, Qwen) are counted without biases. (Qwen2 does carry q/k/v
biases: (heads + 2*kv_heads)*hd per block, under 0.01% of its size.)

Learned position embeddings (GPT-2) are not described by the Model either;
pass `learned_positions` (the table's rows, n_positions) to count them.
"""

from __future__ import annotations

from .spec import Model


def has_biases(model: Model) -> bool:
    """GPT-style biases on every linear layer: LayerNorm models, yes;
    RMSNorm models, no (see the module's docstring)."""
    return model.norm == "layernorm"


def norm_params(model: Model) -> int:
    """Parameters of one norm layer over `hidden` features."""
    return 2 * model.hidden if model.norm == "layernorm" else model.hidden


def attention_params(model: Model) -> int:
    """q, k, v and the output projection of one block (with biases when the
    architecture has them)."""
    h, A, KV = model.hidden, model.attn_width, model.kv_width
    weights = h * A + 2 * h * KV + A * h
    biases = (A + 2 * KV + h) if has_biases(model) else 0
    return weights + biases


def mlp_params(model: Model) -> int:
    """The MLP of one block: up (and gate) to `feedforward`, down to hidden."""
    h, f = model.hidden, model.feedforward
    up = 2 if model.gated_mlp else 1
    weights = up * h * f + f * h
    biases = (up * f + h) if has_biases(model) else 0
    return weights + biases


def block_param_count(model: Model) -> int:
    """One transformer block: attention, MLP and its two norms."""
    return attention_params(model) + mlp_params(model) + 2 * norm_params(model)


def embedding_param_count(model: Model, learned_positions: int = 0) -> int:
    """Input embedding table, the output (logits) matrix unless tied, and
    `learned_positions` rows of learned position embeddings. 0 when the
    model leaves the vocabulary out (vocab 0)."""
    h = model.hidden
    tables = 1 if model.tied_embeddings else 2
    return tables * model.vocab * h + learned_positions * h


def param_count(model: Model, learned_positions: int = 0) -> int:
    """All parameters: blocks, the final norm and the embeddings."""
    return (model.blocks * block_param_count(model) + norm_params(model)
            + embedding_param_count(model, learned_positions))


__all__ = ["param_count", "block_param_count", "embedding_param_count", "attention_params",
           "mlp_params", "norm_params", "has_biases"]
