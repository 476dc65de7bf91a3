"""Tutorial 02: unfolded, untied BP for Ising denoising, against BP run to convergence.

The claim of deep unfolding (Hershey, Le Roux & Weninger, 2014): an inference algorithm stopped
after a few iterations, with its parameters untied per iteration and trained discriminatively,
can be as accurate as the original model's inference run to convergence, within a fixed, small
network. This script tests it on binary image denoising with a grid CRF:

1. generates binary images of random rectangles and discs on this machine and observes them
   through Gaussian noise; the unaries are the noise model's log-likelihoods of each noisy
   pixel, passed per image as ``net(unary={x: u})``;
2. the baseline is the Ising model (one shared coupling table for horizontal and one for
   vertical edges) with its coupling strength ``J`` chosen by grid search on the training
   images, and loopy BP run to convergence (``--size ci``: 100 iterations, ``full``: 200);
3. the unfolded network is BP with 5 iterations, ``pu.compile(..., iterations=5, untie=True)``:
   one copy of each coupling table (and of a learned unary bias) per iteration, initialised
   from the baseline and trained discriminatively with ``pgmunfold.train.fit`` on the
   cross-entropy of the clean pixels under the predicted marginals, together with one gain on
   the input unaries; the same 5 iterations tied (untrained, and trained) separate the effect of
   training from that of untying;
4. reports on held-out images the pixel accuracy, the marginal error ``mean |P(x=1) - clean|``,
   the cross-entropy and the measured wall time per image of every network, and saves
   ``examples.png``, ``couplings.png`` and ``results.json``.

Run ``python tutorials/02_unfolded_bp_for_ising_denoising.py --size ci`` (16x16 images, under a
minute on two cores) or ``--size full`` (32x32 images, more data and training).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import pgmunfold as pu
from pgmunfold.train import fit, marginal_cross_entropy

NAME = "02_unfolded_bp_for_ising_denoising"
SIGMA = 0.8  # noise level: thresholding the noisy pixels gets about 73% right


@dataclass(frozen=True)
class Size:
    side: int
    n_train: int
    n_test: int
    n_search: int  # training images used by the grid search over J
    converged_iterations: int
    epochs: int


SIZES = {
    "ci": Size(side=16, n_train=200, n_test=100, n_search=60, converged_iterations=100, epochs=25),
    "full": Size(
        side=32, n_train=800, n_test=400, n_search=200, converged_iterations=200, epochs=40
    ),
}
GRID_J = np.round(np.arange(0.0, 2.01, 0.2), 2)
UNROLLED = 5


# ---------------------------------------------------------------------------- data
def shapes(n: int, side: int, rng: np.random.Generator) -> np.ndarray:
    """Binary images: the union of 1-3 random axis-aligned rectangles and discs."""
    ii, jj = np.mgrid[0:side, 0:side]
    out = np.zeros((n, side, side), dtype=np.int64)
    for b in range(n):
        for _ in range(int(rng.integers(1, 4))):
            if rng.random() < 0.5:
                h, w = rng.integers(side // 5, side // 2 + 1, size=2)
                i, j = rng.integers(0, side - h + 1), rng.integers(0, side - w + 1)
                out[b, i : i + h, j : j + w] = 1
            else:
                r = rng.uniform(side / 8, side / 4)
                ci, cj = rng.uniform(0, side, size=2)
                out[b][(ii - ci) ** 2 + (jj - cj) ** 2 <= r * r] = 1
    return out


def unaries(clean: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
    """Gaussian noise, then the log-likelihood of each state: ``-(y - k)^2 / (2 sigma^2)``."""
    y = clean + SIGMA * rng.normal(size=clean.shape)
    k = np.arange(2.0)
    u = -((y[..., None] - k) ** 2) / (2 * SIGMA**2)
    return torch.tensor(u - u.max(-1, keepdims=True), dtype=torch.float32)


# ---------------------------------------------------------------------------- the model
def ising(side: int, coupling: float) -> tuple[pu.FactorGraph, pu.VariableArray]:
    """Grid CRF: a unary bias group, horizontal and vertical coupling groups (shared tables)."""
    fg = pu.FactorGraph()
    x = fg.add_variables("x", (side, side), 2)
    horizontal = np.stack([x.ids[:, :-1], x.ids[:, 1:]], -1).reshape(-1, 2)
    vertical = np.stack([x.ids[:-1], x.ids[1:]], -1).reshape(-1, 2)
    table = coupling * np.eye(2)  # log-potential J when the two pixels agree
    fg.add_factors(horizontal, table, name="horizontal")
    fg.add_factors(vertical, table, name="vertical")
    fg.add_factors(x.ids.reshape(-1, 1), np.zeros(2), name="bias")
    return fg, x


class Denoiser(nn.Module):
    """An unfolded network plus a learned gain on the input unaries.

    Shape:
        ``forward(u)``: ``(B, H, W, 2)`` unaries -> Beliefs with ``log_marginals (B, H*W, 2)``.
    """

    def __init__(self, net: pu.UnfoldedNetwork, x: pu.VariableArray, learn_gain: bool) -> None:
        super().__init__()
        self.net, self.x = net, x
        self.gain = nn.Parameter(torch.ones(()), requires_grad=learn_gain)

    def forward(self, u: torch.Tensor) -> pu.Beliefs:
        return self.net(unary={self.x: self.gain * u})


def loss_fn(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    u, clean = batch
    out = model(u)
    return marginal_cross_entropy(out.log_marginals, clean.reshape(clean.shape[0], -1))


@torch.no_grad()
def evaluate(model: nn.Module, u: torch.Tensor, clean: torch.Tensor) -> dict[str, float]:
    out = model(u)
    p1 = out.log_marginals[..., 1].exp()
    c = clean.reshape(clean.shape[0], -1)
    return {
        "accuracy": float(((p1 > 0.5).long() == c).float().mean()),
        "marginal_error": float((p1 - c).abs().mean()),
        "cross_entropy": float(loss_fn(model, (u, clean))),
        "converged": float((out.residual <= 1e-4).float().mean()),
    }


@torch.no_grad()
def ms_per_image(
    models: dict[str, nn.Module], u: torch.Tensor, rounds: int = 5
) -> dict[str, float]:
    """Forward wall time on the batch ``u`` divided by its size: median over ``rounds``
    interleaved rounds (every model once per round), so that load changes hit all alike."""
    times: dict[str, list[float]] = {k: [] for k in models}
    for m in models.values():  # warm-up
        m(u)
    for _ in range(rounds):
        for k, m in models.items():
            if u.is_cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            m(u)
            if u.is_cuda:
                torch.cuda.synchronize()
            times[k].append(time.perf_counter() - t0)
    return {k: 1e3 * statistics.median(v) / u.shape[0] for k, v in times.items()}


def n_trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def couplings(model: Denoiser) -> dict[str, list[float]]:
    """Effective coupling ``(t00 + t11 - t01 - t10) / 2`` of each group at each iteration."""
    out = {}
    for g in ("horizontal", "vertical"):
        js = []
        for t in range(model.net.iterations):
            th = model.net.log_potentials(g, t)[0].detach()
            js.append(float((th[0, 0] + th[1, 1] - th[0, 1] - th[1, 0]) / 2))
        out[g] = js
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="ci")
    ap.add_argument("--out", type=Path, default=Path("tutorials/out") / NAME)
    ap.add_argument("--device", default="cpu")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1: the tensors are small, and on a busy machine "
        "extra threads cost far more than they save)",
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = SIZES[args.size]
    args.out.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)
    t_start = time.perf_counter()
    torch.manual_seed(0)
    rng = np.random.default_rng(0)

    print(f"== 1. data: {cfg.side}x{cfg.side} binary shapes, Gaussian noise sigma = {SIGMA}")
    clean_tr = shapes(cfg.n_train, cfg.side, rng)
    clean_te = shapes(cfg.n_test, cfg.side, rng)
    u_tr, u_te = unaries(clean_tr, rng).to(device), unaries(clean_te, rng).to(device)
    c_tr, c_te = torch.tensor(clean_tr).to(device), torch.tensor(clean_te).to(device)
    print(f"train {cfg.n_train}, test {cfg.n_test} images")

    T = cfg.converged_iterations
    grid = [float(j) for j in GRID_J]
    print(f"\n== 2. baseline: tied BP, {T} iterations, J by grid search over {grid}")
    search = []
    for J in GRID_J:
        fg, x = ising(cfg.side, float(J))
        net = pu.compile(fg, algorithm="bp", iterations=T).to(device)
        m = evaluate(Denoiser(net, x, False), u_tr[: cfg.n_search], c_tr[: cfg.n_search])
        search.append((m["cross_entropy"], float(J)))
        print(f"  J = {J:.1f}: train cross-entropy {m['cross_entropy']:.4f}, "
              f"accuracy {100 * m['accuracy']:.1f}%")  # fmt: skip
    best_j = min(search)[1]
    print(f"best J = {best_j} ({time.perf_counter() - t_start:.0f} s so far)")
    fg, x = ising(cfg.side, best_j)

    models: dict[str, Denoiser] = {}
    models["pixelwise (unaries only)"] = Denoiser(
        pu.compile(fg, algorithm="bp", iterations=1).to(device), x, False
    )
    with torch.no_grad():  # drop the couplings: the marginals are the unaries' softmax
        for g in ("horizontal", "vertical"):
            models["pixelwise (unaries only)"].net.potentials[g].zero_()
    models[f"tied BP, {T} it. (converged)"] = Denoiser(
        pu.compile(fg, algorithm="bp", iterations=T).to(device), x, False
    )
    models[f"tied BP, {UNROLLED} it."] = Denoiser(
        pu.compile(fg, algorithm="bp", iterations=UNROLLED).to(device), x, False
    )
    trained_tied = Denoiser(pu.compile(fg, algorithm="bp", iterations=UNROLLED).to(device), x, True)
    untied = Denoiser(
        pu.compile(fg, algorithm="bp", iterations=UNROLLED, untie=True).to(device), x, True
    )

    print(f"\n== 3. discriminative training of {UNROLLED}-iteration BP ({cfg.epochs} epochs)")
    histories: dict[str, list[dict[str, float]]] = {}
    for label, model in ((f"tied BP, {UNROLLED} it., trained", trained_tied),
                         (f"untied BP, {UNROLLED} it., trained", untied)):  # fmt: skip
        gen = torch.Generator().manual_seed(0)
        loader = DataLoader(TensorDataset(u_tr, c_tr), batch_size=20, shuffle=True, generator=gen)
        t0 = time.perf_counter()
        histories[label] = fit(model, loss_fn, loader, epochs=cfg.epochs, lr=0.05, progress=False)
        print(f"  {label}: {n_trainable(model)} parameters, train cross-entropy "
              f"{histories[label][0]['train_loss']:.4f} -> {histories[label][-1]['train_loss']:.4f}"
              f" ({time.perf_counter() - t0:.1f} s)")  # fmt: skip
        models[label] = model

    print("\n== 4. results on the test images")
    head = (f"{'network':<32}{'params':>7}{'accuracy %':>12}{'marg. error':>13}"
            f"{'x-entropy':>11}{'ms/image':>10}{'conv. %':>9}")  # fmt: skip
    print(head)
    print("-" * len(head))
    table: list[dict[str, Any]] = []
    speed = ms_per_image(models, u_te)
    for label, model in models.items():
        m = {**evaluate(model, u_te, c_te), "ms_per_image": speed[label]}
        params = n_trainable(model) if "trained" in label else 0
        print(f"{label:<32}{params:>7}{100 * m['accuracy']:>12.2f}{m['marginal_error']:>13.4f}"
              f"{m['cross_entropy']:>11.4f}{m['ms_per_image']:>10.3f}"
              f"{100 * m['converged']:>9.0f}")  # fmt: skip
        table.append({"network": label, "trained_parameters": params, **m})
    print(
        "(params: trained parameters; marg. error: mean |P(x=1) - clean|; x-entropy: nats per "
        "pixel; ms/image: forward on the whole test batch / images, median of 5 interleaved "
        "rounds; conv.: images whose last iteration changed no message by more than 1e-4)"
    )

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    show = [f"tied BP, {T} it. (converged)", f"untied BP, {UNROLLED} it., trained"]
    k = min(4, cfg.n_test)
    fig, axes = plt.subplots(k, 4, figsize=(7.2, 1.9 * k), squeeze=False)
    with torch.no_grad():
        probs = {s: models[s](u_te[:k]).log_marginals[..., 1].exp().cpu() for s in show}
    noisy = (u_te[:k, ..., 1] - u_te[:k, ..., 0]).cpu()
    titles = ["clean", "noisy (log-odds)", "tied BP, converged", f"untied BP, {UNROLLED} it."]
    for r in range(k):
        panels = [c_te[r].cpu(), noisy[r], *(probs[s][r].reshape(cfg.side, cfg.side) for s in show)]
        for c, (img, title) in enumerate(zip(panels, titles, strict=True)):
            ax = axes[r, c]
            ax.imshow(
                img.numpy(), cmap="gray", vmin=0 if c != 1 else None, vmax=1 if c != 1 else None
            )
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out / "examples.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5.6, 3.6))
    its = range(1, UNROLLED + 1)
    for g, js in couplings(untied).items():
        ax.plot(its, js, marker="o", label=f"untied, {g}")
    ax.axhline(best_j, color="k", ls="--", lw=1, label=f"baseline J = {best_j}")
    ax.set_xlabel("iteration")
    ax.set_ylabel("effective coupling")
    ax.set_xticks(list(its))
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out / "couplings.png", dpi=110)
    plt.close(fig)
    (args.out / "results.json").write_text(json.dumps({
        "size": args.size, "best_J": best_j, "grid_search": search, "table": table,
        "learned_couplings": couplings(untied),
        "histories": {k: [h["train_loss"] for h in v] for k, v in histories.items()},
    }, indent=1))  # fmt: skip
    print(f"\nfigures and results.json in {args.out} ({time.perf_counter() - t_start:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
