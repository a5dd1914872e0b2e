"""The space the search walks equals the raw cross product of every knob,
filtered by the rules (optimizer.rules) and canonicalised (a knob without
effect at its idle code): a missing option or an extra one fails here."""

import itertools

import numpy as np
import pytest

import optimizer as opt
from optimizer import knobs as K
from optimizer import rules as R
from optimizer import space
from optimizer.space import count_space, enumerate_all, families, make_problem, structures

TINY = {"name": "tiny", "hidden": 64, "feedforward": 256, "seq_len": 16, "heads": 4, "head_dim": 16,
        "blocks": 4}


def system(tiers, offload=False):
    """A system with `tiers` network tiers of sizes 2, 4, 8, ... (the first
    must be filled) and an outermost tier of 1024."""
    sizes = [2 ** (i + 1) for i in range(tiers - 1)] + [1024]
    return opt.load_system({
        "name": f"tiers{tiers}", "matrix_tflops": {"bf16": 100}, "vector_tflops": {"bf16": 10},
        "matrix_efficiency": [[1, 0.5]], "vector_efficiency": [[1, 0.5]],
        "hbm": {"gib": 80, "gbps": 1000, "efficiency": [[1, 0.9]]},
        "offload": {"gib": 64, "gbps": 10} if offload else {"gib": 0, "gbps": 0},
        "networks": [{"name": f"t{i}", "size": n, "gbps": 100 / (i + 1), "efficiency": 0.9, "latency_us": 5,
                      "must_fill": i == 0, "processor_share": 0.1} for i, n in enumerate(sizes)]})


