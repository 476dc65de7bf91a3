"""The demo behind ``python -m pgmunfold``: the showcase (a sigmoid MLP *is* unfolded
mean-field; unfolded BP is a new architecture, trained side by side), then loopy BP and
mean-field on a small grid against exact marginals. Subcommands (``infer``) go to
:mod:`pgmunfold.cli`."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from torch import nn

import pgmunfold as pu
from pgmunfold.models import LayeredBinaryMRF
from pgmunfold.train import binary_log_marginals, fit, marginal_cross_entropy


def _showcase_demo() -> None:
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(16, 12), nn.Sigmoid(), nn.Linear(12, 4), nn.Sigmoid())
    model = LayeredBinaryMRF.from_sequential(mlp)
    x = torch.rand(64, 16)
    with torch.no_grad():
        diff = float((model.unfold("mf", sweeps=1)(x) - mlp(x)).abs().max())
    print(
        f"sigmoid MLP 16-12-4 vs unfolded mean-field (1 bottom-up sweep): max |diff| = {diff:.1e}"
    )
    # a teacher network labels random inputs; each unfolded network learns them from one init
    layer = nn.Linear(16, 4)
    teacher = nn.Sequential(layer, nn.Sigmoid())
    with torch.no_grad():
        layer.weight.mul_(8.0)
        xs = torch.rand(1024, 16)
        ys = (teacher(xs) > 0.5).long()
    data = [(xs[i : i + 64], ys[i : i + 64]) for i in range(0, 768, 64)]

    def loss(net: Any, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        log_odds = net.log_odds(batch[0])
        return marginal_cross_entropy(binary_log_marginals(log_odds), batch[1])

    print(f"{'network':<24}{'parameters':>11}{'test bit accuracy':>19}{'train s':>9}")
    for label, alg, steps, untie in [
        ("MLP = MF, 1 sweep", "mf", 1, False),
        ("MF, 3 sweeps, untied", "mf", 3, True),
        ("BP, 2 iterations", "bp", 2, False),
    ]:
        torch.manual_seed(1)
        mrf = LayeredBinaryMRF([16, 12, 4])
        net = mrf.unfold("mf", steps, untie=untie) if alg == "mf" else mrf.unfold("bp", steps)
        t0 = time.perf_counter()
        fit(net, loss, data, epochs=10, lr=0.05, progress=False)
        with torch.no_grad():
            acc = float(((net(xs[768:]) > 0.5).long() == ys[768:]).float().mean())
        dt = time.perf_counter() - t0
        n_par = sum(p.numel() for p in net.parameters())
        print(f"{label:<24}{n_par:>11}{100 * acc:>18.1f}%{dt:>9.2f}")
    print()


def _grid_demo() -> int:
    rng = np.random.default_rng(0)
    fg = pu.FactorGraph()
    x = fg.add_variables("x", (4, 4), 3)
    pairs = np.concatenate(
        [
            np.stack([x.ids[:, :-1], x.ids[:, 1:]], -1).reshape(-1, 2),
            np.stack([x.ids[:-1], x.ids[1:]], -1).reshape(-1, 2),
        ]
    )
    fg.add_factors(x.ids.reshape(-1, 1), rng.normal(size=(16, 3)), name="unary")
    fg.add_factors(pairs, 0.6 * rng.normal(size=(len(pairs), 3, 3)), name="pairwise")
    exact = pu.exact_marginals(fg)
    logz = float(pu.exact_log_partition(fg))
    print(f"4x4 Potts grid, 3 states, {fg.num_factors} factors; exact log Z = {logz:.6f}")
    print(f"{'method':<28}{'max |marg err|':>16}{'log Z est.':>14}{'ms':>8}")
    for label, kw in [
        ("loopy BP, flooding", dict(algorithm="bp")),
        ("loopy BP, sequential", dict(algorithm="bp", schedule="sequential")),
        ("mean-field, sequential", dict(algorithm="mf", schedule="sequential")),
    ]:
        net = pu.compile(fg, iterations=50, dtype=torch.float64, **kw)  # type: ignore[arg-type]
        t0 = time.perf_counter()
        with torch.no_grad():
            out = net()
        ms = 1e3 * (time.perf_counter() - t0)
        err = max(float((out.marginals[k] - exact[k]).abs().max()) for k in exact)
        print(f"{label:<28}{err:>16.2e}{float(out.log_partition):>14.6f}{ms:>8.1f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m pgmunfold``."""
    argv = list(argv or [])
    if argv:
        from pgmunfold import cli

        return int(cli.main(argv))
    _showcase_demo()
    return _grid_demo()
