"""The result of running an unfolded network: marginals, factor beliefs, ``log Z``, MAP states."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, overload

import torch

from pgmunfold.graph import VariableArray

__all__ = ["Beliefs", "Deferred", "NamedView"]

T = TypeVar("T")


class Deferred(Generic[T]):
    """A value computed on first read: ``Deferred(fn)`` calls ``fn()`` once, with the autograd
    mode that was active when it was created (so a ``no_grad`` forward stays graph-free)."""

    def __init__(self, fn: Callable[[], T]) -> None:
        self._fn = fn
        self._grad = torch.is_grad_enabled()

    def evaluate(self) -> T:
        with torch.set_grad_enabled(self._grad):
            return self._fn()

    def then(self, fn: Callable[[T], T]) -> Deferred[T]:
        """A deferred ``fn(value)``."""
        return Deferred(lambda: fn(self.evaluate()))


class _DeferredField(Generic[T]):
    """Dataclass field that may hold a :class:`Deferred`, evaluated (and stored) on first read."""

    def __set_name__(self, owner: type, name: str) -> None:
        self._slot = "_deferred_" + name
        self._declared = False  # set below the Beliefs class, once the dataclass exists

    @overload
    def __get__(self, obj: None, objtype: Any = None) -> _DeferredField[T]: ...
    @overload
    def __get__(self, obj: object, objtype: Any = None) -> T: ...
    def __get__(self, obj: object | None, objtype: Any = None) -> T | _DeferredField[T]:
        if obj is None:
            if not self._declared:  # read by @dataclass: no default value (a required field)
                raise AttributeError(self._slot)
            return self  # later class access (e.g. torch.compile's guards): the descriptor
        value = obj.__dict__[self._slot]
        if isinstance(value, Deferred):
            value = value.evaluate()
            obj.__dict__[self._slot] = value
        return value

    def __set__(self, obj: object, value: T | Deferred[T]) -> None:
        obj.__dict__[self._slot] = value

    def transform(self, obj: object, fn: Callable[[T], T]) -> None:
        """Apply ``fn`` to the stored value, deferred if the value is not evaluated yet."""
        value = obj.__dict__[self._slot]
        obj.__dict__[self._slot] = value.then(fn) if isinstance(value, Deferred) else fn(value)


class NamedView(Mapping[Hashable, torch.Tensor]):
    """Read-only mapping variable name -> slice of a dense ``(..., V, ...)`` tensor.

    Lookups are computed on access, so million-variable results cost nothing until read.
    """

    def __init__(
        self,
        getter: Callable[[int], torch.Tensor],
        lookup: Callable[[Hashable], int],
        names: Callable[[int], Hashable],
        size: int,
        array_getter: Callable[[VariableArray], torch.Tensor] | None = None,
    ) -> None:
        self._get, self._lookup, self._names, self._size = getter, lookup, names, size
        self._array_get = array_getter

    def __getitem__(self, name: Hashable) -> torch.Tensor:
        if isinstance(name, VariableArray) and self._array_get is not None:
            return self._array_get(name)
        return self._get(self._lookup(name))

    def __iter__(self) -> Iterator[Hashable]:
        return (self._names(i) for i in range(self._size))

    def __len__(self) -> int:
        return self._size

    def __contains__(self, name: object) -> bool:
        try:
            self._lookup(name)
        except (KeyError, ValueError):
            return False
        return True


@dataclass
class Beliefs:
    """Output of :class:`~pgmunfold.UnfoldedNetwork`.

    Without a batched input the leading batch dimension ``B`` is absent from every tensor.

    Attributes:
        log_marginals: normalised log marginals, states beyond a variable's cardinality at a
            large negative value.
        log_partition: Bethe estimate of ``log Z`` (BP, sum-product), the mean-field lower
            bound (MF), or the score of :attr:`map_states` (max-product). Computed on first read
            (with the autograd mode of the forward pass), so inference that only needs
            marginals does not pay for it.
        map_states: arg-max state of every variable's belief (for max-product BP, the MAP
            decode).
        factor_log_beliefs: per factor group name, normalised log factor beliefs (BP only);
            computed on first read, like :attr:`log_partition`.
        residual: largest absolute change of a (normalised) message probability (BP) or of a
            marginal (MF) in the last iteration; a convergence diagnostic in ``[0, 1]``.
        marginals: mapping name -> marginal probabilities.
        map: mapping name -> state.

    Shape:
        ``log_marginals``: ``(B, V, K)``; ``log_partition``: ``(B,)``; ``map_states``:
        ``(B, V)``; ``factor_log_beliefs[g]``: ``(B, F_g, *cards_g)``; ``residual``: ``(B,)``;
        ``marginals[name]``: ``(B, k)``; ``map[name]``: ``(B,)``.
    """

    log_marginals: torch.Tensor
    map_states: torch.Tensor
    residual: torch.Tensor
    # required fields (the descriptor gives no default), typed as the values they yield
    log_partition: _DeferredField[torch.Tensor] = _DeferredField()
    factor_log_beliefs: _DeferredField[dict[str, torch.Tensor]] = _DeferredField()
    cards: torch.Tensor | None = None
    lookup: Callable[[Hashable], int] | None = None
    names: Callable[[int], Hashable] | None = None
    iterations: int = 0

    def __getstate__(self) -> dict[str, Any]:
        """Pickling evaluates the deferred fields first (their closures do not pickle)."""
        _ = self.log_partition, self.factor_log_beliefs
        return dict(self.__dict__)

    @property
    def probs(self) -> torch.Tensor:
        """Marginal probabilities, padded states 0. Shape: ``(B, V, K)``."""
        return self.log_marginals.exp()

    def _cards(self) -> list[int]:
        assert self.cards is not None
        return [int(c) for c in self.cards.tolist()]

    @property
    def marginals(self) -> NamedView:
        """Mapping name -> marginal probabilities ``(B, k)`` (or ``(k,)``); a
        :class:`~pgmunfold.VariableArray` key gives ``(B, *shape, k)``."""
        assert self.lookup is not None and self.names is not None
        cards = self._cards()
        probs = self.probs

        def array(a: VariableArray) -> torch.Tensor:
            flat = probs[..., a.start : a.start + a.size, : a.cardinality]
            return flat.reshape(*flat.shape[:-2], *a.shape, a.cardinality)

        return NamedView(
            lambda i: probs[..., i, : cards[i]], self.lookup, self.names, len(cards), array
        )

    @property
    def map(self) -> NamedView:
        """Mapping name -> arg-max state ``(B,)`` (or 0-dim); a
        :class:`~pgmunfold.VariableArray` key gives ``(B, *shape)``."""
        assert self.lookup is not None and self.names is not None
        states = self.map_states

        def array(a: VariableArray) -> torch.Tensor:
            flat = states[..., a.start : a.start + a.size]
            return flat.reshape(*flat.shape[:-1], *a.shape)

        return NamedView(lambda i: states[..., i], self.lookup, self.names, states.shape[-1], array)

    def converged(self, tol: float = 1e-6) -> torch.Tensor:
        """Bool tensor: did the last iteration change every message by at most ``tol``?"""
        return self.residual <= tol


for _field in vars(Beliefs).values():
    if isinstance(_field, _DeferredField):
        _field._declared = True
