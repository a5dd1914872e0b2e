"""Fuzzing the inputs (issue 13: no traceback, no misleading answer).

Random, edge and invalid models, systems, overrides, pins, strategies,
raw YAML files and sweep grids go through the Python API and the CLI:

- the API may raise only OptimizerError subclasses (ConfigError,
  InfeasibleStrategy);
- the CLI returns 0, 1, 2 or 4 (never 3, an internal error), prints at
  most one line on stderr, and with --json prints strict JSON.

The generators are plain functions of a `random.Random`, so that
scripts/fuzz.py runs the same ones over many more inputs, each in a worker
process with a timeout, and a failure is replayed from its seed:
`python scripts/fuzz.py --replay KIND SEED`.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import random
import tempfile

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import optimizer as opt
from optimizer import cli, knobs
from optimizer.spec import SYSTEM_OVERRIDES

# ------------------------------------------------------------------ generators

EDGE_INTS = (0, 1, -1, 2, 3, 7, 8, 16, 64, 2 ** 31 - 1, 2 ** 31, 2 ** 24, 2 ** 24 + 1, 2 ** 53 + 1,
             2 ** 63, -2 ** 63, 10 ** 18, 10 ** 30, 10 ** 400)
EDGE_FLOATS = (0.0, -0.0, 0.5, 1.0, 1e-300, 1e300, 1.5e308, math.nan, math.inf, -math.inf, 8.0, 2.0 ** 63)
EDGE_STRINGS = ("", " ", "x", "unlimited", "inf", "nan", "fp8", "bf16", "full", "none", "true", "1T",
                "megatron-22B", "h100-80g-nvl8", "a100-80g", "8", "-1", "1e999", "0x10", "\x00", "é" * 3,
                "x" * 2000, "../../etc/passwd", "/dev/zero", "/", "~", "a,b", "tp=8", "\n\n")


def weird_value(rng: random.Random, depth: int = 0):
    """Anything a user or a broken file might put where a value belongs."""
    r = rng.random()
    if r < 0.25:
        return rng.choice(EDGE_INTS)
    if r < 0.35:
        return rng.randint(-10, 10 ** rng.randint(1, 12))
    if r < 0.5:
        return rng.choice(EDGE_FLOATS)
    if r < 0.65:
        return rng.choice(EDGE_STRINGS)
    if r < 0.72:
        return rng.choice((True, False, None))
    if r < 0.86 and depth < 3:
        return [weird_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    if depth < 3:
        return {rng.choice(("a", "gib", "size", "tp", 1, "name")): weird_value(rng, depth + 1)
                for _ in range(rng.randint(0, 3))}
    return rng.choice(EDGE_INTS)


def _mutate(rng: random.Random, d: dict, extra_keys=("colour", "1", "")) -> dict:
    """A few keys of `d` changed, removed or added."""
    d = dict(d)
    for _ in range(rng.choice((0, 1, 1, 2, 3))):
        r = rng.random()
        if r < 0.6 and d:
            d[rng.choice(list(d))] = weird_value(rng)
        elif r < 0.8 and d:
            del d[rng.choice(list(d))]
        else:
            d[rng.choice(extra_keys)] = weird_value(rng)
    return d


def small_model(rng: random.Random) -> dict:
    """A valid, small model (plans in milliseconds on a few GPUs)."""
    heads = rng.choice((1, 2, 4, 8, 12, 16))
    head_dim = rng.choice((8, 16, 64, 128))
    kv = rng.choice([h for h in (1, 2, 4, heads) if heads % h == 0])
    m = {"name": "fuzz", "hidden": heads * head_dim * rng.choice((1, 2)), "heads": heads,
         "head_dim": head_dim, "feedforward": rng.choice((64, 256, 1024, 4096)),
         "seq_len": rng.choice((1, 64, 512, 2048)), "blocks": rng.choice((1, 2, 3, 8, 24, 97))}
    if rng.random() < 0.5:
        m.update(kv_heads=kv, gated_mlp=rng.random() < 0.5, norm=rng.choice(("layernorm", "rmsnorm")),
                 vocab=rng.choice((0, 1000, 50257)), tied_embeddings=rng.random() < 0.5)
    return m


def gen_model(rng: random.Random):
    """A model input: a valid small dict, a mutated one, a huge one, a
    Hugging Face config, a preset name, or nonsense."""
    r = rng.random()
    if r < 0.3:
        return small_model(rng)
    if r < 0.65:
        return _mutate(rng, small_model(rng), ("colour", "experts", "1", "", "name"))
    if r < 0.72:      # sizes at the limits
        m = small_model(rng)
        m[rng.choice(("hidden", "feedforward", "seq_len", "blocks", "vocab"))] = rng.choice(
            (2 ** 31 - 1, 2 ** 30, 2 ** 31, 10 ** 18, 735134400))
        return m
    if r < 0.8:
        hf = {"model_type": rng.choice(("llama", "gpt2", "mixtral", "bert", 3)), "hidden_size": 256,
              "intermediate_size": 1024, "num_attention_heads": 4, "num_hidden_layers": 2,
              "num_key_value_heads": 2, "vocab_size": 1000, "max_position_embeddings": 512,
              "n_embd": 256, "n_head": 4, "n_layer": 2, "n_positions": 512}
        return _mutate(rng, hf, ("architectures", "torch_dtype", "num_experts"))
    if r < 0.9:
        return rng.choice(("megatron-22B", "1T", "18T", "llama3-8B", "nope", "MEGATRON-22b", "",
                           "/no/such.yaml", "models/../models/1T.yaml"))
    return weird_value(rng)


def small_system(rng: random.Random) -> dict:
    """A valid system dict with 1-3 network tiers and maybe an offload tier."""
    tiers = rng.randint(1, 3)
    first = rng.choice((2, 4, 8))
    nets = [{"name": f"t{i}", "size": first * 8 ** i, "gbps": 450.0 / 3 ** i, "efficiency": 0.8,
             "latency_us": 5.0 * (i + 1), "must_fill": i == 0 and rng.random() < 0.5,
             "processor_share": 0.1} for i in range(tiers)]
    s = {"name": "fuzz-sys", "matrix_tflops": {"fp8": 1979, "bf16": 989}, "vector_tflops": {"fp8": 134, "bf16": 134},
         "matrix_efficiency": [[0.03, 0.01], [3.0, 0.14], [300, 0.74]],
         "vector_efficiency": [[0.001, 0.1], [10, 0.9]],
         "hbm": {"gib": rng.choice((0.5, 8, 80, 2 ** 20)), "gbps": 3352, "efficiency": [[0.1, 0.3], [1000, 0.95]]},
         "networks": nets}
    if rng.random() < 0.4:
        s["offload"] = {"gib": rng.choice((0, 256, 2048)), "gbps": rng.choice((0, 50, "unlimited"))}
    if rng.random() < 0.2:
        s["matrix_tflops"] = {"bf16": 312}
        s["vector_tflops"] = {"bf16": 78}
    return s


def gen_system(rng: random.Random):
    r = rng.random()
    if r < 0.3:
        return small_system(rng)
    if r < 0.65:
        s = small_system(rng)
        where = rng.random()
        if where < 0.4:
            return _mutate(rng, s, ("colour", "offload", "hbm", "networks"))
        if where < 0.6:
            s["hbm"] = _mutate(rng, s["hbm"], ("gib", "bytes"))
        elif where < 0.8:
            i = rng.randrange(len(s["networks"]))
            s["networks"][i] = _mutate(rng, s["networks"][i], ("size", "speed"))
        else:
            s[rng.choice(("matrix_efficiency", "matrix_tflops", "networks"))] = weird_value(rng)
        return s
    if r < 0.85:
        return rng.choice(("h100-80g-nvl8", "a100-80g", "h100-80g-nvl8-off1t-100gbps", "gb200-186g-nvl72",
                           "h100-80g-nvl16", "h100-80g-nvl8+hbm120g", "nope", "", "H100-80G-NVL8"))
    return weird_value(rng)


def gen_overrides(rng: random.Random) -> dict:
    out = {}
    for k in SYSTEM_OVERRIDES:
        if rng.random() < 0.25:
            out[k] = rng.choice((weird_value(rng), 0, 16, 120, 1024, "unlimited", 2 ** 25))
    if rng.random() < 0.05:
        out["colour"] = 1
    return out


def gen_pins(rng: random.Random):
    """pin= for plan: a valid or broken mapping, or not a mapping at all."""
    if rng.random() < 0.08:
        return rng.choice(("tp=8", ["tp", 8], 8, None, {}))
    out = {}
    for _ in range(rng.choice((0, 0, 1, 1, 2))):
        knob = rng.choice(knobs.NAMES + ("colour", "datatype"))
        k = knobs.BY_NAME.get(knob)
        r = rng.random()
        if r < 0.5 and k is not None:
            v = (rng.choice(k.choices) if k.choices else rng.choice((1, 2, 4, 8, 0, -1)))
            out[knob] = [v, rng.choice(k.choices or (1, 2))] if rng.random() < 0.3 else v
        elif r < 0.6:
            out[knob] = []
        else:
            out[knob] = weird_value(rng)
    return out


def _divisors(n: int, at_most: int = 8) -> list:
    """Divisors of n up to `at_most` (the generator's own helper: a loop to n
    itself hung on the fuzzer's 2**31-sized models)."""
    return [d for d in range(1, min(n, at_most) + 1) if n % d == 0]


def valid_strategy(rng: random.Random, model: dict, gpus_max: int = 64) -> dict:
    """A strategy that passes the divisibility rules of `model` (a small
    model dict): what reaches the time and memory model."""
    tp = rng.choice([d for d in _divisors(model["heads"]) if d <= 8])
    pp = rng.choice([d for d in _divisors(model["blocks"]) if d <= 8])
    dp = rng.choice((1, 2, 4))
    local = rng.choice((1, 2, 4, 8))
    mb = rng.choice(_divisors(local))
    s = {"tp": tp, "pp": pp, "dp": dp, "batch": dp * local, "microbatch": mb,
         "interleave": rng.choice(_divisors(model["blocks"] // pp)[:3]),
         "recompute": rng.choice(("none", "attn", "full")), "datatype": rng.choice(("fp8", "bf16", "fp16", "fp32"))}
    for k in knobs.KNOBS:
        if k.kind == "bool" and rng.random() < 0.3:
            s[k.name] = True
        if k.kind == "tier" and rng.random() < 0.3:
            s[k.name] = rng.choice((0, 1, -1))
    if rng.random() < 0.3:
        s["tp_comm"] = rng.choice(("ar", "rs_ag", "p2p_rs_ag"))
        s["tp_overlap"] = rng.choice(("none", "ring", "pipe"))
    return s


def gen_strategy(rng: random.Random, model=None):
    """A strategy mapping: valid for `model` (a dict) half the time when
    given, else valid-looking knobs, some broken."""
    if isinstance(model, dict) and all(isinstance(model.get(k), int) and model[k] > 0
                                       for k in ("heads", "blocks")) and rng.random() < 0.5:
        s = valid_strategy(rng, model)
        return _mutate(rng, s, ("colour", "gpus")) if rng.random() < 0.2 else s
    if rng.random() < 0.05:
        return weird_value(rng)
    s = {"tp": rng.choice((1, 2, 4, 8)), "pp": rng.choice((1, 2, 3, 4)), "dp": rng.choice((1, 2, 4)),
         "batch": rng.choice((1, 4, 8, 16, 32))}
    for k in knobs.KNOBS:
        if k.default is not None and rng.random() < 0.3:
            s[k.name] = rng.choice(k.choices) if k.choices else rng.choice((-1, 0, 1, 2))
    if rng.random() < 0.5:
        s["datatype"] = rng.choice(("fp8", "bf16", "fp16", "fp32", "fp4"))
    return _mutate(rng, s, ("colour", "datatype", "gpus")) if rng.random() < 0.5 else s


def gen_yaml_bytes(rng: random.Random) -> bytes:
    """The bytes of a YAML input file: valid, broken, hostile."""
    r = rng.random()
    if r < 0.3:
        obj = rng.choice((gen_model, gen_system, gen_strategy))(rng)
        try:
            return yaml.safe_dump(obj).encode()
        except Exception:
            return b"{}"
    if r < 0.4:
        return bytes(rng.randrange(256) for _ in range(rng.randint(0, 200)))
    if r < 0.45:
        return "hidden: 1\nname: é\n".encode("latin-1") + b"\xff\xfe\x80"
    if r < 0.55:
        n = rng.choice((10, 63, 64, 65, 1000, 20000))
        return (b"[" * n + b"1" + b"]" * n) if rng.random() < 0.5 else (b"a:\n" + b"".join(
            b" " * (i + 1) + b"a:\n" for i in range(min(n, 3000))) + b" " * 3001 + b"1\n")
    if r < 0.62:
        return b"hidden: 64\nhidden: 128\nheads: 4\nhead_dim: 16\nfeedforward: 64\nseq_len: 8\nblocks: 2\n"
    if r < 0.7:      # the billion laughs
        lines = [b"a0: &a0 [x, x, x, x, x, x, x, x, x]"]
        for i in range(1, rng.choice((3, 9))):
            lines.append(b"a%d: &a%d [" % (i, i) + b", ".join([b"*a%d" % (i - 1)] * 9) + b"]")
        return b"\n".join(lines) + b"\n"
    if r < 0.8:
        return rng.choice((b"!!python/object/apply:os.system ['echo hi']\n", b"hidden: !!float nan\n",
                           b"hidden: .inf\nheads: 1e999\n", b"--- 1\n--- 2\n", b"? [1, 2]\n: 3\n",
                           b"\xef\xbb\xbfhidden: 8\n", b"hidden: 0x7fffffffffffffffffff\n",
                           b"key: 'unterminated\n", b"\t- tab\n", b"hidden: 1_000\n",
                           b"- 1\n- 2\n", b"", b"~\n", b"hidden: 2001-01-01\n", b"&a [*a]\n",
                           b"{hidden: 64, heads: 4, head_dim: 16, feedforward: 256, seq_len: 64, blocks: 3}\n"))
    base = yaml.safe_dump(rng.choice((small_model, small_system))(rng)).encode()
    cut = rng.randrange(len(base) + 1)
    return base[:cut] + bytes([rng.randrange(256)]) + base[cut + 1:]


def small_grid(rng: random.Random) -> dict:
    """A valid grid of one to four small points."""
    g = {"models": [small_model(rng) if rng.random() < 0.7 else "megatron-22B"],
         "systems": [small_system(rng) if rng.random() < 0.5 else rng.choice(("h100-80g-nvl8", "a100-80g"))],
         "gpus": rng.choice(([8], [4, 16], 16)),
         "options": {"max_batch": rng.choice((8, 32)), "time_limit_s": 2}}
    if rng.random() < 0.3:
        g["overrides"] = {"hbm_gib": rng.choice(([8, 80], 0.5))}
    if rng.random() < 0.3:
        g["options"]["pin"] = rng.choice(({"tp": 2}, {"recompute": ["full", "none"]}, {"microbatch": 1}))
    return g


def gen_grid(rng: random.Random):
    if rng.random() < 0.4:
        g = small_grid(rng)
        return _mutate(rng, g, ("name", "colour", "options")) if rng.random() < 0.3 else g
    if rng.random() < 0.05:
        return weird_value(rng)
    g = {"models": [rng.choice(("megatron-22B", "1T")) if rng.random() < 0.5 else gen_model(rng)
                    for _ in range(rng.randint(0, 2))] if rng.random() < 0.8 else gen_model(rng),
         "gpus": rng.choice(([8, 16], 16, [], [0], [2 ** 24], ["8"], [True], [8.0], 2 ** 63))}
    if rng.random() < 0.6:
        g["systems"] = [gen_system(rng)] if rng.random() < 0.5 else rng.choice(("a100-80g", ["h100-80g-nvl8"]))
    if rng.random() < 0.4:
        g["overrides"] = {k: [v] if rng.random() < 0.5 else v for k, v in gen_overrides(rng).items()}
    if rng.random() < 0.5:
        g["options"] = {"max_batch": rng.choice((32, [16, 32], 0, 2 ** 40, "x")),
                        "datatype": rng.choice(("fp8", "bf16", None, ["fp8", "bf16"], "fp4")),
                        "pin": gen_pins(rng), "time_limit_s": rng.choice((1, 0.5, 0, math.nan, -1, "1"))}
        for k in list(g["options"]):
            if rng.random() < 0.4:
                del g["options"][k]
    if rng.random() < 0.3:
        g = _mutate(rng, g, ("name", "colour", "options"))
    return g


# ------------------------------------------------------------------ API

API_ERRORS = (opt.OptimizerError,)

# Crashes found by the fuzzer in code this branch may not change (spec.py's
# loaders, perf.py, rules.py, knobs.py), each reported with a reproducer and
# a patch, and each pinned by a strict xfail below: when it is fixed, the
# xfail passes, fails the suite, and its entry here must go.
KNOWN_BUGS: dict = {}


def known_bug(text: str) -> str | None:
    """The KNOWN_BUGS entry a traceback or an internal error's line matches."""
    for name, parts in KNOWN_BUGS.items():
        if all(p in text for p in parts):
            return name
    return None


def _escaped(e: BaseException) -> bool:
    """Whether an exception from the API breaks the contract (not an
    OptimizerError, not a known reported bug)."""
    return not isinstance(e, API_ERRORS) and known_bug(f"{type(e).__name__}: {e}") is None
SMALL_GPUS = (1, 2, 3, 4, 8, 12, 16, 32, 64)


def _plan_kwargs(rng: random.Random) -> dict:
    kw = {"gpus": rng.choice(SMALL_GPUS), "max_batch": rng.choice((1, 8, 32, 64)), "time_limit_s": 2.0}
    if rng.random() < 0.6:
        kw["pin"] = gen_pins(rng)
    if rng.random() < 0.2:
        key = rng.choice(("gpus", "max_batch", "top_k", "threads", "time_limit_s", "datatype", "method"))
        kw[key] = weird_value(rng) if rng.random() < 0.7 else rng.choice((True, -1, 0, 10 ** 30, "2", math.nan))
    if rng.random() < 0.3:
        kw["top_k"] = rng.choice((1, 2, 3, 5))
    if rng.random() < 0.1:
        kw["method"] = "enumerate"
    if rng.random() < 0.1:
        kw["batch"] = rng.choice((1, 4, 8, 12, 64)) if rng.random() < 0.8 else weird_value(rng)
    if rng.random() < 0.1:
        lo = rng.choice((1, 2, 4, 8))
        kw["gpus"] = range(lo, lo + rng.choice((0, 8, 24)) + 1, rng.choice((1, 2, 4)))
        kw["target_samples_per_s"] = rng.choice((1.0, 50.0, 1e6)) if rng.random() < 0.8 else weird_value(rng)
    elif rng.random() < 0.03:
        kw["target_samples_per_s"] = 10.0          # a target without a range: refused
    return kw


def run_api(rng: random.Random, workdir: str):
    """One API call on generated input; returns nothing, raises what the API
    raised (the caller decides what may escape)."""
    what = rng.choice(("load_model", "load_system", "evaluate", "plan", "plan", "load_grid", "yaml_file"))
    if what == "load_model":
        return opt.load_model(gen_model(rng))
    if what == "load_system":
        return opt.load_system(gen_system(rng), **gen_overrides(rng))
    if what == "evaluate":
        model = small_model(rng) if rng.random() < 0.7 else gen_model(rng)
        system = rng.choice(("h100-80g-nvl8", "a100-80g")) if rng.random() < 0.5 else gen_system(rng)
        rep = opt.evaluate(model, system, gen_strategy(rng, model))
        json.loads(json.dumps(rep.to_dict(), allow_nan=False))
        rep.summary()
        return rep
    if what == "plan":
        model = small_model(rng) if rng.random() < 0.7 else gen_model(rng)
        system = small_system(rng) if rng.random() < 0.6 else gen_system(rng)
        res = opt.plan(model, system, **_plan_kwargs(rng))
        json.loads(json.dumps(res.to_dict(), allow_nan=False))      # strict JSON from Python too
        res.summary()
        assert res.status in ("optimal", "feasible", "infeasible", "unknown")
        assert (res.best is None) == (res.status in ("infeasible", "unknown"))
        return res
    if what == "load_grid":
        return opt.load_grid(gen_grid(rng))
    path = os.path.join(workdir, f"f{rng.randrange(10 ** 9)}.yaml")
    with open(path, "wb") as f:
        f.write(gen_yaml_bytes(rng))
    loader = rng.choice((opt.load_model, opt.load_system, opt.load_strategy, opt.load_grid))
    return loader(path)


def check_api(rng: random.Random, workdir: str):
    """Run one API call; an escaping exception that breaks the contract is raised."""
    try:
        run_api(rng, workdir)
    except Exception as e:
        if _escaped(e):
            raise


# ------------------------------------------------------------------ CLI

NUMBERS = ("16", "8", "1", "0", "-1", "nan", "inf", "1e999", "", "3.5", "2", "4096", "16777217",
           "99999999999999999999", "0x10", "1e-9", "unlimited", " 8")


def _write(workdir: str, rng: random.Random, obj=None, raw=None) -> str:
    path = os.path.join(workdir, f"c{rng.randrange(10 ** 9)}.{rng.choice(('yaml', 'json', 'yml'))}")
    with open(path, "wb") as f:
        if raw is not None:
            f.write(raw)
        else:
            try:
                f.write(yaml.safe_dump(obj).encode())
            except Exception:
                f.write(b"{}\n")
    return path


def _input_arg(rng: random.Random, workdir: str, gen) -> str:
    r = rng.random()
    if r < 0.5:
        return _write(workdir, rng, gen(rng))
    if r < 0.65:
        return _write(workdir, rng, raw=gen_yaml_bytes(rng))
    v = gen(rng)
    return v if isinstance(v, str) else _write(workdir, rng, v)


def gen_argv(rng: random.Random, workdir: str) -> list:
    """An `optimize` command line: mostly plausible, partly hostile."""
    cmd = rng.choice(("plan", "plan", "plan", "evaluate", "evaluate", "sweep", "list", "default"))
    args = []
    if cmd in ("plan", "default"):
        args += ["--model", _input_arg(rng, workdir, lambda r: small_model(r) if r.random() < 0.8 else gen_model(r))]
        args += ["--gpus", rng.choice(("1", "2", "4", "8", "16", "32")) if rng.random() < 0.85 else rng.choice(NUMBERS)]
        if rng.random() < 0.7:
            args += ["--system", _input_arg(rng, workdir, lambda r: small_system(r) if r.random() < 0.8 else gen_system(r))]
        args += ["--time-limit", rng.choice(("2", "1", "0.01")) if rng.random() < 0.9 else rng.choice(NUMBERS)]
        if rng.random() < 0.1:
            args += ["--gpus", rng.choice(("1:8", "4:16:4", "8:4", "2:2", "1:", ":8", "1:8:0")),
                     "--target-samples-per-s", rng.choice(("10", "0", "1e6", "nan"))]
        for flag, vals in (("--max-batch", ("8", "32", "64")), ("--batch", ("4", "8", "12")),
                           ("--top", ("1", "2", "3")),
                           ("--threads", ("1", "2")), ("--datatype", ("fp8", "bf16", "fp32")),
                           ("--method", ("cpsat", "enumerate")), ("--hbm-gib", ("8", "80", "0.5")),
                           ("--offload-gib", ("0", "512")), ("--offload-gbps", ("50", "unlimited")),
                           ("--nvlink-size", ("4", "8", "16"))):
            if rng.random() < 0.2:
                args += [flag, rng.choice(vals) if rng.random() < 0.85 else rng.choice(NUMBERS)]
        for _ in range(rng.choice((0, 0, 1, 2))):
            knob = rng.choice(knobs.NAMES + ("colour",))
            k = knobs.BY_NAME.get(knob)
            val = rng.choice(k.choices) if k is not None and k.choices and rng.random() < 0.6 else rng.choice(NUMBERS + ("4,8", ",", "full,none"))
            args += ["--pin", rng.choice((f"{knob}={val}", f"{knob}", f"={val}", f"{knob}={val}"))]
    elif cmd == "evaluate":
        model = small_model(rng) if rng.random() < 0.8 else gen_model(rng)
        args += ["--model", _write(workdir, rng, model) if rng.random() < 0.9 else _input_arg(rng, workdir, gen_model)]
        if rng.random() < 0.6:
            args += ["--system", _input_arg(rng, workdir, lambda r: small_system(r) if r.random() < 0.7 else gen_system(r))]
        if rng.random() < 0.5:
            strat = gen_strategy(rng, model)
            doc = rng.choice((strat, {"status": "optimal", "best": {"strategy": strat}},
                              {"status": "infeasible", "best": None}, {"status": "ok", "strategy": strat},
                              {"strategy": weird_value(rng)}, {"best": strat}))
            args += ["--strategy", _write(workdir, rng, doc) if rng.random() < 0.85
                     else _write(workdir, rng, raw=gen_yaml_bytes(rng))]
        strat = gen_strategy(rng, model)
        if isinstance(strat, dict):
            for k, v in strat.items():
                if rng.random() < 0.9:
                    args += ["--set", f"{k}={v}"]
        if rng.random() < 0.1:
            args += ["--set", rng.choice(("tp", "=3", "tp=1", "tp=nan"))]
    elif cmd == "sweep":
        grid = gen_grid(rng)
        args += [_write(workdir, rng, grid) if rng.random() < 0.85 else _write(workdir, rng, raw=gen_yaml_bytes(rng)),
                 "--executor", "serial", "--quiet",
                 "--out", os.path.join(workdir, f"r{rng.randrange(10 ** 9)}.jsonl")]
        if rng.random() < 0.2:
            args += ["--csv", rng.choice((os.path.join(workdir, "g.csv"), workdir, "/no/such/dir/x.csv"))]
    else:
        args += rng.choice(([], ["models"], ["systems"], ["models"], ["nothing"]))
    if rng.random() < 0.6:
        args.append("--json")
    if cmd == "default":
        return args
    return [cmd, *args]


def _refuse_constant(name):
    raise ValueError(f"not strict JSON: {name}")


def run_cli(argv: list) -> tuple:
    """(exit code, stdout, stderr) of cli.main(argv) in this process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(argv)
    return code, out.getvalue(), err.getvalue()


def cli_problems(argv: list, code: int, out: str, err: str) -> list:
    """What is wrong with one CLI run (empty when nothing is)."""
    problems = []
    if code == 3 and known_bug(err):
        return []
    if code not in (0, 1, 2, 4):
        problems.append(f"exit {code}: {err.strip()[:300]}")
    if len(err.strip().splitlines()) > 1:
        problems.append(f"{len(err.strip().splitlines())} lines on stderr: {err[:300]!r}")
    if "Traceback" in err or "Traceback" in out:
        problems.append("traceback printed")
    if "--json" in argv and code in (0, 1, 4):
        try:
            json.loads(out, parse_constant=_refuse_constant)
        except ValueError as e:
            problems.append(f"bad JSON: {e}")
    return problems


# ------------------------------------------------------------------ tests

def fuzz(n: int):
    """Settings of a fuzz test: n examples, reproducible (derandomized), no deadline."""
    return settings(max_examples=n, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def workdir():
    with tempfile.TemporaryDirectory() as d:
        yield d


@fuzz(250)
@given(st.randoms(use_true_random=False))
def test_loaders_raise_only_config_errors(workdir, rng):
    what = rng.choice((0, 1, 2, 3))
    try:
        if what == 0:
            opt.load_model(gen_model(rng))
        elif what == 1:
            opt.load_system(gen_system(rng), **gen_overrides(rng))
        elif what == 2:
            opt.load_grid(gen_grid(rng))
        else:
            path = os.path.join(workdir, "y.yaml")
            with open(path, "wb") as f:
                f.write(gen_yaml_bytes(rng))
            rng.choice((opt.load_model, opt.load_system, opt.load_strategy, opt.load_grid))(path)
    except opt.ConfigError as e:
        assert "\n" not in str(e) and len(str(e)) < 2000
    except Exception as e:
        if _escaped(e):
            raise


@fuzz(150)
@given(st.randoms(use_true_random=False))
def test_evaluate_raises_only_optimizer_errors(rng):
    model = small_model(rng) if rng.random() < 0.7 else gen_model(rng)
    system = rng.choice(("h100-80g-nvl8", "a100-80g")) if rng.random() < 0.5 else gen_system(rng)
    try:
        rep = opt.evaluate(model, system, gen_strategy(rng, model))
    except Exception as e:
        if _escaped(e):
            raise
        return
    json.loads(json.dumps(rep.to_dict(), allow_nan=False))
    assert rep.summary()


@fuzz(60)
@given(st.randoms(use_true_random=False))
def test_plan_raises_only_optimizer_errors_and_answers_honestly(rng):
    model = small_model(rng) if rng.random() < 0.7 else gen_model(rng)
    system = small_system(rng) if rng.random() < 0.6 else gen_system(rng)
    try:
        res = opt.plan(model, system, **_plan_kwargs(rng))
    except Exception as e:
        if _escaped(e):
            raise
        return
    assert res.status in ("optimal", "feasible", "infeasible", "unknown")
    assert (res.best is None) == (res.status in ("infeasible", "unknown"))
    assert (res.explanation is not None) == (res.status == "infeasible")
    json.loads(json.dumps(res.to_dict(), allow_nan=False))
    assert res.summary()


@fuzz(60)
@given(st.randoms(use_true_random=False))
def test_api_mix_of_scripts_fuzz(workdir, rng):
    check_api(rng, workdir)          # what scripts/fuzz.py runs on the API side


@fuzz(60)
@given(st.randoms(use_true_random=False))
def test_cli_never_fails_internally(workdir, rng):
    argv = gen_argv(rng, workdir)
    code, out, err = run_cli(argv)
    assert not cli_problems(argv, code, out, err), (argv, code, out[-500:], err)


# ------------------------------------------------------------------ bugs the fuzzer found

@pytest.mark.parametrize("raw", [b"\x00hidden: 8\n", b"name: a\x07b\n", b"hidden: 8\x1b\n"])
def test_nonprintable_character_in_yaml_is_bad_input(tmp_path, raw):
    path = tmp_path / "m.yaml"
    path.write_bytes(raw)
    with pytest.raises(opt.ConfigError):
        opt.load_model(str(path))
    assert run_cli(["--model", str(path), "--gpus", "8"])[0] == 2
