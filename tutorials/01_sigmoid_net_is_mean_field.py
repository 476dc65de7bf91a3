"""Tutorial 01: a sigmoid network is unfolded mean-field, and BP gives a different network.

Hershey, Le Roux & Weninger (2014) observe that a sigmoid MLP is mean-field inference in a
layered binary Markov random field, unfolded with a bottom-up sweep. This script

1. builds the MRF from an ``nn.Sequential`` (``LayeredBinaryMRF.from_sequential``), unfolds it
   (``model.unfold("mf", sweeps=1)``) and prints its difference from the MLP (zero: the same
   matrix products); checks the fast path against the general engine (``pu.compile`` on
   ``model.to_factor_graph(x)``) and, on a tree-shaped model, BP against exact enumeration;
2. generates a small classification task on this machine (noisy, shifted 8x8 glyphs of 10
   classes; nothing is downloaded);
3. trains, from the same initial parameters and with the same loss (cross-entropy of the output
   units' marginals against the one-hot class), the MLP (= MF, 1 sweep), MF with 3 sweeps (tied:
   a recurrent network with the MLP's parameters; untied: 3x the parameters), BP with 1 and 3
   iterations, and a wider MLP with about as many parameters as the untied MF network;
4. prints test accuracy against parameter count and saves ``accuracy_vs_parameters.png`` and
   ``training_curves.png``, plus ``results.json``.

Run ``python tutorials/01_sigmoid_net_is_mean_field.py --size ci`` (one seed, well under a
minute on two cores) or ``--size full`` (more data, longer training, three seeds).
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import pgmunfold as pu
from pgmunfold.models import LayeredBinaryMRF, UnfoldedLayered
from pgmunfold.train import binary_log_marginals, fit, marginal_cross_entropy

NAME = "01_sigmoid_net_is_mean_field"


@dataclass(frozen=True)
class Size:
    n_train: int
    n_val: int
    n_test: int
    epochs: int
    seeds: int
    hidden: tuple[int, ...]


SIZES = {
    "ci": Size(n_train=2000, n_val=500, n_test=1000, epochs=25, seeds=1, hidden=(32,)),
    "full": Size(n_train=8000, n_val=2000, n_test=5000, epochs=40, seeds=3, hidden=(32,)),
}


# ---------------------------------------------------------------------------- 1. equality
def _maxdiff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max().detach())


def show_equalities(hidden: tuple[int, ...]) -> dict[str, float]:
    torch.manual_seed(0)
    sizes = [64, *hidden, 10]
    mods: list[nn.Module] = []
    for m, n in itertools.pairwise(sizes):
        mods += [nn.Linear(m, n), nn.Sigmoid()]
    mlp = nn.Sequential(*mods)
    model = LayeredBinaryMRF.from_sequential(mlp)
    mf = model.unfold(algorithm="mf", sweeps=1)
    x = torch.rand(256, 64)
    d_mlp = _maxdiff(mf(x), mlp(x))
    print(f"MF network (1 bottom-up sweep) vs nn.Sequential {sizes}: max |diff| = {d_mlp:.1e}")

    # the fast path against the general engine on the same model written as a factor graph
    small = LayeredBinaryMRF([6, 4, 3, 2], dtype=torch.float64)
    xb = torch.randint(0, 2, (8, 6))
    g = small.to_factor_graph(xb)  # clamps layer 0 (binary x) as evidence
    eng = pu.compile(g.graph, algorithm="mf", iterations=4, dtype=torch.float64)(**g.inputs)
    top = eng.log_marginals[:, g.layers[3].ids, 1].exp()
    fast = small.unfold("mf", sweeps=4, schedule="parallel", init=0.5)(xb)
    d_mf = _maxdiff(top, fast)
    gf = small.to_factor_graph(xb, observed="field")  # x enters as the unary field W_1 x
    eng = pu.compile(gf.graph, algorithm="bp", iterations=4, dtype=torch.float64)(**gf.inputs)
    top = eng.log_marginals[:, gf.layers[3].ids, 1].exp()
    fast = small.unfold("bp", iterations=4, schedule="parallel")(xb)
    d_bp = _maxdiff(top, fast)
    print(
        f"fast path vs pu.compile on model.to_factor_graph(x), 4 parallel steps: "
        f"MF {d_mf:.1e}, BP {d_bp:.1e}"
    )

    # one output unit: the unobserved graph is a tree, BP is exact, the MLP is not
    tree = LayeredBinaryMRF([5, 4, 1], dtype=torch.float64)
    with torch.no_grad():
        for w in tree.weights:
            w.mul_(6.0)
    x1 = torch.tensor([[1, 0, 1, 1, 0]])
    gt = tree.to_factor_graph()
    evidence = {("x0", i): int(v) for i, v in enumerate(x1[0])}
    exact = float(pu.exact_marginals(gt.graph, evidence)[("x2", 0)][1])
    bp1 = float(tree.unfold("bp", iterations=1)(x1).detach())
    mlp1 = float(tree.unfold("mf", sweeps=1)(x1).detach())
    print(
        f"tree model [5, 4, 1]: exact P(top=1) = {exact:.6f}, BP (1 iteration) = {bp1:.6f}, "
        f"MLP = {mlp1:.6f}"
    )
    return {"mf_vs_mlp": d_mlp, "mf_vs_engine": d_mf, "bp_vs_engine": d_bp,
            "tree_bp_error": abs(bp1 - exact), "tree_mlp_error": abs(mlp1 - exact)}  # fmt: skip


# ---------------------------------------------------------------------------- 2. the task
def make_glyphs(n: int, rng: np.random.Generator, protos: np.ndarray) -> tuple[torch.Tensor, ...]:
    """Noisy glyphs: a class prototype, shifted by up to one pixel, 12% of pixels flipped,
    then grey levels with Gaussian noise, clipped to [0, 1] (expectations of binary pixels)."""
    y = rng.integers(0, len(protos), size=n)
    img = protos[y].copy()
    for i in range(n):
        img[i] = np.roll(img[i], tuple(rng.integers(-1, 2, size=2)), axis=(0, 1))
    flip = rng.random(img.shape) < 0.12
    img = np.where(flip, 1 - img, img)
    x = np.clip(0.15 + 0.7 * img + 0.15 * rng.normal(size=img.shape), 0.0, 1.0)
    return torch.tensor(x.reshape(n, -1), dtype=torch.float32), torch.tensor(y)


def prototypes(rng: np.random.Generator, k: int = 10) -> np.ndarray:
    """Smooth random 8x8 binary patterns (about half the pixels on)."""
    noise = rng.normal(size=(k, 8, 8))
    smooth = noise.copy()
    for axis in (1, 2):
        smooth = smooth + np.roll(noise, 1, axis) + np.roll(noise, -1, axis)
    return (smooth > np.median(smooth, axis=(1, 2), keepdims=True)).astype(np.float64)


# ---------------------------------------------------------------------------- 3. training
def loss_fn(net: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    x, y = batch
    assert isinstance(net, UnfoldedLayered)
    onehot = nn.functional.one_hot(y, net.sizes[-1])
    return marginal_cross_entropy(binary_log_marginals(net.log_odds(x)), onehot)


def accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((net(x).argmax(-1) == y).float().mean())


def wider_hidden(hidden: tuple[int, ...], target: int) -> tuple[int, ...]:
    """Hidden widths scaled by one factor so that the MLP has about ``target`` parameters."""
    best = hidden
    for s in np.linspace(1.0, 4.0, 301):
        h = tuple(max(1, round(s * w)) for w in hidden)
        n = sum(m * k + k for m, k in zip((64, *h), (*h, 10), strict=True))
        if abs(n - target) < abs(
            sum(m * k + k for m, k in zip((64, *best), (*best, 10), strict=True)) - target
        ):
            best = h
    return best


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

    print("== 1. the MLP is unfolded mean-field")
    checks = show_equalities(cfg.hidden)

    print("\n== 2. a small classification task (noisy shifted 8x8 glyphs, 10 classes)")
    rng = np.random.default_rng(0)
    protos = prototypes(rng)
    xtr, ytr = make_glyphs(cfg.n_train, rng, protos)
    xva, yva = make_glyphs(cfg.n_val, rng, protos)
    xte, yte = make_glyphs(cfg.n_test, rng, protos)
    xtr, ytr, xva, yva, xte, yte = (t.to(device) for t in (xtr, ytr, xva, yva, xte, yte))
    print(f"train {cfg.n_train}, validation {cfg.n_val}, test {cfg.n_test} images")

    sizes = (64, *cfg.hidden, 10)
    n_base = sum(m * k + k for m, k in itertools.pairwise(sizes))
    wide = wider_hidden(cfg.hidden, 3 * n_base)
    specs = [
        ("MLP = MF, 1 sweep", "mf", 1, False, cfg.hidden),
        ("MF, 3 sweeps, tied", "mf", 3, False, cfg.hidden),
        ("MF, 3 sweeps, untied", "mf", 3, True, cfg.hidden),
        ("BP, 1 iteration", "bp", 1, False, cfg.hidden),
        ("BP, 3 iterations, tied", "bp", 3, False, cfg.hidden),
        (f"MLP, wider {wide}", "mf", 1, False, wide),
    ]
    print(f"\n== 3. training {len(specs)} networks x {cfg.seeds} seed(s), {cfg.epochs} epochs")
    results: dict[str, dict[str, list[float]]] = {s[0]: {} for s in specs}
    curves: dict[str, list[float]] = {}
    params: dict[str, int] = {}
    for seed in range(cfg.seeds):
        torch.manual_seed(seed)
        base = {h: LayeredBinaryMRF((64, *h, 10)).to(device) for h in {cfg.hidden, wide}}
        for label, alg, steps, untie, hidden in specs:
            model = copy.deepcopy(base[hidden])  # same initial parameters for every network
            net = model.unfold(alg, steps, untie=untie)
            gen = torch.Generator().manual_seed(seed)
            train = DataLoader(TensorDataset(xtr, ytr), batch_size=64, shuffle=True, generator=gen)
            val = DataLoader(TensorDataset(xva, yva), batch_size=512)
            t0 = time.perf_counter()
            hist = fit(net, loss_fn, train, val, epochs=cfg.epochs, lr=0.02, progress=False)
            secs = time.perf_counter() - t0
            r = results[label]
            r.setdefault("accuracy", []).append(accuracy(net, xte, yte))
            with torch.no_grad():
                r.setdefault("loss", []).append(float(loss_fn(net, (xte, yte))))
            r.setdefault("train_seconds", []).append(secs)
            params[label] = net.num_parameters()
            if seed == 0:
                curves[label] = [h["val_loss"] for h in hist]
        print(f"  seed {seed} done ({time.perf_counter() - t_start:.0f} s so far)")

    print("\n== 4. results (test set)")
    head = f"{'network':<32}{'parameters':>11}{'test accuracy':>18}{'test loss':>12}{'train s':>9}"
    print(head)
    print("-" * len(head))
    table = []
    for label, *_ in specs:
        r = results[label]
        acc = np.array(r["accuracy"]) * 100
        pm = f" +- {acc.std(ddof=1):.1f}" if len(acc) > 1 else ""
        print(
            f"{label:<32}{params[label]:>11}{acc.mean():>11.1f}{pm:<7}"
            f"{np.mean(r['loss']):>12.4f}{np.mean(r['train_seconds']):>9.1f}"
        )
        table.append({"network": label, "parameters": params[label],
                      "accuracy": r["accuracy"], "loss": r["loss"],
                      "train_seconds": r["train_seconds"]})  # fmt: skip
    print(f"(mean over {cfg.seeds} seed(s); accuracy in %; loss: marginal cross-entropy)")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for row in table:
        acc = np.array(row["accuracy"]) * 100
        ax.errorbar(row["parameters"], acc.mean(), yerr=acc.std() if len(acc) > 1 else None,
                    marker="o", capsize=3, label=row["network"])  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Unfolded inference on the same layered MRF")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out / "accuracy_vs_parameters.png", dpi=120)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for label, c in curves.items():
        ax.plot(range(1, len(c) + 1), c, label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation loss")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out / "training_curves.png", dpi=120)
    plt.close(fig)
    (args.out / "results.json").write_text(
        json.dumps({"size": args.size, "checks": checks, "table": table}, indent=1)
    )
    print(f"\nfigures and results.json in {args.out} ({time.perf_counter() - t_start:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
