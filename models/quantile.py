"""Decorrelate an anomaly score from the resonant mass by quantile regression (the VAE-QR "QR" step).

:class:`QuantileDecorrelator` fits, for a grid of quantile levels τ_k, smooth curves Q_τk(m) of the
score's conditional quantiles given m_jj (a polynomial in the scaled m_jj per level, fitted by
minimising the pinball loss; levels are sorted per event so the curves never cross). The decorrelated
score maps a raw score y at mass m to its estimated conditional quantile level:

* between two curves, linear interpolation of τ between Q_τk(m) and Q_τk+1(m);
* above the top curve, ``τ_top + (1 - τ_top)(1 - exp(-(y - Q_top)/d))`` (d = the last curve spacing),
* below the lowest curve, ``τ_0 exp((y - Q_0)/d)``,

so "decorrelated score > τ_k" is exactly "raw score above the fitted τ_k quantile at this m_jj" (the
CMS VAE-QR selection), and the score stays a continuous ranking beyond the top quantile. On
background-only data the selected fraction at every τ_k is then flat in m_jj up to statistical
fluctuations (:func:`flatness_chi2` tests this).

The linear quantile regression is solved with torch (full-batch Adam on the convex pinball loss):
scikit-learn's ``QuantileRegressor`` (an LP) needs ≈ 40 s for 20 000 rows and one level on this
machine, torch a fraction of a second for all levels.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> m = rng.uniform(2000, 5000, 20000); y = np.exp(m / 2000 + rng.normal(size=20000))
>>> qr = QuantileDecorrelator(quantiles=(0.5, 0.9), degree=1).fit(y, m)
>>> s = qr.transform(y, m)
>>> bool(abs((s[m < 3000] > 0.9).mean() - 0.1) < 0.02 and abs((s[m > 4000] > 0.9).mean() - 0.1) < 0.02)
True
"""

from __future__ import annotations

import numpy as np

from lhcad.models.base import Estimator


def flatness_chi2(selected: np.ndarray, m: np.ndarray, edges) -> dict:
    """χ² test that the selected fraction is constant across the ``m`` bins ``edges``.

    Returns ``{"chi2", "ndf", "p_value", "fraction", "fractions", "errors", "counts"}`` (binomial
    errors; the constant is the pooled fraction, so ndf = bins − 1).
    """
    from scipy.stats import chi2 as _chi2

    selected = np.asarray(selected, bool)
    m = np.asarray(m, dtype=np.float64)
    idx = np.digitize(m, edges) - 1
    ok = (idx >= 0) & (idx < len(edges) - 1)
    n = np.bincount(idx[ok], minlength=len(edges) - 1).astype(float)
    k = np.bincount(idx[ok], weights=selected[ok].astype(float), minlength=len(edges) - 1)
    if np.any(n == 0):
        raise ValueError(f"flatness_chi2: empty m bin(s) {np.flatnonzero(n == 0).tolist()} for edges {list(edges)}")
    p = k.sum() / n.sum()
    if not 0 < p < 1:
        raise ValueError(f"flatness_chi2: pooled selected fraction is {p}; nothing to test")
    chi2 = float((((k - n * p) ** 2) / (n * p * (1 - p))).sum())
    ndf = len(n) - 1
    frac = k / n
    return {"chi2": chi2, "ndf": ndf, "p_value": float(_chi2.sf(chi2, ndf)), "fraction": float(p),
            "fractions": frac.tolist(), "errors": np.sqrt(p * (1 - p) / n).tolist(), "counts": n.tolist()}


