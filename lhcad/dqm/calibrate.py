"""Flagging thresholds calibrated on held-out GOOD LSs at a chosen false-flag rate ``α``.

The held-out scores ``s_(1) ≤ … ≤ s_(n)`` of GOOD LSs the model never saw are treated as a
conformal calibration set. Flagging at the order statistic ``s_(k)`` has a true false-flag rate
``p = P(s_new ≥ s_(k))`` that, for exchangeable LSs, is Beta(n − k + 1, k)-distributed over
calibration sets (its mean is ``(n − k + 1) / (n + 1)``, the split-conformal guarantee):

* ``confidence=None`` — the **conformal (n + 1) quantile**: ``k = ⌈(n + 1)(1 − α)⌉``, so that
  ``E[p] ≤ α`` (needs ``n ≥ 1/α − 1`` LSs);
* ``confidence=c`` (default 0.9) — an **upper confidence bound**: the smallest ``k`` with
  ``P(p ≤ α) ≥ c`` (training-conditional conformal; Vovk 2012). At ``α = 1e-3`` this needs
  ``n ≥ ln(1 − c) / ln(1 − α)`` LSs (2302 for c = 0.9, 2995 for c = 0.95) and then flags at most at
  the largest held-out score;
* too few held-out LSs for that: the tail is extrapolated two ways and the larger (more
  conservative) threshold is kept — the peaks-over-threshold method (a generalised Pareto
  distribution, ``scipy.stats.genpareto``, fitted to the exceedances over the ``1 − tail_fraction``
  empirical quantile) and a gamma distribution fitted to all scores (the Poisson χ² score of a
  well-reconstructed LS is ≈ a scaled χ², i.e. gamma-distributed); never below the largest score.

``Threshold.rate_upper`` is the ``confidence``-level upper bound on the true rate of the chosen
order statistic (``None`` for a tail fit: an extrapolation has no such bound).

Several MEs at once (:func:`calibrate_combined`): an LS is flagged if *any* ME's score is above that
ME's threshold. Instead of a Bonferroni split (``α / n_ME`` per ME — an extreme quantile that needs
``n_ME`` times more held-out LSs, and is conservative for correlated MEs), the per-LS statistic
``T = max_ME s_ME / q_ME`` (``q_ME`` the ME's held-out ``ref_level`` quantile, a scale that puts the
MEs on a common footing) is calibrated as above, and ME ``m``'s combined threshold is ``t_T · q_m``.

>>> import numpy as np
>>> t = calibrate_threshold(np.random.default_rng(1).chisquare(4, 100_000) / 4, 1e-3)
>>> t.method, 4.5 < t.threshold < 4.9
('conformal-ucb', True)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats


@dataclass
class Threshold:
    threshold: float
    false_flag_rate: float
    n_holdout: int
    method: str  # 'conformal' ((n+1) quantile), 'conformal-ucb' (upper confidence bound) or 'tail-fit'
    holdout_flag_rate: float  # fraction of held-out GOOD LSs at or above the threshold
    confidence: float | None = None
    rate_upper: float | None = None  # confidence-level upper bound on the true false-flag rate
    order_statistic: int | None = None  # k of s_(k) (1-based) for the conformal methods

    def to_dict(self) -> dict:
        return asdict(self)


def min_holdout(false_flag_rate: float, confidence: float | None = 0.9) -> int:
    """Fewest held-out LSs for which the conformal threshold exists (else a tail fit is used).

    >>> min_holdout(1e-3, None), min_holdout(1e-3, 0.9), min_holdout(1e-3, 0.95)
    (999, 2302, 2995)
    """
    if confidence is None:
        return math.ceil(1 / false_flag_rate - 1)
    return math.ceil(math.log(1 - confidence) / math.log1p(-false_flag_rate))


def _conformal_k(n: int, alpha: float, confidence: float | None) -> int | None:
    """1-based order statistic for the conformal threshold, or None if ``n`` is too small."""
    k0 = math.ceil((n + 1) * (1 - alpha))
    if k0 > n:
        return None
    if confidence is None:
        return k0
    ks = np.arange(k0, n + 1)
    ok = stats.beta.cdf(alpha, n - ks + 1, ks) >= confidence  # P(true rate ≤ α) for s_(k)
    return int(ks[np.argmax(ok)]) if ok.any() else None


def _tail_fit(s: np.ndarray, alpha: float, tail_fraction: float) -> float:
    u = float(np.quantile(s, 1 - tail_fraction))
    exc = s[s > u] - u
    p_exceed = len(exc) / len(s)
    if len(exc) >= 5 and np.ptp(exc) > 0:
        c, _, scale = stats.genpareto.fit(exc, floc=0.0)
        thr = u + float(stats.genpareto.isf(alpha / p_exceed, c, loc=0.0, scale=scale))
    else:
        thr = float(s[-1])
    if s[0] > 0:
        a, _, scale_g = stats.gamma.fit(s, floc=0.0)
        thr = max(thr, float(stats.gamma.isf(alpha, a, loc=0.0, scale=scale_g)))
    return max(thr, float(s[-1]) * (1 + 1e-9))


def calibrate_threshold(scores: np.ndarray, false_flag_rate: float = 1e-3, *, confidence: float | None = 0.9,
                        tail_fraction: float = 0.1) -> Threshold:
    """Threshold at which at most a fraction ``false_flag_rate`` of GOOD LSs is flagged (see module doc)."""
    s = np.sort(np.asarray(scores, dtype=np.float64)[np.isfinite(scores)])
    if len(s) < 20:
        raise ValueError(f"calibrate_threshold: need >= 20 held-out GOOD LSs, got {len(s)}")
    if not 0 < false_flag_rate < 1:
        raise ValueError(f"calibrate_threshold: false_flag_rate must be in (0, 1), got {false_flag_rate}")
    if confidence is not None and not 0 < confidence < 1:
        raise ValueError(f"calibrate_threshold: confidence must be in (0, 1) or None, got {confidence}")
    n = len(s)
    k = _conformal_k(n, false_flag_rate, confidence)
    if k is not None:
        thr = float(s[k - 1])
        method = "conformal" if confidence is None else "conformal-ucb"
        level = 0.5 if confidence is None else confidence
        upper = float(stats.beta.ppf(level, n - k + 1, k)) if confidence is not None else (n - k + 1) / (n + 1)
    else:
        thr, method, upper = _tail_fit(s, false_flag_rate, tail_fraction), "tail-fit", None
    return Threshold(thr, false_flag_rate, n, method, float(np.mean(s >= thr)), confidence, upper, k)


def calibrate_combined(scores: np.ndarray, false_flag_rate: float = 1e-3, *, confidence: float | None = 0.9,
                       ref_level: float = 0.99) -> tuple[Threshold, np.ndarray]:
    """Joint calibration over MEs: ``scores`` (n_LS, n_ME), NaN where an ME has no score for an LS.

    Returns the threshold on ``T = max_ME s / q`` and the per-ME scales ``q``; ME ``m`` flags an LS
    (combined verdict) at ``s_m ≥ threshold · q_m``.

    >>> import numpy as np
    >>> s = np.random.default_rng(2).chisquare(10, (5000, 3)) / 10
    >>> t, q = calibrate_combined(s, 1e-3)
    >>> t.method, q.shape, bool(np.mean((s >= t.threshold * q).any(axis=1)) <= 1e-3)
    ('conformal-ucb', (3,), True)
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2:
        raise ValueError(f"calibrate_combined: scores must be (n_LS, n_ME), got shape {s.shape}")
    q = np.array([np.quantile(c[np.isfinite(c)], ref_level) if np.isfinite(c).sum() >= 20 else np.nan for c in s.T])
    if not (np.isfinite(q) & (q > 0)).all():
        raise ValueError(f"calibrate_combined: every ME needs >= 20 positive held-out scores (scales {q.tolist()})")
    t = np.nanmax(np.where(np.isfinite(s), s / q, -np.inf), axis=1)
    return calibrate_threshold(t[np.isfinite(t)], false_flag_rate, confidence=confidence), q
