"""Issue 7 estimators on small toys with known truth: VAE-QR (+ QR decorrelation), Tag-N-Train, QUAK,
CATHODE-b feature config. Each estimator: fit → score → save → load → identical scores, and it finds
the toy signal (AUC / ordering on known truth)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from lhcad.models.cathode_b import CATHODE_B_FEATURES, check_features, train_settings
from lhcad.models.data import DataError
from lhcad.models.quak import QUAK, balanced_mixture
from lhcad.models.quantile import QuantileDecorrelator, flatness_chi2
from lhcad.models.tagntrain import TagNTrain
from lhcad.models.vaeqr import JET_VARS, VAEQR, JetVAE, per_jet_columns, sideband_rows
from lhcad.store import DIJET_COLUMNS


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------------------------------------ toys
def _qcd_jets(rng, m):
    """QCD-like jets whose mass (and hence VAE loss) scales with m_jj; other variables m-independent."""
    n = len(m)
    x = (m - 2000.0) / 3000.0                        # constituent multiplicity and τ21 drift with pT
    mass = (0.02 + 0.06 * rng.gamma(2.2, 1 / 2.2, n)) * m / 2
    return np.column_stack([mass, mass * rng.uniform(0.6, 1.0, n), rng.normal(0.74 - 0.08 * x, 0.10, n),
                            rng.normal(0.72, 0.09, n), rng.normal(0.80, 0.07, n), rng.normal(36 + 12 * x, 6, n),
                            rng.beta(1.3, 5, n), rng.beta(0.8, 12, n)])


def _signal_jets(rng, n, mass):
    return np.column_stack([rng.normal(mass, 0.05 * mass, n), rng.normal(0.95 * mass, 0.05 * mass, n),
                            rng.normal(0.30, 0.08, n), rng.normal(0.72, 0.09, n), rng.normal(0.80, 0.07, n),
                            rng.normal(55, 6, n), rng.beta(1.3, 5, n), rng.beta(5, 1.2, n)])


def _events(rng, n_bkg, n_sig, m_range=(2000.0, 5000.0)):
    """(X = [j1, j2] per-jet features, m, truth)."""
    m_b = m_range[0] + rng.exponential(900.0, 3 * n_bkg)
    m_b = m_b[m_b < m_range[1]][:n_bkg]
    X_b = np.hstack([_qcd_jets(rng, m_b), _qcd_jets(rng, m_b)])
    m_s = rng.normal(3500.0, 150.0, n_sig)
    X_s = np.hstack([_signal_jets(rng, n_sig, 100.0), _signal_jets(rng, n_sig, 400.0)])
    return np.vstack([X_b, X_s]), np.r_[m_b, m_s], np.r_[np.zeros(len(m_b)), np.ones(n_sig)]


# ------------------------------------------------------------------------------------------ QR
def test_quantile_regression_flattens_selection_on_background_only():
    rng = np.random.default_rng(3)
    m = 2000 + rng.exponential(900, 40_000)
    m = m[m < 5000][:24_000]
    loss = np.exp(1.5 * (m - 2000) / 3000 + 0.6 * rng.normal(size=len(m)))     # grows with m_jj
    fit, held = slice(0, 12_000), slice(12_000, None)
    qr = QuantileDecorrelator(degree=2).fit(loss[fit], m[fit])
    score = qr.transform(loss[held], m[held])
    edges = np.quantile(m[held], np.linspace(0, 1, 9))
    edges[-1] += 1
    for tau in (0.7, 0.9, 0.95):
        res = flatness_chi2(score > tau, m[held], edges)
        assert res["p_value"] > 1e-3, (tau, res)
        assert abs(res["fraction"] - (1 - tau)) < 0.01
    # the same test has power: a fixed cut on the raw loss is far from flat in m_jj
    raw = flatness_chi2(loss[held] > np.quantile(loss[fit], 0.9), m[held], edges)
    assert raw["p_value"] < 1e-10
    # "score > τ" is exactly "loss above the fitted τ quantile"
    thr = qr.threshold(m[held], 0.9)
    assert np.array_equal(score > 0.9, loss[held] > thr)
    # round trip
    assert np.allclose(QuantileDecorrelator.load(qr.save(_tmp("qr.pt"))).transform(loss[held], m[held]), score)


def test_quantile_regression_rejects_bad_levels():
    with pytest.raises(ValueError, match="quantiles"):
        QuantileDecorrelator(quantiles=(0.9,)).fit(np.ones(100), np.arange(100.0))
    with pytest.raises(ValueError, match="positive"):
        QuantileDecorrelator().fit(-np.ones(1000), np.arange(1000.0))


_TMP: list = []


def _tmp(name: str):
    import tempfile
    from pathlib import Path

    if not _TMP:
        _TMP.append(tempfile.mkdtemp(prefix="lhcad-methods-"))
    return Path(_TMP[0]) / name


# ------------------------------------------------------------------------------------------ VAE-QR
def test_vaeqr_round_trip_finds_signal_and_decorrelates(tmp_path):
    rng = np.random.default_rng(0)
    X, m, y = _events(rng, 16_000, 400)
    deta = np.where(rng.random(len(m)) < 0.3, rng.uniform(1.4, 1.6, len(m)), rng.uniform(0, 1.3, len(m)))
    sb = sideband_rows(deta)
    est = VAEQR(vae_params={"epochs": 6, "batch_size": 512, "device": "cpu"}, random_state=1)
    # QR on the background events of the |Δη| < 1.3 region: a signal that is 2.5 % of the sample
    # but a large part of its upper tail would bias the high quantiles near its mass
    est.fit(X, m, sideband=sb, qr_rows=~sb & (y == 0))
    Xt, mt, yt = _events(np.random.default_rng(1), 12_000, 600)
    s = est.score_samples(Xt, mt)
    assert np.isfinite(s).all() and (0 < s).all() and (s < 1).all()
    assert roc_auc_score(yt, s) > 0.9
    # both jets anomalous → the min-loss score: signal's lower jet loss beats QCD's
    l1, l2 = est.jet_losses(Xt)
    assert np.array_equal(est.raw_score(Xt), np.minimum(l1, l2))
    # decorrelation on background-only held-out events, at the 90 % and 95 % quantiles
    bkg = yt == 0
    edges = np.quantile(mt[bkg], np.linspace(0, 1, 7))
    edges[-1] += 1
    for tau in (0.9, 0.95):
        assert flatness_chi2(s[bkg] > tau, mt[bkg], edges)["p_value"] > 1e-3
    raw = est.raw_score(Xt)[bkg]
    assert flatness_chi2(raw > np.quantile(raw, 0.9), mt[bkg], edges)["p_value"] < 1e-4
    # round trip
    path = est.save(tmp_path / "vaeqr.pt")
    back = VAEQR.load(path)
    assert np.allclose(back.score_samples(Xt, mt), s)
    assert back.get_params() == est.get_params()
    with pytest.raises(ValueError, match="needs m"):
        back.score_samples(Xt)


def test_jet_autoencoder_is_deterministic_and_validates_shapes(tmp_path):
    rng = np.random.default_rng(2)
    J = _qcd_jets(rng, rng.uniform(2000, 4000, 2000))
    ae = JetVAE(beta=0.0, epochs=2, device="cpu").fit(J)
    a, b = ae.jet_loss(J[:50]), ae.jet_loss(J[:50])
    assert np.array_equal(a, b) and (a >= 0).all()
    J2 = J[:5].copy()
    J2[0, 2] = np.nan
    assert np.isnan(ae.jet_loss(J2)[0]) and np.isfinite(ae.jet_loss(J2)[1:]).all()
    assert np.allclose(JetVAE.load(ae.save(tmp_path / "ae.pt")).jet_loss(J[:50]), a)
    with pytest.raises(ValueError, match="jet features"):
        ae.jet_loss(J[:, :3])
    assert per_jet_columns()[: len(JET_VARS)] == tuple(f"j1_{v}" for v in JET_VARS)
    assert set(per_jet_columns()) <= set(DIJET_COLUMNS)


# ------------------------------------------------------------------------------------------ TNT
def test_tagntrain_round_trip_finds_signal(tmp_path):
    rng = np.random.default_rng(4)
    X, m, y = _events(rng, 8_000, 270, m_range=(3300.0, 3700.0))
    est = TagNTrain(ae_params={"epochs": 5, "device": "cpu", "batch_size": 512},
                    classifier_params={"max_iter": 60}, random_state=0).fit(X)
    Xt, _, yt = _events(np.random.default_rng(5), 4_000, 400, m_range=(3300.0, 3700.0))
    s = est.score_samples(Xt)
    assert roc_auc_score(yt, s) > 0.85
    s1, s2 = est.jet_scores(Xt)
    assert np.allclose(s, s1 * s2)
    assert est.n_train_[0][0] == pytest.approx(0.2 * len(X), rel=0.01)
    back = TagNTrain.load(est.save(tmp_path / "tnt.pt"))
    assert np.allclose(back.score_samples(Xt), s)


def test_tagntrain_sideband_mode_and_errors():
    rng = np.random.default_rng(6)
    X, m, _ = _events(rng, 3_000, 300)
    with pytest.raises(ValueError, match="in_sb"):
        TagNTrain(background="sideband").fit(X)
    with pytest.raises(ValueError, match="low_tag"):
        TagNTrain(background="nope").fit(X)
    in_sr = (m > 3200) & (m < 3800)
    est = TagNTrain(background="sideband", ae_params={"epochs": 2, "device": "cpu"},
                    classifier_params={"max_iter": 20}).fit(X, in_sr=in_sr, in_sb=~in_sr)
    assert all(a > 0 and b > 0 for a, b in est.n_train_)


# ------------------------------------------------------------------------------------------ QUAK
def test_quak_round_trip_and_quak_space(tmp_path):
    rng = np.random.default_rng(7)
    n = 4000

    def bkg(k):
        return rng.normal(0, 1, (k, 2)), rng.uniform(3300, 3700, k)

    prior = [(rng.normal(mu, 0.4, (n // 2, 2)), rng.uniform(3300, 3700, n // 2)) for mu in ((2.5, 2.5), (-2.5, 2.5))]
    Xs, ms = balanced_mixture(prior, random_state=0)
    assert len(Xs) == n
    Xb, mb = bkg(n)
    fp = {"epochs": 8, "transforms": 2, "hidden": (16, 16), "device": "cpu"}
    est = QUAK(fp, signal_weight=1.0).fit(Xb, mb, Xs, ms)
    Xt_b, mt_b = bkg(2000)
    in_prior = rng.normal((2.5, 2.5), 0.4, (500, 2))
    outside = rng.normal((0.0, -3.5), 0.4, (500, 2))    # a signal the prior does not contain
    mt_s = rng.uniform(3300, 3700, 500)
    s_b, s_in = est.score_samples(Xt_b, mt_b), est.score_samples(in_prior, mt_s)
    assert roc_auc_score(np.r_[np.zeros(2000), np.ones(500)], np.r_[s_b, s_in]) > 0.95
    L = est.losses(np.r_[Xt_b, outside], np.r_[mt_b, mt_s])
    assert L.shape == (2500, 2)
    # away from the background: the out-of-prior signal has a much larger background loss
    assert np.median(L[2000:, 0]) > np.quantile(L[:2000, 0], 0.95)
    back = QUAK.load(est.save(tmp_path / "quak.pt"))
    assert np.allclose(back.score_samples(Xt_b, mt_b), s_b)
    # a pre-trained background flow is reused (same box), only the signal flow is trained
    again = QUAK(fp).fit(None, None, Xs, ms, background_flow=est.background_flow_)
    assert again.background_flow_ is est.background_flow_
    with pytest.raises(ValueError, match="features differ"):
        QUAK(fp).fit(Xb, mb, Xs[:, :1], ms)


# ------------------------------------------------------------------------------------------ CATHODE-b
def test_cathode_b_feature_config_is_valid():
    assert CATHODE_B_FEATURES[-2:] == ("j1_btag", "j2_btag")
    assert set(CATHODE_B_FEATURES) <= set(DIJET_COLUMNS)
    assert train_settings({"features": ["mj1"], "sr": (1, 2)})["features"] == list(CATHODE_B_FEATURES)
    with pytest.raises(DataError, match="j3_btag"):
        check_features(("mj1", "j3_btag"))
