"""Benchmark: the mean-field network of a layered binary MRF against the hand-written MLP.

The MF network with one bottom-up sweep computes ``sigmoid(W_L ... sigmoid(W_1 x + b_1) ...)``
with the same ``F.linear`` calls as ``nn.Sequential`` (target: within 1.1x of it); the BP network
on the same parameters replaces each matrix product by ``B n_l n_{l-1}`` softplus evaluations
(for every coupling layer above the first), and its cost is reported alongside.

Run::

    python benchmarks/layered_mlp.py                 # 784-512-256-10, batch 256, CPU
    python benchmarks/layered_mlp.py --device cuda --repeats 200 --bp-repeats 50

Every figure is the median over ``--repeats`` timed calls (``--bp-repeats`` for the BP rows),
measured in interleaved rounds so that slow drifts of the machine hit every row alike.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from pgmunfold.models import LayeredBinaryMRF


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timer(fn: Callable[[], object], device: torch.device) -> Callable[[], float]:
    def run() -> float:
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        return time.perf_counter() - t0

    return run


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="784,512,256,10", help="layer widths n_0,...,n_L")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=50, help="timed calls per row")
    ap.add_argument("--bp-repeats", type=int, default=5, help="timed calls per BP row")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    ap.add_argument("--no-bp", action="store_true", help="skip the (slower) BP rows")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sizes = [int(s) for s in args.sizes.split(",")]
    torch.manual_seed(0)
    mods: list[nn.Module] = []
    for m, n in itertools.pairwise(sizes):
        mods += [nn.Linear(m, n), nn.Sigmoid()]
    mlp = nn.Sequential(*mods).to(device)
    model = LayeredBinaryMRF.from_sequential(mlp)
    x = torch.rand(args.batch, sizes[0], device=device)

    mf1 = model.unfold("mf", sweeps=1)
    with torch.no_grad():
        diff = float((mf1(x) - mlp(x)).abs().max())

    rows: list[tuple[str, str, Callable[[], object]]] = []

    def fwd(net: nn.Module) -> Callable[[], object]:
        def f() -> object:
            with torch.no_grad():
                return net(x)

        return f

    def fwd_bwd(net: nn.Module) -> Callable[[], object]:
        def f() -> object:
            net.zero_grad(set_to_none=True)
            out = net(x)
            out.sum().backward()
            return out

        return f

    rows.append(("nn.Sequential", "forward", fwd(mlp)))
    rows.append(("MF, 1 sweep (tied)", "forward", fwd(mf1)))
    rows.append(("MF, 1 sweep (untied)", "forward", fwd(model.unfold("mf", untie=True))))
    rows.append(("MF, 3 sweeps", "forward", fwd(model.unfold("mf", sweeps=3))))
    if not args.no_bp:
        rows.append(("BP, 1 iteration", "forward", fwd(model.unfold("bp", iterations=1))))
        rows.append(("BP, 3 iterations", "forward", fwd(model.unfold("bp", iterations=3))))
        rows.append(
            (
                "BP, 3 iterations, parallel",
                "forward",
                fwd(model.unfold("bp", iterations=3, schedule="parallel")),
            )
        )
    rows.append(("nn.Sequential", "fwd+bwd", fwd_bwd(mlp)))
    rows.append(("MF, 1 sweep (tied)", "fwd+bwd", fwd_bwd(mf1)))
    if not args.no_bp:
        rows.append(("BP, 1 iteration", "fwd+bwd", fwd_bwd(model.unfold("bp", iterations=1))))

    timers = [_timer(fn, device) for _, _, fn in rows]
    is_bp = [name.startswith("BP") for name, _, _ in rows]
    for t, bp in zip(timers, is_bp, strict=True):
        for _ in range(1 if bp else args.warmup):
            t()
    samples: list[list[float]] = [[] for _ in rows]
    for r in range(args.repeats):  # interleaved rounds
        for i, t in enumerate(timers):
            if not is_bp[i] or r < args.bp_repeats:
                samples[i].append(t())
    med = [statistics.median(s) * 1e3 for s in samples]
    base = {
        "forward": med[0],
        "fwd+bwd": med[next(i for i, r in enumerate(rows) if r[1] == "fwd+bwd")],
    }

    dev = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(
        f"layered MRF {'-'.join(map(str, sizes))}, batch {args.batch}, float32, {dev}, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}; "
        f"median of {args.repeats} calls ({args.bp_repeats} for BP)"
    )
    print(f"max |MF(x) - mlp(x)| = {diff:.1e}")
    print(f"{'network':<30}{'pass':<10}{'ms (median)':>12}{'vs nn.Sequential':>18}")
    for (name, kind, _), ms in zip(rows, med, strict=True):
        print(f"{name:<30}{kind:<10}{ms:>12.3f}{ms / base[kind]:>17.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
