"""Local p-values (pyhf q0), their calibration, the sliding-window scan with an injected W' and the
pyBumpHunter global significance."""

import numpy as np
import pyhf
import pytest
from scipy.stats import norm

from lhcad.config import ClusterConfig, StatsConfig
from lhcad.cluster import open_cluster
from lhcad.stats.binning import mass_resolution
from lhcad.stats.bumphunt import global_significance
from lhcad.stats.calibration import (
    controlled_scores, null_p_values, sample_mjj, signal_for_significance,
)
from lhcad.stats.discovery import local_p_value, use_minuit
from lhcad.stats.functions import DijetFunction
from lhcad.stats.model import build_model, data_vector
from lhcad.stats.scan import scan, summary_table

TRUTH4 = [1.0, 12.0, 4.0, 0.6]
FIT_RANGE = (1800.0, 7000.0)


def test_local_p_value_is_pyhf_q0_for_an_excess_and_continuous_for_a_deficit():
    use_minuit()
    b, cov, shape = np.array([400.0, 300.0, 200.0]), np.diag([100.0, 60.0, 30.0]), np.array([0.3, 0.4, 0.3])
    n = np.array([460.0, 370.0, 220.0])
    r = local_p_value(n, b, cov, shape)
    s = shape / shape.sum() * np.sqrt(b.sum())
    model = build_model(s, b, cov, poi_bounds=(0.0, 50.0))
    p_hypotest = float(pyhf.infer.hypotest(0.0, data_vector(model, n), model, test_stat="q0"))
    assert r["mu_hat"] > 0 and r["p_value"] == pytest.approx(p_hypotest, rel=1e-3, abs=1e-7)
    assert r["significance"] == pytest.approx(norm.isf(r["p_value"]))
    # the fit uncertainty (nuisances) makes the same excess less significant
    assert local_p_value(n, b, cov * 4, shape)["p_value"] > r["p_value"]
    deficit = local_p_value(np.array([360.0, 270.0, 185.0]), b, cov, shape)
    assert deficit["mu_hat"] < 0 and deficit["p_value_q0"] == 0.5 and deficit["p_value"] > 0.5


def test_background_only_p_values_are_uniform_over_200_toys():
    # 4-par truth with ~20k events in the fit range; sideband fit, SR 3300-3700 GeV
    with open_cluster(ClusterConfig(type="futures", workers=2)) as cluster:
        res = null_p_values([2e4, *TRUTH4[1:]], (3300.0, 3700.0), FIT_RANGE, n_toys=200, seed=7, cluster=cluster)
    assert res["ks_p_value"] > 0.01, res["ks_p_value"]
    assert res["fraction_below_0.05"] < 0.05 + 3 * np.sqrt(0.05 * 0.95 / 200)


def _injected_sample(seed: int = 1, z_expected: float = 5.0):
    """300k QCD-like events + a W'(3.5 TeV) resonance sized for ≈ z_expected σ after the selection.

    CATHODE scores are not available to this test; the score is truth-informed with stated
    efficiencies: ε_bkg = 1 % (the top-1 % cut), ε_sig = 40 %.
    """
    rng = np.random.default_rng(seed)
    n_bkg, eps_bkg, eps_sig, mass = 300_000, 0.01, 0.4, 3500.0
    mjj_b = sample_mjj(TRUTH4, n_bkg, FIT_RANGE, rng)
    sigma = float(mass_resolution(mass))
    sr = (3300.0, 3700.0)
    b_sr = eps_bkg * np.count_nonzero((mjj_b >= sr[0]) & (mjj_b < sr[1]))
    containment = norm.cdf(200 / sigma) - norm.cdf(-200 / sigma)
    n_sig = int(round(signal_for_significance(z_expected, b_sr) / (eps_sig * containment)))
    mjj_s = rng.normal(mass, sigma, n_sig)
    score_b, score_s = controlled_scores(n_bkg, n_sig, eps_bkg, eps_sig, rng)
    return np.concatenate([mjj_b, mjj_s]), np.concatenate([score_b, score_s]), n_sig


