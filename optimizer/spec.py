"""Inputs: the transformer (Model), the machine (System) and one parallel
execution (Strategy). Frozen dataclasses, validated once, on load.

Models and systems are data: YAML files under `models/` and `systems/`, found
by preset name, by path, or given as a dict. Every check names the source,
the key, the value and what was expected (ConfigError).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import re
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import yaml

from . import knobs
from .errors import ConfigError, one_line
from .hf import is_hf_config, model_dict_from_hf
from .presets import resolve_system_name, system_variant_names

DATATYPES = ("fp8", "bf16", "fp16", "fp32")
BYTES_PER_ELEMENT = {"fp8": 1, "bf16": 2, "fp16": 2, "fp32": 4}



# ------------------------------------------------------------------ limits
# Every number read from a file, a dict or the command line is checked
# against these: beyond them a value is a typo or an attack, and past int64
# it would overflow the solver's tables (see README, "Limits on inputs").

MAX_GPUS = 2 ** 24              # GPUs in a system, a network tier or a plan (16.7 M)
MAX_INT_FIELD = 2 ** 31 - 1     # any other integer: model sizes, batch, strategy knobs
MIN_TFLOPS, MAX_TFLOPS = 1e-3, 1e6   # peak rate per GPU and datatype, TFLOP/s
MAX_GBPS = 1e6                  # any bandwidth, GB/s per direction per GPU
MAX_GIB = 2.0 ** 20             # any memory capacity per GPU, GiB (1 PiB)
MAX_LATENCY_US = 1e6            # a network latency below 1 s
MAX_OP_SIZE = 1e15              # sizes in efficiency curves (GFLOP or MB per operation)
MAX_FILE_BYTES = 16 * 2 ** 20   # a YAML input file
MAX_YAML_DEPTH = 64             # nesting of a YAML input file


def _preset_dirs(kind: str) -> list[Path]:
    """Where presets live: the source tree (editable install, checkout), then
    the data directory a regular install puts them in."""
    here = Path(__file__).resolve().parent.parent / kind
    installed = Path(sys.prefix) / "share" / "optimizer" / kind
    return [d for d in (here, installed) if d.is_dir()]


def natural_key(name: str) -> list:
    """Sort key that orders digits by value: 1T, 2T, 11T, 128T."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t.lower()) for t in re.split(r"(\d+)", name) if t]


def preset_names(kind: str) -> list[str]:
    """Names of the presets of one kind ('models' or 'systems'), in natural
    order (1T before 11T)."""
    names = set()
    for d in _preset_dirs(kind):
        names.update(p.stem for p in d.glob("*.yaml"))
    if kind == "systems":
        names.update(system_variant_names())
    return sorted(names, key=natural_key)


def preset_path(kind: str, name: str) -> Path | None:
    """The file of preset `name` (exact spelling), or None."""
    for d in _preset_dirs(kind):
        candidate = d / f"{name}.yaml"
        if candidate.is_file():
            return candidate
    return None


def _find_preset(x: str, kind: str) -> Path:
    """A preset by name: exact, else case-insensitive when that is
    unambiguous; a miss suggests close names."""
    names = preset_names(kind)
    if x in names:
        return preset_path(kind, x)
    folded = [n for n in names if n.lower() == x.lower()]
    if len(folded) == 1:
        return preset_path(kind, folded[0])
    what = kind[:-1]
    if folded:
        raise ConfigError(None, what, x, f"one of {', '.join(folded)} (the name is ambiguous "
                                         "without its case)")
    lower = {n.lower(): n for n in names}
    close = [lower[n] for n in difflib.get_close_matches(x.lower(), list(lower), n=3, cutoff=0.6)]
    hint = f"did you mean {' or '.join(close)}?" if close else f"see `optimize list {kind}`"
    raise ConfigError(None, what, x, f"a {what} preset name ({hint}) or a path to a YAML file")


def _read_source(x, kind: str) -> tuple[dict, str]:
    """A preset name, a YAML path or a dict -> (mapping, source label)."""
    if isinstance(x, Mapping):
        return dict(x), f"<{kind[:-1]} dict>"
    if not isinstance(x, (str, Path)):
        raise ConfigError(None, kind[:-1], x, "a preset name, a YAML path or a dict")
    if isinstance(x, str) and not x.strip():
        raise ConfigError(None, kind[:-1], x, "a preset name or a path to a YAML file, not empty")
    path = Path(x)
    if isinstance(x, str) and path.suffix not in (".yaml", ".yml") and not _exists(path, kind[:-1]):
        path = _find_preset(x, kind)
    return read_yaml_mapping(path, kind[:-1]), str(path)


