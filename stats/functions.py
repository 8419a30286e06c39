"""The CMS dijet fit functions, with x = m_jj/√s.

.. math::

    f_3(x) &= p_0 (1-x)^{p_1} / x^{p_2} \\\\
    f_4(x) &= p_0 (1-x)^{p_1} / x^{p_2 + p_3 \\ln x} \\\\
    f_5(x) &= p_0 (1-x)^{p_1} / x^{p_2 + p_3 \\ln x + p_4 \\ln^2 x}

Expected bin contents are the integrals of f over each bin (Gauss–Legendre quadrature), so wide
resolution bins are handled exactly enough. The normalisation ``p0`` is not fitted directly: fits use the
expected number of events in the fitted bins (``norm``), which is far better conditioned, and
:meth:`DijetFunction.p0` converts back.

>>> f = DijetFunction(4)
>>> edges = np.array([2000.0, 2500.0, 3000.0])
>>> mu = f.expected(np.array([1000.0, 10.0, 5.0, 0.1]), edges)
>>> round(float(mu.sum()), 6)
1000.0
"""

from __future__ import annotations

import numpy as np

SQRT_S = 13000.0
_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(6)
PARAM_NAMES = ("norm", "p1", "p2", "p3", "p4")


class DijetFunction:
    """The ``npar``-parameter dijet function (3, 4 or 5) evaluated on bins of m_jj.

    Parameters are ``(norm, p1, ..., p_{npar-1})`` where ``norm`` is the expected number of events in
    the bins selected by ``mask`` (all bins by default).
    """

    def __init__(self, npar: int, sqrt_s: float = SQRT_S):
        if npar not in (3, 4, 5):
            raise ValueError(f"dijet function with {npar} parameters: choose 3, 4 or 5")
        self.npar = npar
        self.sqrt_s = float(sqrt_s)
        self.names = PARAM_NAMES[:npar]

    # --- quadrature ---------------------------------------------------------------------------
    def basis(self, x: np.ndarray) -> np.ndarray:
        """Terms of ln f that multiply p1..p_{npar-1}: ln(1-x), -ln x, -ln² x, -ln³ x."""
        lx = np.log(x)
        terms = [np.log1p(-x), -lx, -lx**2, -lx**3]
        return np.stack(terms[: self.npar - 1], axis=-1)

    def bin_integrals(self, shape_pars: np.ndarray, lo: np.ndarray, hi: np.ndarray, with_grad: bool = False):
        """∫ f/p0 dx over bins [lo, hi) in GeV; with ``with_grad`` also d/dp1.. (shape (nbins, npar-1))."""
        x_lo = np.asarray(lo, dtype=float)[:, None] / self.sqrt_s
        x_hi = np.asarray(hi, dtype=float)[:, None] / self.sqrt_s
        half = 0.5 * (x_hi - x_lo)
        x = 0.5 * (x_hi + x_lo) + half * _GL_NODES[None, :]
        with np.errstate(over="ignore"):  # parameters where f diverges give inf: callers check finiteness
            wg = half * _GL_WEIGHTS[None, :] * np.exp(self.basis(x) @ np.asarray(shape_pars, dtype=float))
        s = wg.sum(axis=1)
        if not with_grad:
            return s
        return s, (wg[..., None] * self.basis(x)).sum(axis=1)

    def shape_integrals(self, shape_pars: np.ndarray, edges: np.ndarray) -> np.ndarray:
        """∫ f/p0 dx over every bin of ``edges``."""
        edges = np.asarray(edges, dtype=float)
        return self.bin_integrals(shape_pars, edges[:-1], edges[1:])

    # --- public API ---------------------------------------------------------------------------
    def expected(self, params: np.ndarray, edges: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """Expected counts in every bin of ``edges``; ``params[0]`` is the total over ``mask``."""
        params = np.asarray(params, dtype=float)
        s = self.shape_integrals(params[1:], edges)
        total = s.sum() if mask is None else s[mask].sum()
        return params[0] * s / total

    def p0(self, params: np.ndarray, edges: np.ndarray, mask: np.ndarray | None = None) -> float:
        """The conventional normalisation p0 of f (events per unit x) for ``params``."""
        s = self.shape_integrals(np.asarray(params[1:], dtype=float), edges)
        total = s.sum() if mask is None else s[mask].sum()
        with np.errstate(all="ignore"):
            return float(params[0] / total)

    def density(self, params: np.ndarray, m: np.ndarray, edges: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """f at m_jj values ``m`` in events per GeV (for plotting smooth curves)."""
        x = np.asarray(m, dtype=float) / self.sqrt_s
        g = np.exp(self.basis(x) @ np.asarray(params[1:], dtype=float))
        return self.p0(params, edges, mask) * g / self.sqrt_s

    def initial_guess(self, counts: np.ndarray, edges: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """Starting values from a weighted linear fit of ln(counts / bin width) on the basis terms."""
        counts = np.asarray(counts, dtype=float)
        use = counts > 0 if mask is None else (counts > 0) & mask
        if use.sum() < self.npar:
            use = np.ones_like(counts, dtype=bool) if mask is None else mask.copy()
        centres = 0.5 * (edges[1:] + edges[:-1]) / self.sqrt_s
        widths = np.diff(edges) / self.sqrt_s
        y = np.log(np.maximum(counts, 0.5) / widths)
        design = np.column_stack([np.ones_like(centres), self.basis(centres)])
        wt = np.sqrt(np.maximum(counts, 1.0))
        coef, *_ = np.linalg.lstsq(design[use] * wt[use, None], y[use] * wt[use], rcond=None)
        norm = counts.sum() if mask is None else counts[mask].sum()
        return np.concatenate([[max(norm, 1.0)], coef[1:]])
