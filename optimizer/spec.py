"""Inputs: the transformer (Model), the machine (System) and one parallel
execution (Strategy). Frozen dataclasses, validated once, on load.

Models and systems are data: YAML files under `models/` and `systems/`, found
by preset name, by path, or given as a dict. Every check names the source,
the key, the value and what was expected (ConfigError).
"""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from . import knobs
from .errors import ConfigError
from .hf import is_hf_config, model_dict_from_hf
from .presets import resolve_system_name, system_variant_names

DATATYPES = ("fp8", "bf16", "fp16", "fp32")
BYTES_PER_ELEMENT = {"fp8": 1, "bf16": 2, "fp16": 2, "fp32": 4}



def _preset_dirs(kind: str) -> list[Path]:
    """Where presets live: the source tree (editable install, checkout), then
    the data directory a regular install puts them in."""
    here = Path(__file__).resolve().parent.parent / kind
    installed = Path(sys.prefix) / "share" / "optimizer" / kind
    return [d for d in (here, installed) if d.is_dir()]


def preset_names(kind: str) -> list[str]:
    """Names of the presets of one kind ('models' or 'systems')."""
    names = set()
    for d in _preset_dirs(kind):
        names.update(p.stem for p in d.glob("*.yaml"))
    if kind == "systems":
        names.update(system_variant_names())
    return sorted(names)


def _read_source(x, kind: str) -> tuple[dict, str]:
    """A preset name, a YAML path or a dict -> (mapping, source label)."""
    if isinstance(x, Mapping):
        return dict(x), f"<{kind[:-1]} dict>"
    if not isinstance(x, (str, Path)):
        raise ConfigError(None, kind[:-1], x, "a preset name, a YAML path or a dict")
    path = Path(x)
    if not (path.suffix in (".yaml", ".yml") or path.exists()):
        for d in _preset_dirs(kind):
            candidate = d / f"{x}.yaml"
            if candidate.exists():
                path = candidate
                break
        else:
            raise ConfigError(None, kind[:-1], str(x),
                              f"a preset name (one of: {', '.join(preset_names(kind))}) "
                              "or a path to a YAML file")
    return read_yaml_mapping(path, kind[:-1]), str(path)


