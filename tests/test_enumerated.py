"""The enumerated contraction (compile/enumerate.py, infer/enumerated.py): every factor
configuration as a flat entry, all groups' messages in a few ops. Its twins: a per-row Python
enumeration of the plan, the per-group kernel (:func:`bp_factor_messages`) and the per-merge
network (``contraction="logsumexp"``); exactness against brute force on trees."""

from __future__ import annotations

import itertools
from unittest import mock

import numpy as np
import pytest
import torch
from helpers import (
    assert_same_beliefs,
    assert_same_values_and_grads,
    brute_force,
    distinct_copies,
    grid,
    random_graphs,
)
from hypothesis import assume, given
from hypothesis import strategies as st

import pgmunfold as pu
from pgmunfold import network
from pgmunfold.compile import enumerate as enumerate_module
from pgmunfold.compile import wiring
from pgmunfold.compile.enumerate import (
    bucketed_size,
    enumeration_size,
    plan_buckets,
    plan_enumeration,
    plan_layout,
    plan_row_buckets,
)
from pgmunfold.compile.wiring import GroupWiring
from pgmunfold.infer.bp import bp_factor_messages
from pgmunfold.infer.enumerated import (
    bucketed_expectations,
    bucketed_messages,
    enumerated_expectations,
    enumerated_messages,
    enumerated_tables,
)
from pgmunfold.infer.ops import NEG, contract_expectation, log_normalize
from pgmunfold.infer.workspace import Workspace


@st.composite
def group_lists(draw):
    """Groups of arity 1-4 and cardinalities 1-4 laid out one after the other, with ``K``."""
    groups, start = [], 0
    for i in range(draw(st.integers(1, 4))):
        arity = draw(st.integers(1, 4))
        cards = tuple(draw(st.integers(1, 4)) for _ in range(arity))
        n = draw(st.integers(1, 3))
        shared = draw(st.booleans())
        groups.append(GroupWiring(f"g{i}", cards, n, shared, start, start + n * arity))
        start += n * arity
    K = max(max(g.cards) for g in groups) + draw(st.integers(0, 1))
    return groups, start, K


def _rows_by_enumeration(groups, E, K):
    """Per message row ``s * E + e``: the sorted list of (table entry, sorted other cavity
    indices) of its configurations, by plain Python loops over every factor configuration."""
    rows: dict[int, list] = {r: [] for r in range(K * E)}
    offset = 0
    for g in groups:
        for f in range(g.num_factors):
            edges = [g.edge_start + f * g.arity + j for j in range(g.arity)]
            for p, x in enumerate(itertools.product(*(range(k) for k in g.cards))):
                entry = offset + f * int(np.prod(g.cards)) + p
                for j in range(g.arity):
                    others = sorted(edges[i] * K + x[i] for i in range(g.arity) if i != j)
                    rows[x[j] * E + edges[j]].append((entry, others))
        offset += g.num_factors * int(np.prod(g.cards))
    return rows, offset


@given(group_lists())
def test_plan_lists_every_configuration_of_every_row(spec):
    groups, E, K = spec
    plan = plan_enumeration(groups, E, K)
    rows, C = _rows_by_enumeration(groups, E, K)
    assert plan.num_configs == C
    assert enumeration_size(groups, E, K) == (plan.padded, plan.real)
    _, M, R = plan.others.shape
    assert R == K * E and plan.configs.shape == (M, R)
    for r in range(R):
        got = []
        for m in range(M):
            entry = int(plan.configs[m, r])
            others = sorted(int(i) for i in plan.others[:, m, r] if i != E * K)
            if entry == C:  # padding: a hard zero, no cavity
                assert not others
                continue
            got.append((entry, others))
        assert sorted(got) == sorted(rows[r]), r


def test_plan_rejects_groups_that_do_not_cover_the_edges():
    g = GroupWiring("a", (2, 2), 2, False, 0, 4)
    with pytest.raises(ValueError, match="covering every edge once"):
        plan_enumeration([g], 5, 2)
    with pytest.raises(ValueError, match="covering every edge once"):
        plan_buckets([g], 5, 2)


def _valid_states(groups, E, K):
    """``(E, K)``: which padded states exist at each edge (below its position's cardinality)."""
    valid = torch.zeros(E, K, dtype=torch.bool)
    for g in groups:
        for j, k in enumerate(g.cards):
            valid[g.edge_start + j : g.edge_stop : g.arity, :k] = True
    return valid


def _random_tables(groups, gen, hard):
    """One float64 N(0, 1) table per factor (one per group if shared); with ``hard``, about
    30 % of the entries the sentinel."""
    tables = []
    for g in groups:
        t = torch.randn(1 if g.shared else g.num_factors, *g.cards, generator=gen).double()
        if hard:
            t = torch.where(torch.rand(t.shape, generator=gen) < 0.3, NEG, t)
        tables.append(t)
    return tables


def _feasible_edges(groups, E, K, tables, cav):
    """``(B, E)``: the edges with some configuration of their factor that no table entry or
    other cavity rules out (elsewhere every state of the message is a sum of sentinels)."""
    rows, _ = _rows_by_enumeration(groups, E, K)
    flat_t = torch.cat(
        [t.expand(g.num_factors, *g.cards).reshape(-1) for g, t in zip(groups, tables, strict=True)]
    )
    flat_c = cav.reshape(cav.shape[0], E * K)
    feasible = torch.zeros(cav.shape[0], E, dtype=torch.bool)
    for r, configs in rows.items():
        for entry, others in configs:
            if flat_t[entry] > NEG / 2:
                feasible[:, r % E] |= (flat_c[:, others] > NEG / 2).all(dim=1)
    return feasible


@given(
    group_lists(),
    st.sampled_from(["sum", "max"]),
    st.integers(1, 3),
    st.booleans(),
    st.integers(0, 2**31 - 1),
)
def test_messages_equal_the_per_group_kernel(spec, semiring, B, hard, seed):
    groups, E, K = spec
    gen = torch.Generator().manual_seed(seed)
    valid = _valid_states(groups, E, K)
    cav = torch.randn(B, E, K, dtype=torch.float64, generator=gen)
    if hard:  # hard-zero cavity entries (a state ruled out by the other factors)
        cav = torch.where(torch.rand(B, E, K, generator=gen) < 0.25, NEG, cav)
    cav = torch.where(valid, cav, NEG)  # states beyond a variable's cardinality
    tables = _random_tables(groups, gen, hard)
    plan = plan_enumeration(groups, E, K)
    entries = enumerated_tables(
        tables, [g.num_factors for g in groups], torch.from_numpy(plan.configs)
    )
    got = enumerated_messages(cav, entries, torch.from_numpy(plan.others), semiring)
    assert torch.equal(got.amax(dim=2), torch.zeros(B, E, dtype=got.dtype))
    got = log_normalize(got)  # (the twin's messages sum to one)
    ref = bp_factor_messages(cav, tables, groups, semiring)
    assert got.shape == (B, E, K) and got.is_contiguous()
    # compared where some configuration is possible (elsewhere every state is a sum of
    # sentinels, which no order of summation makes meaningful: docs/concepts.md)
    feasible = _feasible_edges(groups, E, K, tables, cav)
    real = ref > NEG / 2  # hard zeros agree as hard zeros; the rest to rounding
    assert torch.equal(real[feasible], (got > NEG / 2)[feasible])
    both = real & feasible.unsqueeze(2)
    torch.testing.assert_close(got[both], ref[both], atol=1e-10, rtol=0)