def raw_space(model, sys_, gpus, max_batch, pins):
    """Every combination of every knob's raw values (integers up to the GPU
    count, the batch limit or the blocks; every enum, boolean and tier),
    kept where the rules hold, the pins admit it and the batch is within
    the limit; canonicalised; as a set of tuples in registry order."""
    out = set()
    ints = range(1, gpus + 1)
    struct = [(tp, cp, pp, gpus // (tp * cp * pp)) for tp in ints for cp in ints for pp in ints
              if gpus % (tp * cp * pp) == 0]
    T = len(sys_.networks)
    rest = [k for k in K.KNOBS if k.level != "structure"]

    def raw(k, dp):
        # shard: every integer up to one past dp (beyond it the rule only grows surer)
        if k.name in pins:       # a pin filters rows: applied here rather than after the rules
            return sorted(pins[k.name])
        return (range(len(k.enum)) if k.kind == "enum" else range(2) if k.kind == "bool"
                else k.values if k.values else range(dp + 2) if k.name == "shard" else range(T))
    for tp, cp, pp, dp in struct:
        grid = np.array(list(itertools.product(*(raw(k, dp) for k in rest))), dtype=np.int64)
        for batch, mb, v in itertools.product(range(1, max_batch + 1), range(1, max_batch + 1),
                                              range(1, model.blocks + 1)):
            k = {"tp": tp, "cp": cp, "pp": pp, "dp": dp, "batch": batch, "microbatch": mb, "interleave": v}
            k = {**{n: np.full(len(grid), x) for n, x in k.items()},
                 **{knob.name: grid[:, i] for i, knob in enumerate(rest)}}
            broken = R.check(model, sys_, "bf16", k, (len(grid),))
            ok = ~np.logical_or.reduce(list(broken.values()))
            for name, codes in pins.items():
                ok &= np.isin(k[name], sorted(codes))
            if ok.any():
                c = K.canonical({n: x[ok] for n, x in k.items()})
                out.update(map(tuple, np.stack([c[n] for n in K.NAMES], 1).tolist()))
    return out


CASES = [
    (2, False, 2, 2, {}),
    (2, False, 4, 2, {}),
    (2, False, 8, 4, {}),
    (3, False, 8, 4, {}),
    (4, False, 16, 4, {}),
    (2, True, 8, 4, {}),
    (2, False, 4, 6, {"batch": [2, 4, 6], "microbatch": [1, 3]}),
    (3, True, 4, 4, {"tp_comm": "p2p_rs_ag"}),
    (4, False, 8, 4, {"recompute": ["none", "full"], "pp_net": 2}),
]


@pytest.mark.parametrize("tiers, offload, gpus, max_batch, pins",
                         # by default 4 GPUs with the offload flags pinned off (the system has none) and
                         # fused activations on: the grid 16x smaller; the free cases exhaustive
                         [(2, False, 4, 2, {"offload_weights": False, "offload_activations": False,
                                            "offload_optimizer": False, "fused_activation": True})]
                         + [pytest.param(*c, marks=pytest.mark.exhaustive) for c in CASES])
def test_space_is_the_raw_product_filtered_by_the_rules(tiers, offload, gpus, max_batch, pins):
    model, sys_ = opt.load_model(TINY), system(tiers, offload)
    p = make_problem(model, sys_, gpus, max_batch, "bf16", pins)
    walked = []
    for chunk in enumerate_all(p):
        walked.extend(map(tuple, np.stack([chunk[n] for n in K.NAMES], 1).tolist()))
    assert len(walked) == len(set(walked))                      # no strategy twice
    raw = raw_space(model, sys_, gpus, max_batch, p.pins)
    assert set(walked) == raw, (len(set(walked) - raw), len(raw - set(walked)))
    assert count_space(p) == len(raw)                          # counted == enumerated
    with pytest.MonkeyPatch.context() as mp:                    # a few keys at a time: the same count
        mp.setattr(space, "COUNT_ROWS", 1)
        assert count_space(p) == len(raw)


@pytest.mark.parametrize("gpus, max_batch, pins", [
    (8, 64, {}),                                           # closed-form counts
    (16, 96, {"interleave": [1, 2]}),                      # closed form, interleave pinned
    (8, 48, {"microbatch": [1, 3, 4]}),                    # listed microbatches
    (8, 64, {"batch": [16, 24, 48, 64]}),                  # listed batches
])
def test_family_counts_match_the_structures(gpus, max_batch, pins):
    """families() counts a key's structures in closed form where only the
    rules met by construction read the microbatch (L = local batch // unit
    families, sum of L // microbatch structures); structures() lists every
    one knob by knob. Both must agree, key by key."""
    p = make_problem(opt.load_model(TINY), system(2, False), gpus, max_batch, "bf16", pins)
    fam, S = families(p), structures(p)
    keys = ("tp", "cp", "pp", "dp")
    listed = {}
    for key in zip(*(S[n].tolist() for n in keys)):
        listed[key] = listed.get(key, 0) + 1
    counted = {key[:4]: key[4] for key in zip(*(fam[n].tolist() for n in keys), fam["batches"])}
    assert counted == listed and sum(listed.values()) > 20
    fams = set(zip(*(S[n].tolist() for n in keys + ("microbatch", "interleave"))))
    assert int(sum(fam["families"])) == len(fams)


def test_an_odd_sequence_trains_without_context_parallelism():
    """2 x cp must divide the sequence only when it is split (cp > 1): a
    sequence of 15 tokens has strategies, all with cp = 1 (2 x 2 = 4 does
    not divide 15); one of 16 also has cp = 2 and 4 (2 x 8 = 16 divides
    it, but cp = 8 with tp >= 1 and pp >= 1 needs 8 of the 4 GPUs)."""
    for seq, cps in ((15, {1}), (16, {1, 2, 4})):
        m = opt.load_model({**TINY, "seq_len": seq})
        p = make_problem(m, system(2), 4, 4, "bf16", {"flash_attention": True})
        seen = set()
        for r in enumerate_all(p):
            seen |= set(np.unique(r["cp"]).tolist())
        assert seen == cps, (seq, seen)


@pytest.mark.parametrize("tiers, offload, pins", [
    (2, False, {}),
    (3, True, {"tp_net": [1], "zero": [2, 3]}),            # a pinned tier, sharded stages
    (4, True, {"offload_optimizer": [True], "tp_comm": ["ar"]}),
])
def test_levels_built_many_at_once_are_those_built_one_at_a_time(tiers, offload, pins):
    """tp_choices_for and group_rest_for check every pair's rows in one pass
    of the rules and keep them where tp_choices and group_rest keep theirs:
    each pair's rows must be what a pair alone gives on a fresh problem (a
    row lost or gained in the concatenation fails here), and the block
    choices those of the members of a group with single-GPU PP and DP
    groups (members_of, the pins on those groups lifted)."""
    model, sys_ = opt.load_model({**TINY, "heads": 8}), system(tiers, offload)
    many = make_problem(model, sys_, 64, 64, "bf16", pins)
    one = make_problem(model, sys_, 64, 64, "bf16", pins)
    tp, cp = (x.reshape(-1) for x in np.meshgrid([1, 2, 4, 8], [1, 2, 4, 8]))
    dp = np.array([1, 2, 3, 4, 8, 16, 64] * 4)
    dcp = np.repeat([1, 2, 4, 8], 7)
    space.tp_choices_for(many, tp, cp)
    space.group_rest_for(many, dp, dcp)
    assert any(("tp_choices", 8, 8, 1) == key for key in many.memo)       # kept before any one-pair call
    sizes = []
    for t, c in zip(tp.tolist(), cp.tolist()):
        for sp in (False, True):
            a, b = space.tp_choices(many, t, c, sp), space.tp_choices(one, t, c, sp)
            assert a.shape == b.shape and (a == b).all(), (t, c, sp)
            mem = space.members_of(space._unpinned_groups(one), t, c, 1, 1, sp)
            ref = np.unique(mem[:, [space.MEMBER.index(n) for n in space.TP_CHOICE]], axis=0)
            assert ref.shape == b.shape and (ref == b).all(), (t, c, sp)
            sizes.append(len(b))
    for d, c in zip(dp.tolist(), dcp.tolist()):
        a, b = space.group_rest(many, d, c), space.group_rest(one, d, c)
        assert a.shape == b.shape and (a == b).all(), (d, c)
        sizes.append(len(b))
    assert 0 in sizes and max(sizes) > 4                   # some pairs admit nothing, some many


@pytest.mark.parametrize("seed", range(4))
def test_unique_rows_is_numpy_s_unique_over_rows(seed):
    """space.unique_rows (rows read as one number in a mixed radix) gives
    np.unique(axis=0)'s rows, first indices and inverse: random integer
    and boolean arrays with negative values, one column, one row, and a
    range too wide for 62 bits (numpy's own way then)."""
    rng = np.random.default_rng(seed)
    cases = [rng.integers(-3, 7, size=(int(rng.integers(1, 60)), int(rng.integers(1, 5)))) for _ in range(40)]
    cases += [rng.random((50, 3)) < 0.4, np.array([[5, -2, 9]]), np.array([[3], [1], [3]]),
              np.array([[2 ** 40, 1, 7], [0, 2 ** 40, 7], [2 ** 40, 1, 7]])]
    for a in cases:
        want = np.unique(a, axis=0, return_index=True, return_inverse=True)
        got = space.unique_rows(a, return_index=True, return_inverse=True)
        assert np.array_equal(got[0], want[0])
        assert np.array_equal(got[1], want[1])
        assert np.array_equal(got[2].reshape(-1), want[2].reshape(-1))
        assert np.array_equal(space.unique_rows(a), want[0])
        assert np.array_equal(got[0][got[2]], a)            # the inverse rebuilds the rows


def test_kept_drops_the_least_recently_used_and_forgets_on_request():
    """space.Kept: make() runs only for a key not kept; past its budget the
    least recently used go first; a value over a quarter of the budget is
    returned, not kept; forget_kept empties every store of the process."""
    made = []
    kept = space.Kept(8, weight=lambda v: v)
    get = lambda k, v: kept.get(k, lambda: made.append(k) or v)  # noqa: E731
    assert get("a", 2) == 2 and get("b", 2) == 2 and get("a", 99) == 2
    assert made == ["a", "b"]
    get("c", 2)
    get("d", 2)
    get("e", 2)                        # 10 > 8: "b", the least recently used, goes
    get("a", 2)
    assert made == ["a", "b", "c", "d", "e"]
    get("b", 2)
    assert made[-1] == "b"
    assert get("big", 3) == 3 and get("big", 3) == 3 and made.count("big") == 2   # 3 > 8 / 4: not kept
    space.forget_kept()
    get("a", 2)
    assert made[-1] == "a" and made.count("a") == 2
