"""pgmunfold: deep unfolding of probabilistic graphical models.

Declare a discrete Markov random field as a :class:`FactorGraph`, then :func:`compile` loopy belief
propagation or mean-field inference on it into an ``nn.Module`` whose layers are the iterations.
"""

from pgmunfold.beliefs import Beliefs
from pgmunfold.exact import (
    ExactInferenceTooLarge,
    exact_log_partition,
    exact_map,
    exact_marginals,
)
from pgmunfold.graph import FactorGraph, FactorGroup, GraphError, VariableArray
from pgmunfold.network import UnfoldedNetwork, compile

__all__ = [
    "Beliefs",
    "ExactInferenceTooLarge",
    "FactorGraph",
    "FactorGroup",
    "GraphError",
    "UnfoldedNetwork",
    "VariableArray",
    "compile",
    "exact_log_partition",
    "exact_map",
    "exact_marginals",
]

__version__ = "0.1.0"
