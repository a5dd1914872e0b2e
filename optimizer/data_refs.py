"""Published reference data shipped with the package (under optimizer/data),
read once and returned as plain mappings. The validation code and the tests
compare the analytical model against these numbers."""

from __future__ import annotations

import copy
from functools import lru_cache
from importlib import resources

import yaml

from .errors import ConfigError

H100_REFERENCE = "h100_public.yaml"


@lru_cache(maxsize=None)
def _load(filename: str) -> dict:
    text = resources.files("optimizer.data").joinpath(filename).read_text()
    data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ConfigError(f"optimizer/data/{filename}", "<file>", type(data).__name__, "a mapping")
    return data


def h100_reference() -> dict:
    """Published H100 runs: `megatron_core_weak_scaling` (vocab, seq,
    datatype and `runs` with tflops_per_gpu) and `megatron_bridge_h100` (rows
    with tokens_per_s_per_gpu). A fresh copy each call, so callers may edit it."""
    return copy.deepcopy(_load(H100_REFERENCE))


__all__ = ["h100_reference"]
