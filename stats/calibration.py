"""Toy studies that check the statistics: fit pulls, F-test choice, p-value uniformity, CLs coverage.

Used by the tests and by ``benchmarks/stats.py``; every function draws its pseudo-data from a known
truth with a seeded ``numpy.random.Generator``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats as _st

from lhcad.stats.binning import mass_resolution, sr_mask, window_edges
from lhcad.stats.fit import fit_spectrum
from lhcad.stats.ftest import choose_function
from lhcad.stats.functions import DijetFunction
from lhcad.stats.limits import LimitTask, cls_excluded, limit_for_mass
from lhcad.stats.model import gaussian_template
from lhcad.stats.discovery import local_p_value


def fit_pulls(truth: Sequence[float], edges: np.ndarray, n_toys: int, seed: int = 0, n_choice: int | None = None) -> dict:
    """Fit the true function to ``n_toys`` Poisson toys; pulls (p̂ − p)/σ̂, and the F-test choice on
    the first ``n_choice`` toys (all by default)."""
    truth = np.asarray(truth, dtype=float)
    mu = DijetFunction(truth.size).expected(truth, edges)
    rng = np.random.default_rng(seed)
    pulls, picks, valid = [], [], 0
    n_choice = n_toys if n_choice is None else n_choice
    for i in range(n_toys):
        n = rng.poisson(mu).astype(float)
        res = fit_spectrum(n, edges, truth.size)
        valid += res.valid
        pulls.append((res.params - truth) / res.errors)
        if i < n_choice:
            picks.append(choose_function(n, edges).best.npar)
    pulls = np.asarray(pulls)
    return {
        "pull_mean": pulls.mean(axis=0).tolist(),
        "pull_std": pulls.std(axis=0, ddof=1).tolist(),
        "valid_fraction": valid / n_toys,
        "choice_fractions": {str(k): float(np.mean(np.asarray(picks) == k)) for k in (3, 4, 5)},
    }


def _run_chunks(fn, args: list, cluster) -> list:
    return cluster.map(fn, args, desc="stats toys") if cluster is not None else [fn(a) for a in args]


def _null_chunk(args) -> list[float]:
    truth, sr, fit_range, n_toys, seed, resolution = args
    edges, _ = window_edges(sr, fit_range, resolution)
    mu = DijetFunction(truth.size).expected(truth, edges)
    in_sr = sr_mask(edges, sr)
    centre = 0.5 * (sr[0] + sr[1])
    lo, hi = edges[:-1][in_sr], edges[1:][in_sr]
    shape = gaussian_template(np.append(lo, hi[-1]), centre, float(mass_resolution(centre, resolution)))
    rng = np.random.default_rng(seed)
    ps = []
    for _ in range(n_toys):
        n = rng.poisson(mu).astype(float)
        fit = fit_spectrum(n, edges, truth.size, mask=~in_sr)
        cov = fit.expected_cov[np.ix_(in_sr, in_sr)]
        ps.append(local_p_value(n[in_sr], fit.expected[in_sr], cov, shape)["p_value"])
    return ps


def null_p_values(
    truth: Sequence[float],
    sr: tuple[float, float],
    fit_range: tuple[float, float],
    n_toys: int,
    seed: int = 0,
    resolution: Sequence[float] = (1.0, 0.03),
    cluster=None,
    chunks: int = 4,
) -> dict:
    """Background-only toys of one window: sideband fit of the true function family, SR p-value.

    Toys run in ``chunks`` independent tasks (on ``cluster`` when given, seeded ``seed + i``).
    """
    truth = np.asarray(truth, dtype=float)
    sizes = np.diff(np.linspace(0, n_toys, chunks + 1).astype(int))
    args = [(truth, sr, fit_range, int(k), seed + i, tuple(resolution)) for i, k in enumerate(sizes) if k > 0]
    ps = np.concatenate(_run_chunks(_null_chunk, args, cluster))
    return {"p_values": ps.tolist(), "ks_p_value": float(_st.kstest(ps, "uniform").pvalue),
            "fraction_below_0.05": float(np.mean(ps < 0.05))}


def _coverage_chunk(args) -> int:
    b, cov, s, mu_true, n_toys, seed = args
    rng = np.random.default_rng(seed)
    covered = 0
    for _ in range(n_toys):
        b_true = np.clip(rng.multivariate_normal(b, cov), 1e-3, None)
        n = rng.poisson(b_true + mu_true * s).astype(float)
        covered += not cls_excluded(n, b, cov, s, mu_true)
    return covered


def cls_coverage(
    background: np.ndarray,
    background_cov: np.ndarray,
    signal: np.ndarray,
    mu_true: float | None,
    n_toys: int,
    seed: int = 0,
    cluster=None,
    chunks: int = 4,
) -> dict:
    """Fraction of toys whose 95 % CLs upper limit covers ``mu_true``.

    ``mu_true=None`` uses the median expected limit. The upper limit covers μ exactly when μ is not
    excluded (CLs(μ) ≥ 0.05), so one hypotest per toy suffices. Toys draw the true background from its
    Gaussian fit uncertainty, then Poisson counts of background + μ_true × signal; they run in
    ``chunks`` tasks (on ``cluster`` when given).
    """
    b = np.asarray(background, dtype=float)
    cov = np.asarray(background_cov, dtype=float)
    s = np.asarray(signal, dtype=float)
    if mu_true is None:
        mu_true = limit_for_mass(LimitTask(0.0, np.round(b), b, cov, s))["expected"]["median"]
    sizes = np.diff(np.linspace(0, n_toys, chunks + 1).astype(int))
    args = [(b, cov, s, float(mu_true), int(k), seed + i) for i, k in enumerate(sizes) if k > 0]
    covered = sum(_run_chunks(_coverage_chunk, args, cluster))
    return {"mu_true": float(mu_true), "coverage": covered / n_toys, "n_toys": n_toys,
            "binomial_error": float(np.sqrt(0.95 * 0.05 / n_toys))}


# ------------------------------------------------------------------------------------ synthetic data
def sample_mjj(truth: Sequence[float], n_events: int, mjj_range: tuple[float, float], rng: np.random.Generator,
               sqrt_s: float = 13000.0) -> np.ndarray:
    """``n_events`` m_jj values drawn from the dijet function ``truth`` (inverse CDF on a 1 GeV grid)."""
    truth = np.asarray(truth, dtype=float)
    grid = np.arange(mjj_range[0], mjj_range[1] + 1.0, 1.0)
    cdf = np.concatenate([[0.0], np.cumsum(DijetFunction(truth.size, sqrt_s).expected(truth, grid))])
    return np.interp(rng.uniform(size=n_events), cdf / cdf[-1], grid)


def controlled_scores(n_bkg: int, n_sig: int, eps_bkg: float, eps_sig: float, rng: np.random.Generator):
    """A truth-informed score with known efficiencies: background ~ U(0, 1), so a top-``eps_bkg`` cut is
    at ≈ 1 − eps_bkg; a fraction ``eps_sig`` of the signal scores lies above it, the rest below."""
    bkg = rng.uniform(size=n_bkg)
    passed = rng.uniform(size=n_sig) < eps_sig
    sig = np.where(passed, rng.uniform(1 - eps_bkg, 1.0, n_sig), rng.uniform(0.0, 1 - eps_bkg, n_sig))
    return bkg, sig


def asimov_significance(s: float, b: float) -> float:
    """Expected discovery significance of ``s`` signal on ``b`` background events (Asimov formula)."""
    return float(np.sqrt(2 * ((s + b) * np.log1p(s / b) - s)))


def signal_for_significance(z: float, b: float) -> float:
    """Signal events giving an expected (Asimov) significance ``z`` over ``b`` background events."""
    from scipy.optimize import brentq

    return float(brentq(lambda s: asimov_significance(s, b) - z, 1e-9, 100 * z * np.sqrt(b) + 100))
