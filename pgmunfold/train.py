"""Training utilities: losses that train inference itself, and a small ``fit`` loop.

Unfolded inference is trained *discriminatively*: the loss compares the marginals (or
max-marginals) that a fixed number of unfolded iterations produce with what they should be, and
backpropagation adjusts the (possibly untied) potentials. The losses accept a
:class:`~pgmunfold.Beliefs` or a tensor of log-marginals ``(..., K)``;
:func:`binary_log_marginals` turns the log-odds of binary units (e.g.
:meth:`pgmunfold.models.LayeredMeanField.log_odds`) into that form.

The networks are plain ``nn.Module`` s, so any training loop works; :func:`fit` is a small one
with a progress bar, validation, early stopping and a history to plot.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from pgmunfold.beliefs import Beliefs
from pgmunfold.infer.ops import NEG

__all__ = [
    "binary_log_marginals",
    "evaluate",
    "fit",
    "map_hinge_loss",
    "marginal_cross_entropy",
    "marginal_mse",
]

logger = logging.getLogger(__name__)

Reduction = Literal["mean", "sum", "none"]
LossFn = Callable[[nn.Module, Any], torch.Tensor]


def binary_log_marginals(log_odds: torch.Tensor) -> torch.Tensor:
    """Log-marginals ``[log P(x=0), log P(x=1)]`` of binary units from their log-odds.

    Computed as ``logsigmoid(-h), logsigmoid(h)``: finite and accurate for any ``h``.

    Shape:
        ``log_odds``: ``(...)``; output: ``(..., 2)``.
    """
    return torch.stack([F.logsigmoid(-log_odds), F.logsigmoid(log_odds)], dim=-1)


def _log_marginals(x: Beliefs | torch.Tensor) -> torch.Tensor:
    if isinstance(x, Beliefs):
        return x.log_marginals
    if isinstance(x, torch.Tensor):
        if x.dim() == 0:
            raise ValueError("log-marginals need a state dimension: shape (..., K)")
        return x
    raise TypeError(f"expected Beliefs or a tensor of log-marginals, got {type(x).__name__}")


def _reduce(per: torch.Tensor, weight: torch.Tensor | None, reduction: Reduction) -> torch.Tensor:
    """Reduce per-variable losses, ``weight`` (0/1 or real) selecting the variables that count."""
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    if weight is not None:
        per = torch.where(weight > 0, per * weight, per.new_zeros(()))
    if reduction == "none":
        return per
    if reduction == "sum":
        return per.sum()
    denom = weight.sum() if weight is not None else per.new_tensor(float(per.numel()))
    return per.sum() / denom.clamp_min(torch.finfo(per.dtype).tiny)


def _weight(
    mask: torch.Tensor | None, valid: torch.Tensor | None, shape: torch.Size, ref: torch.Tensor
) -> torch.Tensor | None:
    if mask is not None:
        mask = torch.as_tensor(mask, device=ref.device)
        try:
            mask = torch.broadcast_to(mask, shape)
        except RuntimeError as exc:
            raise ValueError(
                f"mask of shape {tuple(mask.shape)} does not broadcast to the per-variable "
                f"losses {tuple(shape)}"
            ) from exc
    parts = [m.to(ref.dtype) for m in (mask, valid) if m is not None]
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else parts[0] * parts[1]


def _targets(
    lm: torch.Tensor, targets: torch.Tensor, ignore_index: int, what: str
) -> tuple[torch.Tensor, torch.Tensor | None, bool]:
    """(targets, validity of integer targets or None, soft?) after shape checks."""
    targets = torch.as_tensor(targets, device=lm.device)
    if targets.is_floating_point():
        if targets.shape != lm.shape:
            raise ValueError(
                f"{what}: soft targets must have the log-marginals' shape {tuple(lm.shape)}, "
                f"got {tuple(targets.shape)}"
            )
        return targets.to(lm.dtype), None, True
    if targets.shape != lm.shape[:-1]:
        raise ValueError(
            f"{what}: integer targets must have shape {tuple(lm.shape[:-1])} (the log-marginals "
            f"{tuple(lm.shape)} without the state dimension), got {tuple(targets.shape)}"
        )
    targets = targets.long()
    valid = targets != ignore_index
    K = lm.shape[-1]
    bad = valid & ((targets < 0) | (targets >= K))
    if bool(bad.any()):
        raise ValueError(f"{what}: target state {int(targets[bad][0])} out of range [0, {K})")
    return targets.clamp(0, K - 1), (valid if not bool(valid.all()) else None), False


def marginal_cross_entropy(
    beliefs_or_log_marginals: Beliefs | torch.Tensor,
    targets: torch.Tensor,
    *,
    mask: torch.Tensor | None = None,
    ignore_index: int = -100,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """Cross-entropy of predicted marginals against observed states (or target distributions).

    Integer targets: ``-log q_v(y_v)`` per variable (``ignore_index`` skips a variable). Float
    targets: ``-sum_k p_v(k) log q_v(k)``. The mean is over the variables that count (``mask``
    selects or weights them, e.g. only the hidden pixels).

    Args:
        beliefs_or_log_marginals: :class:`~pgmunfold.Beliefs` or log-marginals ``(..., K)``.
        targets: states ``(...)`` (int) or distributions ``(..., K)`` (float).
        mask: per-variable weights broadcastable to ``(...)``.
        ignore_index: integer target value to skip.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (per-variable losses).

    Shape:
        log-marginals ``(..., K)``; targets ``(...)`` or ``(..., K)``; output ``()`` or ``(...)``.
    """
    lm = _log_marginals(beliefs_or_log_marginals)
    t, valid, soft = _targets(lm, targets, ignore_index, "marginal_cross_entropy")
    if soft:
        per = -(t * lm.clamp_min(NEG)).sum(-1)
    else:
        per = -lm.gather(-1, t.unsqueeze(-1)).squeeze(-1)
    return _reduce(per, _weight(mask, valid, per.shape, per), reduction)


def marginal_mse(
    beliefs_or_log_marginals: Beliefs | torch.Tensor,
    targets: torch.Tensor,
    *,
    mask: torch.Tensor | None = None,
    ignore_index: int = -100,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """Squared error between predicted and target marginals, summed over states.

    ``sum_k (q_v(k) - p_v(k))^2`` per variable, ``p`` the target marginals (float ``(..., K)``)
    or the one-hot encoding of observed states (int ``(...)``).

    Args:
        beliefs_or_log_marginals: :class:`~pgmunfold.Beliefs` or log-marginals ``(..., K)``.
        targets: target marginals ``(..., K)`` or states ``(...)``.
        mask, ignore_index, reduction: as in :func:`marginal_cross_entropy`.

    Shape:
        log-marginals ``(..., K)``; targets ``(..., K)`` or ``(...)``; output ``()`` or ``(...)``.
    """
    lm = _log_marginals(beliefs_or_log_marginals)
    t, valid, soft = _targets(lm, targets, ignore_index, "marginal_mse")
    p = t if soft else F.one_hot(t, lm.shape[-1]).to(lm.dtype)
    per = (lm.exp() - p).square().sum(-1)
    return _reduce(per, _weight(mask, valid, per.shape, per), reduction)


def map_hinge_loss(
    beliefs_or_log_marginals: Beliefs | torch.Tensor,
    targets: torch.Tensor,
    *,
    margin: float = 1.0,
    mask: torch.Tensor | None = None,
    ignore_index: int = -100,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """Hinge loss on (log) max-marginals, for max-product networks: decode the right states.

    Per variable ``max(0, margin + max_{k != y} m(k) - m(y))``, ``m`` the log max-marginals
    (invariant to their normalisation): zero once the target state wins by ``margin``. A
    per-variable surrogate: its gradient raises the best joint state that agrees with ``y_v``
    (not necessarily the whole target) and lowers the best one that does not.

    Args:
        beliefs_or_log_marginals: :class:`~pgmunfold.Beliefs` (``semiring="max"``) or log
            max-marginals ``(..., K)``.
        targets: target states ``(...)`` (int).
        margin: required log-score margin.
        mask, ignore_index, reduction: as in :func:`marginal_cross_entropy`.

    Shape:
        log-marginals ``(..., K)``; targets ``(...)``; output ``()`` or ``(...)``.
    """
    lm = _log_marginals(beliefs_or_log_marginals)
    if torch.as_tensor(targets).is_floating_point():
        raise ValueError("map_hinge_loss: targets must be integer states")
    t, valid, _ = _targets(lm, targets, ignore_index, "map_hinge_loss")
    right = lm.gather(-1, t.unsqueeze(-1))
    others = lm.scatter(-1, t.unsqueeze(-1), NEG).amax(-1)
    per = F.relu(margin + others - right.squeeze(-1))
    return _reduce(per, _weight(mask, valid, per.shape, per), reduction)


# ---------------------------------------------------------------------------- the loop
def _to_device(batch: Any, device: torch.device | str | None) -> Any:
    if device is None:
        return batch
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, Mapping):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, tuple | list):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


def evaluate(
    model: nn.Module,
    loss_fn: LossFn,
    loader: Iterable[Any],
    *,
    device: torch.device | str | None = None,
) -> float:
    """Mean of ``loss_fn(model, batch)`` over ``loader``, in eval mode without gradients.

    Shape:
        returns a Python float.
    """
    was = model.training
    model.eval()
    total, n = 0.0, 0
    try:
        with torch.no_grad():
            for batch in loader:
                total += float(loss_fn(model, _to_device(batch, device)))
                n += 1
    finally:
        model.train(was)
    if n == 0:
        raise ValueError("evaluate: the loader yielded no batches")
    return total / n


def fit(
    model: nn.Module,
    loss_fn: LossFn,
    train_loader: Iterable[Any],
    val_loader: Iterable[Any] | None = None,
    *,
    epochs: int = 10,
    optimizer: torch.optim.Optimizer | None = None,
    lr: float = 1e-2,
    patience: int | None = None,
    restore_best: bool = True,
    grad_clip: float | None = None,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> list[dict[str, float]]:
    """Train ``model`` by minimising ``loss_fn(model, batch)`` over ``train_loader``.

    Args:
        model: any ``nn.Module`` (an unfolded network, or a module wrapping one).
        loss_fn: ``loss_fn(model, batch) -> scalar tensor``; ``batch`` is what the loader
            yields (moved to ``device`` when given), e.g.
            ``lambda m, b: marginal_cross_entropy(m(unary=b[0]), b[1])``.
        train_loader: an iterable of batches, re-iterated every epoch (e.g. a ``DataLoader``).
        val_loader: optional; its mean loss is recorded every epoch and drives early stopping.
        epochs: maximum number of passes over ``train_loader``.
        optimizer: default ``torch.optim.Adam(model.parameters(), lr=lr)``.
        lr: learning rate of the default optimizer.
        patience: stop after this many epochs without improvement of the validation loss (the
            training loss without ``val_loader``); ``None``: never stop early.
        restore_best: with ``val_loader``, load the weights of the best validation epoch at the
            end.
        grad_clip: clip the gradient norm to this value.
        device: move ``model`` and batches there.
        progress: show a tqdm progress bar (when tqdm is installed).

    Returns:
        history: one dict per epoch with ``epoch``, ``train_loss``, ``val_loss`` (when a
        ``val_loader`` is given), ``seconds`` and ``lr``; plot e.g.
        ``[h["train_loss"] for h in history]``.

    Raises:
        FloatingPointError: when a training loss is NaN or infinite.

    Shape:
        ``loss_fn`` returns a 0-dim tensor.
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be an integer >= 1, got {epochs!r}")
    if patience is not None and (
        isinstance(patience, bool) or not isinstance(patience, int) or patience < 1
    ):
        raise ValueError(f"patience must be an integer >= 1 or None, got {patience!r}")
    if device is not None:
        model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    if optimizer is None:
        if not params:
            raise ValueError("fit: the model has no trainable parameters")
        optimizer = torch.optim.Adam(params, lr=lr)
    bar: Any = None
    if progress:
        try:
            from tqdm.auto import tqdm

            bar = tqdm(total=epochs, desc="fit", unit="epoch")
        except ImportError:  # pragma: no cover - tqdm is an optional dependency
            logger.debug("tqdm is not installed: no progress bar")
    history: list[dict[str, float]] = []
    best = math.inf
    best_state: dict[str, torch.Tensor] | None = None
    stale = 0
    try:
        for epoch in range(1, epochs + 1):
            t0 = time.perf_counter()
            model.train()
            total, n = 0.0, 0
            for batch in train_loader:
                optimizer.zero_grad()
                loss = loss_fn(model, _to_device(batch, device))
                if not torch.isfinite(loss.detach()).all():
                    raise FloatingPointError(
                        f"fit: the training loss is {float(loss)} at epoch {epoch}"
                    )
                loss.backward()
                if grad_clip is not None:
                    nn.utils.clip_grad_norm_(params, grad_clip)
                optimizer.step()
                total += float(loss.detach())
                n += 1
            if n == 0:
                raise ValueError("fit: train_loader yielded no batches")
            rec: dict[str, float] = {"epoch": float(epoch), "train_loss": total / n}
            if val_loader is not None:
                rec["val_loss"] = evaluate(model, loss_fn, val_loader, device=device)
            rec["seconds"] = time.perf_counter() - t0
            rec["lr"] = float(optimizer.param_groups[0]["lr"])
            history.append(rec)
            monitor = rec.get("val_loss", rec["train_loss"])
            logger.info(
                "epoch %d/%d: train_loss=%.5g%s (%.2fs)",
                epoch,
                epochs,
                rec["train_loss"],
                f", val_loss={rec['val_loss']:.5g}" if "val_loss" in rec else "",
                rec["seconds"],
            )
            if bar is not None:
                bar.set_postfix({k: f"{v:.4g}" for k, v in rec.items() if k.endswith("loss")})
                bar.update(1)
            if monitor < best:
                best, stale = monitor, 0
                if val_loader is not None and restore_best:
                    best_state = copy.deepcopy(model.state_dict())
            else:
                stale += 1
                if patience is not None and stale >= patience:
                    logger.info(
                        "early stopping at epoch %d: no improvement for %d epochs (best %.5g)",
                        epoch,
                        patience,
                        best,
                    )
                    break
    finally:
        if bar is not None:
            bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
        logger.info("restored the weights of the best validation epoch (loss %.5g)", best)
    return history
