"""Logit + standard scaling with its log-Jacobian, so flow densities stay densities in feature space.

Each feature x in a box ``[lo, hi]`` is mapped to ``u = (x - lo) / (hi - lo)``, then
``y = log(u / (1 - u))`` and ``z = (y - mean) / std``. Flows model ``p_z``; the density of the
original features is ``p_x(x) = p_z(z(x)) · |dz/dx|`` with

    log|dz/dx| = Σ_i [ -log(hi_i - lo_i) - log u_i - log(1 - u_i) - log std_i ].

The box is the data range widened by ``margin`` of its width on each side (or given explicitly, e.g.
from the whole table, so that signal-region events stay inside a sideband-fitted box). Values outside
the box are clipped to it (and counted in ``n_clipped_``).

>>> import numpy as np
>>> x = np.random.default_rng(0).normal(size=(1000, 2))
>>> pre = LogitScaler().fit(x)
>>> np.allclose(pre.inverse_transform(pre.transform(x)), x)
True
"""

from __future__ import annotations

import numpy as np

from lhcad.models.base import Estimator

_EPS = 1e-6


class LogitScaler(Estimator):
    """Logit transform inside a per-feature box, then standard scaling; tracks ``log|dz/dx|``.

    Parameters
    ----------
    margin : fraction of each feature's range added on both sides of the fitted box.
    """

    def __init__(self, margin: float = 0.02):
        self.margin = margin

    # ------------------------------------------------------------------ fit / transform
    def fit(self, X, bounds: tuple[np.ndarray, np.ndarray] | None = None) -> LogitScaler:
        """Learn the box (unless ``bounds=(lo, hi)`` is given) and the logit-space mean/std."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or len(X) < 2:
            raise ValueError(f"LogitScaler.fit needs a 2-D array with ≥ 2 rows, got shape {X.shape}")
        if bounds is None:
            lo, hi = X.min(axis=0), X.max(axis=0)
            width = np.where(hi > lo, hi - lo, 1.0)
            lo, hi = lo - self.margin * width, hi + self.margin * width
        else:
            lo, hi = (np.asarray(b, dtype=np.float64) for b in bounds)
        if np.any(hi <= lo):
            raise ValueError(f"LogitScaler: empty box lo={lo} hi={hi}")
        self.lo_, self.hi_ = lo, hi
        y = self._logit(X)
        self.mean_ = y.mean(axis=0)
        self.std_ = np.where(y.std(axis=0) > 0, y.std(axis=0), 1.0)
        self.n_clipped_ = 0
        self.fitted_ = True
        return self

    def _unit(self, X: np.ndarray) -> np.ndarray:
        u = (X - self.lo_) / (self.hi_ - self.lo_)
        outside = (u < _EPS) | (u > 1 - _EPS)
        self.n_clipped_ = int(outside.any(axis=1).sum())
        return np.clip(u, _EPS, 1 - _EPS)

    def _logit(self, X: np.ndarray) -> np.ndarray:
        u = self._unit(X)
        return np.log(u) - np.log1p(-u)

    def transform(self, X) -> np.ndarray:
        """Features → scaled logit space (float64)."""
        self._check_fitted()
        return (self._logit(np.asarray(X, dtype=np.float64)) - self.mean_) / self.std_

    def inverse_transform(self, Z) -> np.ndarray:
        """Scaled logit space → features."""
        self._check_fitted()
        y = np.asarray(Z, dtype=np.float64) * self.std_ + self.mean_
        u = 1.0 / (1.0 + np.exp(-y))
        return self.lo_ + u * (self.hi_ - self.lo_)

    def log_abs_det_jacobian(self, X) -> np.ndarray:
        """``log|dz/dx|`` per row (summed over features)."""
        self._check_fitted()
        u = self._unit(np.asarray(X, dtype=np.float64))
        terms = -np.log(self.hi_ - self.lo_) - np.log(u) - np.log1p(-u) - np.log(self.std_)
        return terms.sum(axis=1)

    def in_box(self, X) -> np.ndarray:
        """Rows strictly inside the box (their density is exact, not clipped)."""
        self._check_fitted()
        X = np.asarray(X, dtype=np.float64)
        return np.all((X > self.lo_) & (X < self.hi_), axis=1)

    # ------------------------------------------------------------------ persistence
    def _get_state(self) -> dict:
        return {"lo": self.lo_, "hi": self.hi_, "mean": self.mean_, "std": self.std_}

    def _set_state(self, state: dict) -> None:
        self.lo_, self.hi_ = np.asarray(state["lo"]), np.asarray(state["hi"])
        self.mean_, self.std_ = np.asarray(state["mean"]), np.asarray(state["std"])
        self.n_clipped_ = 0


class StandardScaler1D:
    """Affine scaling of the conditioning variable (m_jj) for flows: ``(m - mean) / std``."""

    def __init__(self, mean: float = 0.0, std: float = 1.0):
        self.mean, self.std = float(mean), float(std)

    @classmethod
    def fit(cls, m) -> StandardScaler1D:
        m = np.asarray(m, dtype=np.float64)
        return cls(m.mean(), m.std() if m.std() > 0 else 1.0)

    def __call__(self, m) -> np.ndarray:
        return ((np.asarray(m, dtype=np.float64) - self.mean) / self.std).reshape(-1, 1)
