"""Slot plans: every variable's incoming edges as a base table plus buckets for the few variables
of high degree (``pgmunfold.compile.wiring.plan_slots``), so a hub does not pad every variable
to its degree. Checked against a per-variable edge list, against the one-table plan (buckets
forced on small graphs), and on stars (trees: BP is exact, with a closed form)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from helpers import brute_force, grid, random_graphs
from hypothesis import assume, given
from hypothesis import strategies as st

import pgmunfold as pu
from pgmunfold.compile import wiring
from pgmunfold.compile.wiring import plan_slots


@contextlib.contextmanager
def _capped(width: int | None) -> Iterator[None]:
    """Cap the base width: every variable of degree above ``width`` goes to a bucket."""
    old = wiring._MAX_BASE_WIDTH
    wiring._MAX_BASE_WIDTH = width
    try:
        yield
    finally:
        wiring._MAX_BASE_WIDTH = old


def _edges_per_variable(edge_var: np.ndarray, num_vars: int) -> list[list[int]]:
    out: list[list[int]] = [[] for _ in range(num_vars)]
    for e, v in enumerate(edge_var):
        out[int(v)].append(e)
    return out


@given(
    st.integers(1, 12),
    st.lists(st.integers(0, 11), max_size=60),
    st.sampled_from([None, 1, 2, 3]),
)
def test_plan_lists_every_edge_once_in_order(num_vars, ev, cap):
    edge_var = np.array([v % num_vars for v in ev], dtype=np.int64)
    E = len(edge_var)
    with _capped(cap):
        plan = plan_slots(edge_var, num_vars)
    want = _edges_per_variable(edge_var, num_vars)
    # rows, read back: the base row, then the variable's bucket row (if any)
    got: list[list[int]] = [[int(e) for e in row if e != E] for row in plan.base]
    flat = [plan.base.reshape(-1)]
    seen: set[int] = set()
    for vs, rows in zip(plan.vars, plan.rows, strict=True):
        assert vs.ndim == 1 and rows.shape[0] == vs.shape[0]
        assert np.all(np.diff(vs) > 0)  # ascending, distinct
        assert not seen & set(vs.tolist())  # a variable in at most one bucket
        seen |= set(vs.tolist())
        over = np.array([len(want[v]) - plan.base.shape[1] for v in vs])
        assert over.min() >= 1 and rows.shape[1] == over.max()
        assert rows.shape[1] <= 2 * over.min()  # padding below twice the overflow
        for v, row in zip(vs, rows, strict=True):
            got[int(v)] += [int(e) for e in row if e != E]
        flat.append(rows.reshape(-1))
    assert got == want
    # a variable whose edges overflow the base has a full base row
    for v in seen:
        assert (plan.base[v] != E).all()
    layout = np.concatenate(flat)
    np.testing.assert_array_equal(layout[plan.edge_slot], np.arange(E))
    assert plan.compact == (not plan.vars)


@given(st.integers(0, 2**31 - 1), st.sampled_from([1.3, 1.6, 2.2]), st.integers(10, 3000))
def test_plan_slots_are_linear_in_the_edges(seed, a, num_vars):
    """Power-law degrees: never more slots than one table, and O(V + E) (the padding of a hub
    is not paid by every variable)."""
    rng = np.random.default_rng(seed)
    degree = np.minimum(rng.zipf(a, size=num_vars), 20 * num_vars)
    edge_var = rng.permutation(np.repeat(np.arange(num_vars), degree))
    plan = plan_slots(edge_var, num_vars)
    total = plan.base.size + sum(r.size for r in plan.rows)
    V, E, D = num_vars, len(edge_var), int(degree.max())
    assert total <= V * D
    assert total <= 2 * (V + 2 * E) + 2 * wiring._BUCKET_COST * (D.bit_length() + 1)
    layout = np.concatenate([plan.base.reshape(-1), *(r.reshape(-1) for r in plan.rows)])
    np.testing.assert_array_equal(layout[plan.edge_slot], np.arange(E))


@given(
    st.integers(1, 12),
    st.lists(st.integers(0, 11), max_size=60),
    st.integers(0, 60),
    st.integers(0, 60),
    st.sampled_from([None, 1, 2]),
)
def test_run_rank_gives_the_plan_of_the_run(num_vars, ev, a, b, cap):
    edge_var = np.array([v % num_vars for v in ev], dtype=np.int64)
    start, stop = sorted((min(a, len(ev)), min(b, len(ev))))
    with _capped(cap):
        whole = plan_slots(edge_var, num_vars)
        rank = wiring.run_rank(whole, edge_var, start, stop)
        run = edge_var[start:stop]
        want = plan_slots(run, num_vars)
        got = plan_slots(run, num_vars, rank=rank)
    assert (rank is None) == (not whole.compact)
    np.testing.assert_array_equal(got.base, want.base)
    np.testing.assert_array_equal(got.edge_slot, want.edge_slot)
    assert [v.tolist() for v in got.vars] == [v.tolist() for v in want.vars]
    assert [r.tolist() for r in got.rows] == [r.tolist() for r in want.rows]


def _binary_layouts() -> dict[str, pu.FactorGraph]:
    """Binary graphs with unary groups before, after and between the pairwise groups (which
    merge into one run of the general path's edges) and a shared pairwise group."""
    rng = np.random.default_rng(0)
    out = {}
    for name, order in {
        "unary first": "UP",
        "pairwise first": "PU",
        "unary between": "PUQ",
        "shared": "PSU",
    }.items():
        fg = pu.FactorGraph()
        x = fg.add_variables("x", 12, 2)
        ring = np.stack([x.ids, np.roll(x.ids, 1)], -1)
        chords = np.array([[0, 6], [3, 9], [1, 7]])
        for c in order:
            if c == "U":
                fg.add_factors(x.ids[:, None], rng.normal(size=(12, 2)), name=f"u{len(fg.groups)}")
            elif c == "S":
                fg.add_factors(chords[:2], rng.normal(size=(2, 2)), name="s")
            else:
                sc = ring if c == "P" else chords
                fg.add_factors(sc, rng.normal(size=(len(sc), 2, 2)), name=f"p{len(fg.groups)}")
        out[name] = fg
    return out


@pytest.mark.parametrize("layout", list(_binary_layouts()))
@pytest.mark.parametrize(("algorithm", "cap"), [("bp", None), ("mf", None), ("bp", 1)])
def test_binary_path_slots_read_off_the_general_plan(layout, algorithm, cap):
    # (cap 1: the general plan has buckets, so the binary path sorts its own edges; binary
    # mean-field takes one table only)
    fg = _binary_layouts()[layout]
    with _capped(cap):
        net = pu.compile(fg, algorithm=algorithm, iterations=3)
        ev = np.concatenate([g.scopes.reshape(-1) for g in fg.groups if g.arity == 2])
        want = plan_slots(ev, len(fg))
    assert net.binary_fast or net.mf_binary
    assert net._wiring.slots.compact == (cap is None)
    np.testing.assert_array_equal(net.bin_slots_t.numpy(), want.base.T.reshape(-1))
    for j, (v, r) in enumerate(zip(want.vars, want.rows, strict=True)):
        np.testing.assert_array_equal(net._buffers[f"bin_bucket_vars_{j}"].numpy(), v)
        np.testing.assert_array_equal(
            net._buffers[f"bin_bucket_slots_{j}"].numpy(), r.T.reshape(-1)
        )
    ref = pu.compile(fg, algorithm=algorithm, iterations=3, fast_path=False)
    torch.testing.assert_close(net().log_marginals, ref().log_marginals)


def test_grid_is_one_table_and_a_star_gets_a_bucket():
    fg, _ = grid(30, k=2)
    w = wiring.build_wiring(fg)
    assert w.slots.compact and w.slots.base.shape == (900, 5)  # unary + 4 neighbours
    n = 5000
    edge_var = np.stack([np.zeros(n, np.int64), np.arange(1, n + 1)], -1).reshape(-1)
    plan = plan_slots(edge_var, n + 1)
    assert not plan.compact and plan.base.shape == (n + 1, 1)
    assert [v.tolist() for v in plan.vars] == [[0]]
    assert plan.rows[0].shape == (1, n - 1)
    assert plan.base.size + plan.rows[0].size == 2 * n  # no padding at all
    # forced one table: the hub pads every leaf to its degree
    assert plan_slots(edge_var, n + 1, buckets=False).base.shape == (n + 1, n)


def _star(n: int, k: int, seed: int, hard: bool = False) -> pu.FactorGraph:
    rng = np.random.default_rng(seed)
    fg = pu.FactorGraph()
    x = fg.add_variables("x", (n + 1,), k)
    fg.add_factors(x.ids.reshape(-1, 1), rng.normal(size=(n + 1, k)), name="unary")
    tabs = rng.normal(size=(n, k, k))
    if hard:
        tabs[rng.random(size=tabs.shape) < 0.3] = -np.inf
        tabs[:, 0, 0] = 0.0  # every table keeps a finite entry, so Z > 0
    pairs = np.stack([np.zeros(n, np.int64), x.ids[1:]], -1)
    fg.add_factors(pairs, tabs, name="spokes")
    return fg


def _star_exact(fg: pu.FactorGraph) -> tuple[np.ndarray, np.ndarray, float]:
    """Closed form on a star: hub marginal (K,), leaf marginals (n, K), log Z."""
    u = fg.groups[0].log_potentials  # (n + 1, K), variable order
    t = fg.groups[1].log_potentials  # (n, K_hub, K_leaf)
    # leaf l's message to the hub: logsumexp over its state of t[l, h, s] + u[l + 1, s]
    to_hub = np.logaddexp.reduce(t + u[1:, None, :], axis=2)  # (n, K)
    hub = u[0] + to_hub.sum(0)
    logz = float(np.logaddexp.reduce(hub))
    p_hub = np.exp(hub - logz)
    # leaf: p(s) = sum_h p(h) exp(t[l, h, s] + u[l, s] - to_hub[l, h])
    # (p(leaf = s | hub = h); a hub state no leaf state allows has p(h) = 0)
    ok = np.isfinite(to_hub)[:, :, None]
    cond = np.exp(t + u[1:, None, :] - np.where(ok, to_hub[:, :, None], 0.0)) * ok
    leaves = np.einsum("h,lhs->ls", p_hub, cond)
    return p_hub, leaves, logz


@pytest.mark.parametrize(("k", "hard"), [(2, False), (3, False), (3, True)])
def test_star_bp_is_exact_without_quadratic_slots(k, hard):
    n = 2000
    fg = _star(n, k, seed=k, hard=hard)
    net = pu.compile(fg, iterations=3, dtype=torch.float64)
    # the hub's 2000 edges sit in one bucket: no (V, D) table of 2001 x 2000 slots
    slot_entries = sum(b.numel() for name, b in net.named_buffers() if "slot" in name)
    assert slot_entries <= 4 * (3 * n + 1)
    # the fast paths bucket their slots too
    assert net.binary_fast == (k == 2 and not hard) and net.pairwise_fast != net.binary_fast
    out = net()
    p_hub, leaves, logz = _star_exact(fg)
    x = out.marginals
    np.testing.assert_allclose(x[("x", 0)].detach().numpy(), p_hub, atol=1e-10)
    got = torch.stack([x[("x", i)] for i in range(1, n + 1)]).detach().numpy()
    np.testing.assert_allclose(got, leaves, atol=1e-10)
    assert float(out.log_partition) == pytest.approx(logz, abs=1e-8)


def test_star_sequential_and_mean_field():
    fg = _star(300, 3, seed=5)
    bp = pu.compile(fg, iterations=3, schedule="sequential", dtype=torch.float64)()
    p_hub, leaves, logz = _star_exact(fg)
    np.testing.assert_allclose(bp.marginals[("x", 0)].detach().numpy(), p_hub, atol=1e-10)
    got = torch.stack([bp.marginals[("x", i)] for i in range(1, 301)]).detach().numpy()
    np.testing.assert_allclose(got, leaves, atol=1e-10)
    assert float(bp.log_partition) == pytest.approx(logz, abs=1e-8)
    # mean-field: the same updates with and without buckets (one table forced off)
    mf = pu.compile(fg, algorithm="mf", iterations=5, damping=0.3, dtype=torch.float64)
    assert mf.mf_fast and mf._pw_buckets_n == 1
    one = pu.compile(
        fg, algorithm="mf", iterations=5, damping=0.3, dtype=torch.float64, fast_path=False
    )
    assert one._num_buckets == mf._num_buckets == 1
    ref = _mf_reference(fg, iterations=5, damping=0.3)
    torch.testing.assert_close(mf().probs, ref, atol=1e-12, rtol=0)
    assert float(mf().log_partition) <= logz + 1e-9


def _mf_reference(fg: pu.FactorGraph, iterations: int, damping: float) -> torch.Tensor:
    """Parallel mean-field on the star, written out: hub and leaves from the old marginals."""
    u = torch.as_tensor(fg.groups[0].log_potentials)
    t = torch.as_tensor(fg.groups[1].log_potentials)
    q = torch.full_like(u, 1.0 / u.shape[1])
    for _ in range(iterations):
        hub = u[0] + torch.einsum("lhs,ls->h", t, q[1:])
        leaf = u[1:] + torch.einsum("lhs,h->ls", t, q[0])
        new = torch.softmax(torch.cat([hub[None], leaf]), dim=1)
        q = (1 - damping) * new + damping * q
    return q


@given(random_graphs(max_vars=7, max_factors=6, tree=True), st.sampled_from([1, 2]))
def test_bp_with_forced_buckets_exact_on_trees(fg, cap):
    logz, marg, _, _ = brute_force(fg)
    assume(np.isfinite(logz))
    for schedule in ("parallel", "sequential"):
        with _capped(cap):
            net = pu.compile(fg, iterations=len(fg) + 2, schedule=schedule, dtype=torch.float64)
        out = net()
        for name, m in marg.items():
            np.testing.assert_allclose(out.marginals[name].detach().numpy(), m, atol=1e-8)
        assert float(out.log_partition) == pytest.approx(logz, abs=1e-8)


@given(
    random_graphs(max_vars=6, max_factors=8),
    st.sampled_from([1, 2]),
    st.sampled_from(["bp", "mf"]),
    st.sampled_from(["parallel", "sequential"]),
    st.sampled_from([None, True, False]),
)
def test_forced_buckets_equal_one_table(fg, cap, algorithm, schedule, exact):
    """Loopy graphs, hard zeros, both cavity forms: buckets change the layout, not the result."""
    kw = dict(algorithm=algorithm, schedule=schedule, iterations=6, damping=0.25)
    kw.update(dtype=torch.float64, fast_path=False)
    if algorithm == "bp":
        kw["exact_cavity"] = exact
    ref = pu.compile(fg, **kw)
    with _capped(cap):
        net = pu.compile(fg, **kw)
    assume(net._num_buckets > 0)
    assert ref._num_buckets == 0
    a, b = net(), ref()
    # mean-field that ends infeasible (bound -inf: every state of some variable meets a hard
    # zero with positive probability) has marginals decided by sentinel rounding, which the
    # layout's summation order changes (docs/concepts.md, "Hard zeros")
    assume(algorithm == "bp" or bool(torch.isfinite(b.log_partition).all()))
    finite = torch.isfinite(b.log_marginals)
    assert torch.equal(finite, torch.isfinite(a.log_marginals))
    torch.testing.assert_close(a.log_marginals[finite], b.log_marginals[finite], atol=1e-9, rtol=0)
    torch.testing.assert_close(a.log_partition, b.log_partition, atol=1e-9, rtol=0)


def test_gradcheck_through_buckets():
    fg, x = grid(2, k=3, coupling=0.5, seed=6, hard=True)
    soft, _ = grid(2, k=3, coupling=0.5, seed=6)  # (MF's bound is -inf with these hard zeros)
    with _capped(1):
        net = pu.compile(fg, iterations=3, damping=0.2, dtype=torch.float64)
        mf = pu.compile(soft, algorithm="mf", iterations=3, damping=0.2, dtype=torch.float64)
    assert net._num_buckets > 0 and net.exact_cavity
    u = torch.randn(2, 2, 2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda u: net(unary={x: u}).log_partition, (u,))
    assert torch.autograd.gradcheck(lambda u: mf(unary={x: u}).log_partition, (u,))


def test_triton_backend_refuses_a_hub():
    pytest.importorskip("triton")
    with pytest.raises(ValueError, match=r"far above the rest.*pairwise degree, 500"):
        pu.compile(_star(500, 2, seed=0), backend="triton")


def test_hub_in_float32_keeps_table_precision():
    """A hub's summed messages reach -7e4 nats, where float32 resolves 0.008: cavities are
    shifted to their largest state before the tables are added (the leaves were 2e-3 off)."""
    fg = _star(100_000, 2, seed=11)
    out = pu.compile(fg, iterations=40, damping=0.5)()
    p_hub, leaves, _ = _star_exact(fg)
    got = out.probs.detach().double().numpy()
    np.testing.assert_allclose(got[0], p_hub, atol=1e-6)
    np.testing.assert_allclose(got[1:], leaves, atol=2e-6)


@pytest.mark.parametrize("algorithm", ["bp", "mf"])
def test_forced_buckets_with_a_batch_and_evidence(algorithm):
    fg, x = grid(3, k=3, seed=2, hard=algorithm == "bp")
    kw = dict(algorithm=algorithm, iterations=5, damping=0.1, dtype=torch.float64)
    ref = pu.compile(fg, fast_path=False, **kw)
    with _capped(1):
        net = pu.compile(fg, **kw)
    assert net._num_buckets == 2  # overflows of 1 and of 2-3 edges
    u = torch.randn(4, 3, 3, 3, dtype=torch.float64)
    ev = {("x", 0, 0): torch.tensor([0, 1, 2, 0])}
    a, b = net(unary={x: u}, evidence=ev), ref(unary={x: u}, evidence=ev)
    torch.testing.assert_close(a.log_marginals, b.log_marginals, atol=1e-12, rtol=0)
    torch.testing.assert_close(a.log_partition, b.log_partition, atol=1e-12, rtol=0)


@pytest.mark.parametrize(
    ("algorithm", "k", "hard", "B"),
    [
        ("bp", 2, False, 1),  # binary log-odds path: the no-grad sweep on 1-d tensors
        ("bp", 2, False, 3),
        ("bp", 3, False, 2),  # K-state path, cavities by subtraction
        ("bp", 3, True, 1),  # K-state path, exact cavities (hard zeros)
        ("bp", 2, True, 2),
        ("mf", 3, False, 2),  # state-major mean-field
        ("mf", 2, False, 1),  # (binary mean-field needs one table: the state-major path)
    ],
)
def test_fast_paths_with_forced_buckets_equal_the_general_path(algorithm, k, hard, B):
    """The fast paths' buckets: no-grad forwards (reused buffers) and autograd ones, values
    and gradients."""
    fg, x = grid(4, k=k, seed=3, hard=hard)
    kw = dict(algorithm=algorithm, iterations=6, damping=0.3, dtype=torch.float64)
    ref = pu.compile(fg, fast_path=False, **kw)
    with _capped(1):
        net = pu.compile(fg, **kw)
    # overflows of 1, 2 and 3 edges: three buckets
    if algorithm == "mf":
        assert net.mf_fast and not net.mf_binary and net._pw_buckets_n == 3
    elif k == 2 and not hard:
        assert net.binary_fast and net._bin_buckets == 3
    else:
        assert net.pairwise_fast and net._pw_buckets_n == 3
    u = torch.randn(B, 4, 4, k, dtype=torch.float64)
    with torch.no_grad():
        a, b = net(unary={x: u}), ref(unary={x: u})
    torch.testing.assert_close(a.log_marginals, b.log_marginals, atol=1e-12, rtol=0)
    torch.testing.assert_close(a.log_partition, b.log_partition, atol=1e-12, rtol=0)
    ua, ub = u.clone().requires_grad_(), u.clone().requires_grad_()
    a, b = net(unary={x: ua}), ref(unary={x: ub})
    torch.testing.assert_close(a.log_marginals, b.log_marginals, atol=1e-12, rtol=0)
    (a.log_partition.sum() + a.probs[..., 1].sum()).backward()
    (b.log_partition.sum() + b.probs[..., 1].sum()).backward()
    torch.testing.assert_close(ua.grad, ub.grad, atol=1e-10, rtol=0)
    for (name, p), q in zip(net.named_parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-10, rtol=0, msg=name)
