"""Sweeps: grids, rows that agree with plan, executors (local processes and
a real local Dask cluster), resuming after a kill, bad input."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import optimizer as opt
from optimizer.cli import main
from optimizer.errors import ConfigError
from optimizer.sweep import CSV_COLUMNS, comparable, load_grid, point_key, read_results

# One GPU: neither model fits 80 GiB (at least 144 and 371 GiB), both fit
# with 1 TiB of offload. ZeRO-1 at most, the study's space.
ZERO1 = {"zero": [0, 1]}
SMALL = {"name": "small", "models": ["llama3-8B", "megatron-22B"], "gpus": [1],
         "overrides": {"offload_gib": [0, 1024], "offload_gbps": 100}, "options": {"pin": ZERO1}}


def test_grid_is_the_cross_product_with_defaults():
    g = load_grid({"models": ["1T", "2T"], "gpus": [4096, 8192, 16384],
                   "overrides": {"hbm_gib": [80, 120], "offload_gib": 1024,
                                 "offload_gbps": [50, "unlimited"]},
                   "options": {"max_batch": [1536, 3072]}})
    assert len(g.points) == 2 * 3 * 2 * 2 * 2
    assert len({point_key(p) for p in g.points}) == len(g.points)
    p = g.points[0]
    assert p["system"] == "h100-80g-nvl8" and p["options"]["datatype"] == "fp8"
    assert {q["options"]["max_batch"] for q in g.points} == {1536, 3072}


@pytest.fixture(scope="module")
def serial_small():
    return opt.sweep(SMALL, executor="serial")


def test_rows_agree_with_plan_and_explain_infeasible_points(serial_small):
    res = serial_small
    assert [r["model"] for r in res.rows] == ["llama3-8B", "llama3-8B", "megatron-22B", "megatron-22B"]
    assert res.solved == 4 and res.reused == 0
    for row in res.rows:
        system = opt.load_system("h100-80g-nvl8", offload_gib=row["offload_gib"], offload_gbps=100)
        direct = opt.plan(row["model"], system, row["gpus"], pin=ZERO1)
        assert row["status"] == direct.status
        if direct.best is None:
            assert row["result"] is None
            assert row["explanation"]["conflicts"] == direct.explanation["conflicts"]
            assert row["explanation"]["fixes"] == direct.explanation["fixes"]
        else:
            assert row["result"]["samples_per_s"] == direct.best.samples_per_s
            assert row["result"]["strategy"] == direct.best.strategy.to_dict()
            assert row["proof"]["space_size"] == direct.stats["space_size"]
    # without offload nothing fits one GPU of 80 GiB; with 1 TiB it does
    assert [r["status"] for r in res.rows] == ["infeasible", "optimal"] * 2


@pytest.mark.slow
def test_local_processes_give_the_serial_rows(serial_small):
    local = opt.sweep(SMALL, executor="local", workers=2)
    assert [comparable(r) for r in local.rows] == [comparable(r) for r in serial_small.rows]


@pytest.mark.slow
def test_real_local_dask_cluster_gives_the_local_rows(tmp_path):
    from distributed import Client, LocalCluster    # the dask extra is part of the test set-up
    grid = SMALL
    local = opt.sweep(grid, executor="local", workers=2)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        # by address, as a user points the sweep at a running cluster
        on_dask = opt.sweep(grid, executor="dask", address=cluster.scheduler_address,
                            results=tmp_path / "dask.jsonl")
        with Client(cluster) as client:
            workers = {w["id"] for w in client.scheduler_info()["workers"].values()}
            computed = client.run_on_scheduler(
                lambda dask_scheduler: dask_scheduler.task_prefixes["solve_point"].state_counts["memory"])
    assert len(workers) == 2
    assert computed == len(local.rows)          # every point was solved on the cluster
    assert [comparable(r) for r in on_dask.rows] == [comparable(r) for r in local.rows]
    assert len(read_results(tmp_path / "dask.jsonl")) == len(local.rows)


def test_results_file_reuses_finished_points(tmp_path):
    out = tmp_path / "r.jsonl"
    calls = []
    first = opt.sweep({**SMALL, "models": ["llama3-8B"]}, executor="serial", results=out,
                      progress=lambda *a: calls.append(a))
    assert first.solved == 2 and [c[0] for c in calls] == [1, 2] and calls[-1][1] == 2
    again = opt.sweep(SMALL, executor="serial", results=out)
    assert again.solved == 2 and again.reused == 2
    before = {r["key"]: r for r in first.rows}
    for r in again.rows:
        if r["key"] in before:
            assert r == before[r["key"]]          # the stored row, timings and all
    lines = out.read_text().splitlines()
    assert len(lines) == 4 and len({json.loads(x)["key"] for x in lines}) == 4
    fresh = opt.sweep(SMALL, executor="serial", results=out, fresh=True)
    assert fresh.solved == 4 and len(out.read_text().splitlines()) == 4


def test_a_cut_short_last_line_is_solved_again(tmp_path, serial_small):
    out = tmp_path / "r.jsonl"
    out.write_text("".join(json.dumps(r) + "\n" for r in serial_small.rows))
    full = serial_small
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:2]) + lines[2][:40])       # killed while writing row 3
    res = opt.sweep(SMALL, executor="serial", results=out)
    assert res.solved == 2 and res.reused == 2
    assert [comparable(r) for r in res.rows] == [comparable(r) for r in full.rows]


def test_a_bad_line_in_the_middle_names_file_and_line(tmp_path):
    out = tmp_path / "r.jsonl"
    opt.sweep({**SMALL, "models": ["llama3-8B"]}, executor="serial", results=out)
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("not json\n" + "".join(lines))
    with pytest.raises(ConfigError, match=r"r\.jsonl:1"):
        opt.sweep(SMALL, executor="serial", results=out)


@pytest.mark.slow
def test_killed_sweep_resumes_without_solving_a_finished_point(tmp_path):
    # one GPU, 8 points of 1-4 s (more GPUs with offload take minutes a point)
    grid = {"name": "kill", "models": ["llama3-8B", "megatron-22B", "chinchilla-70B", "llama3-70B"], "gpus": [1],
            "overrides": {"offload_gib": [0, 1024], "offload_gbps": 100}}
    gpath = tmp_path / "kill.yaml"
    gpath.write_text(yaml.safe_dump(grid))
    out = tmp_path / "kill.jsonl"
    log = tmp_path / "stderr.txt"
    with log.open("w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "optimizer.cli", "sweep", str(gpath), "--out", str(out),
                                 "--executor", "serial", "--quiet"], stdout=subprocess.DEVNULL, stderr=err)
        try:
            deadline = time.time() + 120
            while time.time() < deadline and proc.poll() is None:
                if out.exists() and out.read_text().count("\n") >= 3:     # three whole rows written
                    break
                time.sleep(0.01)
            finished_early = proc.poll() is not None
        finally:
            proc.kill()
            proc.wait()
    assert not finished_early, f"the sweep ended before it could be killed: {log.read_text()[-500:]}"
    kept = read_results(out)
    assert 3 <= len(kept) < 8

    resumed = opt.sweep(gpath, executor="serial", results=out)
    assert resumed.solved == 8 - len(kept) and resumed.reused == len(kept)
    for r in resumed.rows:                        # rows from before the kill come back untouched
        if r["key"] in kept:
            assert r == kept[r["key"]]
    keys = [json.loads(x)["key"] for x in out.read_text().splitlines()]
    assert len(keys) == len(set(keys)) == 8

    uninterrupted = opt.sweep(gpath, executor="serial")
    assert [comparable(r) for r in resumed.rows] == [comparable(r) for r in uninterrupted.rows]


def test_a_point_that_cannot_split_is_an_error_row_not_a_failed_sweep():
    res = opt.sweep({"models": ["llama3-8B"], "gpus": [8, 4099]}, executor="serial")
    assert [r["status"] for r in res.rows] == ["optimal", "error"]
    assert "gpus" in res.rows[1]["message"]


def _grid_file(tmp_path, data):
    p = tmp_path / "g.yaml"
    p.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return p


@pytest.mark.parametrize("data, key", [
    ({"models": ["1T"]}, "gpus"),
    ({"models": ["1T"], "gpus": [0]}, "gpus"),
    ({"models": ["1T"], "gpus": 4096, "colour": "red"}, "colour"),
    ({"models": ["no-such-model"], "gpus": 4096}, "models"),
    ({"models": ["1T"], "gpus": 4096, "systems": ["no-such-system"]}, "systems"),
    ({"models": ["1T"], "gpus": 4096, "overrides": {"hbm": 120}}, "overrides.hbm"),
    ({"models": ["1T"], "gpus": 4096, "overrides": {"hbm_gib": [-1]}}, "overrides.hbm_gib"),
    ({"models": ["1T"], "gpus": 4096, "options": {"datatype": "fp4"}}, "options.datatype"),
    ({"models": ["1T"], "gpus": 4096, "options": {"max_batch": [0]}}, "options.max_batch"),
    ({"models": [], "gpus": 4096}, "models"),
    ({"models": ["1T"], "gpus": 4096, "options": {"pin": {"tp": 0}}}, "tp"),
    ({"models": ["1T"], "gpus": 4096, "options": {"pin": {"colour": 1}}}, "colour"),
    ("models: [1T\n", "<file>"),
])
def test_bad_grids_name_file_and_key(tmp_path, capsys, data, key):
    path = _grid_file(tmp_path, data)
    assert main(["sweep", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and f"'{key}'" in err and "Traceback" not in err


def test_cli_sweep_writes_table_csv_and_json(tmp_path, capsys):
    path = _grid_file(tmp_path, {"name": "cli", "models": ["llama3-8B"], "gpus": [8, 1]})
    assert main(["sweep", str(path), "--executor", "serial", "--quiet", "--csv", str(tmp_path / "t.csv")]) == 0
    out = capsys.readouterr().out
    assert "llama3-8B" in out and "infeasible" in out and "2 points (2 solved now, 0 from" in out
    header = (tmp_path / "t.csv").read_text().splitlines()[0].split(",")
    assert tuple(header) == CSV_COLUMNS
    assert (tmp_path / "g.results.jsonl").exists()
    assert main(["sweep", str(path), "--executor", "serial", "--quiet", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["solved"] == 0 and doc["reused"] == 2
    assert [r["status"] for r in doc["rows"]] == ["optimal", "infeasible"]


def test_unknown_executor_is_bad_input_and_keeps_the_results_file(tmp_path):
    out = tmp_path / "r.jsonl"
    opt.sweep({**SMALL, "models": ["llama3-8B"]}, executor="serial", results=out)
    before = out.read_text()
    with pytest.raises(ConfigError, match="executor"):
        opt.sweep(SMALL, executor="spark", results=out, fresh=True)
    assert out.read_text() == before


def test_edited_model_file_makes_its_rows_stale(tmp_path):
    model = yaml.safe_load((Path(opt.__file__).parent.parent / "models" / "megatron-22B.yaml").read_text())
    mpath = tmp_path / "m.yaml"
    mpath.write_text(yaml.safe_dump(model))
    grid = {"models": [str(mpath), "llama3-8B"], "gpus": [8]}
    out = tmp_path / "r.jsonl"
    first = opt.sweep(grid, executor="serial", results=out)
    again = opt.sweep(grid, executor="serial", results=out)
    assert again.solved == 0 and again.stale == 0
    mpath.write_text(yaml.safe_dump({**model, "blocks": 24}))      # same name, different model
    edited = opt.sweep(grid, executor="serial", results=out)
    assert edited.solved == 1 and edited.stale == 1 and edited.reused == 1
    assert edited.rows[1] == first.rows[1]
    assert edited.rows[0]["result"]["samples_per_s"] > first.rows[0]["result"]["samples_per_s"]
    assert opt.sweep(grid, executor="serial", results=out).solved == 0


def test_unlimited_is_one_value_however_written():
    a = load_grid({"models": ["1T"], "gpus": 4096, "overrides": {"offload_gib": 512, "offload_gbps": "unlimited"}})
    b = load_grid({"models": ["1T"], "gpus": 4096, "overrides": {"offload_gib": 512, "offload_gbps": float("inf")}})
    c = load_grid({"models": ["1T"], "gpus": 4096, "overrides": {"offload_gib": 512, "offload_gbps": "inf"}})
    assert point_key(a.points[0]) == point_key(b.points[0]) == point_key(c.points[0])
    assert "Infinity" not in point_key(b.points[0])


def test_a_whole_last_row_without_its_newline_is_kept(tmp_path):
    out = tmp_path / "r.jsonl"
    opt.sweep({**SMALL, "models": ["llama3-8B"]}, executor="serial", results=out)
    out.write_text(out.read_text().rstrip("\n"))
    res = opt.sweep(SMALL, executor="serial", results=out)
    assert res.solved == 2 and res.reused == 2
    assert len(read_results(out)) == 4 and out.read_text().count("\n") == 4


def test_outputs_in_missing_directories_are_bad_input_before_solving(tmp_path, capsys):
    path = _grid_file(tmp_path, {"models": ["1T"], "gpus": 4096})
    for extra, key in ((["--out", str(tmp_path / "nope" / "r.jsonl")], "results"),
                       (["--csv", str(tmp_path / "nope" / "t.csv")], "--csv"),
                       (["--out", str(tmp_path)], "results")):
        assert main(["sweep", str(path), "--quiet", "--executor", "serial", *extra]) == 2
        err = capsys.readouterr().err
        assert f"'{key}'" in err and "Traceback" not in err
    assert not (tmp_path / "g.results.jsonl").exists()


# ------------------------------------------------------- input hardening (issue 13)

@pytest.mark.parametrize("data, key", [
    ({"models": ["1T"], "gpus": [2 ** 63]}, "gpus"),
    ({"models": ["1T"], "gpus": [1e308]}, "gpus"),
    ({"models": ["1T"], "gpus": 4096, "options": {"max_batch": 2 ** 63}}, "options.max_batch"),
    ({"models": ["1T"], "gpus": 4096, "options": {"time_limit_s": float("nan")}}, "options.time_limit_s"),
    ({"models": ["1T"], "gpus": 4096, "options": {"time_limit_s": float("inf")}}, "options.time_limit_s"),
    ({"models": ["1T"], "gpus": 4096, "options": {"datatype": ["fp8", ["x"]]}}, "options.datatype"),
    ({"models": ["1T"], "gpus": 4096, "overrides": {"offload_gib": 1024}}, "overrides.offload_gib"),
    ({"models": ["1T"], "gpus": 4096, "overrides": {"nvlink_size": 2 ** 63}}, "overrides.nvlink_size"),
    ({"models": ["1T"], "gpus": 4096, "overrides": {"hbm_gib": float("nan")}}, "overrides.hbm_gib"),
    ({"models": ["1T"], "gpus": 4096, "name": {"a": 1}}, "name"),
    ("models: [1T]\ngpus: 4096\ngpus: 8192\n", "gpus"),
    ("models: [1T]\ngpus: " + "[" * 3000 + "]" * 3000 + "\n", "<file>"),
])
def test_grid_limits_name_file_and_key(tmp_path, capsys, data, key):
    path = _grid_file(tmp_path, data)
    assert main(["sweep", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and f"'{key}'" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_grid_not_utf8_or_a_directory(tmp_path, capsys):
    bad = tmp_path / "b.yaml"
    bad.write_bytes(b"\xff\xfe x\n")
    for grid in (str(bad), str(tmp_path), ""):
        assert main(["sweep", grid, "--quiet"]) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    with pytest.raises(ConfigError, match="UTF-8"):
        load_grid(str(bad))


def test_results_file_not_utf8_names_file_and_line(tmp_path):
    out = tmp_path / "r.jsonl"
    opt.sweep({**SMALL, "models": ["llama3-8B"]}, executor="serial", results=out)
    lines = out.read_bytes().splitlines(keepends=True)
    out.write_bytes(lines[0] + b"\xff\xfe\n" + b"".join(lines[1:]))
    with pytest.raises(ConfigError, match=r"r\.jsonl:2"):
        read_results(out)
    # a last line cut in the middle of a character is a cut-short row: dropped
    out.write_bytes(b"".join(lines) + json.dumps({"key": "k", "status": "ok", "x": "é"}).encode()[:-4])
    assert len(read_results(out)) == len(lines)
    assert out.read_bytes() == b"".join(lines)


@pytest.mark.parametrize("content", ['{"key": ["a"], "status": "ok"}\n', "[" * 100000 + "\n", "{}\n"])
def test_results_file_bad_rows_are_bad_input(tmp_path, content):
    out = tmp_path / "r.jsonl"
    out.write_text(content + '{"key": "k", "status": "ok"}\n')
    with pytest.raises(ConfigError, match=r"r\.jsonl:1"):
        read_results(out)


def test_results_path_a_directory_is_bad_input(tmp_path):
    with pytest.raises(ConfigError, match="directory"):
        read_results(tmp_path)
    with pytest.raises(ConfigError, match="directory"):
        opt.sweep(SMALL, executor="serial", results=tmp_path)
    with pytest.raises(ConfigError, match="empty"):
        opt.sweep(SMALL, executor="serial", results="")


def test_default_datatype_is_each_systems_best():
    # an A100 has no fp8: the default must not turn its points into error rows
    res = opt.sweep({"models": ["llama3-8B"], "systems": ["a100-80g", "h100-80g-nvl8"], "gpus": [8],
                     "options": {"max_batch": 16}}, executor="serial")
    assert [r["status"] for r in res.rows] == ["optimal", "optimal"]
    assert [r["datatype"] for r in res.rows] == ["bf16", "fp8"]
    assert [r["point"]["options"]["datatype"] for r in res.rows] == ["bf16", "fp8"]
    # asked for explicitly, a datatype the system lacks is still that point's error
    bad = opt.sweep({"models": ["llama3-8B"], "systems": ["a100-80g"], "gpus": [8],
                     "options": {"max_batch": 16, "datatype": "fp8"}}, executor="serial")
    assert bad.rows[0]["status"] == "error" and "datatype" in bad.rows[0]["message"]


def test_grid_pins_are_checked_like_plans():
    with pytest.raises(opt.ConfigError) as e:
        load_grid({"models": ["1T"], "gpus": 4096, "options": {"pin": {"microbatch": []}}})
    assert e.value.key == "microbatch" and "at least one value" in str(e.value)


def test_a_point_opens_the_last_optimum_of_its_kind_first(monkeypatch):
    """Serially, a point opens first the family of the optimum of the last
    point with the same model, system, GPU count and options (sweep._hints;
    only the capacities and links differ). Where that strategy fits, the
    search makes no warm-start solve of its own (Master.warm_start is not
    called), with the answer of plan alone. megatron-22B on 64 GPUs, 1 TiB
    of offload per GPU, then 512 GiB. Whether the path is shorter depends
    on the point (here 14 solves against plan's 15, on 128 GPUs with 256
    GiB 18 against 16): scripts/bench_hints.py measures a study grid."""
    import importlib
    from optimizer import master, search
    sweep = importlib.import_module("optimizer.sweep")
    grid = {"models": ["megatron-22B"], "gpus": [64], "overrides": {"offload_gib": [1024, 512], "offload_gbps": 100},
            "options": {"pin": ZERO1}}
    monkeypatch.setattr(sweep, "_hints", {})
    warm = master.Master.warm_start
    calls, opened = [], []
    monkeypatch.setattr(master.Master, "warm_start", lambda self, d: calls.append(1) or warm(self, d))
    open_family = search._open_family
    monkeypatch.setattr(search, "_open_family", lambda p, fam, *a, **k: opened.append((p.system.offload_gib, dict(fam)))
                        or open_family(p, fam, *a, **k))
    rows = opt.sweep(grid, executor="serial").rows
    assert len(calls) == 1                      # the first point's, not the second's
    first = rows[0]["result"]["strategy"]
    second_first = next(f for cap, f in opened if cap == 512)
    assert {k: second_first[k] for k in ("tp", "cp", "pp", "dp", "microbatch", "interleave")} == \
        {k: first[k] for k in ("tp", "cp", "pp", "dp", "microbatch", "interleave")}
    direct = opt.plan("megatron-22B", opt.load_system("h100-80g-nvl8", offload_gib=512, offload_gbps=100), 64,
                      pin=ZERO1)
    assert direct.best.strategy.to_dict() == rows[1]["result"]["strategy"]
    assert rows[1]["proof"]["bound_samples_per_s"] == pytest.approx(direct.bound_samples_per_s, rel=1e-12)


def test_a_point_opens_the_near_ties_of_the_last_of_its_kind_before_any_solve(monkeypatch):
    """PlanResult.near: the families the solves of a plan returned under its
    incumbent (each a family of its space, none twice, at most NEAR_KEPT).
    search._plan's `near` opens those of them that are families here
    right after the hinted one, before the first solve, and the answer is
    plan's. megatron-22B on 64 GPUs with 1 TiB of offload, then 512 GiB
    (the sweep's order: sweep._hints keeps both)."""
    from optimizer import master, search
    from optimizer.knobs import canonical
    from optimizer.space import make_problem

    def plan_(cap, **kw):
        return search._plan("megatron-22B", opt.load_system("h100-80g-nvl8", offload_gib=cap, offload_gbps=100), 64,
                            3072, None, ZERO1, False, None, None, 1, None, None, "cpsat", None, **kw)
    first = plan_(1024)
    p1 = make_problem(opt.load_model("megatron-22B"), opt.load_system("h100-80g-nvl8", offload_gib=1024,
                                                                       offload_gbps=100), 64, 3072, "fp8", ZERO1)
    keys = [k for k in master.FAMILY_KEYS if k != "gpus"]
    assert first.near and len(first.near) <= search.NEAR_KEPT
    assert all(search.is_family(p1, {**f, "gpus": 64}) for f in first.near)
    assert len({tuple(f[k] for k in keys) for f in first.near}) == len(first.near)
    events = []
    open_family = search._open_family
    monkeypatch.setattr(search, "_open_family", lambda p, fam, *a, **k: events.append(tuple(fam[k] for k in keys))
                        or open_family(p, fam, *a, **k))
    nxt = master.Master.next
    monkeypatch.setattr(master.Master, "next", lambda self, d: events.append("solve") or nxt(self, d))
    hint = {n: int(v) for n, v in canonical(first.best.strategy.to_dict()).items()}
    second = plan_(512, hint=hint, near=first.near)
    p2 = make_problem(opt.load_model("megatron-22B"), opt.load_system("h100-80g-nvl8", offload_gib=512,
                                                                       offload_gbps=100), 64, 3072, "fp8", ZERO1)
    before = events[:events.index("solve")]
    wanted = {tuple(f[k] for k in keys) for f in first.near if search.is_family(p2, {**f, "gpus": 64})}
    assert wanted and wanted <= set(before)
    direct = plan_(512)
    assert second.status == direct.status == "optimal"
    assert second.best.strategy.to_dict() == direct.best.strategy.to_dict()
    assert second.lower_bound == pytest.approx(direct.lower_bound, rel=1e-12)


def test_a_hint_outside_the_space_or_not_fitting_changes_nothing(monkeypatch):
    """search._plan's hint: a family outside the space (tp 3 on 8 GPUs) is
    not opened; a strategy pinned out (ZeRO-3) or not fitting HBM (llama3-8B
    unsharded on 8 GPUs of 80 GiB) has its family opened, and the warm
    start still runs; one that fits settles the warm start. The answer is
    plan's every time."""
    from optimizer import master, search
    from optimizer.knobs import canonical
    from optimizer.space import make_problem
    system = opt.load_system("h100-80g-nvl8")
    base = opt.plan("llama3-8B", system, 8, pin=ZERO1)
    good = {n: int(v) for n, v in canonical(base.best.strategy.to_dict()).items()}
    tiny = {**good, "tp": 1, "pp": 1, "dp": 8, "cp": 1, "recompute": 0, "microbatch": 16, "batch": 128,
            "interleave": 1, "zero": 0, "offload_weights": 0, "offload_activations": 0, "offload_optimizer": 0}
    p = make_problem(opt.load_model("llama3-8B"), system, 8, 3072, "fp8", ZERO1)
    assert not search._fits(p, tiny) and search.is_family(p, search._family_of(p, tiny))
    assert not search.is_family(p, {**search._family_of(p, good), "tp": 3})
    assert not search.is_family(p, {**search._family_of(p, good), "gpus": 16})
    assert search._fits(p, good)
    assert not search._fits(p, {**good, "zero": 3})          # pinned out
    warm = master.Master.warm_start
    for hint, warm_starts in (({**good, "tp": 3}, 1), ({**good, "zero": 3}, 1), (tiny, 1), (good, 0)):
        calls = []
        monkeypatch.setattr(master.Master, "warm_start", lambda self, d: calls.append(1) or warm(self, d))
        res = search._plan("llama3-8B", system, 8, 3072, None, ZERO1, False, None, None, 1, None, None, "cpsat",
                           None, hint=hint)
        assert res.status == base.status and res.best.strategy == base.best.strategy, hint
        assert len(calls) == warm_starts, hint