def _mean_field_inputs(groups, E, K, B, hard, gen):
    """Random marginals ``(B, E, K)`` (zero beyond each cardinality; every edge its own
    variable, so the plan's cavity indices address them), tables, the plan and its entries
    (padding 0)."""
    logits = torch.randn(B, E, K, dtype=torch.float64, generator=gen)
    q = torch.softmax(torch.where(_valid_states(groups, E, K), logits, -torch.inf), dim=2)
    tables = _random_tables(groups, gen, hard)
    plan = plan_enumeration(groups, E, K)
    counts = [g.num_factors for g in groups]
    return q, tables, plan, enumerated_tables(tables, counts, torch.from_numpy(plan.configs), 0.0)


def _bucket_parts(entries, rb):
    """The plan's entries ``(M, K * E)`` at each row bucket's configurations ``(M_b, R_b)``."""
    flat = entries.reshape(-1)
    return [flat[torch.from_numpy(x.reshape(-1))].view(x.shape) for x in rb.entries]


OVERHEADS = st.sampled_from([0, 4, 4096, 10**9])  # every extent its own bucket .. one bucket


@given(group_lists(), OVERHEADS)
def test_row_buckets_keep_every_live_row_and_drop_only_padding(spec, overhead):
    """Every row with a configuration is in exactly one bucket, at its own position of
    ``row_of``; the rest point past the buckets' rows. A bucket's arrays are the plan's at its
    rows, and what it drops of the plan's extent is padding only. With no overhead allowed,
    every bucket is one extent, without any padding."""
    groups, E, K = spec
    plan = plan_enumeration(groups, E, K)
    rb = plan_row_buckets(plan, overhead)
    C, pad = plan.num_configs, E * K
    live = np.flatnonzero(plan.configs[0] != C)
    rows = np.concatenate(rb.rows)
    assert np.array_equal(np.sort(rows), live)  # each live row once
    assert np.array_equal(rb.row_of[rows], np.arange(len(rows)))
    assert (np.delete(rb.row_of, rows) == len(rows)).all()
    for r, o, cfg, ent in zip(rb.rows, rb.others, rb.configs, rb.entries, strict=True):
        a, m, n = o.shape
        assert n == len(r) and ent.shape == (m, n)
        assert np.array_equal(o, plan.others[:a, :m][:, :, r])
        assert np.array_equal(cfg, plan.configs[:m, r])
        assert np.array_equal(ent, np.arange(m)[:, None] * K * E + r)
        assert (plan.others[a:][:, :, r] == pad).all() and (
            plan.others[:, m:][:, :, r] == pad
        ).all()
        assert (plan.configs[m:, r] == C).all()
        if overhead == 0:
            assert (plan.configs[m - 1, r] != C).all()  # no padding configuration
            assert a == 0 or (o[a - 1, 0] != pad).all()  # nor padding other edge
    if overhead >= 10**9:
        assert len(rb.rows) == 1
    assert bucketed_size(groups, overhead) == rb.gathered  # (the estimate "auto" reads)
    # what the network builds, from the groups without the padded plan: the same buckets
    direct = plan_buckets(groups, E, K, overhead)
    assert np.array_equal(direct.row_of, rb.row_of)
    for name in ("rows", "others", "configs"):
        got, want = getattr(direct, name), getattr(rb, name)
        assert len(got) == len(want)
        for x, y in zip(got, want, strict=True):
            assert x.dtype == np.int64 and x.shape == y.shape and np.array_equal(x, y), name


@given(
    group_lists(),
    st.sampled_from(["sum", "max"]),
    st.integers(1, 3),
    st.booleans(),
    OVERHEADS,
    st.integers(0, 2**31 - 1),
)
def test_bucketed_messages_equal_the_plan_of_every_row(spec, semiring, B, hard, overhead, seed):
    """The functional step's kernel, over the live rows in buckets, against
    :func:`enumerated_messages` over the plan's every row: values, and gradients of a random
    linear function of the messages with respect to the cavities and the table entries."""
    groups, E, K = spec
    gen = torch.Generator().manual_seed(seed)
    cav = torch.randn(B, E, K, dtype=torch.float64, generator=gen)
    if hard:
        cav = torch.where(torch.rand(B, E, K, generator=gen) < 0.25, NEG, cav)
    cav = torch.where(_valid_states(groups, E, K), cav, NEG)
    plan = plan_enumeration(groups, E, K)
    tables = _random_tables(groups, gen, hard)
    entries = enumerated_tables(
        tables, [g.num_factors for g in groups], torch.from_numpy(plan.configs)
    )
    rb = plan_row_buckets(plan, overhead)
    feasible = _feasible_edges(groups, E, K, tables, cav).unsqueeze(2)
    weight = torch.randn(B, E, K, dtype=torch.float64, generator=gen)
    results = []
    for bucketed in (False, True):
        c = cav.clone().requires_grad_()
        z = entries.clone().requires_grad_()
        if bucketed:
            parts = _bucket_parts(z, rb)
            others = [torch.from_numpy(o) for o in rb.others]
            out = bucketed_messages(c, parts, others, torch.from_numpy(rb.row_of), semiring)
        else:
            out = enumerated_messages(c, z, torch.from_numpy(plan.others), semiring)
        # (at the feasible edges: elsewhere, and at hard zeros, the values and gradients are
        # sums of sentinel-sized terms, which no order of summation makes meaningful)
        (torch.where(feasible & (out > NEG / 2), out, 0.0) * weight).sum().backward()
        results.append((out, c.grad, z.grad))
    (a, ga, za), (b, gb, zb) = results
    feasible = feasible.expand(B, E, K)
    assert torch.equal((a <= NEG / 2)[feasible], (b <= NEG / 2)[feasible])
    torch.testing.assert_close(b[feasible], a[feasible], atol=1e-12, rtol=0)
    torch.testing.assert_close(gb, ga, atol=1e-12, rtol=0)
    real = torch.from_numpy(plan.configs != plan.num_configs)  # (padding reads a constant)
    torch.testing.assert_close(zb[real], za[real], atol=1e-12, rtol=0)


