"""The layered binary MRF: a sigmoid MLP is unfolded mean-field, and BP gives a new network.

The model has layers ``x_0, ..., x_L`` of binary variables (values in ``{0, 1}``); layer ``l`` is
coupled only to layers ``l - 1`` and ``l + 1``::

    log p(x_1, ..., x_L | x_0) = sum_{l=1..L} ( x_l^T W_l x_{l-1} + b_l^T x_l ) - log Z(x_0)

Layer 0 is observed. Its values may be real numbers in ``[0, 1]``: they enter as *fixed
expectations*, so that layer 1 receives the unary field ``W_1 x_0`` (for binary ``x_0`` this is
exactly clamping, for BP and mean-field alike).

Two unfolded inference networks share the model's parameters (``W_l``, ``b_l``):

* :class:`LayeredMeanField` -- naive mean-field, ``q_l = sigmoid(W_l q_{l-1} + b_l +
  W_{l+1}^T q_{l+1})``. With the bottom-up (``"layerwise"``) schedule and hidden marginals
  initialised at 0, one sweep is ``sigmoid(W_L ... sigmoid(W_1 x + b_1) ... + b_L)``: the MLP,
  computed by the same matrix products. More sweeps add top-down feedback.
* :class:`LayeredBP` -- loopy belief propagation with messages in the log-odds domain. The
  message along a coupling ``w`` from a variable with cavity log-odds ``c`` is
  :func:`bp_message` ``= softplus(c + w) - softplus(c) = log E_cavity[exp(w x)]``, where
  mean-field would send ``w E_q[x] = w sigmoid(c)``.

Both are ``nn.Module`` s whose ``forward(x)`` maps ``(B, n_0)`` inputs to ``(B, n_L)`` top-layer
marginals ``P(x_L = 1)``; :meth:`UnfoldedLayered.untie` gives every sweep/iteration its own copy
of the parameters. :meth:`LayeredBinaryMRF.to_factor_graph` writes the same model as a general
:class:`~pgmunfold.FactorGraph`, so the fast path can be checked against ``pu.compile``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar, Literal, NamedTuple, overload

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pgmunfold.graph import FactorGraph, VariableArray
from pgmunfold.infer.ops import softplus

__all__ = [
    "LayeredBP",
    "LayeredBinaryMRF",
    "LayeredGraph",
    "LayeredMeanField",
    "UnfoldedLayered",
    "bp_message",
]

Schedule = Literal["layerwise", "parallel"]
Observed = Literal["evidence", "field"]


def bp_message(cavity: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Sum-product BP message along a binary coupling, in the log-odds domain.

    For a factor ``exp(w x_i x_j)`` on ``x_i, x_j`` in ``{0, 1}`` and the cavity distribution
    of ``x_j`` with log-odds ``c``, the message to ``x_i`` has log-odds
    ``log(sum_xj exp(w xj + c xj)) - log(sum_xj exp(c xj)) = softplus(c + w) - softplus(c)``,
    that is ``log E[exp(w x_j)]`` under the cavity. Mean-field would send ``w sigmoid(c)``; the two
    agree to first order in ``w``.

    Shape:
        ``cavity`` and ``weight``: broadcastable; output: their broadcast shape.
    """
    return softplus(cavity + weight) - softplus(cavity)


def _layer_names(num_layers: int) -> list[str]:
    return [n for layer in range(1, num_layers + 1) for n in (f"W{layer}", f"b{layer}")]


def _check_steps(steps: Any, what: str) -> int:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"{what} must be an integer >= 1, got {steps!r}")
    return steps


class LayeredGraph(NamedTuple):
    """A :class:`LayeredBinaryMRF` written as a general factor graph.

    Attributes:
        graph: the :class:`~pgmunfold.FactorGraph`; variable arrays ``"x<l>"`` (names
            ``("x<l>", i)``), coupling groups ``"W<l>"`` (one ``2 x 2`` table per pair, the
            ``[1, 1]`` entry ``W_l[k, i]``, scope ``(x_l[k], x_{l-1}[i])``, row ``k n_{l-1} + i``)
            and, in the ``"evidence"`` form, bias groups ``"b<l>"`` (unary tables ``[0, b_l[k]]``).
        inputs: keyword arguments for the compiled network's ``forward``:
            ``net(**inputs)`` (``{"evidence": ...}``, ``{"unary": ...}`` or ``{}``).
        layers: layer index -> :class:`~pgmunfold.VariableArray` of that layer's variables.

    Shape:
        ``layers[l].ids``: ``(n_l,)``.
    """

    graph: FactorGraph
    inputs: dict[str, dict[Any, torch.Tensor]]
    layers: dict[int, VariableArray]


class _LayerCounts:
    """``num_layers`` and ``group_names`` of anything with layer ``sizes``."""

    sizes: tuple[int, ...]

    @property
    def num_layers(self) -> int:
        """``L``: the number of unobserved layers.

        Shape:
            a Python int.
        """
        return len(self.sizes) - 1

    @property
    def group_names(self) -> list[str]:
        """Parameter group names ``["W1", "b1", ..., "WL", "bL"]``.

        Shape:
            a list of ``2 L`` strings.
        """
        return _layer_names(self.num_layers)


