import io
import json
import subprocess
import sys

from optimizer.cli import main


def run(*args):
    return subprocess.run([sys.executable, "-m", "optimizer.cli", *args], capture_output=True, text=True)


def test_evaluate_text_and_json(capsys):
    args = ["evaluate", "--model", "megatron-1T", "--system", "a100-80g", "--set", "tp=8", "--set", "pp=64",
            "--set", "dp=1", "--set", "batch=512", "--set", "recompute=full", "--set", "datatype=fp16"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "time per batch" in out and "MFU" in out and "HBM total" in out
    assert main(args + ["--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["status"] == "ok" and doc["time_s"] > 0 and set(doc["breakdown_s"]) >= {"bubble", "tp_comm"}


def test_evaluate_strategy_file(tmp_path, capsys):
    f = tmp_path / "s.yaml"
    f.write_text("tp: 8\npp: 1\ndp: 1\nbatch: 4\nmicrobatch: 4\nrecompute: full\ndatatype: fp16\n")
    assert main(["evaluate", "--model", "megatron-22B", "--system", "a100-80g", "--strategy", str(f), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["strategy"]["microbatch"] == 4


def test_infeasible_strategy_exit_1(capsys):
    assert main(["evaluate", "--model", "megatron-1T", "--system", "a100-80g", "--set", "tp=7",
                 "--set", "pp=64", "--set", "dp=1", "--set", "batch=512"]) == 1
    assert "tp must divide" in capsys.readouterr().out


def test_bad_input_exit_2_no_traceback():
    for args in (["evaluate", "--model", "nope", "--set", "tp=1"],
                 ["evaluate", "--model", "1T", "--set", "tp=1", "--set", "pp=1", "--set", "dp=1",
                  "--set", "batch=1", "--set", "recompute=sometimes"],
                 ["evaluate", "--model", "1T", "--set", "tp=1"],
                 ["evaluate", "--model", "1T", "--strategy", "/no/such.yaml"],
                 ["frobnicate"]):
        p = run(*args)
        assert p.returncode == 2, (args, p.stdout, p.stderr)
        assert "Traceback" not in p.stderr and p.stderr.strip()


def test_validate_json(capsys):
    assert main(["validate", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc) >= {"iteration_time", "memory", "activation_percent"}
    assert set(doc["iteration_time"]) >= {"mean_abs_error_pct", "max_abs_error_pct", "points"}


def test_list(capsys):
    assert main(["list", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert "1T" in doc["models"] and "a100-80g" in doc["systems"]


def test_plan_is_the_default_command(capsys):
    assert main(["--model", "llama3-8B", "--gpus", "8", "--max-batch", "16", "--top", "2"]) == 0
    out = capsys.readouterr().out
    assert ": optimal" in out and "proof  proven optimal" in out and "top 2" in out


def test_plan_json_has_the_proof(capsys):
    assert main(["plan", "--model", "llama3-8B", "--gpus", "8", "--max-batch", "16", "--pin", "tp=8",
                 "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["status"] == "optimal" and doc["best"]["strategy"]["tp"] == 8
    assert doc["gap"] == 0 and doc["stats"]["space_size"] > doc["stats"]["evaluated"] > 0
    assert doc["bound_samples_per_s"] >= doc["best"]["samples_per_s"] * (1 - 1e-12)


def test_plan_infeasible_exit_1(capsys):
    assert main(["--model", "megatron-22B", "--gpus", "1"]) == 1
    assert "infeasible" in capsys.readouterr().out


def test_plan_bad_input_exit_2():
    for args in (["--model", "1T", "--gpus", "0"], ["--model", "1T", "--gpus", "64", "--pin", "tp=sixteen"],
                 ["--model", "1T", "--gpus", "64", "--pin", "colour=3"], ["--model", "nope", "--gpus", "8"],
                 ["--model", "1T"], ["--model", "1T", "--gpus", "8", "--system", "/no/such.yaml"]):
        p = run(*args)
        assert p.returncode == 2, (args, p.stdout, p.stderr)
        assert "Traceback" not in p.stderr and p.stderr.strip()


# ------------------------------------------------------- input hardening (issue 13)

import math
import os
import shlex

import pytest

import optimizer
from optimizer import cli


def _strict_json(text):
    def refuse(name):
        raise ValueError(f"not strict JSON: {name}")
    return json.loads(text, parse_constant=refuse)


def _one_line_exit_2(args, *parts):
    p = run(*args)
    assert p.returncode == 2, (args, p.stdout, p.stderr)
    assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    for part in parts:
        assert part in p.stderr, (part, p.stderr)
    return p.stderr


def test_bad_files_and_paths_are_one_line_exit_2(tmp_path):
    bad = tmp_path / "b.yaml"
    bad.write_bytes(b"\xff\xfe x\n")
    deep = tmp_path / "deep.yaml"
    deep.write_text("hidden: " + "[" * 3000 + "]" * 3000 + "\n")
    keys = tmp_path / "k.yaml"
    keys.write_text("hidden: 512\n1: x\nfoo: y\n")
    syntax = tmp_path / "s.yaml"
    syntax.write_text("hidden: [1,\n  2\n x: 3\n")
    dup = tmp_path / "d.yaml"
    dup.write_text("hidden: 1\nhidden: 2\n")
    d = str(tmp_path)
    for args, part in ((["--model", str(bad), "--gpus", "8"], "UTF-8"),
                       (["--model", d, "--gpus", "8"], "directory"),
                       (["--model", "", "--gpus", "8"], "empty"),
                       (["--model", "1T", "--system", d, "--gpus", "8"], "directory"),
                       (["evaluate", "--model", "1T", "--strategy", d], "directory"),
                       (["evaluate", "--model", "1T", "--strategy", str(bad)], "UTF-8"),
                       (["sweep", d], "directory"),
                       (["--model", str(deep), "--gpus", "8"], "nested"),
                       (["--model", str(keys), "--gpus", "8"], str(keys)),
                       (["--model", str(syntax), "--gpus", "8"], "line 3, column"),
                       (["--model", str(dup), "--gpus", "8"], "each key once")):
        err = _one_line_exit_2(args, part)
        assert len(err) < 800


@pytest.mark.parametrize("args", [
    ["--model", "1T", "--gpus", "8", "--max-batch", "9223372036854775808"],
    ["--model", "1T", "--gpus", str(2 ** 63)],
    ["--model", "1T", "--gpus", str(2 ** 24 + 1)],
    ["--model", "1T", "--gpus", "8", "--hbm-gib", "nan"],
    ["--model", "1T", "--gpus", "8", "--hbm-gib", "1e308"],
    ["--model", "1T", "--gpus", "8", "--offload-gbps", "nan"],
    ["--model", "1T", "--gpus", "8", "--offload-gib", "-1"],
    ["--model", "1T", "--gpus", "8", "--nvlink-size", str(2 ** 63)],
    ["--model", "1T", "--gpus", "8", "--time-limit", "inf"],
    ["--model", "1T", "--gpus", "8", "--top", "0"],
    ["--model", "1T", "--gpus", "8", "--threads", "99999999999999999999"],
])
def test_numbers_out_of_range_are_one_line_exit_2(args):
    _one_line_exit_2(args, "expected")


@pytest.mark.parametrize("args, part", [
    (["--model", "1T", "--gpus", "8", "--offload-gib", "1024"], "--offload-gbps"),
    (["--model", "1T", "--gpus", "8", "--offload-gbps", "100"], "--offload-gib"),
    (["--model", "1T", "--gpus", "8", "--nvlink-size", "131072"], "nvlink_size"),
    (["--model", "1T", "--gpus", "8", "--pin", "tp=8", "--pin", "tp=4"], "each key once"),
    (["evaluate", "--model", "1T", "--set", "tp=8", "--set", "tp=4"], "each key once"),
    (["evaluate", "--model", "1T", "--set", "=4"], "--set"),
    (["evaluate", "--model", "1T", "--set", "tp=1", "--set", "pp=1", "--set", "dp=1",
      "--set", "batch=1", "--set", "microbatch=nan"], "microbatch"),
    (["--model", "megatron-1", "--gpus", "8"], "did you mean"),
])
def test_override_and_pair_errors(args, part):
    _one_line_exit_2(args, part)


def test_case_insensitive_presets_and_override_names(capsys):
    args = ["--model", "MEGATRON-22b", "--system", "A100-80G", "--gpus", "16", "--max-batch", "32",
            "--hbm-gib", "120", "--json"]
    assert main(args) == 0
    doc = _strict_json(capsys.readouterr().out)
    assert doc["problem"]["model"] == "megatron-22B" and doc["problem"]["system"] == "a100-80g+hbm120g"
    assert doc["best"]["system"] == "a100-80g+hbm120g"


def test_datatype_defaults_to_the_best_the_system_has(capsys):
    # a100-80g has no fp8: the default must not be a datatype the user never typed and cannot use
    assert main(["--model", "llama3-8B", "--system", "a100-80g", "--gpus", "8", "--max-batch", "16",
                 "--json"]) == 0
    assert _strict_json(capsys.readouterr().out)["problem"]["datatype"] == "bf16"
    assert main(["--model", "llama3-8B", "--gpus", "8", "--max-batch", "16", "--json"]) == 0
    assert _strict_json(capsys.readouterr().out)["problem"]["datatype"] == "fp8"


def test_json_is_strict_for_infeasible_plans(capsys):
    assert main(["--model", "megatron-22B", "--gpus", "1", "--json"]) == 1
    doc = _strict_json(capsys.readouterr().out)
    assert doc["status"] == "infeasible" and doc["gap"] is None and doc["best"] is None


def test_jsonable_turns_non_finite_into_null():
    doc = cli._jsonable({"a": math.inf, "b": [math.nan, -math.inf, 1.5], "c": (1, "x", None, True)})
    assert doc == {"a": None, "b": [None, None, 1.5], "c": [1, "x", None, True]}
    _strict_json(json.dumps(doc, allow_nan=False))


def test_list_natural_order_sizes_and_json(capsys):
    assert main(["list", "models"]) == 0
    out = capsys.readouterr().out
    names = [line.split()[0] for line in out.splitlines()[1:] if line.startswith("  ") and
             not line.startswith("      ")]
    assert names.index("1T") < names.index("2T") < names.index("11T") < names.index("128T")
    assert "params" in out and "hidden" in out
    assert main(["list", "systems"]) == 0
    out = capsys.readouterr().out
    assert "HBM 80 GiB" in out and "NVLink 8" in out and "TFLOP/s" in out and "H100 80GB" in out
    assert main(["list", "--json"]) == 0
    doc = _strict_json(capsys.readouterr().out)
    assert list(doc["models"]).index("2T") < list(doc["models"]).index("11T")
    assert doc["models"]["1T"]["params"] > 9e11 and doc["models"]["1T"]["hidden"] == 24576
    s = doc["systems"]["h100-80g-nvl8-off1t-unlimited"]
    assert s["offload_gbps"] is None and s["nvlink_size"] == 8 and s["matrix_tflops"]["fp8"] == 1979
    assert "H100" in s["description"]


def test_list_into_a_closed_pipe_exits_quietly():
    r, w = os.pipe()
    os.close(r)                              # the reader is gone before the first line
    try:
        p = subprocess.run([sys.executable, "-m", "optimizer.cli", "list"], stdout=w,
                           stderr=subprocess.PIPE, text=True)
    finally:
        os.close(w)
    assert p.returncode == 0 and p.stderr == ""


def test_help_evaluate_example_runs(capsys):
    epilog = cli.build_parser().epilog
    example = next(line for line in epilog.splitlines() if line.strip().startswith("optimize evaluate"))
    assert main(shlex.split(example)[1:]) == 0
    assert "time per batch" in capsys.readouterr().out


def test_version(capsys):
    assert main(["--version"]) == 0
    assert optimizer.__version__ in capsys.readouterr().out


def test_docstring_names_every_subcommand():
    for name in cli.SUBCOMMANDS:
        if name != "plan":
            assert f"optimize {name}" in cli.__doc__


def test_internal_error_is_one_line_exit_3(monkeypatch, capsys):
    def boom(kind):
        raise RuntimeError("boom\nsecond line")
    monkeypatch.setattr(cli, "preset_names", boom)
    assert main(["list"]) == 3
    err = capsys.readouterr().err
    assert err.startswith("optimize: internal error: RuntimeError: boom") and len(err.strip().splitlines()) == 1


def test_keyboard_interrupt_is_130(monkeypatch, capsys):
    def stop(kind):
        raise KeyboardInterrupt
    monkeypatch.setattr(cli, "preset_names", stop)
    assert main(["list"]) == 130


def test_usage_errors_are_one_line():
    for args in (["--model", "1T"], ["frobnicate", "--x"], ["--model", "1T", "--gpus", "eight"],
                 ["--model", "1T", "--gpus", "8", "--datatype", "fp4"]):
        _one_line_exit_2(args)


def test_list_shows_a_broken_preset_and_the_rest(monkeypatch, capsys):
    real = cli.load_model

    def load(name):
        if name == "2T":
            raise optimizer.ConfigError("models/2T.yaml", "hidden", float("nan"), "a finite number")
        return real(name)
    monkeypatch.setattr(cli, "load_model", load)
    assert main(["list", "models"]) == 0
    out = capsys.readouterr().out
    assert "2T" in out and "does not load" in out and "11T" in out


# ------------------------------------------------------- issue 13: statuses, round trips, progress

def test_time_limit_before_any_strategy_exits_4(capsys):
    code = main(["--model", "1T", "--gpus", "4096", "--system", "h100-80g-nvl8-off1t-100gbps",
                 "--time-limit", "1e-9"])
    out = capsys.readouterr().out
    assert code == 4, out
    assert ": unknown" in out and "time limit reached before a strategy was found" in out
    assert "no strategy in the space fits" not in out
    assert main(["--model", "1T", "--gpus", "4096", "--system", "h100-80g-nvl8-off1t-100gbps",
                 "--time-limit", "1e-9", "--json"]) == 4
    doc = _strict_json(capsys.readouterr().out)
    assert doc["status"] == "unknown" and doc["best"] is None and doc["gap"] is None


def test_exit_4_is_documented():
    assert "4 no answer" in cli.__doc__ and "4 time limit" in cli.build_parser().epilog
    readme = open(os.path.join(os.path.dirname(__file__), "..", "README.md")).read()
    assert "| 4 |" in readme and "unknown" in readme


@pytest.mark.parametrize("args", [["--threads", "-1"], ["--threads", "0"], ["--top", "1001"],
                                  ["--time-limit", "nan"], ["--time-limit", "-1"], ["--pin", "microbatch=,"]])
def test_plan_option_limits_exit_2(args, capsys):
    assert main(["--model", "megatron-22B", "--gpus", "16", *args]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_plan_json_round_trips_into_evaluate(tmp_path, capsys):
    base = ["--model", "llama3-8B", "--system", "a100-80g", "--gpus", "8", "--max-batch", "16"]
    assert main(["plan", *base[:4], *base[4:], "--json"]) == 0
    plan_doc = _strict_json(capsys.readouterr().out)
    f = tmp_path / "plan.json"
    f.write_text(json.dumps(plan_doc, indent=2))
    assert main(["evaluate", *base[:4], "--strategy", str(f), "--json"]) == 0
    ev = _strict_json(capsys.readouterr().out)
    assert ev["strategy"] == plan_doc["best"]["strategy"]
    assert ev["time_s"] == pytest.approx(plan_doc["best"]["time_s"], rel=1e-12)
    # an evaluate result is a strategy file too, and so is a bare strategy
    g = tmp_path / "ev.json"
    g.write_text(json.dumps(ev))
    assert main(["evaluate", *base[:4], "--strategy", str(g), "--json"]) == 0
    assert _strict_json(capsys.readouterr().out)["strategy"] == ev["strategy"]
    h = tmp_path / "bare.json"
    h.write_text(json.dumps(ev["strategy"]))
    assert main(["evaluate", *base[:4], "--strategy", str(h), "--set", "microbatch=1", "--json"]) == 0
    assert _strict_json(capsys.readouterr().out)["strategy"]["microbatch"] == 1


def test_infeasible_plan_is_no_strategy_file(tmp_path, capsys):
    assert main(["--model", "megatron-22B", "--gpus", "1", "--json"]) == 1
    f = tmp_path / "plan.json"
    f.write_text(capsys.readouterr().out)
    assert main(["evaluate", "--model", "megatron-22B", "--strategy", str(f)]) == 2
    err = capsys.readouterr().err
    assert "best.strategy" in err and "infeasible" in err and len(err.strip().splitlines()) == 1


def test_cli_prints_the_summary_of_python(capsys):
    assert main(["--model", "llama3-8B", "--system", "a100-80g", "--gpus", "8", "--max-batch", "16",
                 "--top", "3"]) == 0
    out = capsys.readouterr().out
    r = optimizer.plan("llama3-8B", "a100-80g", 8, max_batch=16, top_k=3)
    strip = lambda t: t.rsplit("CP-SAT solves", 1)[0]         # noqa: E731  (times differ)
    assert strip(out) == strip(r.summary())
    tops = [ln.split("%", 1)[1] for ln in out.splitlines() if ln.startswith(("   1.", "   2.", "   3."))]
    assert len(tops) == 3 and len(set(tops)) == 3


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_enumerate_shows_progress_on_a_terminal_only(monkeypatch, capsys):
    args = ["--model", "llama3-8B", "--gpus", "8", "--max-batch", "16", "--method", "enumerate"]
    assert main(args) == 0
    assert capsys.readouterr().err == ""               # not a terminal: quiet
    tty = _Tty()
    monkeypatch.setattr(sys, "stderr", tty)
    assert main(args) == 0
    text = tty.getvalue()
    assert "strategies evaluated" in text and "samples/s" in text
    assert text.endswith("\r")                          # the line is wiped at the end


def test_progress_is_throttled():
    tty = _Tty()
    show = cli._progress("enumerate", tty)
    for n in range(1000):
        show(n, 0.5)
    assert tty.getvalue().count("searching") == 1
    assert cli._progress("cpsat", io.StringIO()) is None
