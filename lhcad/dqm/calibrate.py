"""Flagging thresholds calibrated on held-out GOOD LSs at a chosen false-flag rate.

The threshold is the ``1 − rate`` quantile of the scores of GOOD LSs the model never saw:

* if the held-out sample has at least ``min_tail`` LSs beyond that quantile (``n · rate ≥ min_tail``),
  the empirical quantile (numpy ``method="higher"``) is used;
* otherwise the tail is extrapolated two ways and the larger (more conservative) threshold is kept:
  the peaks-over-threshold method (a generalised Pareto distribution, ``scipy.stats.genpareto``,
  fitted to the exceedances over the ``1 − tail_fraction`` empirical quantile) and a gamma
  distribution fitted to all scores (the Poisson χ² score of a well-reconstructed LS is ≈ a scaled
  χ², i.e. gamma-distributed); it is never set below the largest held-out score.

>>> import numpy as np
>>> t = calibrate_threshold(np.random.default_rng(1).chisquare(4, 100_000) / 4, 1e-3)
>>> t.method, 4.5 < t.threshold < 4.9
('empirical', True)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats


@dataclass
class Threshold:
    threshold: float
    false_flag_rate: float
    n_holdout: int
    method: str  # 'empirical' or 'gpd-tail'
    holdout_flag_rate: float  # fraction of held-out GOOD LSs at or above the threshold

    def to_dict(self) -> dict:
        return asdict(self)


def calibrate_threshold(scores: np.ndarray, false_flag_rate: float = 1e-3, *, min_tail: int = 5,
                        tail_fraction: float = 0.1) -> Threshold:
    """Threshold such that a fraction ``false_flag_rate`` of GOOD LSs score above it."""
    s = np.sort(np.asarray(scores, dtype=np.float64)[np.isfinite(scores)])
    if len(s) < 20:
        raise ValueError(f"calibrate_threshold: need >= 20 held-out GOOD LSs, got {len(s)}")
    if not 0 < false_flag_rate < 1:
        raise ValueError(f"calibrate_threshold: false_flag_rate must be in (0, 1), got {false_flag_rate}")
    if len(s) * false_flag_rate >= min_tail:
        thr = float(np.quantile(s, 1 - false_flag_rate, method="higher"))
        method = "empirical"
    else:
        u = float(np.quantile(s, 1 - tail_fraction))
        exc = s[s > u] - u
        p_exceed = len(exc) / len(s)
        if len(exc) >= 5 and np.ptp(exc) > 0:
            c, _, scale = stats.genpareto.fit(exc, floc=0.0)
            thr = u + float(stats.genpareto.isf(false_flag_rate / p_exceed, c, loc=0.0, scale=scale))
        else:
            thr = float(s[-1])
        if s[0] > 0:
            a, _, scale_g = stats.gamma.fit(s, floc=0.0)
            thr = max(thr, float(stats.gamma.isf(false_flag_rate, a, loc=0.0, scale=scale_g)))
        thr = max(thr, float(s[-1]) * (1 + 1e-9))
        method = "tail-fit"
    return Threshold(thr, false_flag_rate, len(s), method, float(np.mean(s >= thr)))
