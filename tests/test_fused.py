"""The fused Triton kernels (infer/fused.py, ``backend="triton"``) equal their naive twins and
the general path. Without CUDA they run in Triton's interpreter (``TRITON_INTERPRET=1``, set
in conftest.py)."""

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import grid
from hypothesis import assume, given
from hypothesis import strategies as st

import pgmunfold as pu
from pgmunfold.infer import fused
from pgmunfold.infer.fused import (
    FusedWiring,
    fused_beliefs,
    fused_beliefs_naive,
    fused_binary_messages,
    fused_binary_messages_naive,
    fused_factor_messages,
    fused_factor_messages_naive,
    fused_mf_messages,
    fused_mf_messages_naive,
    fused_mf_update,
    fused_mf_update_naive,
    fused_tables,
)
from pgmunfold.infer.ops import NEG
from pgmunfold.infer.pairwise import LOG2E, NEG_BITS

pytest.importorskip("triton")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@st.composite
def kernel_inputs(draw):
    """Random wiring (cycles, repeated pairs, isolated variables), messages, beliefs, tables."""
    K = draw(st.integers(1, 9))  # 3, 5, 6, 7, 9: padded to a power of two in registers
    V = draw(st.integers(2, 9))
    F = draw(st.integers(1, 12))
    B = draw(st.integers(1, 3))
    shared = draw(st.booleans())
    scale = draw(st.sampled_from([0.1, 1.0, 30.0, 1e4]))
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    var0 = torch.randint(0, V, (F,), generator=gen)
    var1 = (var0 + 1 + torch.randint(0, V - 1, (F,), generator=gen)) % V
    P = 2 * F
    table = torch.zeros(F, dtype=torch.long) if shared else torch.arange(F)
    pw_var = torch.cat([var0, var1])
    D = int(torch.bincount(pw_var, minlength=V).max())
    slots = torch.full((D, V), P)
    seen = [0] * V
    for p, v in enumerate(pw_var.tolist()):
        slots[seen[v], v] = p
        seen[v] += 1
    msg = scale * torch.randn(B, K, P + 1, generator=gen, dtype=dtype)
    if draw(st.booleans()):  # sentinel (hard-zero) entries in messages and tables
        msg[:, 0, ::3] = NEG_BITS
    msg[:, :, -1] = 0.0
    field = scale * torch.randn(B, K, V, generator=gen, dtype=dtype)
    theta = scale * torch.randn(1 if shared else F, K, K, generator=gen, dtype=dtype)
    if draw(st.booleans()):
        theta[:, 0, -1] = -float("inf")
    itype = draw(st.sampled_from([torch.int32, torch.int64]))  # the network uses int32
    identity = not shared and draw(st.booleans())  # no table column: factor f reads table f
    cols = (torch.arange(F), torch.arange(F, P), var0, var1)
    wiring = FusedWiring(*(c.to(itype) for c in cols), None if identity else table.to(itype))
    return msg, field, slots.reshape(-1).to(itype), fused_tables([theta], K), wiring


@given(kernel_inputs(), st.sampled_from(["sum", "max"]), st.sampled_from([0.0, 0.4]), st.booleans())
def test_kernels_equal_their_naive_twins(inputs, semiring, damping, exact):
    msg, field, slots, tables, wiring = (
        x.to(DEVICE)
        if isinstance(x, torch.Tensor)
        else FusedWiring(*(w if w is None else w.to(DEVICE) for w in x))
        for x in inputs
    )
    bel = torch.full_like(field, float("nan"))
    fused_beliefs(msg, field, slots, bel)
    ref_bel = fused_beliefs_naive(msg, field, slots)
    # sums in another order: rounding relative to the size of the terms
    eps = torch.finfo(msg.dtype).eps
    terms = fused_beliefs_naive(msg.abs().clamp_max(-NEG_BITS), field.abs(), slots)
    assert ((bel - ref_bel).abs() <= 8 * eps * terms).all()
    out = torch.full_like(msg, float("nan"))
    before = msg.clone()
    # exact cavities: the kernel gets the field and sums the other messages itself
    src, exact_slots = (field, slots) if exact else (ref_bel, None)
    fused_factor_messages(msg, src, tables, wiring, semiring, damping, out, exact_slots)
    ref = fused_factor_messages_naive(msg, src, tables, wiring, semiring, damping, exact_slots)
    assert torch.equal(msg, before)  # inputs untouched
    assert not out[:, :, :-1].isnan().any()  # every message column written
    # relative to the scale of the bits involved (1e4-nat inputs carry float32 rounding)
    scale = max(1.0, float(ref_bel.abs().max()), float(msg[msg > NEG_BITS].abs().max()))
    torch.testing.assert_close(out[:, :, :-1], ref[:, :, :-1], atol=64 * eps * scale, rtol=0)


