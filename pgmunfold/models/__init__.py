"""Ready-made models whose unfolded inference is a known architecture.

* :class:`LayeredBinaryMRF`: a layered binary Markov random field. Mean-field inference on it with
  a bottom-up sweep is exactly a sigmoid MLP (:class:`LayeredMeanField`); belief propagation on
  the same model gives a different network (:class:`LayeredBP`).
"""

from pgmunfold.models.layered import (
    LayeredBinaryMRF,
    LayeredBP,
    LayeredGraph,
    LayeredMeanField,
    UnfoldedLayered,
    bp_message,
)

__all__ = [
    "LayeredBP",
    "LayeredBinaryMRF",
    "LayeredGraph",
    "LayeredMeanField",
    "UnfoldedLayered",
    "bp_message",
]
