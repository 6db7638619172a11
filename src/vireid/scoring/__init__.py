"""Scoring modes and their kernels.

Importing this package registers the built-in scoring modes in
:data:`vireid.scoring.scorers.SCORING_MODES`: ``simplified``, ``full`` and ``rerank``
(:mod:`vireid.scoring.scorers`), then ``fused`` and ``fused-rerank``
(:mod:`vireid.scoring.fusion`).
"""
from vireid.scoring import fusion  # noqa: F401  (registers the fusion modes; imports scorers first)
