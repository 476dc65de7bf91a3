import numpy as np
import pytest
import torch
from helpers import brute_force, grid, random_graphs
from hypothesis import assume, given
from hypothesis import strategies as st

import pgmunfold as pu


@given(
    random_graphs(max_vars=7, max_factors=6, tree=True), st.sampled_from(["parallel", "sequential"])
)
def test_bp_exact_on_trees(fg, schedule):
    logz, marg, _best, _ = brute_force(fg)
    assume(np.isfinite(logz))
    net = pu.compile(
        fg, algorithm="bp", iterations=len(fg) + 2, schedule=schedule, dtype=torch.float64
    )
    out = net()
    for name, m in marg.items():
        np.testing.assert_allclose(out.marginals[name].detach().numpy(), m, atol=1e-8)
    assert float(out.log_partition) == pytest.approx(logz, abs=1e-8)
    # factor beliefs are the exact factor marginals on a tree
    for g in fg.groups:
        fb = out.factor_log_beliefs[g.name].exp().detach().numpy()
        assert fb.shape == (g.num_factors, *g.cards)
        np.testing.assert_allclose(fb.reshape(g.num_factors, -1).sum(1), 1.0, atol=1e-9)


@given(random_graphs(max_vars=7, max_factors=6, tree=True))
def test_max_product_exact_on_trees(fg):
    logz, _, best, _ = brute_force(fg)
    assume(np.isfinite(logz))
    net = pu.compile(
        fg, algorithm="bp", iterations=len(fg) + 2, semiring="max", dtype=torch.float64
    )
    out = net()
    # ties can make per-variable argmax decodes inconsistent; without ties the decode is optimal
    lm = out.log_marginals.detach()
    srt = lm.sort(dim=-1, descending=True).values
    if lm.shape[-1] > 1:
        assume(bool(((srt[:, 0] - srt[:, 1]) > 1e-6).all()))
    assert float(out.log_partition) == pytest.approx(best, abs=1e-8)


@given(random_graphs(max_vars=5, max_factors=4, tree=True), st.integers(1, 3))
def test_bp_evidence_and_batched_unary_equal_exact_on_trees(fg, B):
    rng = np.random.default_rng(len(fg))
    name0 = fg.variable_name(0)
    k0 = int(fg.cardinalities[0])
    states = rng.integers(0, k0, size=B)
    name1 = fg.variable_name(len(fg) - 1)
    k1 = int(fg.cardinalities[-1])
    un = rng.normal(size=(B, k1))
    net = pu.compile(fg, iterations=len(fg) + 2, dtype=torch.float64)
    out = net(evidence={name0: torch.as_tensor(states)}, unary={name1: torch.as_tensor(un)})
    assert out.log_partition.shape == (B,)
    for b in range(B):
        fgb = _copy_with_unary(fg, name1, un[b])
        logz, marg, _, _ = brute_force(fgb, {name0: int(states[b])})
        if not np.isfinite(logz):
            continue
        for name, m in marg.items():
            np.testing.assert_allclose(out.marginals[name][b].detach().numpy(), m, atol=1e-8)
        assert float(out.log_partition[b]) == pytest.approx(logz, abs=1e-8)


def _copy_with_unary(fg, name, table):
    new = pu.FactorGraph()
    for v in range(len(fg)):
        new.add_variable(fg.variable_name(v), int(fg.cardinalities[v]))
    for scope, t in fg.factors():
        new.add_factor(tuple(fg.variable_name(v) for v in scope), t)
    new.add_factor((name,), table)
    return new


def test_bp_loopy_grid_close_to_exact_and_schedules_agree():
    fg, _ = grid(4, k=3, coupling=0.3, seed=1)
    ex = pu.exact_marginals(fg)
    outs = []
    for schedule in ("parallel", "sequential"):
        out = pu.compile(fg, iterations=200, schedule=schedule, dtype=torch.float64)()
        assert float(out.residual) < 1e-10
        outs.append(out)
        err = max(float((out.marginals[k] - ex[k]).abs().max()) for k in ex)
        assert 0 < err < 0.05  # loopy: close, not exact
    torch.testing.assert_close(outs[0].log_marginals, outs[1].log_marginals, atol=1e-9, rtol=0)
    torch.testing.assert_close(outs[0].log_partition, outs[1].log_partition, atol=1e-9, rtol=0)


