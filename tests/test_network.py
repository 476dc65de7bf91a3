import io
import pickle

import numpy as np
import pytest
import torch
from helpers import grid

import pgmunfold as pu
from pgmunfold import network
from pgmunfold.beliefs import Deferred, _DeferredField


def test_untie_preserves_outputs_and_trains_copies_apart():
    fg, x = grid(3, k=2, coupling=0.5, seed=0)
    net = pu.compile(fg, iterations=4, dtype=torch.float64)
    deep = net.untie()
    assert deep.num_parameters() == 4 * net.num_parameters()
    u = torch.randn(2, 3, 3, 2, dtype=torch.float64)
    torch.testing.assert_close(net(unary={x: u}).log_marginals, deep(unary={x: u}).log_marginals)
    loss = deep(unary={x: u}).log_marginals[..., 0].sum()
    loss.backward()
    p = deep.potentials["pairwise"]
    assert p.grad is not None and all(p.grad[t].abs().sum() > 0 for t in range(4))
    with torch.no_grad():
        p -= 0.1 * p.grad
    assert not torch.equal(p[0], p[3])


def test_partial_untie_by_group_and_last_iterations():
    fg, _ = grid(3, k=2, seed=1)
    net = pu.compile(fg, iterations=5, untie=["pairwise"], untie_last=2, dtype=torch.float64)
    assert net.copy_index["pairwise"] == (0, 0, 0, 1, 2)
    assert net.copy_index["unary"] == (0,) * 5
    full = pu.compile(fg, iterations=5, dtype=torch.float64)
    torch.testing.assert_close(net().log_marginals, full().log_marginals)
    deeper = net.untie(groups=["unary"], last=1)
    assert deeper.copy_index["unary"] == (0, 0, 0, 0, 1)
    assert deeper.copy_index["pairwise"] == (0, 0, 0, 1, 2)
    torch.testing.assert_close(deeper().log_marginals, full().log_marginals)
    assert "untied groups" in repr(deeper)
    with pytest.raises(ValueError, match="unknown factor groups"):
        net.untie(groups=["nope"])


def test_state_dict_round_trip_and_dtype_moves():
    fg, _ = grid(3, k=3, seed=2)
    net = pu.compile(fg, iterations=3, untie=True)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p))
    buf = io.BytesIO()
    torch.save(net.state_dict(), buf)
    buf.seek(0)
    other = pu.compile(fg, iterations=3, untie=True)
    other.load_state_dict(torch.load(buf, weights_only=True))
    torch.testing.assert_close(net().log_marginals, other().log_marginals)
    assert set(net.state_dict()) == {"potentials.unary", "potentials.pairwise"}
    d = net.to(torch.float64)
    assert d.base_unary.dtype == torch.float64 and d().log_partition.dtype == torch.float64
    assert d.var_slots.dtype == torch.int64


def test_reset_parameters_restores_declared_tables():
    fg, _ = grid(2, seed=3)
    net = pu.compile(fg, iterations=2, untie=True, dtype=torch.float64)
    ref = net().log_partition.detach()
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
    net.reset_parameters()
    torch.testing.assert_close(net().log_partition, ref)


def test_forward_input_errors_and_no_mutation():
    fg, _x = grid(2, k=3, seed=4)
    net = pu.compile(fg, iterations=2)
    with pytest.raises(ValueError, match=r"\('x', 0, 0\).*state 3 out of range \[0, 3\)"):
        net(evidence={("x", 0, 0): 3})
    with pytest.raises(pu.GraphError, match="unknown variable 'nope'"):
        net(evidence={"nope": 0})
    with pytest.raises(
        ValueError, match=r"unary for variable \('x', 0, 1\): expected shape \(3,\)"
    ):
        net(unary={("x", 0, 1): torch.zeros(4)})
    with pytest.raises(ValueError, match="batch sizes disagree"):
        net(unary={("x", 0, 1): torch.zeros(2, 3), ("x", 1, 1): torch.zeros(3, 3)})
    with pytest.raises(ValueError, match="damping"):
        pu.compile(fg, damping=1.0)
    with pytest.raises(ValueError, match="iterations"):
        pu.compile(fg, iterations=0)
    u = torch.randn(2, 3)
    before = u.clone()
    net(unary={("x", 0, 1): u})
    assert torch.equal(u, before)