def test_scan_finds_injected_wprime_at_3500_gev_on_a_process_pool():
    mjj, score, n_sig = _injected_sample()
    cfg = StatsConfig(efficiencies=[0.01], toys=200)
    with open_cluster(ClusterConfig(type="futures", workers=2)) as cluster:
        res = scan(mjj, score, cfg, cluster=cluster)
    assert len(res["windows"]) == 9
    best = res["best"]["0.01"]
    assert best["sr"][0] <= 3500.0 <= best["sr"][1], best
    assert best["significance"] > 3.0
    assert 0.3 * n_sig * 0.4 < best["signal_hat"] < 2.0 * n_sig * 0.4
    # windows far from the signal are compatible with background
    far = [w for w in res["windows"] if w["sr"][0] >= 3700.0]
    assert all(w["significance"] < 3.0 for w in far)
    for w in res["windows"]:
        assert w["npar"] in (3, 4, 5) and w["fit_valid"] and 0.3 < w["chi2_ndf"] < 3.0
    g = res["global"]["0.01"]
    assert g["npe"] == 200 and g["significance_cap"] == pytest.approx(norm.isf(1 / 200))
    assert g["significance"] <= g["significance_cap"] + 1e-12
    assert g["window"][0] <= 3500.0 <= g["window"][1]
    assert len(summary_table(res)) == 9


def test_scan_without_signal_finds_nothing_significant():
    rng = np.random.default_rng(4)
    mjj = sample_mjj(TRUTH4, 100_000, FIT_RANGE, rng)
    cfg = StatsConfig(efficiencies=[1.0], n_windows=3, window_step=400.0, first_window=2600.0, toys=100)
    res = scan(mjj, None, cfg)
    assert all(abs(w["significance"]) < 3.5 for w in res["windows"])
    assert res["global"]["1.0"]["global_p_value"] > 0.001


def test_global_significance_capped_by_pseudo_experiments():
    edges = np.linspace(3000, 4200, 13)
    bkg = np.full(12, 1000.0)
    bump = bkg.copy()
    bump[4:8] += 200.0
    res = global_significance(bump, bkg, edges, window_bins=4, npe=100, seed=3)
    assert res["capped"] and res["significance"] == pytest.approx(norm.isf(0.01))
    assert res["window"] == [3400.0, 3800.0] and "out of 100" in res["note"]
    flat = global_significance(bkg, bkg, edges, window_bins=4, npe=100, seed=3)
    assert not flat["capped"] and flat["global_p_value"] > 0.05
    with pytest.raises(ValueError):
        global_significance(bkg, bkg, edges, 4, npe=0)


def test_threshold_is_defined_on_sidebands_not_on_the_signal_region():
    """An SR packed with high-score events must not move the cut (it is set on the sidebands)."""
    from lhcad.stats.selection import sideband_threshold

    rng = np.random.default_rng(0)
    mjj = rng.uniform(2000, 6000, 50_000)
    score = rng.uniform(size=50_000)
    in_sr = (mjj >= 3300) & (mjj < 3700)
    before = sideband_threshold(mjj, score, (3300, 3700), (2000, 6000), 0.01)
    score[in_sr] = 0.999 + 0.001 * rng.uniform(size=in_sr.sum())
    after = sideband_threshold(mjj, score, (3300, 3700), (2000, 6000), 0.01)
    assert before == after
    assert DijetFunction(3).npar == 3