def test_damping_keeps_fixed_point():
    fg, _ = grid(3, k=2, coupling=0.5, seed=2)
    a = pu.compile(fg, iterations=300, dtype=torch.float64)()
    b = pu.compile(fg, iterations=300, damping=0.5, dtype=torch.float64)()
    torch.testing.assert_close(a.log_marginals, b.log_marginals, atol=1e-9, rtol=0)
    # one damped step is the convex combination of the old and the undamped new messages
    c1 = pu.compile(fg, iterations=1, damping=0.3, dtype=torch.float64)()
    c0 = pu.compile(fg, iterations=1, dtype=torch.float64)()
    assert not torch.allclose(c1.log_marginals, c0.log_marginals)


def test_hard_zero_grid_bp_matches_exact_cavity_semantics():
    fg, _ = grid(3, k=3, coupling=0.4, seed=3, hard=True)
    net = pu.compile(fg, iterations=200, dtype=torch.float64)
    assert net.exact_cavity
    out = net()
    assert torch.isfinite(out.log_marginals).all() and torch.isfinite(out.log_partition)
    ex = pu.exact_marginals(fg)
    err = max(float((out.marginals[k] - ex[k]).abs().max()) for k in ex)
    assert err < 0.1


@given(random_graphs(max_vars=5, max_factors=5, hard_zeros=False))
def test_subtraction_cavity_equals_exclusive_sum_without_hard_zeros(fg):
    a = pu.compile(fg, iterations=7, exact_cavity=True, dtype=torch.float64)()
    b = pu.compile(fg, iterations=7, exact_cavity=False, dtype=torch.float64)()
    torch.testing.assert_close(a.log_marginals, b.log_marginals, atol=1e-9, rtol=0)
    torch.testing.assert_close(a.log_partition, b.log_partition, atol=1e-9, rtol=0)


@given(random_graphs(max_vars=5, max_factors=5))
def test_bp_never_nan_on_random_graphs(fg):
    for semiring in ("sum", "max"):
        net = pu.compile(fg, iterations=10, semiring=semiring, damping=0.2)
        out = net()
        assert not torch.isnan(out.log_marginals).any()
        assert not torch.isnan(out.log_partition).any()
        p = out.probs
        assert torch.all(p >= 0)


def test_huge_potentials_float32():
    fg, _ = grid(4, k=2, coupling=1.0, seed=4)
    for g in fg.groups:
        g.log_potentials *= 1e4
    out = pu.compile(fg, iterations=20)()
    assert torch.isfinite(out.log_marginals).all()
    assert torch.isfinite(out.log_partition)
    torch.testing.assert_close(out.probs.sum(-1), torch.ones(16))


def test_sum_and_max_share_one_code_path():
    # max-product is sum-product at temperature -> 0: scale potentials by s, divide log Z by s
    fg, _ = grid(3, k=2, coupling=0.5, seed=5)
    s = 1e4
    hot = pu.FactorGraph()
    hot.add_variables("x", (3, 3), 2)
    for g in fg.groups:
        hot.add_factors(g.scopes, g.log_potentials * s, name=g.name)
    mx = pu.compile(fg, iterations=60, semiring="max", dtype=torch.float64)()
    sm = pu.compile(hot, iterations=60, dtype=torch.float64)()
    assert torch.equal(mx.map_states, sm.map_states)


def test_gradcheck_bp_potentials_and_unary():
    fg, x = grid(2, k=3, coupling=0.5, seed=6)
    net = pu.compile(fg, iterations=4, damping=0.2, dtype=torch.float64)
    params = dict(net.named_parameters())
    keys = list(params)

    def f(*ps):
        out = torch.func.functional_call(net, dict(zip(keys, ps, strict=True)), ())
        return out.log_marginals, out.log_partition

    assert torch.autograd.gradcheck(
        f, tuple(p.detach().clone().requires_grad_() for p in params.values())
    )
    u = torch.randn(2, 2, 2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda u: net(unary={x: u}).log_partition, (u,))


def test_gradcheck_bp_with_hard_zeros():
    fg, _ = grid(2, k=3, coupling=0.5, seed=7, hard=True)
    net = pu.compile(fg, iterations=3, dtype=torch.float64)
    params = dict(net.named_parameters())
    keys = list(params)

    def f(*ps):
        out = torch.func.functional_call(net, dict(zip(keys, ps, strict=True)), ())
        return out.log_marginals.exp(), out.log_partition

    ps = tuple(p.detach().clone().requires_grad_() for p in params.values())
    out = f(*ps)
    (out[0].sum() + out[1]).backward()
    assert all(torch.isfinite(p.grad).all() for p in ps)
    # gradcheck on the finite entries: perturbing -inf entries is meaningless
    fin = [p.detach().clone() for p in ps]
    masks = [torch.isfinite(p) for p in fin]

    def g(*vals):
        full = [torch.where(m, v, p) for v, m, p in zip(vals, masks, fin, strict=True)]
        return f(*full)

    assert torch.autograd.gradcheck(
        g, tuple(torch.where(m, p, 0.0).requires_grad_() for p, m in zip(fin, masks, strict=True))
    )


