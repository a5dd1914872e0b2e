"""Infeasibility explained: the core is minimal and names the right limits,
each fix is exact (feasible at the value, infeasible one step below), and
the explanation's feasibility test agrees with the search."""

import itertools
import json
import math

import numpy as np
import pytest

import optimizer as opt
from optimizer import explain as ex
from optimizer import search
from optimizer.cli import main
from optimizer import knobs
from optimizer.space import GROUP_REST, SIGMA, make_problem, sigmas
from optimizer.spec import load_model, load_system

GIB_STEP = 1


def problem(model, system="h100-80g-nvl8", gpus=4096, pin=None, max_batch=3072, **over):
    return make_problem(load_model(model), load_system(system, **over), gpus, max_batch, "fp8", pin)


def status(model, system="h100-80g-nvl8", gpus=4096, pin=None, max_batch=3072, **over):
    return opt.plan(model, load_system(system, **over), gpus, max_batch=max_batch, pin=pin).status


# The case predates ZeRO-2 and 3: with ZeRO-3 over the whole DP group
# 18T fits 4,096 GPUs (78.3 GiB), so its tests keep ZeRO at stage 1.
PIN_18T = {"zero": 1}


@pytest.fixture(scope="module", params=[
    # megatron-22B on one GPU, held to ZeRO-1: 371 GiB at the least against 80 (seconds to explain)
    ("megatron-22B", 1, {"zero": 1}),
    # 18T on 4,096 80 GiB H100s, no offload, ZeRO-1: the case (minutes with cp in the space)
    pytest.param(("18T", 4096, PIN_18T), marks=pytest.mark.exhaustive),
], ids=["22B-on-1", "18T-on-4096"])
def big(request):
    """An infeasible problem whose HBM binds: (model, gpus, pin, problem, explanation)."""
    model, gpus, pin = request.param
    p = problem(model, gpus=gpus, pin=pin)
    return model, gpus, pin, p, ex.explain(p)


def test_conflict_names_hbm_with_its_smallest_footprint(big):
    model, gpus, pin, p, e = big
    assert "hbm_capacity" in e["conflicts"]
    d = e["details"]["hbm_capacity"]
    assert d["capacity_gib"] == 80
    assert d["smallest_footprint_gib"] > 80
    assert f"{d['smallest_footprint_gib']:.1f} GiB" in e["summary"]
    # the named strategy really has that footprint under the exact model
    r = opt.evaluate(model, load_system("h100-80g-nvl8", hbm_gib=1000), d["strategy"])
    assert r.memory["hbm_total"] / 2 ** 30 == pytest.approx(d["smallest_footprint_gib"], rel=1e-9)


def test_hbm_fix_is_exact(big):
    model, gpus, pin, p, e = big
    h = e["fixes"]["hbm_gib"]
    assert h is not None and h > 80
    assert ex.feasible(problem(model, gpus=gpus, pin=pin, hbm_gib=h))
    assert not ex.feasible(problem(model, gpus=gpus, pin=pin, hbm_gib=h - GIB_STEP))


def test_offload_fix_is_exact(big):
    model, gpus, pin, p, e = big
    o = e["fixes"]["offload_gib"]
    assert o is not None
    assert ex.feasible(problem(model, gpus=gpus, pin=pin, offload_gib=o, offload_gbps=100))
    assert not ex.feasible(problem(model, gpus=gpus, pin=pin, offload_gib=o - GIB_STEP, offload_gbps=100))


def test_gpu_fix_is_exact(big):
    model, gpus, pin, p, e = big
    n = e["fixes"]["gpus"]
    assert n is not None and n > gpus and n % 8 == 0
    assert ex.feasible(problem(model, gpus=n, pin=pin))
    for below in range(gpus - gpus % 8 + 8, n, 8):   # every whole-node count between is infeasible
        assert not ex.feasible(problem(model, gpus=below, pin=pin))


