"""The layered binary MRF: MF == MLP, BP-net equations, and equality with the general engine."""

import copy
import io
import itertools
import math

import numpy as np
import pytest
import torch
from helpers import brute_force
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import pgmunfold as pu
import pgmunfold.models
from pgmunfold.models import LayeredBinaryMRF, LayeredBP, LayeredMeanField, bp_message

F64 = torch.float64


def make_mlp(sizes, seed, scale=1.0, dtype=torch.float32):
    torch.manual_seed(seed)
    mods = []
    for m, n in itertools.pairwise(sizes):
        lin = nn.Linear(m, n, dtype=dtype)
        with torch.no_grad():
            lin.weight.mul_(scale)
            lin.bias.mul_(scale)
        mods += [lin, nn.Sigmoid()]
    return nn.Sequential(*mods)


def make_model(sizes, seed, scale=1.0):
    """A float64 model with couplings of order ``scale`` (strong enough to be loopy-hard)."""
    gen = torch.Generator().manual_seed(seed)
    model = LayeredBinaryMRF(sizes, dtype=F64)
    with torch.no_grad():
        for w, b in zip(model.weights, model.biases, strict=True):
            w.copy_(scale * torch.randn(w.shape, generator=gen, dtype=F64))
            b.copy_(0.5 * torch.randn(b.shape, generator=gen, dtype=F64))
    return model


def engine_top(out, graph, layer):
    """P(x_layer = 1) from a general-engine Beliefs, shape (B, n)."""
    return out.log_marginals[..., graph.layers[layer].ids, 1].exp()


def sizes_strategy(max_hidden=3, max_width=4):
    return st.lists(st.integers(1, max_width), min_size=2, max_size=max_hidden + 2)


