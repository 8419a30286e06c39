"""The per-LS anomaly score: a Poisson-aware reconstruction error.

An autoencoder reconstructs the *shape* ``r`` (unit area) of an LS's histogram with ``N`` entries and
observed fractions ``x``. The score is the Pearson χ² per bin of the observed counts against the
reconstructed expectation::

    score = (1 / n_bins) * Σ_i (N x_i − N r_i)² / (N r_i + 1)

(the ``+ 1`` keeps bins with a vanishing expectation finite). For a GOOD LS that the AE reconstructs
well the score is ≈ 1 once bins hold a few expected entries, whatever ``N`` is, so LSs with few or many
entries share one threshold; at very low statistics the ``+ 1`` pulls the score below 1, so a
low-statistics LS is not over-flagged (it is marked ``low_stats`` by the certification, never dropped). The plain per-LS MSE of the fractions
(:func:`mse`) is also reported.

>>> import numpy as np
>>> x = np.array([[0.5, 0.5]]); r = np.array([[0.5, 0.5]])
>>> float(poisson_chi2(x, r, np.array([100.0]))[0])
0.0
"""

from __future__ import annotations

import numpy as np


def poisson_chi2(fractions: np.ndarray, recon: np.ndarray, entries: np.ndarray) -> np.ndarray:
    """Pearson χ² per bin of ``entries * fractions`` against ``entries * recon`` (one value per LS)."""
    n = np.asarray(entries, dtype=np.float64)[:, None]
    obs = n * np.asarray(fractions, dtype=np.float64)
    exp = n * np.asarray(recon, dtype=np.float64)
    return ((obs - exp) ** 2 / (exp + 1.0)).mean(axis=1)


def mse(fractions: np.ndarray, recon: np.ndarray) -> np.ndarray:
    """Mean squared error of the unit-area fractions (the seed's reconstruction MSE)."""
    return ((np.asarray(fractions) - np.asarray(recon)) ** 2).mean(axis=1)


def loss_weights(fractions: np.ndarray, entries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-LS and per-bin weights for a Poisson-aware training loss.

    Per LS ``N / mean(N)`` (the variance of a fraction falls as 1/N); per bin ``1 / (m_i + 1/mean(N))``
    with ``m`` the mean shape (the Poisson variance of a fraction is ≈ m_i / N), normalised to mean 1.
    """
    entries = np.asarray(entries, dtype=np.float64)
    n_mean = max(float(entries[entries > 0].mean()) if (entries > 0).any() else 1.0, 1.0)
    ls_w = entries / n_mean
    mean_shape = np.asarray(fractions, dtype=np.float64)[entries > 0].mean(axis=0) if (entries > 0).any() \
        else np.full(fractions.shape[1], 1.0 / fractions.shape[1])
    bin_w = 1.0 / (mean_shape + 1.0 / n_mean)
    return ls_w, bin_w / bin_w.mean()
