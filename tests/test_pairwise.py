"""The pairwise state-major fast path (infer/pairwise.py) equals the general K-state path."""

import contextlib

import numpy as np
import pytest
import torch
from helpers import assert_same_values_and_grads, distinct_copies, grid
from hypothesis import given
from hypothesis import strategies as st

import pgmunfold as pu
from pgmunfold.compile import wiring
from pgmunfold.infer import pairwise
from pgmunfold.infer.pairwise import (
    LOG2E,
    NEG_BITS,
    LogStateReduce,
    StateMatvec,
    log_state_reduce,
    pairwise_messages,
    pairwise_tables,
    state_matvec_naive,
)
from pgmunfold.infer.workspace import Workspace


@st.composite
def pairwise_graphs(draw):
    n = draw(st.integers(2, 7))
    k = draw(st.integers(3, 5))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    fg = pu.FactorGraph()
    x = fg.add_variables("x", n, k)
    m = draw(st.integers(1, 10))
    pairs = np.array([rng.choice(n, 2, replace=False) for _ in range(m)])
    # 1000: past the float64 range limit of the exp-domain contraction (log form instead)
    scale = draw(st.sampled_from([0.0, 0.1, 1.0, 5.0, 1000.0]))
    if draw(st.booleans()):  # a unary group before the pairwise block
        fg.add_factors(x.ids[:1, None], rng.normal(size=(1, k)), name="first")
    tabs = scale * rng.normal(size=(m, k, k))
    if draw(st.booleans()):  # hard zeros: one forbidden pair of states per table
        tabs[:, 0, k - 1] = -np.inf
    fg.add_factors(pairs, tabs, name="pair")
    if draw(st.booleans()):  # a second pairwise group, one shared table
        fg.add_factors(pairs[::-1], rng.normal(size=(k, k)), name="shared")
    if draw(st.booleans()):
        fg.add_factors(x.ids[:, None], rng.normal(size=(n, k)), name="unary")
    return fg, x


@contextlib.contextmanager
def contraction_mode(columns: bool, loop: bool = False):
    """``columns``: every message column at once (the default on these small graphs); else
    per unit and direction (``pairwise._COLUMNS_MAX = 0``: the contraction of large graphs),
    there with ``loop``: the loop over states (``_BROADCAST_MAX = 0``) instead of all
    ``K x K`` terms at once."""
    saved = pairwise._COLUMNS_MAX, pairwise._BROADCAST_MAX
    pairwise._COLUMNS_MAX = saved[0] if columns else 0
    pairwise._BROADCAST_MAX = 0 if loop else saved[1]
    try:
        yield
    finally:
        pairwise._COLUMNS_MAX, pairwise._BROADCAST_MAX = saved


def _assert_same(a, b, semiring, tol=1e-9):
    torch.testing.assert_close(a.log_marginals, b.log_marginals, atol=tol, rtol=tol)
    torch.testing.assert_close(a.residual, b.residual, atol=tol, rtol=tol)
    lm = a.log_marginals.detach()
    top2 = lm.topk(2, dim=-1).values
    decisive = bool(((top2[..., 0] - top2[..., 1]).abs() > 1e-6).all())
    if decisive:  # an exact tie (e.g. two states at log 1/2) decodes by rounding
        torch.testing.assert_close(a.map_states, b.map_states)
    if semiring == "sum" or decisive:  # max-product scores the (tie-sensitive) decode
        torch.testing.assert_close(a.log_partition, b.log_partition, atol=tol, rtol=tol)
    for name, fb in b.factor_log_beliefs.items():
        torch.testing.assert_close(a.factor_log_beliefs[name], fb, atol=tol, rtol=tol)


def _fast_and_general(fg, x, u0, loss_state=1, evidence=None, perturb=False, **kw):
    """Nets, outputs and gradients (unary input, then every parameter) of the fast path and of
    the general path on the same graph and input; ``perturb`` moves every parameter copy by the
    same seeded noise in both nets (so that untied copies differ)."""
    nets, outs, grads = [], [], []
    for fast in (True, False):
        net = pu.compile(fg, dtype=torch.float64, fast_path=fast, **kw)
        if perturb:
            gen = torch.Generator().manual_seed(11)
            with torch.no_grad():
                for p in net.parameters():
                    p.add_(0.3 * torch.randn(p.shape, dtype=p.dtype, generator=gen))
        u = u0.clone().requires_grad_()
        out = net(unary={x: u}, evidence=evidence)
        (out.log_partition.sum() + out.log_marginals.exp()[..., loss_state].sum()).backward()
        nets.append(net)
        outs.append(out)
        grads.append([u.grad, *[p.grad for p in net.parameters()]])
    for a, b in zip(*grads, strict=True):
        assert not torch.isnan(a).any()
        # absolute error also relative to the largest entry: with 1000-scale tables the
        # gradients reach 1e4, and entries near 0 differ by ~1e-11 of the largest between the
        # two orders of summation (1.2e-7 where the largest is 1.7e4)
        atol = max(1e-7, 1e-10 * float(b.abs().max()))
        torch.testing.assert_close(a, b, atol=atol, rtol=1e-7)
    return nets, outs