@given(group_lists(), st.integers(1, 3), st.booleans(), OVERHEADS, st.integers(0, 2**31 - 1))
def test_bucketed_expectations_equal_the_plan_of_every_row(spec, B, hard, overhead, seed):
    """Mean-field's kernel over the live rows in buckets against
    :func:`enumerated_expectations` over the plan's every row (its twin), with and without
    autograd (the in-place buffers): values, and gradients with respect to the marginals and
    the table entries."""
    groups, E, K = spec
    gen = torch.Generator().manual_seed(seed)
    q, _, plan, entries = _mean_field_inputs(groups, E, K, B, hard, gen)
    rb = plan_row_buckets(plan, overhead)
    others = [torch.from_numpy(o) for o in rb.others]
    row_of = torch.from_numpy(rb.row_of)
    weight = torch.randn(B, E, K, dtype=torch.float64, generator=gen)
    results = []
    for bucketed in (False, True):
        p = q.clone().requires_grad_()
        z = entries.clone().requires_grad_()
        if bucketed:
            parts = _bucket_parts(z, rb)
            out = bucketed_expectations(p, parts, others, row_of)
            with torch.no_grad():
                ws = Workspace.for_forward()
                in_place = bucketed_expectations(q, [x.detach() for x in parts], others, row_of, ws)
            torch.testing.assert_close(in_place, out.detach(), atol=1e-12, rtol=0)
        else:
            out = enumerated_expectations(p, z, torch.from_numpy(plan.others))
        (out * weight).sum().backward()
        results.append((out, p.grad, z.grad))
    (a, ga, za), (b, gb, zb) = results
    torch.testing.assert_close(b, a, atol=1e-9 if hard else 1e-12, rtol=1e-12)
    torch.testing.assert_close(gb, ga, atol=1e-9 if hard else 1e-12, rtol=1e-12)
    real = torch.from_numpy(plan.configs != plan.num_configs)  # (padding reads a constant)
    torch.testing.assert_close(zb[real], za[real], atol=1e-12, rtol=0)


@given(group_lists(), st.integers(1, 3), st.booleans(), st.integers(0, 2**31 - 1))
def test_expectations_equal_the_per_group_contraction(spec, B, hard, seed):
    """Mean-field's enumerated expectations against the per-group einsum
    (:func:`contract_expectation`): random marginals (zero beyond each cardinality), tables
    with and without hard zeros (the sentinel), shared tables, arity 1-4."""
    groups, E, K = spec
    gen = torch.Generator().manual_seed(seed)
    q, tables, plan, entries = _mean_field_inputs(groups, E, K, B, hard, gen)
    # (every edge its own variable: the plan's cavity indices address these marginals)
    got = enumerated_expectations(q, entries, torch.from_numpy(plan.others))
    parts = []
    for g, t in zip(groups, tables, strict=True):
        block = q[:, g.edge_start : g.edge_stop].reshape(B, g.num_factors, g.arity, K)
        ms = contract_expectation(t, [block[:, :, j, :k] for j, k in enumerate(g.cards)])
        ms = [torch.nn.functional.pad(m, (0, K - m.shape[-1])) for m in ms]
        parts.append(torch.stack(ms, dim=2).reshape(B, g.num_factors * g.arity, K))
    ref = torch.cat(parts, dim=1)
    assert got.shape == (B, E, K) and got.is_contiguous()
    valid = _valid_states(groups, E, K)
    assert torch.equal(got[:, ~valid], torch.zeros_like(got[:, ~valid]))
    torch.testing.assert_close(got, ref, atol=1e-10, rtol=1e-12)


@given(
    random_graphs(max_vars=6, max_factors=10),
    st.sampled_from(["sum", "max"]),
    st.booleans(),
    st.booleans(),
    st.integers(1, 3),
)
def test_network_equals_the_per_merge_contraction(fg, semiring, exact, untie, B):
    # (an infeasible model, every configuration a hard zero, leaves BP in the sentinel regime,
    # where the two contractions' orders of summation give different garbage)
    assume(np.isfinite(brute_force(fg)[0]))
    nets = [
        pu.compile(
            fg,
            contraction=c,
            iterations=4,
            damping=0.4,
            semiring=semiring,
            exact_cavity=True if exact else None,
            untie=untie,
            dtype=torch.float64,
            fast_path=False,
        )
        for c in ("enumerate", "logsumexp")
    ]
    assume(nets[0].enumerated)  # (a graph without factors has nothing to contract)
    assert not nets[1].enumerated
    if untie:  # distinct tables per iteration: the entries are gathered per copy
        distinct_copies(*nets)
    gen = torch.Generator().manual_seed(B)
    u = torch.randn(B, nets[0].num_variables, nets[0].max_card, dtype=torch.float64, generator=gen)
    a, b = (net(unary=u) for net in nets)
    assert_same_beliefs(a, b)
    torch.testing.assert_close(a.residual, b.residual, atol=1e-9, rtol=0)


@given(
    random_graphs(max_vars=6, max_factors=10),
    st.sampled_from([("bp", "sum"), ("bp", "max"), ("mf", "sum")]),
    st.booleans(),
)
def test_row_buckets_leave_the_network_unchanged(fg, algorithm_semiring, exact):
    """The functional step (autograd) with every row extent its own bucket against one bucket
    of all live rows: the same marginals, ``log Z`` (mean-field: its bound) and gradients
    (untied, distinct copies)."""
    assume(np.isfinite(brute_force(fg)[0]))
    algorithm, semiring = algorithm_semiring
    nets = []
    for overhead in (0, 10**9):
        with mock.patch.object(network, "BUCKET_OVERHEAD", overhead):
            nets.append(
                pu.compile(
                    fg,
                    algorithm=algorithm,
                    contraction="enumerate",
                    iterations=3,
                    damping=0.3,
                    semiring=semiring,
                    exact_cavity=(True if exact else None) if algorithm == "bp" else None,
                    untie=True,
                    dtype=torch.float64,
                    fast_path=False,
                )
            )
    assume(nets[0].enumerated)
    assert len(nets[1]._enum_buckets) == 1
    distinct_copies(*nets)
    u0 = torch.randn(2, nets[0].num_variables, nets[0].max_card, dtype=torch.float64)
    outs = [net(unary=u0) for net in nets]
    assume(all(bool(torch.isfinite(o.log_partition).all()) for o in outs))
    assert_same_values_and_grads(nets, u0, state=0)