@given(kernel_inputs(), st.sampled_from(["sum", "max"]), st.sampled_from([0.0, 0.4]))
def test_binary_kernel_equals_its_naive_twin(inputs, semiring, damping):
    msg, field, _, _, wiring = inputs
    B, K, P1 = msg.shape
    gen = torch.Generator().manual_seed(P1 + K)
    lo = 3.0 * torch.randn(B, P1, generator=gen, dtype=field.dtype)  # log-odds messages
    lo[:, -1] = 0.0  # the padding edge
    belief = field[:, 0].contiguous()
    belief[:, ::2] *= 1e26  # evidence-like (huge) cavity log-odds
    F = wiring.col0.shape[0]
    T = F if wiring.table is None else int(wiring.table.max()) + 1
    theta = 2.0 * torch.randn(T, 2, 2, generator=gen, dtype=field.dtype)
    tables = fused_tables([theta], 2, bits=False).view(4, -1)
    lo, belief, tables = (x.to(DEVICE) for x in (lo, belief, tables))
    wiring = FusedWiring(*(w if w is None else w.to(DEVICE) for w in wiring))
    out = torch.full_like(lo, float("nan"))
    out[:, -1] = 0.0
    before = lo.clone()
    fused_binary_messages(lo, belief, tables, wiring, semiring, damping, out)
    assert torch.equal(lo, before)
    ref = fused_binary_messages_naive(lo, belief, tables, wiring, semiring, damping)
    # exact for any cavity: rounding relative to the tables and messages, not to the cavities
    scale = max(1.0, float(tables.abs().max()), float(lo.abs().max()))
    eps = torch.finfo(lo.dtype).eps
    torch.testing.assert_close(out, ref, atol=64 * eps * scale, rtol=0)


@given(kernel_inputs(), st.sampled_from([0.0, 0.4]))
def test_mean_field_kernels_equal_their_naive_twins(inputs, damping):
    msg, field, slots, _, wiring = inputs
    B, K, P1 = msg.shape
    gen = torch.Generator().manual_seed(P1)
    q = torch.softmax(torch.randn(field.shape, generator=gen, dtype=field.dtype), dim=1)
    F = wiring.col0.shape[0]
    T = F if wiring.table is None else int(wiring.table.max()) + 1
    theta = 3.0 * torch.randn(T, K, K, generator=gen, dtype=field.dtype)
    tables = fused_tables([theta], K, bits=False)
    q, field, slots, tables = (x.to(DEVICE) for x in (q, field, slots, tables))
    wiring = FusedWiring(*(w if w is None else w.to(DEVICE) for w in wiring))
    m = torch.full((B, K, P1), float("nan"), dtype=field.dtype, device=DEVICE)
    m[:, :, -1] = 0.0
    fused_mf_messages(q, tables, wiring, m)
    ref_m = fused_mf_messages_naive(q, tables, wiring, P1)
    torch.testing.assert_close(m, ref_m)
    out = torch.full_like(q, float("nan"))
    before = q.clone()
    fused_mf_update(ref_m, field, q, slots, damping, out)
    assert torch.equal(q, before)
    ref = fused_mf_update_naive(ref_m, field, q, slots, damping)
    # the fields are sums in another order: their rounding (relative to the size of the terms,
    # 1e4 in float32 is 1e-3 absolute) moves a probability by at most a quarter of it
    terms = fused_beliefs_naive(ref_m.abs(), field.abs(), slots).amax()
    default = 1e-5 if q.dtype == torch.float32 else 1e-7  # assert_close's own atol
    atol = max(8 * torch.finfo(q.dtype).eps * float(terms), default)
    torch.testing.assert_close(out, ref, atol=atol, rtol=0)
    assert torch.allclose(out.sum(dim=1), torch.ones_like(out[:, 0]))