@given(
    pairwise_graphs(),
    st.sampled_from(["sum", "max"]),
    st.sampled_from(["auto", "logsumexp"]),
    st.sampled_from([0.0, 0.4]),
    st.integers(1, 3),
    st.booleans(),
    st.integers(0, 2**31 - 1),
    st.sampled_from([(True, False), (False, False), (False, True)]),
)
def test_fast_path_equals_general(gx, semiring, contraction, damping, B, with_evidence, seed, mode):
    """Every contraction of the fast path (``mode``: see :func:`contraction_mode`)."""
    with contraction_mode(*mode):
        _fast_path_equals_general(gx, semiring, contraction, damping, B, with_evidence, seed)


def _fast_path_equals_general(gx, semiring, contraction, damping, B, with_evidence, seed):
    fg, x = gx
    kw = dict(
        iterations=6,
        damping=damping,
        semiring=semiring,
        contraction=contraction,
        dtype=torch.float64,
    )
    fast = pu.compile(fg, **kw)
    slow = pu.compile(fg, fast_path=False, **kw)
    assert fast.pairwise_fast and not slow.pairwise_fast and not fast.binary_fast
    gen = torch.Generator().manual_seed(seed)
    k = int(fast.max_card)
    u = torch.randn(B, len(fg), k, dtype=torch.float64, generator=gen)
    ev = {("x", 0): torch.randint(0, k, (B,), generator=gen)} if with_evidence else None
    ref = slow(unary={x: u}, evidence=ev)
    _assert_same(fast(unary={x: u}, evidence=ev), ref, semiring)
    with torch.no_grad():  # the in-place variant (reused buffers) of the same kernels
        _assert_same(fast(unary={x: u}, evidence=ev), ref, semiring)


@given(
    pairwise_graphs(),
    st.sampled_from(["bp", "mf"]),
    st.integers(1, 3),
    st.booleans(),
    st.sampled_from([0.0, 0.4]),
    st.integers(0, 2**31 - 1),
    st.booleans(),
)
def test_tied_table_gradients_equal_general(gx, algorithm, B, checkpoint, damping, seed, columns):
    """Tied tables read by every iteration and both directions: their gradient (per unit:
    summed in place through one link per table, ``TableGrad``; ``columns``: plain autograd
    through the column tables) equals autograd's on the general path, for BP and mean-field,
    one and several batch rows, a shared table, hard zeros and per-iteration checkpointing."""
    fg, x = gx
    gen = torch.Generator().manual_seed(seed)
    k = int(fg.cardinalities[0])
    u0 = torch.randn(B, len(fg), k, dtype=torch.float64, generator=gen)
    kw = dict(algorithm=algorithm, iterations=5, damping=damping, checkpoint=checkpoint)
    with contraction_mode(columns):
        nets, outs = _fast_and_general(fg, x, u0, **kw)
    assert nets[0].pairwise_fast or nets[0].mf_fast
    torch.testing.assert_close(outs[0].log_marginals, outs[1].log_marginals)


@pytest.mark.parametrize("semiring", ["sum", "max"])
@pytest.mark.parametrize("untie_last", [None, 2])
def test_untied_gradients_equal_general(semiring, untie_last):
    rng = np.random.default_rng(3)
    fg, x = grid(3, k=4, coupling=1.0, seed=3)
    fg.add_factors(x.ids.reshape(-1, 1), rng.normal(size=(9, 4)), name="unary2")
    u0 = torch.as_tensor(rng.normal(size=(2, 3, 3, 4)))
    kw = dict(iterations=5, damping=0.3, semiring=semiring, untie=True, untie_last=untie_last)
    nets, outs = _fast_and_general(fg, x, u0, perturb=True, **kw)
    assert nets[0].pairwise_fast and not nets[1].pairwise_fast
    _assert_same(outs[0], outs[1], semiring)


@pytest.mark.parametrize("semiring", ["sum", "max"])
def test_gradcheck(semiring):
    rng = np.random.default_rng(1)
    fg = pu.FactorGraph()
    x = fg.add_variables("x", 4, 3)
    fg.add_factors(np.array([[0, 1], [1, 2], [2, 3], [3, 0]]), rng.normal(size=(4, 3, 3)))
    net = pu.compile(fg, iterations=4, damping=0.2, semiring=semiring, dtype=torch.float64)
    assert net.pairwise_fast
    u = torch.randn(2, 4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda u: net(unary={x: u}).log_marginals, (u,))


def test_checkpoint_gradients_identical():
    fg, _ = grid(3, k=3, coupling=1.0, seed=4)
    grads = []
    for ckpt in (False, True):
        net = pu.compile(fg, iterations=4, damping=0.5, checkpoint=ckpt, dtype=torch.float64)
        assert net.pairwise_fast
        net(unary=torch.ones(1, 9, 3, dtype=torch.float64)).log_partition.sum().backward()
        grads.append([p.grad for p in net.parameters()])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_float32_huge_potentials_and_evidence():
    fg, x = grid(4, k=5, coupling=1e4, seed=5)  # log form: far past the exp-form range
    # a seeded draw: the test does not depend on the global RNG, i.e. on the tests before it
    # (at this scale float32 carries ~1e-3 nats of rounding, and an unlucky draw puts the two
    # float32 paths 1.6e-4 apart in probability: the general one, not the fast one, is then off
    # from float64 by 1.4e-4)
    u = 1e4 * torch.randn(2, 4, 4, 5, generator=torch.Generator().manual_seed(0))
    ev = {("x", 0, 0): torch.tensor([1, 4])}
    fast = pu.compile(fg, iterations=8, damping=0.5)(unary={x: u}, evidence=ev)
    slow = pu.compile(fg, iterations=8, damping=0.5, fast_path=False)(unary={x: u}, evidence=ev)
    assert torch.isfinite(fast.log_partition).all()
    assert not torch.isnan(fast.log_marginals).any()
    torch.testing.assert_close(
        fast.log_marginals.exp(), slow.log_marginals.exp(), atol=1e-5, rtol=0
    )
    assert (fast.map_states[:, 0] == torch.tensor([1, 4])).all()


