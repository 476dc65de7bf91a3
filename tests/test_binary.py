"""The binary log-odds fast path equals the general K-state path."""

import numpy as np
import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

import pgmunfold as pu
from pgmunfold.infer.binary import (
    binary_messages,
    exp_form_coefficients,
    pairwise_coefficients,
    stable_g_diff,
)
from pgmunfold.infer.ops import softplus


@st.composite
def binary_graphs(draw):
    n = draw(st.integers(2, 7))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    fg = pu.FactorGraph()
    x = fg.add_variables("x", n, 2)
    m = draw(st.integers(1, 10))
    pairs = np.array([rng.choice(n, 2, replace=False) for _ in range(m)])
    scale = draw(st.sampled_from([0.0, 0.1, 1.0, 5.0, 100.0]))  # 100: past the exp-form limit
    if draw(st.booleans()):  # an odd number of edges before the pairwise block
        fg.add_factors(x.ids[:1, None], rng.normal(size=(1, 2)), name="first")
    fg.add_factors(pairs, scale * rng.normal(size=(m, 2, 2)), name="pair")
    if draw(st.booleans()):
        fg.add_factors(pairs[:1], rng.normal(size=(2, 2)), name="shared")
    fg.add_factors(x.ids[:, None], rng.normal(size=(n, 2)), name="unary")
    return fg, x


@given(
    binary_graphs(),
    st.sampled_from(["sum", "max"]),
    st.sampled_from([0.0, 0.4]),
    st.integers(1, 3),
    st.booleans(),
    st.integers(0, 2**31 - 1),
)
def test_fast_path_equals_general(gx, semiring, damping, B, with_evidence, seed):
    fg, x = gx
    kw = dict(iterations=6, damping=damping, semiring=semiring, dtype=torch.float64)
    fast = pu.compile(fg, **kw)
    slow = pu.compile(fg, fast_path=False, **kw)
    assert fast.binary_fast and not slow.binary_fast
    gen = torch.Generator().manual_seed(seed)
    u = torch.randn(B, len(fg), 2, dtype=torch.float64, generator=gen)
    ev = {("x", 0): torch.randint(0, 2, (B,), generator=gen)} if with_evidence else None
    b = slow(unary={x: u}, evidence=ev)
    for grad in (True, False):  # False: the in-place variant (reused buffers)
        with torch.set_grad_enabled(grad):
            _assert_same(fast(unary={x: u}, evidence=ev), b, semiring)