def test_18t_with_1tib_offload_is_feasible():
    assert ex.feasible(problem("18T", "h100-80g-nvl8-off1t-100gbps", pin=PIN_18T))


@pytest.mark.exhaustive
def test_128t_needs_more_hbm_than_80_but_at_most_120():
    res = opt.plan("128T", "h100-80g-nvl8-off2t-100gbps", 4096, pin=PIN_18T)     # ZeRO-3 fits it
    assert res.status == "infeasible"
    e = res.explanation
    assert "hbm_capacity" in e["conflicts"]
    h = e["fixes"]["hbm_gib"]
    assert 80 < h <= 120
    assert ex.feasible(problem("128T", "h100-80g-nvl8-off2t-100gbps", pin=PIN_18T, hbm_gib=h))
    assert not ex.feasible(problem("128T", "h100-80g-nvl8-off2t-100gbps", pin=PIN_18T, hbm_gib=h - GIB_STEP))


def test_pinned_request_names_the_pin_and_the_batch_is_a_variable():
    # the case: tp=1 on 4,096 GPUs fits at a small batch (the batch is a
    # variable up to the limit), and not at 3072 held fixed, where the pin is named
    pin = {"tp": 1, "flash_attention": False, "zero": 1}
    assert ex.feasible(problem("1T", pin=pin))
    e = ex.explain(problem("1T", pin={**pin, "batch": 3072}))
    assert "pin:tp" in e["conflicts"]
    assert "tp=1" in e["summary"]
    h = e["fixes"]["hbm_gib"]
    assert ex.feasible(problem("1T", pin={**pin, "batch": 3072}, hbm_gib=h))
    assert not ex.feasible(problem("1T", pin={**pin, "batch": 3072}, hbm_gib=h - GIB_STEP))


def test_nvlink_fix_is_exact():
    pin = {"tp": 16, "tp_net": 0}           # TP of 16 on the first tier, which holds 8
    e = ex.explain(problem("1T", pin=pin))
    assert "nvlink_domain" in e["conflicts"]
    assert e["details"]["nvlink_domain"]["smallest_tp"] == 16
    assert e["fixes"]["nvlink_size"] == 16
    assert status("1T", gpus=4096, pin=pin, nvlink_size=16) == "optimal"


def test_two_problems_no_single_fix():
    # dp 4096 > batch 3072, and 1T on one GPU (cp pinned: cp=1024 would keep dp at 4)
    e = ex.explain(problem("1T", pin={"tp": 1, "pp": 1, "cp": 1}))
    assert set(e["conflicts"]) >= {"max_batch", "pin:tp", "pin:pp"}
    assert all(v is None for v in e["fixes"].values())
    assert "No single change suffices" in e["summary"]


def test_core_is_minimal(big):
    _, _, _, p, e = big
    _, witness = ex.fix_gpus(p)               # the rows explain builds the core on
    core = ex._Core(p, ex._rows(p, ex._relaxed_triples(p, [witness[3]] if witness else ())))
    assert not core._solve(set(e["conflicts"]))
    for name in e["conflicts"]:
        assert core._solve(set(e["conflicts"]) - {name})


def _meets(core, active: set) -> bool:
    """Some table row meets every column whose conditions `active` makes hold
    (the core's question, answered without CP-SAT)."""
    cols = [c for c, cond in enumerate(core.conditions) if all((n in active) == v for n, v in cond.items())]
    return bool((core.sig[:, cols] == 1).all(axis=1).any())


