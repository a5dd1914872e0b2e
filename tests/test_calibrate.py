"""Calibration: Megatron's FLOP count, runs files, a synthetic round trip
(runs made by a known system, recovered from a perturbed one), the written
system file, and the validate/calibrate commands."""

import dataclasses
import hashlib

import pytest
import yaml

import optimizer as opt
from optimizer import calibrate as C
from optimizer.cli import main
from optimizer.errors import ConfigError
from optimizer.validate import validate

pytest.importorskip("scipy")


def test_megatron_flops_by_hand():
    # h 2048, seq 4096, 24 layers, vocab 131072, batch 192:
    # 1 + 4096/(6*2048) + 131072/(12*24*2048) = 1 + 1/3 + 2/9 = 14/9, and
    # 72 * 192 * 4096 * 24 * 2048^2 = 5,699,868,278,390,784
    m = opt.load_model({"name": "gpt-1.7B", "hidden": 2048, "feedforward": 8192, "seq_len": 4096,
                        "heads": 16, "head_dim": 128, "blocks": 24, "vocab": 131072})
    assert C.megatron_flops(m, 192) == pytest.approx(8_866_461_766_385_664, rel=1e-12)


def test_tflops_measurement_converts_to_seconds():
    rs = C.load_runs("h100-core")
    first = rs.runs[0]
    assert first.measurement == ("tflops_per_gpu", 408.8)
    assert first.measured_s == pytest.approx(8_866_461_766_385_664 / (408.8e12 * 48))


def test_selene_suite_reproduces_builtin_validation():
    v = C.validate_runs("selene")
    builtin = validate("a100-80g")["iteration_time"]["points"]
    assert len(v["rows"]) == 8
    assert sorted(r["predicted_s"] for r in v["rows"]) == pytest.approx(sorted(p["model_value"] for p in builtin))


# ------------------------------------------------------------ synthetic

TRUE_TOP, HALF = 0.65, 4.4889


def _with_top(top):
    return dataclasses.replace(opt.load_system("a100-80g"), matrix_efficiency=C.matrix_curve(top, HALF))


def _model(h, blocks=4):
    return {"name": f"toy-{h}", "hidden": h, "feedforward": 4 * h, "seq_len": 1024, "heads": h // 128,
            "head_dim": 128, "blocks": blocks}


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """Four runs timed by the true system (matrix top 0.65): each the
    optimizer's best with tp, pp, dp and the batch pinned."""
    truth = _with_top(TRUE_TOP)
    runs = []
    for h, tp, dp in ((1024, 1, 8), (2048, 2, 4), (4096, 4, 2), (4096, 8, 1)):
        runs.append({"name": f"toy-{h}-tp{tp}", "model": _model(h), "gpus": 8, "batch": 16,
                     "seconds_per_batch": 1.0,                     # replaced below
                     "pin": {"tp": tp, "pp": 1, "dp": dp, "offload_weights": False,
                             "offload_activations": False, "offload_optimizer": False}})
    data = {"name": "synthetic", "defaults": {"datatype": "bf16"}, "runs": runs}
    for r in C.load_runs(data).runs:
        data["runs"][r.index]["seconds_per_batch"] = C.plan_run(r, truth).time_s
    d = tmp_path_factory.mktemp("synthetic")
    path = d / "runs.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def fitted(synthetic):
    return C.calibrate(synthetic, _with_top(0.8), fit="matrix")


def test_round_trip_recovers_top(fitted):
    assert fitted.free == ("matrix_top", "matrix_half_gflop")
    assert fitted.fitted["matrix_top"] == pytest.approx(TRUE_TOP, rel=0.01)
    assert fitted.fitted["matrix_half_gflop"] == pytest.approx(HALF, rel=0.05)
    assert fitted.errors["before"]["mean_abs_error_pct"] > 5
    assert fitted.errors["after"]["max_abs_error_pct"] < 0.1


def test_round_trip_leave_one_out_near_zero(fitted):
    assert len(fitted.loo) == 4
    assert fitted.errors["leave_one_out"]["max_abs_error_pct"] < 0.5


