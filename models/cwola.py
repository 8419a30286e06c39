"""CWoLa hunting: Classification Without Labels between the signal region and its sidebands.

A classifier trained to separate signal-region (SR) events from neighbouring sideband (SB) events
learns the likelihood ratio p_SR / p_SB; if the background features do not depend on m_jj across the
window, that ratio is monotonic in p_signal / p_background. Every event must be scored by a model that
did not see it: :func:`kfold_scores` (and the distributed jobs in :mod:`lhcad.models.jobs`) split
the events in k folds.

>>> import numpy as np
>>> rng = np.random.default_rng(1)
>>> sr = np.concatenate([rng.normal(0, 1, (900, 2)), rng.normal(2.5, 0.3, (100, 2))])
>>> sb = rng.normal(0, 1, (1000, 2))
>>> cw = CWoLa(classifier_params={"max_iter": 30}).fit(sr, sb)
>>> cw.score_samples([[2.5, 2.5]])[0] > cw.score_samples([[0.0, 0.0]])[0]
True
"""

from __future__ import annotations

import numpy as np

from lhcad.models.idealized import TwoSampleAD


class CWoLa(TwoSampleAD):
    """CWoLa: ``fit(X_sr, X_sb)``; score = P(SR | x)."""


def sideband_masks(m: np.ndarray, sr: tuple[float, float], sb_width: float | None):
    """Boolean masks (SR, SB) of ``m``: SR = [lo, hi); SB = [lo - w, lo) ∪ [hi, hi + w) (all outside
    the SR when ``sb_width`` is None)."""
    lo, hi = sr
    m = np.asarray(m)
    in_sr = (m >= lo) & (m < hi)
    if sb_width is None:
        in_sb = np.isfinite(m) & ~in_sr
    else:
        in_sb = ((m >= lo - sb_width) & (m < lo)) | ((m >= hi) & (m < hi + sb_width))
    return in_sr, in_sb


def kfold_scores(estimator_factory, X1, X0, folds: int = 5, random_state: int = 0):
    """Out-of-fold scores of a two-sample estimator: every row of X1 and X0 is scored by the model
    trained on the other folds. Returns ``(scores1, scores0)``."""
    rng = np.random.default_rng(random_state)
    f1, f0 = rng.integers(0, folds, len(X1)), rng.integers(0, folds, len(X0))
    s1, s0 = np.empty(len(X1)), np.empty(len(X0))
    for k in range(folds):
        est = estimator_factory().fit(X1[f1 != k], X0[f0 != k])
        s1[f1 == k] = est.score_samples(X1[f1 == k])
        s0[f0 == k] = est.score_samples(X0[f0 == k])
    return s1, s0