def test_tables_layout_bits_padding_and_clamp():
    th = torch.tensor([[[0.0, 1.0], [-float("inf"), 2.0]]], dtype=torch.float64)
    tab = fused_tables([th, 3.0 * th], 3)
    assert tab.shape == (3, 3, 2) and tab.is_contiguous()
    assert tab[0, 1, 0] == 1.0 * LOG2E and tab[1, 1, 1] == 6.0 * LOG2E
    assert tab[1, 0, 0] == NEG_BITS  # -inf clamped to the sentinel
    assert (tab[2, :, :] == NEG_BITS).all() and (tab[:, 2, :] == NEG_BITS).all()  # padded
    nats = fused_tables([th], 3, bits=False)  # mean-field: nats, padded with weight 0
    assert nats[0, 1, 0] == 1.0 and nats[1, 0, 0] == NEG  # -inf clamped to the sentinel
    assert (nats[2, :, :] == 0).all() and (nats[:, 2, :] == 0).all()


def test_batches_beyond_the_grid_limit_launch_in_chunks(monkeypatch):
    monkeypatch.setattr(fused, "_MAX_GRID_Y", 2)
    fg, _ = grid(3, k=3, seed=4)
    u = torch.randn(5, 9, 3, dtype=torch.float64)
    a = pu.compile(fg, iterations=4, damping=0.2, dtype=torch.float64, backend="triton")
    b = pu.compile(fg, iterations=4, damping=0.2, dtype=torch.float64, fast_path=False)
    a, b = a.to(DEVICE), b.to(DEVICE)
    with torch.no_grad():
        ra, rb = a(unary=u.to(DEVICE)), b(unary=u.to(DEVICE))
    torch.testing.assert_close(ra.log_marginals, rb.log_marginals)


@st.composite
def pairwise_graphs(draw):
    """Unary and pairwise factors; cards 2-5 (mixed: padded states), shared and per-factor
    tables, several groups, cycles, hard zeros (exact cavities), untied copies, evidence."""
    n = draw(st.integers(2, 6))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    binary = draw(st.booleans())
    cards = [2] * n if binary else [int(c) for c in rng.integers(2, 6, size=n)]
    fg = pu.FactorGraph()
    for i, c in enumerate(cards):
        fg.add_variable(f"v{i}", c)
    scale = draw(st.sampled_from([0.1, 1.0, 5.0, 100.0]))
    groups = draw(st.integers(1, 2))
    hard = draw(st.booleans())  # one forbidden pair of states per table
    for g in range(groups):
        m = draw(st.integers(1, 7))
        pairs = np.array([rng.choice(n, 2, replace=False) for _ in range(m)])
        by_cards: dict[tuple[int, int], list[np.ndarray]] = {}
        for a, b in pairs:  # one group per pair of cardinalities
            by_cards.setdefault((cards[a], cards[b]), []).append(np.array([a, b]))
        shared = draw(st.booleans())
        for (ka, kb), scopes in by_cards.items():
            tab = scale * rng.normal(size=(len(scopes), ka, kb))
            if hard:
                tab[:, 0, kb - 1] = -np.inf
            fg.add_factors(np.stack(scopes), tab[0] if shared else tab, name=f"p{g}_{ka}{kb}")
    if draw(st.booleans()):
        for i, c in enumerate(cards):
            fg.add_factor(f"v{i}", rng.normal(size=c))
    return fg, cards


