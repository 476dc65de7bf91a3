"""Independent references for the tests: brute-force enumeration and random graph builders."""

from __future__ import annotations

import itertools
from collections.abc import Hashable

import numpy as np
import torch
from hypothesis import strategies as st

import pgmunfold as pu


def brute_force(fg: pu.FactorGraph, evidence: dict | None = None):
    """Enumerate every joint state: (log Z, marginals dict name -> np (K,), best score, argmax).

    Written with plain loops over ``fg.factors()``: shares no code with the library's inference.
    """
    cards = [int(c) for c in fg.cardinalities]
    facs = list(fg.factors())
    ev = {fg.variable_id(k): v for k, v in (evidence or {}).items()}
    logp = []
    states = []
    for x in itertools.product(*[range(c) for c in cards]):
        if any(x[v] != s for v, s in ev.items()):
            continue
        s = 0.0
        for scope, table in facs:
            s += float(table[tuple(x[v] for v in scope)])
        logp.append(s)
        states.append(x)
    logp = np.array(logp)
    m = logp.max()
    logz = m + np.log(np.exp(logp - m).sum()) if np.isfinite(m) else -np.inf
    p = np.exp(logp - logz) if np.isfinite(logz) else np.zeros_like(logp)
    marg: dict[Hashable, np.ndarray] = {}
    for v, c in enumerate(cards):
        mv = np.zeros(c)
        for prob, x in zip(p, states, strict=True):
            mv[x[v]] += prob
        marg[fg.variable_name(v)] = mv
    best = int(np.argmax(logp))
    return logz, marg, float(logp[best]), states[best]


def mean_field_reference(
    fg: pu.FactorGraph, unary: np.ndarray, iterations: int, damping: float = 0.0
) -> np.ndarray:
    """Parallel mean-field by plain loops: ``q_v`` starts as the softmax of ``unary[v]`` and
    each iteration sets every ``q_v`` (at once) to the softmax of ``unary[v]`` plus, per
    factor over ``v``, its log-table's expectation under the other variables' marginals
    (a hard zero counts as ``-1e30``, the library's sentinel; a term of probability 0
    contributes 0), damped as ``(1 - d) new + d old``. Shares no code with the library.

    Shape:
        ``unary``: ``(V, K)`` (states beyond a variable's cardinality ignored); output:
        ``(V, K)``, 0 beyond each cardinality.
    """
    cards = [int(c) for c in fg.cardinalities]
    facs = [(scope, np.where(np.isneginf(t), -1e30, t)) for scope, t in fg.factors()]

    def softmax(x: np.ndarray) -> np.ndarray:
        e = np.exp(x - x.max())
        return e / e.sum()

    q = [softmax(unary[v, :c]) for v, c in enumerate(cards)]
    for _ in range(iterations):
        new = []
        for v, c in enumerate(cards):
            field = unary[v, :c].copy()
            for scope, table in facs:
                for pos, w in enumerate(scope):
                    if w != v:
                        continue
                    for x in itertools.product(*[range(cards[z]) for z in scope]):
                        p = 1.0
                        for j, z in enumerate(scope):
                            if j != pos:
                                p *= q[z][x[j]]
                        if p != 0.0:
                            field[x[pos]] += p * table[x]
            new.append((1.0 - damping) * softmax(field) + damping * q[v])
        q = new
    out = np.zeros((len(cards), max(cards, default=1)))
    for v, c in enumerate(cards):
        out[v, :c] = q[v]
    return out