def test_dense_unary_equals_dict_unary():
    fg, x = grid(2, k=2, seed=5)
    net = pu.compile(fg, iterations=3, dtype=torch.float64)
    u = torch.randn(3, 2, 2, 2, dtype=torch.float64)
    a = net(unary={x: u})
    b = net(unary=u.reshape(3, 4, 2))
    torch.testing.assert_close(a.log_marginals, b.log_marginals)
    assert a.marginals[("x", 1, 0)].shape == (3, 2)
    assert a.map[("x", 1, 0)].shape == (3,)


def test_mixed_cardinalities_pad_correctly():
    fg = pu.FactorGraph()
    fg.add_variable("a", 1)
    fg.add_variable("b", 4)
    fg.add_variable("c", 2)
    rng = np.random.default_rng(0)
    fg.add_factor(("b", "a", "c"), rng.normal(size=(4, 1, 2)))
    fg.add_factor(("c", "b"), rng.normal(size=(2, 4)))
    out = pu.compile(fg, iterations=10, dtype=torch.float64)()
    ex = pu.exact_marginals(fg)
    assert out.marginals["a"].tolist() == [1.0]
    assert out.probs[0, 1:].abs().max() == 0 and out.probs[2, 2:].abs().max() == 0
    err = max(float((out.marginals[k] - ex[k]).abs().max()) for k in ex)
    assert err < 0.05


@pytest.mark.parametrize(
    ("k", "algorithm", "schedule"),
    [
        (2, "bp", "parallel"),
        (3, "bp", "parallel"),
        (3, "bp", "sequential"),
        (3, "mf", "sequential"),
    ],
)
def test_checkpointing_gives_identical_gradients(k, algorithm, schedule):
    fg, x = grid(3, k=k, seed=6)
    grads = []
    for ck in (False, True):
        net = pu.compile(
            fg,
            algorithm=algorithm,
            schedule=schedule,
            iterations=4,
            damping=0.2,
            dtype=torch.float64,
            checkpoint=ck,
            untie=True,
        )
        out = net(unary={x: torch.ones(2, 3, 3, k, dtype=torch.float64)})
        (out.log_partition.sum() + out.log_marginals[..., 0].sum()).backward()
        grads.append([p.grad for p in net.parameters()])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b)


def test_constant_factors_enter_log_z_only():
    fg = pu.FactorGraph()
    fg.add_variable("a", 2)
    fg.add_variable("b", 3)
    rng = np.random.default_rng(0)
    fg.add_factors(np.zeros((2, 0), dtype=np.int64), np.array([0.7, -0.2]), name="const")
    fg.add_factor(("a", "b"), rng.normal(size=(2, 3)))
    exact = float(pu.exact_log_partition(fg))
    for algorithm, schedule in [("bp", "parallel"), ("bp", "sequential")]:
        out = pu.compile(fg, algorithm=algorithm, schedule=schedule, dtype=torch.float64)()
        assert float(out.log_partition) == pytest.approx(exact, abs=1e-10)
    _, best = pu.exact_map(fg)
    out = pu.compile(fg, semiring="max", dtype=torch.float64)()
    assert float(out.log_partition) == pytest.approx(float(best), abs=1e-10)


def test_mean_field_bound_is_minus_inf_when_q_hits_a_hard_zero():
    fg = pu.FactorGraph()
    fg.add_variable("a", 2)
    fg.add_variable("b", 2)
    fg.add_factor(("a", "b"), np.array([[0.0, -np.inf], [-np.inf, 0.0]]))
    out = pu.compile(fg, algorithm="mf", iterations=3, dtype=torch.float64)()
    # uniform start: MF keeps mass on the forbidden pairs, so its bound is -inf, not a sentinel
    assert float(out.log_partition) == -np.inf
    assert not torch.isnan(out.log_marginals).any()