@given(
    pairwise_graphs(),
    st.sampled_from([("bp", "sum"), ("bp", "max"), ("mf", "sum")]),
    st.sampled_from([0.0, 0.5]),
    st.integers(1, 3),
    st.booleans(),
    st.booleans(),
)
def test_triton_backend_equals_general_path(graph, alg, damping, B, untie, evidence):
    algorithm, semiring = alg
    fg, cards = graph
    V = fg.num_variables
    K = max(cards)
    gen = torch.Generator().manual_seed(V + B)
    u = torch.randn(B, V, K, generator=gen, dtype=torch.float64)
    ev = {"v0": cards[0] - 1} if evidence else None
    kw = dict(iterations=5, damping=damping, semiring=semiring, untie=untie, dtype=torch.float64)
    kw["algorithm"] = algorithm
    nets = [
        pu.compile(fg, backend="triton", **kw).to(DEVICE),
        pu.compile(fg, fast_path=False, **kw).to(DEVICE),
    ]
    if untie:  # different copies per iteration, the same in both nets
        for net in nets:
            g = torch.Generator().manual_seed(3)
            with torch.no_grad():
                for p in net.parameters():
                    p.add_(0.5 * torch.randn(p.shape, generator=g, dtype=p.dtype).to(DEVICE))
    with torch.no_grad():
        a, b = (net(unary=u.to(DEVICE), evidence=ev) for net in nets)
    if algorithm == "mf" and not bool(torch.isfinite(b.log_partition).all()):
        # mass on a hard zero: mean-field's sentinel regime, where which state wins depends on
        # the order of summation, and the fused kernels' padding states can take the mass
        # (the general path's flat layout has none: tests/test_enumerated.py)
        assume(False)
    tol = 1e-9
    torch.testing.assert_close(a.log_marginals, b.log_marginals, atol=tol, rtol=tol)
    torch.testing.assert_close(a.residual, b.residual, atol=tol, rtol=tol)
    if semiring == "sum":
        torch.testing.assert_close(a.log_partition, b.log_partition, atol=tol, rtol=tol)
    lm = a.log_marginals
    top2 = lm.topk(min(2, lm.shape[-1]), dim=-1).values
    if top2.shape[-1] < 2 or bool(((top2[..., 0] - top2[..., 1]) > 1e-6).all()):  # no tie
        torch.testing.assert_close(a.map_states, b.map_states)


def test_triton_backend_under_autograd_runs_the_torch_kernels():
    fg, _ = grid(3, k=3, seed=1)
    u = torch.randn(2, 9, 3, dtype=torch.float64)
    nets = [
        pu.compile(fg, iterations=6, damping=0.3, dtype=torch.float64, backend=b).to(DEVICE)
        for b in ("triton", "torch")
    ]
    grads, outs = [], []
    for net in nets:
        uu = u.clone().to(DEVICE).requires_grad_()
        out = net(unary=uu)
        out.log_partition.sum().backward()
        grads.append([uu.grad, *(p.grad for p in net.parameters())])
        outs.append(out.log_marginals)
    torch.testing.assert_close(outs[0], outs[1])
    for ga, gb in zip(*grads, strict=True):
        torch.testing.assert_close(ga, gb)
    with torch.no_grad():  # and the fused forward gives the same marginals
        torch.testing.assert_close(nets[0](unary=u.to(DEVICE)).log_marginals, outs[1])


@pytest.mark.parametrize(
    ("k", "hard", "kernel"),
    [
        (2, False, "fused_binary_messages"),  # binary, finite tables: the log-odds kernel
        (2, True, "fused_factor_messages"),  # hard zeros: the K-state kernel, exact cavities
        (3, False, "fused_factor_messages"),
    ],
)
def test_triton_backend_float32_grid_runs_one_fused_launch_per_iteration(
    monkeypatch, k, hard, kernel
):
    calls = []
    fn = getattr(pu.network, kernel)
    monkeypatch.setattr(pu.network, kernel, lambda *a: calls.append(1) or fn(*a))
    fg, _ = grid(6, k=k, seed=2, hard=hard)
    nets = [
        pu.compile(fg, iterations=20, damping=0.5, backend=b).to(DEVICE)
        for b in ("triton", "torch")
    ]
    with torch.no_grad():
        a, b = (net() for net in nets)
    torch.testing.assert_close(a.probs, b.probs, atol=2e-5, rtol=0)
    assert a.log_marginals.dtype == torch.float32
    assert len(calls) == 20  # one fused launch per iteration, none for the torch backend


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        (dict(algorithm="mf", schedule="sequential"), "schedule='parallel'"),
        (dict(schedule="sequential"), "schedule='parallel'"),
        (dict(fast_path=False), "fast_path=True"),
        (dict(backend="cuda"), "backend must be 'torch' or 'triton', got 'cuda'"),
    ],
)
def test_triton_backend_conditions_are_checked_at_compile_time(kw, message):
    fg, _ = grid(2, k=2)
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        pu.compile(fg, **{"backend": "triton", **kw})