@pytest.mark.parametrize("model,gpus,pin,over", [
    ("1T", 4096, {"tp": 1, "pp": 1, "cp": 1}, {}),              # batch and count against the pins
    ("megatron-22B", 2, {"zero": [0, 1], "tp_net": 0}, {"offload_gib": 8, "offload_gbps": 50}),
    ("1T", 64, None, {"hbm_gib": 40}),                          # HBM
])
def test_dropping_dominated_rows_keeps_every_answer(model, gpus, pin, over, monkeypatch):
    """The core's table leaves out rows another row dominates (every
    structural bit, and a fit on every check): for every set of limit
    groups, the table without them meets it exactly when the table of every
    relaxed row does."""
    p = problem(model, gpus=gpus, pin=pin, **over)
    rows = ex._rows(p, ex._relaxed_triples(p))
    pruned = ex._Core(p, rows)
    monkeypatch.setattr(ex, "_undominated_fits",
                        lambda p, r, struct, checks_of: (np.arange(len(r["tp"])), ex._fit_table(p, r, checks_of(r))))
    whole = ex._Core(p, rows)
    assert whole.limits == pruned.limits and whole.conditions == pruned.conditions
    assert pruned.rows_fitted < whole.rows_fitted == len(rows["tp"])
    for k in range(len(whole.limits) + 1):
        for active in itertools.combinations(whole.limits, k):
            assert _meets(pruned, set(active)) == _meets(whole, set(active)), active


@pytest.mark.parametrize("model,gpus,pin,over", [
    ("1T", 4096, {"tp": 1, "pp": 1, "cp": 1}, {}),              # two cores of five: the structural one
    ("megatron-22B", 1, {"zero": 1}, {}),
    ("1T", 64, {"zero": [0, 1], "tp_net": 0}, {"offload_gib": 8, "offload_gbps": 50}),
    ("1T", 256, {"tp": 16, "tp_net": 0}, {}),
])
def test_the_core_is_a_smallest_one(model, gpus, pin, over):
    """No set of fewer limit groups is infeasible (every subset checked on
    the table, without CP-SAT), and of the smallest the one explain names
    keeps structural limits where a capacity would do as well."""
    p = problem(model, gpus=gpus, pin=pin, **over)
    core = ex._Core(p, ex._rows(p, ex._relaxed_triples(p)))
    found = core.minimal()
    assert found and not _meets(core, set(found))
    smallest = [set(s) for k in range(len(core.limits) + 1) for s in itertools.combinations(core.limits, k)
                if not _meets(core, set(s))]
    least = min(len(s) for s in smallest)
    assert len(found) == least
    ties = [s for s in smallest if len(s) == least]
    kept = lambda s: sum(ex._keep_rank(n) for n in s)  # noqa: E731     # later in KEEP_ORDER: kept first
    assert kept(set(found)) == max(kept(s) for s in ties), ties


GRID_CASES = [          # memory grids checked against the whole grid (_memory)
    ("1T", 1024, None, "h100-80g-nvl8"),
    ("1T", 512, {"zero": [0, 1]}, "h100-80g-nvl8-off2t-100gbps"),
    ("megatron-22B", 16, {"shard": 2}, "h100-80g-nvl8-off2t-100gbps"),
    ("llama3-8B", 64, None, "h100-80g-nvl8"),          # a vocabulary: the last stage can be the fullest
]


