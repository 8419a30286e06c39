"""Choice of the dijet function by Fisher's F-test between nested fits.

Starting from the 3-parameter function, the next function is accepted while the F-test says that its
extra parameter improves the fit significantly (p-value below ``alpha``, 0.05 by default). The fit
quality measure is the Poisson deviance (the likelihood-ratio χ²).

>>> from lhcad.stats.functions import DijetFunction
>>> edges = np.linspace(2000, 6000, 31)
>>> mu = DijetFunction(4).expected([2e5, 12.0, 4.0, 0.8], edges)
>>> choice = choose_function(np.round(mu), edges)
>>> choice.best.npar
4
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as _st

from lhcad.stats.fit import FitResult, fit_spectrum
from lhcad.stats.functions import SQRT_S


def f_test(simple: FitResult, complex_: FitResult) -> tuple[float, float]:
    """F statistic and p-value that ``complex_`` (more parameters) improves on ``simple``."""
    d1, d2 = simple.deviance, complex_.deviance
    k = complex_.npar - simple.npar
    ndf2 = complex_.ndf
    if k <= 0 or ndf2 <= 0:
        raise ValueError("F-test needs nested fits with more parameters in the second and ndf > 0")
    if d2 <= 0:
        return np.inf, 0.0
    f_stat = max((d1 - d2) / k, 0.0) / (d2 / ndf2)
    return float(f_stat), float(_st.f.sf(f_stat, k, ndf2))


@dataclass
class FunctionChoice:
    """Every fit that was tried, the F-test p-values between neighbours and the chosen fit."""

    fits: dict[int, FitResult]
    p_values: dict[str, float]
    best: FitResult
    alpha: float

    def summary(self) -> dict:
        return {
            "chosen_npar": self.best.npar,
            "alpha": self.alpha,
            "f_test_p_values": self.p_values,
            "fits": {str(k): v.summary() for k, v in self.fits.items()},
        }


def choose_function(
    counts: np.ndarray,
    edges: np.ndarray,
    mask: np.ndarray | None = None,
    npars: Sequence[int] = (3, 4, 5),
    alpha: float = 0.05,
    sqrt_s: float = SQRT_S,
) -> FunctionChoice:
    """Fit the functions in ``npars`` (increasing) and pick one by successive F-tests at level ``alpha``.

    A more complex function is only considered when its fit converged; when its fit ends above the
    simpler function's minimum (impossible for nested functions) it is restarted from that optimum.
    """
    npars = sorted(npars)
    fits: dict[int, FitResult] = {}
    p_values: dict[str, float] = {}
    best = None
    for k in npars:
        try:
            res = fit_spectrum(counts, edges, k, mask=mask, sqrt_s=sqrt_s)
            prev = fits.get(max(fits)) if fits else None
            if prev is not None and (not res.valid or res.nll > prev.nll + 1e-3):
                # a nested function cannot fit worse: restart from the previous optimum (+ 0)
                nested = fit_spectrum(counts, edges, k, mask=mask, sqrt_s=sqrt_s, start=np.append(prev.params, 0.0))
                if nested.valid and (not res.valid or nested.nll < res.nll):
                    res = nested
        except ValueError:
            break  # too few bins for this many parameters
        fits[k] = res
        if best is None:
            best = res
            continue
        if not res.valid:
            break
        _, p = f_test(best, res)
        p_values[f"{best.npar}vs{k}"] = p
        if p < alpha:
            best = res
        else:
            break
    if best is None:
        raise ValueError("no dijet function could be fitted")
    return FunctionChoice(fits=fits, p_values=p_values, best=best, alpha=alpha)