@given(
    random_graphs(max_vars=6, max_factors=10),
    st.booleans(),
    st.integers(1, 3),
    st.sampled_from(["parallel", "sequential"]),
    OVERHEADS,
)
def test_mean_field_network_equals_the_per_merge_contraction(fg, untie, B, schedule, overhead):
    """Mean-field on the general path (parallel, or one colour class at a time): the enumerated
    expectations against the per-merge einsums (``contraction="logsumexp"``), three damped
    iterations in float64: marginals, the mean-field bound and the residual (untied copies made
    distinct, batches, mixed cardinalities and arities, every split into row buckets); and its
    no-grad loop (in place, reused buffers) against its autograd one."""
    with mock.patch.object(network, "BUCKET_OVERHEAD", overhead):
        nets = [
            pu.compile(
                fg,
                algorithm="mf",
                schedule=schedule,
                contraction=c,
                iterations=3,
                damping=0.4,
                untie=untie,
                dtype=torch.float64,
                fast_path=False,
            )
            for c in ("enumerate", "logsumexp")
        ]
    assume(nets[0].enumerated)
    assert not nets[1].enumerated
    if untie:
        distinct_copies(*nets)
    gen = torch.Generator().manual_seed(B)
    u = torch.randn(B, nets[0].num_variables, nets[0].max_card, dtype=torch.float64, generator=gen)
    a, b = (net(unary=u) for net in nets)
    with torch.no_grad():  # the same ops, in place into reused buffers
        c = nets[0](unary=u)
    torch.testing.assert_close(c.probs, a.probs, atol=1e-12, rtol=0)
    exists = torch.arange(nets[0].max_card) < nets[0].cards[:, None]
    if schedule == "parallel":  # (the flat layout: no position for them)
        assert not bool(a.probs.detach()[:, ~exists].any())
    if not bool(torch.isfinite(b.log_partition).all()):
        # mass on a hard zero: the sentinel regime, where which state wins depends on the
        # order of summation and, in the padded per-merge path, the padding can
        # (test_flat_mean_field_keeps_the_mass_on_states_that_exist)
        return
    torch.testing.assert_close(a.probs, b.probs, atol=1e-9, rtol=0)
    torch.testing.assert_close(a.residual, b.residual, atol=1e-9, rtol=0)
    torch.testing.assert_close(a.log_partition, b.log_partition)


@given(
    random_graphs(max_vars=6, max_factors=8),
    st.booleans(),
    st.booleans(),
    st.sampled_from(["bp", "mf"]),
)
def test_tables_and_initial_messages_by_one_gather(fg, untie, shared_unary, algorithm):
    """The network's flat parameter gather (``_FlatThetas``, ``_enumerated_index``)
    equals the per-group twins: :func:`enumerated_tables` of the copy used at every iteration
    (untied copies, shared tables, mixed cardinalities, hard zeros; padding a hard zero for
    BP, 0 for mean-field), and ``_initial_messages`` (BP)."""
    if shared_unary:  # a shared unary table among the groups
        v, k = fg.variables[0], int(fg.cardinalities[0])
        fg.add_factors([[v], [v]], np.linspace(-1, 1, k), name="shared_u")
    net = pu.compile(
        fg,
        iterations=4,
        untie=untie,
        contraction="enumerate",
        fast_path=False,
        algorithm=algorithm,
    )
    assume(net.enumerated)
    net = net.double()
    if untie:
        distinct_copies(net)
    thetas = net._thetas()
    flat = thetas.flat
    # the flat copy's slices are the parameters raised to the sentinel
    for p, th in zip(net._potentials(), thetas, strict=True):
        assert torch.equal(th, p.clamp_min(NEG))
    counts = [g.num_factors for g in net._mgroups]
    for t in range(net.iterations):
        got = torch.cat([x.reshape(-1) for x in net._enumerated_entries(flat, t)])
        pad = 0.0 if algorithm == "mf" else NEG
        ref = enumerated_tables(net._at(thetas, t), counts, net.enum_configs, pad)
        assert torch.equal(got, ref)
    if algorithm == "mf":
        return
    init = net._enumerated_index(0, "enum_init")
    u = torch.zeros(2, net.num_variables, net.max_card, dtype=torch.float64)
    ref = net._initial_messages(u, net._at(thetas, 0))
    assert torch.equal(net._enumerated_initial(flat, init, 2), ref)


def _loss_and_grads(net, u):
    """A forward under autograd, and the gradients of a loss of its marginals (and, for BP,
    ``log Z``) with respect to the unaries and every parameter."""
    u = u.clone().requires_grad_(True)
    out = net(unary=u)
    w = torch.linspace(-1, 1, out.probs.numel(), dtype=u.dtype).view(out.probs.shape)
    loss = (out.probs * w).sum()
    if net.semiring == "sum" and bool(torch.isfinite(out.log_partition).all()):
        loss = loss + out.log_partition.sum()
    params = [u, *net.parameters()]
    return out, torch.autograd.grad(loss, params, allow_unused=True)


def _sweep_and_twin(net, u):
    """The no-grad forward (:class:`EnumeratedSweep`), the flat functional step's forward under
    autograd (:class:`FlatStep`) and the padded ``(B, E, K)`` functional step's (their twin)
    agree: marginals, residual, factor beliefs, and where no two states tie (max-product
    decodes a tie by rounding) the decode and its score; the two under autograd also in their
    gradients."""
    with torch.no_grad():
        a = net(unary=u)
    b, grads = _loss_and_grads(net, u)
    saved = net._sweep_buckets
    net._sweep_buckets = -1  # (no flat loop: the padded functional step)
    try:
        c, twin_grads = _loss_and_grads(net, u)
    finally:
        net._sweep_buckets = saved
    _same_forward(a, b, net.semiring)
    _same_forward(c, b, net.semiring)
    if net.semiring == "sum" or bool(torch.equal(b.map_states, c.map_states)):
        for g, h in zip(grads, twin_grads, strict=True):
            assert (g is None) == (h is None)
            if g is not None:
                torch.testing.assert_close(g, h, atol=1e-9, rtol=1e-9)


def _same_forward(a, b, semiring):
    """Two forwards agree (``b`` under autograd): marginals, residual, factor beliefs, and
    where no two states tie the decode and its score."""
    finite = b.log_marginals > -1e15  # (sentinel sums depend on the order of summation)
    assert torch.equal(finite, a.log_marginals > -1e15)
    lm = b.log_marginals.detach()
    torch.testing.assert_close(a.log_marginals[finite], lm[finite], atol=1e-12, rtol=0)
    torch.testing.assert_close(a.residual, b.residual.detach(), atol=1e-12, rtol=0)
    for k, v in b.factor_log_beliefs.items():
        torch.testing.assert_close(a.factor_log_beliefs[k], v.detach(), atol=1e-12, rtol=0)
    top2 = lm.topk(min(2, lm.shape[-1]), dim=-1).values
    if semiring == "sum" or bool((top2[..., 0] - top2[..., -1] > 1e-6).all()):
        torch.testing.assert_close(a.map_states, b.map_states)
        torch.testing.assert_close(a.log_partition, b.log_partition.detach(), atol=1e-12, rtol=0)


def _compile_planned(fg, buckets: bool, overhead: int, slack: float, **kw):
    """``pu.compile(fg, fast_path=False, **kw)`` in float64 with the plans of a test: slot
    plans of base width 1 (``buckets``), the row buckets' ``overhead``, the layout's
    ``slack``."""
    saved = wiring._MAX_BASE_WIDTH
    wiring._MAX_BASE_WIDTH = 1 if buckets else None
    try:
        with (
            mock.patch.object(network, "BUCKET_OVERHEAD", overhead),
            mock.patch.object(enumerate_module, "LAYOUT_SLACK", slack),
        ):
            return pu.compile(fg, fast_path=False, **kw).double()
    finally:
        wiring._MAX_BASE_WIDTH = saved