def test_written_system_loads_and_keeps_provenance(fitted, synthetic, tmp_path):
    out = C.write_system(fitted, tmp_path / "fit.yaml")
    s = opt.load_system(str(out))
    assert s.name == "fit"
    p = s.provenance
    assert p["runs_sha256"] == hashlib.sha256(synthetic.read_bytes()).hexdigest()
    assert p["parameters"]["matrix_top"] == pytest.approx(TRUE_TOP, rel=0.01)
    assert p["base_system"] == "a100-80g"
    assert p["optimizer_version"] == opt.__version__
    assert set(p["errors_pct"]) == {"before", "after", "leave_one_out"}
    # the written file predicts what the fit reported
    v = C.validate_runs(synthetic, str(out))
    assert [r["predicted_s"] for r in v["rows"]] == pytest.approx([r["after_s"] for r in fitted.rows])


# ------------------------------------------------------------ bad input

def _write(tmp_path, runs, **top):
    path = tmp_path / "runs.yaml"
    path.write_text(yaml.safe_dump({**top, "runs": runs}))
    return path


GOOD = {"model": "megatron-22B", "gpus": 8, "batch": 4, "datatype": "fp16",
        "pin": {"tp": 8, "pp": 1, "dp": 1}}


@pytest.mark.parametrize("run, key", [
    ({**GOOD}, "runs[0].seconds_per_batch"),                                       # no measurement
    ({**GOOD, "seconds_per_batch": 1.0, "tokens_per_s_per_gpu": 9.0}, "runs[0].tokens_per_s_per_gpu"),
    ({**GOOD, "model": "no-such-model", "seconds_per_batch": 1.0}, "runs[0].model"),
    ({**GOOD, "gpus": 16, "pin": {**GOOD["pin"], "cp": 1}, "seconds_per_batch": 1.0},
     "runs[0].gpus"),                                                                # 8 x 1 x 1 x 1 != 16
    ({**GOOD, "seconds_per_batch": -1.0}, "runs[0].seconds_per_batch"),
    ({**GOOD, "pin": {"tp": 8, "recompute": "most"}, "seconds_per_batch": 1.0}, "runs[0].pin"),
    ({**GOOD, "colour": "red", "seconds_per_batch": 1.0}, "runs[0].colour"),
])
def test_bad_runs_name_file_and_key(tmp_path, run, key):
    path = _write(tmp_path, [run])
    with pytest.raises(ConfigError) as e:
        C.load_runs(path)
    assert e.value.key == key and e.value.source == str(path)
    assert str(path) in str(e.value) and key in str(e.value) and "\n" not in str(e.value)


def test_too_many_free_numbers_refused(tmp_path):
    path = _write(tmp_path, [{**GOOD, "seconds_per_batch": 1.4}], system="a100-80g")
    with pytest.raises(ConfigError, match="fewer free numbers than runs"):
        C.calibrate(path, loo=False)
    with pytest.raises(ConfigError, match="groups among"):
        C.calibrate(path, fit="matrix,speed", loo=False)


def test_cli_bad_runs_exit_2(tmp_path, capsys):
    path = _write(tmp_path, [{**GOOD}])
    assert main(["validate", str(path), "--system", "a100-80g"]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "runs[0].seconds_per_batch" in err and err.count("\n") == 1


# ------------------------------------------------------------ commands

def test_cli_validate_runs_prints_rows(synthetic, capsys):
    assert main(["validate", str(synthetic), "--system", "a100-80g"]) == 0
    out = capsys.readouterr().out
    for name in ("toy-1024-tp1", "toy-2048-tp2", "toy-4096-tp4", "toy-4096-tp8"):
        assert name in out
    assert "mean |error|" in out and "max |error|" in out and "tp=8 cp=1 pp=1 dp=1" in out


def test_cli_validate_builtin_unchanged(capsys):
    assert main(["validate"]) == 0
    out = capsys.readouterr().out
    assert "iteration time (s), Table 5" in out and "Figure 7" in out


def test_cli_calibrate_writes_system(synthetic, tmp_path, capsys):
    out = tmp_path / "new.yaml"
    assert main(["calibrate", str(synthetic), "--system", "a100-80g", "--fit", "matrix",
                 "--out", str(out), "--no-loo"]) == 0
    text = capsys.readouterr().out
    assert "matrix_top" in text and "wrote" in text
    assert opt.load_system(str(out)).provenance["runs"] == "synthetic"