@pytest.mark.parametrize("model,gpus,pin,system", GRID_CASES + [
    ("megatron-22B", 16, {"recompute": "none", "fused_activation": True}, "h100-80g-nvl8"),  # pins on signatures
])
def test_fit_table_settles_rows_as_the_whole_grid_does(model, gpus, pin, system):
    """_fit_table settles most rows from per-stage floors and one candidate
    group each; on every row and capacity pair its answer is the whole
    grid's: some allowed group within both caps (HBM of 10 to 160 GiB,
    offload of none to unlimited). The checks allow groups with the pins
    and without (as the core's do): the grid is evaluated where any check
    allows a column, and each check reads its own."""
    p = problem(model, system, gpus=gpus, pin=pin)
    rows = ex._rows(p, ex._relaxed_triples(p))
    pick = np.random.default_rng(7).choice(len(rows["tp"]), size=min(1500, len(rows["tp"])), replace=False)
    r = ex._sub(rows, np.sort(pick))
    caps = [(h * 2 ** 30, o) for h in (10, 20, 40, 80, 160) for o in (0.0, 64 * 2 ** 30, math.inf)]
    tiers = [ex._allowed(q, r, t) for q in (p, ex._without_pins(p, p.pins)) for t in (False, True)]
    checks = [(tiers[2 * u + (o > 0)], h, o) for u in (0, 1) for h, o in caps]
    got = ex._fit_table(p, r, checks)
    hbm, off = ex._memory(p, r)
    mixed = 0
    for c, (allowed, h, o) in enumerate(checks):
        want = (ex._allowed_grid(allowed) & (hbm <= h) & (off <= o)).reshape(len(hbm), -1).any(axis=1)
        assert (got[:, c] == want).all(), (h / 2 ** 30, o)
        mixed += 0 < want.sum() < len(want)
    assert mixed >= 3                # the caps cut through the rows, not around them


@pytest.mark.parametrize("model,gpus,pin,system", GRID_CASES)
def test_smallest_footprints_are_the_whole_grid_s(model, gpus, pin, system):
    """_smallest evaluates the memory grid only where a row allows a
    column; its least HBM and least offload, and the group it names (the
    first at the least, in row, signature, cell order), are those of the
    whole grid (_memory), read here by argmin."""
    p = problem(model, system, gpus=gpus, pin=pin)
    r = ex._rows(p, ex._count_triples(p, p.gpus))
    r = ex._sub(r, ex._rules_ok(p, r))
    hbm, off = ex._memory(p, r)
    cap_h, cap_o = ex._caps(p)
    got = ex._smallest(p)
    for which, tier, value, fits in (("hbm", ex._tier(p), hbm, off <= cap_o), ("offload", True, off, hbm <= cap_h)):
        grid = np.where(ex._allowed_grid(ex._allowed(p, r, tier)) & fits, value, math.inf)
        flat = int(np.argmin(grid))
        least, strategy = got[which]
        assert least == grid.reshape(-1)[flat]
        i, j, *cells = np.unravel_index(flat, grid.shape)
        codes = knobs.canonical(strategy.to_dict())
        assert [codes[k] for k in ("tp", "cp", "pp", "dp")] == [int(r[k][i]) for k in ("tp", "cp", "pp", "dp")]
        sig = sigmas(p, r["tp"][i:i + 1], r["cp"][i:i + 1])
        assert {k: codes[k] for k in SIGMA} == {k: int(sig[k][j]) for k in SIGMA}
        ax = ex._group_axes(p, r["dp"][i:i + 1])
        assert {k: codes[k] for k in GROUP_REST} == {k: int(ax[k].reshape(-1)[c]) for k, c in zip(GROUP_REST, cells)}


LONG = pytest.mark.exhaustive        # full searches of 1T on 1,024-4,096 GPUs


@pytest.mark.parametrize("model,gpus,pin,system", [
    pytest.param("megatron-1T", 512, None, "h100-80g-nvl8", marks=LONG),
    ("1T", 64, None, "h100-80g-nvl8"),
    ("1T", 64, None, "h100-80g-nvl8-off2t-100gbps"),
    pytest.param("1T", 4096, {"tp": 1}, "h100-80g-nvl8", marks=LONG),
    pytest.param("1T", 4096, {"tp": 2, "recompute": "none"}, "h100-80g-nvl8", marks=LONG),
    pytest.param("1T", 1024, {"pp": 4, "zero": 0}, "h100-80g-nvl8", marks=LONG),
    pytest.param("megatron-1T", 512, {"zero": 3}, "h100-80g-nvl8", marks=LONG),
    pytest.param("1T", 1024, {"pp": 4, "zero": [2, 3], "shard": 4}, "h100-80g-nvl8", marks=LONG),
    ("megatron-22B", 8, {"tp_overlap": "ring", "tp": 1}, "h100-80g-nvl8"),
    pytest.param("megatron-22B", 16, {"dp_overlap": True, "dp": 1}, "h100-80g-nvl8", marks=LONG),
])
def test_feasibility_agrees_with_the_search(model, gpus, pin, system, monkeypatch):
    # plan asks feasible() first; here the search alone decides (the master and the exact model)
    monkeypatch.setattr(search, "feasible", lambda p: True)
    res = opt.plan(model, system, gpus, pin=pin, time_limit_s=5)      # the status is all it needs
    assert ex.feasible(problem(model, system, gpus, pin)) == (res.status != "infeasible")
    assert (res.explanation is not None) == (res.status == "infeasible")