# ---------------------------------------------------------------------------- MF == MLP
@given(
    hidden=st.lists(st.integers(1, 64), min_size=1, max_size=4),
    n_in=st.integers(1, 64),
    n_out=st.integers(1, 64),
    batch=st.integers(1, 16),
    seed=st.integers(0, 2**31 - 1),
)
@settings(max_examples=40, deadline=None)
def test_mean_field_one_sweep_is_the_mlp(hidden, n_in, n_out, batch, seed):
    sizes = [n_in, *hidden, n_out]
    mlp = make_mlp(sizes, seed, scale=3.0)  # large weights: saturated units too
    model = LayeredBinaryMRF.from_sequential(mlp)
    net = model.unfold(algorithm="mf", sweeps=1)
    x = torch.rand(batch, n_in, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        ref = mlp(x)
        out = net(x)
        allm = net.marginals(x)
    assert out.shape == (batch, n_out) and out.dtype == torch.float32
    assert float((out - ref).abs().max()) <= 1e-6
    torch.testing.assert_close(allm[-1], ref, atol=1e-6, rtol=0)
    # every hidden layer is the MLP's hidden activation
    h = x
    for layer, lin in enumerate(mlp[::2], start=1):
        h = torch.sigmoid(lin(h))
        torch.testing.assert_close(allm[layer], h, atol=1e-6, rtol=0)


def test_readme_showcase_and_unbatched_inputs():
    mlp = nn.Sequential(nn.Linear(6, 5), nn.Sigmoid(), nn.Linear(5, 3), nn.Sigmoid())
    model = pu.models.LayeredBinaryMRF.from_sequential(mlp)
    mf = model.unfold(algorithm="mf", sweeps=1)
    bp = model.unfold(algorithm="bp", iterations=5)
    x = torch.rand(7, 6)
    x0 = x.clone()
    assert torch.equal(mf(x), mlp(x))  # the same F.linear calls: bitwise equal
    assert bp(x).shape == (7, 3) and torch.equal(x, x0)  # inputs never mutated
    assert mf(x[0]).shape == (3,) and torch.equal(mf(x[0]), mlp(x[0]))
    assert mf(x.view(7, 1, 6)).shape == (7, 1, 3)
    assert torch.equal(mf(x.bool()), mlp(x.bool().float()))
    assert torch.equal(mf.log_odds(x).sigmoid(), mf(x))
    with pytest.raises(ValueError, match=r"x must have shape \(B, 6\)"):
        mf(torch.rand(2, 5))


def test_more_sweeps_add_top_down_feedback():
    mlp = make_mlp([5, 4, 3, 2], seed=0, scale=3.0)
    model = LayeredBinaryMRF.from_sequential(mlp)
    x = torch.rand(4, 5)
    one, three = model.unfold("mf", sweeps=1), model.unfold("mf", sweeps=3)
    assert three.num_parameters() == one.num_parameters()  # recurrent: same parameters
    assert not torch.allclose(one(x), three(x), atol=1e-4)
    deep = model.unfold("mf", sweeps=3, untie=True)
    assert deep.num_parameters() == 3 * one.num_parameters()
    assert torch.equal(deep(x), three(x))
    assert "untied groups: ['W1', 'b1', 'W2', 'b2', 'W3', 'b3']" in repr(deep)


# ---------------------------------------------------------------------------- conversions
def test_to_sequential_round_trip():
    mlp = make_mlp([7, 6, 5, 2], seed=1)
    model = LayeredBinaryMRF.from_sequential(mlp)
    back = model.to_sequential()
    assert [type(m) for m in back] == [type(m) for m in mlp]
    for a, b in zip(mlp.state_dict().values(), back.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    again = LayeredBinaryMRF.from_sequential(back)
    for a, b in zip(model.parameters(), again.parameters(), strict=True):
        assert torch.equal(a, b)
    x = torch.rand(3, 7)
    assert torch.equal(back(x), mlp(x))
    # copies, not views
    with torch.no_grad():
        back[0].weight.zero_()
    assert not torch.equal(model.weights[0], back[0].weight)
    assert model.sizes == (7, 6, 5, 2) and model.num_layers == 3
    # a Linear without bias becomes a zero bias; float64 is kept
    nb = nn.Sequential(nn.Linear(3, 2, bias=False, dtype=F64), nn.Sigmoid())
    m2 = LayeredBinaryMRF.from_sequential(nb)
    assert m2.biases[0].dtype == F64 and torch.equal(m2.biases[0], torch.zeros(2, dtype=F64))
    x = torch.rand(4, 3, dtype=F64)
    assert torch.equal(m2.unfold()(x), nb(x))


@pytest.mark.parametrize(
    ("mlp", "match"),
    [
        (nn.Linear(3, 2), "nn.Sequential of Linear/Sigmoid pairs, got Linear"),
        (nn.Sequential(), "is empty"),
        (nn.Sequential(nn.Linear(3, 2)), "has no partner"),
        (nn.Sequential(nn.Sigmoid(), nn.Linear(3, 2)), "module 0 is Sigmoid, expected nn.Linear"),
        (nn.Sequential(nn.Linear(3, 2), nn.ReLU()), "module 1 is ReLU, expected nn.Sigmoid"),
        (
            nn.Sequential(nn.Linear(3, 2), nn.Sigmoid(), nn.Linear(4, 2), nn.Sigmoid()),
            "module 2 takes 4 inputs but module 0 gives 2",
        ),
    ],
)
def test_from_sequential_errors(mlp, match):
    with pytest.raises(ValueError, match=match):
        LayeredBinaryMRF.from_sequential(mlp)


def test_constructor_and_unfold_errors():
    with pytest.raises(ValueError, match="at least two positive integers"):
        LayeredBinaryMRF([3])
    with pytest.raises(ValueError, match="at least two positive integers"):
        LayeredBinaryMRF([3, 0])
    model = LayeredBinaryMRF([3, 2, 2])
    with pytest.raises(ValueError, match="algorithm must be"):
        model.unfold("gibbs")  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="sweeps must be an integer"):
        model.unfold("mf", sweeps=0)
    with pytest.raises(ValueError, match="iterations must be an integer"):
        model.unfold("bp", iterations=True)
    with pytest.raises(ValueError, match="not both"):
        model.unfold("mf", sweeps=2, iterations=3)
    with pytest.raises(ValueError, match="init is a mean-field option"):
        model.unfold("bp", init=0.5)
    with pytest.raises(ValueError, match="init must be a number"):
        model.unfold("mf", init=2.0)
    with pytest.raises(ValueError, match="schedule must be"):
        model.unfold("mf", schedule="sequential")  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="unknown parameter groups"):
        model.unfold("mf", sweeps=2, untie=["W9"])
    with pytest.raises(ValueError, match="last must be"):
        model.unfold("mf", sweeps=2, untie_last=3)
    with pytest.raises(KeyError, match="unknown parameter group"):
        model.parameter("W0")
    with pytest.raises(ValueError, match="must be binary"):
        model.to_factor_graph(torch.tensor([0.5, 1.0, 0.0]))
    with pytest.raises(ValueError, match="needs x"):
        model.to_factor_graph(observed="field")
    with pytest.raises(ValueError, match=r"x must have shape \(3,\)"):
        model.to_factor_graph(torch.zeros(2, 4))


