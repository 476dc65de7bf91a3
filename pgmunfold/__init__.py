"""pgmunfold: deep unfolding of probabilistic graphical models.

Declare a discrete Markov random field as a :class:`FactorGraph`, then :func:`compile` loopy belief
propagation or mean-field inference on it into an ``nn.Module`` whose layers are the iterations.
"""

from pgmunfold import models, nmf, train
from pgmunfold.beliefs import Beliefs
from pgmunfold.draw import draw, draw_beliefs, draw_unfolded
from pgmunfold.exact import (
    ExactInferenceTooLarge,
    exact_log_partition,
    exact_map,
    exact_marginals,
)
from pgmunfold.graph import FactorGraph, FactorGroup, GraphError, VariableArray
from pgmunfold.interop import from_pgmpy, to_pgmpy
from pgmunfold.io import (
    FormatError,
    read_fg,
    read_uai,
    read_uai_evidence,
    read_uai_mar,
    write_fg,
    write_uai,
    write_uai_mar,
)
from pgmunfold.network import UnfoldedNetwork, compile

__all__ = [
    "Beliefs",
    "ExactInferenceTooLarge",
    "FactorGraph",
    "FactorGroup",
    "FormatError",
    "GraphError",
    "UnfoldedNetwork",
    "VariableArray",
    "compile",
    "draw",
    "draw_beliefs",
    "draw_unfolded",
    "exact_log_partition",
    "exact_map",
    "exact_marginals",
    "from_pgmpy",
    "models",
    "nmf",
    "read_fg",
    "read_uai",
    "read_uai_evidence",
    "read_uai_mar",
    "to_pgmpy",
    "train",
    "write_fg",
    "write_uai",
    "write_uai_mar",
]

__version__ = "0.1.0"
