"""Model and result files: the UAI competition formats and libDAI's ``.fg`` format.

Readers return a :class:`~pgmunfold.graph.FactorGraph` with log-potentials (``0 -> -inf``);
every malformed file raises :class:`FormatError` (a ``ValueError``) naming the file, the line
and what was expected.
"""

from pgmunfold.io._common import FormatError
from pgmunfold.io.fg import parse_fg, read_fg, write_fg
from pgmunfold.io.uai import (
    format_uai_mar,
    parse_uai,
    parse_uai_evidence,
    parse_uai_mar,
    read_uai,
    read_uai_evidence,
    read_uai_mar,
    write_uai,
    write_uai_evidence,
    write_uai_mar,
)

__all__ = [
    "FormatError",
    "format_uai_mar",
    "parse_fg",
    "parse_uai",
    "parse_uai_evidence",
    "parse_uai_mar",
    "read_fg",
    "read_uai",
    "read_uai_evidence",
    "read_uai_mar",
    "write_fg",
    "write_uai",
    "write_uai_evidence",
    "write_uai_mar",
]