# ---------------------------------------------------------------------------- untying
@pytest.mark.parametrize(
    ("algorithm", "schedule"),
    [("mf", "layerwise"), ("bp", "layerwise"), ("bp", "parallel"), ("mf", "parallel")],
)
def test_untie_preserves_outputs_then_trains_copies_apart(algorithm, schedule):
    model = make_model([5, 4, 3, 2], seed=2, scale=1.0)
    # (parallel MF from init 0 would never use the first copy of W2: 0 * W2 = 0)
    init = {"init": 0.5} if (algorithm, schedule) == ("mf", "parallel") else {}
    tied = model.unfold(algorithm, 3, schedule=schedule, **init)
    deep = tied.untie()
    assert deep.num_parameters() == 3 * tied.num_parameters()
    assert all(deep.copy_index[n] == (0, 1, 2) for n in deep.group_names)
    x = torch.rand(6, 5, dtype=F64)
    assert torch.equal(deep(x), tied(x))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    # all layers' marginals: with flooding, information needs one iteration per layer, so the
    # first copy of W1 cannot reach the top marginals of a 3-layer net in 3 iterations
    loss = sum(m.square().sum() for m in deep.marginals(x)[1:])
    loss.backward()
    opt = torch.optim.SGD(deep.parameters(), lr=0.5)
    opt.step()
    for name, p in deep.params.items():
        assert p.grad is not None
        for c in range(3):
            assert p.grad[c].abs().sum() > 0, (name, c)
        assert not torch.equal(p[0], p[2]), name
    # the untied network is independent of the model it came from
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n])
        assert p.grad is None
    assert not torch.equal(deep(x), tied(x))


def test_partial_untie_by_group_and_last_steps():
    model = make_model([4, 3, 3, 2], seed=3)
    net = model.unfold("bp", iterations=4, untie=["W2", "W3"], untie_last=2)
    assert net.copy_index["W2"] == (0, 0, 1, 2) and net.copy_index["W3"] == (0, 0, 1, 2)
    assert net.copy_index["W1"] is None and net.untied_groups() == ["W2", "W3"]
    assert net.params["W2"].shape == (3, 3, 3) and net.params["W1"].shape == (3, 4)
    x = torch.rand(3, 4, dtype=F64)
    ref = model.unfold("bp", iterations=4)(x)
    torch.testing.assert_close(net(x), ref, atol=0, rtol=0)
    deeper = net.untie(groups=["b1"], last=1)
    assert deeper.copy_index["b1"] == (0, 0, 0, 1)
    assert deeper.copy_index["W2"] == (0, 0, 1, 2)
    torch.testing.assert_close(deeper(x), ref, atol=0, rtol=0)
    assert deeper.num_parameters() == net.num_parameters() + 3
    # untie with an explicit all-groups list equals untie()
    assert model.unfold("mf", 2, untie=True).copy_index == model.unfold("mf", 2).untie().copy_index


