"""Sparse beta-divergence NMF and its unfolding into a deep non-negative network ("deep NMF").

A non-negative spectrogram ``M`` (frequencies x frames) is explained as ``M ~ W H`` with
non-negative bases ``W`` (one column per spectral pattern) and non-negative activations ``H``.
With the bases fixed, inference of ``H`` is the iterative multiplicative update
:func:`mu_update`; running it a fixed number of times is a feed-forward computation whose
"weights" are the bases.  :class:`UnfoldedNMF` is that computation as an ``nn.Module``:
``layers`` applications of the update with shared bases (plain supervised NMF, nothing learned),
and :meth:`UnfoldedNMF.untie` gives the last layers their own bases so the stack can be trained
discriminatively (Le Roux, Hershey & Weninger, "Deep NMF for speech separation", ICASSP 2015).

Conventions used throughout:

- Bases are column-normalised to unit Euclidean norm wherever they are used (sparse NMF puts
  the L1 penalty on ``H``; without normalised bases the penalty could be dodged by scaling).
- ``W H`` is floored at ``eps`` before powers are taken, and so are the update's denominators.
- Objective minimised by :func:`mu_update`: ``D_beta(M | max(W H, eps)) + mu * sum(H)``.

See ``docs/nmf.md`` for the probabilistic model behind the update and what untying changes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple, overload

import torch
from torch import Tensor, nn

__all__ = [
    "MultiplicativeUpdate",
    "NMFResult",
    "UnfoldedNMF",
    "beta_divergence",
    "fit_nmf",
    "mm_exponent",
    "mu_update",
    "normalize_columns",
    "si_sdr",
    "signal_approximation_loss",
]


def _check_beta(beta: float) -> float:
    beta = float(beta)
    if not math.isfinite(beta):
        raise ValueError(f"beta must be finite, got {beta}")
    return beta


def mm_exponent(beta: float) -> float:
    """Exponent that makes the multiplicative update a majorise-minimise step.

    ``1 / (2 - beta)`` for ``beta < 1``, ``1`` for ``1 <= beta <= 2`` and ``1 / (beta - 1)`` for
    ``beta > 2`` (Fevotte & Idier, 2011). With it every update of :func:`mu_update` provably does
    not increase the objective, for every ``beta``; in the usual range ``[1, 2]`` (KL to
    Euclidean) it is 1, i.e. the plain update.

    Shape:
        Scalar in, scalar out.
    """
    beta = _check_beta(beta)
    if beta < 1.0:
        return 1.0 / (2.0 - beta)
    if beta > 2.0:
        return 1.0 / (beta - 1.0)
    return 1.0


def beta_divergence(
    X: Tensor,
    Y: Tensor,
    beta: float = 1.0,
    *,
    eps: float = 1e-8,
    reduction: str = "sum",
) -> Tensor:
    """Beta-divergence ``D_beta(X | Y)``, elementwise then reduced.

    ``beta = 2``: half squared Euclidean distance; ``beta = 1``: generalised Kullback-Leibler
    ``X log(X / Y) - X + Y`` (``0 log 0 = 0``); ``beta = 0``: Itakura-Saito
    ``X / Y - log(X / Y) - 1``; otherwise
    ``(X^b + (b - 1) Y^b - b X Y^(b - 1)) / (b (b - 1))``.  ``Y`` is floored at ``eps`` (as in the
    updates); for ``beta <= 0`` ``X`` is floored at ``eps`` too, since the divergence is not
    defined at ``X = 0`` there.

    Args:
        X: non-negative data.
        Y: non-negative model, broadcastable with ``X``.
        beta: divergence parameter.
        eps: floor.
        reduction: ``"sum"``, ``"mean"`` or ``"none"``.

    Shape:
        - X, Y: any broadcastable shapes ``(*)``.
        - Output: scalar for ``"sum"``/``"mean"``, the broadcast shape for ``"none"``.
    """
    beta = _check_beta(beta)
    Y = Y.clamp_min(eps)
    if beta <= 0.0:
        X = X.clamp_min(eps)
    if beta == 2.0:
        d = 0.5 * (X - Y) ** 2
    elif beta == 1.0:
        d = torch.xlogy(X, X) - torch.xlogy(X, Y) - X + Y
    elif beta == 0.0:
        r = X / Y
        d = r - torch.log(r) - 1.0
    else:
        d = (X**beta + (beta - 1.0) * Y**beta - beta * X * Y ** (beta - 1.0)) / (
            beta * (beta - 1.0)
        )
    if reduction == "sum":
        return d.sum()
    if reduction == "mean":
        return d.mean()
    if reduction == "none":
        return d
    raise ValueError(f"reduction must be 'sum', 'mean' or 'none', got {reduction!r}")


def _t(W: Tensor) -> Tensor:
    return W.transpose(-2, -1)


def mu_update(
    M: Tensor,
    W: Tensor,
    H: Tensor,
    beta: float = 1.0,
    mu: float | Tensor = 0.0,
    *,
    eps: float = 1e-8,
    exponent: float | None = None,
) -> Tensor:
    """One sparse multiplicative update of the activations.

    ``H <- H * (W^T (M * L^(beta-2)) / max(W^T L^(beta-1) + mu, eps)) ** exponent`` with
    ``L = max(W H, eps)``.  It does not increase ``D_beta(M | L) + mu * sum(H)``; keeps ``H``
    non-negative; and is differentiable in ``M``, ``W``, ``H`` and ``mu``.  ``W`` is used as
    given (normalise it with :func:`normalize_columns` for sparse NMF).

    Args:
        M: non-negative data.
        W: non-negative bases.
        H: non-negative activations (the current estimate).
        beta: beta-divergence parameter (0: Itakura-Saito, 1: KL, 2: Euclidean).
        mu: L1 sparsity weight on ``H`` (float or tensor broadcastable to ``(R, 1)``).
        eps: floor for ``W H`` and for the denominator.
        exponent: power applied to the ratio; ``None`` uses :func:`mm_exponent` ``(beta)``,
            which is 1 for ``1 <= beta <= 2``.

    Shape:
        - M: ``(F, T)`` or ``(B, F, T)``.
        - W: ``(F, R)`` (or ``(B, F, R)``).
        - H: ``(R, T)`` or ``(B, R, T)``.
        - Output: like ``H`` broadcast with the batch of ``M``, i.e. ``(R, T)`` or ``(B, R, T)``.
    """
    beta = _check_beta(beta)
    gamma = mm_exponent(beta) if exponent is None else float(exponent)
    L = (W @ H).clamp_min(eps)
    Wt = _t(W)
    if beta == 1.0:
        num = Wt @ (M / L)
        den = W.sum(dim=-2).unsqueeze(-1) + mu  # W^T 1
    elif beta == 2.0:
        num = Wt @ M
        den = Wt @ L + mu
    else:
        num = Wt @ (M * L ** (beta - 2.0))
        den = Wt @ L ** (beta - 1.0) + mu
    ratio = num / torch.as_tensor(den).clamp_min(eps)
    if gamma != 1.0:
        ratio = ratio**gamma
    return H * ratio


def normalize_columns(W: Tensor, eps: float = 1e-12) -> Tensor:
    """Scale each column (basis vector) of ``W`` to unit Euclidean norm.

    Columns with norm below ``eps`` are divided by ``eps`` instead (left almost unchanged).

    Shape:
        - W: ``(..., F, R)``.
        - Output: ``(..., F, R)``.
    """
    return W / W.norm(dim=-2, keepdim=True).clamp_min(eps)


class NMFResult(NamedTuple):
    """Result of :func:`fit_nmf`.

    Shape:
        - W: ``(F, R)``, unit-norm columns.
        - H: ``(R, T)`` (``T`` counts all frames of a batched input).
        - objective: list of length ``iterations + 1`` (before the first and after each
          iteration), ``D_beta(V | W H) + mu * sum(H)`` divided by the number of entries of ``V``.
    """

    W: Tensor
    H: Tensor
    objective: list[float]


def _sparse_w_update(V: Tensor, W: Tensor, H: Tensor, beta: float, eps: float) -> Tensor:
    """Multiplicative update of un-normalised bases for the normalised-basis objective.

    The objective depends on ``W`` only through ``Wn = W / ||W||``; the gradient is the
    Euclidean gradient ``G = P - N`` (``P = L^(beta-1) H^T``, ``N = (V L^(beta-2)) H^T``)
    projected orthogonally to each column of ``Wn``.  Split into its positive and negative parts
    it gives the update ``W * (N + Wn sum(Wn * P)) / (P + Wn sum(Wn * N))``.
    """
    Wn = normalize_columns(W)
    L = (Wn @ H).clamp_min(eps)
    Ht = _t(H)
    if beta == 1.0:
        N = (V / L) @ Ht
        P = H.sum(dim=-1).unsqueeze(0).expand_as(N)
    elif beta == 2.0:
        N = V @ Ht
        P = L @ Ht
    else:
        N = (V * L ** (beta - 2.0)) @ Ht
        P = L ** (beta - 1.0) @ Ht
    num = N + Wn * (Wn * P).sum(dim=0, keepdim=True)
    den = P + Wn * (Wn * N).sum(dim=0, keepdim=True)
    ratio = num / den.clamp_min(eps)
    gamma = mm_exponent(beta)
    if gamma != 1.0:
        ratio = ratio**gamma
    return W * ratio


@torch.no_grad()
def fit_nmf(
    V: Tensor,
    rank: int,
    beta: float = 1.0,
    iterations: int = 100,
    mu: float = 0.0,
    seed: int = 0,
    *,
    eps: float = 1e-8,
    W_init: Tensor | None = None,
) -> NMFResult:
    """Learn column-normalised bases for one source by sparse beta-NMF.

    Minimises ``D_beta(V | Wn H) + mu * sum(H)`` with ``Wn = W / ||W||`` (unit-norm columns):
    each iteration is one :func:`mu_update` of ``H`` followed by one multiplicative update of
    ``W`` for the normalised objective (gradient projected orthogonally to each unit column,
    split into positive and negative parts), then a column renormalisation.  ``H`` steps never
    increase the objective; the ``W`` step is the usual heuristic and is not guaranteed monotone
    when ``mu > 0`` (the recorded objective lets you check). Deterministic for a given ``seed``.

    Args:
        V: non-negative training data, e.g. magnitude spectrogram frames of one source.
            A batch ``(B, F, T)`` is treated as ``B * T`` frames.
        rank: number of bases ``R``.
        beta: beta-divergence parameter.
        iterations: number of (H, W) update pairs.
        mu: L1 sparsity weight on ``H``.
        seed: seed of the random initialisation (uniform in ``[0.5, 1.5)``).
        eps: floor for ``W H`` and denominators.
        W_init: optional initial bases ``(F, R)`` instead of the random ones.

    Shape:
        - V: ``(F, T)`` or ``(B, F, T)``.
        - Output: :class:`NMFResult` with ``W (F, R)`` and ``H (R, T_total)``.
    """
    if V.dim() == 3:
        V = V.permute(1, 0, 2).reshape(V.shape[1], -1)
    if V.dim() != 2:
        raise ValueError(f"V must be (F, T) or (B, F, T), got shape {tuple(V.shape)}")
    if rank < 1:
        raise ValueError("rank must be positive")
    if bool((V < 0).any()):
        raise ValueError("V must be non-negative")
    F, T = V.shape
    gen = torch.Generator().manual_seed(int(seed))
    if W_init is None:
        W = torch.rand(F, rank, generator=gen, dtype=V.dtype).to(V.device) + 0.5
    else:
        W = W_init.detach().to(V).clamp_min(eps).clone()
    W = normalize_columns(W)
    scale = float(V.mean().clamp_min(eps))
    H = (torch.rand(rank, T, generator=gen, dtype=V.dtype).to(V.device) + 0.5) * scale

    def objective(W_: Tensor, H_: Tensor) -> float:
        value = beta_divergence(V, W_ @ H_, beta, eps=eps) + mu * H_.sum()
        return float(value) / V.numel()

    history = [objective(W, H)]
    for _ in range(iterations):
        H = mu_update(V, W, H, beta, mu, eps=eps)
        W = normalize_columns(_sparse_w_update(V, W, H, beta, eps))
        history.append(objective(W, H))
    return NMFResult(W, H, history)


def _inverse_positive(x: Tensor, kind: str) -> Tensor:
    if kind == "exp":
        return torch.log(x)
    # softplus^{-1}(x) = x + log(1 - exp(-x)), stable for large and small x
    return x + torch.log(-torch.expm1(-x))


class UnfoldedNMF(nn.Module):
    """``layers`` sparse NMF multiplicative updates unfolded into a non-negative network.

    Forward pass for a batch of mixtures ``M`` (magnitude spectrograms):

    1. Scale normalisation: ``Mn = M / mean(M)`` per mixture (mean over ``F`` and ``T``).  The
       sparsity weight ``mu`` is therefore measured relative to the mixture's own level, and the
       masks do not change when a mixture is multiplied by a constant (for every ``mu``).
    2. ``H_0 = F / sum(W_1)`` in every entry (then ``W_1 H_0`` has the mean of ``Mn``, 1).
    3. ``H_k = mu_update(Mn, W_k, H_{k-1}, beta, mu)`` for ``k = 1..layers``.
    4. Source reconstructions ``S_s = W_rec[:, s] H_K[s]`` (the rows of source ``s``) and
       Wiener-like masks ``(S_s + eps / S) / (sum_s S_s + eps)``: non-negative, summing to 1.

    Weights: every basis is stored as an unconstrained parameter ``theta`` with
    ``W = exp(theta)`` (``parameterization="exp"``, default) or ``W = softplus(theta)``, and
    column-normalised in the forward pass, so bases stay non-negative under any torch optimiser
    and cannot drift in scale (only the direction of each column matters).  A freshly built
    module is fully *tied*: all layers and the reconstruction use ``weight``; this is plain
    supervised NMF.  :meth:`untie` returns a module where the last ``C`` layers use their own
    ``untied_weight[c]`` and the reconstruction its own ``reconstruction_weight``.

    Args:
        bases: one non-negative basis matrix per source, ``(F, R_s)`` each (e.g. from
            :func:`fit_nmf`). Columns are normalised; entries are floored at ``floor``.
        layers: number of unfolded updates ``K``.
        beta: beta-divergence of the update.
        mu: L1 sparsity weight (relative to the normalised mixture level).
        untied: ``None`` for a fully tied network; an int ``C`` in ``[0, layers]`` builds the
            untied structure directly (``C`` untied layers plus a reconstruction basis, all
            copies of ``bases``), e.g. to load a state dict saved from ``net.untie(C)``.
        eps: floor for ``W H``, denominators and masks.
        floor: floor applied to the normalised initial bases before taking the inverse
            parameterisation (``log`` of 0 is not finite).
        parameterization: ``"exp"`` or ``"softplus"``.

    Shape:
        - Input ``M``: ``(B, F, T)`` or ``(F, T)``, non-negative.
        - Output: masks ``(B, S, F, T)`` (or ``(S, F, T)``), non-negative, summing to 1 over S.
    """

    initial_bases: Tensor
    weight: nn.Parameter
    untied_weight: nn.Parameter | None
    reconstruction_weight: nn.Parameter | None

    def __init__(
        self,
        bases: Sequence[Tensor],
        layers: int = 25,
        beta: float = 1.0,
        mu: float = 0.05,
        *,
        untied: int | None = None,
        eps: float = 1e-8,
        floor: float = 1e-8,
        parameterization: str = "exp",
    ) -> None:
        super().__init__()
        if len(bases) < 1:
            raise ValueError("need at least one basis matrix")
        if layers < 1:
            raise ValueError("layers must be >= 1")
        if parameterization not in ("exp", "softplus"):
            raise ValueError("parameterization must be 'exp' or 'softplus'")
        mats = [torch.as_tensor(b).detach() for b in bases]
        F = mats[0].shape[0]
        for b in mats:
            if b.dim() != 2 or b.shape[0] != F:
                raise ValueError("every basis must be (F, R_s) with the same F")
            if bool((b < 0).any()):
                raise ValueError("bases must be non-negative")
        dtype = mats[0].dtype if mats[0].is_floating_point() else torch.get_default_dtype()
        W0 = torch.cat([b.to(dtype) for b in mats], dim=1)
        self.ranks: tuple[int, ...] = tuple(int(b.shape[1]) for b in mats)
        self.num_features = int(F)
        self.layers = int(layers)
        self.beta = _check_beta(beta)
        self.mu = float(mu)
        self.eps = float(eps)
        self.floor = float(floor)
        self.parameterization = parameterization
        if untied is not None and not 0 <= untied <= layers:
            raise ValueError(f"untied must be in [0, {layers}], got {untied}")
        self.untied = untied
        self.register_buffer("initial_bases", normalize_columns(W0).clamp_min(self.floor))
        self.weight = nn.Parameter(torch.empty_like(W0))
        if untied is None:
            self.register_parameter("untied_weight", None)
            self.register_parameter("reconstruction_weight", None)
        else:
            self.untied_weight = nn.Parameter(W0.new_empty((untied, *W0.shape)))
            self.reconstruction_weight = nn.Parameter(torch.empty_like(W0))
        self.reset_parameters()

    # ------------------------------------------------------------------ parameters
    def reset_parameters(self) -> None:
        """Set every basis (tied, untied, reconstruction) back to ``initial_bases``."""
        theta = _inverse_positive(self.initial_bases, self.parameterization)
        with torch.no_grad():
            self.weight.copy_(theta)
            if self.untied_weight is not None:
                self.untied_weight.copy_(theta.expand_as(self.untied_weight))
            if self.reconstruction_weight is not None:
                self.reconstruction_weight.copy_(theta)

    def _positive(self, theta: Tensor) -> Tensor:
        if self.parameterization == "exp":
            return torch.exp(theta)
        return nn.functional.softplus(theta)

    @property
    def num_sources(self) -> int:
        """Number of sources ``S``."""
        return len(self.ranks)

    @property
    def rank(self) -> int:
        """Total number of bases ``R = sum(ranks)``."""
        return sum(self.ranks)

    @property
    def num_untied(self) -> int:
        """Number of untied layers ``C`` (0 for a tied network)."""
        return 0 if self.untied is None else self.untied

    def layer_bases(self) -> list[Tensor]:
        """Normalised non-negative bases used by each of the ``K`` layers.

        Shape:
            - Output: list of ``K`` tensors ``(F, R)``; tied layers share one tensor.
        """
        tied = normalize_columns(self._positive(self.weight))
        C = self.num_untied
        out = [tied] * (self.layers - C)
        if C > 0:
            assert self.untied_weight is not None
            own = normalize_columns(self._positive(self.untied_weight))
            out.extend(own.unbind(0))
        return out

    def reconstruction_bases(self) -> Tensor:
        """Normalised bases that turn the final activations into source reconstructions.

        Shape:
            - Output: ``(F, R)``.
        """
        theta = self.weight if self.reconstruction_weight is None else self.reconstruction_weight
        return normalize_columns(self._positive(theta))

    # ------------------------------------------------------------------ forward
    def _prepare(self, M: Tensor) -> tuple[Tensor, Tensor, bool]:
        unbatched = M.dim() == 2
        if unbatched:
            M = M.unsqueeze(0)
        if M.dim() != 3 or M.shape[1] != self.num_features:
            raise ValueError(
                f"M must be (B, {self.num_features}, T) or ({self.num_features}, T), "
                f"got {tuple(M.shape)}"
            )
        scale = M.mean(dim=(-2, -1), keepdim=True).clamp_min(self.eps)
        return M / scale, scale, unbatched

    def activations(self, M: Tensor) -> Tensor:
        """Final activations ``H_K`` for the scale-normalised mixtures.

        Shape:
            - M: ``(B, F, T)`` or ``(F, T)``.
            - Output: ``(B, R, T)`` or ``(R, T)``.
        """
        Mn, _, unbatched = self._prepare(M)
        H = self._run(Mn)
        return H.squeeze(0) if unbatched else H

    def _run(self, Mn: Tensor) -> Tensor:
        Ws = self.layer_bases()
        B, F, T = Mn.shape
        # Frames are independent given the bases: fold the batch into the frame axis so that
        # every layer is two large matrix products instead of B small ones.
        X = Mn.transpose(0, 1).reshape(F, B * T)
        h0 = F / Ws[0].sum()
        H = h0.expand(self.rank, B * T)
        for W in Ws:
            H = mu_update(X, W, H, self.beta, self.mu, eps=self.eps)
        return H.reshape(self.rank, B, T).transpose(0, 1)

    def _sources(self, Mn: Tensor) -> Tensor:
        H = self._run(Mn)
        W = self.reconstruction_bases()
        parts = [
            W[:, a:b] @ H[:, a:b]
            for a, b in zip(self._offsets()[:-1], self._offsets()[1:], strict=True)
        ]
        return torch.stack(parts, dim=1)  # (B, S, F, T)

    def _offsets(self) -> list[int]:
        offsets = [0]
        for r in self.ranks:
            offsets.append(offsets[-1] + r)
        return offsets

    def reconstruct(self, M: Tensor) -> Tensor:
        """Per-source NMF reconstructions ``W_rec,s H_K,s`` in the scale of the input.

        Shape:
            - M: ``(B, F, T)`` or ``(F, T)``.
            - Output: ``(B, S, F, T)`` or ``(S, F, T)``.
        """
        Mn, scale, unbatched = self._prepare(M)
        out = self._sources(Mn) * scale.unsqueeze(1)
        return out.squeeze(0) if unbatched else out

    def forward(self, M: Tensor) -> Tensor:
        """Wiener-like masks, one per source.

        Shape:
            - M: ``(B, F, T)`` or ``(F, T)``, non-negative.
            - Output: ``(B, S, F, T)`` or ``(S, F, T)``; non-negative, summing to 1 over ``S``.
        """
        Mn, _, unbatched = self._prepare(M)
        S = self._sources(Mn)
        masks = (S + self.eps / self.num_sources) / (S.sum(dim=1, keepdim=True) + self.eps)
        return masks.squeeze(0) if unbatched else masks

    def enhance(self, M: Tensor, source: int = 0) -> Tensor:
        """Apply the mask of ``source`` (default 0, e.g. speech) to the mixture.

        Shape:
            - M: ``(B, F, T)`` or ``(F, T)``.
            - Output: same shape as ``M``.
        """
        masks = self(M)
        return masks.select(-3, source) * M

    # ------------------------------------------------------------------ untying
    def untie(self, last: int) -> UnfoldedNMF:
        """New module whose last ``last`` layers (and the reconstruction) have their own bases.

        Every new basis is a copy of the basis the corresponding layer uses now, so the new
        module computes exactly the same outputs at initialisation; it has
        ``(last - num_untied) * F * R`` more parameters (plus ``F * R`` for the reconstruction
        basis when untying a tied module). Already-untied layers keep their bases. The new
        module's ``initial_bases`` (used by :meth:`reset_parameters`) are this module's
        current tied bases. ``self`` is not modified.

        Shape:
            - Output: a module with the same input and output shapes.
        """
        C_old = self.num_untied
        if not C_old <= last <= self.layers:
            raise ValueError(f"last must be in [{C_old}, {self.layers}], got {last}")
        device = self.weight.device
        new = UnfoldedNMF(
            [self.initial_bases.new_ones(self.num_features, r) for r in self.ranks],
            layers=self.layers,
            beta=self.beta,
            mu=self.mu,
            untied=last,
            eps=self.eps,
            floor=self.floor,
            parameterization=self.parameterization,
        ).to(device=device, dtype=self.weight.dtype)
        with torch.no_grad():
            theta = self.weight.detach()
            new.initial_bases.copy_(normalize_columns(self._positive(theta)))
            new.weight.copy_(theta)
            assert new.untied_weight is not None and new.reconstruction_weight is not None
            n_new = last - C_old
            new.untied_weight[:n_new].copy_(theta.expand(n_new, *theta.shape))
            if C_old > 0:
                assert self.untied_weight is not None
                new.untied_weight[n_new:].copy_(self.untied_weight.detach())
            rec = self.weight if self.reconstruction_weight is None else self.reconstruction_weight
            new.reconstruction_weight.copy_(rec.detach())
        new.train(self.training)
        return new

    def extra_repr(self) -> str:
        n_params = sum(p.numel() for p in self.parameters())
        return (
            f"features={self.num_features}, ranks={self.ranks}, layers={self.layers}, "
            f"untied={self.num_untied}, beta={self.beta}, mu={self.mu}, "
            f"parameterization={self.parameterization!r}, parameters={n_params}"
        )


def signal_approximation_loss(
    mask: Tensor, mixture: Tensor, target: Tensor, reduction: str = "mean"
) -> Tensor:
    """Signal-approximation loss ``(mask * |mixture| - |target|)^2`` on magnitudes.

    Args:
        mask: estimated mask for the target source.
        mixture: mixture magnitudes.
        target: target source magnitudes.
        reduction: ``"mean"`` (over all entries), ``"sum"`` or ``"none"``.

    Shape:
        - mask, mixture, target: broadcastable, e.g. ``(B, F, T)``.
        - Output: scalar, or the broadcast shape for ``"none"``.
    """
    err = (mask * mixture - target) ** 2
    if reduction == "mean":
        return err.mean()
    if reduction == "sum":
        return err.sum()
    if reduction == "none":
        return err
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def si_sdr(estimate: Tensor, target: Tensor, zero_mean: bool = True, eps: float = 0.0) -> Tensor:
    """Scale-invariant signal-to-distortion ratio in dB, along the last dimension.

    ``alpha = <estimate, target> / ||target||^2``;
    ``SI-SDR = 10 log10(||alpha target||^2 / ||estimate - alpha target||^2)``.
    With ``zero_mean`` both signals first have their mean removed. ``eps`` is added to the
    numerators and denominators of the ratios (0: exact formula, infinite for a perfect
    estimate).

    Shape:
        - estimate, target: ``(..., N)``, broadcastable.
        - Output: ``(...)``.
    """
    if zero_mean:
        estimate = estimate - estimate.mean(dim=-1, keepdim=True)
        target = target - target.mean(dim=-1, keepdim=True)
    alpha = ((estimate * target).sum(-1, keepdim=True) + eps) / (
        (target * target).sum(-1, keepdim=True) + eps
    )
    projection = alpha * target
    noise = estimate - projection
    ratio = ((projection * projection).sum(-1) + eps) / ((noise * noise).sum(-1) + eps)
    return 10.0 * torch.log10(ratio)


class MultiplicativeUpdate(torch.optim.Optimizer):
    """Multiplicative, sign-split gradient update for non-negative parameters.

    The deep NMF paper trains each non-negative basis ``W`` with
    ``W <- W * [dE/dW]_- / [dE/dW]_+``, where ``dE/dW = [dE/dW]_+ - [dE/dW]_-`` splits the
    gradient into two non-negative parts.  The paper obtains the two parts by propagating them
    separately through the layers; autograd only returns the net gradient ``g``, and a split of
    ``g`` is unique only up to a common non-negative term.  This optimiser uses the minimal
    split plus a common term ``delta = mean(|g|) / lr`` (per parameter tensor)::

        W <- W * (relu(-g) + delta) / (relu(g) + delta)

    It keeps ``W`` non-negative (entries never change sign and zeros stay zero), has the same
    fixed points as gradient descent on positive entries, and for small ``lr`` it is the
    diagonally rescaled gradient step ``W <- W - lr * W * g / mean(|g|)``; a single step
    changes no entry by more than the factor ``1 + 1 / lr`` (or its inverse).

    Parameters are either the non-negative values themselves (``log_domain=False``) or, for
    modules that parameterise ``W = exp(theta)`` such as :class:`UnfoldedNMF` with its default
    parameterisation, ``theta`` (``log_domain=True``, default): ``dE/dW`` is then recovered as
    ``dE/dtheta / W`` and the update is applied as ``theta += log(ratio)``.

    Args:
        params: iterable of parameters or parameter groups.
        lr: step size (> 0); larger means bolder steps.
        log_domain: whether the parameters are ``log W`` (True) or ``W`` (False).

    Shape:
        Parameters of any shape; the update is elementwise.
    """

    def __init__(self, params: Iterable[Any], lr: float = 0.1, *, log_domain: bool = True) -> None:
        if not lr > 0:
            raise ValueError(f"lr must be positive, got {lr}")
        super().__init__(params, {"lr": float(lr), "log_domain": bool(log_domain)})

    @overload
    def step(self, closure: None = None) -> None: ...

    @overload
    def step(self, closure: Callable[[], float]) -> float: ...

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """Apply one update to every parameter that has a gradient.

        Shape:
            Parameters of any shape; the update is elementwise.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr: float = group["lr"]
            log_domain: bool = group["log_domain"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if log_domain:
                    W = torch.exp(p)
                    g = g / W.clamp_min(torch.finfo(p.dtype).tiny)
                delta = g.abs().mean() / lr
                if not bool(delta > 0):
                    continue  # zero gradient: nothing to do
                ratio = (torch.relu(-g) + delta) / (torch.relu(g) + delta)
                if log_domain:
                    p.add_(torch.log(ratio))
                else:
                    p.mul_(ratio)
        return loss