def _chain(k: int, tabs: np.ndarray, n: int = 5) -> pu.FactorGraph:
    fg = pu.FactorGraph()
    fg.add_variables("x", n, k)
    fg.add_factors(np.array([[i, i + 1] for i in range(n - 1)]), tabs, name="pair")
    fg.add_factors(np.arange(n).reshape(-1, 1), np.zeros((n, k)), name="unary")
    return fg


@pytest.mark.parametrize(
    ("k", "fast_path", "what"),
    [
        (2, True, "interaction"),  # the binary path: |t11 - t10 - t01 + t00| below 80
        (4, True, "log-range"),  # the pairwise path: each table's range below 60
        (3, False, "log-range"),  # the general path's merges
        (2, True, "hard zero"),
        (4, True, "hard zero"),
        (3, False, "hard zero"),
    ],
)
def test_matmul_refuses_tables_outside_its_exact_range(k, fast_path, what):
    """``contraction="matmul"`` on tables past the exp-domain range, or with a hard zero
    (with which strong evidence made a third of small random models wrong): a ``ValueError``
    at compile time naming the factor, its group and scope, on every path; ``"auto"`` takes
    the log form on the same tables and matches ``"logsumexp"``. Then a network compiled on
    tables in range refuses a forward on CPU once its parameters leave it (training)."""
    rng = np.random.default_rng(k)
    tabs = rng.normal(size=(4, k, k))
    if what == "hard zero":
        tabs[2, 0, 1] = -np.inf
    else:
        tabs[2, 0, 0] = 100.0  # factor 2: range (and interaction) about 100
    fg = _chain(k, tabs)
    kw = dict(iterations=6, fast_path=fast_path)
    with pytest.raises(
        ValueError, match=rf"factor 2 of group 'pair' \(scope \(\('x', 2\), \('x', 3\)\).*{what}"
    ):
        pu.compile(fg, contraction="matmul", **kw)
    auto = pu.compile(fg, **kw)
    assert (auto.binary_fast or auto.pairwise_fast) == fast_path
    assert auto.binary_fast == (what == "interaction")  # (hard zeros: the pairwise path)
    ref = pu.compile(fg, contraction="logsumexp", dtype=torch.float64, **kw)()
    torch.testing.assert_close(
        auto().log_marginals.exp().double(), ref.log_marginals.exp(), atol=1e-5, rtol=0
    )
    net = pu.compile(_chain(k, rng.normal(size=(4, k, k))), contraction="matmul", **kw)
    net()
    with torch.no_grad():
        net.potentials["pair"].mul_(200.0)
    with pytest.raises(ValueError, match=r"factor \d of group 'pair'"):
        net()


def test_matmul_checks_at_compile_time_where_forwards_go_unchecked(monkeypatch):
    """Where a forward must not read the host (here ``torch.compile`` tracing, simulated; on
    a GPU likewise), ``"matmul"`` still checks the declared tables at compile time, and the
    forward runs unchecked."""
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    rng = np.random.default_rng(3)
    wide = rng.normal(size=(4, 4, 4))
    wide[1, 2, 3] = 100.0
    with pytest.raises(ValueError, match="factor 1 of group 'pair'"):
        pu.compile(_chain(4, wide), iterations=4, contraction="matmul")
    net = pu.compile(_chain(4, rng.normal(size=(4, 4, 4))), iterations=4, contraction="matmul")
    assert net.pairwise_fast
    with torch.no_grad():
        net.potentials["pair"].mul_(200.0)
    net()  # (no host read: no check)


def test_exp_shifted_tables_past_the_checked_range_shift_each_cavity():
    """The ``"exp_shifted"`` form (what ``"matmul"`` runs, unchecked on the GPU) shifts each
    cavity to a maximum of 0: exact past ``"exp"``'s limit of 60 nats in float32 (here 75),
    against the log form."""
    rng = np.random.default_rng(6)
    th = torch.as_tensor(75.0 * rng.random((6, 4, 4)), dtype=torch.float32)
    th[:, 0, 0], th[:, 1, 1] = 0.0, 75.0
    q = torch.as_tensor(30.0 * rng.normal(size=(2, 4, 12)), dtype=torch.float32)
    q = q - q.amax(dim=1, keepdim=True)
    out = {}
    for form in ("exp_shifted", "log"):
        tables = [pairwise_tables(th, form, 4, link=False)]
        out[form] = pairwise_messages(q.clone(), tables, [6], "sum")
    p = {f: torch.softmax(m[:, :, :-1] / LOG2E, dim=1) for f, m in out.items()}
    torch.testing.assert_close(p["exp_shifted"], p["log"], atol=1e-5, rtol=0)


