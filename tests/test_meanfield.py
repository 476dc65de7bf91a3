import itertools

import numpy as np
import pytest
import torch
from helpers import brute_force, grid, mean_field_reference, random_graphs
from hypothesis import assume, given
from hypothesis import strategies as st

import pgmunfold as pu


@given(random_graphs(max_vars=5, max_factors=5))
def test_mf_bound_below_exact_log_z(fg):
    logz, _, _, _ = brute_force(fg)
    assume(np.isfinite(logz))
    out = pu.compile(
        fg, algorithm="mf", iterations=20, schedule="sequential", dtype=torch.float64
    )()
    assert float(out.log_partition) <= logz + 1e-9
    assert not torch.isnan(out.log_marginals).any()


@given(random_graphs(max_vars=5, max_factors=6, hard_zeros=False))
def test_mf_sequential_bound_is_monotone(fg):
    bounds = [
        float(
            pu.compile(
                fg, algorithm="mf", iterations=t, schedule="sequential", dtype=torch.float64
            )().log_partition
        )
        for t in range(1, 7)
    ]
    assert all(b2 >= b1 - 1e-10 for b1, b2 in itertools.pairwise(bounds))


def test_mf_fixed_point_and_schedules_agree_on_weak_grid():
    fg, _ = grid(4, k=3, coupling=0.2, seed=0)
    seq = pu.compile(
        fg, algorithm="mf", iterations=100, schedule="sequential", dtype=torch.float64
    )()
    par = pu.compile(fg, algorithm="mf", iterations=200, damping=0.5, dtype=torch.float64)()
    assert float(seq.residual) < 1e-10
    torch.testing.assert_close(seq.log_marginals, par.log_marginals, atol=1e-8, rtol=0)
    # fixed-point check, independent of the kernels: q_v ∝ exp(unary + sum_f E[theta_f])
    q = seq.probs.detach().numpy()
    fld = np.zeros_like(q)
    for scope, table in fg.factors():
        for i, v in enumerate(scope):
            t = np.moveaxis(table, i, 0)
            for _j, u in enumerate([s for s in scope if s != v]):
                t = np.tensordot(t, q[u], axes=([1], [0]))
            fld[v] += t
    ref = np.exp(fld - fld.max(1, keepdims=True))
    ref /= ref.sum(1, keepdims=True)
    np.testing.assert_allclose(q, ref, atol=1e-8)


def test_mf_exact_without_couplings():
    fg = pu.FactorGraph()
    x = fg.add_variables("x", 4, 3)
    rng = np.random.default_rng(0)
    fg.add_factors(x.ids[:, None], rng.normal(size=(4, 3)))
    out = pu.compile(fg, algorithm="mf", iterations=1, dtype=torch.float64)()
    assert float(out.log_partition) == pytest.approx(float(pu.exact_log_partition(fg)), abs=1e-10)


def test_mf_gradcheck():
    fg, _x = grid(2, k=2, coupling=0.5, seed=3)
    net = pu.compile(
        fg, algorithm="mf", iterations=3, schedule="sequential", damping=0.1, dtype=torch.float64
    )
    keys = [k for k, _ in net.named_parameters()]

    def f(*ps):
        out = torch.func.functional_call(net, dict(zip(keys, ps, strict=True)), ())
        return out.probs, out.log_partition

    ps = tuple(p.detach().clone().requires_grad_() for p in net.parameters())
    assert torch.autograd.gradcheck(f, ps)


def test_mf_evidence_clamps():
    fg, _x = grid(3, k=2, coupling=0.5, seed=4)
    out = pu.compile(fg, algorithm="mf", iterations=10)(evidence={("x", 1, 1): 1})
    assert out.marginals[("x", 1, 1)].tolist() == [0.0, 1.0]


def test_mf_rejects_max_semiring():
    fg, _ = grid(2)
    with pytest.raises(ValueError, match="mean-field"):
        pu.compile(fg, algorithm="mf", semiring="max")


MF_PATHS = [{}, {"contraction": "logsumexp"}, {"contraction": "enumerate"}, {"fast_path": False}]


def _mf_against_reference(fg, iterations: int, damping: float, seed: int, atol: float) -> None:
    V, K = len(fg.cardinalities), int(max(fg.cardinalities))
    unary = np.random.default_rng(seed).normal(size=(V, K))
    expected = mean_field_reference(fg, unary, iterations, damping)
    u = torch.as_tensor(unary).unsqueeze(0)
    for cfg in MF_PATHS:
        net = pu.compile(
            fg, algorithm="mf", iterations=iterations, damping=damping, dtype=torch.float64, **cfg
        )
        with torch.no_grad():
            got = net(unary=u).probs[0].numpy()
        np.testing.assert_allclose(got, expected, atol=atol, rtol=0, err_msg=str(cfg))


@given(random_graphs(max_vars=5, max_factors=6, hard_zeros=False), st.sampled_from([0.0, 0.3]))
def test_parallel_mean_field_on_every_path_equals_the_plain_loops(fg, damping):
    assume(len(fg.cardinalities) > 0)
    _mf_against_reference(fg, iterations=3, damping=damping, seed=0, atol=1e-10)


def test_padding_states_take_no_mass_when_hard_zeros_weigh_down_a_variable():
    """Card-1 variables whose only state meets two hard zeros at once in the first iteration
    (field about -1.1e30, below the padding states' sentinel -1e30): before the fix the padded
    mean-field step (contraction="logsumexp", fast_path=False) gave the padding states that
    mass, and its neighbours' fields dropped the factors (marginals off by 0.11; found by
    hypothesis in test_flat_mean_field_equals_the_padded_step)."""
    fg = pu.FactorGraph()
    for v, c in enumerate([1, 1, 3, 2, 3, 1, 1]):
        fg.add_variable(v, c)
    rng = np.random.default_rng(0)
    fg.add_factor((1,), rng.normal(size=(1,)))
    fg.add_factor((6, 5), rng.normal(size=(1, 1)))
    fg.add_factor((3, 1), np.array([[-np.inf], [1.7]]))
    fg.add_factor((3, 4, 2), rng.normal(size=(2, 3, 3)))
    fg.add_factor((4,), rng.normal(size=(3,)))
    fg.add_factor((2, 6, 1), np.array([[[0.02]], [[0.15]], [[-np.inf]]]))
    fg.add_factor((2, 5, 3), rng.normal(size=(3, 1, 2)))
    for seed in range(5):
        _mf_against_reference(fg, iterations=4, damping=0.0, seed=seed, atol=1e-12)