def _assert_same(a, b, semiring):
    torch.testing.assert_close(a.log_marginals, b.log_marginals, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(a.residual, b.residual, atol=1e-9, rtol=1e-9)
    # max-product: log_partition scores the arg-max decode, which is ambiguous under ties
    lm = a.log_marginals.detach()
    decisive = bool(((lm[..., 0] - lm[..., 1]).abs() > 1e-6).all())
    if decisive:  # an exact tie (two states at log 1/2) decodes by rounding
        torch.testing.assert_close(a.map_states, b.map_states)
    if semiring == "sum" or decisive:
        torch.testing.assert_close(a.log_partition, b.log_partition, atol=1e-8, rtol=1e-9)


@pytest.mark.parametrize("scale", [0.0, 1.0, 60.0])
def test_fast_path_gradients_equal_general(scale):
    rng = np.random.default_rng(0)
    fg = pu.FactorGraph()
    x = fg.add_variables("x", (3, 3), 2)
    pairs = np.concatenate(
        [
            np.stack([x.ids[:, :-1], x.ids[:, 1:]], -1).reshape(-1, 2),
            np.stack([x.ids[:-1], x.ids[1:]], -1).reshape(-1, 2),
        ]
    )
    fg.add_factors(pairs, scale * rng.normal(size=(len(pairs), 2, 2)))
    grads = []
    u0 = torch.as_tensor(rng.normal(size=(2, 3, 3, 2)))
    for fast in (True, False):
        net = pu.compile(fg, iterations=5, damping=0.3, dtype=torch.float64, fast_path=fast)
        u = u0.clone().requires_grad_()
        out = net(unary={x: u})
        (out.log_partition.sum() + out.log_marginals[..., 1].sum()).backward()
        grads.append((u.grad, next(net.parameters()).grad))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    torch.testing.assert_close(grads[0][1], grads[1][1])


def test_fast_path_gradcheck():
    rng = np.random.default_rng(1)
    fg = pu.FactorGraph()
    x = fg.add_variables("x", 4, 2)
    fg.add_factors(np.array([[0, 1], [1, 2], [2, 3], [3, 0]]), rng.normal(size=(4, 2, 2)))
    net = pu.compile(fg, iterations=4, damping=0.2, dtype=torch.float64)
    assert net.binary_fast
    u = torch.randn(2, 4, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda u: net(unary={x: u}).log_partition, (u,))


@given(
    st.integers(1, 6),
    st.sampled_from([0.0, 1.0, 20.0]),
    st.booleans(),
    st.integers(0, 2**31 - 1),
)
# found by the thorough profile: softplus(20.15) lost 1.8e-9 to torch's default threshold
@example(F=2, scale=20.0, tie=False, seed=6447)
def test_exp_form_equals_stable_form(F, scale, tie, seed):
    """The per-factor exp form (kappa, sign from one d per factor; shift = min(a, b)) gives the
    stable softplus difference for every cavity, the +-1e30 clamps included, and so does its
    gradient at d = 0."""
    gen = torch.Generator().manual_seed(seed)
    theta = scale * torch.randn(F, 2, 2, dtype=torch.float64, generator=gen)
    if tie:  # d = t11 - t10 - t01 + t00 = 0 exactly
        theta[:, 1, 1] = theta[:, 1, 0] + theta[:, 0, 1] - theta[:, 0, 0]
    off, a, b = pairwise_coefficients(theta)
    t = theta
    torch.testing.assert_close(
        off, torch.stack([t[:, 1, 0] - t[:, 0, 0], t[:, 0, 1] - t[:, 0, 0]], 1)
    )
    torch.testing.assert_close(
        a, torch.stack([t[:, 1, 1] - t[:, 1, 0], t[:, 1, 1] - t[:, 0, 1]], 1)
    )
    torch.testing.assert_close(
        b, torch.stack([t[:, 0, 1] - t[:, 0, 0], t[:, 1, 0] - t[:, 0, 0]], 1)
    )
    form = exp_form_coefficients(off, a, b)
    assert form.kappa.shape == form.sign.shape == (F, 1)
    c = torch.randn(3, F, 2, dtype=torch.float64, generator=gen) * 4
    c[0, 0] = 1e30
    c[1, 0] = -1e30
    flat = [x.expand(F, 2).reshape(-1) for x in form]
    got = binary_messages(c.reshape(3, -1), type(form)(*flat), "sum").view(3, F, 2)
    ref = off + stable_g_diff(c, a, b, "sum")
    torch.testing.assert_close(got, ref, atol=1e-9, rtol=1e-9)

    # gradients w.r.t. the table, through both forms (the tie: kappa's branch-wise form)
    th = theta.clone().requires_grad_()
    cc = c[2:].reshape(1, -1)
    o, a_, b_ = pairwise_coefficients(th)
    f = exp_form_coefficients(o, a_, b_)
    fast = binary_messages(cc, type(f)(*[x.expand(F, 2).reshape(-1) for x in f]), "sum")
    (g_fast,) = torch.autograd.grad(fast.sum(), th)
    o, a_, b_ = pairwise_coefficients(th)
    (g_ref,) = torch.autograd.grad((o + stable_g_diff(c[2:], a_, b_, "sum")).sum(), th)
    torch.testing.assert_close(g_fast, g_ref)


@pytest.mark.parametrize("B", [1, 3])
@pytest.mark.parametrize("semiring", ["sum", "max"])
def test_untied_copies_equal_general(B, semiring):
    """Per-iteration copies of the pairwise and the unary tables (``untie(last=...)``): the
    no-grad sweep switches coefficients and field between iterations exactly like the
    functional step under autograd and the general path."""
    rng = np.random.default_rng(5)
    fg = pu.FactorGraph()
    x = fg.add_variables("x", 5, 2)
    ring = np.stack([x.ids, np.roll(x.ids, 1)], 1)
    fg.add_factors(ring, rng.normal(size=(5, 2, 2)), name="pair")
    fg.add_factors(x.ids[:2, None], rng.normal(size=(2, 2)), name="unary")
    nets = []
    for fast in (True, False):
        net = pu.compile(
            fg, iterations=5, damping=0.3, semiring=semiring, dtype=torch.float64, fast_path=fast
        ).untie(last=3)
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn(p.shape, dtype=p.dtype, generator=gen))  # copies differ
        nets.append(net)
    fast, slow = nets
    assert fast.binary_fast
    u = torch.as_tensor(rng.normal(size=(B, 5, 2)))
    ref = slow(unary={x: u})
    for grad in (True, False):
        with torch.set_grad_enabled(grad):
            out = fast(unary={x: u})
        torch.testing.assert_close(out.log_marginals, ref.log_marginals, atol=1e-9, rtol=1e-9)
        torch.testing.assert_close(out.residual, ref.residual, atol=1e-9, rtol=1e-9)
        if semiring == "sum":
            torch.testing.assert_close(out.log_partition, ref.log_partition, atol=1e-8, rtol=1e-9)