def test_scores_defined_only_in_sr_and_sidebands_narrow_the_fit_range():
    """With ``train.score_range: window`` the models score only SR ± 200 GeV (NaN elsewhere): each
    window is fitted where its score exists, with bins narrow enough for ≥ 3 per sideband; NaN-scored
    events are never selected."""
    rng = np.random.default_rng(8)
    mjj = sample_mjj(TRUTH4, 100_000, FIT_RANGE, rng)
    score = rng.uniform(size=mjj.size)

    def per_window(sr):
        s = score.copy()
        s[(mjj < sr[0] - 200) | (mjj >= sr[1] + 200)] = np.nan
        return f"cathode__{sr[0]:g}_{sr[1]:g}", s

    cfg = StatsConfig(efficiencies=[0.1], n_windows=2, window_step=400.0, toys=50)
    res = scan(mjj, per_window, cfg)
    for w in res["windows"]:
        lo, hi = w["fit_range"]
        assert w["sr"][0] - 200 <= lo < w["sr"][0] - 190 and w["sr"][1] + 190 < hi <= w["sr"][1] + 200
        edges = np.asarray(w["spectrum"]["edges"])
        assert np.sum(edges[1:] <= w["sr"][0]) >= 3 and np.sum(edges[:-1] >= w["sr"][1]) >= 3
        n_scored = np.count_nonzero((mjj >= lo) & (mjj < hi))
        assert w["n_selected"] == pytest.approx(0.1 * n_scored, rel=0.1)
        assert abs(w["significance"]) < 3.5


def test_windows_without_scored_sidebands_are_skipped_and_reported():
    """Only the 3300-3700 GeV window was trained, with ``score_range: window`` (scores in SR ± 200
    GeV): windows reaching outside the scored range are skipped with a reason in the result, the
    others are scanned."""
    rng = np.random.default_rng(9)
    mjj = sample_mjj(TRUTH4, 60_000, FIT_RANGE, rng)
    score = rng.uniform(size=mjj.size)
    score[(mjj < 3100) | (mjj >= 3900)] = np.nan
    cfg = StatsConfig(efficiencies=[0.2], n_windows=3, first_window=3100.0, window_step=200.0, toys=0)
    res = scan(mjj, score, cfg)
    assert [w["sr"] for w in res["windows"]] == [[3300.0, 3700.0]]
    assert [s["sr"] for s in res["skipped_windows"]] == [[3100.0, 3500.0], [3500.0, 3900.0]]
    assert "no sidebands" in res["skipped_windows"][0]["reason"] and res["global"] == {}
    with pytest.raises(ValueError, match="no window can be scanned"):
        scan(mjj, score, StatsConfig(efficiencies=[0.2], n_windows=1, first_window=3500.0, toys=0))


def test_whole_range_score_with_smooth_mjj_dependence_gives_no_fake_excess():
    """Models score every event (score_range 'all'): the top-ε cut is set on each window's sidebands
    over the whole fit range, and a score that drifts smoothly with m_jj (QCD jet masses grow with
    p_T) changes the selection efficiency from ≈ 0.9 % to ≈ 2.9 % across the range. The sideband fit
    over the full selected spectrum absorbs that: background-only windows stay insignificant."""
    rng = np.random.default_rng(21)
    mjj = sample_mjj(TRUTH4, 200_000, FIT_RANGE, rng)
    x = (mjj - FIT_RANGE[0]) / (FIT_RANGE[1] - FIT_RANGE[0])
    score = rng.uniform(size=mjj.size) + 0.02 * x  # top-1 % efficiency rises smoothly with m_jj
    cfg = StatsConfig(efficiencies=[0.01], n_windows=5, window_step=200.0, toys=0)
    res = scan(mjj, score, cfg)
    for w in res["windows"]:
        assert w["fit_range"][0] < 1850.0 and w["fit_range"][1] > 6500.0  # the whole range is fitted
        in_sr = (mjj >= w["sr"][0]) & (mjj < w["sr"][1])
        side = ~in_sr & (mjj >= w["fit_range"][0]) & (mjj < w["fit_range"][1])
        assert np.mean(score[side] > w["threshold"]) == pytest.approx(0.01, rel=0.02)  # ε on sidebands
        assert w["fit_valid"] and w["chi2_ndf"] < 2.5 and abs(w["significance"]) < 3.0, w["significance"]
    lo = (mjj < 2200) & (score > res["windows"][0]["threshold"])
    hi = (mjj > 3000) & (score > res["windows"][0]["threshold"])
    assert np.mean(hi) / np.mean(mjj > 3000) > 1.3 * np.mean(lo) / np.mean(mjj < 2200)  # it does sculpt
