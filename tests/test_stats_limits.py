"""CLs limits (asymptotic and toys, bands, coverage) and the weak-supervision limit procedure."""

import numpy as np
import pyhf
import pytest

from lhcad.cluster import open_cluster
from lhcad.config import ClusterConfig
from lhcad.stats.calibration import cls_coverage
from lhcad.stats.binning import resolution_edges
from lhcad.stats.ftest import choose_function
from lhcad.stats.functions import DijetFunction
from lhcad.stats.model import build_model, data_vector
from lhcad.stats.limits import BAND_NAMES, LimitTask, limit_for_mass, make_tasks, signal_bins, upper_limits
from lhcad.stats.weak_limits import efficiency_curve, excluded_xs, weak_supervision_limit


def _spectrum(seed=0, norm=1e5):
    edges = resolution_edges(1800.0, 7000.0)
    mu = DijetFunction(4).expected([norm, 12.0, 4.0, 0.6], edges)
    return edges, np.random.default_rng(seed).poisson(mu).astype(float)


def test_asymptotic_limits_have_ordered_bands_and_scale_with_background():
    edges, counts = _spectrum()
    fit = choose_function(counts, edges).best
    tasks = make_tasks(counts, edges, fit.expected, fit.expected_cov, [2500.0, 4500.0])
    res = upper_limits(tasks)
    for r in res:
        band = [r["expected"][k] for k in BAND_NAMES]
        assert np.all(np.diff(band) > 0) and band[0] > 0
        # observed within the ±2σ band for a background-only spectrum (allowing for rare fluctuations)
        assert 0.5 * band[0] < r["observed"] < 1.5 * band[-1]
    # more background at 2.5 TeV than at 4.5 TeV: the limit in events is weaker there
    assert res[0]["expected"]["median"] > 2 * res[1]["expected"]["median"]
    # counting estimate of the median: ~1.96 σ(b) with σ(b) ≈ √B over the signal bins
    b = res[1]["background_events"]
    assert 1.0 * np.sqrt(b) < res[1]["expected"]["median"] < 4.0 * np.sqrt(b)
    # the grid scan (log-CLs interpolation) agrees with pyhf's own root finding (TOMS 748)
    t = tasks[1]
    model = build_model(t.signal, t.background, t.background_cov, poi_bounds=(0.0, 5 * res[1]["expected"]["+2sigma"]))
    obs, exp = pyhf.infer.intervals.upper_limits.upper_limit(data_vector(model, t.counts), model)
    assert res[1]["observed"] == pytest.approx(float(obs), rel=0.02)
    assert [res[1]["expected"][k] for k in BAND_NAMES] == pytest.approx(np.asarray(exp, float), rel=0.02)


def test_injected_signal_raises_the_observed_limit():
    edges, counts = _spectrum(seed=1)
    fit = choose_function(counts, edges).best
    task = make_tasks(counts, edges, fit.expected, fit.expected_cov, [4000.0])[0]
    clean = limit_for_mass(task)
    boosted = LimitTask(task.mass, task.counts + 3 * clean["expected"]["median"] * task.signal / task.signal.sum(),
                        task.background, task.background_cov, task.signal)
    assert limit_for_mass(boosted)["observed"] > clean["expected"]["+2sigma"]


def test_toy_limits_agree_with_asymptotics_at_high_counts():
    # one counting bin (toys are expensive): 100 background events, small background uncertainty
    task = LimitTask(3500.0, np.array([100.0]), np.array([100.0]), np.array([[4.0]]), np.array([1.0]),
                     toys=60, toy_grid=3)
    r = limit_for_mass(task)
    assert r["toys"]["ntoys"] == 60
    assert r["toys"]["expected"]["median"] == pytest.approx(r["expected"]["median"], rel=0.35)
    assert r["toys"]["observed"] == pytest.approx(r["observed"], rel=0.35)


def test_cls_upper_limits_cover_the_true_signal_in_at_least_95_percent_of_toys():
    b, cov, s = np.array([50.0]), np.array([[16.0]]), np.array([1.0])
    # μ = 0: the 95 % CLs upper limit is ≥ 0 by construction; the non-trivial check is at the median
    # expected limit, where CLs is conservative: coverage ≥ 95 % within toy statistics
    with open_cluster(ClusterConfig(type="futures", workers=2)) as cluster:
        res = cls_coverage(b, cov, s, mu_true=None, n_toys=200, seed=3, cluster=cluster)
    assert res["coverage"] >= 0.95 - 2 * res["binomial_error"], res


def test_signal_bins_hold_the_template():
    t = np.array([0.0, 0.01, 0.2, 0.5, 0.25, 0.04, 0.0])
    m = signal_bins(t, keep=0.95)
    assert t[m].sum() >= 0.95 and m.sum() <= 5 and m[3]
    with pytest.raises(ValueError, match="outside"):
        edges, counts = _spectrum()
        make_tasks(counts, edges, counts, np.diag(counts), [9000.0])


def test_weak_supervision_limit_matches_the_analytic_solution():
    # ε_sig(σ) = ε_max σ / (σ + σ_half) and σ_excl(ε) = K / ε
    # ⇒ σ* solves ε_max σ² − K σ − K σ_half = 0: σ* = (K + √(K² + 4 ε_max K σ_half)) / (2 ε_max)
    eps_max, sigma_half, n_up, lumi = 0.3, 20.0, 12.0, 3.0
    K = n_up / lumi
    analytic = (K + np.sqrt(K**2 + 4 * eps_max * K * sigma_half)) / (2 * eps_max)
    eps = lambda s: eps_max * s / (s + sigma_half)  # noqa: E731
    res = weak_supervision_limit(eps, excluded_xs(n_up, lumi), (0.01, 1e4))
    assert res["limit"] == pytest.approx(analytic, rel=1e-6)
    assert res["efficiency"] == pytest.approx(eps(analytic), rel=1e-6)
    # the same from measured points (re-trainings at 12 injected cross sections, log-interpolated)
    sig = np.geomspace(1.0, 1000.0, 12)
    measured = weak_supervision_limit((sig, [eps(x) for x in sig]), excluded_xs(n_up, lumi))
    assert measured["limit"] == pytest.approx(analytic, rel=0.05)
    # a method that never learns the signal excludes nothing
    none = weak_supervision_limit(lambda s: 1e-6, excluded_xs(n_up, lumi), (0.01, 1e4))
    assert none["limit"] == float("inf") and not none["excluded_anywhere"]
    with pytest.raises(ValueError):
        efficiency_curve([1.0], [0.1])
