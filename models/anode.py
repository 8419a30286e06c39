"""ANODE: density ratio of a signal-region flow to the sideband flow interpolated into the SR.

``score = log p_SR(x | m) − log p_bkg(x | m)``, both densities in the original feature space (each
flow adds its own preprocessing Jacobian, so two differently preprocessed flows compare correctly).
"""

from __future__ import annotations

import numpy as np

from lhcad.models.base import Estimator
from lhcad.models.flows import ConditionalFlow


class ANODE(Estimator):
    """ANODE estimator: ``fit(X_sr, m_sr, background_flow)``; ``score_samples(X, m)`` = log ratio.

    Parameters
    ----------
    flow_params : :class:`ConditionalFlow` hyper-parameters of the SR flow (and of the background
    flow when ``fit`` trains it from sideband data).
    """

    def __init__(self, flow_params: dict | None = None):
        self.flow_params = flow_params

    def fit(self, X_sr, m_sr, background_flow: ConditionalFlow | None = None,
            X_sb=None, m_sb=None, bounds=None) -> ANODE:
        if background_flow is None:
            if X_sb is None or m_sb is None:
                raise ValueError("ANODE.fit needs background_flow or sideband data (X_sb, m_sb)")
            background_flow = ConditionalFlow(**(self.flow_params or {})).fit(X_sb, m_sb, bounds=bounds)
        self.background_flow_ = background_flow
        self.sr_flow_ = ConditionalFlow(**(self.flow_params or {})).fit(X_sr, m_sr, bounds=bounds)
        self.fitted_ = True
        return self

    def score_samples(self, X, m) -> np.ndarray:
        """log p_SR(x | m) − log p_bkg(x | m)."""
        self._check_fitted()
        if m is None:
            raise ValueError("ANODE.score_samples needs the resonant mass m")
        return self.sr_flow_.log_prob(X, m) - self.background_flow_.log_prob(X, m)

    def _get_state(self) -> dict:
        return {"bkg": self.background_flow_.to_payload(), "sr": self.sr_flow_.to_payload()}

    def _set_state(self, state: dict) -> None:
        self.background_flow_ = ConditionalFlow.from_payload(state["bkg"])
        self.sr_flow_ = ConditionalFlow.from_payload(state["sr"])