@given(
    random_graphs(max_vars=7, max_factors=10),
    st.sampled_from(["sum", "max"]),
    st.sampled_from([0.0, 0.4]),
    st.booleans(),
    st.integers(1, 3),
    st.booleans(),
    OVERHEADS,
    st.sampled_from([1.0, 10.0]),
)
def test_no_grad_sweep_equals_the_functional_step(
    fg, semiring, damping, untie, B, buckets, overhead, slack
):
    """The state-major no-grad loop against the functional step it replaces (its twin):
    random arities 1-3, cardinalities 1-4, cycles, hard zeros (exact cavities: prefix and
    suffix sums), untied copies, batches; ``buckets``: slot plans of base width 1 (every
    further edge in buckets; with hard zeros, the functional step stays); ``overhead``: from
    every row extent its own row bucket to one bucket; ``slack``: the layout of the states
    that exist (1.0, unless every cardinality is the same) or padded (10.0)."""
    # (an infeasible model leaves BP in the sentinel regime, where orders of summation differ)
    assume(np.isfinite(brute_force(fg)[0]))
    kw = dict(iterations=5, damping=damping, semiring=semiring, untie=untie)
    net = _compile_planned(fg, buckets, overhead, slack, **kw)
    assume(net.enumerated and net._sweep_buckets >= 0)  # (a factor of arity >= 2)
    if untie:
        distinct_copies(net)
    gen = torch.Generator().manual_seed(B)
    u = torch.randn(B, net.num_variables, net.max_card, dtype=torch.float64, generator=gen)
    _sweep_and_twin(net, u)


@given(
    random_graphs(max_vars=7, max_factors=10),
    st.sampled_from([0.0, 0.4]),
    st.booleans(),
    st.integers(1, 3),
    st.booleans(),
    OVERHEADS,
    st.sampled_from([1.0, 10.0]),
)
def test_flat_mean_field_equals_the_padded_step(fg, damping, untie, B, buckets, overhead, slack):
    """Parallel mean-field in the flat layout of the states that exist
    (:meth:`FlatStep.mf_step`) against its twin, the padded ``(B, V, K)`` step
    (:func:`bucketed_expectations`): marginals, residual and the bound, without autograd and
    with, and, without hard zeros, the gradients of the unaries and every parameter. Random
    arities 1-3, cardinalities 1-4, hard zeros, untied copies, batches; ``buckets``: slot
    plans of base width 1; ``overhead``: row buckets; ``slack``: a layout of the states that
    exist or padded."""
    net = _compile_planned(
        fg, buckets, overhead, slack, algorithm="mf", iterations=4, damping=damping, untie=untie
    )
    assume(net.enumerated and net._sweep_buckets >= 0)  # (a factor of arity >= 2)
    if untie:
        distinct_copies(net)
    gen = torch.Generator().manual_seed(B)
    u = torch.randn(B, net.num_variables, net.max_card, dtype=torch.float64, generator=gen)
    with torch.no_grad():
        a = net(unary=u)
    b, grads = _loss_and_grads(net, u)
    saved_buckets = net._sweep_buckets
    net._sweep_buckets = -1  # (no flat loop: the padded step)
    try:
        c, twin_grads = _loss_and_grads(net, u)
    finally:
        net._sweep_buckets = saved_buckets
    exists = torch.arange(net.max_card) < net.cards[:, None]  # (V, K)
    for x in (a, b):  # the flat layout has no position for a state that does not exist
        assert not bool(x.probs.detach()[:, ~exists].any())
    hard_zeros = any(bool(torch.isinf(p).any()) for p in net.parameters())
    if hard_zeros and not bool((c.log_partition.detach() > -1e15).all()):
        # the sentinel regime (the marginals weigh hard zeros, the bound is a sentinel sum):
        # which state wins depends on the order of summation, and in the padded step the
        # padding can (test_flat_mean_field_keeps_the_mass_on_states_that_exist)
        return
    for x in (a, b):
        torch.testing.assert_close(x.probs.detach(), c.probs.detach(), atol=1e-12, rtol=0)
        if not hard_zeros:  # (an earlier iteration may have been in the sentinel regime)
            torch.testing.assert_close(x.residual.detach(), c.residual.detach(), atol=1e-12, rtol=0)
        torch.testing.assert_close(
            x.log_partition.detach(), c.log_partition.detach(), atol=1e-9, rtol=1e-12
        )
    # (with hard zeros, a mean-field gradient is a difference of sentinel-scale terms, 1e30
    # times a probability, whose rounding depends on the order of summation: compared without)
    if hard_zeros:
        return
    for g, h in zip(grads, twin_grads, strict=True):
        assert (g is None) == (h is None)
        if g is not None:
            torch.testing.assert_close(g, h, atol=1e-9, rtol=1e-9)


def test_flat_mean_field_keeps_the_mass_on_states_that_exist():
    """A variable of one state whose only state is weighed down by hard zeros (under the
    initial marginals of its neighbour): in the padded ``(B, V, K)`` layout its padding states
    (at the sentinel) then outweigh it and take its mass, which removes the factors from its
    neighbour's field in the next iteration (the neighbour falls back to its unary). The flat
    layout has no position for a padding state: the variable keeps probability 1 and the
    neighbour its one state without a hard zero, mean-field's fixed point here. The padded
    step (the twin) now gives its padding states a field of ``-inf``, and agrees."""
    fg = pu.FactorGraph()
    fg.add_variable(0, 4)
    fg.add_variable(1, 1)
    tables = np.array([[[-1.36, -0.35, -2.31, -0.19]], [[-np.inf, 1.39, 0.77, -np.inf]]])
    fg.add_factors([[1, 0], [1, 0]], tables)
    fg.add_factors([[0, 1]], np.array([[[-np.inf], [-np.inf], [0.258], [-1.64]]]))
    u = torch.tensor([[[0.66, 0.27, 0.06, 0.62], [-0.45, -0.17, -1.52, 0.38]]], dtype=torch.float64)
    for grad in (False, True):
        net = pu.compile(fg, "mf", iterations=4, fast_path=False).double()
        assert net._sweep_buckets >= 0
        with torch.set_grad_enabled(grad):
            q = net(unary=u).probs.detach()
        torch.testing.assert_close(q[0, 0], torch.tensor([0.0, 0, 1, 0], dtype=torch.float64))
        torch.testing.assert_close(q[0, 1], torch.tensor([1.0, 0, 0, 0], dtype=torch.float64))
    net._sweep_buckets = -1  # (the padded step: it used to drop the factors from variable
    # 0's field, giving the softmax of its unary)
    torch.testing.assert_close(net(unary=u).probs.detach(), q)
    for cfg in ({"contraction": "logsumexp"}, {"contraction": "logsumexp", "fast_path": False}):
        net = pu.compile(fg, "mf", iterations=4, **cfg).double()
        torch.testing.assert_close(net(unary=u).probs.detach(), q)