def test_parameters_shared_between_model_mf_and_bp():
    model = make_model([4, 3, 2], seed=4)
    mf = model.unfold("mf", sweeps=2)
    bp = model.unfold("bp", iterations=2)
    conv = mf.convert("bp")
    assert isinstance(conv, LayeredBP) and conv.iterations == 2
    for name in model.group_names:
        assert mf.params[name] is model.parameter(name) is bp.params[name] is conv.params[name]
    x = torch.rand(5, 4, dtype=F64)
    assert torch.equal(conv(x), bp(x))
    before = bp(x).detach()
    opt = torch.optim.SGD(mf.parameters(), lr=1.0)
    mf(x).sum().backward()
    opt.step()
    assert not torch.equal(bp(x), before)  # training the MF net moved the shared parameters
    # untied: converting shares the copies; a different number of steps is refused
    deep = mf.untie()
    deep_bp = deep.convert("bp")
    assert deep_bp.params["W1"] is deep.params["W1"] and deep_bp.copy_index == deep.copy_index
    with pytest.raises(ValueError, match="cannot share untied parameters"):
        deep.convert("bp", steps=3)
    back = bp.convert("mf", steps=1)
    assert isinstance(back, LayeredMeanField) and torch.equal(back(x), model.unfold()(x))
    # to_mrf copies the parameters of one step
    m0 = deep.to_mrf(0)
    assert torch.equal(m0.weights[0], deep.weight(1, 0)) and m0.weights[0] is not deep.weight(1, 0)
    assert isinstance(copy.deepcopy(bp), LayeredBP)


def test_reset_parameters_keeps_copies_equal():
    model = make_model([3, 3, 2], seed=5)
    deep = model.unfold("mf", sweeps=3, untie=True)
    deep.reset_parameters()
    for p in deep.params.values():
        assert torch.equal(p[0], p[1]) and torch.equal(p[1], p[2])
    bound = 1 / math.sqrt(3)
    assert float(deep.params["b1"].abs().max()) <= bound


# ---------------------------------------------------------------------------- gradients
@pytest.mark.parametrize(
    ("algorithm", "schedule", "steps"),
    [
        ("mf", "layerwise", 1),
        ("mf", "layerwise", 3),
        ("mf", "parallel", 3),
        ("bp", "layerwise", 1),
        ("bp", "layerwise", 3),
        ("bp", "parallel", 3),
    ],
)
def test_gradients_reach_every_parameter(algorithm, schedule, steps):
    mlp = make_mlp([6, 5, 4, 3], seed=6)
    model = LayeredBinaryMRF.from_sequential(mlp)
    init = {"init": 0.5} if (algorithm, schedule) == ("mf", "parallel") else {}
    for net in (
        model.unfold(algorithm, steps, schedule=schedule, **init),
        model.unfold(algorithm, steps, schedule=schedule, untie=True, **init),
    ):
        net.zero_grad()
        model.zero_grad()
        x = torch.rand(8, 6)
        target = torch.randint(0, 2, (8, 3)).float()
        loss = nn.functional.binary_cross_entropy(net(x), target)
        if schedule == "parallel":  # flooding: the top sees the first copies only via layer 2
            loss = loss + sum(m.sum() for m in net.marginals(x)[1:])
        loss.backward()
        for name, p in net.named_parameters():
            assert p.grad is not None, name
            grads = p.grad if net.copy_index[name.split(".")[-1]] is None else p.grad.flatten(1)
            assert torch.isfinite(grads).all()
            assert (grads.reshape(-1, *grads.shape[-1:]).abs().sum(-1) > 0).any(), name
            if net.copy_index[name.split(".")[-1]] is not None:
                assert all(float(g.abs().sum()) > 0 for g in grads), name


# ---------------------------------------------------------------------------- exactness
def test_one_layer_model_bp_mf_mlp_and_enumeration_agree():
    """With a single unobserved layer the units are independent given x: everything is exact."""
    mlp = make_mlp([4, 3], seed=7, scale=2.0, dtype=F64)
    model = LayeredBinaryMRF.from_sequential(mlp)
    x = torch.randint(0, 2, (6, 4)).double()
    ref = mlp(x)
    for net in (
        model.unfold("bp", iterations=1),
        model.unfold("bp", iterations=4),
        model.unfold("bp", iterations=3, schedule="parallel"),
        model.unfold("mf", sweeps=5),
    ):
        torch.testing.assert_close(net(x), ref, atol=1e-12, rtol=0)
    g = model.to_factor_graph()
    for b in range(x.shape[0]):
        ev = {("x0", i): int(x[b, i]) for i in range(4)}
        _, marg, _, _ = brute_force(g.graph, ev)
        exact = torch.tensor([marg[("x1", k)][1] for k in range(3)], dtype=F64)
        torch.testing.assert_close(exact, ref[b].detach(), atol=1e-12, rtol=0)


