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
    assert main(["--model", "megatron-22B", "--gpus", "16", "--max-batch", "32", "--top", "2"]) == 0
    out = capsys.readouterr().out
    assert ": optimal" in out and "proof  proven optimal" in out and "top 2" in out


def test_plan_json_has_the_proof(capsys):
    assert main(["plan", "--model", "megatron-22B", "--gpus", "16", "--max-batch", "32", "--pin", "tp=8",
                 "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["status"] == "optimal" and doc["best"]["strategy"]["tp"] == 8
    assert doc["gap"] == 0 and doc["stats"]["space_size"] > doc["stats"]["evaluated"] > 0
    assert doc["bound_samples_per_s"] >= doc["best"]["samples_per_s"] * (1 - 1e-12)


def test_plan_infeasible_exit_1(capsys):
    assert main(["--model", "18T", "--gpus", "4096"]) == 1
    assert "infeasible" in capsys.readouterr().out


def test_plan_bad_input_exit_2():
    for args in (["--model", "1T", "--gpus", "0"], ["--model", "1T", "--gpus", "64", "--pin", "tp=sixteen"],
                 ["--model", "1T", "--gpus", "64", "--pin", "colour=3"], ["--model", "nope", "--gpus", "8"],
                 ["--model", "1T"], ["--model", "1T", "--gpus", "8", "--system", "/no/such.yaml"]):
        p = run(*args)
        assert p.returncode == 2, (args, p.stdout, p.stderr)
        assert "Traceback" not in p.stderr and p.stderr.strip()