def test_score_matches_table_sums_and_hard_zeros():
    fg, _ = grid(2, k=3, seed=8, hard=True)
    net = pu.compile(fg, iterations=2, dtype=torch.float64)
    rng = np.random.default_rng(0)
    states = torch.as_tensor(rng.integers(0, 3, size=(5, 4)))
    ref = []
    for row in states.tolist():
        total = sum(float(t[tuple(row[v] for v in s)]) for s, t in fg.factors())
        ref.append(total)
    torch.testing.assert_close(net.score(states), torch.tensor(ref, dtype=torch.float64))
    mx = pu.compile(fg, iterations=10, semiring="max", dtype=torch.float64)
    out = mx()
    torch.testing.assert_close(mx.score(out.map_states), out.log_partition)


def test_unary_factors_act_from_the_first_iteration():
    fg = pu.FactorGraph()
    fg.add_variable("a", 3)
    fg.add_variable("b", 2)
    fg.add_factor(("a",), np.array([0.0, 1.0, 2.0]))
    fg.add_factor(("a", "b"), np.array([[0.0, 1.0], [1.0, 0.0], [0.5, 0.5]]))
    exact = pu.exact_marginals(fg)
    for fast in (True, False):
        out = pu.compile(fg, iterations=1, dtype=torch.float64, fast_path=fast)()
        torch.testing.assert_close(out.marginals["b"], exact["b"])
        torch.testing.assert_close(out.marginals["a"], exact["a"])


def test_exact_marginals_under_no_grad_and_array_views():
    fg, x = grid(2, k=2, seed=9)
    with torch.no_grad():
        ex = pu.exact_marginals(fg)
        out = pu.compile(fg, iterations=3)(unary={x: torch.zeros(3, 2, 2, 2)})
    assert ex[("x", 0, 1)].shape == (2,)
    assert out.marginals[x].shape == (3, 2, 2, 2) and out.map[x].shape == (3, 2, 2)
    torch.testing.assert_close(out.marginals[x][:, 1, 0], out.marginals[("x", 1, 0)])


def test_moving_to_float64_restores_declared_precision():
    tree = pu.FactorGraph()
    tree.add_variables("v", 4, 3)
    rng = np.random.default_rng(1)
    tree.add_factors(np.array([[0, 1], [1, 2], [1, 3]]), rng.normal(size=(3, 3, 3)))
    net = pu.compile(tree, iterations=4).to(torch.float64)  # compiled in float32, then moved
    out = net()
    ex = pu.exact_marginals(tree)
    assert float(out.log_partition) == pytest.approx(float(pu.exact_log_partition(tree)), abs=1e-12)
    torch.testing.assert_close(out.marginals[("v", 3)], ex[("v", 3)], atol=1e-12, rtol=0)
    # trained (changed) parameters are converted as usual, not reset
    fg, _ = grid(3, k=3, seed=10)
    net32 = pu.compile(fg, iterations=2)
    with torch.no_grad():
        net32.potentials["pairwise"].add_(0.1)
    before = net32.potentials["pairwise"].detach().double()
    moved = net32.to(torch.float64)
    torch.testing.assert_close(moved.potentials["pairwise"].detach(), before)


@pytest.mark.parametrize("k", [2, 3])
def test_torch_compile_gives_identical_outputs(k):
    fg, x = grid(3, k=k, seed=11)
    net = pu.compile(fg, iterations=4, damping=0.2, contraction="matmul")
    u = torch.randn(2, 3, 3, k)
    ref = net(unary={x: u})
    out = torch.compile(net, backend="aot_eager")(unary={x: u})
    torch.testing.assert_close(out.log_marginals, ref.log_marginals, atol=1e-6, rtol=0)
    torch.testing.assert_close(out.log_partition, ref.log_partition, atol=1e-5, rtol=0)