@given(
    n_in=st.integers(1, 3),
    n_hid=st.integers(1, 4),
    seed=st.integers(0, 2**31 - 1),
    scale=st.sampled_from([0.5, 2.0, 4.0]),
)
@settings(max_examples=20, deadline=None)
def test_bp_is_exact_on_a_tree(n_in, n_hid, seed, scale):
    """One hidden layer and one output unit: the unobserved graph is a star, a tree."""
    model = make_model([n_in, n_hid, 1], seed, scale)
    rng = np.random.default_rng(seed)
    x = torch.as_tensor(rng.integers(0, 2, size=(3, n_in)))
    g = model.to_factor_graph()
    exact = []
    for b in range(3):
        ev = {("x0", i): int(x[b, i]) for i in range(n_in)}
        _, marg, _, _ = brute_force(g.graph, ev)
        exact.append(
            [[marg[(f"x{layer}", k)][1] for k in range(n)] for layer, n in ((1, n_hid), (2, 1))]
        )
    top = torch.tensor([e[1] for e in exact], dtype=F64)
    hid = torch.tensor([e[0] for e in exact], dtype=F64)
    for schedule in ("layerwise", "parallel"):
        bp1 = model.unfold("bp", iterations=1, schedule=schedule)
        torch.testing.assert_close(bp1(x), top, atol=1e-12, rtol=0)  # one upward pass
    # one layerwise iteration (up + down) makes every marginal exact; more keep them there
    for t in (1, 3):
        ms = model.unfold("bp", iterations=t).marginals(x)
        torch.testing.assert_close(ms[1], hid, atol=1e-12, rtol=0)
        torch.testing.assert_close(ms[2], top, atol=1e-12, rtol=0)
    ms = model.unfold("bp", iterations=2, schedule="parallel").marginals(x)
    torch.testing.assert_close(ms[1], hid, atol=1e-12, rtol=0)


@pytest.mark.parametrize("seed", range(4))
def test_one_mf_sweep_is_not_exact_on_the_same_tree(seed):
    """The MLP (one MF sweep) differs from the exact marginal at second order in the couplings.
    Not a universal property (strong couplings make the hidden units nearly deterministic given
    the input, and MF nearly exact), so it is checked on fixed moderate models."""
    model = make_model([3, 4, 1], seed, 2.0)
    x = torch.as_tensor(np.random.default_rng(seed).integers(0, 2, size=(3, 3)))
    g = model.to_factor_graph()
    top = []
    for b in range(3):
        _, marg, _, _ = brute_force(g.graph, {("x0", i): int(x[b, i]) for i in range(3)})
        top.append([marg[("x2", 0)][1]])
    err = float((model.unfold("mf")(x) - torch.tensor(top, dtype=F64)).abs().max().detach())
    assert err > 0.05


def test_bp_agrees_with_the_mlp_to_first_order_in_the_couplings():
    base = make_model([4, 5, 3, 2], seed=8, scale=1.0)
    x = torch.rand(8, 4, dtype=F64)
    errs = []
    for eps in (0.1, 0.05, 0.025):
        model = copy.deepcopy(base)
        with torch.no_grad():
            for w in list(model.weights)[1:]:
                w.mul_(eps)
        errs.append(
            float((model.unfold("bp", iterations=1)(x) - model.unfold("mf")(x)).abs().max())
        )
    for a, b in itertools.pairwise(errs):
        assert 0.2 < b / a < 0.3  # O(eps^2): halving eps quarters the difference


def test_bp_message_is_log_expectation():
    c = torch.linspace(-40, 40, 81, dtype=F64)[:, None]
    w = torch.linspace(-30, 30, 61, dtype=F64)[None, :]
    logsig = torch.nn.functional.logsigmoid
    ref = torch.logaddexp(logsig(-c), logsig(c) + w)  # log E_cavity[exp(w x)]
    torch.testing.assert_close(bp_message(c, w), ref, atol=1e-12, rtol=0)
    c32, w32 = c.float(), w.float()
    assert float((bp_message(c32, w32).double() - ref).abs().max()) < 1e-4