def test_auto_checks_each_tables_own_log_range():
    """Each table is shifted by its own maximum, so ``"auto"`` takes the exp form when every
    table's range is below the limit, however far apart the tables sit (here 200 nats)."""
    rng = np.random.default_rng(8)
    fg = pu.FactorGraph()
    x = fg.add_variables("x", (4, 4), 3)
    pairs = np.stack([x.ids[:, :-1], x.ids[:, 1:]], -1).reshape(-1, 2)
    tabs = 2.0 * rng.normal(size=(len(pairs), 3, 3))
    tabs[::2] += 200.0  # every other table far above the rest
    fg.add_factors(pairs, tabs)
    fg.add_factors(x.ids.reshape(-1, 1), rng.normal(size=(16, 3)))
    net = pu.compile(fg, iterations=8, damping=0.3)
    th = net._at(net._thetas(), 0)[net._pw_idx[0]]
    assert net._pairwise_tables([th], 60.0, net._pw_idx).form == "exp"
    ref = pu.compile(fg, iterations=8, damping=0.3, contraction="logsumexp")()
    torch.testing.assert_close(net().log_marginals, ref.log_marginals, atol=1e-5, rtol=1e-5)
    wide = tabs.copy()
    wide[0, 0, 0] -= 70.0  # one table past the limit: the whole group takes the log form
    fg2 = pu.FactorGraph()
    fg2.add_variables("x", (4, 4), 3)
    fg2.add_factors(pairs, wide)
    net2 = pu.compile(fg2, iterations=8)
    assert net2._pairwise_tables([net2._at(net2._thetas(), 0)[0]], 60.0, [0]).form == "log"


def test_applicability():
    fg, _ = grid(3, k=3, seed=7)
    assert pu.compile(fg).pairwise_fast
    for kw in (
        dict(schedule="sequential"),
        dict(algorithm="mf"),
        dict(fast_path=False),
    ):
        assert not pu.compile(fg, **kw).pairwise_fast, kw
    binary, _ = grid(3, k=2, seed=7)
    net = pu.compile(binary)
    assert net.binary_fast and not net.pairwise_fast
    hard, _ = grid(3, k=3, seed=7, hard=True)  # -inf entries: exact cavities, same fast path
    net = pu.compile(hard)
    assert net.pairwise_fast and net.exact_cavity
    mixed = pu.FactorGraph()
    mixed.add_variable("a", 3)
    mixed.add_variable("b", 4)
    mixed.add_factor(["a", "b"], np.zeros((3, 4)))
    assert pu.compile(mixed).pairwise_fast  # padded to 4 states
    triple = pu.FactorGraph()
    t = triple.add_variables("t", 3, 3)
    triple.add_factors(t.ids[None, :], np.zeros((1, 3, 3, 3)))
    triple.add_factors(t.ids[:2][None, :], np.zeros((1, 3, 3)))
    assert not pu.compile(triple).pairwise_fast


def test_workspace_reuses_buffers_only_without_autograd():
    x = torch.zeros(3)
    assert not Workspace.for_forward().enabled  # autograd records: no reuse
    with torch.no_grad():
        ws = Workspace.for_forward()
    assert ws.enabled
    a = ws("a", (2, 3), x)
    assert a is not None and a.shape == (2, 3)
    again = ws("a", (2, 3), x)
    assert again is not None and again.data_ptr() == a.data_ptr()
    a.fill_(1.0)
    smaller = ws("a", (2, 2), x)  # a view of the same buffer's first elements
    assert smaller is not None and smaller.shape == (2, 2)
    assert smaller.data_ptr() == a.data_ptr() and smaller.is_contiguous()
    b = ws("a", (7,), x)  # larger: a new buffer; the old views keep theirs
    assert b is not None and b.shape == (7,) and b.data_ptr() != a.data_ptr()
    assert torch.equal(a, torch.ones(2, 3))
    assert ws("a", (4,), x.double()).dtype == torch.float64
    assert Workspace(False)("a", (2,), x) is None