def read_yaml_mapping(path: Path, key: str, empty_ok=False) -> dict:
    """The mapping in a YAML file; a missing file, bad YAML or anything but
    a mapping is a ConfigError naming the file (`key` names what it was
    meant to be). An empty file is {} when `empty_ok`."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(str(path), key, str(path), "an existing YAML file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(str(path), "<file>", "unparsable YAML", f"valid YAML ({e})") from None
    if data is None and empty_ok:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(str(path), "<file>", type(data).__name__, "a mapping of keys")
    return data


class _Reader:
    """Takes keys out of one mapping with type and range checks, then
    complains about whatever is left over."""

    def __init__(self, data: Mapping, source: str, prefix: str = ""):
        self.data, self.source, self.prefix = dict(data), source, prefix
        self.used: set[str] = set()

    def _key(self, key):
        return f"{self.prefix}{key}"

    def get(self, key, kind, default=..., positive=False, nonneg=False, choices=None):
        self.used.add(key)
        if key not in self.data:
            if default is ...:
                raise ConfigError(self.source, self._key(key), "<missing>", f"a {kind.__name__} value")
            return default
        v = self.data[key]
        if kind is float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        if kind is float and isinstance(v, str) and v.strip().lower() in ("unlimited", "inf"):
            v = math.inf
        if kind is int and isinstance(v, float) and v.is_integer():
            v = int(v)
        if not isinstance(v, kind) or (kind is int and isinstance(v, bool)):
            raise ConfigError(self.source, self._key(key), v, f"a {kind.__name__}")
        if positive and not v > 0:
            raise ConfigError(self.source, self._key(key), v, "a positive number")
        if nonneg and not v >= 0:
            raise ConfigError(self.source, self._key(key), v, "a number >= 0")
        if choices is not None and v not in choices:
            raise ConfigError(self.source, self._key(key), v, f"one of {', '.join(map(str, choices))}")
        return v

    def done(self):
        extra = sorted(set(self.data) - self.used)
        if extra:
            raise ConfigError(self.source, self._key(extra[0]), self.data[extra[0]],
                              f"no such key (known: {', '.join(sorted(self.used))})")


# --------------------------------------------------------------------- model

@dataclass(frozen=True)
class Model:
    """A dense decoder-only transformer: `blocks` identical blocks of
    attention (`heads` query heads of `head_dim`, which need not equal
    hidden / heads, sharing `kv_heads` key/value heads: GQA, MQA at 1) and
    an MLP of width `feedforward` (gated, SwiGLU/GeGLU style, with three
    matrices when `gated_mlp`). `vocab` > 0 adds the embedding on the first
    pipeline stage and the logits and loss on the last; 0 leaves them out
    (the 2021-style accounting of the blocks alone)."""

    name: str
    hidden: int
    feedforward: int
    seq_len: int
    heads: int
    head_dim: int
    blocks: int
    kv_heads: int = 0            # 0 on input means "as many as heads"; set in __post_init__
    gated_mlp: bool = False
    norm: str = "layernorm"
    vocab: int = 0
    tied_embeddings: bool = False

    def __post_init__(self):
        if self.kv_heads == 0:
            object.__setattr__(self, "kv_heads", self.heads)

    @property
    def attn_width(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_width(self) -> int:
        return self.kv_heads * self.head_dim


NORMS = ("layernorm", "rmsnorm")
MODEL_INT_KEYS = ("hidden", "feedforward", "seq_len", "heads", "head_dim", "blocks")


def load_model(x) -> Model:
    """A Model from a preset name (see `models/`), a YAML path or a dict."""
    if isinstance(x, Model):
        return x
    data, source = _read_source(x, "models")
    if is_hf_config(data):
        data = model_dict_from_hf(data, source)
    r = _Reader(data, source)
    name = r.get("name", str, default=Path(source).stem if not source.startswith("<") else "custom")
    r.get("description", str, default="")
    kw = {k: r.get(k, int, positive=True) for k in MODEL_INT_KEYS}
    kw["kv_heads"] = r.get("kv_heads", int, default=kw["heads"], positive=True)
    if kw["heads"] % kw["kv_heads"]:
        raise ConfigError(source, "kv_heads", kw["kv_heads"], f"a divisor of heads ({kw['heads']})")
    kw["gated_mlp"] = r.get("gated_mlp", bool, default=False)
    kw["norm"] = r.get("norm", str, default="layernorm", choices=NORMS)
    kw["vocab"] = r.get("vocab", int, default=0, nonneg=True)
    kw["tied_embeddings"] = r.get("tied_embeddings", bool, default=False)
    r.done()
    return Model(name=name, **kw)


# -------------------------------------------------------------------- system

@dataclass(frozen=True)
class Network:
    """One network tier. `size` GPUs share it (the NVLink domain, or the whole
    scale-out fabric); collectives on it move bytes at `gbps` per direction per
    GPU times `efficiency`, after a fixed `latency_s`. `must_fill`: groups
    placed on it must tile it exactly. `processor_share`: the share of the
    GPU's compute its collectives take while overlapped with compute."""

    name: str
    size: int
    gbps: float
    efficiency: float
    latency_s: float
    must_fill: bool
    processor_share: float


@dataclass(frozen=True)
class System:
    """One GPU and the networks and memories around it. Rates per datatype;
    efficiency curves are (size, efficiency) points interpolated on a log
    scale of the operation size: matrix and vector curves by GFLOP per
    operation, the HBM curve by MB moved per operation."""

    name: str
    matrix_tflops: Mapping[str, float]
    vector_tflops: Mapping[str, float]
    matrix_efficiency: tuple
    vector_efficiency: tuple
    hbm_gib: float
    hbm_gbps: float
    hbm_efficiency: tuple
    offload_gib: float
    offload_gbps: float
    networks: tuple
    compute_memory_overlap: bool = False

    @property
    def nvlink_size(self) -> int:
        return self.networks[0].size

    def supports(self, datatype: str) -> bool:
        return datatype in self.matrix_tflops and datatype in self.vector_tflops