# ---------------------------------------------------------------------------- general engine
@given(
    sizes=sizes_strategy(),
    seed=st.integers(0, 2**31 - 1),
    steps=st.integers(1, 4),
    real=st.booleans(),
)
@settings(max_examples=25, deadline=None)
def test_bp_parallel_equals_engine_on_field_graph(sizes, seed, steps, real):
    model = make_model(sizes, seed, scale=1.5)
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(3, sizes[0], generator=gen, dtype=F64)
    x = x if real else x.round()
    g = model.to_factor_graph(x, observed="field")
    out = pu.compile(g.graph, "bp", iterations=steps, dtype=F64)(**g.inputs)
    ms = model.unfold("bp", iterations=steps, schedule="parallel").marginals(x)
    for layer in range(1, len(sizes)):
        torch.testing.assert_close(ms[layer], engine_top(out, g, layer), atol=1e-10, rtol=0)


@given(sizes=sizes_strategy(), seed=st.integers(0, 2**31 - 1), steps=st.integers(1, 4))
@settings(max_examples=25, deadline=None)
def test_mf_parallel_equals_engine_with_evidence(sizes, seed, steps):
    model = make_model(sizes, seed, scale=1.5)
    rng = np.random.default_rng(seed)
    x = torch.as_tensor(rng.integers(0, 2, size=(3, sizes[0])))
    g = model.to_factor_graph(x)
    assert set(g.inputs) == {"evidence"}
    out = pu.compile(g.graph, "mf", iterations=steps, dtype=F64)(**g.inputs)
    # the engine starts hidden marginals at uniform: init=0.5
    ms = model.unfold("mf", sweeps=steps, schedule="parallel", init=0.5).marginals(x)
    for layer in range(1, len(sizes)):
        torch.testing.assert_close(ms[layer], engine_top(out, g, layer), atol=1e-10, rtol=0)


def _perturb(net, seed):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen, dtype=p.dtype))


def _load_engine_copies(engine, net, groups):
    """Write the layered net's per-step parameters into the engine's untied tables."""
    with torch.no_grad():
        for name in groups:
            pot = engine.potentials[name]
            for t in range(net.steps):
                c = engine.copy_index[name][t]
                if name.startswith("W"):
                    pot[c, :, 1, 1] = net.weight(int(name[1:]), t).reshape(-1)
                else:
                    pot[c, :, 1] = net.bias(int(name[1:]), t)


def test_untied_mf_and_bp_equal_untied_engine():
    model = make_model([3, 3, 2, 2], seed=9, scale=1.0)
    x = torch.tensor([[1, 0, 1], [0, 0, 1]])
    T = 3
    # MF: every group untied, copies trained apart (here: perturbed)
    mf = model.unfold("mf", sweeps=T, schedule="parallel", init=0.5, untie=True)
    _perturb(mf, 0)
    g = model.to_factor_graph(x)
    eng = pu.compile(g.graph, "mf", iterations=T, untie=True, dtype=F64)
    _load_engine_copies(eng, mf, mf.group_names)
    ms = mf.marginals(x)
    out = eng(**g.inputs)
    for layer in (1, 2, 3):
        torch.testing.assert_close(ms[layer], engine_top(out, g, layer), atol=1e-10, rtol=0)
    # BP: couplings W2, W3 untied (W1 and the biases are the engine's unary inputs)
    bp = model.unfold("bp", iterations=T, schedule="parallel", untie=["W2", "W3"])
    _perturb(bp, 1)
    g = bp.to_mrf().to_factor_graph(x, observed="field")
    eng = pu.compile(g.graph, "bp", iterations=T, untie=True, dtype=F64)
    _load_engine_copies(eng, bp, ["W2", "W3"])
    ms = bp.marginals(x)
    out = eng(**g.inputs)
    for layer in (1, 2, 3):
        torch.testing.assert_close(ms[layer], engine_top(out, g, layer), atol=1e-10, rtol=0)