@given(st.integers(1, 3), st.integers(1, 5), st.integers(1, 6), st.booleans(), st.integers(0, 99))
def test_state_matvec_equals_naive_twin(B, K, F, shared, seed):
    gen = torch.Generator().manual_seed(seed)
    tab = torch.rand(K, K, 1 if shared else F, dtype=torch.float64, generator=gen)
    p = torch.rand(B, K, F, dtype=torch.float64, generator=gen)
    tab.requires_grad_()
    p.requires_grad_()
    tab_t = tab.detach().transpose(0, 1).contiguous()
    fast = StateMatvec.apply(tab, tab_t, p, None)
    ref = state_matvec_naive(tab, p)
    torch.testing.assert_close(fast, ref)
    g = torch.rand(B, K, F, dtype=torch.float64, generator=gen)
    ga = torch.autograd.grad(fast, (tab, p), g)
    gb = torch.autograd.grad(ref, (tab, p), g)
    for a, b in zip(ga, gb, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("semiring", ["sum", "max"])
@pytest.mark.parametrize(("B", "shared"), [(1, False), (3, False), (1, True), (3, True)])
def test_log_state_reduce_backward_equals_autograd(semiring, B, shared):
    """:class:`LogStateReduce`'s hand-written backward against autograd through its twin:
    the loop of :func:`log_state_reduce` for log2-sum-exp2; for max, ``torch.amax`` over all
    ``K x K`` terms at once, which splits the gradient of tied maxima evenly, as the general
    path does (a chain of ``torch.maximum`` would halve it at each tie instead). Values and
    gradients, with sentinel entries (padded states) whose sums all tie in float64 and, for
    max, an exact tie of two finite terms. Then ``gradcheck`` where nothing ties. Both ways
    of the backward: the whole-buffer one (one batch row, a table per factor) and the loop
    over states (several rows, or a table shared by every factor)."""
    gen = torch.Generator().manual_seed(B)
    tab = torch.randn(4, 4, 1 if shared else 5, dtype=torch.float64, generator=gen)
    col = (lambda f: 0) if shared else (lambda f: f)  # the table column factor f reads
    tab[3, :, col(0)] = NEG_BITS  # a padded state j
    tab[:, 3, col(1)] = NEG_BITS  # a padded state a: every term a sentinel
    q = torch.randn(B, 4, 5, dtype=torch.float64, generator=gen)
    if semiring == "max":  # terms j = 0 and 1 of output a = 0, f = 2: tied, the largest
        tab[1, 0, col(2)] = tab[0, 0, col(2)]
        q[:, 0, 2] += 10.0
        q[:, 1, 2] = q[:, 0, 2]
    g = torch.randn(B, 4, 5, dtype=torch.float64, generator=gen)

    def twin(t: torch.Tensor, x: torch.Tensor, semiring: str) -> torch.Tensor:
        if semiring == "max":
            return (t.unsqueeze(0) + x.unsqueeze(2)).amax(dim=1)
        return log_state_reduce(t, x, "sum")

    outs, grads = [], []
    for fn in (LogStateReduce.apply, twin):
        t, x = tab.clone().requires_grad_(), q.clone().requires_grad_()
        out = fn(t, x, semiring)
        outs.append(out.detach())
        grads.append(torch.autograd.grad(out, (t, x), g))
    torch.testing.assert_close(outs[0], outs[1], atol=0, rtol=0)
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)
    t = torch.randn(3, 3, 1 if shared else 4, dtype=torch.float64, generator=gen)
    x = torch.randn(B, 3, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    t.requires_grad_()
    assert torch.autograd.gradcheck(lambda t, x: LogStateReduce.apply(t, x, semiring), (t, x))


# dynamo (torch 2.13) instantiates torch.autograd.Function for the ctx of a custom Function
# and warns that it is deprecated; pytest's warnings-as-errors turns that into an error inside
# dynamo (fixed upstream by pytorch/pytorch#186421); a plain run shows no warning
@pytest.mark.filterwarnings("ignore:.*should not be instantiated:DeprecationWarning")
@pytest.mark.parametrize("semiring", ["sum", "max"])
def test_torch_compile_through_the_log_form_backward(semiring):
    """``torch.compile(..., fullgraph=True)`` traces :class:`LogStateReduce`, its backward
    included: the same marginals and gradients as eager."""
    rng = np.random.default_rng(2)
    fg = pu.FactorGraph()
    fg.add_variables("x", 6, 3)
    fg.add_factors(
        np.array([[0, 1], [1, 2], [2, 3], [3, 4], [4, 5], [5, 0]]), rng.normal(size=(6, 3, 3))
    )
    with contraction_mode(columns=False, loop=True):
        net = pu.compile(fg, iterations=3, contraction="logsumexp", semiring=semiring)
        grads = []
        for run in (net, torch.compile(net, backend="aot_eager", fullgraph=True)):
            net.zero_grad(set_to_none=True)
            out = run()
            (out.probs * torch.linspace(0, 1, 18).view(1, 6, 3)).sum().backward()
            grads.append((out.log_marginals.detach(), next(net.parameters()).grad.clone()))
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


@given(
    pairwise_graphs(),
    st.sampled_from(["sum", "max"]),
    st.sampled_from(["bp", "mf"]),
    st.integers(1, 3),
    st.booleans(),
    st.integers(0, 2**31 - 1),
)
def test_log_form_loop_gradients_equal_general(gx, semiring, algorithm, B, untie, seed):
    """The log form's loop over states (``contraction="logsumexp"`` or max-product, per unit
    and direction, :class:`LogStateReduce` under autograd): values and gradients equal the
    general path's, with hard zeros, shared tables, untied copies and batches."""
    fg, x = gx
    gen = torch.Generator().manual_seed(seed)
    u0 = torch.randn(B, len(fg), int(fg.cardinalities[0]), dtype=torch.float64, generator=gen)
    kw = dict(
        algorithm=algorithm,
        semiring="sum" if algorithm == "mf" else semiring,
        contraction="logsumexp",
        iterations=4,
        damping=0.3,
        untie=untie,
    )
    with contraction_mode(columns=False, loop=True):
        nets, outs = _fast_and_general(fg, x, u0, perturb=untie, **kw)
    assert nets[0].pairwise_fast or nets[0].mf_fast
    _assert_same(outs[0], outs[1], kw["semiring"])


@pytest.mark.parametrize("B", [1, 2])  # one batch row has its own table-gradient branch
def test_state_matvec_gradcheck(B):
    tab = torch.rand(3, 3, 4, dtype=torch.float64, requires_grad=True)
    p = torch.rand(B, 3, 4, dtype=torch.float64, requires_grad=True)

    def f(tab, p):
        return StateMatvec.apply(tab, tab.detach().transpose(0, 1).contiguous(), p, None)

    assert torch.autograd.gradcheck(f, (tab, p))


@given(
    pairwise_graphs(),
    st.sampled_from([0.0, 0.4]),
    st.integers(1, 3),
    st.booleans(),
    st.integers(0, 2**31 - 1),
    st.booleans(),
)
def test_mean_field_fast_path_equals_general(gx, damping, B, with_evidence, seed, columns):
    with contraction_mode(columns):
        _mean_field_fast_path_equals_general(gx, damping, B, with_evidence, seed)


def _mean_field_fast_path_equals_general(gx, damping, B, with_evidence, seed):
    fg, x = gx
    kw = dict(algorithm="mf", iterations=6, damping=damping, dtype=torch.float64)
    fast = pu.compile(fg, **kw)
    slow = pu.compile(fg, fast_path=False, **kw)
    assert fast.mf_fast and not slow.mf_fast
    gen = torch.Generator().manual_seed(seed)
    k = int(fast.max_card)
    u = torch.randn(B, len(fg), k, dtype=torch.float64, generator=gen)
    ev = {("x", 0): torch.randint(0, k, (B,), generator=gen)} if with_evidence else None
    ref = slow(unary={x: u}, evidence=ev)
    for grad in (True, False):
        with torch.set_grad_enabled(grad):
            out = fast(unary={x: u}, evidence=ev)
        torch.testing.assert_close(out.log_marginals, ref.log_marginals, atol=1e-9, rtol=1e-9)
        torch.testing.assert_close(out.log_partition, ref.log_partition, atol=1e-8, rtol=1e-9)
        torch.testing.assert_close(out.residual, ref.residual, atol=1e-9, rtol=1e-9)


def _matmul_refuses(fg: pu.FactorGraph) -> bool:
    """Whether ``contraction="matmul"`` (float64) refuses the graph's pairwise tables: a hard
    zero, or a table's log-range of 600 nats or more."""
    tabs = [g.log_potentials for g in fg.groups if g.log_potentials.ndim == 3]
    return any(np.isneginf(t).any() or np.ptp(t, axis=(1, 2)).max() >= 600 for t in tabs)


@given(
    pairwise_graphs(),
    st.sampled_from(["sum", "max"]),
    st.sampled_from(["auto", "logsumexp", "matmul"]),
    st.sampled_from([0.0, 0.4]),
    st.integers(1, 3),
    st.booleans(),
    st.booleans(),
)
def test_column_sweep_equals_the_functional_step(
    gx, semiring, contraction, damping, B, untie, buckets
):
    """The no-grad loop of the column contraction (``ColumnSweep``) against the functional
    step (under autograd) of the same network: every contraction form, hard zeros (exact
    cavities), untied copies (unary ones change the field between iterations), batches;
    ``buckets``: slot plans of base width 1."""
    fg, x = gx
    saved = wiring._MAX_BASE_WIDTH
    wiring._MAX_BASE_WIDTH = 1 if buckets else None
    kw = dict(iterations=5, damping=damping, semiring=semiring, untie=untie)
    try:
        if contraction == "matmul" and semiring == "sum" and _matmul_refuses(fg):
            with pytest.raises(ValueError, match='contraction="matmul"'):
                pu.compile(fg, contraction=contraction, dtype=torch.float64, **kw)
            return
        net = pu.compile(fg, contraction=contraction, dtype=torch.float64, **kw)
    finally:
        wiring._MAX_BASE_WIDTH = saved
    assert net.pairwise_fast
    if untie:
        distinct_copies(net)
    gen = torch.Generator().manual_seed(B)
    u = torch.randn(B, len(fg), int(net.max_card), dtype=torch.float64, generator=gen)
    with torch.no_grad():
        a = net(unary={x: u})
    b = net(unary={x: u})
    _assert_same(a, b, semiring, tol=1e-12)


@pytest.mark.parametrize("k", [2, 4])
def test_mean_field_fast_path_untied_gradients_and_gradcheck(k):
    rng = np.random.default_rng(k)
    fg, x = grid(3, k=k, coupling=1.0, seed=k)
    u0 = torch.as_tensor(rng.normal(size=(2, 3, 3, k)))
    kw = dict(algorithm="mf", iterations=4, damping=0.3, untie=True)
    nets, _ = _fast_and_general(fg, x, u0, loss_state=0, perturb=True, **kw)
    assert nets[0].mf_fast and not nets[1].mf_fast
    net = pu.compile(fg, algorithm="mf", iterations=3, damping=0.2, dtype=torch.float64)
    uu = u0[:1].clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda v: net(unary={x: v}).log_partition, (uu,))