def test_softplus_to_the_dtype_resolution():
    """Past torch's default threshold (20) the dropped ``log1p(exp(-x))`` is up to 2e-9: kept in
    float64, where it is resolvable; float32 agrees with the float64 value to its rounding."""
    x = torch.linspace(-50, 60, 1101, dtype=torch.float64)
    exact = x.clamp_min(0) + torch.log1p(torch.exp(-x.abs()))
    torch.testing.assert_close(softplus(x), exact, atol=0, rtol=5e-16)  # 2 ulps
    assert (softplus(x[x > 20]) != x[x > 20]).any()
    torch.testing.assert_close(softplus(x.float()), exact.float())


@given(
    binary_graphs(),
    st.sampled_from([0.0, 0.4]),
    st.integers(1, 3),
    st.booleans(),
    st.booleans(),
    st.integers(0, 2**31 - 1),
)
def test_mean_field_binary_path_equals_general(gx, damping, B, with_evidence, untied, seed):
    """Mean-field on binary variables in log-odds form (``mf_binary``) equals the general
    mean-field path: marginals, bound, residual; with and without autograd; tied and untied."""
    fg, x = gx
    kw = dict(algorithm="mf", iterations=6, damping=damping, dtype=torch.float64)
    fast, slow = pu.compile(fg, **kw), pu.compile(fg, fast_path=False, **kw)
    assert fast.mf_binary and not slow.mf_fast
    gen = torch.Generator().manual_seed(seed)
    if untied:  # copies that differ per iteration, unary groups included
        fast, slow = fast.untie(last=3), slow.untie(last=3)
        for a, b in zip(fast.parameters(), slow.parameters(), strict=True):
            with torch.no_grad():
                a.add_(torch.randn(a.shape, dtype=a.dtype, generator=gen))
                b.copy_(a)
    u = torch.randn(B, len(fg), 2, dtype=torch.float64, generator=gen)
    ev = {("x", 0): torch.randint(0, 2, (B,), generator=gen)} if with_evidence else None
    ref = slow(unary={x: u}, evidence=ev)
    for grad in (True, False):  # False: the in-place variant (reused buffers)
        with torch.set_grad_enabled(grad):
            out = fast(unary={x: u}, evidence=ev)
        torch.testing.assert_close(out.log_marginals, ref.log_marginals, atol=1e-9, rtol=1e-9)
        torch.testing.assert_close(out.residual, ref.residual, atol=1e-9, rtol=1e-9)
        torch.testing.assert_close(out.log_partition, ref.log_partition, atol=1e-8, rtol=1e-9)
        torch.testing.assert_close(out.map_states, ref.map_states)


def test_mean_field_binary_gradients_and_gradcheck():
    rng = np.random.default_rng(3)
    fg = pu.FactorGraph()
    x = fg.add_variables("x", 5, 2)
    fg.add_factors(np.stack([x.ids, np.roll(x.ids, 1)], 1), rng.normal(size=(5, 2, 2)))
    fg.add_factors(x.ids[:2, None], rng.normal(size=(2, 2)))
    u0 = torch.as_tensor(rng.normal(size=(2, 5, 2)))
    grads = []
    for fast in (True, False):
        net = pu.compile(
            fg, algorithm="mf", iterations=5, damping=0.3, dtype=torch.float64, fast_path=fast
        ).untie(last=2)
        assert net.mf_binary == fast
        u = u0.clone().requires_grad_()
        out = net(unary={x: u})
        (out.log_partition.sum() + out.log_marginals[..., 1].sum()).backward()
        grads.append([u.grad, *(p.grad for p in net.parameters())])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b)
    net = pu.compile(fg, algorithm="mf", iterations=4, damping=0.2, dtype=torch.float64)
    u = u0.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda u: net(unary={x: u}).log_partition, (u,))


def test_mean_field_binary_keeps_tiny_probabilities():
    """``q0`` is ``sigmoid(-h)``, not ``1 - q1``: a confident variable's small marginal keeps
    its value (``1 - q1`` rounds it to 0, whose log is the hard-zero sentinel)."""
    fg = pu.FactorGraph()
    x = fg.add_variables("x", 2, 2)
    fg.add_factors(np.array([[0, 1]]), np.array([[[0.0, 0.0], [0.0, 5.0]]]))
    kw = dict(algorithm="mf", iterations=5, dtype=torch.float64)
    # 40: 1 - q1 rounds to 0; 720: q0 = exp(-720) is subnormal, where torch's sigmoid gives 0
    for field in (40.0, 720.0):
        u = torch.tensor([[[0.0, field], [0.0, 0.0]]], dtype=torch.float64)
        fast = pu.compile(fg, **kw)(unary={x: u})
        slow = pu.compile(fg, fast_path=False, **kw)(unary={x: u})
        assert -800.0 < float(fast.log_marginals[0, 0, 0]) < -40.0  # not the -1e30 sentinel
        torch.testing.assert_close(fast.log_marginals, slow.log_marginals, atol=1e-9, rtol=1e-9)