def test_cli_prints_paragraph_and_fixes_and_exits_1(capsys):
    # megatron-22B on one GPU: 371 GiB at the least, against 80 (a cheap
    # infeasible problem; 18T on 4,096 GPUs says the same in 25 s)
    rc = main(["--model", "megatron-22B", "--gpus", "1"])
    out = capsys.readouterr().out
    assert rc == 1
    assert "HBM capacity" in out and "smallest single change" in out
    e = ex.explain(problem("megatron-22B", gpus=1))
    assert f"{e['fixes']['hbm_gib']:,} GiB" in out
    rc = main(["--model", "megatron-22B", "--gpus", "1", "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert rc == 1 and doc["status"] == "infeasible"
    assert doc["explanation"]["fixes"] == e["fixes"]
    assert doc["explanation"]["conflicts"] == e["conflicts"]


def test_memory_parts_are_kept_across_capacities_not_across_tiers(monkeypatch):
    """explain._memory_parts keeps a memory grid's parts for the same rows
    of problems that differ only in their capacities and link: a second
    capacity reads the first's (no new grid), equal to a grid built for it
    afresh; a system without an offload tier (no offload flags) builds its
    own. The explanations of 72T on 4,096 GPUs at two offload capacities
    are the same with the kept parts as without."""
    built = []
    grid = ex._grid_parts
    monkeypatch.setattr(ex, "_grid_parts", lambda p, r: built.append(1) or grid(p, r))
    monkeypatch.setattr(ex, "_parts", ex.Kept(ex.PARTS_KEPT_BYTES, ex._parts.weight))
    m = load_model("72T")
    small, large, none = (make_problem(m, load_system("h100-80g-nvl8", **caps), 4096, 3072, "fp8", {"zero": [0, 1]})
                          for caps in ({"offload_gib": 256, "offload_gbps": 100},
                                       {"hbm_gib": 120, "offload_gib": 2048, "offload_gbps": 50}, {}))
    r = ex._rows(small, ex._count_triples(small, 4096))
    r = ex._sub(r, np.arange(len(r["tp"])) < 300)
    first = ex._memory_parts(small, r)
    again = ex._memory_parts(large, r)
    assert len(built) == 1 and again is first
    fresh = grid(large, r)
    for kept, new in zip(again[0], fresh[0]):
        assert all(np.array_equal(a, b) for a, b in zip(kept, new))
    assert np.array_equal(again[1], fresh[1])
    ex._memory_parts(none, r)
    assert len(built) == 2
    kept = [ex.explain(p) for p in (small, make_problem(m, load_system("h100-80g-nvl8", offload_gib=512,
                                                                          offload_gbps=100), 4096, 3072, "fp8",
                                                          {"zero": [0, 1]}))]
    monkeypatch.setattr(ex, "_memory_parts", grid)
    alone = [ex.explain(p) for p in (small, make_problem(m, load_system("h100-80g-nvl8", offload_gib=512,
                                                                           offload_gbps=100), 4096, 3072, "fp8",
                                                           {"zero": [0, 1]}))]
    assert json.dumps(kept, sort_keys=True, default=str) == json.dumps(alone, sort_keys=True, default=str)