def test_mean_field_fast_path_with_hard_zeros():
    fg, x = grid(4, k=3, seed=9, hard=True)
    u = torch.randn(2, 4, 4, 3, dtype=torch.float64)
    kw = dict(algorithm="mf", iterations=5, damping=0.2, dtype=torch.float64)
    fast, slow = pu.compile(fg, **kw), pu.compile(fg, fast_path=False, **kw)
    assert fast.mf_fast
    a, b = fast(unary={x: u}), slow(unary={x: u})
    assert not torch.isnan(a.log_marginals).any()
    torch.testing.assert_close(a.log_marginals.exp(), b.log_marginals.exp(), atol=1e-12, rtol=0)
    torch.testing.assert_close(a.log_partition, b.log_partition)


@pytest.mark.parametrize("semiring", ["sum", "max"])
@pytest.mark.parametrize("hard", [True, False])
def test_exact_cavities_gradients_equal_general(semiring, hard):
    fg, x = grid(3, k=3, coupling=1.0, seed=8, hard=hard)
    u0 = torch.randn(2, 3, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    # finite tables with exact_cavity=True: the exp form with per-edge exclusive sums
    kw = dict(iterations=5, damping=0.3, semiring=semiring, exact_cavity=True)
    ev = {("x", 1, 1): torch.tensor([0, 2])}
    nets, outs = _fast_and_general(fg, x, u0, evidence=ev, **kw)
    assert nets[0].pairwise_fast and not nets[1].pairwise_fast
    _assert_same(outs[0], outs[1], semiring)


@st.composite
def mixed_graphs(draw):
    """Pairwise graphs over variables of 2 to 4 states: groups by cardinality signature."""
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    fg = pu.FactorGraph()
    cards = [draw(st.integers(2, 4)) for _ in range(draw(st.integers(2, 6)))]
    for i, c in enumerate(cards):
        fg.add_variable(i, c)
    for _ in range(draw(st.integers(1, 8))):
        a, b = (int(v) for v in rng.choice(len(cards), 2, replace=False))
        tab = draw(st.sampled_from([1.0, 1000.0])) * rng.normal(size=(cards[a], cards[b]))
        if draw(st.booleans()):
            tab[0, -1] = -np.inf
        fg.add_factor([a, b], tab)
    if draw(st.booleans()):
        fg.add_factor([0], rng.normal(size=cards[0]))
    return fg


@given(
    mixed_graphs(),
    st.sampled_from([("bp", "sum"), ("bp", "max"), ("mf", "sum")]),
    st.sampled_from([0.0, 0.4]),
    st.booleans(),
    st.integers(0, 2**31 - 1),
)
def test_mixed_cardinalities_equal_general(fg, mode, damping, with_evidence, seed):
    alg, semiring = mode
    kw = dict(algorithm=alg, semiring=semiring, iterations=5, damping=damping, dtype=torch.float64)
    fast, slow = pu.compile(fg, **kw), pu.compile(fg, fast_path=False, **kw)
    assert fast.pairwise_fast or fast.mf_fast or fast.binary_fast
    gen = torch.Generator().manual_seed(seed)
    u = torch.randn(2, len(fg), int(fast.max_card), dtype=torch.float64, generator=gen)
    c0 = int(fg.cardinalities[0])
    ev = {0: torch.randint(0, c0, (2,), generator=gen)} if with_evidence else None
    ref = slow(unary=u, evidence=ev)
    for grad in (True, False):
        with torch.set_grad_enabled(grad):
            out = fast(unary=u, evidence=ev)
        torch.testing.assert_close(out.log_marginals, ref.log_marginals, atol=1e-9, rtol=1e-9)
        if semiring == "sum":
            torch.testing.assert_close(out.log_partition, ref.log_partition, atol=1e-8, rtol=1e-9)


@pytest.mark.parametrize("alg", ["bp", "mf"])
def test_mixed_cardinalities_gradients_equal_general(alg):
    rng = np.random.default_rng(12)
    fg = pu.FactorGraph()
    x = fg.add_variables("x", 4, 3)
    y = fg.add_variables("y", 4, 2)
    ring = np.stack([x.ids, np.roll(x.ids, 1)], 1)
    fg.add_factors(ring, rng.normal(size=(4, 3, 3)))
    fg.add_factors(np.stack([x.ids, y.ids], 1), rng.normal(size=(4, 3, 2)))
    fg.add_factors(y.ids[:, None], rng.normal(size=(4, 2)))
    u0 = torch.randn(2, 8, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    grads = []
    for fast in (True, False):
        net = pu.compile(
            fg,
            algorithm=alg,
            iterations=4,
            damping=0.3,
            untie=True,
            dtype=torch.float64,
            fast_path=fast,
        )
        assert (net.pairwise_fast or net.mf_fast) == fast
        u = u0.clone().requires_grad_()
        out = net(unary=u)
        (out.log_partition.sum() + out.log_marginals.exp()[..., 1].sum()).backward()
        grads.append([u.grad, *[p.grad for p in net.parameters()]])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b)


@given(
    st.sampled_from(["exp", "exp_shifted", "log"]),
    st.integers(1, 4),
    st.integers(1, 3),
    st.integers(1, 3),
    st.integers(0, 2),
    st.integers(0, 99),
)
def test_pairwise_tables_match_their_definition_and_leave_theta_alone(form, F, k0, k1, pad, seed):
    """``to1[a, c, f]`` / ``to0[c, a, f]`` hold the table entry of states ``(a, c)`` of factor
    ``f`` (exp forms: ``e^(theta - max)``, padded states 1; log form: bits, padded states the
    sentinel), and the in-place exponent never touches the caller's tensor (``F = 1``, a shared
    table, included: its transpose is already contiguous)."""
    gen = torch.Generator().manual_seed(seed)
    theta = torch.randn(F, k0, k1, dtype=torch.float64, generator=gen)
    before = theta.clone()
    K = max(k0, k1) + pad
    tab = pairwise_tables(theta, form, K)
    assert torch.equal(theta, before)
    assert tab.to1.shape == tab.to0.shape == (K, K, F) and tab.to1.is_contiguous()
    if form == "log":
        ref = torch.full((F, K, K), NEG_BITS, dtype=theta.dtype)
        ref[:, :k0, :k1] = theta * LOG2E
    else:
        ref = torch.ones(F, K, K, dtype=theta.dtype)
        ref[:, :k0, :k1] = (theta - theta.amax(dim=(1, 2), keepdim=True)).exp()
    torch.testing.assert_close(tab.to1, ref.permute(1, 2, 0))
    torch.testing.assert_close(tab.to0, ref.permute(2, 1, 0))


def test_double_backward_through_the_fast_path_raises_clearly():
    """The per-unit contraction's in-place table-gradient sum is not differentiable: a
    second-order gradient raises (``once_differentiable``) instead of silently missing terms."""
    fg, x = grid(2, k=3, coupling=1.0, seed=5)
    net = pu.compile(fg, iterations=3, dtype=torch.float64)
    assert net.pairwise_fast
    u = torch.randn(1, 2, 2, 3, dtype=torch.float64, requires_grad=True)
    with contraction_mode(columns=False):
        (g,) = torch.autograd.grad(net(unary={x: u}).log_partition.sum(), u, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        g.sum().backward()


@pytest.mark.parametrize("algorithm", ["bp", "mf"])
def test_column_contraction_has_second_order_gradients(algorithm):
    """The column contraction of small graphs is plain autograd: second-order gradients
    (a Hessian-vector product with respect to the unaries and the tables) equal the general
    path's."""
    fg, x = grid(2, k=3, coupling=1.0, seed=5)
    u0 = torch.randn(2, 2, 2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    v = torch.randn_like(u0)
    hvps = []
    for fast in (True, False):
        net = pu.compile(fg, algorithm=algorithm, iterations=3, damping=0.2, fast_path=fast)
        net = net.double()
        assert (net.pairwise_fast or net.mf_fast) == fast
        u = u0.clone().requires_grad_()
        (g,) = torch.autograd.grad(net(unary={x: u}).log_partition.sum(), u, create_graph=True)
        hvps.append(torch.autograd.grad((g * v).sum(), [u, *net.parameters()]))
    for a, b in zip(*hvps, strict=True):
        assert a.abs().max() > 0 or b.abs().max() == 0
        torch.testing.assert_close(a, b)


def _unit_graph() -> pu.FactorGraph:
    """Unshared pairwise groups of three shapes around a shared one, and a unary group."""
    rng = np.random.default_rng(5)
    fg = pu.FactorGraph()
    for v, k in enumerate([2, 3, 3, 2, 3]):
        fg.add_variable(v, k)
    fg.add_factors([[0, 1], [3, 4]], rng.normal(size=(2, 2, 3)), name="a")
    fg.add_factors([[1, 2], [2, 4]], rng.normal(size=(2, 3, 3)), name="b")
    fg.add_factors([[0, 3]], rng.normal(size=(2, 2)), name="c_shared")
    fg.add_factors([[4, 0], [2, 3]], rng.normal(size=(2, 3, 2)), name="d")
    fg.add_factors([[1]], rng.normal(size=(1, 3)), name="u")
    return fg


@pytest.mark.parametrize("columns", [True, False])
@pytest.mark.parametrize(
    ("algorithm", "semiring", "contraction"),
    [
        ("bp", "sum", "auto"),
        ("bp", "sum", "logsumexp"),
        ("bp", "sum", "matmul"),
        ("bp", "max", "auto"),
        ("mf", "sum", "auto"),
    ],
)
def test_units_concatenate_runs_of_unshared_groups(algorithm, semiring, contraction, columns):
    """Unshared groups of different shapes side by side form one unit (one contraction per
    direction); a shared group is a unit of its own and splits the runs. ``columns``: the
    same units laid out as one table per column (the shared table repeated)."""
    fg = _unit_graph()
    kw = dict(algorithm=algorithm, semiring=semiring, contraction=contraction, iterations=5)
    kw.update(damping=0.3, untie=True, dtype=torch.float64)
    nets = [pu.compile(fg, fast_path=f, **kw) for f in (True, False)]
    fast = nets[0]
    assert fast.pairwise_fast or fast.mf_fast
    names = [[fast._mgroups[i].name for i in un] for un in fast._pw_units]
    assert names == [["a", "b"], ["c_shared"], ["d"]]
    u0 = torch.randn(2, 5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with contraction_mode(columns):
        assert_same_values_and_grads(nets, u0)


# (inductor's import, torch 2.13)
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
@pytest.mark.parametrize(
    ("algorithm", "semiring", "columns"),
    [("bp", "sum", True), ("bp", "max", False), ("mf", "sum", True), ("mf", "sum", False)],
)
def test_compile_steps_on_the_pairwise_path(algorithm, semiring, columns):
    """``compile_steps=True`` on the pairwise fast path: the same values and gradients (the
    tables' gradient through plain autograd, not the hand-written backward's link), with
    and without autograd, for both contractions (see :func:`contraction_mode`)."""
    kw = dict(algorithm=algorithm, semiring=semiring, iterations=3, damping=0.3, untie=True)
    kw["dtype"] = torch.float64
    fg = _unit_graph()
    nets = [pu.compile(fg, compile_steps=c, **kw) for c in (True, False)]
    assert nets[0].pairwise_fast or nets[0].mf_fast
    u0 = torch.randn(2, 5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    with contraction_mode(columns):
        assert_same_values_and_grads(nets, u0)
        assert nets[0]._compiled
        with torch.no_grad():
            a, b = (net(unary=u0).log_marginals for net in nets)
    torch.testing.assert_close(a, b)
