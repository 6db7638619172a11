"""Scoring modes and their kernels.

Importing this package registers the built-in scoring modes in
:data:`vireid.scoring.scorers.SCORING_MODES`: ``simplified``, ``full`` and ``rerank``
(:mod:`vireid.scoring.scorers`), then ``fused`` (:mod:`vireid.scoring.fusion`).
"""
from vireid.scoring import fusion  # noqa: F401  (registers "fused"; imports scorers first)
