"""Resolution-driven m_jj binning (CMS dijet style).

The CMS dijet searches bin m_jj with bins about as wide as the detector resolution, so that a narrow
resonance spreads over two or three bins. Here the relative resolution is parametrised as

.. math:: \\sigma(m)/m = \\sqrt{s^2/m + c^2}

(``s`` a stochastic term in √GeV, ``c`` a constant term), and bin edges follow that width from the low
edge upwards.

>>> edges = resolution_edges(2000.0, 6000.0)
>>> round(float(edges[0])), round(float(edges[-1])), len(edges) > 20
(2000, 6000, True)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: Default relative m_jj resolution parameters (stochastic √GeV, constant): σ/m ≈ 3.4 % at 3.5 TeV.
DEFAULT_RESOLUTION = (1.0, 0.03)


def mass_resolution(m: np.ndarray | float, resolution: Sequence[float] = DEFAULT_RESOLUTION) -> np.ndarray:
    """Absolute m_jj resolution σ(m) in GeV."""
    s, c = resolution
    m = np.asarray(m, dtype=float)
    return m * np.sqrt(s**2 / m + c**2)


def resolution_edges(
    lo: float,
    hi: float,
    resolution: Sequence[float] = DEFAULT_RESOLUTION,
    width_in_sigma: float = 1.0,
) -> np.ndarray:
    """Bin edges from ``lo`` to ``hi`` whose widths are ``width_in_sigma`` × σ(m) at the bin centre.

    The last bin absorbs the remainder (it is merged into the previous bin when narrower than half a
    nominal width).
    """
    if not hi > lo > 0:
        raise ValueError(f"binning range ({lo}, {hi}) must satisfy 0 < lo < hi")
    edges = [float(lo)]
    while True:
        e = edges[-1]
        w = width_in_sigma * float(mass_resolution(e, resolution))
        w = width_in_sigma * float(mass_resolution(e + 0.5 * w, resolution))  # evaluate at the centre
        if e + w >= hi:
            break
        edges.append(e + w)
    last_w = width_in_sigma * float(mass_resolution(edges[-1], resolution))
    if len(edges) > 1 and hi - edges[-1] < 0.5 * last_w:
        edges.pop()
    edges.append(float(hi))
    return np.asarray(edges)


def window_edges(
    sr: tuple[float, float],
    fit_range: tuple[float, float],
    resolution: Sequence[float] = DEFAULT_RESOLUTION,
    width_in_sigma: float = 1.0,
) -> tuple[np.ndarray, slice]:
    """Binning of ``fit_range`` in which the signal region ``sr`` starts and ends on bin edges.

    Sidebands are binned outwards from the SR boundaries with resolution-wide bins; the SR itself is
    split into equal bins about one resolution wide. Returns ``(edges, sr_bins)`` where ``sr_bins``
    indexes the SR bins of the histogram.
    """
    lo, hi = fit_range
    a, b = sr
    if not lo < a < b < hi:
        raise ValueError(f"signal region {sr} must lie inside the fit range {fit_range}")
    # upper sideband: upwards from b
    upper = resolution_edges(b, hi, resolution, width_in_sigma)
    # lower sideband: build upwards on a mirrored scale, then take widths from the top down
    lower = [a]
    while True:
        e = lower[-1]
        w = width_in_sigma * float(mass_resolution(e - 0.5 * width_in_sigma * float(mass_resolution(e, resolution)), resolution))
        if e - w <= lo:
            break
        lower.append(e - w)
    if len(lower) > 1 and lower[-1] - lo < 0.5 * width_in_sigma * float(mass_resolution(lower[-1], resolution)):
        lower.pop()
    lower.append(lo)
    centre = 0.5 * (a + b)
    n_sr = max(1, int(round((b - a) / (width_in_sigma * float(mass_resolution(centre, resolution))))))
    sr_edges = np.linspace(a, b, n_sr + 1)
    edges = np.concatenate([np.asarray(lower[::-1]), sr_edges[1:-1], upper])
    first = len(lower) - 1
    return edges, slice(first, first + n_sr)


def sr_mask(edges: np.ndarray, sr: tuple[float, float]) -> np.ndarray:
    """Boolean mask of the bins lying inside ``sr`` (a bin counts when its centre is inside)."""
    centres = 0.5 * (edges[1:] + edges[:-1])
    return (centres > sr[0]) & (centres < sr[1])


def histogram(mjj: np.ndarray, edges: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Counts of ``mjj`` in ``edges`` (weighted when ``weights`` is given)."""
    counts, _ = np.histogram(np.asarray(mjj), bins=edges, weights=weights)
    return counts.astype(float)