class QuantileDecorrelator(Estimator):
    """Conditional-quantile map of a score given m_jj (see module doc).

    Parameters
    ----------
    quantiles : increasing levels τ_k in (0, 1) (at least 2); degree : polynomial degree in m_jj;
    log_score : regress log(score) (for positive losses; the map is unchanged, only the fit is better
    conditioned); max_events : subsample for the fit; steps, lr : optimiser; random_state : seed.
    """

    def __init__(self, quantiles: tuple[float, ...] = (0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99),
                 degree: int = 2, log_score: bool = True, max_events: int = 50_000,
                 steps: int = 200, lr: float = 0.05, random_state: int = 0):
        self.quantiles = quantiles
        self.degree = degree
        self.log_score = log_score
        self.max_events = max_events
        self.steps = steps
        self.lr = lr
        self.random_state = random_state

    # ------------------------------------------------------------------ helpers
    def _y(self, y) -> np.ndarray:
        y = np.asarray(y, dtype=np.float64)
        if self.log_score:
            if np.any(y <= 0):
                raise ValueError("QuantileDecorrelator(log_score=True) needs positive scores; "
                                 f"got min {y.min():.3g}")
            y = np.log(y)
        return (y - self.y_mean_) / self.y_std_

    def _design(self, m) -> np.ndarray:
        x = (np.asarray(m, dtype=np.float64) - self.m_center_) / self.m_half_
        return np.column_stack([x ** p for p in range(self.degree + 1)])

    # ------------------------------------------------------------------ estimator API
    def fit(self, y, m) -> QuantileDecorrelator:
        """Fit the quantile curves of ``y`` (raw scores) given ``m`` (resonant mass)."""
        import torch

        taus = np.asarray(self.quantiles, dtype=np.float64)
        if len(taus) < 2 or np.any(np.diff(taus) <= 0) or taus[0] <= 0 or taus[-1] >= 1:
            raise ValueError(f"quantiles must be ≥ 2 increasing levels in (0, 1); got {self.quantiles}")
        y = np.asarray(y, dtype=np.float64)
        m = np.asarray(m, dtype=np.float64)
        ok = np.isfinite(y) & np.isfinite(m)
        y, m = y[ok], m[ok]
        if len(y) < 10 * len(taus):
            raise ValueError(f"QuantileDecorrelator.fit: only {len(y)} finite rows")
        rng = np.random.default_rng(self.random_state)
        if len(y) > self.max_events:
            keep = rng.choice(len(y), self.max_events, replace=False)
            y, m = y[keep], m[keep]
        self.m_center_ = float((m.max() + m.min()) / 2)
        self.m_half_ = float(max((m.max() - m.min()) / 2, 1e-12))
        if self.log_score and np.any(y <= 0):
            raise ValueError(f"QuantileDecorrelator(log_score=True) needs positive scores; got min {y.min():.3g}")
        ly = np.log(y) if self.log_score else y
        self.y_mean_, self.y_std_ = float(ly.mean()), float(ly.std() or 1.0)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)    # a few parameters: extra threads only add contention
        try:
            self._optimise(torch, taus, y, m)
        finally:
            torch.set_num_threads(threads)
        self.fitted_ = True
        return self

    def _optimise(self, torch, taus, y, m) -> None:
        yt = torch.as_tensor(self._y(y), dtype=torch.float64)
        X = torch.as_tensor(self._design(m), dtype=torch.float64)
        tau = torch.as_tensor(taus, dtype=torch.float64)
        beta = torch.zeros((X.shape[1], len(taus)), dtype=torch.float64)
        beta[0] = torch.quantile(yt, tau)
        beta.requires_grad_(True)
        opt = torch.optim.Adam([beta], lr=self.lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, self.steps)
        for _ in range(self.steps):
            r = yt[:, None] - X @ beta                       # (n, K) residuals
            loss = torch.maximum(tau * r, (tau - 1) * r).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        self.coef_ = beta.detach().numpy().copy()
        self.pinball_ = float(loss.detach())

    def predict_quantiles(self, m) -> np.ndarray:
        """(n, K) fitted quantile curves at ``m`` in the standardised (log-)score space, non-crossing."""
        self._check_fitted()
        return np.sort(self._design(m) @ self.coef_, axis=1)

    def threshold(self, m, level: float) -> np.ndarray:
        """The raw-score threshold of quantile ``level`` (one of ``quantiles``) at each ``m``."""
        k = list(np.round(self.quantiles, 12)).index(round(level, 12))
        t = self.predict_quantiles(m)[:, k] * self.y_std_ + self.y_mean_
        return np.exp(t) if self.log_score else t

    def transform(self, y, m) -> np.ndarray:
        """Decorrelated score in (0, 1): the estimated conditional quantile level of ``y`` at ``m``."""
        self._check_fitted()
        taus = np.asarray(self.quantiles, dtype=np.float64)
        y = self._y(y)
        Q = self.predict_quantiles(m)
        K = len(taus)
        out = np.empty(len(y))
        k = (y[:, None] >= Q).sum(axis=1)                  # number of curves below y
        rows = np.arange(len(y))
        low = k == 0
        d0 = np.maximum(Q[:, 1] - Q[:, 0], 1e-9)
        out[low] = taus[0] * np.exp((y[low] - Q[low, 0]) / d0[low])
        high = k == K
        dt = np.maximum(Q[:, -1] - Q[:, -2], 1e-9)
        out[high] = taus[-1] + (1 - taus[-1]) * -np.expm1(-(y[high] - Q[high, -1]) / dt[high])
        mid = ~(low | high)
        i = k[mid] - 1
        r = rows[mid]
        gap = np.maximum(Q[r, i + 1] - Q[r, i], 1e-12)
        out[mid] = taus[i] + (taus[i + 1] - taus[i]) * np.clip((y[mid] - Q[r, i]) / gap, 0, 1)
        return out

    def _get_state(self) -> dict:
        return {"coef": self.coef_, "m": (self.m_center_, self.m_half_), "y": (self.y_mean_, self.y_std_),
                "pinball": self.pinball_}

    def _set_state(self, state: dict) -> None:
        self.coef_ = np.asarray(state["coef"])
        self.m_center_, self.m_half_ = state["m"]
        self.y_mean_, self.y_std_ = state["y"]
        self.pinball_ = state.get("pinball", float("nan"))