@st.composite
def random_graphs(draw, max_vars=5, max_factors=6, hard_zeros=True, tree=False, max_card=4):
    """A small random factor graph: arity 1-3, cards 1-4, unsorted/duplicate scopes, cycles,
    isolated variables, optional -inf entries (at least one finite entry per table)."""
    n = draw(st.integers(1, max_vars))
    cards = [draw(st.integers(1, max_card)) for _ in range(n)]
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    fg = pu.FactorGraph()
    for i, c in enumerate(cards):
        fg.add_variable(f"v{i}", c)
    nf = draw(st.integers(0, max_factors))
    if tree:
        # each new factor touches at most one already-connected variable: a forest
        order = list(rng.permutation(n))
        used: list[int] = [order.pop()] if order else []
        for _ in range(nf):
            if not order:
                break
            arity = int(rng.integers(2, 4))
            fresh = [order.pop() for _ in range(min(arity - 1, len(order)))]
            scope = [int(rng.choice(used)), *fresh]
            used += fresh
            rng.shuffle(scope)
            _add(fg, rng, [int(s) for s in scope], cards, hard_zeros)
        for v in range(n):
            if rng.random() < 0.5:
                _add(fg, rng, [v], cards, hard_zeros)
    else:
        for _ in range(nf):
            arity = int(rng.integers(1, min(3, n) + 1))
            scope = [int(s) for s in rng.choice(n, size=arity, replace=False)]
            _add(fg, rng, scope, cards, hard_zeros)
    return fg


def _add(fg, rng, scope, cards, hard_zeros):
    shape = tuple(cards[v] for v in scope)
    table = rng.normal(size=shape)
    if hard_zeros and rng.random() < 0.4:
        mask = rng.random(size=shape) < 0.3
        mask.reshape(-1)[int(rng.integers(table.size))] = False
        table[mask] = -np.inf
    fg.add_factor(tuple(f"v{v}" for v in scope), table)


def grid(n: int, k: int = 2, coupling: float = 0.5, seed: int = 0, hard: bool = False):
    """An n x n Potts/Ising-like grid with random tables (a loopy test model)."""
    rng = np.random.default_rng(seed)
    fg = pu.FactorGraph()
    x = fg.add_variables("x", (n, n), k)
    h = np.stack([x.ids[:, :-1], x.ids[:, 1:]], -1).reshape(-1, 2)
    v = np.stack([x.ids[:-1], x.ids[1:]], -1).reshape(-1, 2)
    pair = np.concatenate([h, v])
    fg.add_factors(x.ids.reshape(-1, 1), rng.normal(size=(n * n, k)), name="unary")
    tabs = coupling * rng.normal(size=(len(pair), k, k))
    if hard:
        tabs[:, 0, k - 1] = -np.inf
    fg.add_factors(pair, tabs, name="pairwise")
    return fg, x


def assert_same_values_and_grads(nets, u0: torch.Tensor, state: int = 1) -> None:
    """The networks give the same log marginals and the same gradients of
    ``sum p[..., state] + sum log Z`` with respect to the unary input ``u0`` (dense
    ``(B, V, K)``) and every parameter, in order."""
    outs, grads = [], []
    for net in nets:
        u = u0.clone().requires_grad_()
        out = net(unary=u)
        (out.log_marginals.exp()[..., state].sum() + out.log_partition.sum()).backward()
        outs.append(out.log_marginals)
        grads.append([u.grad, *(p.grad for p in net.parameters())])
    for lm in outs[1:]:
        torch.testing.assert_close(lm, outs[0])
    for g in grads[1:]:
        for a, b in zip(g, grads[0], strict=True):
            torch.testing.assert_close(a, b)


def distinct_copies(*nets) -> None:
    """Make the untied copies of every table differ (copy ``c`` shifted by ``0.1 c``), in
    place, the same in every network."""
    with torch.no_grad():
        for net in nets:
            for p in net.potentials.values():
                p.add_(0.1 * torch.arange(p.shape[0], dtype=p.dtype).view(-1, *[1] * (p.dim() - 1)))


def assert_same_beliefs(a, b, atol: float = 1e-9) -> None:
    """Two :class:`~pgmunfold.Beliefs` agree: the same impossible states (log marginals in the
    hard-zero regime, below ``1e-15 * NEG``, whose sentinel sums depend on the order of
    summation), log marginals, ``log Z`` and factor beliefs to ``atol``."""
    finite = b.log_marginals > -1e15
    assert torch.equal(finite, a.log_marginals > -1e15)
    torch.testing.assert_close(a.log_marginals[finite], b.log_marginals[finite], atol=atol, rtol=0)
    torch.testing.assert_close(a.log_partition, b.log_partition, atol=atol, rtol=0)
    for k, v in b.factor_log_beliefs.items():
        torch.testing.assert_close(a.factor_log_beliefs[k], v, atol=atol, rtol=0)
