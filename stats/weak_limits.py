"""Limits for weakly supervised selections (the CMS / TagNTrain procedure).

A weakly supervised classifier (CWoLa, CATHODE, ...) learns the signal only if enough of it is in the
data, so its signal efficiency ε_sig depends on the injected cross section σ_inj. The classical limit
for a fixed selection, σ_excl(ε_sig) = N_up / (L · A · ε_sig), then has to be read *at the efficiency
the method reaches at that cross section*: a signal is excluded for every σ with

.. math:: σ ≥ σ_{excl}(ε_{sig}(σ)),

and the quoted limit is the smallest such σ. The models stage measures ε_sig(σ_inj) by re-training at
several injected amounts (distributed jobs); this module takes those measurements (or any callable)
and solves the inequality, interpolating between measured points in log σ.

>>> eps = lambda s: 0.5 * s / (s + 10.0)            # efficiency saturating at 0.5
>>> excl = lambda e: 2.0 / e                        # N_up / (L · A) = 2 fb
>>> round(weak_supervision_limit(eps, excl, (0.1, 1000.0))["limit"], 4)   # analytic: (2 + √(4 + 40))/1
8.6332
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy.optimize import brentq


def efficiency_curve(sigmas: Sequence[float], efficiencies: Sequence[float]) -> Callable[[float], float]:
    """ε_sig(σ) interpolated linearly in log σ between measurements (constant beyond the ends)."""
    s = np.asarray(sigmas, dtype=float)
    e = np.asarray(efficiencies, dtype=float)
    if s.size < 2 or s.size != e.size:
        raise ValueError("need at least two (σ_inj, ε_sig) measurements of equal length")
    if np.any(s <= 0) or np.any(e < 0):
        raise ValueError("injected cross sections must be > 0 and efficiencies ≥ 0")
    order = np.argsort(s)
    ls, e = np.log(s[order]), e[order]
    return lambda sigma: float(np.interp(np.log(sigma), ls, e))


def excluded_xs(n_up: float, luminosity: float, acceptance: float = 1.0) -> Callable[[float], float]:
    """σ_excl(ε) = N_up / (L · A · ε): the cross section excluded by an upper limit of ``n_up`` signal
    events after a selection of signal efficiency ε (∞ for ε = 0)."""
    return lambda eps: np.inf if eps <= 0 else float(n_up / (luminosity * acceptance * eps))


def weak_supervision_limit(
    efficiency: Callable[[float], float] | tuple[Sequence[float], Sequence[float]],
    excluded: Callable[[float], float],
    sigma_range: tuple[float, float] | None = None,
    n_scan: int = 400,
) -> dict:
    """Smallest σ with σ ≥ σ_excl(ε_sig(σ)).

    ``efficiency``: a callable ε_sig(σ) or measured ``(sigmas, efficiencies)``; ``excluded``: the
    fixed-selection limit σ_excl(ε). ``sigma_range`` defaults to the measured range. Returns the limit
    (``inf`` when nothing in the range is excluded), the efficiency there, and the scanned curve.
    """
    if not callable(efficiency):
        sig, eff = efficiency
        if sigma_range is None:
            sigma_range = (float(np.min(sig)), float(np.max(sig)))
        efficiency = efficiency_curve(sig, eff)
    if sigma_range is None:
        raise ValueError("sigma_range is needed when the efficiency is a callable")
    lo, hi = sigma_range
    grid = np.geomspace(lo, hi, n_scan)
    gap = np.array([s - excluded(efficiency(s)) for s in grid])  # ≥ 0 where excluded
    ok = np.flatnonzero(gap >= 0)
    curve = {"sigma": grid.tolist(), "sigma_excluded": [float(excluded(efficiency(s))) for s in grid]}
    if ok.size == 0:
        return {"limit": float("inf"), "efficiency": None, "excluded_anywhere": False, "curve": curve}
    i = int(ok[0])
    if i == 0:
        limit = float(grid[0])
    else:
        f = lambda ls: np.exp(ls) - excluded(efficiency(np.exp(ls)))  # noqa: E731
        limit = float(np.exp(brentq(f, np.log(grid[i - 1]), np.log(grid[i]), xtol=1e-12)))
    return {
        "limit": limit,
        "efficiency": float(efficiency(limit)),
        "excluded_anywhere": True,
        "at_range_edge": i == 0,
        "curve": curve,
    }