def _exists(path: Path, key: str) -> bool:
    """path.exists(), with a name the OS refuses (NUL byte, too long) a
    ConfigError instead of a ValueError or OSError."""
    try:
        return path.exists()
    except (OSError, ValueError) as e:
        raise ConfigError(None, key, str(path), f"a usable file name ({type(e).__name__})") from None


class _DuplicateKey(yaml.constructor.ConstructorError):
    def __init__(self, key, mark):
        super().__init__(None, None, f"duplicate key {key!r}", mark)
        self.key = key


class StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is
    an error (the safe loader keeps the last one, silently)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":      # `<<: *base` may repeat keys
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    dup = key in seen
                    seen.add(key)
                except TypeError:                    # unhashable: the base class says so
                    continue
                if dup:
                    raise _DuplicateKey(key, key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def _yaml_depth_ok(node, limit: int) -> bool:
    """Whether the composed YAML node tree nests at most `limit` deep
    (iterative: a 3,000-deep file must not blow the stack here)."""
    stack, seen = [(node, 1)], set()
    while stack:
        n, d = stack.pop()
        if d > limit:
            return False
        if id(n) in seen:                       # aliases share nodes; visit each once
            continue
        seen.add(id(n))
        if isinstance(n, yaml.SequenceNode):
            stack.extend((c, d + 1) for c in n.value)
        elif isinstance(n, yaml.MappingNode):
            stack.extend((c, d + 1) for kv in n.value for c in kv)
    return True


def _yaml_problem(e: yaml.YAMLError) -> str:
    """A PyYAML error as 'line L, column C: problem', one line."""
    if isinstance(e, yaml.reader.ReaderError):
        return one_line(f"character #x{e.character:04x} at position {e.position}: {e.reason}", 160)
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    problem = getattr(e, "problem", None) or getattr(e, "context", None) or type(e).__name__
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return one_line(f"{where}{problem}", 160)


def check_input_file(path, key: str) -> Path:
    """A file to read: given, existing, a regular file (not a directory, a
    device or a pipe) and not larger than MAX_FILE_BYTES; else a ConfigError
    naming it."""
    if isinstance(path, str) and not path.strip():
        raise ConfigError(None, key, path, "a file path, not empty")
    path = Path(path)
    if not _exists(path, key):
        raise ConfigError(str(path), key, str(path), "an existing file")
    if path.is_dir():
        raise ConfigError(str(path), key, str(path), "a file, not a directory")
    if not path.is_file():
        raise ConfigError(str(path), key, str(path), "a regular file")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise ConfigError(str(path), key, f"{size:,} bytes", f"a file of at most {MAX_FILE_BYTES:,} bytes")
    return path


def read_text_file(path: Path, key: str) -> str:
    """The text of an input file, which must be UTF-8 (a ConfigError naming
    the file and the line of the first bad byte otherwise)."""
    path = check_input_file(path, key)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ConfigError(str(path), key, str(path), f"a readable file ({e.strerror or type(e).__name__})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise ConfigError(str(path), "<file>", f"byte 0x{data[e.start]:02x} on line {line}",
                          "UTF-8 text") from None


def read_yaml_mapping(path: Path, key: str, empty_ok=False) -> dict:
    """The mapping in a YAML file; a missing file, a directory, bytes that
    are not UTF-8, bad YAML, a key given twice, nesting deeper than
    MAX_YAML_DEPTH or anything but a mapping is a ConfigError naming the
    file (`key` names what it was meant to be). An empty file is {} when
    `empty_ok`."""
    text = read_text_file(path, key)
    path = Path(path)
    cache_key = (str(path), text, empty_ok)
    with _parsed_lock:
        data = _parsed.get(cache_key)
    if data is None:
        data = _parse_yaml_mapping(path, text, empty_ok)
        with _parsed_lock:
            _parsed[cache_key] = data
            while len(_parsed) > PARSED_KEPT:
                _parsed.pop(next(iter(_parsed)))
    return copy.deepcopy(data)


# files parsed lately, by path and text: a sweep loads the same model and
# system files for every point (a tenth of a point's time spent parsing)
PARSED_KEPT = 64
_parsed: dict = {}
_parsed_lock = threading.Lock()      # a thread pool's points share them


def _parse_yaml_mapping(path: Path, text: str, empty_ok: bool) -> dict:
    """read_yaml_mapping's parse of the text read."""
    try:
        loader = StrictLoader(text)          # the reader refuses non-printable characters here
    except yaml.YAMLError as e:
        raise ConfigError(str(path), "<file>", "unparsable YAML", f"valid YAML ({_yaml_problem(e)})") from None
    try:
        node = loader.get_single_node()
        if node is not None and not _yaml_depth_ok(node, MAX_YAML_DEPTH):
            raise ConfigError(str(path), "<file>", "deeper nesting",
                              f"YAML nested at most {MAX_YAML_DEPTH} levels deep")
        data = loader.construct_document(node) if node is not None else None
    except _DuplicateKey as e:
        raise ConfigError(str(path), e.key, f"a second value on line {e.problem_mark.line + 1}",
                          "each key once in a mapping") from None
    except yaml.YAMLError as e:
        raise ConfigError(str(path), "<file>", "unparsable YAML", f"valid YAML ({_yaml_problem(e)})") from None
    except RecursionError:
        raise ConfigError(str(path), "<file>", "deeper nesting",
                          f"YAML nested at most {MAX_YAML_DEPTH} levels deep") from None
    finally:
        loader.dispose()
    if data is None and empty_ok:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(str(path), "<file>", type(data).__name__, "a mapping of keys")
    return data


def fmt_limit(v) -> str:
    """A limit as people write it: 16777216, 2147483647, 1e+06, 0.001."""
    if isinstance(v, int) or (isinstance(v, float) and v.is_integer() and abs(v) < 2 ** 53):
        return str(int(v))
    return f"{v:g}"


def _range_text(low, high) -> str:
    return f"in [{fmt_limit(low)}, {fmt_limit(high)}]"


class _Reader:
    """Takes keys out of one mapping with type and range checks, then
    complains about whatever is left over. Integers must lie within
    +-MAX_INT_FIELD (or [low, high] when given); floats must be finite
    (+inf only with `allow_inf`, as 'unlimited') and within [low, high]."""

    def __init__(self, data: Mapping, source: str, prefix: str = ""):
        self.data, self.source, self.prefix = dict(data), source, prefix
        self.used: set[str] = set()

    def _key(self, key):
        return f"{self.prefix}{key}"

    def get(self, key, kind, default=..., positive=False, nonneg=False, choices=None,
            low=None, high=None, allow_inf=False):
        self.used.add(key)
        if key not in self.data:
            if default is ...:
                raise ConfigError(self.source, self._key(key), "<missing>", f"a {kind.__name__} value")
            return default
        v = self.data[key]
        if kind is float and isinstance(v, int) and not isinstance(v, bool):
            try:
                v = float(v)
            except OverflowError:
                raise ConfigError(self.source, self._key(key), v, "a number of sensible size") from None
        if kind is float and isinstance(v, str) and v.strip().lower() in ("unlimited", "inf") and allow_inf:
            v = math.inf
        if kind is int and isinstance(v, float) and v.is_integer():
            v = int(v)
        if not isinstance(v, kind) or (kind is int and isinstance(v, bool)):
            expected = f"a {kind.__name__}" + (" or 'unlimited'" if allow_inf else "")
            raise ConfigError(self.source, self._key(key), v, expected)
        if kind is float and not (math.isfinite(v) or (allow_inf and v == math.inf)):
            raise ConfigError(self.source, self._key(key), v,
                              "a finite number" + (" or 'unlimited'" if allow_inf else ""))
        if positive and not v > 0:
            raise ConfigError(self.source, self._key(key), v, "a positive number")
        if nonneg and not v >= 0:
            raise ConfigError(self.source, self._key(key), v, "a number >= 0")
        if kind is int:
            lo = (1 if positive else 0 if nonneg else -MAX_INT_FIELD) if low is None else low
            hi = MAX_INT_FIELD if high is None else high
            if not lo <= v <= hi:
                raise ConfigError(self.source, self._key(key), v, f"an integer {_range_text(lo, hi)}")
        if kind is float and (low is not None or high is not None) and not (allow_inf and v == math.inf):
            lo = -math.inf if low is None else low
            hi = math.inf if high is None else high
            if not lo <= v <= hi:
                raise ConfigError(self.source, self._key(key), v, f"a number {_range_text(lo, hi)}")
        if choices is not None and v not in choices:
            raise ConfigError(self.source, self._key(key), v, f"one of {', '.join(map(str, choices))}")
        return v

    def done(self):
        # keys need not be strings (`1: x` in YAML): sort and name them as text
        extra = sorted(set(self.data) - self.used, key=lambda k: (str(type(k)), str(k)))
        if extra:
            raise ConfigError(self.source, self._key(extra[0]), self.data[extra[0]],
                              f"no such key (known: {', '.join(sorted(map(str, self.used)))})")


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


def load_model(x, seq_len=None) -> Model:
    """A Model from a preset name (see `models/`), a YAML path, a Hugging
    Face config.json or a dict; `seq_len` sets the sequence length (a
    config.json's default is max_position_embeddings)."""
    if isinstance(x, Model):
        return x if seq_len is None else load_model(dataclasses.asdict(x), seq_len)
    data, source = _read_source(x, "models")
    if is_hf_config(data):
        data = model_dict_from_hf(data, source, seq_len)
    elif seq_len is not None:
        data = {**data, "seq_len": seq_len}
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
    operation, the HBM curve by MB moved per operation.

    A system loaded with overrides is named after them
    (`h100-80g-nvl8+hbm120g+nvl16`); `base` keeps the name it had before and
    `overrides` the values given, as (key, value) pairs."""

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
    base: str = ""
    overrides: tuple = ()
    # where the efficiency numbers came from (`optimize calibrate` writes it):
    # kept with the system, never read by the model
    provenance: Mapping | None = dataclasses.field(default=None, compare=False)

    def __post_init__(self):
        if not self.base:
            object.__setattr__(self, "base", self.name)

    @property
    def nvlink_size(self) -> int:
        return self.networks[0].size

    def supports(self, datatype: str) -> bool:
        return datatype in self.matrix_tflops and datatype in self.vector_tflops


def default_datatype(system: System) -> str:
    """The datatype to train in when none is asked for: the fastest the
    system has rates for (fp8, else bf16, else fp16, else fp32)."""
    for dt in DATATYPES:
        if system.supports(dt):
            return dt
    raise ConfigError(system.name, "matrix_tflops", dict(system.matrix_tflops),
                      f"rates for one of {', '.join(DATATYPES)} in both matrix_tflops and vector_tflops")


def _curve(r: _Reader, key: str) -> tuple:
    pts = r.get(key, list)
    out = []
    for i, p in enumerate(pts):
        ok = (isinstance(p, list) and len(p) == 2
              and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in p)
              and all(math.isfinite(float(v)) for v in p)
              and 0 < p[0] <= MAX_OP_SIZE and 0 < p[1] <= 1)
        if not ok:
            raise ConfigError(r.source, f"{r._key(key)}[{i}]", p,
                              f"[size in (0, {MAX_OP_SIZE:g}], efficiency in (0, 1]]")
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
        if (isinstance(v, bool) or not isinstance(v, (int, float))
                or not MIN_TFLOPS <= v <= MAX_TFLOPS):        # also rejects NaN and inf
            raise ConfigError(r.source, f"{r._key(key)}.{dt}", v,
                              f"a number of TFLOP/s in [{MIN_TFLOPS:g}, {MAX_TFLOPS:g}]")
    return {k: float(v) for k, v in rates.items()}


SYSTEM_OVERRIDES = ("hbm_gib", "offload_gib", "offload_gbps", "nvlink_size")


def override_suffix(overrides: Mapping) -> str:
    """How overrides show in a system's name: hbm_gib=120 -> '+hbm120g',
    offload_gib=1024 -> '+off1024g', offload_gbps=100 -> '+100gbps' (or
    '+unlimited'), nvlink_size=16 -> '+nvl16'; in SYSTEM_OVERRIDES order."""
    def num(v):
        return f"{v:g}" if isinstance(v, float) else str(v)
    fmt = {"hbm_gib": lambda v: f"hbm{num(v)}g", "offload_gib": lambda v: f"off{num(v)}g",
           "offload_gbps": lambda v: "unlimited" if v == math.inf else f"{num(v)}gbps",
           "nvlink_size": lambda v: f"nvl{v}"}
    return "".join(f"+{fmt[k](overrides[k])}" for k in SYSTEM_OVERRIDES if k in overrides)


def load_system(x, **overrides) -> System:
    """A System from a preset name (see `systems/`), a YAML path or a dict.
    Overrides: hbm_gib, offload_gib, offload_gbps ('unlimited' or math.inf
    allowed), nvlink_size (size of the first network tier). An overridden
    system is checked like a system file and named after its overrides."""
    variant = resolve_system_name(x) if isinstance(x, str) else None
    if variant is not None:
        return dataclasses.replace(load_system(variant[0], **{**variant[1], **overrides}), name=x)
    if isinstance(x, System):
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
        changes["hbm_gib"] = r.get("hbm_gib", float, positive=True, high=MAX_GIB)
    if "offload_gib" in overrides:
        changes["offload_gib"] = r.get("offload_gib", float, nonneg=True, high=MAX_GIB)
    if "offload_gbps" in overrides:
        changes["offload_gbps"] = r.get("offload_gbps", float, nonneg=True, high=MAX_GBPS, allow_inf=True)
    # a tier needs both a capacity and a bandwidth: one alone on a system
    # without a tier would be silently useless (or silently ignored)
    for given, other in (("offload_gib", "offload_gbps"), ("offload_gbps", "offload_gib")):
        if given in changes and other not in changes and changes[given] > 0 and getattr(base, other) == 0:
            raise ConfigError("override", given, overrides[given],
                              f"to come with {other} too: {base.name} has no offload tier "
                              "(give both --offload-gib and --offload-gbps)")
    if "nvlink_size" in overrides:
        n = r.get("nvlink_size", int, low=1, high=MAX_GPUS)
        nets = list(base.networks)
        nets[0] = dataclasses.replace(nets[0], size=n)
        i = _network_size_conflict(nets)
        if i is not None:             # only tier 1 can conflict: the others did on load
            whole = len(nets) > 2 or nets[1].must_fill
            raise ConfigError("override", "nvlink_size", n,
                              f"{'a divisor of' if whole else 'at most'} the size of tier 1 "
                              f"({nets[1].name}, {nets[1].size} GPUs), as in a system file")
        changes["networks"] = tuple(nets)
    merged = {**dict(base.overrides), **{k: changes.get(k, overrides[k]) if k != "nvlink_size"
                                         else changes["networks"][0].size for k in overrides}}
    return dataclasses.replace(base, **changes, name=base.base + override_suffix(merged),
                               base=base.base, overrides=tuple(merged.items()))


def _network_size_conflict(nets) -> int | None:
    """The first tier whose size does not fit the tier inside it, or None.
    A tier holds at least the inner tier's domain, and a whole number of
    them when it is not the outermost tier or must be filled; the outermost
    tier (the scale-out fabric) is otherwise a capacity: a 65,536-GPU
    fabric may connect NVLink domains of 72 (what explain's NVLink fix
    tries)."""
    for i in range(1, len(nets)):
        whole = i < len(nets) - 1 or nets[i].must_fill
        if nets[i].size < nets[i - 1].size or (whole and nets[i].size % nets[i - 1].size):
            return i
    return None


def _network_size_expected(nets, i) -> str:
    inner = nets[i - 1].size
    if i < len(nets) - 1 or nets[i].must_fill:
        return f"a multiple of the inner tier's size {inner}"
    return f"at least the inner tier's size {inner}"


def _parse_network(n, source: str, i: int) -> Network:
    if not isinstance(n, dict):
        raise ConfigError(source, f"networks[{i}]", n, "a mapping")
    nr = _Reader(n, source, f"networks[{i}].")
    net = Network(
        name=nr.get("name", str, default=f"tier{i}"),
        size=nr.get("size", int, low=1, high=MAX_GPUS),
        gbps=nr.get("gbps", float, positive=True, high=MAX_GBPS),
        efficiency=nr.get("efficiency", float, positive=True, high=1.0),
        latency_s=nr.get("latency_us", float, nonneg=True, high=MAX_LATENCY_US) * 1e-6,
        must_fill=nr.get("must_fill", bool, default=False),
        processor_share=nr.get("processor_share", float, default=0.0, nonneg=True),
    )
    if net.processor_share >= 1:
        raise ConfigError(source, f"networks[{i}].processor_share", net.processor_share,
                          "a value in [0, 1)")
    nr.done()
    return net


def _parse_system(data: dict, source: str) -> System:
    r = _Reader(data, source)
    name = r.get("name", str, default=Path(source).stem)
    r.get("description", str, default="")
    matrix = _rates(r, "matrix_tflops")
    vector = _rates(r, "vector_tflops")
    if not any(dt in matrix and dt in vector for dt in DATATYPES):
        raise ConfigError(source, "matrix_tflops", matrix,
                          "rates for at least one datatype that vector_tflops has too")
    m_eff = _curve(r, "matrix_efficiency")
    v_eff = _curve(r, "vector_efficiency")
    overlap = r.get("compute_memory_overlap", bool, default=False)

    hbm = _Reader(r.get("hbm", dict), source, "hbm.")
    hbm_gib = hbm.get("gib", float, positive=True, high=MAX_GIB)
    hbm_gbps = hbm.get("gbps", float, positive=True, high=MAX_GBPS)
    hbm_eff = _curve(hbm, "efficiency")
    hbm.done()

    off = _Reader(r.get("offload", dict, default={}), source, "offload.")
    off_gib = off.get("gib", float, default=0.0, nonneg=True, high=MAX_GIB)
    off_gbps = off.get("gbps", float, default=0.0, nonneg=True, high=MAX_GBPS, allow_inf=True)
    off.done()

    nets_raw = r.get("networks", list)
    if not nets_raw:
        raise ConfigError(source, "networks", nets_raw, "at least one network tier")
    nets = [_parse_network(n, source, i) for i, n in enumerate(nets_raw)]
    i = _network_size_conflict(nets)
    if i is not None:
        raise ConfigError(source, f"networks[{i}].size", nets[i].size, _network_size_expected(nets, i))
    provenance = r.get("provenance", dict, default=None)
    r.done()
    return System(name=name, matrix_tflops=matrix, vector_tflops=vector,
                  matrix_efficiency=m_eff, vector_efficiency=v_eff,
                  hbm_gib=hbm_gib, hbm_gbps=hbm_gbps, hbm_efficiency=hbm_eff,
                  offload_gib=off_gib, offload_gbps=off_gbps,
                  networks=tuple(nets), compute_memory_overlap=overlap, provenance=provenance)


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
    return self.tp * self.cp * self.pp * self.dp


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
# integer knobs that must be positive; those whose default is 0 (zero, shard) may be 0
POSITIVE_KNOBS = tuple(k.name for k in knobs.KNOBS if k.kind == "int" and k.default != 0)


def resolve_aliases(d: Mapping, source: str, lists: bool = False) -> dict:
    """`d` with every input-only alias (knobs.ALIASES) replaced by its
    knob: `optimizer_sharding: true` is zero=1, false zero=0. With `lists`
    (pins) a value may be a list of values. Giving both an alias and its
    knob is a ConfigError."""
    out = dict(d)
    for alias, (name, mapping) in knobs.ALIASES.items():
        if alias not in out:
            continue
        v = out.pop(alias)
        if name in out:
            raise ConfigError(source, alias, v, f"either {alias} or {name}, not both")
        many = lists and isinstance(v, (list, tuple, set, frozenset))
        vals = list(v) if many else [v]
        for x in vals:
            if not isinstance(x, (bool, np.bool_)):
                raise ConfigError(source, alias, x, f"true or false (an alias of {name})")
        mapped = [mapping[bool(x)] for x in vals]
        out[name] = mapped if many else mapped[0]
    return out


def strategy_from_dict(d: Mapping, source: str = "<strategy dict>") -> Strategy:
    """A Strategy from a mapping, every key checked against the registry."""
    if isinstance(d, Strategy):
        return d
    if not isinstance(d, Mapping):
        raise ConfigError(source, "strategy", d, "a mapping of strategy keys")
    r = _Reader(resolve_aliases(d, source), source)
    kw: dict[str, Any] = {}
    for k in knobs.KNOBS:
        default = ... if k.default is None else k.default
        if k.kind in ("int", "tier"):
            kw[k.name] = r.get(k.name, int, default=default, positive=k.name in POSITIVE_KNOBS,
                               nonneg=k.kind == "int" and k.name not in POSITIVE_KNOBS,
                               choices=k.values or None)
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
    if not isinstance(x, (Mapping, str, Path)):
        raise ConfigError(None, "strategy", x, "a Strategy, a mapping of strategy keys or a YAML path")
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
        v = float(text)
    except ValueError:
        return text
    return v if math.isfinite(v) else text      # 'nan', 'inf', '1e999' stay text, and fail as such


__all__ = ["Model", "System", "Network", "Strategy", "load_model", "load_system",
           "load_strategy", "strategy_from_dict", "preset_names", "DATATYPES",
           "BYTES_PER_ELEMENT", "STRATEGY_KEYS",
           "SYSTEM_OVERRIDES", "parse_value", "default_datatype", "override_suffix",
           "MAX_GPUS", "MAX_INT_FIELD"]