def test_layerwise_schedules_reach_the_engines_fixed_points():
    """Weak couplings: one fixed point, reached by every schedule (the equations agree)."""
    model = make_model([4, 4, 3, 3], seed=10, scale=0.4)
    x = torch.tensor([[1, 0, 1, 1], [0, 1, 0, 0]])
    g = model.to_factor_graph(x)
    mf_eng = pu.compile(g.graph, "mf", iterations=40, schedule="sequential", dtype=F64)(**g.inputs)
    bp_eng = pu.compile(g.graph, "bp", iterations=40, dtype=F64)(**g.inputs)
    assert bool(mf_eng.converged(1e-12).all()) and bool(bp_eng.converged(1e-12).all())
    mf = model.unfold("mf", sweeps=40).marginals(x)
    bp = model.unfold("bp", iterations=40).marginals(x)
    for layer in (1, 2, 3):
        torch.testing.assert_close(mf[layer], engine_top(mf_eng, g, layer), atol=1e-10, rtol=0)
        torch.testing.assert_close(bp[layer], engine_top(bp_eng, g, layer), atol=1e-10, rtol=0)


def test_factor_graph_tables_score_states_like_the_model():
    model = make_model([3, 2, 2], seed=11)
    g = model.to_factor_graph()
    assert [grp.name for grp in g.graph.groups] == ["W1", "b1", "W2", "b2"]
    rng = np.random.default_rng(0)
    for _ in range(5):
        states = [rng.integers(0, 2, size=n) for n in model.sizes]
        flat = np.concatenate(states)
        ref = sum(float(t[tuple(flat[v] for v in sc)]) for sc, t in g.graph.factors())
        got = model([torch.as_tensor(s)[None] for s in states])
        assert abs(float(got[0]) - ref) < 1e-12
    with pytest.raises(ValueError, match="expected 3 layers"):
        model([torch.zeros(1, 3)])


# ---------------------------------------------------------------------------- independent refs
def _reference_mf(model, x, sweeps):
    """Scalar loops: coordinate-wise mean-field, layer by layer, from q = 0."""
    W = [w.detach().numpy() for w in model.weights]
    b = [v.detach().numpy() for v in model.biases]
    L = len(W)
    q = [x] + [np.zeros(len(v)) for v in b]
    for _ in range(sweeps):
        for layer in range(1, L + 1):
            for k in range(len(b[layer - 1])):
                f = b[layer - 1][k] + sum(
                    W[layer - 1][k, i] * q[layer - 1][i] for i in range(len(q[layer - 1]))
                )
                if layer < L:
                    f += sum(W[layer][m, k] * q[layer + 1][m] for m in range(len(q[layer + 1])))
                q[layer][k] = 1 / (1 + math.exp(-f))
    return q


def _reference_bp(model, x, iterations):
    """Scalar loops, probability domain: sum-product messages over x in {0, 1}, with the
    up-then-down layer schedule; a message is a pair (m(0), m(1)), normalised."""
    W = [w.detach().numpy() for w in model.weights]
    b = [v.detach().numpy() for v in model.biases]
    L = len(W)
    unary = {}
    for layer in range(1, L + 1):
        for k in range(len(b[layer - 1])):
            a = b[layer - 1][k]
            if layer == 1:
                a += float(W[0][k] @ x)
            unary[(layer, k)] = np.array([1.0, math.exp(a)])
    msg = {}  # (edge, direction) -> message into the receiving variable
    edges = [
        (layer, k, i)
        for layer in range(2, L + 1)
        for k in range(W[layer - 1].shape[0])
        for i in range(W[layer - 1].shape[1])
    ]
    for e in edges:
        msg[e, "up"] = np.array([0.5, 0.5])
        msg[e, "down"] = np.array([0.5, 0.5])

    def incoming(var, skip=None):
        p = unary[var].copy()
        for e in edges:
            layer, k, i = e
            if (layer, k) == var and (e, "up") != skip:
                p = p * msg[e, "up"]
            if (layer - 1, i) == var and (e, "down") != skip:
                p = p * msg[e, "down"]
        return p

    def send(e, direction):
        layer, k, i = e
        src = (layer - 1, i) if direction == "up" else (layer, k)
        cav = incoming(src, skip=(e, "down" if direction == "up" else "up"))
        cav = cav / cav.sum()
        w = W[layer - 1][k, i]
        out = np.array([sum(cav[s] * math.exp(w * r * s) for s in (0, 1)) for r in (0, 1)])
        msg[e, direction] = out / out.sum()

    for _ in range(iterations):
        for layer in range(2, L + 1):
            for e in [e for e in edges if e[0] == layer]:
                send(e, "up")
        for layer in range(L, 1, -1):
            for e in [e for e in edges if e[0] == layer]:
                send(e, "down")
    out = []
    for layer in range(1, L + 1):
        ps = [incoming((layer, k)) for k in range(len(b[layer - 1]))]
        out.append(np.array([p[1] / p.sum() for p in ps]))
    return out