def test_log_partition_and_factor_beliefs_are_computed_on_first_read_in_the_forward_mode():
    fg, _ = grid(3, k=3, seed=21)
    net = pu.compile(fg, iterations=4, dtype=torch.float64)
    with torch.no_grad():
        out = net()
    assert isinstance(vars(out)["_deferred_log_partition"], Deferred)  # not computed yet
    logz = out.log_partition  # read outside no_grad: still computed without a graph
    assert logz.grad_fn is None
    assert out.log_partition is logz  # evaluated once
    out2 = net()
    with torch.no_grad():  # read inside no_grad: computed with the forward's autograd mode
        logz2 = out2.log_partition
        fb = out2.factor_log_beliefs["pairwise"]
    assert logz2.grad_fn is not None and fb.grad_fn is not None
    torch.testing.assert_close(logz2.detach(), logz)
    single = net(unary=torch.zeros(9, 3, dtype=torch.float64))  # unbatched: squeezed lazily
    assert single.log_partition.shape == () and single.factor_log_beliefs["pairwise"].dim() == 3
    mf = pu.compile(fg, algorithm="mf", iterations=4, dtype=torch.float64)()
    assert mf.factor_log_beliefs == {} and mf.log_partition.shape == ()


def test_deferred_fields_are_required_and_their_class_access_gives_the_descriptor():
    # torch.compile's guards (torch 2.11) read the class attribute; @dataclass must see none
    assert isinstance(pu.Beliefs.log_partition, _DeferredField)
    assert isinstance(pu.Beliefs.factor_log_beliefs, _DeferredField)
    with pytest.raises(TypeError, match="log_partition"):
        pu.Beliefs(torch.zeros(1, 2), torch.zeros(1), torch.zeros(1))  # type: ignore[call-arg]


def test_beliefs_pickle_with_unread_deferred_fields():
    fg, _ = grid(3, k=3, seed=22)
    out = pu.compile(fg, iterations=3, dtype=torch.float64)()
    back = pickle.loads(pickle.dumps(out))
    torch.testing.assert_close(back.log_partition, out.log_partition)
    torch.testing.assert_close(
        back.factor_log_beliefs["pairwise"], out.factor_log_beliefs["pairwise"]
    )
    torch.testing.assert_close(back.log_marginals, out.log_marginals)


@pytest.mark.parametrize(
    ("k", "kw", "per_merge"),
    [
        (2, {}, False),
        (3, {}, False),
        (3, {"fast_path": False}, False),
        (3, {"fast_path": False}, True),
        (3, {"algorithm": "mf"}, False),
    ],
)
def test_auto_contraction_refuses_cuda_graph_capture_with_a_clear_error(
    monkeypatch, k, kw, per_merge
):
    fg, _ = grid(3, k=k, seed=30)
    if per_merge:  # the general path's per-merge contraction (auto takes the enumerated one)
        monkeypatch.setattr(network, "_ENUMERATE_SMALL", 0)
        monkeypatch.setattr(network, "_ENUMERATE_LARGE_BP", 0)
    auto = pu.compile(fg, iterations=2, **kw)
    assert auto.enumerated == (kw.get("fast_path") is False and not per_merge)
    matmul = pu.compile(fg, iterations=2, contraction="matmul", **kw)
    ref = matmul().log_marginals
    # pretend to be inside torch.cuda.graph(...): the range check's host read must not run
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: True)
    with torch.no_grad():
        if kw.get("algorithm") == "mf" or auto.enumerated:  # read nothing on the host: capture
            torch.testing.assert_close(auto().log_marginals, ref)
        else:
            with pytest.raises(RuntimeError, match='contraction="matmul"'):
                auto()
        torch.testing.assert_close(matmul().log_marginals, ref)  # "matmul" never reads the host


def test_map_states_takes_the_first_state_at_a_tie_like_argmax():
    from pgmunfold.network import _map_states

    lm = torch.tensor([[[0.0, 0.0], [-1.0, -0.5], [-0.5, -1.0], [-1e30, 0.0]]])
    assert _map_states(lm).tolist() == [[0, 1, 0, 1]]
    x = torch.randn(3, 50, 2).round(decimals=1)  # many ties
    assert torch.equal(_map_states(x), x.argmax(dim=2))
    y = torch.randn(2, 20, 5).round(decimals=1)
    assert torch.equal(_map_states(y), y.argmax(dim=2))