def _curve(r: _Reader, key: str) -> tuple:
    pts = r.get(key, list)
    out = []
    for i, p in enumerate(pts):
        ok = (isinstance(p, list) and len(p) == 2
              and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in p)
              and p[0] > 0 and 0 < p[1] <= 1)
        if not ok:
            raise ConfigError(r.source, f"{r._key(key)}[{i}]", p, "[size > 0, efficiency in (0, 1]]")
        out.append((float(p[0]), float(p[1])))
    if not out:
        raise ConfigError(r.source, r._key(key), pts, "at least one [size, efficiency] point")
    sizes = [p[0] for p in out]
    if sizes != sorted(sizes) or len(set(sizes)) != len(sizes):
        raise ConfigError(r.source, r._key(key), pts, "points in strictly increasing size")
    return tuple(out)


def _rates(r: _Reader, key: str) -> dict:
    rates = r.get(key, dict)
    for dt, v in rates.items():
        if dt not in DATATYPES:
            raise ConfigError(r.source, f"{r._key(key)}.{dt}", v, f"a datatype among {', '.join(DATATYPES)}")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
            raise ConfigError(r.source, f"{r._key(key)}.{dt}", v, "a positive number of TFLOP/s")
    return {k: float(v) for k, v in rates.items()}


SYSTEM_OVERRIDES = ("hbm_gib", "offload_gib", "offload_gbps", "nvlink_size")


def load_system(x, **overrides) -> System:
    """A System from a preset name (see `systems/`), a YAML path or a dict.
    Overrides: hbm_gib, offload_gib, offload_gbps ('unlimited' or math.inf
    allowed), nvlink_size (size of the first network tier)."""
    variant = resolve_system_name(x) if isinstance(x, str) else None
    if variant is not None:
        return dataclasses.replace(load_system(variant[0], **{**variant[1], **overrides}), name=x)
    if isinstance(x, System):
        data, source = None, x.name
        base = x
    else:
        data, source = _read_source(x, "systems")
        base = _parse_system(data, source)
    for k, v in overrides.items():
        if k not in SYSTEM_OVERRIDES:
            raise ConfigError("override", k, v, f"one of {', '.join(SYSTEM_OVERRIDES)}")
    if not overrides:
        return base
    r = _Reader(overrides, "override")
    changes = {}
    if "hbm_gib" in overrides:
        changes["hbm_gib"] = r.get("hbm_gib", float, positive=True)
    if "offload_gib" in overrides:
        changes["offload_gib"] = r.get("offload_gib", float, nonneg=True)
    if "offload_gbps" in overrides:
        changes["offload_gbps"] = r.get("offload_gbps", float, nonneg=True)
    if "nvlink_size" in overrides:
        n = r.get("nvlink_size", int, positive=True)
        nets = list(base.networks)
        if len(nets) > 1 and n > nets[1].size:
            raise ConfigError("override", "nvlink_size", n, f"at most the next tier's size {nets[1].size}")
        nets[0] = dataclasses.replace(nets[0], size=n)
        changes["networks"] = tuple(nets)
    return dataclasses.replace(base, **changes)


def _parse_system(data: dict, source: str) -> System:
    r = _Reader(data, source)
    name = r.get("name", str, default=Path(source).stem)
    r.get("description", str, default="")
    matrix = _rates(r, "matrix_tflops")
    vector = _rates(r, "vector_tflops")
    m_eff = _curve(r, "matrix_efficiency")
    v_eff = _curve(r, "vector_efficiency")
    overlap = r.get("compute_memory_overlap", bool, default=False)

    hbm = _Reader(r.get("hbm", dict), source, "hbm.")
    hbm_gib = hbm.get("gib", float, positive=True)
    hbm_gbps = hbm.get("gbps", float, positive=True)
    hbm_eff = _curve(hbm, "efficiency")
    hbm.done()

    off = _Reader(r.get("offload", dict, default={}), source, "offload.")
    off_gib = off.get("gib", float, default=0.0, nonneg=True)
    off_gbps = off.get("gbps", float, default=0.0, nonneg=True)
    off.done()

    nets_raw = r.get("networks", list)
    if not nets_raw:
        raise ConfigError(source, "networks", nets_raw, "at least one network tier")
    nets = []
    for i, n in enumerate(nets_raw):
        if not isinstance(n, dict):
            raise ConfigError(source, f"networks[{i}]", n, "a mapping")
        nr = _Reader(n, source, f"networks[{i}].")
        nets.append(Network(
            name=nr.get("name", str, default=f"tier{i}"),
            size=nr.get("size", int, positive=True),
            gbps=nr.get("gbps", float, positive=True),
            efficiency=nr.get("efficiency", float, positive=True),
            latency_s=nr.get("latency_us", float, nonneg=True) * 1e-6,
            must_fill=nr.get("must_fill", bool, default=False),
            processor_share=nr.get("processor_share", float, default=0.0, nonneg=True),
        ))
        if nets[-1].efficiency > 1:
            raise ConfigError(source, f"networks[{i}].efficiency", nets[-1].efficiency, "a value in (0, 1]")
        if nets[-1].processor_share >= 1:
            raise ConfigError(source, f"networks[{i}].processor_share", nets[-1].processor_share,
                              "a value in [0, 1)")
        nr.done()
    for i in range(1, len(nets)):
        if nets[i].size < nets[i - 1].size or nets[i].size % nets[i - 1].size:
            raise ConfigError(source, f"networks[{i}].size", nets[i].size,
                              f"a multiple of the inner tier's size {nets[i - 1].size}")
    r.done()
    return System(name=name, matrix_tflops=matrix, vector_tflops=vector,
                  matrix_efficiency=m_eff, vector_efficiency=v_eff,
                  hbm_gib=hbm_gib, hbm_gbps=hbm_gbps, hbm_efficiency=hbm_eff,
                  offload_gib=off_gib, offload_gbps=off_gbps,
                  networks=tuple(nets), compute_memory_overlap=overlap)


