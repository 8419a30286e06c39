"""Global significance of the most significant window with pyBumpHunter (look-elsewhere effect).

BumpHunter compares the data histogram with the background estimate in every window of the scan and
calibrates the smallest local p-value with Poisson pseudo-experiments drawn from the background. With
``npe`` pseudo-experiments a global p-value below 1/npe cannot be resolved: the significance is then
only a lower bound, ``Φ⁻¹(1 − 1/npe)`` (the *cap*), and the result says so (``capped``).

>>> bins = np.linspace(3000, 4200, 13)
>>> bkg = np.full(12, 1000.0)
>>> res = global_significance(bkg.copy(), bkg, bins, window_bins=4, npe=200, seed=1)
>>> res["global_p_value"] > 0.05, round(res["significance_cap"], 3)
(True, 2.576)
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
from scipy.stats import norm


def global_significance(
    data: np.ndarray,
    background: np.ndarray,
    edges: np.ndarray,
    window_bins: int,
    npe: int = 1000,
    seed: int = 0,
    scan_step: int = 1,
) -> dict:
    """Global p-value and significance of the largest excess among windows of ``window_bins`` bins.

    ``background`` is the background expectation *normalised to the data* (e.g. a sideband fit);
    pyBumpHunter receives it as a histogram with unit weights.
    """
    from pyBumpHunter import BumpHunter1D

    data = np.asarray(data, dtype=float)
    background = np.asarray(background, dtype=float)
    if npe < 1:
        raise ValueError("the global significance needs at least one pseudo-experiment (stats.toys)")
    bh = BumpHunter1D(
        rang=(float(edges[0]), float(edges[-1])), bins=np.asarray(edges, dtype=float), mode="excess",
        width_min=window_bins, width_max=window_bins, width_step=1, scan_step=scan_step,
        npe=npe, nworker=1, seed=seed,
    )
    with contextlib.redirect_stdout(io.StringIO()):  # pyBumpHunter prints its progress
        bh.bump_scan(data, background, is_hist=True)
    cap = float(norm.isf(1.0 / npe))
    p_global = float(bh.global_Pval)
    capped = p_global < 1.0 / npe
    z = cap if capped else float(max(norm.isf(p_global), 0.0)) if p_global < 1 else 0.0
    lo = int(bh.min_loc_ar[0])
    return {
        "global_p_value": p_global,
        "significance": z,
        "capped": bool(capped),
        "significance_cap": cap,
        "npe": int(npe),
        "local_p_value": float(bh.min_Pval_ar[0]),
        "window": [float(edges[lo]), float(edges[lo + int(bh.min_width_ar[0])])],
        "note": (
            f"global significance > {cap:.2f} σ (lower bound: no pseudo-experiment out of {npe} as extreme)"
            if capped else f"resolution limited by {npe} pseudo-experiments (cap {cap:.2f} σ)"
        ),
    }
