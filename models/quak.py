"""QUAK: quasi anomalous knowledge — a background flow, a signal-prior flow, and the 2-D loss space.

Park et al. (2020), the semi-supervised CMS EXO-22-026 method:

1. A conditional flow p_B(x | m) (:class:`~lhcad.models.flows.ConditionalFlow`) is trained on
   **background simulation** (QCD MC).
2. A second flow p_S(x | m) is trained on a **mixture of signal simulations** — the signal prior,
   here several members of the generator's signal family (:func:`balanced_mixture` gives each the
   same weight). Signals outside the prior still look unlike the background.
3. Every event maps to the 2-D "QUAK space" of losses ``(L_B, L_S) = (-log p_B, -log p_S)``
   (:meth:`QUAK.losses`). The selection goes away from the background (large L_B) and towards the
   signal prior (small L_S): ``score = L_B - signal_weight · L_S``, i.e. straight cut lines in QUAK
   space whose slope is ``signal_weight`` (1 = the likelihood ratio p_S / p_B; 0 = pure background
   anomaly). Both flows share one preprocessing box so their Jacobians cancel at ``signal_weight = 1``.

Features default to :data:`QUAK_FEATURES`: masses, τ21, τ32, DeepB and LSF3 of both jets.
"""

from __future__ import annotations

import numpy as np

from lhcad.models.base import Estimator
from lhcad.models.flows import ConditionalFlow

QUAK_FEATURES = ("j1_mass", "j2_mass", "j1_tau21", "j2_tau21", "j1_tau32", "j2_tau32",
                 "j1_btag", "j2_btag", "j1_lsf3", "j2_lsf3")


def balanced_mixture(samples, n_per_sample: int | None = None, random_state: int = 0):
    """Concatenate ``[(X_i, m_i), ...]`` with the same number of rows from each (the smallest, or
    ``n_per_sample``): a signal prior in which every model weighs the same."""
    if not samples:
        raise ValueError("balanced_mixture: no signal samples given")
    n = min(len(x) for x, _ in samples) if n_per_sample is None else n_per_sample
    rng = np.random.default_rng(random_state)
    xs, ms = [], []
    for x, m in samples:
        if len(x) < n:
            raise ValueError(f"balanced_mixture: a sample has {len(x)} rows < {n}")
        idx = rng.choice(len(x), n, replace=False)
        xs.append(np.asarray(x)[idx])
        ms.append(np.asarray(m)[idx])
    return np.concatenate(xs), np.concatenate(ms)


class QUAK(Estimator):
    """QUAK estimator: ``fit(X_bkg, m_bkg, X_sig, m_sig)``; ``score_samples(X, m)``.

    Parameters
    ----------
    flow_params : :class:`ConditionalFlow` hyper-parameters of both flows; signal_weight : slope of
    the selection in QUAK space (see module doc); margin : preprocessing box margin;
    random_state : seed.
    """

    def __init__(self, flow_params: dict | None = None, signal_weight: float = 1.0, margin: float = 0.02,
                 random_state: int = 0):
        self.flow_params = flow_params
        self.signal_weight = signal_weight
        self.margin = margin
        self.random_state = random_state

    def fit(self, X_bkg, m_bkg, X_sig, m_sig, bounds=None, background_flow: ConditionalFlow | None = None) -> QUAK:
        """Train the background flow on background MC and the signal flow on the signal-prior mixture.

        ``bounds=(lo, hi)`` is the shared preprocessing box (default: both samples' range + margin);
        a trained ``background_flow`` (on the same box) is reused instead of training one on ``X_bkg``."""
        X_sig = np.asarray(X_sig, dtype=np.float64)
        if background_flow is not None and X_bkg is None:
            X_bkg = np.empty((0, X_sig.shape[1]))
        X_bkg = np.asarray(X_bkg, dtype=np.float64)
        if X_bkg.ndim != 2 or X_sig.ndim != 2 or X_bkg.shape[1] != X_sig.shape[1]:
            raise ValueError(f"QUAK.fit: background {X_bkg.shape} and signal {X_sig.shape} features differ")
        if background_flow is not None and bounds is None:
            bounds = (background_flow.pre_.lo_, background_flow.pre_.hi_)
        if bounds is None:
            both = np.concatenate([X_bkg, X_sig])
            lo, hi = both.min(axis=0), both.max(axis=0)
            w = np.where(hi > lo, hi - lo, 1.0)
            bounds = (lo - self.margin * w, hi + self.margin * w)
        self.bounds_ = (np.asarray(bounds[0], dtype=np.float64), np.asarray(bounds[1], dtype=np.float64))
        params = {"random_state": self.random_state, **(self.flow_params or {})}
        self.background_flow_ = (background_flow if background_flow is not None
                                 else ConditionalFlow(**params).fit(X_bkg, m_bkg, bounds=self.bounds_))
        params["random_state"] = params["random_state"] + 1
        self.signal_flow_ = ConditionalFlow(**params).fit(X_sig, m_sig, bounds=self.bounds_)
        self.n_train_ = (len(X_bkg) if background_flow is None else -1, len(X_sig))
        self.fitted_ = True
        return self

    def losses(self, X, m) -> np.ndarray:
        """(n, 2) QUAK space: ``[-log p_B(x|m), -log p_S(x|m)]`` (NaN rows for non-finite input)."""
        self._check_fitted()
        X = np.asarray(X, dtype=np.float64)
        m = np.asarray(m, dtype=np.float64)
        out = np.full((len(X), 2), np.nan)
        ok = np.isfinite(X).all(axis=1) & np.isfinite(m)
        if ok.any():
            out[ok, 0] = -self.background_flow_.log_prob(X[ok], m[ok])
            out[ok, 1] = -self.signal_flow_.log_prob(X[ok], m[ok])
        return out

    def score_samples(self, X, m) -> np.ndarray:
        """``L_B - signal_weight · L_S``: large away from the background and close to the signal prior."""
        L = self.losses(X, m)
        return L[:, 0] - self.signal_weight * L[:, 1]

    def _get_state(self) -> dict:
        return {"background": self.background_flow_.to_payload(), "signal": self.signal_flow_.to_payload(),
                "bounds": self.bounds_, "n_train": self.n_train_}

    def _set_state(self, state: dict) -> None:
        self.background_flow_ = ConditionalFlow.from_payload(state["background"])
        self.signal_flow_ = ConditionalFlow.from_payload(state["signal"])
        self.bounds_ = tuple(np.asarray(b) for b in state["bounds"])
        self.n_train_ = tuple(state["n_train"])