class LayeredBinaryMRF(_LayerCounts, nn.Module):
    """A layered binary MRF ``sum_l x_l^T W_l x_{l-1} + b_l^T x_l`` with layer 0 observed.

    Args:
        sizes: layer widths ``(n_0, n_1, ..., n_L)``, ``L >= 1``; ``n_0`` is the observed
            layer.
        device, dtype: of the parameters.

    Attributes:
        weights: ``weights[l - 1]`` is ``W_l``, coupling layer ``l`` to layer ``l - 1``.
        biases: ``biases[l - 1]`` is ``b_l``.

    The parameters are initialised like ``nn.Linear`` (see :meth:`reset_parameters`); group
    names (for untying and :meth:`parameter`) are ``"W1", "b1", ..., "WL", "bL"``.

    Shape:
        ``weights[l - 1]``: ``(n_l, n_{l-1})``; ``biases[l - 1]``: ``(n_l,)``;
        ``forward(states)``: ``states[l]`` ``(B, n_l)`` -> ``(B,)`` log-potentials.
    """

    weights: nn.ParameterList
    biases: nn.ParameterList

    def __init__(
        self,
        sizes: Sequence[int],
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        sz = tuple(sizes)
        if len(sz) < 2 or not all(
            isinstance(n, int | np.integer) and not isinstance(n, bool) and n >= 1 for n in sz
        ):
            raise ValueError(
                f"sizes must be at least two positive integers (n_0, n_1, ...), got {sizes!r}"
            )
        self.sizes: tuple[int, ...] = tuple(int(n) for n in sz)
        kw: dict[str, Any] = {"device": device, "dtype": dtype}
        self.weights = nn.ParameterList(
            [nn.Parameter(torch.empty(n, m, **kw)) for m, n in itertools.pairwise(sz)]
        )
        self.biases = nn.ParameterList([nn.Parameter(torch.empty(n, **kw)) for n in sz[1:]])
        self.reset_parameters()

    def parameter(self, name: str) -> nn.Parameter:
        """The parameter of group ``name`` (``"W<l>"`` or ``"b<l>"``).

        Shape:
            ``W<l>``: ``(n_l, n_{l-1})``; ``b<l>``: ``(n_l,)``.
        """
        if name not in self.group_names:
            raise KeyError(f"unknown parameter group {name!r}; groups: {self.group_names}")
        i = int(name[1:]) - 1
        p = self.weights[i] if name[0] == "W" else self.biases[i]
        assert isinstance(p, nn.Parameter)
        return p

    def reset_parameters(self) -> None:
        """Initialise like ``nn.Linear``: Kaiming-uniform ``W``, ``b ~ U(+-1/sqrt(n_{l-1}))``.

        Shape:
            in place; shapes unchanged.
        """
        for w, b in zip(self.weights, self.biases, strict=True):
            nn.init.kaiming_uniform_(w, a=math.sqrt(5))
            bound = 1.0 / math.sqrt(w.shape[1])
            nn.init.uniform_(b, -bound, bound)

    def extra_repr(self) -> str:
        """Layer sizes and parameter count, for ``repr``.

        Shape:
            a string.
        """
        n = sum(p.numel() for p in self.parameters())
        return f"sizes={self.sizes}, parameters={n}"

    # ------------------------------------------------------------------ conversions
    @classmethod
    def from_sequential(cls, mlp: nn.Module) -> LayeredBinaryMRF:
        """The MRF whose bottom-up mean-field sweep is ``mlp``.

        Args:
            mlp: an ``nn.Sequential`` of ``Linear, Sigmoid`` pairs (``Linear`` without bias
                becomes a zero bias). The parameters are copied.

        Raises:
            ValueError: naming the first module that does not fit the pattern.

        Shape:
            ``mlp``: ``(B, n_0) -> (B, n_L)``; the result has ``sizes = (n_0, ..., n_L)``.
        """
        if not isinstance(mlp, nn.Sequential):
            raise ValueError(
                f"from_sequential needs an nn.Sequential of Linear/Sigmoid pairs, "
                f"got {type(mlp).__name__}"
            )
        mods = list(mlp)
        if not mods:
            raise ValueError("from_sequential: the nn.Sequential is empty")
        if len(mods) % 2:
            raise ValueError(
                f"from_sequential needs Linear/Sigmoid pairs, got {len(mods)} modules "
                f"(the last, {type(mods[-1]).__name__}, has no partner)"
            )
        linears: list[nn.Linear] = []
        for i in range(0, len(mods), 2):
            lin, act = mods[i], mods[i + 1]
            if not isinstance(lin, nn.Linear):
                raise ValueError(
                    f"from_sequential: module {i} is {type(lin).__name__}, expected nn.Linear "
                    f"(the pattern is Linear, Sigmoid, Linear, Sigmoid, ...)"
                )
            if not isinstance(act, nn.Sigmoid):
                raise ValueError(
                    f"from_sequential: module {i + 1} is {type(act).__name__}, expected "
                    f"nn.Sigmoid (a layered binary MRF's mean-field update is a sigmoid)"
                )
            if linears and lin.in_features != linears[-1].out_features:
                raise ValueError(
                    f"from_sequential: module {i} takes {lin.in_features} inputs but module "
                    f"{i - 2} gives {linears[-1].out_features}"
                )
            linears.append(lin)
        sizes = [linears[0].in_features] + [lin.out_features for lin in linears]
        ref = linears[0].weight
        model = cls(sizes, device=ref.device, dtype=ref.dtype)
        with torch.no_grad():
            for lin, w, b in zip(linears, model.weights, model.biases, strict=True):
                w.copy_(lin.weight)
                b.copy_(lin.bias if lin.bias is not None else torch.zeros_like(b))
        return model

    def to_sequential(self) -> nn.Sequential:
        """The equivalent sigmoid MLP (``Linear, Sigmoid`` pairs), parameters copied.

        Shape:
            the result maps ``(B, n_0) -> (B, n_L)``.
        """
        mods: list[nn.Module] = []
        for w, b in zip(self.weights, self.biases, strict=True):
            lin = nn.Linear(w.shape[1], w.shape[0], device=w.device, dtype=w.dtype)
            with torch.no_grad():
                lin.weight.copy_(w)
                lin.bias.copy_(b)
            mods += [lin, nn.Sigmoid()]
        return nn.Sequential(*mods)

    # ------------------------------------------------------------------ the model
    def forward(self, states: Sequence[torch.Tensor]) -> torch.Tensor:
        """Unnormalised log-probability ``sum_l x_l^T W_l x_{l-1} + b_l^T x_l`` of joint states.

        Args:
            states: ``L + 1`` tensors, one per layer (layer 0 may hold values in ``[0, 1]``).

        Shape:
            ``states[l]``: ``(B, n_l)``; output: ``(B,)``.
        """
        if len(states) != len(self.sizes):
            raise ValueError(f"expected {len(self.sizes)} layers of states, got {len(states)}")
        w0 = self.weights[0]
        xs = [s.to(dtype=w0.dtype) for s in states]
        total = xs[0].new_zeros(xs[0].shape[:-1])
        for layer, (w, b) in enumerate(zip(self.weights, self.biases, strict=True), start=1):
            total = total + (F.linear(xs[layer - 1], w, b) * xs[layer]).sum(-1)
        return total

    def log_potential(self, states: Sequence[torch.Tensor]) -> torch.Tensor:
        """Alias of :meth:`forward`.

        Shape:
            ``states[l]``: ``(B, n_l)``; output: ``(B,)``.
        """
        return self.forward(states)

    # ------------------------------------------------------------------ unfolding
    @overload
    def unfold(
        self,
        algorithm: Literal["mf"] = ...,
        sweeps: int | None = ...,
        iterations: int | None = ...,
        *,
        untie: bool | Iterable[str] = ...,
        untie_last: int | None = ...,
        schedule: Schedule = ...,
        init: float | None = ...,
    ) -> LayeredMeanField: ...

    @overload
    def unfold(
        self,
        algorithm: Literal["bp"],
        sweeps: int | None = ...,
        iterations: int | None = ...,
        *,
        untie: bool | Iterable[str] = ...,
        untie_last: int | None = ...,
        schedule: Schedule = ...,
        init: float | None = ...,
    ) -> LayeredBP: ...

    def unfold(
        self,
        algorithm: Literal["mf", "bp"] = "mf",
        sweeps: int | None = None,
        iterations: int | None = None,
        *,
        untie: bool | Iterable[str] = False,
        untie_last: int | None = None,
        schedule: Schedule = "layerwise",
        init: float | None = None,
    ) -> UnfoldedLayered:
        """Unfold mean-field (``"mf"``) or belief propagation (``"bp"``) into a network.

        Args:
            algorithm: ``"mf"`` or ``"bp"``.
            sweeps, iterations: number of unfolded steps ``T`` (either name; default 1). For the
                ``"layerwise"`` schedule a mean-field step is one bottom-up sweep over the
                layers, a BP step one upward plus one downward pass of messages.
            untie: ``False`` (the network shares this model's parameters), ``True`` (one copy
                per step, initialised from this model) or an iterable of group names.
            untie_last: untie only the last ``C`` steps.
            schedule: ``"layerwise"`` (bottom-up, the default) or ``"parallel"`` (every layer
                from the previous step's state; the general engine's ``"parallel"``).
            init: mean-field only, the initial value of the hidden marginals (default 0: the
                MLP).

        Returns:
            :class:`LayeredMeanField` or :class:`LayeredBP`; tied, it holds this model's very
            parameters (training it trains the model); untied, it holds copies.

        Shape:
            the network maps ``x: (B, n_0)`` to ``(B, n_L)``.
        """
        if sweeps is not None and iterations is not None and sweeps != iterations:
            raise ValueError(f"give sweeps or iterations, not both ({sweeps} != {iterations})")
        steps = sweeps if sweeps is not None else iterations if iterations is not None else 1
        net: UnfoldedLayered
        if algorithm == "mf":
            net = LayeredMeanField(
                self, steps, schedule=schedule, init=0.0 if init is None else init
            )
        elif algorithm == "bp":
            if init is not None:
                raise ValueError("init is a mean-field option; BP messages start at log-odds 0")
            net = LayeredBP(self, steps, schedule=schedule)
        else:
            raise ValueError(f"algorithm must be 'mf' or 'bp', got {algorithm!r}")
        if untie is not False or untie_last is not None:
            groups = None if untie is True or untie is False else list(untie)
            net = net.untie(groups, last=untie_last)
        return net

    # ------------------------------------------------------------------ general engine
    def to_factor_graph(
        self, x: torch.Tensor | np.ndarray | None = None, *, observed: Observed = "evidence"
    ) -> LayeredGraph:
        """The same model as a general :class:`~pgmunfold.FactorGraph` (values copied, float64).

        Args:
            x: observed layer-0 values, ``(n_0,)`` or ``(B, n_0)``.
            observed: ``"evidence"`` (default): every layer is a variable array, couplings and
                biases are factor groups, and a binary ``x`` becomes ``inputs["evidence"]``
                (clamps). ``"field"``: the form the fast path computes. Layer 0 is not a
                variable; ``x`` (required, real values allowed) and the biases enter as
                per-instance unary log-potentials ``[0, b_1 + W_1 x]`` and ``[0, b_l]``
                (``inputs["unary"]``), the graph holds only the couplings ``W_2 ... W_L``.
                With BP, unary inputs reach the cavities from the first iteration, whereas the
                engine's messages of unary *factors* start uniform: the ``"field"`` form is
                what matches :class:`LayeredBP` iteration by iteration.

        Returns:
            a :class:`LayeredGraph` ``(graph, inputs, layers)``: ``pu.compile(graph, ...)`` then
            ``net(**inputs)``.

        Shape:
            ``inputs["evidence"][layers[0]]``: ``(n_0,)`` or ``(B, n_0)`` int64;
            ``inputs["unary"][layers[l]]``: ``(n_l, 2)`` or ``(B, n_l, 2)`` float64.
        """
        if observed not in ("evidence", "field"):
            raise ValueError(f"observed must be 'evidence' or 'field', got {observed!r}")
        ws = [w.detach().cpu().double() for w in self.weights]
        bs = [b.detach().cpu().double() for b in self.biases]
        xt = None
        if x is not None:
            xt = torch.as_tensor(x).detach().cpu()
            if xt.dim() not in (1, 2) or xt.shape[-1] != self.sizes[0]:
                raise ValueError(
                    f"x must have shape ({self.sizes[0]},) or (B, {self.sizes[0]}), "
                    f"got {tuple(xt.shape)}"
                )
        fg = FactorGraph()
        first = 0 if observed == "evidence" else 1
        layers = {
            layer: fg.add_variables(f"x{layer}", self.sizes[layer], 2)
            for layer in range(first, self.num_layers + 1)
        }
        for layer in range(first + 1, self.num_layers + 1):
            upper, lower = layers[layer].ids, layers[layer - 1].ids
            scopes = np.stack(np.meshgrid(upper, lower, indexing="ij"), -1).reshape(-1, 2)
            tab = np.zeros((scopes.shape[0], 2, 2))
            tab[:, 1, 1] = ws[layer - 1].numpy().reshape(-1)
            fg.add_factors(scopes, tab, name=f"W{layer}")
            if observed == "evidence":
                btab = np.zeros((self.sizes[layer], 2))
                btab[:, 1] = bs[layer - 1].numpy()
                fg.add_factors(layers[layer].ids.reshape(-1, 1), btab, name=f"b{layer}")
        inputs: dict[str, dict[Any, torch.Tensor]] = {}
        if observed == "evidence":
            if xt is not None:
                states = xt.long()
                if xt.is_floating_point() and not torch.equal(states.to(xt.dtype), xt):
                    raise ValueError(
                        "x must be binary (0/1) to become evidence; real-valued expectations "
                        "enter as a unary field: use observed='field'"
                    )
                if states.numel() and (int(states.min()) < 0 or int(states.max()) > 1):
                    raise ValueError("x must be binary (0/1) to become evidence")
                inputs["evidence"] = {layers[0]: states}
        else:
            if xt is None:
                raise ValueError("observed='field' needs x: it enters as the unary field W_1 x")
            xd = xt.double()
            fields = [F.linear(xd, ws[0], bs[0])]
            lead = xd.shape[:-1]
            fields += [b.expand(*lead, -1) for b in bs[1:]]
            inputs["unary"] = {
                layers[layer]: torch.stack([torch.zeros_like(a), a], -1)
                for layer, a in enumerate(fields, start=1)
            }
        return LayeredGraph(fg, inputs, layers)


# ---------------------------------------------------------------------------- unfolded networks
def _refine_plan(plan: tuple[int, ...] | None, steps: int, start: int) -> tuple[int, ...]:
    """One copy per step ``t >= start``; earlier steps keep ``plan``'s sharing (renumbered)."""
    labels = [(0, 0 if plan is None else plan[t]) if t < start else (1, t) for t in range(steps)]
    ids: dict[tuple[int, int], int] = {}
    return tuple(ids.setdefault(lab, len(ids)) for lab in labels)


class UnfoldedLayered(_LayerCounts, nn.Module):
    """Common machinery of :class:`LayeredMeanField` and :class:`LayeredBP`.

    The parameters live in :attr:`params` (``nn.ParameterDict`` keyed ``"W1", "b1", ...``).
    A tied group holds the plain tensor (for a network made by
    :meth:`LayeredBinaryMRF.unfold`, the model's own ``Parameter``: the two are trained
    together); an untied group holds ``P`` stacked copies and step ``t`` uses copy
    ``copy_index[name][t]``.

    Shape:
        ``forward(x)``: ``(B, n_0)`` (or ``(..., n_0)``) -> ``(B, n_L)`` marginals
        ``P(x_L = 1)``; :meth:`log_odds` the same shape; :meth:`marginals` a list of
        ``(B, n_l)``, ``l = 0..L``.
    """

    algorithm: ClassVar[str] = ""
    _step_name: ClassVar[str] = "steps"

    def __init__(
        self,
        model: LayeredBinaryMRF | None = None,
        steps: int = 1,
        *,
        schedule: Schedule = "layerwise",
        _sizes: Sequence[int] | None = None,
        _params: Mapping[str, nn.Parameter] | None = None,
        _plan: Mapping[str, tuple[int, ...] | None] | None = None,
    ) -> None:
        super().__init__()
        self.steps = _check_steps(steps, self._step_name)
        if schedule not in ("layerwise", "parallel"):
            raise ValueError(f"schedule must be 'layerwise' or 'parallel', got {schedule!r}")
        self.schedule: Schedule = schedule
        if model is not None:
            sizes = model.sizes
            params = {name: model.parameter(name) for name in model.group_names}
            plan: dict[str, tuple[int, ...] | None] = dict.fromkeys(model.group_names)
        else:
            if _sizes is None or _params is None or _plan is None:
                raise ValueError("pass a LayeredBinaryMRF (or use LayeredBinaryMRF.unfold)")
            sizes, params, plan = tuple(_sizes), dict(_params), dict(_plan)
        self.sizes: tuple[int, ...] = tuple(sizes)
        names = _layer_names(len(self.sizes) - 1)
        if sorted(params) != sorted(names) or sorted(plan) != sorted(names):
            raise ValueError(f"parameters must be exactly the groups {names}")
        for name in names:
            layer = int(name[1:])
            shape: tuple[int, ...] = (
                (self.sizes[layer], self.sizes[layer - 1])
                if name[0] == "W"
                else (self.sizes[layer],)
            )
            idx = plan[name]
            got = tuple(params[name].shape)
            if idx is None:
                ok = got == shape
            else:
                ok = len(idx) == self.steps and got[1:] == shape and max(idx) < got[0]
            if not ok:
                raise ValueError(f"parameter {name} has shape {got}, plan {idx}; expected {shape}")
        self.params = nn.ParameterDict({name: params[name] for name in names})
        self.copy_index: dict[str, tuple[int, ...] | None] = {n: plan[n] for n in names}

    # ------------------------------------------------------------------ parameters
    def _get(self, name: str, step: int) -> torch.Tensor:
        p = self.params[name]
        idx = self.copy_index[name]
        return p if idx is None else p[idx[step]]

    def weight(self, layer: int, step: int = -1) -> torch.Tensor:
        """``W_layer`` as used at ``step``.

        Shape:
            ``(n_layer, n_{layer-1})``.
        """
        return self._get(f"W{layer}", step)

    def bias(self, layer: int, step: int = -1) -> torch.Tensor:
        """``b_layer`` as used at ``step``.

        Shape:
            ``(n_layer,)``.
        """
        return self._get(f"b{layer}", step)

    def num_parameters(self) -> int:
        """Number of trainable scalars (shared tensors counted once).

        Shape:
            a Python int.
        """
        return sum(p.numel() for p in self.parameters())

    def untied_groups(self) -> list[str]:
        """Groups with more than one copy.

        Shape:
            a list of group names.
        """
        return [
            n for n in self.group_names if (idx := self.copy_index[n]) is not None and max(idx) > 0
        ]

    def extra_repr(self) -> str:
        """Sizes, steps, schedule and parameter counts (all copies, one copy), for ``repr``.

        Shape:
            a string.
        """
        one = sum(
            p.numel() if self.copy_index[n] is None else p[0].numel()
            for n, p in self.params.items()
        )
        return (
            f"sizes={self.sizes}, {self._step_name}={self.steps}, schedule={self.schedule}"
            f"{self._extra_config_repr()}, parameters={self.num_parameters()} "
            f"(one copy: {one}; untied groups: {self.untied_groups() or 'none'})"
        )

    def _extra_config_repr(self) -> str:
        return ""

    def _config(self) -> dict[str, Any]:
        return {}

    def _rebuild(
        self,
        params: Mapping[str, nn.Parameter],
        plan: Mapping[str, tuple[int, ...] | None],
        cls: type[UnfoldedLayered] | None = None,
        steps: int | None = None,
        **config: Any,
    ) -> UnfoldedLayered:
        kind = type(self) if cls is None else cls
        cfg = self._config() if cls is None or cls is type(self) else {}
        cfg.update(config)
        return kind(
            None,
            self.steps if steps is None else steps,
            _sizes=self.sizes,
            _params=params,
            _plan=plan,
            **cfg,
        )

    def reset_parameters(self) -> None:
        """Draw a fresh ``nn.Linear``-style initialisation and copy it into every copy.

        A tied network made by :meth:`LayeredBinaryMRF.unfold` re-initialises the model too.

        Shape:
            in place; shapes unchanged.
        """
        ref = self.params["W1"]
        fresh = LayeredBinaryMRF(self.sizes, device=ref.device, dtype=ref.dtype)
        with torch.no_grad():
            for name, p in self.params.items():
                p.copy_(fresh.parameter(name).expand_as(p))

    def untie(self, groups: Iterable[str] | None = None, last: int | None = None) -> Any:
        """A new network with one copy of the parameters per step, initialised from this one.

        Args:
            groups: group names to untie (default all, e.g. ``["W2", "W3"]`` unties only those
                couplings); the others keep their sharing (copied too: the new network is
                independent of this one and of the model).
            last: untie only the last ``last`` steps (earlier ones keep their sharing).

        Returns:
            a network of the same class computing exactly the same function until trained.

        Shape:
            untied group ``name``: ``(P, *shape)`` in :attr:`params`.
        """
        names = (
            list(self.group_names)
            if groups is None
            else [groups]
            if isinstance(groups, str)
            else list(groups)
        )
        unknown = sorted(set(names) - set(self.group_names))
        if unknown:
            raise ValueError(f"unknown parameter groups {unknown}; groups: {self.group_names}")
        T = self.steps
        if last is not None and (
            isinstance(last, bool) or not isinstance(last, int) or not 1 <= last <= T
        ):
            raise ValueError(f"last must be an integer in [1, {T}], got {last!r}")
        start = 0 if last is None else T - last
        params: dict[str, nn.Parameter] = {}
        plan: dict[str, tuple[int, ...] | None] = {}
        for name in self.group_names:
            p = self.params[name]
            if name in names:
                idx = _refine_plan(self.copy_index[name], T, start)
                first: dict[int, int] = {}
                for t, c in enumerate(idx):
                    first.setdefault(c, t)
                data = torch.stack([self._get(name, first[c]).detach() for c in sorted(first)])
                params[name] = nn.Parameter(data.clone(), requires_grad=p.requires_grad)
                plan[name] = idx
            else:
                params[name] = nn.Parameter(p.detach().clone(), requires_grad=p.requires_grad)
                plan[name] = self.copy_index[name]
        new = self._rebuild(params, plan)
        new.train(self.training)
        return new

    def convert(
        self,
        algorithm: Literal["mf", "bp"],
        steps: int | None = None,
        *,
        schedule: Schedule | None = None,
        init: float | None = None,
    ) -> Any:
        """The other algorithm's network on the *same* parameter tensors (shared, not copied).

        Args:
            algorithm: ``"mf"`` or ``"bp"``.
            steps: number of sweeps/iterations (default: this network's). Untied groups need
                the same number of steps.
            schedule: default: this network's.
            init: mean-field initial hidden marginals (``"mf"`` only; default 0).

        Returns:
            :class:`LayeredMeanField` or :class:`LayeredBP`. Use ``copy.deepcopy`` on the result
            for an independent network.

        Shape:
            as :class:`UnfoldedLayered`.
        """
        T = self.steps if steps is None else _check_steps(steps, "steps")
        if T != self.steps and self.untied_groups():
            raise ValueError(
                f"cannot share untied parameters ({self.untied_groups()}) between {self.steps} "
                f"and {T} steps"
            )
        params = dict(self.params.items())
        plan: dict[str, tuple[int, ...] | None] = dict(self.copy_index)
        if T != self.steps:  # every group is tied in effect: stacked ones keep using copy 0
            plan = {n: None if idx is None else (0,) * T for n, idx in plan.items()}
        cfg: dict[str, Any] = {"schedule": schedule or self.schedule}
        if algorithm == "mf":
            cfg["init"] = 0.0 if init is None else init
            return self._rebuild(params, plan, LayeredMeanField, T, **cfg)
        if algorithm == "bp":
            if init is not None:
                raise ValueError("init is a mean-field option")
            return self._rebuild(params, plan, LayeredBP, T, **cfg)
        raise ValueError(f"algorithm must be 'mf' or 'bp', got {algorithm!r}")

    def to_mrf(self, step: int = -1) -> LayeredBinaryMRF:
        """A :class:`LayeredBinaryMRF` holding copies of the parameters used at ``step``.

        Shape:
            the result has this network's ``sizes``.
        """
        ref = self.params["W1"]
        model = LayeredBinaryMRF(self.sizes, device=ref.device, dtype=ref.dtype)
        with torch.no_grad():
            for name in self.group_names:
                model.parameter(name).copy_(self._get(name, step))
        return model

    # ------------------------------------------------------------------ evaluation
    def _fields(self, x: torch.Tensor, step: int) -> list[torch.Tensor]:
        """Unary log-odds of layers ``1..L`` at ``step`` (index 0 unused: holds ``x``)."""
        B = x.shape[0]
        out = [x, F.linear(x, self.weight(1, step), self.bias(1, step))]
        out += [self.bias(layer, step).expand(B, -1) for layer in range(2, self.num_layers + 1)]
        return out

    def _flatten(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
        n0 = self.sizes[0]
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a tensor, got {type(x).__name__}")
        if x.dim() == 0 or x.shape[-1] != n0:
            raise ValueError(f"x must have shape (B, {n0}) (or (..., {n0})), got {tuple(x.shape)}")
        dtype = self.params["W1"].dtype
        return x.reshape(-1, n0).to(dtype=dtype), tuple(x.shape[:-1])

    def _run(self, x: torch.Tensor, full: bool) -> list[torch.Tensor]:
        """Log-odds of layers ``1..L`` (only the last entry is meaningful unless ``full``)."""
        raise NotImplementedError

    def log_odds(self, x: torch.Tensor) -> torch.Tensor:
        """Top-layer log-odds ``logit P(x_L = 1)`` (the pre-sigmoid activations of the MLP).

        Shape:
            ``x``: ``(B, n_0)`` or ``(..., n_0)``; output ``(B, n_L)`` / ``(..., n_L)``.
        """
        x2, lead = self._flatten(x)
        return self._run(x2, False)[-1].reshape(*lead, self.sizes[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Top-layer marginals ``P(x_L = 1)`` given layer-0 expectations ``x`` in ``[0, 1]``.

        Shape:
            ``x``: ``(B, n_0)`` or ``(..., n_0)``; output ``(B, n_L)`` / ``(..., n_L)``.
        """
        return torch.sigmoid(self.log_odds(x))

    def marginals(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Marginals ``P(x_l = 1)`` of every layer (layer 0: ``x`` itself, as a float tensor).

        Shape:
            ``x``: ``(B, n_0)``; output: ``L + 1`` tensors ``(B, n_l)``.
        """
        x2, lead = self._flatten(x)
        hs = self._run(x2, True)
        out = [x2.reshape(*lead, self.sizes[0])]
        out += [torch.sigmoid(h).reshape(*lead, n) for h, n in zip(hs, self.sizes[1:], strict=True)]
        return out


class LayeredMeanField(UnfoldedLayered):
    """Naive mean-field on a :class:`LayeredBinaryMRF`, unfolded into ``sweeps`` sweeps.

    Update of layer ``l`` (``q_0 = x`` fixed, ``q_{L+1}`` absent)::

        q_l = sigmoid(W_l q_{l-1} + b_l + W_{l+1}^T q_{l+1})

    ``"layerwise"`` schedule: a sweep updates layers ``1, ..., L`` in order (exact coordinate
    ascent on the mean-field bound). With ``init = 0`` the top-down term vanishes in the first
    sweep, which is therefore the sigmoid MLP, computed with the same ``F.linear`` calls.
    ``"parallel"``: every layer from the previous sweep's marginals (the general engine's
    parallel mean-field, which starts from ``init = 0.5``).

    Args:
        model: the :class:`LayeredBinaryMRF` whose parameters are used (shared).
        sweeps: number of sweeps ``T``.
        schedule: ``"layerwise"`` or ``"parallel"``.
        init: initial hidden marginals, in ``[0, 1]``.

    Shape:
        ``forward(x)``: ``(B, n_0) -> (B, n_L)``.
    """

    algorithm: ClassVar[str] = "mf"
    _step_name: ClassVar[str] = "sweeps"

    def __init__(
        self,
        model: LayeredBinaryMRF | None = None,
        sweeps: int = 1,
        *,
        schedule: Schedule = "layerwise",
        init: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(model, sweeps, schedule=schedule, **kwargs)
        if not (isinstance(init, int | float) and not isinstance(init, bool) and 0 <= init <= 1):
            raise ValueError(f"init must be a number in [0, 1], got {init!r}")
        self.init = float(init)

    @property
    def sweeps(self) -> int:
        """Number of unfolded sweeps ``T``.

        Shape:
            a Python int.
        """
        return self.steps

    def _config(self) -> dict[str, Any]:
        return {"schedule": self.schedule, "init": self.init}

    def _extra_config_repr(self) -> str:
        return f", init={self.init}"

    def _run(self, x: torch.Tensor, full: bool) -> list[torch.Tensor]:
        L, B = self.num_layers, x.shape[0]
        # q[l] is None while layer l still holds its initial value
        q: list[torch.Tensor | None] = [x] + [None] * L
        if self.init != 0.0:
            q[1:] = [x.new_full((B, n), self.init) for n in self.sizes[1:]]
        fields: list[torch.Tensor] = []
        for t in range(self.steps):
            src = q if self.schedule == "parallel" else None
            fields = []
            new: list[torch.Tensor | None] = [x]
            for layer in range(1, L + 1):
                state = src if src is not None else q
                below = state[layer - 1]
                w, b = self.weight(layer, t), self.bias(layer, t)
                f = F.linear(below, w, b) if below is not None else b.expand(B, -1)
                if layer < L:
                    above = state[layer + 1]
                    if above is not None:
                        f = f + above @ self.weight(layer + 1, t)
                fields.append(f)
                if src is None:
                    q[layer] = torch.sigmoid(f)
                else:
                    new.append(torch.sigmoid(f))
            if src is not None:
                q = new
        return fields


class LayeredBP(UnfoldedLayered):
    """Loopy belief propagation on a :class:`LayeredBinaryMRF`, messages in log-odds.

    Every coupling ``W_l[k, i]`` carries an upward message ``U_l[k, i]`` (into ``x_l[k]``) and a
    downward message ``D_l[k, i]`` (into ``x_{l-1}[i]``), initialised at 0 (uniform). Layer ``l``
    has the unary log-odds ``a_1 = W_1 x + b_1`` (the observed layer's fixed expectations) and
    ``a_l = b_l``, and the belief ``h_l = a_l + sum_i U_l[:, i] + sum_m D_{l+1}[m, :]``. Messages
    are :func:`bp_message` of the cavity (belief minus the message coming back)::

        U_l[k, i] = phi(h_{l-1}[i] - D_l[k, i], W_l[k, i])
        D_l[k, i] = phi(h_l[k] - U_l[k, i], W_l[k, i]),   phi(c, w) = softplus(c + w) - softplus(c)

    ``"layerwise"`` schedule: an iteration is an upward pass (``U_2, ..., U_L``, each using the
    freshly updated layer below) and then a downward pass (``D_L, ..., D_2``); the first upward
    pass is a feed-forward network ``h_l = b_l + sum_i phi(h_{l-1}[i], W_l[:, i])`` with the
    MLP's parameters (exact on trees, e.g. a single output unit). ``"parallel"``: flooding, every
    message from the previous iteration's (the general engine's ``"parallel"`` BP on the
    ``observed="field"`` graph).

    Args:
        model: the :class:`LayeredBinaryMRF` whose parameters are used (shared).
        iterations: number of iterations ``T``.
        schedule: ``"layerwise"`` or ``"parallel"``.

    Shape:
        ``forward(x)``: ``(B, n_0) -> (B, n_L)``; the messages cost ``O(B n_l n_{l-1})``
        memory per coupling layer and iteration (MF: ``O(B n_l)``).
    """

    algorithm: ClassVar[str] = "bp"
    _step_name: ClassVar[str] = "iterations"

    def __init__(
        self,
        model: LayeredBinaryMRF | None = None,
        iterations: int = 1,
        *,
        schedule: Schedule = "layerwise",
        **kwargs: Any,
    ) -> None:
        super().__init__(model, iterations, schedule=schedule, **kwargs)

    @property
    def iterations(self) -> int:
        """Number of unfolded iterations ``T``.

        Shape:
            a Python int.
        """
        return self.steps

    def _config(self) -> dict[str, Any]:
        return {"schedule": self.schedule}

    @staticmethod
    def _messages(
        cav: torch.Tensor, w: torch.Tensor, dim: int, keep: bool
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Edge messages ``phi(cav, w)`` (when ``keep``) and their sum over ``dim``."""
        sp = softplus(cav + w)
        if keep or cav.shape == sp.shape:
            edges = sp - softplus(cav)
            return edges, edges.sum(dim)
        # cav is broadcast along the other axis: sum_d softplus(c_d) is shared by every row
        return None, sp.sum(dim) - softplus(cav).sum(dim)

    def _run(self, x: torch.Tensor, full: bool) -> list[torch.Tensor]:
        L, T = self.num_layers, self.steps
        up: list[torch.Tensor | None] = [None] * (L + 1)  # U_l edges (B, n_l, n_{l-1})
        down: list[torch.Tensor | None] = [None] * (L + 1)  # D_l edges
        s_up: list[torch.Tensor | None] = [None] * (L + 1)  # sum_i U_l: (B, n_l)
        s_down: list[torch.Tensor | None] = [None] * (L + 1)  # sum_k D_l: (B, n_{l-1})

        def belief(layer: int, a: list[torch.Tensor]) -> torch.Tensor:
            h = a[layer]
            su = s_up[layer]
            if su is not None:
                h = h + su
            if layer < L:
                sd = s_down[layer + 1]
                if sd is not None:
                    h = h + sd
            return h

        a = self._fields(x, 0)
        for t in range(T):
            a = self._fields(x, t) if t else a
            last = t == T - 1
            if self.schedule == "layerwise":
                keep = full or not last  # a downward pass follows
                for layer in range(2, L + 1):
                    cav = belief(layer - 1, a).unsqueeze(1)
                    d = down[layer]
                    if d is not None:
                        cav = cav - d
                    up[layer], s_up[layer] = self._messages(cav, self.weight(layer, t), -1, keep)
                if last and not full:
                    break
                for layer in range(L, 1, -1):
                    u = up[layer]
                    assert u is not None
                    cav = belief(layer, a).unsqueeze(2) - u
                    down[layer], s_down[layer] = self._messages(
                        cav, self.weight(layer, t), -2, True
                    )
            else:
                hs = [belief(layer, a) for layer in range(L + 1)]
                new: list[tuple[Any, ...]] = []
                for layer in range(2, L + 1):
                    w = self.weight(layer, t)
                    cu = hs[layer - 1].unsqueeze(1)
                    cd = hs[layer].unsqueeze(2)
                    d, u = down[layer], up[layer]
                    cu = cu - d if d is not None else cu
                    cd = cd - u if u is not None else cd
                    new.append((*self._messages(cu, w, -1, True), *self._messages(cd, w, -2, True)))
                for layer, (u_e, u_s, d_e, d_s) in zip(range(2, L + 1), new, strict=True):
                    up[layer], s_up[layer], down[layer], s_down[layer] = u_e, u_s, d_e, d_s
        if not full:
            return [belief(L, a)]
        return [belief(layer, a) for layer in range(1, L + 1)]