def test_triton_backend_refuses_higher_arity():
    fg = pu.FactorGraph()
    x = fg.add_variables("x", 3, 2)
    fg.add_factors(x.ids[None, :], np.zeros((1, 2, 2, 2)), name="triple")
    with pytest.raises(ValueError, match="only unary and pairwise factors"):
        pu.compile(fg, backend="triton")


def test_cpu_tensors_without_the_interpreter_are_refused(monkeypatch):
    monkeypatch.setattr(fused, "_kernels", lambda: fused._Kernels(None, None, False))
    fg, _ = grid(2, k=2)
    net = pu.compile(fg, iterations=2, backend="triton")
    with torch.no_grad(), pytest.raises(RuntimeError, match="runs on CUDA tensors, got a cpu"):
        net()


def test_triton_backend_module_conventions():
    fg, _ = grid(3, k=3)
    net = pu.compile(fg, iterations=3, backend="triton")
    assert "backend=triton" in repr(net)
    assert "backend" not in repr(pu.compile(fg, iterations=3))
    assert net.untie().backend == "triton"
    torch_net = pu.compile(fg, iterations=3)
    torch_net.load_state_dict(net.state_dict())  # same parameters, index buffers not saved
    assert not any(k.startswith("fused_") for k in net.state_dict())


UAI_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "uai2014-mar"
# the pairwise instances (the others have factors of arity 3 or more); ObjectDetection_11 has
# hard zeros (exact cavities) and 11 states (padded to 16 in registers)
UAI_PAIRWISE = ["CSP_11", "DBN_11", "Grids_11", "ObjectDetection_11", "Segmentation_11"]


@pytest.mark.parametrize("name", UAI_PAIRWISE)
def test_triton_backend_on_uai_instances(name):
    path = UAI_DIR / f"{name}.uai"
    if not path.exists():
        pytest.skip("shared UAI 2014 data not present")
    fg = pu.read_uai(path)
    kw = dict(iterations=10, damping=0.3, dtype=torch.float64)
    nets = [pu.compile(fg, backend="triton", **kw), pu.compile(fg, fast_path=False, **kw)]
    assert nets[0].exact_cavity == (name == "ObjectDetection_11")
    with torch.no_grad():
        a, b = (net.to(DEVICE)() for net in nets)
    torch.testing.assert_close(a.log_marginals.exp(), b.log_marginals.exp(), atol=1e-12, rtol=0)


def test_kernel_inputs_are_checked_before_launch():
    msg = torch.zeros(2, 3, 5)
    field = torch.zeros(2, 3, 4)
    slots = torch.full((8,), 4)
    with pytest.raises(ValueError, match=r"fused_beliefs: out has shape \(2, 3, 3\)"):
        fused_beliefs(msg, field, slots, torch.zeros(2, 3, 3))
    with pytest.raises(ValueError, match="fused_beliefs: field must be contiguous"):
        fused_beliefs(msg, torch.zeros(2, 4, 3).transpose(1, 2), slots, torch.zeros(2, 3, 4))
    wiring = FusedWiring(*(torch.zeros(2, dtype=torch.long) for _ in range(4)))
    tables = torch.zeros(3, 3, 2)
    with pytest.raises(ValueError, match=r"fused_factor_messages: tables has shape \(3, 2, 2\)"):
        fused_factor_messages(msg, field, tables[:, :2], wiring, "sum", 0.0, msg.clone())
    short = wiring._replace(var1=torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"var1 has shape \(3,\), expected \(2,\)"):
        fused_mf_messages(field, tables, short, msg.clone())
    with pytest.raises(ValueError, match=r"fused_mf_update: q has shape"):
        fused_mf_update(msg, field, field[:1], slots, 0.0, field.clone())