def test_kernel_matches_per_factor_twin():
    """factor_to_variable (batched) equals an obvious per-factor, per-state loop."""
    from pgmunfold.infer.ops import factor_to_variable

    rng = np.random.default_rng(0)
    cards = (2, 3, 4)
    F, B = 3, 2
    theta = torch.as_tensor(rng.normal(size=(F, *cards)))
    cav = [torch.as_tensor(rng.normal(size=(B, F, k))) for k in cards]
    for semiring in ("sum", "max"):
        out = factor_to_variable(theta, cav, semiring)
        for b in range(B):
            for f in range(F):
                for i, k in enumerate(cards):
                    for s in range(k):
                        vals = []
                        for x in np.ndindex(*cards):
                            if x[i] != s:
                                continue
                            vals.append(
                                float(theta[f][x])
                                + sum(float(cav[j][b, f, x[j]]) for j in range(3) if j != i)
                            )
                        ref = np.logaddexp.reduce(vals) if semiring == "sum" else max(vals)
                        assert float(out[i][b, f, s]) == pytest.approx(ref, abs=1e-12)


def test_exclusive_sum_twin():
    from pgmunfold.infer.ops import NEG, exclusive_sum

    x = torch.tensor([[1.0, NEG, 3.0, 4.0], [NEG, NEG, 2.0, 0.5]], dtype=torch.float64)
    out = exclusive_sum(x, 1)
    for r in range(2):
        for d in range(4):
            ref = sum(float(x[r, j]) for j in range(4) if j != d)
            assert float(out[r, d]) == pytest.approx(ref, rel=1e-15)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_floored_exp_changes_no_log_sum_exp(dtype):
    """The floor of ``floored_exp`` (a speed measure: exp of underflowing arguments is slow on
    CPU) leaves log-sum-exp and log-normalisation as ``torch.logsumexp`` computes them, hard
    zeros included, and ``exp`` itself where it does not underflow."""
    from pgmunfold.infer.ops import NEG, finite_logsumexp, floored_exp, log_normalize

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(50, 7, generator=gen, dtype=dtype) * 30
    x[:, 3] = NEG
    x[:5] = NEG  # whole rows of hard zeros
    x[5:10, 1:] = -1e4  # terms far below the row's largest
    ref = torch.logsumexp(x, dim=1)
    torch.testing.assert_close(finite_logsumexp(x, (1,)), ref, atol=0, rtol=1e-6)
    lognorm = (x - ref[:, None]).clamp_min(NEG)
    torch.testing.assert_close(log_normalize(x)[5:], lognorm[5:])
    torch.testing.assert_close(log_normalize(x)[:5], torch.full_like(x[:5], -np.log(7)))  # uniform
    y = torch.linspace(-80, 0, 101, dtype=dtype)
    assert torch.equal(floored_exp(y), y.exp())


@given(
    st.integers(1, 3),
    st.integers(1, 6),
    st.integers(1, 4),
    st.integers(0, 12),
    st.booleans(),
    st.integers(0, 99),
)
def test_gather_rows_equals_advanced_indexing(B, N, K, M, strided, seed):
    from pgmunfold.infer.ops import gather_rows

    gen = torch.Generator().manual_seed(seed)
    base = torch.randn(B, K, N, dtype=torch.float64, generator=gen)
    x = (base.transpose(1, 2) if strided else base.transpose(1, 2).contiguous()).requires_grad_()
    index = torch.randint(0, N, (M,), generator=gen)  # repeats: the backward must add them up
    g = torch.randn(B, M, K, dtype=torch.float64, generator=gen)
    fast = gather_rows(x, index)
    ref = x[:, index]
    torch.testing.assert_close(fast, ref, atol=0, rtol=0)
    (ga,) = torch.autograd.grad(fast, x, g)
    (gb,) = torch.autograd.grad(ref, x, g)
    torch.testing.assert_close(ga, gb)
