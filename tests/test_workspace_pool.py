"""The no-grad workspace kept between forwards (:class:`~pgmunfold.infer.workspace.WorkspacePool`):
a later forward never changes what an earlier result reads, and the pool follows the
module's copies, moves and threads."""

from __future__ import annotations

import copy
import pickle
import threading

import pytest
import torch
from helpers import grid

import pgmunfold as pu
from pgmunfold.infer import pairwise

PATHS = [
    ("binary", 2, {}),
    ("binary-max", 2, {"semiring": "max"}),
    ("binary-1-row", 2, {"_rows": 1}),
    ("pairwise-columns", 3, {}),
    ("pairwise-exact", 3, {"exact_cavity": True}),
    ("pairwise-log", 3, {"contraction": "logsumexp"}),
    ("pairwise-untied", 3, {"untie": True}),
    ("pairwise-units", 3, {"_units": True}),
    ("pairwise-max-units", 3, {"semiring": "max", "_units": True}),
    ("mf-pairwise", 3, {"algorithm": "mf"}),
    ("mf-pairwise-units", 3, {"algorithm": "mf", "_units": True}),
]


def _read(out: pu.Beliefs) -> dict[str, torch.Tensor]:
    """Everything a result computes on first read, and the rest."""
    got = {"m": out.log_marginals.clone(), "s": out.map_states.clone(), "r": out.residual}
    if out.log_partition is not None:
        got["z"] = out.log_partition
    got.update({f"b/{k}": v for k, v in out.factor_log_beliefs.items()})
    return got


@pytest.mark.parametrize(("name", "k", "cfg"), PATHS, ids=[p[0] for p in PATHS])
def test_a_later_forward_leaves_an_earlier_result_alone(name, k, cfg, monkeypatch):
    cfg = dict(cfg)
    rows = cfg.pop("_rows", 3)
    if cfg.pop("_units", False):  # the unit-by-unit contraction instead of the columns
        monkeypatch.setattr(pairwise, "_COLUMNS_MAX", 0)
    fg, _ = grid(4, k, coupling=1.0)
    net = pu.compile(fg, iterations=4, damping=0.2, dtype=torch.float64, **cfg)
    assert net.binary_fast or net.pairwise_fast or net.mf_fast, name
    u1 = torch.randn(rows, 16, k, dtype=torch.float64)
    u2 = torch.randn(rows, 16, k, dtype=torch.float64) * 3
    with torch.no_grad():
        expected = _read(net(unary=u1))  # read at once
        assert len(net._pool) == 1  # kept for the next forward
        early = net(unary=u1)  # read only after two more forwards
        net(unary=u2)
        _read(net(unary=u2))
        late = _read(early)
    for key, value in expected.items():
        assert torch.equal(late[key], value), f"{name}: {key} changed by a later forward"


def test_the_pool_serves_no_grad_cpu_forwards_only_and_is_not_copied():
    fg, _ = grid(3, 3)
    net = pu.compile(fg, iterations=2)
    net()  # under autograd: nothing kept
    assert len(net._pool) == 0
    with torch.no_grad():
        first = net().log_marginals
        kept = net._pool._free[False][0]
        second = net().log_marginals
    assert net._pool._free[False][0] is kept and torch.equal(first, second)
    with torch.inference_mode():  # a pool of its own: its tensors are read-only outside
        assert torch.equal(net().log_marginals, first)
        assert torch.equal(net().log_marginals, first)
    assert len(net._pool._free[True]) == 1
    with torch.no_grad():
        assert torch.equal(net().log_marginals, first)
    for clone in (copy.deepcopy(net), pickle.loads(pickle.dumps(net))):
        assert len(clone._pool) == 0
        with torch.no_grad():
            assert torch.equal(clone().log_marginals, first)
    net.double()  # a move drops the kept buffers
    assert len(net._pool) == 0


def test_concurrent_forwards_each_get_their_own_buffers():
    fg, _ = grid(5, 3, coupling=1.0)
    net = pu.compile(fg, iterations=5, damping=0.3)
    inputs = [torch.randn(2, 25, 3) * (1 + i) for i in range(6)]
    with torch.no_grad():
        serial = [net(unary=u).log_marginals for u in inputs]
    results: dict[int, list[torch.Tensor]] = {}

    def work(i: int) -> None:
        with torch.no_grad():  # (grad mode is per thread)
            results[i] = [net(unary=u).log_marginals for u in inputs for _ in range(5)]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got in results.values():
        for j, m in enumerate(got):
            assert torch.equal(m, serial[j // 5])
    assert len(net._pool) <= net._pool.MAX_KEPT
