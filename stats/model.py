"""pyhf models of the signal region: signal template + fitted background with its fit uncertainty.

The background prediction of the dijet fit has a covariance matrix (propagated from the fit). It enters
the likelihood as nuisance parameters: the covariance is diagonalised and every eigen-direction with a
non-negligible eigenvalue becomes one ``histosys`` modifier (Gaussian-constrained shift ±√λ along the
eigenvector), which reproduces the full correlated Gaussian uncertainty.

>>> m = build_model([1.0, 2.0], [100.0, 50.0], np.diag([25.0, 4.0]))
>>> m.config.poi_name, m.config.npars
('mu', 3)
"""

from __future__ import annotations

import numpy as np
import pyhf


def _patch_pyhf_percentile() -> None:
    """Work-around: pyhf 0.7.6's numpy backend calls ``np.percentile(..., interpolation=...)``, a keyword
    NumPy 2.4 removed (renamed ``method`` in 1.22). Toy-based expected CLs bands go through it, so route
    the keyword to ``method`` (same meaning). Remove once pyhf > 0.7.6 is required."""
    import importlib

    cls = importlib.import_module("pyhf.tensor.numpy_backend").numpy_backend
    if getattr(cls.percentile, "_lhcad_patched", False):
        return

    def percentile(self, tensor_in, q, axis=None, interpolation="linear"):
        return np.percentile(tensor_in, q, axis=axis, method=interpolation)

    percentile._lhcad_patched = True
    cls.percentile = percentile


def use_minuit() -> None:
    """Select pyhf's numpy backend with the Minuit optimizer (≈5× faster than scipy for scans)."""
    _patch_pyhf_percentile()
    if not isinstance(pyhf.optimizer, pyhf.optimize.minuit_optimizer) or pyhf.tensorlib.name != "numpy":
        # maxiter bounds the rare fit that wanders towards a vanishing prediction (default: 100000 calls)
        pyhf.set_backend("numpy", pyhf.optimize.minuit_optimizer(tolerance=0.01, maxiter=5000))


def background_modifiers(background: np.ndarray, cov: np.ndarray | None, rel_cut: float = 1e-3) -> list[dict]:
    """``histosys`` modifiers, one per significant eigen-direction of the background covariance."""
    if cov is None:
        cov = np.zeros((len(background), len(background)))
    b = np.asarray(background, dtype=float)
    cov = 0.5 * (np.asarray(cov, dtype=float) + np.asarray(cov, dtype=float).T)
    vals, vecs = np.linalg.eigh(cov)
    if vals.max(initial=0.0) <= 0:
        # no fit uncertainty: keep one negligible nuisance, since pyhf's Minuit fits fail when the
        # POI is the only parameter and it is fixed (no Hesse matrix)
        return [{"name": "bkg_fit_0", "type": "normsys", "data": {"hi": 1 + 1e-9, "lo": 1 - 1e-9}}]
    mods = []
    for i in np.argsort(vals)[::-1]:
        if vals[i] <= rel_cut * vals.max():
            continue
        shift = np.sqrt(vals[i]) * vecs[:, i]
        hi = np.maximum(b + shift, 1e-6 * b + 1e-9)
        lo = np.maximum(b - shift, 1e-6 * b + 1e-9)
        mods.append({"name": f"bkg_fit_{len(mods)}", "type": "histosys", "data": {"hi_data": hi.tolist(), "lo_data": lo.tolist()}})
    return mods


def build_model(
    signal: np.ndarray,
    background: np.ndarray,
    background_cov: np.ndarray | None = None,
    poi_bounds: tuple[float, float] | None = None,
) -> pyhf.pdf.Model:
    """A one-channel pyhf model: ``mu × signal + background`` with the fit uncertainty as nuisances."""
    signal = np.asarray(signal, dtype=float)
    background = np.asarray(background, dtype=float)
    if signal.shape != background.shape:
        raise ValueError(f"signal {signal.shape} and background {background.shape} differ in shape")
    if np.any(background <= 0):
        raise ValueError("background prediction must be positive in every bin")
    spec = {
        "channels": [
            {
                "name": "sr",
                "samples": [
                    {"name": "signal", "data": signal.tolist(),
                     "modifiers": [{"name": "mu", "type": "normfactor", "data": None}]},
                    {"name": "background", "data": background.tolist(),
                     "modifiers": background_modifiers(background, background_cov)},
                ],
            }
        ]
    }
    model = pyhf.Model(spec, poi_name="mu", validate=False)
    if poi_bounds is not None:
        model.config.par_map["mu"]["paramset"].suggested_bounds = [tuple(poi_bounds)]
    return model


def data_vector(model: pyhf.pdf.Model, counts: np.ndarray) -> np.ndarray:
    """Observed counts followed by the auxiliary data of the model."""
    return np.concatenate([np.asarray(counts, dtype=float), np.asarray(model.config.auxdata, dtype=float)])


def gaussian_template(edges: np.ndarray, mass: float, sigma: float) -> np.ndarray:
    """Fraction of a Gaussian(mass, sigma) signal in each bin (sums to < 1 when tails leave the range)."""
    from scipy.stats import norm

    return np.diff(norm.cdf(np.asarray(edges, dtype=float), loc=mass, scale=sigma))
