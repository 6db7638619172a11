"""Exact t-SNE (van der Maaten & Hinton, JMLR 2008) in numpy, for the paper's Fig. 2.

Small by design: O(n²) memory and time per iteration, fine for the few hundred points of a
10-identity plot. Steps:

1. Affinities: for each point i a Gaussian over the others, p_{j|i} ∝ exp(−β_i ‖x_i − x_j‖²),
   with β_i found by binary search so that the entropy H(P_i) = log(perplexity).
   P = (P_{j|i} + P_{i|j}) / (2n).
2. Embedding Y (n × dims) from a seeded N(0, 1e-4) start; Student-t similarities
   q_ij ∝ (1 + ‖y_i − y_j‖²)⁻¹.
3. Gradient ∂C/∂y_i = 4 Σ_j (p_ij − q_ij)(1 + ‖y_i − y_j‖²)⁻¹ (y_i − y_j), descended with
   momentum (0.5, then 0.8), per-coordinate adaptive gains, and early exaggeration
   (P × 12 for the first 250 iterations).
"""
from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)


def _sq_dists(x: np.ndarray) -> np.ndarray:
    s = (x * x).sum(1)
    d = s[:, None] + s[None, :] - 2.0 * (x @ x.T)
    np.fill_diagonal(d, 0.0)
    return np.maximum(d, 0.0)


def conditional_affinities(x: np.ndarray, perplexity: float = 30.0, tol: float = 1e-5,
                           max_steps: int = 100) -> np.ndarray:
    """Row-stochastic P_{j|i}: x (n, d) -> (n, n) with zero diagonal and
    entropy of each row = log(perplexity) (natural log) up to ``tol``.
    """
    n = x.shape[0]
    d = _sq_dists(np.asarray(x, dtype=np.float64))
    target = np.log(perplexity)
    p = np.zeros((n, n))
    for i in range(n):
        di = np.delete(d[i], i)
        beta, lo, hi = 1.0, 0.0, np.inf
        # Scale so the first guess is sensible whatever the units of x.
        if di.size and np.median(di) > 0:
            beta = 1.0 / np.median(di)
        for _ in range(max_steps):
            e = np.exp(-(di - di.min()) * beta)
            sum_e = e.sum()
            pi = e / sum_e
            h = -np.sum(pi * np.log(np.maximum(pi, 1e-300)))
            if abs(h - target) < tol:
                break
            if h > target:  # too flat: sharpen
                lo = beta
                beta = beta * 2.0 if hi == np.inf else (beta + hi) / 2.0
            else:
                hi = beta
                beta = (beta + lo) / 2.0
        p[i, np.arange(n) != i] = pi
    return p


def tsne(x: np.ndarray, dims: int = 2, perplexity: float = 30.0, iterations: int = 1000,
         learning_rate: float | None = None, exaggeration: float = 12.0,
         exaggeration_iters: int = 250, seed: int = 0) -> np.ndarray:
    """Embed x (n, d) into (n, dims).

    ``perplexity`` is clipped to (n − 1) / 3 so that tiny inputs stay well-posed;
    ``learning_rate`` None → max(n / exaggeration / 4, 50).
    """
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[0]
    if n < 3:
        raise ValueError(f"t-SNE needs at least 3 points, found {n}")
    perplexity = float(min(perplexity, max((n - 1) / 3.0, 1.0)))
    lr = learning_rate if learning_rate is not None else max(n / exaggeration / 4.0, 50.0)
    cond = conditional_affinities(x, perplexity)
    p = (cond + cond.T) / (2.0 * n)
    p = np.maximum(p, 1e-12)
    rng = np.random.default_rng(seed)
    y = rng.normal(0.0, 1e-2, size=(n, dims))
    velocity = np.zeros_like(y)
    gains = np.ones_like(y)
    for it in range(iterations):
        pe = p * exaggeration if it < exaggeration_iters else p
        num = 1.0 / (1.0 + _sq_dists(y))
        np.fill_diagonal(num, 0.0)
        q = np.maximum(num / num.sum(), 1e-12)
        w = (pe - q) * num  # (n, n)
        grad = 4.0 * (w.sum(1)[:, None] * y - w @ y)
        momentum = 0.5 if it < exaggeration_iters else 0.8
        # Adaptive gains: grow where the step keeps its sign, shrink where it flips.
        same = np.sign(grad) == np.sign(velocity)
        gains = np.where(same, gains * 0.8, gains + 0.2)
        gains = np.maximum(gains, 0.01)
        velocity = momentum * velocity - lr * gains * grad
        y = y + velocity
        y = y - y.mean(0)
        if log.isEnabledFor(logging.DEBUG) and (it + 1) % 250 == 0:
            kl = float(np.sum(p * np.log(p / q)))
            log.debug("t-SNE iteration %d: KL %.4f", it + 1, kl)
    return y
