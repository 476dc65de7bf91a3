"""Reusable buffers for the iterations of one forward pass run without autograd.

On CPU a fresh large tensor costs page faults on every allocation (the C allocator maps and
unmaps big blocks), which measured here doubles the time of a memory-bound BP iteration. A
forward run under ``torch.no_grad()`` therefore writes its large intermediates into buffers
allocated once per forward and reused by every iteration. Under autograd a
:class:`Workspace` is disabled: every op allocates its result, as the backward pass needs
them (the same code runs in both modes, buffers passed as ``out=`` arguments or ``None``).
"""

from __future__ import annotations

import math

import torch

__all__ = ["Workspace"]


class Workspace:
    """Named buffers, created on first use.

    Args:
        enabled: ``False`` (autograd recording, or tracing by ``torch.compile``): every
            request returns ``None``, so ops allocate as usual.
    """

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._bufs: dict[str, torch.Tensor] = {}
        # the view handed out last per name: a repeated request (every iteration) returns it
        # without making new tensor objects (~10 us per request, measurable on small graphs)
        self._views: dict[str, torch.Tensor] = {}

    @classmethod
    def for_forward(cls) -> Workspace:
        """Enabled exactly when no gradient is recorded and nothing is being compiled."""
        return cls(not torch.is_grad_enabled() and not torch.compiler.is_compiling())

    def __call__(
        self, name: str, shape: tuple[int, ...], like: torch.Tensor
    ) -> torch.Tensor | None:
        """The buffer ``name`` viewed as ``shape`` (dtype and device of ``like``), or ``None``.

        A request for fewer elements than the buffer holds gets a view of its first ones, so
        one buffer can serve a later, smaller use (e.g. the residual after the last
        iteration); a larger request replaces it (views handed out earlier keep the old one).
        """
        if not self.enabled:
            return None
        view = self._views.get(name)
        if (
            view is not None
            and view.shape == shape
            and view.dtype == like.dtype
            and view.device == like.device
        ):
            return view
        numel = math.prod(shape)
        buf = self._bufs.get(name)
        if (
            buf is None
            or buf.numel() < numel
            or buf.dtype != like.dtype
            or buf.device != like.device
        ):
            buf = like.new_empty(numel)
            self._bufs[name] = buf
        view = buf[:numel].view(shape)
        self._views[name] = view
        return view
