"""Binned Poisson-likelihood fits of the dijet functions with iminuit.

:func:`fit_spectrum` fits one function; ``mask`` restricts the likelihood to some bins, which is how the
sideband fit excludes the signal region. The result carries the fit-quality figures (χ²/ndf, Poisson
deviance, pulls) and the propagated uncertainty of the prediction in every bin.

>>> from lhcad.stats.functions import DijetFunction
>>> edges = np.linspace(2000, 6000, 21)
>>> truth = DijetFunction(3).expected([5e4, 10.0, 5.0], edges)
>>> res = fit_spectrum(np.round(truth), edges, npar=3)
>>> res.valid and bool(abs(res.params[1] - 10.0) < 0.5)
True
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from iminuit import Minuit

from lhcad.stats.functions import SQRT_S, DijetFunction


@dataclass
class FitResult:
    """Outcome of one dijet fit (all arrays are per bin of ``edges``)."""

    npar: int
    params: np.ndarray
    errors: np.ndarray
    cov: np.ndarray
    valid: bool
    nll: float
    edges: np.ndarray
    counts: np.ndarray
    mask: np.ndarray
    expected: np.ndarray
    expected_cov: np.ndarray = field(repr=False)
    sqrt_s: float = SQRT_S

    @property
    def fit_bins(self) -> int:
        return int(self.mask.sum())

    @property
    def ndf(self) -> int:
        return self.fit_bins - self.npar

    @property
    def chi2(self) -> float:
        """Pearson χ² over the fitted bins."""
        n, mu = self.counts[self.mask], self.expected[self.mask]
        return float(((n - mu) ** 2 / np.maximum(mu, 1e-12)).sum())

    @property
    def deviance(self) -> float:
        """Poisson deviance (−2 ln of the likelihood ratio to the saturated model) over the fitted bins."""
        n, mu = self.counts[self.mask], np.maximum(self.expected[self.mask], 1e-300)
        with np.errstate(divide="ignore", invalid="ignore"):
            term = np.where(n > 0, n * np.log(n / mu), 0.0)
        return float(2.0 * (mu - n + term).sum())

    @property
    def pulls(self) -> np.ndarray:
        """(observed − expected)/√expected in every bin (SR bins included: they show the excess)."""
        return (self.counts - self.expected) / np.sqrt(np.maximum(self.expected, 1e-12))

    @property
    def expected_error(self) -> np.ndarray:
        return np.sqrt(np.clip(np.diag(self.expected_cov), 0.0, None))

    @property
    def function(self) -> DijetFunction:
        return DijetFunction(self.npar, self.sqrt_s)

    def predict(self, edges: np.ndarray) -> np.ndarray:
        """Expected counts of the fitted function in arbitrary bins ``edges``."""
        f = self.function
        return f.p0(self.params, self.edges, self.mask) * f.shape_integrals(self.params[1:], edges)

    def summary(self) -> dict:
        """JSON-able fit figures."""
        f = self.function
        return {
            "npar": self.npar,
            "valid": bool(self.valid),
            "params": dict(zip(f.names, map(float, self.params))),
            "errors": dict(zip(f.names, map(float, self.errors))),
            "p0": f.p0(self.params, self.edges, self.mask),
            "chi2": self.chi2,
            "deviance": self.deviance,
            "ndf": self.ndf,
            "chi2_ndf": self.chi2 / max(self.ndf, 1),
            "fit_bins": self.fit_bins,
        }


class _PoissonNLL:
    """Binned Poisson negative log-likelihood (up to a constant) with its analytic gradient.

    Minuit works on decorrelated shape parameters q with p = M q: the basis terms ln(1-x), ln x, ln² x,
    ... are strongly correlated over the m_jj range (|ρ| > 0.99 between p2 and p3), which makes Hesse
    unstable. M whitens the count-weighted covariance of the basis terms over the fitted bins (constant
    offsets of ln f are absorbed by the normalisation), so the parameters Minuit sees are nearly
    independent; the map back to p is linear and exact, errors included.
    """

    errordef = Minuit.LIKELIHOOD

    def __init__(self, func: DijetFunction, counts: np.ndarray, edges: np.ndarray, mask: np.ndarray):
        self.func, self.edges = func, edges
        self.n = counts[mask]
        self.mask = mask
        self.lo, self.hi = edges[:-1][mask], edges[1:][mask]  # quadrature over the fitted bins only
        # subtract the saturated-model value so the NLL is O(n_bins): keeps Minuit's EDM precise
        self._const = float(np.where(self.n > 0, self.n * np.log(np.maximum(self.n, 1e-300)) - self.n, 0.0).sum())
        phi = func.basis(0.5 * (self.lo + self.hi) / func.sqrt_s)
        w = np.maximum(self.n, 1.0)
        centred = phi - np.average(phi, axis=0, weights=w)
        cov = (centred * w[:, None]).T @ centred / w.sum()
        chol = np.linalg.cholesky(cov + 1e-12 * np.trace(cov) * np.eye(cov.shape[0]))
        self.M = np.linalg.inv(chol).T  # p = M q

    def to_p(self, theta):
        theta = np.asarray(theta, dtype=float)
        return np.concatenate([theta[:1], self.M @ theta[1:]])

    def to_theta(self, params):
        params = np.asarray(params, dtype=float)
        return np.concatenate([params[:1], np.linalg.solve(self.M, params[1:])])

    def __call__(self, theta):
        params = self.to_p(theta)
        with np.errstate(all="ignore"):
            s = self.func.bin_integrals(params[1:], self.lo, self.hi)
            mu = params[0] * s / s.sum()
        if not np.all(np.isfinite(mu)) or np.any(mu <= 0):
            return 1e300
        return float((mu - self.n * np.log(mu)).sum() + self._const)

    def grad(self, theta):
        params = self.to_p(theta)
        with np.errstate(all="ignore"):
            s, ds = self.func.bin_integrals(params[1:], self.lo, self.hi, with_grad=True)
            total = s.sum()
            frac = s / total
            mu = params[0] * frac
            dl_dmu = 1.0 - self.n / np.maximum(mu, 1e-300)
            d_norm = float((dl_dmu * frac).sum())
            dmu_dp = params[0] * (ds / total - s[:, None] * ds.sum(axis=0)[None, :] / total**2)
            g = np.concatenate([[d_norm], self.M.T @ (dl_dmu @ dmu_dp)])
        return np.where(np.isfinite(g), g, 0.0)


def _prediction_cov(func: DijetFunction, params, cov, edges, mask) -> np.ndarray:
    """Covariance of the expected counts in every bin (linear propagation, numerical Jacobian)."""
    p = np.asarray(params, dtype=float)
    base = func.expected(p, edges, mask)
    jac = np.empty((base.size, p.size))
    for k in range(p.size):
        h = 1e-6 * max(abs(p[k]), 1e-3)
        up, dn = p.copy(), p.copy()
        up[k] += h
        dn[k] -= h
        jac[:, k] = (func.expected(up, edges, mask) - func.expected(dn, edges, mask)) / (2 * h)
    return jac @ cov @ jac.T


def fit_spectrum(
    counts: np.ndarray,
    edges: np.ndarray,
    npar: int = 4,
    mask: np.ndarray | None = None,
    sqrt_s: float = SQRT_S,
    start: np.ndarray | None = None,
) -> FitResult:
    """Fit the ``npar``-parameter dijet function to binned ``counts`` by Poisson maximum likelihood.

    ``mask`` (boolean per bin) selects the bins in the likelihood, e.g. ``~sr_mask(edges, sr)`` for a
    sideband fit; the prediction is still returned for every bin.
    """
    counts = np.asarray(counts, dtype=float)
    edges = np.asarray(edges, dtype=float)
    if counts.size != edges.size - 1:
        raise ValueError(f"{counts.size} counts for {edges.size - 1} bins")
    mask = np.ones(counts.size, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    if mask.sum() <= npar:
        raise ValueError(f"{int(mask.sum())} fitted bins are too few for a {npar}-parameter fit")
    if counts[mask].sum() <= 0:
        raise ValueError("no events in the fitted bins")
    func = DijetFunction(npar, sqrt_s)
    nll = _PoissonNLL(func, counts, edges, mask)
    p_start = func.initial_guess(counts, edges, mask) if start is None else np.asarray(start, dtype=float)
    if not np.all(np.isfinite(p_start)) or not nll(nll.to_theta(p_start)) < 1e299:
        p_start = np.concatenate([[counts[mask].sum()], [10.0, 5.0, 0.0, 0.0][: npar - 1]])
    m = Minuit(nll, nll.to_theta(p_start), grad=nll.grad, name=("norm",) + tuple(f"q{i}" for i in range(1, npar)))
    m.limits["norm"] = (1e-9, None)
    m.strategy = 1
    m.migrad()
    m.hesse()
    if not m.valid:
        m.migrad()  # a second pass starting from the Hesse matrix usually converges
        m.hesse()
    params = nll.to_p(np.asarray(m.values, dtype=float))
    jac = np.eye(npar)
    jac[1:, 1:] = nll.M
    if m.covariance is not None:
        cov = jac @ np.asarray(m.covariance, dtype=float) @ jac.T
    else:
        cov = np.full((npar, npar), np.nan)
    errors = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    # a fit that failed can end where the function diverges in bins it does not constrain (the masked
    # signal region): its prediction overflows there, and it does not count as a valid fit
    with np.errstate(invalid="ignore"):
        expected = func.expected(params, edges, mask)
    finite = bool(np.all(np.isfinite(expected)))
    exp_cov = (_prediction_cov(func, params, cov, edges, mask) if finite and np.all(np.isfinite(cov))
               else np.zeros((counts.size,) * 2))
    return FitResult(
        npar=npar, params=params, errors=errors, cov=cov, valid=bool(m.valid) and finite, nll=float(m.fval),
        edges=edges, counts=counts, mask=mask, expected=expected, expected_cov=exp_cov, sqrt_s=sqrt_s,
    )
