"""No bound the search uses ever exceeds the exact time: over random models,
systems with 1 to 5 network tiers, GPU counts and batch limits, every group
bound and every member bound against the exact model, member by member.

`BOUND_EXAMPLES` sets the number of random problems (scripts/check_bounds.py
runs many more and counts the strategies checked)."""

import os

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import optimizer as opt
from optimizer import perf
from optimizer.search import Tables
from optimizer.space import make_problem, structures

from conftest import tiered_system

EXAMPLES = int(os.environ.get("BOUND_EXAMPLES", "25"))
GROUPS = 30          # random groups checked per problem, every member of each
CHECKED = {"strategies": 0, "problems": 0}

problems = st.fixed_dictionaries({
    "heads": st.sampled_from([4, 8, 12, 16]), "head_dim": st.sampled_from([32, 64, 80, 128]),
    "hidden": st.sampled_from([512, 768, 1024, 2048]), "ff_mult": st.sampled_from([2, 4]),
    "blocks": st.sampled_from([2, 4, 6, 8]), "seq": st.sampled_from([256, 1024, 2048]),
    "tiers": st.integers(1, 5), "first": st.sampled_from([2, 4]), "growth": st.sampled_from([2, 4]),
    "falloff": st.sampled_from([0.2, 1.0, 3.0]), "must_fill": st.booleans(),
    "offload": st.booleans(), "gpus": st.sampled_from([4, 8, 16, 32]),
    "max_batch": st.sampled_from([8, 16, 32]), "hbm_gib": st.sampled_from([1.0, 4.0, 80.0]),
    "datatype": st.sampled_from(["fp8", "bf16"]),
})


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(problems)
def test_no_bound_exceeds_the_exact_time(q):
    model = opt.load_model({"name": "rand", "hidden": q["hidden"], "feedforward": q["ff_mult"] * q["hidden"],
                            "seq_len": q["seq"], "heads": q["heads"], "head_dim": q["head_dim"],
                            "blocks": q["blocks"]})
    sys_ = tiered_system(q["tiers"], offload_gib=64.0 if q["offload"] else 0.0,
                         offload_gbps=20.0 if q["offload"] else 0.0, hbm_gib=q["hbm_gib"], first=q["first"],
                         growth=q["growth"], must_fill=q["must_fill"], falloff=q["falloff"])
    if sys_.networks[-1].size < q["gpus"]:
        return                                  # the outermost tier must hold every GPU
    p = make_problem(model, sys_, q["gpus"], q["max_batch"], q["datatype"])
    S = structures(p)
    if len(S["tp"]) == 0:
        return
    t = Tables(p, S)
    CHECKED["problems"] += 1
    rng = np.random.default_rng(q["gpus"] * 7 + q["tiers"])
    for g in rng.choice(t.n_groups, size=min(GROUPS, t.n_groups), replace=False):
        knobs = t.members(g)
        if len(knobs["tp"]) == 0:
            continue
        r = perf.evaluate_arrays(p.model, p.system, p.datatype, knobs)
        exact = r["time_s"] / knobs["batch"]
        assert np.all(t.g_bound[g] <= exact * (1 + 1e-12)), g
        assert np.all(t.member_bounds(g, knobs) <= exact * (1 + 1e-12)), g
        assert np.allclose(r["hbm_bytes"], t.g_hbm[g], rtol=1e-12)       # group memory is exact
        CHECKED["strategies"] += len(knobs["tp"])
