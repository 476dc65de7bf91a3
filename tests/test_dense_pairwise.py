"""The exp-domain matmul contraction for pairwise tables equals the log-domain reduction."""

import numpy as np
import pytest
import torch
from helpers import grid
from hypothesis import given
from hypothesis import strategies as st

import pgmunfold as pu
from pgmunfold.infer.ops import NEG, dense_pairwise, dense_pairwise_messages, factor_to_variable


@given(
    st.integers(1, 5),
    st.integers(1, 5),
    st.integers(1, 4),
    st.booleans(),
    st.sampled_from([0.1, 5.0, 25.0]),
    st.integers(0, 2**31 - 1),
)
def test_kernel_equals_logsumexp_twin(k0, k1, B, shared, scale, seed):
    g = torch.Generator().manual_seed(seed)
    F = 1 if shared else 3
    theta = scale * torch.randn(F, k0, k1, dtype=torch.float64, generator=g)
    q0 = 10 * torch.randn(B, 3, k0, dtype=torch.float64, generator=g)
    q1 = 10 * torch.randn(B, 3, k1, dtype=torch.float64, generator=g)
    q1[..., 0] = -1e30  # an evidence-style hard zero in a cavity
    fast = dense_pairwise_messages(dense_pairwise(theta), q0, q1)
    ref = factor_to_variable(theta, [q0, q1], "sum")
    for a, b in zip(fast, ref, strict=True):
        if b.shape[-1] > 0:
            shift = b.amax(-1, keepdim=True)
            torch.testing.assert_close(a - shift, b - shift, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("k", [2, 3, 8])
def test_network_matmul_equals_logsumexp(k):
    fg, x = grid(4, k=k, coupling=0.8, seed=k)
    u = torch.randn(3, 4, 4, k, dtype=torch.float64)
    ev = {("x", 1, 2): torch.tensor([0, 1, 0])}
    outs, grads = [], []
    for contraction in ("logsumexp", "matmul", "auto"):
        net = pu.compile(
            fg,
            iterations=6,
            damping=0.3,
            dtype=torch.float64,
            fast_path=False,
            contraction=contraction,
            untie=True,
        )
        uu = u.clone().requires_grad_()
        out = net(unary={x: uu}, evidence=ev)
        (out.log_partition.sum() + out.log_marginals[..., 0].sum()).backward()
        outs.append(out)
        grads.append([uu.grad, *[p.grad for p in net.parameters()]])
    for out, gr in zip(outs[1:], grads[1:], strict=True):
        torch.testing.assert_close(out.log_marginals, outs[0].log_marginals)
        torch.testing.assert_close(out.log_partition, outs[0].log_partition)
        for a, b in zip(gr, grads[0], strict=True):
            torch.testing.assert_close(a, b)


def test_auto_falls_back_for_wide_ranges_and_hard_zeros():
    fg, _ = grid(3, k=3, coupling=1.0, seed=1)
    for g in fg.groups:
        g.log_potentials *= 1e3  # range far above the float32 limit of 60 nats
    net = pu.compile(fg, iterations=5)
    th = net._at(net._thetas(), 0)
    assert net._dense_plans(th, net._merge_tables(th, NEG)) is None
    ref = pu.compile(fg, iterations=5, contraction="logsumexp")()
    torch.testing.assert_close(net().log_marginals, ref.log_marginals)
    hard, _ = grid(3, k=3, seed=2, hard=True)
    net = pu.compile(hard, iterations=5)
    th = net._at(net._thetas(), 0)
    assert net._dense_plans(th, net._merge_tables(th, NEG)) is None
    with pytest.raises(ValueError, match="contraction"):
        pu.compile(hard, contraction="fast")


def test_matmul_survives_float32_at_the_limit():
    rng = np.random.default_rng(0)
    fg, _ = grid(5, k=4, coupling=1.0, seed=3)
    for g in fg.groups:
        if g.arity == 2:
            g.log_potentials[:] = rng.uniform(-29, 29, size=g.log_potentials.shape)
    a = pu.compile(fg, iterations=10, contraction="matmul")()
    b = pu.compile(fg, iterations=10, contraction="logsumexp")()
    assert torch.isfinite(a.log_marginals).all()
    torch.testing.assert_close(a.probs, b.probs, atol=2e-5, rtol=0)