@pytest.mark.parametrize("steps", [1, 2, 4])
def test_layerwise_nets_equal_scalar_references(steps):
    model = make_model([3, 3, 2, 2], seed=12, scale=1.5)
    x = np.array([0.2, 1.0, 0.7])  # real-valued expectations
    xt = torch.as_tensor(x)[None]
    mf = model.unfold("mf", sweeps=steps).marginals(xt)
    ref = _reference_mf(model, x, steps)
    for layer in (1, 2, 3):
        np.testing.assert_allclose(mf[layer][0].detach().numpy(), ref[layer], atol=1e-12)
    bp = model.unfold("bp", iterations=steps).marginals(xt)
    ref = _reference_bp(model, x, steps)
    for layer in (1, 2, 3):
        np.testing.assert_allclose(bp[layer][0].detach().numpy(), ref[layer - 1], atol=1e-12)
    # the top layer after the last upward pass does not depend on the final downward pass
    top = model.unfold("bp", iterations=steps)(xt)
    torch.testing.assert_close(top, bp[3], atol=1e-14, rtol=0)


# ---------------------------------------------------------------------------- nn.Module plumbing
@pytest.mark.parametrize("algorithm", ["mf", "bp"])
def test_state_dict_round_trip_weights_only(algorithm):
    model = make_model([5, 4, 3], seed=13)
    net = model.unfold(algorithm, 2, untie=["W2"], untie_last=1)
    _perturb(net, 2)
    buf = io.BytesIO()
    torch.save(net.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    fresh = LayeredBinaryMRF([5, 4, 3], dtype=F64).unfold(algorithm, 2, untie=["W2"], untie_last=1)
    x = torch.rand(4, 5, dtype=F64)
    assert not torch.equal(fresh(x), net(x))
    fresh.load_state_dict(state)
    assert torch.equal(fresh(x), net(x))
    # tied networks load into (and so update) their model
    tied_state = model.unfold(algorithm, 2).state_dict()
    other = LayeredBinaryMRF([5, 4, 3], dtype=F64)
    other.unfold(algorithm, 2).load_state_dict(tied_state)
    assert torch.equal(other.weights[1], model.weights[1])


def test_dtype_moves_and_module_conventions():
    model = LayeredBinaryMRF([4, 3, 2])
    net = model.unfold("bp", iterations=2)
    x = torch.rand(2, 4)
    ref = net(x)
    net64 = copy.deepcopy(net).to(F64)
    assert net64(x).dtype == F64
    torch.testing.assert_close(net64(x).float(), ref, atol=1e-6, rtol=0)
    assert "sizes=(4, 3, 2), parameters=23" in repr(model)
    assert "iterations=2, schedule=layerwise" in repr(net)
    assert "sweeps=1" in repr(model.unfold())
    assert pgmunfold.models.LayeredBinaryMRF is LayeredBinaryMRF


def test_torch_compile_gives_identical_outputs():
    torch._dynamo.reset()
    model = LayeredBinaryMRF([6, 5, 3])
    x = torch.rand(4, 6)
    for net in (model.unfold("mf", sweeps=2, untie=True), model.unfold("bp", iterations=2)):
        # aot_eager: dynamo capture (fullgraph: no graph breaks) + AOTAutograd, without the
        # minutes of C++ compilation inductor needs on CPU (inductor agrees to 6e-8)
        compiled = torch.compile(net, backend="aot_eager", fullgraph=True)
        out = compiled(x)
        torch.testing.assert_close(out, net(x), atol=1e-6, rtol=0)
        (g_c,) = torch.autograd.grad(out.sum(), net.params["W2"])
        (g_e,) = torch.autograd.grad(net(x).sum(), net.params["W2"])
        torch.testing.assert_close(g_c, g_e, atol=1e-6, rtol=0)