# ------------------------------------------------------------------ strategy

def _strategy_fields():
    """The Strategy's fields, from the knob registry: required knobs first,
    then the rest with their defaults, then the datatype."""
    typ = {"int": int, "tier": int, "bool": bool, "enum": str}
    req = [(k.name, typ[k.kind]) for k in knobs.KNOBS if k.default is None]
    opt = [(k.name, typ[k.kind], dataclasses.field(default=k.default)) for k in knobs.KNOBS
           if k.default is not None]
    return req + opt + [("datatype", str, dataclasses.field(default="bf16"))]


def _gpus(self) -> int:
    return self.tp * self.pp * self.dp


def _to_dict(self) -> dict:
    return dataclasses.asdict(self)


Strategy = dataclasses.make_dataclass(
    "Strategy", _strategy_fields(), frozen=True, namespace={
        "gpus": property(_gpus), "to_dict": _to_dict,
        "__doc__": "One parallel execution of one training iteration: every knob of "
                   "optimizer.knobs.KNOBS and the datatype. Network tiers index the system's "
                   "`networks`; -1 means the outermost tier."})
Strategy.__module__ = __name__

STRATEGY_KEYS = tuple(f.name for f in dataclasses.fields(Strategy))
POSITIVE_KNOBS = tuple(k.name for k in knobs.KNOBS if k.kind == "int")


def strategy_from_dict(d: Mapping, source: str = "<strategy dict>") -> Strategy:
    """A Strategy from a mapping, every key checked against the registry."""
    if isinstance(d, Strategy):
        return d
    if not isinstance(d, Mapping):
        raise ConfigError(source, "strategy", d, "a mapping of strategy keys")
    r = _Reader(d, source)
    kw: dict[str, Any] = {}
    for k in knobs.KNOBS:
        default = ... if k.default is None else k.default
        if k.kind in ("int", "tier"):
            kw[k.name] = r.get(k.name, int, default=default, positive=k.kind == "int")
        elif k.kind == "bool":
            kw[k.name] = r.get(k.name, bool, default=default)
        else:
            kw[k.name] = r.get(k.name, str, default=default, choices=k.choices)
    kw["datatype"] = r.get("datatype", str, default="bf16", choices=DATATYPES)
    r.done()
    return Strategy(**kw)


def load_strategy(x) -> Strategy:
    """A Strategy from a Strategy, a dict or a YAML path."""
    if isinstance(x, Strategy):
        return x
    if isinstance(x, Mapping):
        return strategy_from_dict(x)
    return strategy_from_dict(read_yaml_mapping(x, "strategy", empty_ok=True), str(x))


def parse_value(text: str):
    """A command-line value: int, bool or string."""
    low = text.strip().lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


__all__ = ["Model", "System", "Network", "Strategy", "load_model", "load_system",
           "load_strategy", "strategy_from_dict", "preset_names", "DATATYPES",
           "BYTES_PER_ELEMENT", "STRATEGY_KEYS",
           "SYSTEM_OVERRIDES", "parse_value"]
