"""Top-ε selections on an anomaly score with the threshold fixed outside the signal region.

The cut value is the (1 − ε) quantile of the score among the *sideband* events of the window (inside
the fit range, outside the SR), so the SR data never influence where the cut is placed; for a score
that is independent of m_jj under the background hypothesis, the SR background efficiency is then ε
too.

>>> rng = np.random.default_rng(0)
>>> mjj, score = rng.uniform(2000, 6000, 10000), rng.uniform(size=10000)
>>> cut = sideband_threshold(mjj, score, (3300, 3700), (2000, 6000), 0.1)
>>> 0.85 < cut < 0.95
True
"""

from __future__ import annotations

import numpy as np


def sideband_mask(mjj: np.ndarray, sr: tuple[float, float], fit_range: tuple[float, float]) -> np.ndarray:
    """Events inside ``fit_range`` but outside the signal region ``sr``."""
    mjj = np.asarray(mjj)
    in_range = (mjj >= fit_range[0]) & (mjj < fit_range[1])
    in_sr = (mjj >= sr[0]) & (mjj < sr[1])
    return in_range & ~in_sr


def weighted_quantile(values: np.ndarray, q: float, weights: np.ndarray | None = None) -> float:
    """The ``q`` quantile of ``values`` (optionally weighted)."""
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        raise ValueError("no events to define the score threshold")
    if weights is None:
        return float(np.quantile(values, q))
    order = np.argsort(values)
    cw = np.cumsum(np.asarray(weights, dtype=float)[order])
    return float(values[order][np.searchsorted(cw, q * cw[-1])])


def sideband_threshold(
    mjj: np.ndarray,
    score: np.ndarray,
    sr: tuple[float, float],
    fit_range: tuple[float, float],
    efficiency: float,
    weights: np.ndarray | None = None,
) -> float:
    """Score cut keeping the top ``efficiency`` of the sideband events (−inf when ε ≥ 1)."""
    if not 0 < efficiency <= 1:
        raise ValueError(f"efficiency {efficiency} must be in (0, 1]")
    if efficiency >= 1:
        return -np.inf
    side = sideband_mask(mjj, sr, fit_range) & np.isfinite(score)
    w = None if weights is None else np.asarray(weights)[side]
    return weighted_quantile(np.asarray(score)[side], 1.0 - efficiency, w)


def select(score: np.ndarray, threshold: float) -> np.ndarray:
    """Events passing the cut (NaN scores — events a model did not score — never pass)."""
    score = np.asarray(score)
    return np.isfinite(score) & (score > threshold) if np.isfinite(threshold) else np.ones(score.shape, bool)
