"""The study's scripts, in --quick mode: every finding runs its sweep, writes
grid, CSV and plot, and the report gives each a verdict with numbers."""

import csv
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
FINDINGS = ("mappings", "model_size", "offload_bandwidth", "offload_capacity", "strong_scaling", "beyond_10t")


@pytest.mark.exhaustive       # 34 sweep points, about 10 minutes on 2 cores
def test_quick_study_writes_every_finding(tmp_path):
    out, doc = tmp_path / "study", tmp_path / "study.md"
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "study" / "report.py"), "--quick", "--quiet",
                          "--out", str(out), "--doc", str(doc), "--cache", str(tmp_path / "cache"),
                          "--executor", "serial"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    text = doc.read_text()
    for name in FINDINGS:
        grid = yaml.safe_load((out / f"{name}.grid.yaml").read_text())
        rows = list(csv.DictReader((out / f"{name}.csv").open()))
        assert grid["name"] == name and rows, name
        assert {r["status"] for r in rows} <= {"optimal", "infeasible"}, name
        png = (out / f"{name}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000, name
        assert f"](study/{name}.png)" in text
    verdicts = re.findall(r"\*\*Verdict: (reproduced|differs)\.\*\* (\S.*)", text)
    assert len(verdicts) == len(FINDINGS)
    for _, reason in verdicts:
        assert re.search(r"\d", reason)             # every verdict carries numbers
    # the sweeps are cached: a second run solves nothing and writes the same verdicts
    again = subprocess.run([sys.executable, str(ROOT / "scripts" / "study" / "report.py"), "--quick", "--quiet",
                            "--out", str(out), "--doc", str(doc), "--cache", str(tmp_path / "cache"),
                            "--executor", "serial"], capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert "solved 0 of them" in doc.read_text()
    assert re.findall(r"\*\*Verdict: (\w+)", doc.read_text()) == [v for v, _ in verdicts]


@pytest.mark.slow
def test_model_size_finding_agrees_with_plan(tmp_path):
    """The 18T point of the model-size grid is the same answer plan gives."""
    sys.path.insert(0, str(ROOT / "scripts" / "study"))
    try:
        import model_size
    finally:
        sys.path.pop(0)
    grid = model_size.grid(quick=True)
    assert grid["models"][-1] == "18T" and grid["gpus"] == [4096]
    import optimizer as opt
    res = opt.sweep(grid, executor="serial")
    table, verdict, reason = model_size.analyse(res.rows)
    assert "18T" in reason and "| 18T | infeasible |" in table
    assert opt.plan("18T", "h100-80g-nvl8", 4096, pin=grid["options"]["pin"]).status == "infeasible"