@pytest.mark.parametrize("B", [1, 3])
def test_no_grad_sweep_with_high_degree_buckets(B, monkeypatch):
    """A hub of degree 30 among triplets, the base slot table capped at width 2: the hub's
    further slots are in a bucket (SlotPlan), which the sweep adds to the beliefs by
    ``index_add_``."""
    monkeypatch.setattr(wiring, "_MAX_BASE_WIDTH", 2)
    rng = np.random.default_rng(1)
    fg = pu.FactorGraph()
    x = fg.add_variables("x", 61, 3)
    scopes = np.stack([np.zeros(30, dtype=np.int64), 1 + 2 * np.arange(30), 2 + 2 * np.arange(30)])
    fg.add_factors(x.ids[scopes.T], rng.normal(size=(30, 3, 3, 3)), name="tri")
    fg.add_factors(x.ids[1:, None], rng.normal(size=(60, 3)), name="unary")
    net = pu.compile(fg, iterations=6, damping=0.3, contraction="enumerate").double()
    assert net._sweep_buckets > 0
    u = torch.randn(B, 61, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    _sweep_and_twin(net, u)


@pytest.mark.parametrize("buckets", [False, True])
def test_hard_zeros_exact_sweep_or_the_functional_step(buckets, monkeypatch):
    """Hard zeros: exact cavities, in the sweep by prefix and suffix sums (a message that is
    a hard zero never enters its own edge's cavity), or, where the slot plan has buckets, by
    the functional step. Either way the no-grad forward equals the functional one."""
    if buckets:
        monkeypatch.setattr(wiring, "_MAX_BASE_WIDTH", 1)
    rng = np.random.default_rng(3)
    fg = pu.FactorGraph()
    fg.add_variables("x", 4, 3)
    tabs = rng.normal(size=(4, 3, 3, 3))
    tabs[:, 0, 1, :] = -np.inf
    fg.add_factors(np.array([[0, 1, 2], [1, 2, 3], [2, 3, 0], [3, 0, 1]]), tabs)
    net = pu.compile(fg, iterations=6, damping=0.2, contraction="enumerate").double()
    assert net.exact_cavity and (net._sweep_buckets == -1) == buckets
    u = torch.randn(2, 4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    _sweep_and_twin(net, u)


@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("hard_zeros", [False, True])
@pytest.mark.parametrize("B", [1, 2])
def test_sweep_reduces_only_the_rows_of_existing_states(hard_zeros, B, padded, monkeypatch):
    """Cardinalities 2 and 3: the sweep gathers and reduces only the message rows whose state
    exists at their edge, and keeps only the states that exist (one position each, in classes
    of one cardinality, state-major) or, ``padded`` (a layout slack that allows it), every
    state in one state-major class, those that do not exist at a hard zero; the result equals
    the functional step's."""
    monkeypatch.setattr(enumerate_module, "LAYOUT_SLACK", 10.0 if padded else 1.0)
    fg = _triplets(hard_zeros)
    net = pu.compile(fg, iterations=6, damping=0.3, contraction="enumerate").double()
    assert net.enumerated and net._sweep_buckets >= 0 and net.exact_cavity == hard_zeros
    K = net.max_card
    R = sum(net._buffers[f"sweep_others_{b}"].shape[2] for b in range(len(net._enum_buckets)))
    edge_card = net.cards[net.edge_var]
    for name, card in (("enum_msg_source", edge_card), ("sweep_var_source", net.cards)):
        source = net._buffers[name]
        L = source.shape[0]
        valid = torch.arange(K)[None, :] < card[:, None]  # (n, K)
        width = torch.full_like(card, K) if padded else card
        assert L == int(width.sum()) and (L < K * card.shape[0]) != padded
        kept = torch.arange(K)[None, :] < width[:, None]
        assert torch.equal(source.sort().values, torch.nonzero(kept.reshape(-1)).squeeze(1))
        # a class per width, ascending, each state-major over its items in order
        at = 0
        for offset, k, n in net._sweep_classes[name == "sweep_var_source"]:
            items = torch.nonzero(width == k).squeeze(1)
            assert offset == at and n == len(items)
            block = source[offset : offset + k * n].view(k, n)
            assert torch.equal(block, items[None, :] * K + torch.arange(k)[:, None])
            at += k * n
        assert at == L
        # the layout's positions invert its sources; beyond the width and the padding item: L
        lay = plan_layout(card.numpy(), K, padded)
        assert np.array_equal(lay.source, source.numpy()) and lay.padded == padded
        items, states = np.divmod(np.arange(card.shape[0] * K + 1), K)  # (last: item n)
        pos, ok = lay.at(items, states), np.append(kept.reshape(-1).numpy(), False)
        assert np.array_equal(lay.source[pos[ok]], np.flatnonzero(ok)) and (pos[~ok] == L).all()
        if name == "enum_msg_source":  # rows of states that do not exist read a hard zero
            row_of = net.sweep_row_of
            exists = valid.reshape(-1)[source]
            assert bool((row_of[~exists] == R).all())
            assert torch.equal(row_of[exists].sort().values, torch.arange(R))
    assert R == int(edge_card.sum())
    u = torch.randn(B, 5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(B))
    _sweep_and_twin(net, u)


@given(random_graphs(max_vars=6, max_factors=5, tree=True), st.sampled_from(["sum", "max"]))
def test_exact_on_trees(fg, semiring):
    logz, marg, best, _ = brute_force(fg)
    assume(np.isfinite(logz))
    kw = dict(dtype=torch.float64, fast_path=False, contraction="enumerate", semiring=semiring)
    net = pu.compile(fg, iterations=len(fg) + 2, **kw)
    for grad in (True, False):  # the functional step; the no-grad sweep
        with torch.set_grad_enabled(grad):
            out = net()
        if semiring == "sum":
            for name, m in marg.items():
                np.testing.assert_allclose(out.marginals[name].detach().numpy(), m, atol=1e-8)
            assert float(out.log_partition) == pytest.approx(logz, abs=1e-8)
        else:  # max-marginals: the MAP states score the optimum
            assert float(out.log_partition) == pytest.approx(best, abs=1e-8)


def _triplets(hard_zeros: bool = True) -> pu.FactorGraph:
    rng = np.random.default_rng(5)
    fg = pu.FactorGraph()
    for v, k in enumerate([2, 3, 2, 3, 2]):
        fg.add_variable(v, k)
    fg.add_factors([[0, 1, 2], [2, 3, 4]], rng.normal(size=(2, 2, 3, 2)), name="t")
    fg.add_factors([[1, 3]], rng.normal(size=(1, 3, 3)), name="p")
    zeros = np.where(rng.random((2, 2)) < 0.3, -np.inf, 0.0)
    fg.add_factors([[0, 4]], zeros if hard_zeros else rng.normal(size=(1, 2, 2)), name="z")
    fg.add_factors([[0], [2], [4]], rng.normal(size=(3, 2)), name="u")
    return fg


@pytest.mark.parametrize(
    "algorithm, semiring, overhead, slack, hard_zeros",
    [
        ("bp", "sum", None, 1.0, True),
        ("bp", "sum", None, 10.0, False),
        ("bp", "sum", 0, 1.0, True),
        ("bp", "max", None, 1.0, True),
        ("mf", "sum", None, 1.0, False),
        ("mf", "sum", None, 10.0, False),
    ],
)
def test_gradcheck(algorithm, semiring, overhead, slack, hard_zeros):
    """BP (the flat functional step, :class:`FlatStep`) with hard zeros (exact cavities) or
    without, one bucket of live rows or (``overhead=0``) one per row extent, the states that
    exist (``slack=1``) or a padded layout; mean-field without hard zeros (its bound is
    ``-inf`` once a marginal puts mass on a hard zero)."""
    default = network.BUCKET_OVERHEAD
    with (
        mock.patch.object(network, "BUCKET_OVERHEAD", default if overhead is None else overhead),
        mock.patch.object(enumerate_module, "LAYOUT_SLACK", slack),
    ):
        net = pu.compile(
            _triplets(hard_zeros=hard_zeros),
            algorithm=algorithm,
            iterations=3,
            damping=0.2,
            semiring=semiring,
            untie=True,
            dtype=torch.float64,
            fast_path=False,
            contraction="enumerate",
        )
    assert net.enumerated and net.exact_cavity == hard_zeros
    assert algorithm == "mf" or len(net._enum_buckets) == (1 if overhead is None else 5)
    # (FlatStep: one class padded to 3 states, or one per cardinality)
    assert len(net._sweep_classes[0]) == (1 if slack > 1 else 2)
    params = dict(net.named_parameters())
    names = list(params)
    u0 = 0.5 * torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))

    def f(u: torch.Tensor, *tables: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = torch.func.functional_call(
            net, dict(zip(names, tables, strict=True)), (), {"unary": u}
        )
        return out.log_marginals, out.log_partition

    inputs = (u0, *(p.detach().clone() for p in params.values()))
    inputs = tuple(x.requires_grad_(True) for x in inputs)
    assert torch.autograd.gradcheck(f, inputs)


def test_mean_field_values_and_gradients_equal_the_per_merge_contraction():
    kw = dict(
        algorithm="mf", iterations=4, damping=0.3, untie=True, dtype=torch.float64, fast_path=False
    )
    nets = [pu.compile(_triplets(False), contraction=c, **kw) for c in ("enumerate", "logsumexp")]
    assert nets[0].enumerated and not nets[1].enumerated
    distinct_copies(*nets)
    u0 = torch.randn(3, 5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    assert_same_values_and_grads(nets, u0, state=0)


def test_values_and_gradients_equal_the_per_merge_contraction():
    kw = dict(iterations=4, damping=0.3, untie=True, dtype=torch.float64, fast_path=False)
    nets = [pu.compile(_triplets(), contraction=c, **kw) for c in ("enumerate", "logsumexp")]
    u0 = torch.randn(3, 5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    assert_same_values_and_grads(nets, u0, state=0)


# (inductor's import, torch 2.13)
@pytest.mark.parametrize("seed", [0, 2, 6])
def test_gradients_of_wide_tables_stay_accurate(seed):
    """30-nat tables, 5 iterations: the gradients of ``log Z`` equal the per-merge
    contraction's to 1e-12 of their largest entry (measured: 1e-14). With the messages' shift
    detached, the gradient kept a component along the constant direction that no later use
    projected out, and the two differed by 1e-10 to 6e-10 of the largest entry here."""
    rng = np.random.default_rng(seed)
    fg = pu.FactorGraph()
    x = fg.add_variables("x", 3, 3)
    pairs = np.array([rng.choice(3, 2, replace=False) for _ in range(8)])
    fg.add_factors(pairs, 30.0 * rng.normal(size=(8, 3, 3)), name="pair")
    fg.add_factors(pairs[::-1], rng.normal(size=(3, 3)), name="shared")
    u0 = torch.randn(2, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    grads = []
    for contraction in ("enumerate", "logsumexp"):
        net = pu.compile(
            fg, iterations=5, damping=0.4, contraction=contraction, fast_path=False
        ).double()
        assert net.enumerated == (contraction == "enumerate")
        u = u0.clone().requires_grad_()
        net(unary={x: u}).log_partition.sum().backward()
        grads.append([u.grad, *(p.grad for p in net.parameters())])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-12 * float(b.abs().max()), rtol=0)


@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_compile_steps_equals_eager():
    kw = dict(iterations=3, damping=0.2, dtype=torch.float64, fast_path=False)
    nets = [
        pu.compile(_triplets(), contraction="enumerate", compile_steps=c, **kw)
        for c in (True, False)
    ]
    u0 = torch.randn(2, 5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    assert_same_values_and_grads(nets, u0, state=0)


@pytest.mark.parametrize("algorithm", ["bp", "mf"])
def test_float32_with_sentinels_and_huge_potentials_stays_finite(algorithm):
    fg = _triplets()
    for g in fg.groups:
        g.log_potentials = np.where(np.isfinite(g.log_potentials), 1e4 * g.log_potentials, -np.inf)
    kw = dict(algorithm=algorithm, iterations=6, fast_path=False)
    out32 = pu.compile(fg, contraction="enumerate", **kw)()
    out64 = pu.compile(fg, contraction="logsumexp", dtype=torch.float64, **kw)()
    assert not torch.isnan(out32.log_marginals).any()
    assert not torch.isnan(out32.log_partition).any()
    torch.testing.assert_close(
        out32.log_marginals.exp().double(), out64.log_marginals.exp(), atol=1e-5, rtol=0
    )


def test_auto_takes_it_for_small_general_graphs_only(monkeypatch):
    fg = _triplets()
    assert pu.compile(fg).enumerated  # arity 3: the general path, small
    assert "contraction=enumerate" in repr(pu.compile(fg).untie())
    assert not pu.compile(fg, contraction="logsumexp").enumerated
    assert not pu.compile(fg, compile_steps=True).enumerated  # (compiled, per merge is faster)
    assert pu.compile(fg, compile_steps=True, contraction="enumerate").enumerated
    assert not pu.compile(fg, schedule="sequential").enumerated
    assert pu.compile(fg, algorithm="mf").enumerated  # mean-field too
    assert pu.compile(fg, algorithm="mf", schedule="sequential").enumerated
    assert not pu.compile(grid(3, k=3)[0], algorithm="mf").enumerated  # its fast path
    small, _ = grid(3, k=3)
    assert not pu.compile(small).enumerated  # the pairwise fast path
    assert pu.compile(small, fast_path=False).enumerated
    monkeypatch.setattr(network, "_ENUMERATE_SMALL", 0)
    # beyond the small size: the flat loops (BP, parallel mean-field) take it whatever the
    # arity up to the large size (the padding below 4x); sequential mean-field (its padded
    # step) keeps the per-merge contraction for pairwise graphs, and takes it for graphs with
    # larger factors up to its own large size
    mf_seq = dict(algorithm="mf", schedule="sequential")
    assert pu.compile(small, fast_path=False).enumerated
    assert pu.compile(small, fast_path=False, algorithm="mf").enumerated
    assert not pu.compile(small, fast_path=False, **mf_seq).enumerated
    assert pu.compile(fg).enumerated and pu.compile(fg, algorithm="mf").enumerated
    assert pu.compile(fg, **mf_seq).enumerated
    monkeypatch.setattr(network, "_ENUMERATE_LARGE", 0)
    assert pu.compile(fg).enumerated and pu.compile(fg, algorithm="mf").enumerated
    assert not pu.compile(fg, **mf_seq).enumerated
    monkeypatch.setattr(network, "_ENUMERATE_LARGE_BP", 0)
    assert not pu.compile(fg).enumerated and not pu.compile(fg, algorithm="mf").enumerated
    assert not pu.compile(small, fast_path=False).enumerated


def test_bad_settings_raise_at_compile_time():
    with pytest.raises(ValueError, match="contraction must be auto, logsumexp, matmul or enum"):
        pu.compile(_triplets(), contraction="dense")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs schedule='parallel', got 'sequential'"):
        pu.compile(_triplets(), contraction="enumerate", schedule="sequential")


def test_state_dict_round_trip_keeps_the_plan_out():
    net = pu.compile(_triplets(), contraction="enumerate", iterations=3)
    keys = net.state_dict().keys()
    assert not any(k.startswith("enum_") for k in keys)
    twin = pu.compile(_triplets(), contraction="enumerate", iterations=3)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1)
    twin.load_state_dict(net.state_dict())
    torch.testing.assert_close(twin().log_marginals, net().log_marginals)


@pytest.mark.parametrize("hard_zeros", [False, True])
def test_checkpointing_the_flat_step_gives_identical_gradients(hard_zeros):
    """``checkpoint=True`` recomputes each :class:`FlatStep` iteration in the backward pass:
    the same gradients as storing its activations (mixed cardinalities, untied copies, hard
    zeros with their exact cavities)."""
    grads = []
    u = torch.randn(2, 5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    for ck in (False, True):
        net = pu.compile(
            _triplets(hard_zeros),
            iterations=4,
            damping=0.2,
            untie=True,
            dtype=torch.float64,
            checkpoint=ck,
            contraction="enumerate",
        )
        assert net._sweep_buckets >= 0
        distinct_copies(net)
        uu = u.clone().requires_grad_(True)
        out = net(unary=uu)
        (out.log_partition.sum() + out.probs[..., 0].sum()).backward()
        grads.append([uu.grad, *(p.grad for p in net.parameters())])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


@pytest.mark.parametrize("algorithm", ["bp", "mf"])
@pytest.mark.parametrize("untie", [False, True])
def test_torch_compile_of_an_enumerated_network(algorithm, untie):
    """``torch.compile(..., fullgraph=True)`` of a fresh network on the enumerated contraction
    gives the eager outputs: its first, traced forward makes the flat indices by tensor ops
    from the compile-time wiring, with no host work and no graph break."""
    net = pu.compile(
        _triplets(False),
        algorithm=algorithm,
        iterations=4,
        damping=0.2,
        untie=untie,
        contraction="enumerate",
    )
    assert net.enumerated
    if untie:
        distinct_copies(net)
    u = torch.randn(2, 5, 3, generator=torch.Generator().manual_seed(0))
    out = torch.compile(net, backend="aot_eager", fullgraph=True)(unary=u)
    assert not net._enum_index  # (nothing kept from the traced forward)
    ref = net(unary=u)
    torch.testing.assert_close(out.log_marginals, ref.log_marginals, atol=1e-6, rtol=0)
    torch.testing.assert_close(out.log_partition, ref.log_partition, atol=1e-5, rtol=0)


def test_parameters_of_other_sizes_are_refused():
    net = pu.compile(_triplets(), iterations=2, contraction="enumerate")
    net.potentials[net._key("p")] = torch.nn.Parameter(torch.zeros(2, 1, 3, 3))
    with pytest.raises(RuntimeError, match=r"other parameter sizes; changed: 'p' \(2, 1, 3, 3\)"):
        net()


def test_kept_table_indices_are_bounded(monkeypatch):
    """An untied network keeps one table index per combination of copies while they fit the
    budget (``_ENUM_INDEX_KEPT`` entries); beyond, it makes them again at every forward, with
    the same outputs."""
    net = pu.compile(_triplets(), contraction="enumerate", iterations=4, untie=True).double()
    distinct_copies(net)
    kept = {}
    for grad in (True, False):  # FlatStep; the no-grad sweep
        with torch.set_grad_enabled(grad):
            kept[grad] = net().log_marginals
    assert len(net._enum_index) == 5  # four iterations' copies, the initial messages
    net._enum_index.clear()
    monkeypatch.setattr(network, "_ENUM_INDEX_KEPT", 0)
    for grad in (True, False):
        with torch.set_grad_enabled(grad):
            again = net()
        assert not net._enum_index
        torch.testing.assert_close(again.log_marginals, kept[grad], atol=0, rtol=0)


@pytest.mark.parametrize("algorithm", ["bp", "mf"])
@pytest.mark.parametrize(("big", "routed"), [(64, True), (8, True), (4, False)])
def test_auto_takes_the_enumerated_sweep_where_pairwise_tables_are_mostly_padding(
    big, routed, algorithm
):
    """A binary chain with one ``big``-state variable: the pairwise path pads every table to
    ``big x big``. With 64 states (about 500x the real entries) or 8 (about 15x) ``"auto"``
    takes the general path's enumerated contraction instead, whose loops (with autograd and
    without) keep only the states that exist; with 4 (about 4x) it keeps the pairwise path. An
    explicit contraction keeps it too. Both give the same marginals and ``log Z`` (BP's exact
    ones on this tree; for mean-field its bound), with and without autograd."""
    rng = np.random.default_rng(0)
    fg = pu.FactorGraph()
    x = fg.add_variables("x", 30, 2)
    fg.add_factors(np.stack([x.ids[:-1], x.ids[1:]], -1), rng.normal(size=(29, 2, 2)))
    fg.add_factors(x.ids[:, None], rng.normal(size=(30, 2)))
    fg.add_variable("big", big)
    fg.add_factor(("big", ("x", 0)), rng.normal(size=(big, 2)))
    kw = dict(iterations=40, dtype=torch.float64, damping=0.3 if algorithm == "mf" else 0.0)
    net = pu.compile(fg, algorithm, **kw)
    fast = net.pairwise_fast or net.mf_fast
    assert net.enumerated == routed and fast != routed
    assert (net._sweep_buckets >= 0) == routed
    kept = pu.compile(fg, algorithm, contraction="logsumexp", **kw)
    assert (kept.pairwise_fast or kept.mf_fast) and not kept.enumerated
    want = kept().probs.detach()
    for grad in (False, True):
        with torch.set_grad_enabled(grad):
            out = net()
        torch.testing.assert_close(out.probs.detach(), want, atol=1e-10, rtol=0)
        assert float(out.log_partition) == pytest.approx(float(kept().log_partition), abs=1e-9)
