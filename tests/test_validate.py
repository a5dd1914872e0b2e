"""The accuracy bar: Megatron-LM on Selene against the model, one system file."""

import pytest

from optimizer.validate import validate


@pytest.fixture(scope="module")
def result():
    return validate("a100-80g")


def test_iteration_time_bar(result):
    it = result["iteration_time"]
    assert len(it["points"]) == 8
    assert it["mean_abs_error_pct"] <= 3.0
    assert it["max_abs_error_pct"] <= 6.0


def test_memory_each_within_5pct(result):
    assert len(result["memory"]["points"]) == 12
    for p in result["memory"]["points"]:
        assert abs(p["error_pct"]) <= 5.0, p


def test_activation_percent_each_within_5pct(result):
    assert len(result["activation_percent"]["points"]) == 16
    for p in result["activation_percent"]["points"]:
        assert abs(p["error_pct"]) <= 5.0, p