@pytest.mark.parametrize(
    ("fn", "dim"), [(torch.sigmoid, None), (torch.exp2, None), (torch.exp2, 1), (torch.exp, 2)]
)
def test_residual_in_reused_buffers_equals_the_plain_form(fn, dim):
    """With ``dim``, the probabilities are normalised along it (log-domain damping leaves
    messages unnormalised); the in-place forms equal the plain ones, values and gradients."""
    from pgmunfold.infer.workspace import Workspace
    from pgmunfold.network import _max_change

    def prob(x):
        if dim is None:
            return fn(x)
        p = fn(x - x.amax(dim=dim, keepdim=True))
        return p / p.sum(dim=dim, keepdim=True)

    new, old = 3 * torch.randn(2, 3, 7), 3 * torch.randn(2, 3, 7)
    new_c, old_c = new.clone(), old.clone()
    ref = (prob(new) - prob(old)).abs().amax(dim=(1, 2))
    with torch.no_grad():
        ws = Workspace.for_forward()
        ws("big", (50,), new)  # a larger buffer: the request gets a view of its front
        got = _max_change(new[:, :, :-1], old[:, :, :-1], fn, ws, ("big", "other"), dim=dim)
    plain = _max_change(new[:, :, :-1], old[:, :, :-1], fn, Workspace(False), ("a", "b"), dim)
    torch.testing.assert_close(got, plain)
    assert torch.equal(new, new_c) and torch.equal(old, old_c)
    full = _max_change(new, old, fn, dim=dim)
    torch.testing.assert_close(full, ref)
    # under autograd: the same value, and amax's gradient (no ties here)
    n1, o1 = new.clone().requires_grad_(), old.clone().requires_grad_()
    n2, o2 = new.clone().requires_grad_(), old.clone().requires_grad_()
    got = _max_change(n1[:, :, :-1], o1[:, :, :-1], fn, dim=dim)
    want = (prob(n2[:, :, :-1]) - prob(o2[:, :, :-1])).abs().amax(dim=(1, 2))
    torch.testing.assert_close(got, want)
    w = torch.tensor([1.0, -2.0])
    (got * w).sum().backward()
    (want * w).sum().backward()
    torch.testing.assert_close(n1.grad, n2.grad)
    torch.testing.assert_close(o1.grad, o2.grad)
    # one entry per batch row, or (normalised) the entries of one message per batch row
    size = 1 if dim is None else new.shape[dim] - (dim == 2)
    assert n1.grad.count_nonzero() == 2 * size


@pytest.mark.parametrize(("k", "alg"), [(2, "bp"), (3, "bp"), (2, "mf")])
def test_inference_mode_equals_no_grad(k, alg):
    """The reused-buffer loops (binary sweep, pairwise and mean-field workspaces) also run
    under ``torch.inference_mode()``, with the no-grad results."""
    rng = np.random.default_rng(2)
    fg = pu.FactorGraph()
    x = fg.add_variables("x", 6, k)
    fg.add_factors(np.stack([x.ids, np.roll(x.ids, 1)], 1), rng.normal(size=(6, k, k)))
    net = pu.compile(fg, algorithm=alg, iterations=7, damping=0.3)
    u = torch.as_tensor(rng.normal(size=(3, 6, k)), dtype=torch.float32)
    with torch.inference_mode():
        a = net(unary={x: u})
        logz_a = a.log_partition
    with torch.no_grad():
        b = net(unary={x: u})
    torch.testing.assert_close(a.log_marginals, b.log_marginals, atol=0, rtol=0)
    torch.testing.assert_close(a.residual, b.residual, atol=0, rtol=0)
    torch.testing.assert_close(logz_a, b.log_partition, atol=0, rtol=0)
